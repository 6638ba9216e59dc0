import TestSupport
import Testing

@testable import AMQP

@Suite("Publishes awaiting confirms, settled in tag order")
struct PendingPublishesTests {
    @Test("single and multiple confirms, in order and out of order, settle each publish once")
    func settleOnce() {
        var pending = PendingPublishes<UInt64>()
        for tag in UInt64(1)...10 { pending.append(tag * 100, tag: tag) }
        #expect(pending.remove(tag: 1) == 100)
        #expect(pending.remove(tag: 4) == 400, "out of order: a hole")
        #expect(pending.remove(tag: 4) == nil, "settled once")
        #expect(pending.removeAll(through: 5) == [200, 300, 500], "multiple skips the hole")
        #expect(pending.update(tag: 7) { $0 += 1 })
        #expect(!pending.update(tag: 5) { $0 += 1 }, "gone")
        #expect(pending.remove(tag: 42) == nil)
        #expect(pending.count == 5)
        #expect(pending.removeAll() == [600, 701, 800, 900, 1000])
        #expect(pending.isEmpty)
        pending.append(1, tag: 1)  // tags start again on a new channel
        #expect(pending.removeAll(through: 1) == [1])
    }

    @Test("a long run of publishes and confirms against a plain array model")
    func againstModel() {
        var pending = PendingPublishes<UInt64>()
        var model: [UInt64] = []
        var generator = SplitMix64(seed: 17)
        var next: UInt64 = 1
        for _ in 0..<20_000 {
            switch generator.next() % 4 {
            case 0, 1:
                pending.append(next, tag: next)
                model.append(next)
                next += 1
            case 2:
                guard let oldest = model.first else { continue }
                let tag = oldest + generator.next() % 8
                let expected = model.filter { $0 <= tag }
                model.removeAll { $0 <= tag }
                #expect(pending.removeAll(through: tag) == expected)
            default:
                guard !model.isEmpty else { continue }
                let tag = model[Int(generator.next() % UInt64(model.count))]
                model.removeAll { $0 == tag }
                #expect(pending.remove(tag: tag) == tag)
            }
            #expect(pending.count == model.count)
        }
        #expect(pending.removeAll() == model)
    }
}
