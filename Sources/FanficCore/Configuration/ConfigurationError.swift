/// One thing wrong with the configuration: the key, the offending value, what is allowed, and
/// where the value came from.
public struct ConfigurationIssue: Sendable, Hashable, CustomStringConvertible {
    /// `section.key`, as written in config.toml.
    public let key: String
    /// The value as given (secrets shown as `***`).
    public let value: String
    /// What is allowed, or how to fix it.
    public let expected: String
    /// `config.toml`, an environment variable's name, or a `_FILE` path.
    public let source: String

    public init(key: String, value: String, expected: String, source: String) {
        self.key = key
        self.value = value
        self.expected = expected
        self.source = source
    }

    public var description: String {
        "\(key) = \(value) (from \(source)): \(expected)"
    }
}

/// Why a configuration could not be loaded: every issue found, not only the first.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public let issues: [ConfigurationIssue]
    /// Set when the file itself could not be read or parsed.
    public let fileProblem: String?

    public init(issues: [ConfigurationIssue], fileProblem: String? = nil) {
        self.issues = issues
        self.fileProblem = fileProblem
    }

    public var description: String {
        var lines = ["invalid configuration:"]
        if let fileProblem { lines.append("  \(fileProblem)") }
        lines += issues.map { "  \($0)" }
        return lines.joined(separator: "\n")
    }
}
