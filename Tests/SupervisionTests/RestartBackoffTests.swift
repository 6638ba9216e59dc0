import Supervision
import Testing

@Suite("Restart backoff")
struct RestartBackoffTests {
    @Test("doubles after each quick exit up to the maximum")
    func doubles() {
        var backoff = RestartBackoff(initial: .seconds(1), maximum: .seconds(8), stableAfter: .seconds(60))
        let delays = (0..<6).map { _ in backoff.delay(afterRunOf: .seconds(2)) }
        #expect(delays == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(8), .seconds(8)])
    }

    @Test("starts again from the initial delay after a run that lasted")
    func resetsAfterAStableRun() {
        var backoff = RestartBackoff(initial: .seconds(1), maximum: .seconds(30), stableAfter: .seconds(60))
        _ = backoff.delay(afterRunOf: .seconds(1))
        _ = backoff.delay(afterRunOf: .seconds(1))
        #expect(backoff.delay(afterRunOf: .seconds(1)) == .seconds(4))
        #expect(backoff.delay(afterRunOf: .seconds(61)) == .seconds(1))
        #expect(backoff.delay(afterRunOf: .seconds(1)) == .seconds(2))
    }
}
