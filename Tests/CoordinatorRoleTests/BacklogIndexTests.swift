import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

@testable import CoordinatorService

/// A new term asks the broker about the backlogs `fanfic.backlogs` names, not about every site
/// the rules know: on RabbitMQ each question about a missing queue is a channel error.
@Suite("The backlog index")
struct BacklogIndexTests {
    /// The entries the index queue holds, oldest first (nil for one that is not an entry).
    /// A first coordinator, c1, leaves a task of test2.com in its backlog, recorded in the
    /// index, and stops.
    private func leaveTaskInBacklog(_ fleet: Fleet) async throws -> TaskMessage {
        let backlog = FanficTopology.backlogQueue(site: "test2.com")
        let (first, firstBus, firstRun) = fleet.startCoordinator("c1")
        let task = try await fleet.submit("http://test2.com?sid=1", site: "test2.com")
        try await waitUntil("the task waits in test2.com's backlog and the index names it") {
            fleet.queue(backlog).map(\.url) == [task.url] && first.board.current.phase == .running
                && index(fleet).contains { $0?.backlogs.contains("test2.com") == true }
        }
        firstRun.cancel()
        await firstRun.value
        firstBus.disconnect()
        return task
    }

    private func index(_ fleet: Fleet) -> [BacklogIndex.Entry?] {
        fleet.broker.messages(in: FanficTopology.backlogIndex).map { BacklogIndex.entry($0.body) }
    }

    @Test("a new term asks only about the backlogs the index names, and still finds the one the last term left")
    func secondTermAsksOnlyIndexedBacklogs() async throws {
        let fleet = Fleet()
        let (first, firstBus, firstRun) = fleet.startCoordinator("c1")
        let task = try await fleet.submit("http://test2.com?sid=1", site: "test2.com")
        try await waitUntil("the task waits in test2.com's backlog and the index names it, complete") {
            let entries = index(fleet)
            return fleet.queue(FanficTopology.backlogQueue(site: "test2.com")).map(\.url) == [task.url]
                && first.board.current.phase == .running && entries.contains { $0?.complete == true }
                && entries.contains { $0?.backlogs.contains("test2.com") == true }
        }
        firstRun.cancel()
        await firstRun.value
        firstBus.disconnect()  // its exclusive leader queue goes with its connection

        let missingBefore = fleet.broker.missingQueueQueries
        let (second, _, secondRun) = fleet.startCoordinator("c2")
        defer { secondRun.cancel() }
        try await waitUntil("c2 discovered the backlogs") { second.board.current.phase == .running }
        #expect(
            fleet.broker.missingQueueQueries == missingBefore,
            "c2 asked about a queue that does not exist (test1.com's backlog, or a sweep backlog)")
        try await waitUntil("c2 rewrote the index as one complete entry") {
            index(fleet) == [BacklogIndex.Entry(backlogs: ["test2.com"], complete: true)]
        }

