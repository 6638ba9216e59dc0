import ArgumentParser
import Logging

/// Options every executable takes.
public struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "The configuration file (default: ./config.toml).")
    public var config: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    public var logLevel: String = "info"

    public init() {}

    public func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }
}
