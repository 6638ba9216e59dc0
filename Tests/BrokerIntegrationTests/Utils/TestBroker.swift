import AMQP
import Foundation
import Logging
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The isolated RabbitMQ node that `scripts/broker.sh` starts once per test run.
///
/// Each test gets a virtual host of its own, so the fixed names of the topology
/// (`fanfic.ingress`, ...) never collide between tests.
enum TestBroker {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static var script: String { repositoryRoot.appendingPathComponent("scripts/broker.sh").path }

    static var baseURL: String {
        ProcessInfo.processInfo.environment["FANFIC_TEST_BROKER_URL"]
            ?? "amqp://guest:guest@127.0.0.1:\(ProcessInfo.processInfo.environment["FANFIC_BROKER_PORT"] ?? "31500")"
    }

    static let logger: Logger = {
        var logger = Logger(label: "test.amqp")
        logger.logLevel =
            ProcessInfo.processInfo.environment["FANFIC_TEST_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) }
            ?? .critical
        return logger
    }()

    /// Runs `scripts/broker.sh ARGS` and returns its output; throws on a non-zero exit.
    @discardableResult
    static func script(_ arguments: String...) throws -> String {
        let result = try ChildProcess.run(["/bin/bash", script] + arguments)
        let text = result.stdout + result.stderr
        guard result.status == 0 else {
            throw TestFailure("broker.sh \(arguments.joined(separator: " ")) exited \(result.status): \(text)")
        }
        return text
    }

    /// A fresh virtual host for one test; deleted by the returned cleanup.
    static func makeVirtualHost(_ prefix: String = "test") throws -> String {
        let name = "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
        try script("ctl", "-q", "add_vhost", name)
        try script("ctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name
    }

    static func deleteVirtualHost(_ name: String) {
        _ = try? script("ctl", "-q", "delete_vhost", name)
    }

    static func configuration(virtualHost: String, heartbeat: Int = 2, name: String = "test") throws
        -> AMQPConfiguration
    {
        let encoded = virtualHost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? virtualHost
        var configuration = try AMQPConfiguration(url: "\(baseURL)/\(encoded)")
        configuration.heartbeat = heartbeat
        configuration.connectionName = name
        configuration.reconnectBackoff = .init(initial: .milliseconds(100), maximum: .seconds(1))
        configuration.commandTimeout = .seconds(60)
        return configuration
    }

    /// Runs `body` with a connected client in a fresh virtual host, then cleans up.
    static func withConnection<T>(
        heartbeat: Int = 2, name: String = "test",
        _ body: (AMQPConnection, String) async throws -> T
    ) async throws -> T {
        let vhost = try makeVirtualHost()
        defer { deleteVirtualHost(vhost) }
        let connection = AMQPConnection(
            configuration: try configuration(virtualHost: vhost, heartbeat: heartbeat, name: name), logger: logger)
        do {
            try await connection.waitUntilConnected(timeout: .seconds(30))
            let result = try await body(connection, vhost)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }
}

/// Collects message ids from a consumer in the background, acking each one.
final class CountingConsumer: Sendable {
    private let state = LockedState()
    private let task: Task<Void, Never>

    init(connection: AMQPConnection, queue: String, prefetch: UInt16 = 50) {
        let state = self.state
        task = Task {
            // A consumer ends only on close or error; re-subscribe after an error so the test
            // measures the client's recovery, not this loop's.
            while !Task.isCancelled {
                do {
                    for try await delivery in connection.consume(queue: queue, prefetch: prefetch) {
                        state.record(delivery.properties.messageID ?? "?")
                        do { try await delivery.ack() } catch { state.recordAckFailure() }
                    }
                    return
                } catch {
                    state.recordStreamError("\(error)")
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
        }
    }

    var uniqueCount: Int { state.snapshot().unique.count }
    var snapshot: LockedState.Snapshot { state.snapshot() }

    func stop() async {
        task.cancel()
        await task.value
    }

    final class LockedState: @unchecked Sendable {
        struct Snapshot {
            var unique: Set<String> = []
            var deliveries = 0
            var ackFailures = 0
            var streamErrors: [String] = []
        }

        private let lock = NSLock()
        private var value = Snapshot()

        func record(_ id: String) {
            lock.withLock {
                value.unique.insert(id)
                value.deliveries += 1
            }
        }

        func recordAckFailure() { lock.withLock { value.ackFailures += 1 } }
        func recordStreamError(_ text: String) { lock.withLock { value.streamErrors.append(text) } }
        func snapshot() -> Snapshot { lock.withLock { value } }
    }
}

/// A TCP path to the broker through `socat`, in a process group of its own, that a test can
/// freeze (a silent network cut: sockets stay open, nothing gets through) and replace.
final class NetworkPath {
    let port: Int
    private var groupID: pid_t = 0

    init(port: Int, target: Int) throws {
        self.port = port
        self.target = target
        try start()
    }

    private let target: Int

    private func start() throws {
        groupID = try ChildProcess.spawn(
            ["/usr/bin/socat", "TCP-LISTEN:\(port),bind=127.0.0.1,reuseaddr,fork", "TCP:127.0.0.1:\(target)"],
            newProcessGroup: true)
    }

    /// Stops forwarding without closing anything.
    func freeze() { kill(-groupID, SIGSTOP) }

    /// Kills the path (every forwarded connection with it) and opens a fresh one on the same port.
    func replace() throws {
        stop()
        try start()
    }

    /// Opens the path again after ``stop()``.
    func resume() throws { try start() }

    func stop() {
        kill(-groupID, SIGKILL)
        kill(-groupID, SIGCONT)
        var status: Int32 = 0
        _ = waitpid(groupID, &status, 0)
    }

    deinit { stop() }
}

extension TestBroker {
    static var port: Int {
        Int(ProcessInfo.processInfo.environment["FANFIC_BROKER_PORT"] ?? "31500") ?? 31500
    }
}
