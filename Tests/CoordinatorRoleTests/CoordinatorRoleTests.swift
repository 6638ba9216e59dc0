import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import TestSupport
import Testing

@testable import CoordinatorService

/// The coordinator role on the in-memory bus: every rule of the table, driven by the messages a
/// worker or a publisher would send, in milliseconds. A change to the coordinator's rules is
/// tested here first; the integration tests run the same executables against RabbitMQ.
@Suite("The coordinator on the in-memory bus")
struct CoordinatorRoleTests {
    @Test("a coordinator with no registered worker assigns at once, not after its rebuild window")
    func readyAtOnce() async throws {
        // A window no test waits out: running before it ends can only be the early end.
        let fleet = Fleet(workerTimeout: .seconds(600))
        let (coordinator, _, run) = fleet.startCoordinator()
        defer { run.cancel() }
        try await waitUntil("the table is rebuilt", timeout: .seconds(60)) {
            coordinator.board.current.phase == .running
        }
        let worker = fleet.worker("w1")
        try await worker.join()
        let task = try await fleet.submit("http://test1.com?sid=1", site: "test1.com")
        try await waitUntil("the task is in w1's queue") { fleet.queue(worker.queue).map(\.url) == [task.url] }
    }

    @Test("an admitted worker gets a site's tasks; another site waits in its backlog until the site is released")
    func routing() async throws {
        let fleet = Fleet()
        let scene = try await fleet.sceneWithWorker()
        defer { scene.stop() }
        let w1 = scene.worker

        let first = try await fleet.submit("http://test1.com?sid=1", site: "test1.com")
        let second = try await fleet.submit("http://test1.com?sid=2", site: "test1.com")
        let other = try await fleet.submit("http://test2.com?sid=3", site: "test2.com")
        try await waitUntil("both test1.com tasks are in w1's queue and test2.com's in its backlog") {
            Set(fleet.queue(w1.queue).map(\.url)) == [first.url, second.url]
                && fleet.queue(FanficTopology.backlogQueue(site: "test2.com")).map(\.url) == [other.url]
        }
        #expect(fleet.queue(FanficTopology.ingress).isEmpty, "every routed task is acked in ingress")

        for _ in 0..<2 {
            let task = try #require(try await w1.take())
            try await w1.finish(task)
        }
        try await waitUntil("test1.com is released and test2.com's backlog drained into w1") {
            fleet.queue(w1.queue).map(\.url) == [other.url]
        }
    }

