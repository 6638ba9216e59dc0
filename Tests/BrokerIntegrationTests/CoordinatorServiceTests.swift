import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

/// The `coordinator` executable with test workers (the real coordination protocol, tasks that
/// only record their start and end): the site lock holds and nothing is lost when processes die.
extension BrokerTests {
    @Suite("Coordinator with test workers on a real RabbitMQ")
    struct CoordinatorServiceTests {
        static let sites = ["test1.com", "test2.com", "test3.com", "test4.com"]

        /// Publishes tasks into fanfic.ingress (declaring the topology first, as any publisher does).
        static func submit(_ tasks: [TaskMessage], through connection: AMQPConnection) async throws {
            try await connection.waitUntilConnected(timeout: .seconds(30))
            try await connection.declare(FanficTopology.declarations(retry: FanficConfiguration().retry.ladder))
            let publisher = TaskPublisher(bus: AMQPMessageBus(connection))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in tasks { group.addTask { try await publisher.submit(task) } }
                try await group.waitForAll()
            }
        }

        /// A coordinator, test workers, and a client connection of the test's own.
        static func start(workers: [String]) async throws -> (RoleProcesses, AMQPConnection) {
            let roles = try RoleProcesses()
            try roles.startCoordinator("coordinator-a")
            for id in workers { try roles.startWorker(id) }
            return (roles, try roles.connection())
        }

