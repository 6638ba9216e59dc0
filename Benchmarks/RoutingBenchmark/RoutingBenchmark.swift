import AMQP
import ArgumentParser
import FanficBroker
import FanficCore
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// How fast the `coordinator` executable routes queued tasks, beside the raw broker.
///
/// Fills `fanfic.ingress` with N tasks over S sites (persistent, confirmed, `window` in flight:
/// the raw broker figure, the same publishes the foundation benchmark measures), then starts a
/// coordinator with no workers, so that every task is moved ingress -> `fanfic.backlog.<site>`
/// (publish, confirm, ack), and times the moves from the first to the last. Samples the
/// coordinator's resident memory meanwhile, and its CPU time per task. Also times the same
/// moves made by a bare client (no decoding, no table, no events), and with the one event per
/// move a routed task costs: routing's ceiling on this broker. Prints one JSON object.
@main
struct RoutingBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "routing-bench", abstract: "Measure the coordinator's routing rate and memory.")

    @Option(help: "Broker URL, with a virtual host of its own (the benchmark empties its queues).")
    var url: String?

    @Flag(
        help: """
            Only time the site rules on the tasks' URLs, in this process (no broker): the part of \
            routing that derives each task's site and canonical URL.
            """)
    var resolveOnly = false

    @Option(help: "The coordinator executable.")
    var coordinator = ".build/release/coordinator"

    @Option(help: "Tasks to route.")
    var tasks = 1000

    @Option(help: "Sites the tasks are spread over.")
    var sites = 50

    @Option(help: "Publishes in flight at once while filling the ingress queue.")
    var window = 64

    func run() async throws {
        if resolveOnly { return Self.timeResolving(tasks: tasks, sites: sites) }
        guard let url else { throw ValidationError("--url is needed (or --resolve-only)") }
        var logger = Logger(label: "routing-bench")
        logger.logLevel = .warning
        var configuration = try AMQPConfiguration(url: url)
        configuration.connectionName = "routing-bench"
        let connection = AMQPConnection(configuration: configuration, logger: logger)
        try await connection.waitUntilConnected(timeout: .seconds(30))
        try await connection.declare(FanficTopology.declarations(retry: FanficConfiguration().retry.ladder))
        // Real sites: the coordinator derives each task's site from its URL and parks what the
        // site rules refuse. A story URL per site and index: an adapter's example URL with its
        // last number replaced, kept when the rules accept it.
        let storyURLs = Self.storyURLTemplates(count: sites)
        let siteNames = storyURLs.map(\.site)
        for site in siteNames { _ = try await connection.purgeQueueIfExists(FanficTopology.backlogQueue(site: site)) }
        _ = try await connection.purgeQueue(FanficTopology.ingress)

        // The coordinator, as users run it.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("routing-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let configPath = directory.appendingPathComponent("config.toml").path
        try "[broker]\nurl = \"\(url)\"\n[worker]\nheartbeat = 1\n[coordinator]\nworker_timeout = 2\n".write(
            toFile: configPath, atomically: true, encoding: .utf8)

        // Raw broker: the tasks into fanfic.ingress, persistent and confirmed.
        let bodies = (0..<tasks).map { index in
            WireCodec.encode(
                TaskMessage(
                    url: storyURLs[index % siteNames.count].url(index + 1), site: siteNames[index % siteNames.count],
                    submittedBy: "bench"))
        }
        // The same publishes into the queues routing fills: each task into its site's backlog
        // (one queue per site, as the coordinator writes them), then emptied again.
        for site in siteNames { try await connection.declare(FanficTopology.backlog(site: site)) }
        let spread = try await Self.publishAll(count: bodies.count, window: window, on: connection) { index in
            (
                bodies[index], FanficTopology.dispatch,
                FanficTopology.backlogQueue(site: siteNames[index % siteNames.count])
            )
        }
        for site in siteNames { _ = try await connection.purgeQueue(FanficTopology.backlogQueue(site: site)) }

        // The moves alone, as a bare client makes them: ingress -> backlog (consume, confirmed
        // publish, ack), no decoding, no table, no events. What routing cannot beat on this broker.
        _ = try await Self.publishAll(count: bodies.count, window: window, on: connection) { index in
            (bodies[index], FanficTopology.ingress, FanficTopology.taskRoutingKey)
        }
        let machineBeforeMove = Self.machineBusySeconds()
        let bareMove = try await Self.moveAll(
            count: tasks, prefetch: 500, on: connection, to: siteNames.map { FanficTopology.backlogQueue(site: $0) })
        let moveMachineCPU = (Self.machineBusySeconds() ?? 0) - (machineBeforeMove ?? 0)
        for site in siteNames { _ = try await connection.purgeQueue(FanficTopology.backlogQueue(site: site)) }

        // The same, plus the one event per move every routed task costs (`task.routed`, to the
        // events exchange, confirmed): the ceiling for a coordinator that did no work of its own.
        _ = try await Self.publishAll(count: bodies.count, window: window, on: connection) { index in
            (bodies[index], FanficTopology.ingress, FanficTopology.taskRoutingKey)
        }
        let routedEvent = WireCodec.encode(
            FanficEvent(
                .taskRouted, source: "coordinator@bench:1", site: siteNames[0], url: storyURLs[0].url(1),
                destination: FanficTopology.backlogQueue(site: siteNames[0])))
        let bareMoveWithEvent = try await Self.moveAll(
            count: tasks, prefetch: 500, on: connection, to: siteNames.map { FanficTopology.backlogQueue(site: $0) },
            event: routedEvent)
        for site in siteNames { _ = try await connection.purgeQueue(FanficTopology.backlogQueue(site: site)) }

        // An installation that has run before (every start but its first): the coordinator under
        // test starts once on the empty ingress, finds the backlogs above (and writes its index
        // of them, if it keeps one), then stops.
        try await startOnce(configPath: configPath, log: directory.path + "/log", on: connection)

        let fill = try await Self.publishAll(count: bodies.count, window: window, on: connection) { index in
            (bodies[index], FanficTopology.ingress, FanficTopology.taskRoutingKey)
        }

        // Never seen full (the coordinator took a task before the first look): timed from its start.
        let (spawned, machineAtSpawn) = (ContinuousClock.now, Self.machineBusySeconds())
        let pid = try spawn(
            [coordinator, "--config", configPath, "--log-level", "warning"], log: directory.path + "/log")
        defer {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }

        // Timed from the last look that still saw every task in ingress (the coordinator took
        // the first one after it) to the look that found the last backlog complete: both bounds
        // lean against routing, never for it. Ingress is asked every 2 ms (one query); once it is
        // empty, each backlog is asked until it holds its share, and not again after that.
        var expected: [String: Int] = [:]
        for index in 0..<tasks { expected[siteNames[index % siteNames.count], default: 0] += 1 }
        var incomplete = Set(expected.keys)
        var lastFull = spawned
        var cpuAtStart: Double? = 0
        var machineAtStart = machineAtSpawn
        var started = false
        var peakRSS = 0
        let deadline = ContinuousClock.now + .seconds(600)
        while !incomplete.isEmpty {
            guard ContinuousClock.now < deadline else { throw ValidationError("routing took over 600 s") }
            if waitpid(pid, nil, WNOHANG) == pid {
                let log = (try? String(contentsOfFile: directory.path + "/log", encoding: .utf8)) ?? ""
                throw ValidationError("the coordinator exited:\n\(log)")
            }
            peakRSS = max(peakRSS, Self.residentKilobytes(pid) ?? 0)
            let asked = ContinuousClock.now
            let cpu = Self.cpuSeconds(pid)
            let machine = Self.machineBusySeconds()
            let left = Int(try await connection.queueState(FanficTopology.ingress)?.messageCount ?? 0)
            if !started {
                if left == tasks {
                    (lastFull, cpuAtStart, machineAtStart) = (asked, cpu, machine)
                } else {
                    started = true
                }
            }
            if left == 0 {
                for site in incomplete {
                    let count = try await connection.queueState(FanficTopology.backlogQueue(site: site))?.messageCount
                    if Int(count ?? 0) >= expected[site]! { incomplete.remove(site) }
                }
            }
            if !incomplete.isEmpty { try await Task.sleep(for: .milliseconds(2)) }
        }
        let routing = ContinuousClock.now - lastFull
        let cpuPerTask = ((Self.cpuSeconds(pid) ?? 0) - (cpuAtStart ?? 0)) / Double(tasks)
        let routeMachineCPU = (Self.machineBusySeconds() ?? 0) - (machineAtStart ?? 0)
        let fillRate = Double(tasks) / fill.seconds
        let moveRate = Double(tasks) / bareMove.seconds
        let spreadRate = Double(tasks) / spread.seconds
        let routeRate = Double(tasks) / routing.seconds
        let result: [String: Any] = [
            "tasks": tasks, "sites": sites,
            "raw_publish_rate": Int(fillRate), "raw_spread_rate": Int(spreadRate), "routing_rate": Int(routeRate),
            "ratio": (routeRate / fillRate * 100).rounded() / 100,
            "ratio_spread": (routeRate / spreadRate * 100).rounded() / 100,
            "bare_move_rate": Int(moveRate), "ratio_move": (routeRate / moveRate * 100).rounded() / 100,
            "bare_move_event_rate": Int(Double(tasks) / bareMoveWithEvent.seconds),
            "bare_move_event_ratio": (Double(tasks) / bareMoveWithEvent.seconds / fillRate * 100).rounded() / 100,
            "coordinator_cpu_us_per_task": Int(cpuPerTask * 1e6),
            "machine_cpu_us_per_task": Int(routeMachineCPU / Double(tasks) * 1e6),
            "machine_cpu_us_per_bare_move": Int(moveMachineCPU / Double(tasks) * 1e6),
            "coordinator_peak_rss_kb": peakRSS,
        ]
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        FileHandle.standardOutput.write(json + Data("\n".utf8))
        await connection.close()
    }

    /// Publishes `count` messages, persistent and confirmed, `window` in flight; the time taken.
    static func publishAll(
        count: Int, window: Int, on connection: AMQPConnection,
        _ message: @escaping @Sendable (Int) -> (body: Data, exchange: String, routingKey: String)
    ) async throws -> Duration {
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<window {
                group.addTask {
                    for index in stride(from: lane, to: count, by: window) {
                        let (body, exchange, routingKey) = message(index)
                        try await connection.publish(
                            body, exchange: exchange, routingKey: routingKey, properties: .persistentJSON(),
                            mandatory: true)
                    }
                }
            }
            try await group.waitForAll()
        }
        return ContinuousClock.now - start
    }

    /// Consumes `count` messages and moves each, confirmed, into the next of `queues` before
    /// acking it (up to `prefetch` at once); the time from the first delivery to the last ack.
    /// `event`: also published to `fanfic.events` per move, as the coordinator's `task.routed`.
    static func moveAll(
        count: Int, prefetch: UInt16, on connection: AMQPConnection, to queues: [String], event: Data? = nil
    ) async throws -> Duration {
        var start: ContinuousClock.Instant?
        try await withThrowingTaskGroup(of: Void.self) { group in
            var received = 0
            for try await delivery in connection.consume(queue: FanficTopology.ingress, prefetch: prefetch) {
                if start == nil { start = .now }
                let queue = queues[received % queues.count]
                group.addTask {
                    try await connection.publish(
                        delivery.body, exchange: FanficTopology.dispatch, routingKey: queue,
                        properties: .persistentJSON(), mandatory: true)
                    try await delivery.ack()
                    if let event {
                        try await connection.publish(
                            event, exchange: FanficTopology.events, routingKey: "task.routed",
                            properties: .persistentJSON())
                    }
                }
                received += 1
                if received == count { break }
            }
            try await group.waitForAll()
        }
        return ContinuousClock.now - (start ?? .now)
    }

    /// User and system CPU time the process has used so far.
    static func cpuSeconds(_ pid: pid_t) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let afterName = stat.range(of: ") ", options: .backwards)
        else { return nil }
        // Fields after the name, from `state` (field 3): utime and stime are fields 14 and 15.
        let fields = stat[afterName.upperBound...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// CPU time every core of the machine has spent busy so far (/proc/stat), whoever used it.
    static func machineBusySeconds() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") })
        else { return nil }
        // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
        let ticks = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard ticks.count >= 8 else { return nil }
        let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
        return busy / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func residentKilobytes(_ pid: pid_t) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }

    /// Starts the coordinator, waits until it is ready (its `coordinator.ready` event) and, if it
    /// keeps a backlog index, until it has written it; then stops it.
    private func startOnce(configPath: String, log: String, on connection: AMQPConnection) async throws {
        let ready = "routing-bench.ready"
        try await connection.declare(
            AMQPTopology(
                queues: [QueueSpec(name: ready, durable: false, exclusive: true)],
                bindings: [
                    BindingSpec(
                        queue: ready, exchange: FanficTopology.events,
                        routingKey: FanficEvent.Kind.coordinatorReady.rawValue)
                ]))
        let pid = try spawn([coordinator, "--config", configPath, "--log-level", "warning"], log: log)
        defer {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        let deadline = ContinuousClock.now + .seconds(120)
        func waitFor(_ what: String, _ condition: () async throws -> Bool) async throws {
            while try await !condition() {
                guard ContinuousClock.now < deadline else {
                    throw ValidationError("the coordinator's first start: no \(what)")
                }
                if waitpid(pid, nil, WNOHANG) == pid { throw ValidationError("the coordinator's first start exited") }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        try await waitFor("ready event") { try await connection.queueState(ready)?.messageCount ?? 0 > 0 }
        // The index queue is declared before the backlogs are asked about, so before ready.
        if try await connection.queueState(FanficTopology.backlogIndex) != nil {
            try await waitFor("backlog index") {
                try await connection.queueState(FanficTopology.backlogIndex)?.messageCount ?? 0 > 0
            }
        }
        _ = try await connection.deleteQueue(ready)
    }

    private func spawn(_ argv: [String], log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, argv[0], &actions, nil, &cArguments, environ)
        guard result == 0 else {
            throw ValidationError("cannot start \(argv[0]): \(String(cString: strerror(result)))")
        }
        return pid
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

extension AMQPConnection {
    func purgeQueueIfExists(_ name: String) async throws -> UInt32 {
        guard try await queueState(name) != nil else { return 0 }
        return try await purgeQueue(name)
    }
}

extension RoutingBenchmark {
    /// Resolves the tasks' URLs through the site rules, five rounds after a warm-up one, and
    /// prints the best and median nanoseconds per URL as one JSON object.
    static func timeResolving(tasks: Int, sites: Int) {
        let templates = storyURLTemplates(count: sites)
        let urls = (0..<tasks).map { templates[$0 % templates.count].url($0 + 1) }
        let clock = ContinuousClock()
        var accepted = 0
        var rounds: [Double] = []
        for round in 0..<6 {
            let elapsed = clock.measure {
                for url in urls { if case .success = SiteRules.bundled.resolve(url) { accepted += 1 } }
            }
            if round > 0 { rounds.append(elapsed.seconds * 1e9 / Double(urls.count)) }
        }
        rounds.sort()
        let line: [String: Any] = [
            "urls": urls.count, "sites": templates.count, "accepted": accepted / 6,
            "resolve_ns_best": Int(rounds[0]), "resolve_ns_median": Int(rounds[rounds.count / 2]),
        ]
        let data = (try? JSONSerialization.data(withJSONObject: line, options: .sortedKeys)) ?? Data()
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    /// Up to `count` sites whose example URL takes another story number.
    static func storyURLTemplates(count: Int) -> [(site: String, url: @Sendable (Int) -> String)] {
        var templates: [(site: String, url: @Sendable (Int) -> String)] = []
        for rule in SiteRules.bundled.rules where templates.count < count {
            guard let example = rule.examples.first,
                let digits = example.range(of: "[0-9]+", options: [.regularExpression, .backwards])
            else { continue }
            let (head, tail) = (String(example[..<digits.lowerBound]), String(example[digits.upperBound...]))
            let url: @Sendable (Int) -> String = { "\(head)\(1000 + $0)\(tail)" }
            // The number must be the story's: two numbers, two canonical URLs of this site.
            guard case .success(let one) = SiteRules.bundled.resolve(url(1)), one.site == rule.site,
                case .success(let two) = SiteRules.bundled.resolve(url(2)), two.canonicalURL != one.canonicalURL
            else { continue }
            templates.append((rule.site, url))
        }
        return templates
    }
}
