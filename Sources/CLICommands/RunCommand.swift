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

    @Option(help: "Where the coordinator, ingester and worker executables are (default: beside fanfic).")
    var binDir: String?

    func validate() throws {
        if let workers, !(1...64).contains(workers) { throw ValidationError("--workers must be from 1 to 64") }
    }

    func run() async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let logger = Logger(label: "fanfic.run")
        let directory = binDir ?? Self.executableDirectory
        let children = try Self.children(
            configuration: configuration, workers: workers ?? configuration.run.workers, options: options,
            directory: directory)
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

    /// The coordinator, the ingester when a mailbox is configured, and the workers; each gets the
    /// same configuration file and log level.
    static func children(
        configuration: FanficConfiguration, workers: Int, options: CommonOptions, directory: String
    ) throws -> [ChildSpec] {
        var common = ["--log-level", options.logLevel]
        if let config = options.config {
            common += ["--config", URL(fileURLWithPath: config).standardizedFileURL.path]
        }
        func executable(_ name: String) throws -> String {
            let path = URL(fileURLWithPath: directory).appendingPathComponent(name).path
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw ValidationError(
                    "\(path) is missing: build with `swift build -c release`, or pass --bin-dir DIR where \(name) is")
            }
            return path
        }
        var children = [
            ChildSpec(name: "coordinator", stopRank: 1, executable: try executable("coordinator"), arguments: common)
        ]
        if !configuration.email.server.isEmpty {
            children.append(
                ChildSpec(name: "ingester", stopRank: 0, executable: try executable("ingester"), arguments: common))
        }
        let worker = try executable("worker")
        for index in 1...workers {
            let configured = configuration.worker.id
            let id =
                configured.isEmpty
                ? WorkerIdentity.resolve(configured: "", index: index)
                : (workers == 1 ? configured : "\(configured)-\(index)")
            children.append(
                ChildSpec(
                    name: "worker \(id)", stopRank: 0, executable: worker,
                    arguments: common + ["--id", id, "--index", "\(index)"]))
        }
        return children
    }

    /// The folder of the running `fanfic` executable.
    static var executableDirectory: String {
        let path =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: path).deletingLastPathComponent().path
    }
}
