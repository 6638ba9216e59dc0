import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `fanfic run` (the supervisor) and `run.sh` (the one command), with the real executables,
/// FanFicFare, calibredb and RabbitMQ.
extension BrokerTests {
    @Suite("fanfic run and run.sh")
    struct RunCommandTests {
        /// `child=NAME pid=N ... started` lines of the supervisor's log, in order.
        static func starts(in log: String) -> [(child: String, pid: pid_t)] {
            log.split(separator: "\n").compactMap { line in
                guard line.contains("[Supervision] started"), let child = line.range(of: "child="),
                    let pid = line.range(of: " pid=")
                else { return nil }
                let name = String(line[child.upperBound..<pid.lowerBound])
                let digits = line[pid.upperBound...].prefix { $0.isNumber }
                return Int32(digits).map { (name, $0) }
            }
        }

        /// Processes whose command line or environment mentions `text` (other than this test's
        /// own): a RabbitMQ node learns its name and folders from its environment.
        static func processes(mentioning text: String) -> [String] {
            let me = getpid()
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap { entry -> String? in
                guard let pid = Int32(entry), pid != me,
                    let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"), !data.isEmpty
                else { return nil }
                let environment = FileManager.default.contents(atPath: "/proc/\(entry)/environ") ?? Data()
                let command = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
                let mentions = String(decoding: environment, as: UTF8.self).contains(text) || command.contains(text)
                return mentions ? "\(pid): \(command.prefix(200))" : nil
            }
        }

        /// `fanfic run` with `config`, watched through an event log on the broker.
        struct Running {
            let roles: RoleProcesses
            let client: AMQPConnection
            let events = EventLog()
            let supervisor: LaunchedProcess

            init(config: String) async throws {
                roles = try RoleProcesses(extraConfig: config)
                client = try roles.connection()
                try await client.waitUntilConnected(timeout: .seconds(30))
                try await client.declare(FanficTopology.declarations(retry: FanficConfiguration().retry.ladder))
                try await events.start(client)
                supervisor = try LaunchedProcess(
                    [BuiltProducts.path("fanfic"), "run", "--config", roles.configPath],
                    output: roles.directory.appendingPathComponent("run.log").path)
            }

            /// Stops watching (the supervisor is the test's to stop).
            func close() {
                events.stop()
                let client = client
                Task { await client.close() }
            }
        }

        @Test("restarts a worker and the coordinator killed with -9; the stories still arrive; SIGTERM stops all")
        func supervisorRestarts() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("run-\(UUID().uuidString)")
            let library = try TestLibrary(in: scratch)
            defer { try? FileManager.default.removeItem(at: scratch) }
            let running = try await Running(
                config: """
                    [calibre]
                    library = "\(library.folder.path)"
                    [run]
                    workers = 2
                    stop_timeout = 30
                    """)
            defer { running.close() }
            let (roles, events, supervisor) = (running.roles, running.events, running.supervisor)
            try await waitUntil("the supervisor started its three children", timeout: .seconds(30)) {
                Self.starts(in: supervisor.text).count == 3
            }
            let first = Self.starts(in: supervisor.text)
            let coordinator = try #require(first.first { $0.child == "coordinator" })
            let worker = try #require(first.first { $0.child.hasPrefix("worker ") })
            #expect(Set(first.map(\.child)).count == 3, "\(first)")
            // Every child is the fanfic binary itself, started under its role's name: one copy
            // of the code in memory for all of them.
            let fanfic = URL(fileURLWithPath: BuiltProducts.path("fanfic")).resolvingSymlinksInPath().path
            for (pid, role) in [(coordinator.pid, "coordinator"), (worker.pid, "worker")] {
                let image = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
                let arguments = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
                let argv0 = String(decoding: arguments.prefix { $0 != 0 }, as: UTF8.self)
                #expect(image == fanfic && argv0 == role, "\(role): exe \(image ?? "?"), argv[0] \(argv0)")
            }

