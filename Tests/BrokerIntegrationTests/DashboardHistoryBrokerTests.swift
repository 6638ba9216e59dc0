import AMQP
import DashboardHistory
import FanficBroker
import FanficCore
import Foundation
import Logging
import TestSupport
import Testing

/// The dashboard's history on a real broker: its queue as RabbitMQ declares it (quorum, bounded,
/// bound to every event), events from an EventPublisher as the roles publish them, and a
/// restart in between.
@Suite("Dashboard history on the broker", .serialized, .timeLimit(.minutes(5)))
struct DashboardHistoryBrokerTests {
    @Test("events published while the recorder is down wait in its queue and are recorded once when it is back")
    func restartLosesNothing() async throws {
        try await TestBroker.withConnection(name: "history-test") { connection, vhost in
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("history-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: folder) }
            let store = try SQLiteHistoryStore(path: folder.appendingPathComponent("dashboard.sqlite").path)
            let settings = HistoryRecorder.Settings(retention: 90 * 86_400, limits: FanficConfiguration.Limits())
            let bus = AMQPMessageBus(connection)
            let publisher = EventPublisher(bus: bus, logger: TestBroker.logger)
            let publishing = Task { await publisher.run() }
            defer { publishing.cancel() }
            // Each story routed, then started a second later: the publisher sends up to 64 at
            // once, so they may arrive in either order; the store orders them by time.
            let base = Date()
            func emit(_ range: Range<Int>) {
                for index in range {
                    publisher.emit(
                        FanficEvent(
                            index % 2 == 0 ? .taskRouted : .taskStarted, source: "coordinator@test",
                            at: base.addingTimeInterval(Double(index)), site: "test1.com",
                            url: "http://test1.com?sid=\(index / 2)"))
                }
            }

            // A recorder on a connection of its own, as the dashboard runs.
            func startRecorder() throws -> (HistoryRecorder, AMQPConnection, Task<Void, any Error>) {
                let own = AMQPConnection(
                    configuration: try TestBroker.configuration(virtualHost: vhost, name: "recorder"),
                    logger: TestBroker.logger)
                let recorder = HistoryRecorder(
                    bus: AMQPMessageBus(own), store: store, settings: settings, logger: TestBroker.logger)
                return (recorder, own, Task { try await recorder.run() })
            }
            let (first, firstConnection, firstRun) = try startRecorder()
            try await waitUntil("the dashboard queue exists") {
                try await connection.queueState(FanficTopology.dashboardEvents) != nil
            }
            emit(0..<40)
            try await waitUntil("40 events recorded") { first.current.recorded == 40 }
            firstRun.cancel()
            _ = try? await firstRun.value
            await firstConnection.close()

            emit(40..<100)
            try await waitUntil("the queue holds the 60 published meanwhile") {
                try await connection.queueState(FanficTopology.dashboardEvents)?.messageCount == 60
            }
            #expect(try store.eventCount() == 40)

            let (second, secondConnection, secondRun) = try startRecorder()
            try await waitUntil("the other 60 recorded") { second.current.recorded == 60 }
            secondRun.cancel()
            _ = try? await secondRun.value
            await secondConnection.close()

            #expect(try store.eventCount() == 100)
            let runs = try store.history(HistoryQuery(limit: 1000))
            #expect(runs.count == 50)
            for run in runs {
                #expect(run.outcome == .running, "\(run.url)")
                #expect(run.timeline.map(\.kind) == [.taskRouted, .taskStarted], "\(run.url)")
            }
            #expect(first.current.refused == 0 && second.current.refused == 0)
        }
    }
}
