import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The built executables (`coordinator`, `fanfic-test-worker`, ...), next to the test bundle.
enum BuiltProducts {
    static var directory: URL {
        let executable = URL(
            fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "")
        var directory = executable.deletingLastPathComponent()
        // On Linux the tests run as .build/<triple>/debug/<Package>PackageTests.xctest.
        if !FileManager.default.fileExists(atPath: directory.appendingPathComponent("coordinator").path) {
            directory = TestBroker.repositoryRoot.appendingPathComponent(".build/debug")
        }
        return directory
    }

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
}

/// Role processes of one test, in a virtual host of their own, with a shared config file, log
/// files, and the records the test workers write. Everything is killed at the end.
final class RoleProcesses: @unchecked Sendable {
    let virtualHost: String
    let directory: URL
    let configPath: String
    private let lock = NSLock()
    private var processes: [String: pid_t] = [:]
    /// When each test worker was killed (CLOCK_MONOTONIC ns): its last task ends there.
    private var killedAt: [String: Int] = [:]

    init(extraConfig: String = "") throws {
        virtualHost = try TestBroker.makeVirtualHost("roles")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("roles-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoded = virtualHost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? virtualHost
        configPath = directory.appendingPathComponent("config.toml").path
        try """
        [broker]
        url = "\(TestBroker.baseURL)/\(encoded)"
        [worker]
        heartbeat = 1
        [coordinator]
        worker_timeout = 3
        \(extraConfig)
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Starts a coordinator; `name` tells its log file and pid apart.
    @discardableResult
    func startCoordinator(_ name: String) throws -> pid_t {
        try start(
            name,
            [
                BuiltProducts.path("coordinator"), "--config", configPath, "--log-level",
                ProcessInfo.processInfo.environment["FANFIC_TEST_COORDINATOR_LOG"] ?? "debug",
            ])
    }

    @discardableResult
    func startWorker(_ id: String, taskMilliseconds: Int = 200) throws -> pid_t {
        try start(
            id,
            [
                BuiltProducts.path("FanficTestWorker"), "--config", configPath, "--id", id, "--record",
                directory.appendingPathComponent("records-\(id).jsonl").path, "--task-ms", "\(taskMilliseconds)",
                "--log-level", "debug",
            ])
    }

    /// The real `worker` executable: FanFicFare, calibredb, Apprise.
    @discardableResult
    func startRealWorker(_ id: String) throws -> pid_t {
        try start(id, [BuiltProducts.path("worker"), "--config", configPath, "--id", id, "--log-level", "debug"])
    }

    /// The real `ingester`, polling in run mode.
    @discardableResult
    func startIngester(_ name: String = "ingester") throws -> pid_t {
        try start(name, [BuiltProducts.path("ingester"), "--config", configPath, "--log-level", "debug"])
    }

    /// Variables every role started from now on gets (e.g. FANFIC_BROKER_URL for another broker).
    var environment: [String: String] {
        get { lock.withLock { extraEnvironment } }
        set { lock.withLock { extraEnvironment = newValue } }
    }
    private var extraEnvironment: [String: String] = [:]

    private func start(_ name: String, _ argv: [String]) throws -> pid_t {
        let variables = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let argv = variables.isEmpty ? argv : ["/usr/bin/env"] + variables + argv
        let pid = try ChildProcess.spawn(
            argv, stdout: log(name), stderr: log(name) + ".err", newProcessGroup: true)
        lock.withLock { processes[name] = pid }
        return pid
    }

    func log(_ name: String) -> String { directory.appendingPathComponent("\(name).log").path }

    func logText(_ name: String) -> String {
        ((try? String(contentsOfFile: log(name), encoding: .utf8)) ?? "")
            + ((try? String(contentsOfFile: log(name) + ".err", encoding: .utf8)) ?? "")
    }

    /// The last `limit` lines of each role's log that contain one of `words`, under the role's
    /// name (roles with none are left out): what a failure message quotes of the roles.
    func logLines(of names: [String], containing words: [String], last limit: Int) -> String {
        names.map { name in
            let lines = logText(name).split(separator: "\n").filter { line in words.contains { line.contains($0) } }
            return lines.isEmpty ? "" : "\n\(name):\n" + lines.suffix(limit).joined(separator: "\n")
        }.joined()
    }

    /// kill -9, as a crash or an OOM kill would.
    func crash(_ name: String) {
        guard let pid = lock.withLock({ processes.removeValue(forKey: name) }) else { return }
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
        lock.withLock { killedAt[name] = Self.monotonicNanos() }
    }

    /// SIGTERM and wait for the exit; returns the exit status.
    @discardableResult
    func stop(_ name: String, timeout: Duration = .seconds(20)) -> Int32? {
        guard let pid = lock.withLock({ processes.removeValue(forKey: name) }) else { return nil }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while ContinuousClock.now < deadline {
            if waitpid(pid, &status, WNOHANG) == pid { return (status >> 8) & 0xFF }
            usleep(20_000)
        }
        kill(-pid, SIGKILL)
        _ = waitpid(pid, &status, 0)
        return nil
    }

    func stopAll() {
        for name in lock.withLock({ Array(processes.keys) }) { stop(name, timeout: .seconds(5)) }
    }

    func isRunning(_ name: String) -> Bool {
        guard let pid = lock.withLock({ processes[name] }) else { return false }
        return waitpid(pid, nil, WNOHANG) == 0
    }

    deinit {
        stopAll()
        TestBroker.deleteVirtualHost(virtualHost)
        // FANFIC_KEEP_TEST_LOGS=1 keeps every role's log for a look after the run.
        if ProcessInfo.processInfo.environment["FANFIC_KEEP_TEST_LOGS"] == nil {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    static func monotonicNanos() -> Int {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return spec.tv_sec * 1_000_000_000 + spec.tv_nsec
    }

    // MARK: What the test workers recorded

    struct Run: CustomStringConvertible {
        let worker: String
        let site: String
        let url: String
        let start: Int
        /// nil while running, or the kill time of a worker killed mid-task.
        var end: Int?
        var killed = false

        var description: String { "\(worker) \(url) [\(start), \(end.map(String.init) ?? "…")]" }
    }

    /// Every task run so far, by every test worker.
    func runs() -> [Run] {
        var runs: [Run] = []
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        let killed = lock.withLock { killedAt }
        for file in files where file.hasPrefix("records-") {
            let text = (try? String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)) ?? ""
            var open: [String: Run] = [:]
            var workerRuns: [Run] = []
            var worker = ""
            for line in text.split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    let event = object["event"] as? String, let url = object["url"] as? String,
                    let site = object["site"] as? String, let time = object["t"] as? Int,
                    let id = object["worker"] as? String
                else { continue }
                worker = id
                if event == "start" {
                    open[url] = Run(worker: id, site: site, url: url, start: time)
                } else if var run = open.removeValue(forKey: url) {
                    run.end = time
                    workerRuns.append(run)
                }
            }
            for var run in open.values {
                if let kill = killed[worker] {
                    run.end = kill
                    run.killed = true
                }
                workerRuns.append(run)
            }
            runs += workerRuns
        }
        return runs
    }

    /// URLs whose task ran to its end at least once.
    func finishedURLs() -> Set<String> {
        Set(runs().filter { $0.end != nil && !$0.killed }.map(\.url))
    }

    /// Pairs of runs of one site by two workers whose times overlap: must be empty.
    func overlaps() -> [(Run, Run)] {
        var found: [(Run, Run)] = []
        let bySite = Dictionary(grouping: runs(), by: \.site)
        for runs in bySite.values {
            for (index, first) in runs.enumerated() {
                for second in runs[(index + 1)...] where first.worker != second.worker {
                    let firstEnd = first.end ?? Int.max
                    let secondEnd = second.end ?? Int.max
                    if first.start < secondEnd && second.start < firstEnd { found.append((first, second)) }
                }
            }
        }
        return found
    }

    // MARK: Broker side

    func connection(name: String = "test-client") throws -> AMQPConnection {
        AMQPConnection(
            configuration: try TestBroker.configuration(virtualHost: virtualHost, name: name), logger: TestBroker.logger
        )
    }

    /// Publishes `perSite` tasks for each site, URLs carrying how long each takes.
    static func tasks(sites: [String], perSite: Int, milliseconds: Int) -> [TaskMessage] {
        var tasks: [TaskMessage] = []
        for index in 0..<perSite {
            for site in sites {
                tasks.append(
                    TaskMessage(
                        url: "http://\(site)?sid=\(index)", site: site,
                        submittedBy: RecordingTasks.submitter(milliseconds: milliseconds)))
            }
        }
        return tasks
    }
}
