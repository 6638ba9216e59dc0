import ExternalTools
import Foundation
import Logging

/// Tells the user what happened, through the Apprise CLI and the Apprise URLs of the config.
///
/// The URLs hold tokens and passwords, so they go to Apprise in a private config file
/// (`apprise --config FILE`), never on its command line. A notification is tried a few times
/// with backoff; one that can't be sent is logged and never fails the task.
public struct AppriseNotifier: Sendable {
    public let urls: [String]
    public var command = "apprise"
    public var attempts = 3
    public var backoff: Duration = .seconds(1)
    let logger: Logger
    let runner = ToolRunner()

    public init(urls: [String], logger: Logger) {
        self.urls = urls
        self.logger = logger
    }

    /// Sends; returns whether Apprise said it delivered.
    @discardableResult
    public func notify(title: String, body: String) async -> Bool {
        guard !urls.isEmpty else { return false }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "fanfic-apprise-\(UUID().uuidString)")
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            logger.warning("notification not sent: no scratch directory", metadata: ["error": "\(error)"])
            return false
        }
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("apprise.txt")
        FileManager.default.createFile(
            atPath: config.path, contents: Data((urls.joined(separator: "\n") + "\n").utf8),
            attributes: [.posixPermissions: 0o600])
        var delay = backoff
        for attempt in 1...max(1, attempts) {
            do {
                let result = try await runner.run(
                    command, ["--config", config.path, "--title", title, "--body", body], in: directory,
                    timeout: .seconds(60))
                if result.succeeded {
                    logger.debug("notification sent", metadata: ["title": "\(title)"])
                    return true
                }
                logger.warning(
                    "notification failed", metadata: ["attempt": "\(attempt)", "apprise": "\(result.tail)"])
            } catch {
                logger.warning("notification failed", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
            }
            if attempt < attempts {
                try? await Task.sleep(for: delay)
                delay *= 2
            }
        }
        logger.error("notification given up; the task goes on", metadata: ["title": "\(title)"])
        return false
    }
}
