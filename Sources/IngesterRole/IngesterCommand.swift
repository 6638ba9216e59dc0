import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import Foundation
import Logging
import MailIngest
import Notifications
import ServiceLifecycle

public struct IngesterCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ingester",
        abstract: "Turns emails holding story URLs into tasks on the broker.",
        discussion: """
            Polls every folder of [email] at once and then every email.sleep_time seconds, until \
            SIGTERM or SIGINT. With --once it polls each folder one time and exits: 0 when every \
            folder was read and every message's tasks were queued, 1 otherwise.
            """
    )

    @OptionGroup var options: CommonOptions

    public init() {}

    @Flag(help: "Poll every folder once, then exit (for cron, scripts and tests).")
    var once = false

    public func run() async throws {
        if once {
            try await pollOnce()
            return
        }
        try await RoleRunner.run(role: "ingester", options: options) { bus, configuration, logger in
            guard !configuration.email.server.isEmpty else {
                logger.notice("no mailbox configured (email.server is empty); nothing to poll")
                return [IdleUntilStopped()]
            }
            let events = EventPublisher(bus: bus, logger: logger)
            // The event publisher first: it stops last, so the last poll's event still goes out.
            return [
                events,
                Ingester(
                    settings: Ingester.Settings(
                        email: configuration.email, expandLists: configuration.fanficfare.expandLists > 0), bus: bus,
                    notifier: AppriseNotifier(urls: configuration.notifications.appriseURLs, logger: logger),
                    logger: logger, emit: { events.emit($0) }),
            ]
        }
    }

    private func pollOnce() async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        guard !configuration.email.server.isEmpty else {
            FileHandle.standardError.write(Data("no mailbox configured: set email.server\n".utf8))
            throw Bootstrap.configurationExitCode
        }
        let logger = Logger(label: "fanfic.ingester")
        let connection = AMQPConnection(
            configuration: try Bootstrap.broker(configuration, role: "ingester"), logger: logger)
        do {
            try await connection.waitUntilConnected(timeout: .seconds(30))
            try await TopologySetup.declareOrAwait(
                FanficTopology.declarations(retry: configuration.retry.ladder), on: AMQPMessageBus(connection),
                logger: logger, waitAtMost: .seconds(30))
        } catch {
            // Nothing is read, so nothing is marked: the mail waits for the broker.
            logger.error("broker unreachable; no mailbox read", metadata: ["error": "\(error)"])
            await connection.close()
            throw ExitCode.failure
        }
        let ingester = Ingester(
            settings: Ingester.Settings(
                email: configuration.email, expandLists: configuration.fanficfare.expandLists > 0),
            bus: AMQPMessageBus(connection),
            notifier: AppriseNotifier(urls: configuration.notifications.appriseURLs, logger: logger), logger: logger)
        let reports = await ingester.pollOnce()
        await connection.close()
        for report in reports {
            let line =
                "\(report.folder): \(report.messages) message(s), \(report.tasksQueued) task(s) queued"
                + (report.deferred > 0 ? ", \(report.deferred) left for the next poll" : "")
                + (report.skipped > 0 ? ", \(report.skipped) too big to read (skipped)" : "")
                + (report.failed.map { ", not read: \($0)" } ?? "")
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        if reports.contains(where: { $0.failed != nil || $0.deferred > 0 }) { throw ExitCode.failure }
    }
}

/// A role with nothing to do stays up (compose restarts an exited one) until asked to stop.
struct IdleUntilStopped: Service {
    func run() async throws {
        try? await gracefulShutdown()
    }
}