        let worker = fleet.worker("w1")
        try await worker.join()
        let beating = worker.keepBeating()
        defer { beating.cancel() }
        try await waitUntil("the backlog c1 left is drained into w1") {
            fleet.queue(worker.queue).map(\.url) == [task.url]
        }
    }

    @Test("a backlog the broker could not be asked about at a start stays in the index, and the next term finds it")
    func unansweredQuestionKeepsTheBacklogIndexed() async throws {
        let fleet = Fleet()
        let backlog = FanficTopology.backlogQueue(site: "test2.com")
        let task = try await leaveTaskInBacklog(fleet)

        // c2's question about the backlog gets no answer: it counts as empty for now (asked
        // again later), and must not fall out of the index.
        fleet.broker.failQuestions(about: backlog)
        let (second, secondBus, secondRun) = fleet.startCoordinator("c2")
        try await waitUntil("c2 asked, and rewrote the index") {
            second.board.current.phase == .running && fleet.broker.questionFailuresLeft(about: backlog) == 0
                && index(fleet) == [BacklogIndex.Entry(backlogs: ["test2.com"], complete: true)]
        }
        secondRun.cancel()
        await secondRun.value
        secondBus.disconnect()

        let (_, _, thirdRun) = fleet.startCoordinator("c3")
        defer { thirdRun.cancel() }
        let worker = fleet.worker("w1")
        try await worker.join()
        let beating = worker.keepBeating()
        defer { beating.cancel() }
        try await waitUntil("c3 found the backlog through the index and drained it into w1") {
            fleet.queue(worker.queue).map(\.url) == [task.url]
        }
    }

    @Test("a backlog the broker did not answer about at the start is asked about again, and drained")
    func unansweredBacklogIsAskedAgain() async throws {
        let fleet = Fleet()
        let backlog = FanficTopology.backlogQueue(site: "test2.com")
        let task = try await leaveTaskInBacklog(fleet)

        // The start's question and the first one asked again get no answer (a broker between
        // nodes); no other task of test2.com comes, so only asking again finds the backlog.
        fleet.broker.failQuestions(about: backlog, times: 2)
        let (_, _, secondRun) = fleet.startCoordinator("c2")
        defer { secondRun.cancel() }
        let worker = fleet.worker("w1")
        try await worker.join()
        let beating = worker.keepBeating()
        defer { beating.cancel() }
        try await waitUntil("c2 asked again, found the backlog and drained it into w1") {
            fleet.queue(worker.queue).map(\.url) == [task.url]
        }
        #expect(fleet.broker.questionFailuresLeft(about: backlog) == 0)
    }

    @Test("without a complete entry (an installation from before the index) a term asks about every known site once")
    func incompleteIndexFallsBackToKnownSites() async throws {
        let fleet = Fleet()
        // A backlog an older coordinator left, which no index names.
        let older = InMemoryBus(broker: fleet.broker, user: "fanfic-coordinator")
        try await older.declare(FanficTopology.backlog(site: "test1.com"))
        let task = TaskMessage(url: "http://test1.com?sid=7", site: "test1.com", submittedBy: "test")
        try await older.publish(
            WireCodec.encode(task), exchange: FanficTopology.dispatch,
            routingKey: FanficTopology.backlogQueue(site: "test1.com"), properties: .persistentJSON(), mandatory: true)

        let (coordinator, _, run) = fleet.startCoordinator()
        defer { run.cancel() }
        try await waitUntil("the index is complete and names the old backlog") {
            coordinator.board.current.phase == .running
                && index(fleet) == [BacklogIndex.Entry(backlogs: ["test1.com"], complete: true)]
        }
        let worker = fleet.worker("w1")
        try await worker.join()
        let beating = worker.keepBeating()
        defer { beating.cancel() }
        try await waitUntil("the old backlog is drained into w1") { fleet.queue(worker.queue).map(\.url) == [task.url] }
    }

    @Test("an index entry is read only when well formed and bounded, each site a plausible host")
    func entriesAreChecked() throws {
        let good = Data(#"{"backlogs":["test1.com"],"sweep_backlogs":["test2.com"],"complete":true}"#.utf8)
        #expect(
            BacklogIndex.entry(good)
                == BacklogIndex.Entry(backlogs: ["test1.com"], sweepBacklogs: ["test2.com"], complete: true))
        #expect(BacklogIndex.entry(Data("test1.com".utf8)) == nil)
        #expect(BacklogIndex.entry(Data(#"{"backlogs":["a b"],"sweep_backlogs":[],"complete":true}"#.utf8)) == nil)
        #expect(BacklogIndex.entry(Data(#"{"backlogs":[""],"sweep_backlogs":[],"complete":true}"#.utf8)) == nil)
        let long = String(repeating: "a", count: 231)
        #expect(BacklogIndex.entry(Data(#"{"backlogs":["\#(long)"],"sweep_backlogs":[],"complete":true}"#.utf8)) == nil)
        let huge = Data(repeating: 0x20, count: BacklogIndex.maxEntryBytes) + good
        #expect(BacklogIndex.entry(huge) == nil)
    }
}
