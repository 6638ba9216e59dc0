import AppSupport
import ArgumentParser
import FanficCore
import Foundation
import Logging
import Supervision
import WorkerRuntime

/// `fanfic run`: every role on this host as supervised child processes.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run every role on this host: the coordinator, the ingester (when a mailbox is set) and N workers.",
        discussion: """
            Children are restarted when they exit (after 1 s, doubling up to 30 s), and their \
            log lines are shown prefixed with their name. SIGINT or SIGTERM stops the workers \
            and the ingester (a worker finishes its task), then the coordinator, within \
            run.stop_timeout seconds; what is still running then is killed (its task is \
            redelivered).
            """
    )

    @OptionGroup var options: CommonOptions

    @Option(help: "Number of workers (default: run.workers from the config).")
    var workers: Int?

    @Option(
        help: """
            Run the role executables (coordinator, ingester, worker, dashboard) found in this folder. By \
            default every child is this `fanfic` binary started under its role's name, so all \
            of them share one copy of its code in memory.
            """)
    var binDir: String?

    func validate() throws {
        if let workers, !(1...64).contains(workers) { throw ValidationError("--workers must be from 1 to 64") }
    }

    func run() async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let logger = Logger(label: "fanfic.run")
        let children = try Self.children(
            configuration: configuration, workers: workers ?? configuration.run.workers, options: options,
            executables: binDir.map { .roleExecutables(in: $0) } ?? .default)
        logger.notice(
            "starting",
            metadata: [
                "children": "\(children.map(\.name).joined(separator: ", "))",
                "broker": "\(Redaction.url(configuration.broker.url))",
            ])
        if configuration.email.server.isEmpty {
            logger.info("no email.server configured: no ingester (submit stories with `fanfic submit`)")
        }
        let supervisor = Supervisor(
            settings: .init(children: children, stopTimeout: .seconds(configuration.run.stopTimeout)),
            printer: LinePrinter(names: children.map(\.name)), logger: logger)
        try await RoleRunner.runUntilStopped(supervisor, logger: logger)
    }

    /// Where the children's code comes from.
    enum Executables: Equatable {
        /// This multi-call binary, started as each role: one copy of the code pages for all.
        case multiCall(path: String)
        /// The separate `coordinator`, `ingester` and `worker` executables in a folder.
        case roleExecutables(in: String)

        /// `fanfic` itself; the role executables beside any other binary that runs this command
        /// (`fanfic-core` holds only the coordinator).
        static var `default`: Executables {
            let path =
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0]
            let url = URL(fileURLWithPath: path)
            return url.lastPathComponent == "fanfic"
                ? .multiCall(path: url.path) : .roleExecutables(in: url.deletingLastPathComponent().path)
        }

        /// The executable and `argv[0]` that start `role`.
        func start(_ role: String) throws -> (executable: String, invokedAs: String?) {
            switch self {
            case .multiCall(let path):
                return (path, role)
            case .roleExecutables(let directory):
                let path = URL(fileURLWithPath: directory).appendingPathComponent(role).path
                guard FileManager.default.isExecutableFile(atPath: path) else {
                    throw ValidationError(
                        "\(path) is missing: build with `swift build -c release`, or pass --bin-dir DIR where \(role) is"
                    )
                }
                return (path, nil)
            }
        }
    }

    /// The coordinator, the ingester when a mailbox is configured, the dashboard when it has an
    /// address to listen on, and the workers; each gets the same configuration file and log level.
    static func children(
        configuration: FanficConfiguration, workers: Int, options: CommonOptions, executables: Executables
    ) throws -> [ChildSpec] {
        var common = ["--log-level", options.logLevel]
        if let config = options.config {
            common += ["--config", URL(fileURLWithPath: config).standardizedFileURL.path]
        }
        func child(_ name: String, role: String, stopRank: Int, arguments: [String]) throws -> ChildSpec {
            let start = try executables.start(role)
            return ChildSpec(
                name: name, stopRank: stopRank, executable: start.executable, invokedAs: start.invokedAs,
                arguments: arguments)
        }
        var children = [try child("coordinator", role: "coordinator", stopRank: 1, arguments: common)]
        if !configuration.email.server.isEmpty {
            children.append(try child("ingester", role: "ingester", stopRank: 0, arguments: common))
        }
        if !configuration.dashboard.listen.isEmpty {
            // Stops last: it records the events of the others' shutdown.
            children.append(try child("dashboard", role: "dashboard", stopRank: 2, arguments: common))
        }
        for index in 1...workers {
            let configured = configuration.worker.id
            let id =
                configured.isEmpty
                ? WorkerIdentity.resolve(configured: "", index: index)
                : (workers == 1 ? configured : "\(configured)-\(index)")
            children.append(
                try child(
                    "worker \(id)", role: "worker", stopRank: 0,
                    arguments: common + ["--id", id, "--index", "\(index)"]))
        }
        return children
    }
}