    @Test(
        "a duplicate of a queued task is dropped; a message that is not a task is parked with why, and the loop goes on"
    )
    func duplicatesAndGarbage() async throws {
        let fleet = Fleet()
        let scene = try await fleet.sceneWithWorker()
        defer { scene.stop() }
        let w1 = scene.worker

        try await fleet.publishRaw("not json at all")
        try await fleet.publishRaw(#"{"version":1,"url":"","site":"test1.com"}"#)
        let task = try await fleet.submit("http://test1.com?sid=1", site: "test1.com")
        _ = try await fleet.submit("http://test1.com?sid=1", site: "test1.com")
        try await waitUntil("the task is routed and both bad messages are parked") {
            fleet.queue(w1.queue).map(\.url) == [task.url]
                && fleet.broker.messages(in: FanficTopology.failed).count == 2
        }
        let reasons = fleet.broker.messages(in: FanficTopology.failed).map {
            if case .string(let reason) = $0.properties.headers[FanficTopology.failureReasonHeader] {
                reason
            } else {
                ""
            }
        }
        #expect(reasons.allSatisfy { $0.hasPrefix("undecodable task: ") }, "\(reasons)")
        try await waitUntil("the duplicate left ingress") { fleet.ingressSettled }
        #expect(fleet.queue(w1.queue).count == 1, "the duplicate was dropped, not queued twice")
    }

    @Test("ingress is decoded and judged concurrently, yet routed in the order it arrived; garbage among it is parked")
    func arrivalOrder() async throws {
        let fleet = Fleet()
        // All queued before the coordinator starts: it takes up to its prefetch at once.
        var submitted: [String] = []
        for sid in 1...200 {
            if sid % 50 == 0 { try await fleet.publishRaw("not a task \(sid)") }
            submitted.append(try await fleet.submit("http://test1.com?sid=\(sid)", site: "test1.com").url)
        }
        let (_, _, run) = fleet.startCoordinator()
        defer { run.cancel() }
        let backlog = FanficTopology.backlogQueue(site: "test1.com")
        try await waitUntil("every task is in test1.com's backlog and the garbage parked") {
            fleet.queue(backlog).count == submitted.count && fleet.broker.messages(in: FanficTopology.failed).count == 4
        }
        #expect(fleet.queue(backlog).map(\.url) == submitted)
    }

    @Test("a worker that falls silent is presumed dead: its queue goes back to ingress and on to a live worker")
    func silentWorker() async throws {
        let fleet = Fleet(workerTimeout: .seconds(2))  // the timeout is what it tests
        let (_, _, run) = fleet.startCoordinator()
        defer { run.cancel() }
        let silent = fleet.worker("silent")
        try await silent.join()
        let silentBeats = silent.keepBeating()
        let task = try await fleet.submit("http://test1.com?sid=1", site: "test1.com")
        try await waitUntil("the task is in the first worker's queue") { !fleet.queue(silent.queue).isEmpty }

        let alive = fleet.worker("alive")
        try await alive.join()
        let beating = alive.keepBeating()
        defer { beating.cancel() }
        silentBeats.cancel()  // and it never says hello again
        try await waitUntil("the task moved to the live worker's queue", timeout: .seconds(10)) {
            fleet.queue(alive.queue).map(\.url) == [task.url] && fleet.queue(silent.queue).isEmpty
        }
    }

    @Test("a standby takes over when the active coordinator's connection drops, and routes")
    func failover() async throws {
        let fleet = Fleet()
        let (first, firstBus, firstRun) = fleet.startCoordinator("c1")
        defer { firstRun.cancel() }
        try await waitUntil("c1 is active") { first.board.current.role == .active }
        let (second, _, secondRun) = fleet.startCoordinator("c2")
        defer { secondRun.cancel() }
        #expect(second.board.current.role == .standby)

        firstBus.disconnect()
        try await waitUntil("c2 is active") { second.board.current.role == .active }
        try await waitUntil("c1 stands by") { first.board.current.role == .standby }
        let w1 = fleet.worker("w1")
        try await w1.join()
        let beating = w1.keepBeating()
        defer { beating.cancel() }
        let task = try await fleet.submit("http://test2.com?sid=9", site: "test2.com")
        try await waitUntil("c2 routed the task") { fleet.queue(w1.queue).map(\.url) == [task.url] }
    }

    @Test("heartbeats from a worker id that never said hello do not get it a site; it is asked to say hello")
    func phantomHeartbeats() async throws {
        let fleet = Fleet()
        let (coordinator, _, run) = fleet.startCoordinator()
        defer { run.cancel() }
        try await waitUntil("the table is rebuilt") { coordinator.board.current.phase == .running }
        let phantom = fleet.worker("0")
        try await phantom.bus.declare(FanficTopology.reply(worker: "0"))
        let beating = phantom.keepBeating()
        defer { beating.cancel() }
        try await waitUntil("the phantom is asked to say hello") {
            fleet.broker.messages(in: FanficTopology.replyQueue(worker: "0")).contains {
                (try? WireCodec.decodeControl($0.body))?.kind == .rejoin
            }
        }
        let task = try await fleet.submit("http://test1.com?sid=1", site: "test1.com")
        try await waitUntil("the task left ingress") { fleet.ingressSettled }
        #expect(
            fleet.queue(FanficTopology.backlogQueue(site: "test1.com")).map(\.url) == [task.url],
            "with no admitted worker the task waits in its backlog")
        #expect(coordinator.board.current.workers.isEmpty)
    }

    @Test("while the table is rebuilt, heartbeats count only from a worker that consumes its queue")
    func heartbeatsWhileRebuilding() async throws {
        let fleet = Fleet()
        // w1 was admitted by an earlier coordinator: it consumes its queue and beats. "0" only beats.
        let w1 = fleet.worker("w1")
        try await w1.bus.declare(
            FanficTopology.workerQueues(id: "w1"))
        let subscription = w1.holdSubscription()
        defer { subscription.cancel() }
        // The earlier coordinator registered w1: without that this one, with nothing to recover,
        // would start assigning before either heartbeat arrived, and the test would be luck.
        var quiet = Logger(label: "test.registry")
        quiet.logLevel = .critical
        await WorkerRegistry(
            bus: InMemoryBus(broker: fleet.broker, user: "fanfic-coordinator"), forgetAfter: 86_400, logger: quiet
        ).register("w1")
        let phantom = fleet.worker("0")
        let beats = [w1.keepBeating(), phantom.keepBeating()]
        defer { beats.forEach { $0.cancel() } }
        let (coordinator, _, run) = fleet.startCoordinator()
        defer { run.cancel() }
        try await waitUntil("the table is rebuilt") { coordinator.board.current.phase == .running }
        #expect(coordinator.board.current.workers.map(\.id) == ["w1"], "w1 is in the table, the phantom is not")
    }