            let urls = ["http://test1.com?sid=1", "http://test1.com?sid=2", "http://test2.com?sid=3"]
            let submit = try ChildProcess.run(
                [BuiltProducts.path("fanfic"), "submit", "--config", roles.configPath] + urls)
            #expect(submit.status == 0, "\(submit.stderr)")

            kill(worker.pid, SIGKILL)
            kill(coordinator.pid, SIGKILL)
            try await waitUntil("both were started again", timeout: .seconds(30)) {
                let again = Self.starts(in: supervisor.text).dropFirst(3)
                return again.contains { $0.child == worker.child && $0.pid != worker.pid }
                    && again.contains { $0.child == "coordinator" && $0.pid != coordinator.pid }
            }
            #expect(supervisor.text.contains("\(worker.child) exited; restarting in 1 s"))
            #expect(supervisor.text.contains("coordinator exited; restarting in 1 s"))

            for url in urls {
                let end = try await events.waitForEnd(of: url, timeout: .seconds(120))
                #expect(end.kind == .taskSucceeded, "\(url): \(end.reason ?? "")")
            }
            let books = try library.books()
            #expect(books.count == urls.count, "one book per story: \(books.map(\.title))")
            // Children's lines reach the output prefixed with their name.
            #expect(supervisor.text.contains("coordinator | "))
            #expect(supervisor.text.contains("\(worker.child) | "))

            let status = await supervisor.terminate(timeout: .seconds(60))
            #expect(status == 0, "\(supervisor.text.suffix(2000))")
            #expect(Self.processes(mentioning: roles.configPath).isEmpty)
        }

