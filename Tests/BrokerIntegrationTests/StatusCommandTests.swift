import AMQP
import CalibreLibrary
import FanficBroker
import FanficCore
import Foundation
import Sweep
import TestSupport
import Testing

/// `fanfic status` against a live system: real coordinators, test workers, real broker.
extension BrokerTests {
    @Suite("fanfic status")
    struct StatusCommandTests {
        /// What `fanfic status --json` prints, read back with the project's own types.
        struct Report: Decodable {
            struct Broker: Decodable {
                let url: String
                let reachable: Bool
                let error: String?
            }
            struct Worker: Decodable {
                let id: String
                let host: String?
                let site: String?
                let current: String?
                let tasksDone: Int?
                let unfinished: Int?
                let queued: Int?
                let lastHeartbeat: String?
                enum CodingKeys: String, CodingKey {
                    case id, host, site, current, unfinished, queued
                    case tasksDone = "tasks_done"
                    case lastHeartbeat = "last_heartbeat"
                }
            }
            struct Coordinator: Decodable {
                let name: String
                let role: String
                let phase: String?
                let host: String
            }
            struct Tier: Decodable {
                let queue: String
                let depth: Int?
            }
            let checkedAt: String
            let broker: Broker
            let active: String?
            let coordinators: [Coordinator]
            let workers: [Worker]
            let backlogs: [String: Int]
            let retry: [Tier]
            let ingress: Int?
            let failed: Int?
            enum CodingKeys: String, CodingKey {
                case broker, active, coordinators, workers, backlogs, retry, ingress, failed
                case checkedAt = "checked_at"
            }
        }

        static func status(_ configPath: String, _ extra: [String] = []) throws -> (ChildProcess.Result, Report?) {
            let run = try ChildProcess.run(
                [BuiltProducts.path("fanfic"), "status", "--config", configPath, "--json"] + extra)
            return (run, try? JSONDecoder().decode(Report.self, from: Data(run.stdout.utf8)))
        }

        static func date(_ text: String?) -> Date? {
            guard let text else { return nil }
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            return formatter.date(from: text)
        }

        @Test("shows the coordinators, each worker's site, story, tasks done and heartbeat, backlogs, tiers and failed")
        func liveSystem() async throws {
            let roles = try RoleProcesses()
            defer { roles.stopAll() }
            let client = try roles.connection()
            defer { Task { await client.close() } }
            let active = try roles.startCoordinator("coordinator-a")
            let host = ProcessInfo.processInfo.hostName
            try await waitUntil("coordinator-a is active", timeout: .seconds(30)) {
                roles.logText("coordinator-a").contains("active coordinator")
            }
            let standby = try roles.startCoordinator("coordinator-b")
            try roles.startWorker("w1", taskMilliseconds: 100)
            try roles.startWorker("w2", taskMilliseconds: 100)

            // One quick task each, so that `tasks_done` has something to count; then long ones.
            let quick = [
                TaskMessage(
                    url: "http://test1.com?sid=90", site: "test1.com",
                    submittedBy: RecordingTasks.submitter(milliseconds: 50)),
                TaskMessage(
                    url: "http://test2.com?sid=91", site: "test2.com",
                    submittedBy: RecordingTasks.submitter(milliseconds: 50)),
            ]
            try await CoordinatorServiceTests.submit(quick, through: client)
            try await waitUntil("both quick tasks ran", timeout: .seconds(60)) {
                roles.finishedURLs().isSuperset(of: quick.map(\.url))
            }
            let long = [
                ("test1.com", 1), ("test1.com", 2), ("test2.com", 3), ("test3.com", 4), ("test4.com", 5),
                ("test4.com", 6),
            ].map {
                TaskMessage(
                    url: "http://\($0.0)?sid=\($0.1)", site: $0.0,
                    submittedBy: RecordingTasks.submitter(milliseconds: 30000))
            }
            // In order, so that test1 and test2 take the two workers and test3 and test4 wait.
            for task in long { try await TaskPublisher(bus: AMQPMessageBus(client)).submit(task) }
            // A task waiting in the first retry tier, and a message the coordinator parks.
            var retried = long[0]
            retried.url = "http://test1.com?sid=99"
            try await client.publish(
                WireCodec.encode(retried), exchange: FanficTopology.retry, routingKey: "60s",
                properties: .persistentJSON())
            try await client.publish(
                Data("not a task".utf8), exchange: FanficTopology.ingress, routingKey: FanficTopology.taskRoutingKey,
                properties: .persistentJSON())

            // Each worker runs a long task: test1 and test2 hold the two workers, 3 and 4 wait.
            var running: [String: String] = [:]
            try await waitUntil("both workers run a long task", timeout: .seconds(60)) {
                running = Dictionary(
                    roles.runs().filter { $0.end == nil }.map { ($0.worker, $0.url) }, uniquingKeysWith: { $1 })
                return running.count == 2
            }
            var report: Report?
            var run: ChildProcess.Result?
            try await waitUntil(
                "status shows what runs and what waits", timeout: .seconds(30), every: .milliseconds(300)
            ) {
                (run, report) = try Self.status(roles.configPath)
                guard let report else { return false }
                return report.failed == 1 && report.backlogs.count == 2
                    && report.workers.allSatisfy { running[$0.id] == $0.current }
            }
            let status = try #require(report)
            #expect(run?.status == 0)

            #expect(status.broker.reachable)
            #expect(status.broker.url.contains("***") && !status.broker.url.contains("guest:guest"))
            #expect(status.active == "coordinator@\(host):\(active)")
            #expect(status.coordinators.count == 2)
            #expect(status.coordinators.first { $0.role == "active" }?.phase == "running")
            #expect(
                status.coordinators.contains { $0.role == "standby" && $0.name == "coordinator@\(host):\(standby)" })