    @Test("a worker presumed dead stays out until it says hello: its heartbeats get it no work, status drops it")
    func deadStaysDead() async throws {
        let fleet = Fleet(workerTimeout: .seconds(2))  // the timeout is what it tests
        let (coordinator, _, run) = fleet.startCoordinator()
        defer { run.cancel() }
        let w1 = fleet.worker("w1")
        try await w1.join()
        try await waitUntil("w1 is listed") { coordinator.board.current.workers.map(\.id) == ["w1"] }
        // Silent past the timeout (a network blip), then it beats again, without a hello.
        try await waitUntil("w1 is presumed dead", timeout: .seconds(10)) {
            coordinator.board.current.workers.isEmpty
        }
        let beating = w1.keepBeating()
        defer { beating.cancel() }
        try await waitUntil("w1 is asked to say hello") {
            guard let reply = try await w1.bus.get(queue: w1.replyQueue) else { return false }
            try await reply.ack()
            return (try? WireCodec.decodeControl(reply.body))?.kind == .rejoin
        }
        let task = try await fleet.submit("http://test2.com?sid=2", site: "test2.com")
        try await waitUntil("the task waits in its backlog, not in w1's queue") {
            fleet.queue(FanficTopology.backlogQueue(site: "test2.com")).map(\.url) == [task.url]
        }
        #expect(coordinator.board.current.workers.isEmpty)
        try await w1.join()
        try await waitUntil("once it said hello it gets the waiting site") {
            fleet.queue(w1.queue).map(\.url) == [task.url]
        }
    }

    @Test("a forged `finished` for a task the worker never got does not release its site")
    func forgedFinished() async throws {
        let fleet = Fleet()
        let scene = try await fleet.sceneWithWorker()
        defer { scene.stop() }
        let (coordinator, w1) = (scene.coordinator, scene.worker)
        let task = try await fleet.submit("http://test1.com?sid=1", site: "test1.com")
        // The table gives w1 the site before the move into its queue is confirmed: wait for both.
        try await waitUntil("w1 holds test1.com and its task is in w1's queue") {
            coordinator.board.current.workers.first { $0.id == "w1" }?.site == "test1.com"
                && fleet.queue(w1.queue).map(\.url) == [task.url]
        }
        _ = try #require(try await w1.take())  // running, not finished
        let forger = fleet.worker("w1")
        let forged = TaskMessage(url: "http://test1.com?sid=666", site: "test1.com", submittedBy: "forger")
        try await forger.send(.finished(worker: "w1", task: forged))
        // The control queue is in order: once a later heartbeat shows, all before it were handled.
        try await fleet.waitUntilHandled(through: scene)
        #expect(coordinator.board.current.workers.first { $0.id == "w1" }?.site == "test1.com")
    }

