import AMQP
import ArgumentParser
import FanficBroker
import FanficCore
import Foundation
import Logging

/// What every executable does before its real work: logging, configuration, broker settings.
public enum Bootstrap {
    /// Exit status for an unusable configuration (sysexits' EX_CONFIG).
    public static let configurationExitCode = ExitCode(78)

    /// Sends logs to standard error, once per process.
    public static func logging(_ options: CommonOptions) {
        let level = Logger.Level(rawValue: options.logLevel) ?? .info
        LoggingBootstrap.once(level: level)
    }

    /// Loads and validates the configuration; on error prints every issue and exits 78.
    public static func configuration(_ options: CommonOptions) throws -> FanficConfiguration {
        do {
            return try ConfigurationLoader().load(
                path: options.config ?? ConfigurationLoader.defaultPath, required: options.config != nil)
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw configurationExitCode
        }
    }

    /// The broker settings for a role, named so that `rabbitmqctl list_connections` tells them apart.
    public static func broker(_ configuration: FanficConfiguration, role: String) throws -> AMQPConfiguration {
        do {
            var broker = try AMQPConfiguration(url: configuration.broker.url)
            broker.connectionName = "fanfic-\(role)@\(ProcessInfo.processInfo.hostName)"
            broker.reconnectBackoff.maximum = .seconds(configuration.coordinator.reconnectCeiling)
            return broker
        } catch {
            FileHandle.standardError.write(
                Data(
                    "invalid configuration:\n  broker.url = \(Redaction.url(configuration.broker.url)): \(error.message)\n"
                        .utf8))
            throw configurationExitCode
        }
    }
}

/// `LoggingSystem.bootstrap` may run once per process; tests and executables may both ask.
enum LoggingBootstrap {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var done = false

    static func once(level: Logger.Level) {
        lock.withLock {
            guard !done else { return }
            done = true
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}