        @Test(
            "with dashboard.listen set, the dashboard child records every task's timeline and serves it, behind its login"
        )
        func dashboard() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("dash-\(UUID().uuidString)")
            let library = try TestLibrary(in: scratch)
            defer { try? FileManager.default.removeItem(at: scratch) }
            let port = FreePort.pick(in: 20_000...29_999)
            let token = "test-token-\(UUID().uuidString)"
            let roles = try RoleProcesses(
                extraConfig: """
                    [calibre]
                    library = "\(library.folder.path)"
                    [run]
                    workers = 1
                    stop_timeout = 30
                    [dashboard]
                    listen = "127.0.0.1:\(port)"
                    password = "a password for the test"
                    api_tokens = ["\(token)"]
                    database = "\(scratch.appendingPathComponent("history/dashboard.sqlite").path)"
                    """)
            // curl reads the header from a file: a token on a command line is visible to anyone.
            let header = scratch.appendingPathComponent("auth-header")
            try "Authorization: Bearer \(token)\n".write(to: header, atomically: true, encoding: .utf8)
            func get(_ path: String, authorized: Bool = true) throws -> (status: Int, body: String) {
                let result = try ChildProcess.run(
                    ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]
                        + (authorized ? ["-H", "@\(header.path)"] : []) + ["http://127.0.0.1:\(port)\(path)"])
                let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
                return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
            }

            let supervisor = try LaunchedProcess(
                [BuiltProducts.path("fanfic"), "run", "--config", roles.configPath],
                output: roles.directory.appendingPathComponent("run.log").path)
            try await waitUntil("the dashboard answers", timeout: .seconds(60), every: .milliseconds(200)) {
                (try? get("/healthz").status) == 200
            }
            let dashboard = try #require(Self.starts(in: supervisor.text).first { $0.child == "dashboard" })
            let arguments = FileManager.default.contents(atPath: "/proc/\(dashboard.pid)/cmdline") ?? Data()
            #expect(String(decoding: arguments.prefix { $0 != 0 }, as: UTF8.self) == "dashboard")
            #expect(try get("/api/history", authorized: false).status == 401)

            let urls = ["http://test1.com?sid=41", "http://test2.com?sid=42"]
            let submit = try ChildProcess.run(
                [BuiltProducts.path("fanfic"), "submit", "--config", roles.configPath] + urls)
            #expect(submit.status == 0, "\(submit.stderr)")
            var runs: [[String: Any]] = []
            try await waitUntil(
                "both stories succeeded, by the history", timeout: .seconds(180), every: .milliseconds(500)
            ) {
                let answer = try get("/api/history?outcome=succeeded")
                runs = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]]) ?? []
                return runs.count == urls.count
            }
            #expect(Set(runs.compactMap { $0["url"] as? String }) == Set(urls))
            for run in runs {
                let kinds = (run["timeline"] as? [[String: Any]])?.compactMap { $0["type"] as? String } ?? []
                #expect(
                    kinds.starts(with: ["task.routed", "task.started"]) && kinds.last == "task.succeeded",
                    "\(run["url"] ?? ""): \(kinds)")
                #expect(run["calibre_id"] is Int, "\(run)")
                #expect((run["title"] as? String)?.isEmpty == false, "the title FanFicFare wrote: \(run)")
            }
            let status = try get("/api/status")
            #expect(status.status == 200, "\(status.body)")
            #expect(status.body.contains("\"active\""))
            #expect(try get("/api/history?limit=0").status == 400)

            // A page left open (its live feed) does not hold the dashboard's stop up: the stream
            // is ended properly (curl exits 0), not cut when the stop times out (curl exits 18).
            let live = try LaunchedProcess(
                ["curl", "-sN", "--max-time", "120", "-H", "@\(header.path)", "http://127.0.0.1:\(port)/api/live"],
                output: scratch.appendingPathComponent("live.log").path)
            try await waitUntil("the live feed said change", timeout: .seconds(30), every: .milliseconds(200)) {
                live.text.contains("event: change")
            }
            let stopped = await supervisor.terminate(timeout: .seconds(60))
            try await waitUntil("the live feed ended", timeout: .seconds(30), every: .milliseconds(200)) {
                !live.isRunning
            }
            #expect(live.exitStatus == 0, "the stream was cut: curl exit \(live.exitStatus ?? -1)")
            #expect(stopped == 0, "\(supervisor.text.suffix(2000))")
            #expect(Self.processes(mentioning: roles.configPath).isEmpty)
            #expect(!supervisor.text.contains(token), "the token is never logged")
        }

        @Test(
            "the dashboard in headless Chromium: log in, add URLs, watch them under Now and History without a reload, requeue a failure"
        )
        func dashboardInBrowser() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("browser-\(UUID().uuidString)")
            let library = try TestLibrary(in: scratch)
            defer { try? FileManager.default.removeItem(at: scratch) }
            let port = FreePort.pick(in: 20_000...29_999)
            let password = "a password for the browser \(UUID().uuidString)"
            let passwordFile = scratch.appendingPathComponent("password")
            try password.write(to: passwordFile, atomically: true, encoding: .utf8)
            let roles = try RoleProcesses(
                extraConfig: """
                    [calibre]
                    library = "\(library.folder.path)"
                    [run]
                    workers = 2
                    stop_timeout = 30
                    [dashboard]
                    listen = "127.0.0.1:\(port)"
                    database = "\(scratch.appendingPathComponent("history/dashboard.sqlite").path)"
                    """)
            let supervisor = try LaunchedProcess(
                [
                    "/usr/bin/env", "FANFIC_DASHBOARD_PASSWORD_FILE=\(passwordFile.path)", BuiltProducts.path("fanfic"),
                    "run", "--config", roles.configPath,
                ],
                output: roles.directory.appendingPathComponent("run.log").path)
            try await waitUntil("the dashboard answers", timeout: .seconds(60), every: .milliseconds(200)) {
                (try? ChildProcess.run(["curl", "-sf", "--max-time", "5", "http://127.0.0.1:\(port)/healthz"]).status)
                    == 0
            }
            // Screenshots are the test's artifacts: kept under .build, looked at by people.
            let artifacts = TestBroker.repositoryRoot.appendingPathComponent(".build/test-artifacts/dashboard")
            let browser = try LaunchedProcess(
                [
                    "/usr/bin/env", "DASHBOARD_URL=http://127.0.0.1:\(port)",
                    "DASHBOARD_PASSWORD_FILE=\(passwordFile.path)", "ARTIFACTS=\(artifacts.path)", "python3",
                    TestBroker.repositoryRoot.appendingPathComponent("Tests/Browser/dashboard_browser.py").path,
                ],
                output: scratch.appendingPathComponent("browser.log").path)
            try await waitUntil("the browser script ended", timeout: .seconds(600), every: .milliseconds(500)) {
                !browser.isRunning
            }
            #expect(browser.exitStatus == 0, "\(browser.text)\n--- fanfic run:\n\(supervisor.text.suffix(3000))")
            for page in ["login", "now", "history", "failed", "sites"] {
                #expect(
                    FileManager.default.fileExists(atPath: artifacts.appendingPathComponent("\(page).png").path),
                    "screenshot of \(page)")
            }
            let stopped = await supervisor.terminate(timeout: .seconds(60))
            #expect(stopped == 0, "\(supervisor.text.suffix(2000))")
            #expect(!supervisor.text.contains(password), "the password is never logged")
        }

        @Test(
            "a series page by fanfic submit becomes three books; then a sweep checks the two in progress, up to date, and status shows it"
        )
        func listThenSweep() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("sweep-\(UUID().uuidString)")
            let library = try TestLibrary(in: scratch)
            defer { try? FileManager.default.removeItem(at: scratch) }
            // A 20 s "day": each sweep plans from the library as it is then.
            let running = try await Running(
                config: """
                    [calibre]
                    library = "\(library.folder.path)"
                    [run]
                    workers = 2
                    [fanficfare]
                    expand_lists = 3
                    [sweep]
                    interval = 20
                    per_site_budget = 3600
                    skip_recent_hours = 0
                    """)
            defer { running.close() }
            let (roles, events, supervisor) = (running.roles, running.events, running.supervisor)

            // FanFicFare's offline site lists sid 1 to 9 on any page that is not a story; odd sids
            // are in progress, even ones complete.
            let page = "http://test1.com/seriesid=1"
            let submit = try ChildProcess.run([
                BuiltProducts.path("fanfic"), "submit", "--config", roles.configPath, page,
            ])
            #expect(submit.status == 0 && submit.stdout.contains("(a list)"), "\(submit.stdout)\(submit.stderr)")
            let listed = try await events.waitForEnd(of: page, timeout: .seconds(120))
            #expect(listed.detail == "list: 3 stories queued, the first 3 of 9 (fanficfare.expand_lists)", "\(listed)")
            let stories = (1...3).map { "http://test1.com?sid=\($0)" }
            for story in stories { try await events.waitForEnd(of: story, timeout: .seconds(120)) }
            #expect(try library.books().compactMap { $0.identifiers["url"] }.sorted() == stories)

            // The next sweep that plans with all three books checks exactly the two in progress.
            var report: [String: Any] = [:]
            try await waitUntil("fanfic status shows a sweep of the two books in progress", timeout: .seconds(120)) {
                let status = try ChildProcess.run(
                    [BuiltProducts.path("fanfic"), "status", "--json", "--config", roles.configPath])
                report = (try? JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]) ?? [:]
                let sites = (report["sweep"] as? [String: Any])?["sites"] as? [[String: Any]] ?? []
                return sites.count == 1 && sites[0]["site"] as? String == "test1.com" && sites[0]["checks"] as? Int == 2
            }
            #expect(report["sweep_interval"] as? Int == 20)
            for story in ["http://test1.com?sid=1", "http://test1.com?sid=3"] {
                let check = try await events.waitForEnd(of: story, count: 2, timeout: .seconds(120))
                #expect(check.kind == .taskSucceeded && check.detail == "up to date", "\(story): \(check)")
            }
            #expect(try library.books().count == 3, "checks add no book")

            let stopped = await supervisor.terminate(timeout: .seconds(60))
            #expect(stopped == 0, "\(supervisor.text.suffix(2000))")
        }

        @Test(
            "run.sh on a provisioned machine: config and library made, local broker started, books, SIGTERM stops all")
        func runScript() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("runsh-\(UUID().uuidString)")
            // Readable by the rabbitmq user, which runs the node when the tests run as root.
            try FileManager.default.createDirectory(
                at: scratch, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            defer { try? FileManager.default.removeItem(at: scratch) }
            let config = scratch.appendingPathComponent("config.toml").path
            let data = scratch.appendingPathComponent("data")
            let port = TestBroker.port + 90
            let script = try LaunchedProcess(
                [
                    "/usr/bin/env", "FANFIC_CONFIG=\(config)", "FANFIC_DATA_DIR=\(data.path)",
                    "FANFIC_LOCAL_BROKER_PORT=\(port)", "FANFIC_BIN_DIR=\(BuiltProducts.directory.path)",
                    "FANFIC_NO_INSTALL=1", "FANFIC_COORDINATOR_WORKER_TIMEOUT=3", "FANFIC_WORKER_HEARTBEAT=1",
                    TestBroker.repositoryRoot.appendingPathComponent("run.sh").path,
                ], output: scratch.appendingPathComponent("run.log").path)
            do {
                try await waitUntil("run.sh is running fanfic run", timeout: .seconds(180), every: .milliseconds(200)) {
                    // An early exit fails at once, with what the script said.
                    guard script.isRunning else { throw TestFailure("run.sh exited early") }
                    return Self.starts(in: script.text).count >= 3
                }
            } catch {
                let logs = (try? FileManager.default.contentsOfDirectory(atPath: data.path + "/rabbitmq/log")) ?? []
                let brokerLog = logs.map {
                    String(
                        ((try? String(contentsOfFile: data.path + "/rabbitmq/log/" + $0, encoding: .utf8)) ?? "")
                            .suffix(3000))
                }
                Issue.record("run.sh said:\n\(script.text.suffix(3000))\nbroker log: \(brokerLog)")
                throw error
            }
            let text = try String(contentsOfFile: config, encoding: .utf8)
            #expect(text.contains("library = \"\(data.path)/library\""))
            #expect(text.contains("127.0.0.1:\(port)/"))
            #expect(script.text.contains("starting a local RabbitMQ node"))

            let urls = ["http://test1.com?sid=1", "http://test3.com?sid=2"]
            let submit = try ChildProcess.run([BuiltProducts.path("fanfic"), "submit", "--config", config] + urls)
            #expect(submit.status == 0, "\(submit.stdout)\(submit.stderr)")
            let library = try TestLibrary(in: data)
            try await waitUntil("both stories are books", timeout: .seconds(120), every: .milliseconds(500)) {
                (try? library.books().count) == 2
            }
            let ids = try library.books().flatMap { $0.identifiers.values }
            #expect(Set(ids).isSuperset(of: urls), "\(ids)")

            let status = await script.terminate(timeout: .seconds(90))
            #expect(status == 0, "\(script.text.suffix(2000))")
            // The script, fanfic run, its children and the RabbitMQ node (named in its environment).
            #expect(Self.processes(mentioning: scratch.path).isEmpty)
            #expect(Self.processes(mentioning: "fanfic-\(port)@").isEmpty)
            let ping = try ChildProcess.run(["rabbitmqctl", "-q", "-n", "fanfic-\(port)@localhost", "ping"])
            #expect(ping.status != 0, "the node still answers")
        }
    }
}