    @Test(
        "the site and canonical URL come from the URL: a lying `site` is neither a lock nor a queue, a non-story URL is parked"
    )
    func derivedSite() async throws {
        let fleet = Fleet()
        let scene = try await fleet.sceneWithWorker()
        defer { scene.stop() }
        let w1 = scene.worker

        // One story published three times, each claiming another site, one of them 300 characters.
        for site in ["test3.com", "evil-a.example", String(repeating: "x", count: 300)] {
            _ = try await fleet.submit("http://www.test3.com/?sid=7", site: site)
        }
        // Not a story, nor a list page: no site FanFicFare knows (TaskIntakeTests: list pages).
        _ = try await fleet.submit("http://stories.example/not-a-story", site: "test1.com")
        try await waitUntil("every message is routed, dropped or parked") {
            fleet.ingressSettled && fleet.broker.messages(in: FanficTopology.failed).count == 1
        }
        // In w1's queue, or in test3.com's backlog when it came while the table was rebuilt.
        let routed = fleet.queue(w1.queue) + fleet.queue(FanficTopology.backlogQueue(site: "test3.com"))
        #expect(
            routed.map(\.url) == ["http://test3.com?sid=7"], "one task, canonical, the copies dropped as duplicates")
        #expect(routed.map(\.site) == ["test3.com"])
        #expect(!fleet.broker.hasQueue(FanficTopology.backlogQueue(site: "evil-a.example")))
        let parked = try #require(fleet.broker.messages(in: FanficTopology.failed).first)
        guard case .string(let reason) = parked.properties.headers[FanficTopology.failureReasonHeader] else {
            Issue.record("no reason")
            return
        }
        #expect(reason.hasPrefix("not a story URL: "), "\(reason)")
    }

    @Test("control messages count only from worker users, and a hello only with the worker's own reply queue")
    func controlFromWorkerUsersOnly() async throws {
        let fleet = Fleet(workerUsers: ["fanfic-worker"])
        let scene = try await fleet.sceneWithWorker()
        defer { scene.stop() }
        let coordinator = scene.coordinator
        _ = try await fleet.submit("http://test1.com?sid=1", site: "test1.com")
        try await waitUntil("w1 holds test1.com") {
            coordinator.board.current.workers.first { $0.id == "w1" }?.site == "test1.com"
        }

        // The CLI's user pretends to be w1, then a worker of its own; a worker's hello asks for
        // answers on someone else's queue.
        let impostor = fleet.worker("w1", user: "fanfic-cli")
        try await impostor.send(
            .finished(
                worker: "w1", task: TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "x")))
        try await fleet.worker("ghost", user: "fanfic-cli").send(.heartbeat(worker: "ghost", site: nil, unfinished: 0))
        try await fleet.client.declare(AMQPTopology(queues: [QueueSpec.quorum("victim")]))
        try await fleet.worker("w9").send(.hello(worker: "w9", site: nil, unfinished: 0, replyTo: "victim"))
        // In order on the control queue: once w1's marked heartbeat shows, the others were handled.
        // The control queue is in order: once a later heartbeat shows, all before it were handled.
        try await fleet.waitUntilHandled(through: scene)
        let workers = coordinator.board.current.workers
        #expect(workers.map(\.id) == ["w1"], "no ghost, no w9")
        #expect(workers.first?.site == "test1.com", "the impostor's `finished` released nothing")
        #expect(fleet.broker.messages(in: "victim").isEmpty, "nothing published where a message said")
    }

    @Test("past the limits: a big task and a long URL are parked saying which key; hellos past max_workers are refused")
    func limits() async throws {
        var limits = FanficConfiguration.Limits()
        limits.maxMessageBytes = 2048
        limits.maxURLLength = 100
        limits.maxWorkers = 1
        let fleet = Fleet(limits: limits)
        let scene = try await fleet.sceneWithWorker()
        defer { scene.stop() }
        let (coordinator, w1) = (scene.coordinator, scene.worker)

        var big = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "")
        big.submittedBy = String(repeating: "x", count: 4096)
        try await TaskPublisher(bus: fleet.client).submit(big)
        _ = try await fleet.submit("http://test1.com?sid=2&" + String(repeating: "a", count: 200), site: "test1.com")
        let task = try await fleet.submit("http://test1.com?sid=3", site: "test1.com")
        try await waitUntil("both are parked and the next task routed") {
            fleet.ingressSettled && fleet.broker.messages(in: FanficTopology.failed).count == 2
                && (fleet.queue(w1.queue) + fleet.queue(FanficTopology.backlogQueue(site: "test1.com"))).map(\.url)
                    == [task.url]
        }
        let reasons = fleet.broker.messages(in: FanficTopology.failed).map {
            if case .string(let reason) = $0.properties.headers[FanficTopology.failureReasonHeader] {
                reason
            } else {
                ""
            }
        }
        #expect(reasons.contains { $0.contains("limits.max_message_bytes") }, "\(reasons)")
        #expect(reasons.contains { $0.contains("limits.max_url_length") }, "\(reasons)")

        let w2 = fleet.worker("w2")
        try await w2.bus.declare(
            FanficTopology.workerQueues(id: "w2"))
        try await w2.send(.hello(worker: "w2", site: nil, unfinished: 0, replyTo: w2.replyQueue))
        // In order on the control queue: once w1's marked heartbeat shows, the hello was handled.
        // The control queue is in order: once a later heartbeat shows, all before it were handled.
        try await fleet.waitUntilHandled(through: scene)
        #expect(coordinator.board.current.workers.map(\.id) == ["w1"])
        #expect(fleet.broker.messages(in: w2.replyQueue).isEmpty, "w2 is not admitted")
    }
}