            #expect(status.workers.map(\.id).sorted() == ["w1", "w2"])
            let finished = Dictionary(grouping: roles.runs().filter { $0.end != nil }, by: \.worker)
            let checkedAt = try #require(Self.date(status.checkedAt))
            for worker in status.workers {
                let url = try #require(running[worker.id])
                let site = long.first { $0.url == url }?.site
                #expect(worker.host == host)
                #expect(worker.site == site)
                #expect(worker.current == url)
                #expect(worker.tasksDone == finished[worker.id]?.count)
                // The coordinator drops a worker silent for worker_timeout (3 s here).
                let heartbeat = try #require(Self.date(worker.lastHeartbeat))
                #expect(abs(checkedAt.timeIntervalSince(heartbeat)) < 3.5)
                let queued = site == "test1.com" ? 1 : 0
                #expect(worker.queued == queued, "\(worker.id) on \(site ?? "?")")
                #expect(worker.unfinished == queued + 1)
            }
            #expect(status.backlogs == ["test3.com": 1, "test4.com": 2])
            #expect(
                status.retry.map(\.queue) == FanficConfiguration().retry.ladder.tiers.map(FanficTopology.retryQueue))
            #expect(status.retry.first?.depth == 1)
            #expect(status.retry.dropFirst().allSatisfy { $0.depth == 0 })
            #expect(status.ingress == 0)
            #expect(status.failed == 1)

            // The same for people.
            let text = try ChildProcess.run([BuiltProducts.path("fanfic"), "status", "--config", roles.configPath])
            #expect(text.status == 0)
            for expected in ["active", "standby", "w1", "w2", "test3.com", "fanfic.failed", "fanfic.retry.60s"] {
                #expect(text.stdout.contains(expected), "\(expected) missing from:\n\(text.stdout)")
            }
        }

        @Test("fanfic sweep now asks the scheduler, which starts a sweep; fanfic status shows its progress")
        func sweepNowAndProgress() async throws {
            let roles = try RoleProcesses()
            let client = try roles.connection()
            defer { Task { await client.close() } }
            let asked = try ChildProcess.run([
                BuiltProducts.path("fanfic"), "sweep", "now", "--config", roles.configPath,
            ])
            #expect(asked.status == 0, "\(asked.stderr)")
            #expect(asked.stdout.contains("asked for a sweep now"), "\(asked.stdout)")
            #expect(try await client.queueState(FanficTopology.sweepRequests)?.messageCount == 1)

            var settings = FanficConfiguration.Sweep()
            settings.interval = 3600
            settings.perSiteBudget = 3600
            settings.skipRecentHours = 0
            let books = (1...6).map {
                LibraryBook(
                    id: $0, url: "http://test\($0 % 2 + 1).com?sid=\($0)", lastModified: Date(timeIntervalSince1970: 0))
            }
            let scheduler = SweepScheduler(
                bus: AMQPMessageBus(client), settings: .init(sweep: settings), logger: TestBroker.logger
            ) { books }
            let startNow = try await scheduler.takeRequests()
            #expect(startNow)
            guard case .released(let sweep, 6) = try await scheduler.step(startNow: startNow) else {
                Issue.record("no sweep released")
                return
            }
            let text = try ChildProcess.run(
                [BuiltProducts.path("fanfic"), "status", "--config", roles.configPath, "--wait", "0.5"])
            #expect(text.stdout.contains("0 of 6 checks released"), "\(text.stdout)")
            #expect(text.stdout.contains("test1.com") && text.stdout.contains("test2.com"), "\(text.stdout)")
            let json = try ChildProcess.run(
                [BuiltProducts.path("fanfic"), "status", "--config", roles.configPath, "--wait", "0.5", "--json"])
            let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            #expect((object?["sweep"] as? [String: Any])?["sweep"] as? String == sweep, "\(json.stdout)")
            #expect(try await client.queueState(FanficTopology.sweepProgress)?.messageCount ?? 0 >= 1, "put back")
        }

        @Test("says so, and exits 1, when no coordinator answers or the broker can't be reached")
        func nobodyThere() throws {
            let roles = try RoleProcesses()
            let (run, report) = try Self.status(roles.configPath, ["--wait", "0.5"])
            #expect(run.status == 1)
            #expect(report?.broker.reachable == true)
            #expect(report?.active == nil)
            #expect(report?.coordinators.isEmpty == true)
            let text = try ChildProcess.run(
                [BuiltProducts.path("fanfic"), "status", "--config", roles.configPath, "--wait", "0.5"])
            #expect(text.status == 1)
            #expect(text.stdout.contains("none answered"), "\(text.stdout)")

            let closed = roles.directory.appendingPathComponent("closed.toml").path
            try "[broker]\nurl = \"amqp://guest:guest@127.0.0.1:9/%2F\"\n".write(
                toFile: closed, atomically: true, encoding: .utf8)
            let (down, downReport) = try Self.status(closed)
            #expect(down.status == 1)
            #expect(downReport?.broker.reachable == false)
            #expect(downReport?.broker.error?.contains("cannot reach the broker") == true, "\(down.stdout)")
            #expect(!down.stdout.contains("guest:guest") && !down.stderr.contains("guest:guest"))
        }
    }
}
