import FanficBroker
import FanficCore
import Foundation
import Logging
import TestSupport
import Testing

@testable import DashboardHistory

@Suite("History recorder: fanfic.events into the store, checked at the boundary")
struct HistoryRecorderTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    func recorder(bus: InMemoryBus, store: any HistoryStore, retentionDays: Double = 30) -> HistoryRecorder {
        HistoryRecorder(
            bus: bus, store: store,
            settings: HistoryRecorder.Settings(retention: retentionDays * 86_400, limits: FanficConfiguration.Limits()),
            logger: Logger(label: "test.recorder"), now: { Self.now })
    }

    func publish(_ bus: InMemoryBus, _ body: Data, key: String = "task.routed") async throws {
        try await bus.publish(
            body, exchange: FanficTopology.events, routingKey: key, properties: .persistentJSON(), mandatory: false,
            retryFor: nil)
    }

    @Test("good events are kept; bad ones are refused with the reason, acked, and the loop goes on")
    func boundary() async throws {
        let broker = InMemoryBroker()
        let bus = InMemoryBus(broker: broker)
        try await bus.declare(FanficTopology.dashboard())
        let store = try SQLiteHistoryStore.inMemory()
        let event = FanficEvent(
            .taskRouted, source: "coordinator@h", at: Self.now, site: "test1.com", url: "http://test1.com?sid=1")
        var huge = event
        huge.reason = String(repeating: "x", count: 5000)
        var future = event
        future.at = Self.now.addingTimeInterval(3600)
        var negative = event
        negative.attempt = -1
        let unknownType = Data(
            #"{"version":1,"type":"task.teleported","source":"x","at":"2027-01-15T08:00:00.000Z"}"#.utf8)
        let bodies = [
            WireCodec.encode(event), Data("not json".utf8), WireCodec.encode(huge), WireCodec.encode(future),
            WireCodec.encode(negative), unknownType, Data(repeating: 0x20, count: 70_000), WireCodec.encode(event),
        ]
        for body in bodies { try await publish(bus, body) }
        // A newer build's type, by its routing key: ignored, not refused.
        try await publish(bus, unknownType, key: "task.teleported")

        let recorder = recorder(bus: bus, store: store)
        let running = Task { try await recorder.run() }
        defer { running.cancel() }
        try await waitUntil("every event is settled", timeout: .seconds(10)) {
            recorder.current.recorded + recorder.current.refused + recorder.current.ignored == bodies.count + 1
        }
        #expect(recorder.current.recorded == 2)
        #expect(recorder.current.refused == 6)
        #expect(recorder.current.ignored == 1)
        #expect(try store.eventCount() == 2)
        try await waitUntil("nothing left unsettled", timeout: .seconds(5)) {
            broker.messages(in: FanficTopology.dashboardEvents).isEmpty
                && broker.unsettled(in: FanficTopology.dashboardEvents) == 0
        }
    }

    @Test(
        "what each refusal says",
        arguments: [
            (#"{"version":1,"type":"task.routed","source":"","at":"2027-01-15T08:00:00.000Z"}"#, "'source' is empty"),
            (#"{"version":1,"type":"task.teleported","source":"x","at":"2027-01-15T08:00:00.000Z"}"#, "type"),
            (
                #"{"version":1,"type":"task.routed","source":"x","at":"2027-01-15T08:00:00.000Z","duration_ms":-4}"#,
                "'duration_ms' is negative"
            ),
        ])
    func reasons(body: String, expected: String) throws {
        let recorder = recorder(bus: InMemoryBus(broker: InMemoryBroker()), store: try SQLiteHistoryStore.inMemory())
        guard case .failure(let error) = recorder.admit(Data(body.utf8)) else {
            Issue.record("accepted: \(body)")
            return
        }
        #expect("\(error)".contains(expected), "\(error)")
    }

    @Test("events published while the recorder is down are recorded when it is back, each once")
    func restart() async throws {
        let broker = InMemoryBroker()
        let bus = InMemoryBus(broker: broker)
        let store = try SQLiteHistoryStore.inMemory()
        let first = recorder(bus: bus, store: store)
        let running = Task { try await first.run() }
        try await waitUntil("the queue is declared", timeout: .seconds(5)) {
            broker.hasQueue(FanficTopology.dashboardEvents)
        }
        func event(_ index: Int) -> Data {
            WireCodec.encode(
                FanficEvent(
                    .taskRouted, source: "coordinator@h", at: Self.now, site: "test1.com",
                    url: "http://test1.com?sid=\(index)"))
        }
        for index in 0..<5 { try await publish(bus, event(index)) }
        try await waitUntil("five recorded", timeout: .seconds(10)) { first.current.recorded == 5 }
        running.cancel()
        _ = try? await running.value
        for index in 5..<12 { try await publish(bus, event(index)) }
        #expect(broker.messages(in: FanficTopology.dashboardEvents).count == 7, "kept by the queue meanwhile")

        let second = recorder(bus: bus, store: store)
        let again = Task { try await second.run() }
        defer { again.cancel() }
        try await waitUntil("the rest recorded", timeout: .seconds(10)) { second.current.recorded == 7 }
        #expect(Set(try store.history(HistoryQuery(limit: 100)).map(\.url)).count == 12)
        #expect(try store.eventCount() == 12)
    }

    @Test("history older than the retention is pruned when the recorder starts")
    func retention() async throws {
        let broker = InMemoryBroker()
        let bus = InMemoryBus(broker: broker)
        let store = try SQLiteHistoryStore.inMemory()
        try store.record([
            FanficEvent(.taskRouted, source: "c", at: Self.now.addingTimeInterval(-40 * 86_400), url: "http://old"),
            FanficEvent(.taskRouted, source: "c", at: Self.now.addingTimeInterval(-1 * 86_400), url: "http://new"),
        ])
        let recorder = recorder(bus: bus, store: store, retentionDays: 30)
        let running = Task { try await recorder.run() }
        defer { running.cancel() }
        try await bus.declare(FanficTopology.dashboard())
        try await publish(bus, WireCodec.encode(FanficEvent(.workerJoined, source: "c", at: Self.now, worker: "w1")))
        try await waitUntil("one recorded", timeout: .seconds(10)) { recorder.current.recorded == 1 }
        #expect(recorder.current.pruned == 1)
        #expect(try store.history(HistoryQuery()).map(\.url) == ["http://new"])
    }
}