        static func expectAllFinishedWithoutOverlap(
            _ roles: RoleProcesses, _ tasks: [TaskMessage], timeout: Duration = .seconds(90),
            sourceLocation: SourceLocation = #_sourceLocation
        ) async throws {
            let urls = Set(tasks.map(\.url))
            do {
                try await waitUntil("every task has run to its end", timeout: timeout, every: .milliseconds(200)) {
                    roles.finishedURLs().isSuperset(of: urls)
                }
            } catch {
                let missing = urls.subtracting(roles.finishedURLs()).sorted()
                let log = String(roles.logText("coordinator-a").suffix(3000))
                // Whether the missing tasks ever started, and what the workers said of their
                // connection and admission: a stall in CI leaves nothing else to read.
                let started = roles.runs().filter { missing.contains($0.url) }
                let workers = roles.logLines(
                    of: ["w1", "w2", "w3"], containing: ["connect", "admit", "lost", "redeliver", "stale"], last: 25)
                let what =
                    "not finished: \(missing.prefix(10)) (\(missing.count) of \(urls.count)); their runs: \(started)"
                Issue.record("\(what)\n\(log)\(workers)", sourceLocation: sourceLocation)
                throw error
            }
            let overlaps = roles.overlaps()
            #expect(
                overlaps.isEmpty, "two workers on one site at once: \(overlaps.prefix(3))",
                sourceLocation: sourceLocation)
        }

        @Test("tasks over 4 sites and 3 workers all finish, each once, never two workers on a site")
        func fourSitesThreeWorkers() async throws {
            let (roles, client) = try await Self.start(workers: ["w1", "w2", "w3"])
            defer { roles.stopAll() }
            defer { Task { await client.close() } }
            let tasks = RoleProcesses.tasks(sites: Self.sites, perSite: 8, milliseconds: 150)
            try await Self.submit(tasks, through: client)

            try await Self.expectAllFinishedWithoutOverlap(roles, tasks)
            let runs = roles.runs()
            #expect(runs.count == tasks.count, "each task runs exactly once when nothing fails")
            // The work was spread: more than one worker ran tasks.
            #expect(Set(runs.map(\.worker)).count >= 2)
            // Every worker queue, backlog and ingress is empty at the end.
            try await waitUntil("the ingress queue is empty") {
                try await client.queueState(FanficTopology.ingress)?.messageCount == 0
            }
            for site in Self.sites {
                #expect(try await client.queueState(FanficTopology.backlogQueue(site: site))?.messageCount ?? 0 == 0)
            }
            #expect(roles.stop("coordinator-a") == 0, "SIGTERM stops the coordinator cleanly")
        }

        @Test("a duplicate of a queued task is dropped, and a garbage message is parked with its reason")
        func duplicatesAndGarbage() async throws {
            let roles = try RoleProcesses()
            defer { roles.stopAll() }
            try roles.startCoordinator("coordinator-a")
            let client = try roles.connection()
            defer { Task { await client.close() } }
            let task = TaskMessage(
                url: "http://test1.com?sid=4242", site: "test1.com",
                submittedBy: RecordingTasks.submitter(milliseconds: 50))
            var copy = task
            copy.id = "another-submission"
            try await Self.submit([task, copy], through: client)
            try await client.publish(
                Data("this is not a task".utf8), exchange: FanficTopology.ingress,
                routingKey: FanficTopology.taskRoutingKey, properties: .persistentJSON(), mandatory: true)
            // No worker yet: after the rebuild window the one task waits in its site's backlog.
            try await waitUntil("the garbage is parked in fanfic.failed") {
                try await client.queueState(FanficTopology.failed)?.messageCount == 1
            }
            let parked = try #require(try await client.get(queue: FanficTopology.failed))
            #expect(String(decoding: parked.body, as: UTF8.self) == "this is not a task")
            guard case .string(let reason) = parked.properties.headers["x-fanfic-failure-reason"] else {
                Issue.record("no failure reason header")
                return
            }
            #expect(reason.contains("not JSON"))
            try await parked.ack()

            try roles.startWorker("w1")
            try await waitUntil("the task ran") { roles.finishedURLs().contains(task.url) }
            try await waitUntil("ingress is empty") {
                try await client.queueState(FanficTopology.ingress)?.messageCount == 0
            }
            #expect(roles.runs().count == 1, "the duplicate was dropped: \(roles.runs())")
            #expect(roles.logText("coordinator-a").contains("duplicate dropped"))
        }

        @Test("sweep checks of a busy site wait in its sweep backlog: a person's later task runs before them")
        func sweepChecksYield() async throws {
            let (roles, client) = try await Self.start(workers: ["w1"])
            defer { roles.stopAll() }
            defer { Task { await client.close() } }
            let busy = TaskMessage(
                url: "http://test1.com?sid=9001", site: "test1.com",
                submittedBy: RecordingTasks.submitter(milliseconds: 2000))
            try await Self.submit([busy], through: client)
            try await waitUntil("the person's first task runs") { roles.runs().contains { $0.url == busy.url } }
            let checks = (1...3).map {
                TaskMessage(url: "http://test1.com?sid=\(9100 + $0)", site: "test1.com", submittedBy: "sweep")
            }
            try await Self.submit(checks, through: client)
            try await waitUntil("the checks wait in the site's sweep backlog") {
                try await client.queueState(FanficTopology.sweepBacklogQueue(site: "test1.com"))?.messageCount == 3
            }
            let later = TaskMessage(
                url: "http://test1.com?sid=9002", site: "test1.com",
                submittedBy: RecordingTasks.submitter(milliseconds: 50))
            try await Self.submit([later], through: client)
            try await Self.expectAllFinishedWithoutOverlap(roles, [busy, later] + checks)
            let runs = roles.runs()
            let laterStart = try #require(runs.first { $0.url == later.url }?.start)
            for check in checks {
                let start = try #require(runs.first { $0.url == check.url }?.start)
                #expect(laterStart < start, "the person's task ran after the sweep check \(check.url)")
            }
            #expect(try await client.queueState(FanficTopology.sweepBacklogQueue(site: "test1.com"))?.messageCount == 0)
        }

        @Test("kill -9 of a worker mid-task loses nothing: its queue is reclaimed and its site freed")
        func workerCrash() async throws {
            let (roles, client) = try await Self.start(workers: ["w1", "w2", "w3"])
            defer { roles.stopAll() }
            defer { Task { await client.close() } }
            let tasks = RoleProcesses.tasks(sites: Self.sites, perSite: 6, milliseconds: 400)
            try await Self.submit(tasks, through: client)

            try await waitUntil("w1 is in the middle of a task") {
                let runs = roles.runs().filter { $0.worker == "w1" }
                return runs.contains { $0.end == nil } && runs.count >= 2
            }
            roles.crash("w1")
            try await Self.expectAllFinishedWithoutOverlap(roles, tasks)
            #expect(roles.runs().contains { $0.killed }, "w1 was killed mid-task")
            #expect(roles.logText("coordinator-a").contains("worker presumed dead"))
        }

        @Test("killing the active coordinator lets a standby finish the job, nothing lost, no overlap")
        func standbyTakesOver() async throws {
            let roles = try RoleProcesses()
            defer { roles.stopAll() }
            try roles.startCoordinator("coordinator-a")
            try await waitUntil("coordinator a is active") {
                roles.logText("coordinator-a").contains("active coordinator")
            }
            try roles.startCoordinator("coordinator-b")
            try await waitUntil("coordinator b stands by") {
                roles.logText("coordinator-b").contains("standing by")
            }
            for id in ["w1", "w2", "w3"] { try roles.startWorker(id) }
            let client = try roles.connection()
            defer { Task { await client.close() } }
            let tasks = RoleProcesses.tasks(sites: Self.sites, perSite: 6, milliseconds: 300)
            try await Self.submit(tasks, through: client)

            try await waitUntil("some tasks are done") { roles.finishedURLs().count >= 4 }
            let crashedAt = ContinuousClock.now
            roles.crash("coordinator-a")
            try await waitUntil("coordinator b is active", timeout: .seconds(15)) {
                roles.logText("coordinator-b").contains("active coordinator")
            }
            let takeover = ContinuousClock.now - crashedAt
            #expect(takeover < .seconds(15), "took over in \(takeover)")
            try await Self.expectAllFinishedWithoutOverlap(roles, tasks)
        }

        @Test("a worker that dies while the only coordinator is down has its queue reclaimed by the next one")
        func workerDiesWhileCoordinatorDown() async throws {
            let roles = try RoleProcesses()
            defer { roles.stopAll() }
            try roles.startCoordinator("coordinator-a")
            for id in ["w1", "w2"] { try roles.startWorker(id) }
            let client = try roles.connection()
            defer { Task { await client.close() } }
            let tasks = RoleProcesses.tasks(sites: ["test1.com", "test2.com"], perSite: 8, milliseconds: 400)
            try await Self.submit(tasks, through: client)
            try await waitUntil("w1 has finished a task and started another") {
                let runs = roles.runs().filter { $0.worker == "w1" }
                return runs.contains { $0.end == nil } && runs.count >= 2
            }
            roles.crash("coordinator-a")
            roles.crash("w1")
            let left = try await client.queueState(FanficTopology.workerQueue(id: "w1"))?.messageCount ?? 0
            #expect(left > 0, "w1 died with tasks in its queue")

            try roles.startCoordinator("coordinator-b")
            try await Self.expectAllFinishedWithoutOverlap(roles, tasks)
            #expect(roles.logText("coordinator-b").contains("no coordinator has heard from"))
            #expect(try await client.queueState(FanficTopology.workerQueue(id: "w1"))?.messageCount == 0)
        }

        @Test("a restarted coordinator asks the broker about no backlog that does not exist, and finds the one left")
        func restartAsksOnlyIndexedBacklogs() async throws {
            let roles = try RoleProcesses()
            defer { roles.stopAll() }
            // On RabbitMQ, a question about a missing queue is a channel error: one line in its log.
            let vhost = roles.virtualHost
            func channelErrors() throws -> Int {
                try TestBroker.script("log").split(separator: "\n")
                    .filter { $0.contains("not_found") && $0.contains("vhost '\(vhost)'") }.count
            }
            try roles.startCoordinator("coordinator-a")
            let client = try roles.connection()
            defer { Task { await client.close() } }
            let tasks = RoleProcesses.tasks(sites: ["test1.com"], perSite: 2, milliseconds: 100)
            try await Self.submit(tasks, through: client)
            try await waitUntil("the tasks wait in test1.com's backlog and the index is rewritten") {
                try await client.queueState(FanficTopology.backlogQueue(site: "test1.com"))?.messageCount == 2
                    && roles.logText("coordinator-a").contains("backlog index rewritten")
            }
            // The first start has no index yet: it asks about every site the rules know.
            try await waitUntil("the first start's questions are in the broker's log") { try channelErrors() > 0 }
            #expect(roles.stop("coordinator-a") == 0)
            let before = try channelErrors()

            try roles.startCoordinator("coordinator-b")
            try await waitUntil("coordinator-b rebuilt its table and found the backlog") {
                roles.logText("coordinator-b").contains("waiting_sites=1")
            }
            try roles.startWorker("w1")
            try await Self.expectAllFinishedWithoutOverlap(roles, tasks)
            #expect(try channelErrors() == before, "coordinator-b asked about a queue that does not exist")
        }

        @Test("a backlog that outlives the broker's consumer timeout loses nothing")
        func backlogOutlivesConsumerTimeout() async throws {
            // Channels opened from now on time out unacked deliveries after 2 s, checked every second.
            try TestBroker.script(
                "ctl", "eval",
                "application:set_env(rabbit, consumer_timeout, 2000), application:set_env(rabbit, channel_tick_interval, 1000)."
            )
            defer {
                _ = try? TestBroker.script(
                    "ctl", "eval",
                    "application:set_env(rabbit, consumer_timeout, 1800000), application:set_env(rabbit, channel_tick_interval, 60000)."
                )
            }
            let roles = try RoleProcesses()
            defer { roles.stopAll() }
            try roles.startCoordinator("coordinator-a")
            try roles.startWorker("w1")
            let client = try roles.connection()
            defer { Task { await client.close() } }
            // One worker: test1.com keeps it busy for about 6 s while test2.com waits in its backlog.
            let busy = RoleProcesses.tasks(sites: ["test1.com"], perSite: 12, milliseconds: 500)
            try await Self.submit(busy, through: client)
            try await waitUntil("w1 has started test1.com") { !roles.runs().isEmpty }
            let waiting = RoleProcesses.tasks(sites: ["test2.com"], perSite: 6, milliseconds: 100)
            try await Self.submit(waiting, through: client)
            try await waitUntil("test2.com's tasks are parked in its backlog") {
                try await client.queueState(FanficTopology.backlogQueue(site: "test2.com"))?.messageCount == 6
            }

            try await Self.expectAllFinishedWithoutOverlap(roles, busy + waiting)
            #expect(roles.runs().count == busy.count + waiting.count, "each ran once: no delivery was redelivered")
            #expect(!roles.logText("coordinator-a").contains("subscription ended"))
            #expect(!roles.logText("coordinator-a").contains("term ends"))
        }
    }
}
