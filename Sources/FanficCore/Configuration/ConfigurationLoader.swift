import Foundation
import TOMLKit

/// Loads ``FanficConfiguration``: defaults, then config.toml, then `FANFIC_<SECTION>_<KEY>`
/// environment variables (and `FANFIC_<SECTION>_<KEY>_FILE` for secrets), then validation.
///
/// Every problem is collected and reported together, each naming the key, the value (masked
/// when secret), what is allowed and where the value came from.
public struct ConfigurationLoader: Sendable {
    public var environment: [String: String]

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    /// The path used when `--config` is not given.
    public static let defaultPath = "./config.toml"

    /// Loads from a file. A missing file is an error when `required` (the user named it);
    /// otherwise the defaults and the environment are used.
    public func load(path: String, required: Bool) throws(ConfigurationError) -> FanficConfiguration {
        guard FileManager.default.fileExists(atPath: path) else {
            if required {
                throw ConfigurationError(
                    issues: [],
                    fileProblem: "\(path): no such file (copy config.example.toml there, or pass --config PATH)")
            }
            return try load(toml: "", source: "defaults")
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(issues: [], fileProblem: "\(path): cannot be read: \(error.localizedDescription)")
        }
        return try load(toml: text, source: path)
    }

    /// Loads from TOML text; `source` names it in error messages.
    public func load(toml text: String, source: String) throws(ConfigurationError) -> FanficConfiguration {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(
                issues: [],
                fileProblem:
                    "\(source): line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)"
            )
        } catch {
            throw ConfigurationError(issues: [], fileProblem: "\(source): \(error)")
        }

        let fields = ConfigurationSchema.fields
        var issues: [ConfigurationIssue] = []
        var values: [String: (RawConfigValue, String)] = [:]  // field name -> (value, source)
        var sitePolicies: [String: SitePolicy] = [:]

        // 1. The file: known sections and keys only, so a typo is caught instead of ignored.
        for section in table.keys.sorted() {
            guard ConfigurationSchema.sections.contains(section), let sectionTable = table[section]?.table else {
                issues.append(
                    ConfigurationIssue(
                        key: section, value: "[\(section)]",
                        expected: "unknown section\(Self.suggestion(section, among: ConfigurationSchema.sections)); "
                            + "sections are \(ConfigurationSchema.sections.joined(separator: ", "))",
                        source: source))
                continue
            }
            let known = fields.filter { $0.section == section }.map(\.key)
            for key in sectionTable.keys.sorted() {
                let name = "\(section).\(key)"
                if section == "sites", let siteTable = sectionTable[key]?.table {
                    var raws: [String: RawConfigValue] = [:]
                    for siteKey in siteTable.keys {
                        // An unsupported type shows as a string, which every key refuses.
                        raws[siteKey] = Self.raw(siteTable[siteKey]!) ?? .string("…")
                    }
                    let (policy, found) = SitePolicySchema.parse(site: key, table: raws, source: source)
                    issues += found
                    sitePolicies[key] = policy
                    continue
                }
                guard known.contains(key) else {
                    issues.append(
                        ConfigurationIssue(
                            key: name, value: "…",
                            expected: "unknown key\(Self.suggestion(key, among: known)); "
                                + "[\(section)] takes \(known.joined(separator: ", "))",
                            source: source))
                    continue
                }
                guard let raw = Self.raw(sectionTable[key]!) else {
                    issues.append(
                        ConfigurationIssue(key: name, value: "…", expected: "unsupported TOML type", source: source))
                    continue
                }
                values[name] = (raw, source)
            }
        }

        // 2. The environment overrides the file; secrets may come from files (Docker secrets).
        for field in fields {
            let variable = field.environmentName
            let fileVariable = variable + "_FILE"
            if field.isSecret, let path = environment[fileVariable] {
                if environment[variable] != nil {
                    issues.append(
                        ConfigurationIssue(
                            key: field.name, value: "***",
                            expected: "set either \(variable) or \(fileVariable), not both", source: fileVariable))
                    continue
                }
                guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
                    issues.append(
                        ConfigurationIssue(
                            key: field.name, value: path, expected: "the secret file cannot be read",
                            source: fileVariable))
                    continue
                }
                let secret = contents.trimmingCharacters(in: .newlines)
                guard let raw = field.kind.parse(environment: secret) else { continue }
                values[field.name] = (raw, "\(fileVariable)=\(path)")
            } else if let text = environment[variable] {
                guard let raw = field.kind.parse(environment: text) else {
                    issues.append(
                        ConfigurationIssue(
                            key: field.name, value: field.isSecret ? "***" : "\"\(text)\"",
                            expected: "must be \(field.kind.typeName)"
                                + (field.kind == .stringList || field.kind == .integerList ? " (comma-separated)" : ""),
                            source: variable))
                    continue
                }
                values[field.name] = (raw, variable)
            }
        }

        // 3. Typed, ranged, enumerated.
        var configuration = FanficConfiguration()
        for field in fields {
            guard let (raw, origin) = values[field.name] else { continue }
            if let expected = field.apply(&configuration, raw) {
                issues.append(
                    ConfigurationIssue(key: field.name, value: field.masked(raw), expected: expected, source: origin))
            }
        }

        configuration.sites.overrides = sitePolicies

        // 4. Rules across keys.
        if configuration.sites.cooldownMax < configuration.sites.cooldown {
            issues.append(
                ConfigurationIssue(
                    key: "sites.cooldown_max", value: "\(configuration.sites.cooldownMax)",
                    expected: "must be at least sites.cooldown (\(configuration.sites.cooldown))",
                    source: values["sites.cooldown_max"]?.1 ?? values["sites.cooldown"]?.1 ?? "defaults"))
        }
        if configuration.coordinator.workerTimeout < 2 * configuration.worker.heartbeat {
            issues.append(
                ConfigurationIssue(
                    key: "coordinator.worker_timeout", value: "\(configuration.coordinator.workerTimeout)",
                    expected: "must be at least twice worker.heartbeat (\(configuration.worker.heartbeat)), "
                        + "or live workers are presumed dead",
                    source: values["coordinator.worker_timeout"]?.1 ?? values["worker.heartbeat"]?.1 ?? "defaults"))
        }
        if !configuration.email.server.isEmpty && configuration.email.folders.isEmpty {
            issues.append(
                ConfigurationIssue(
                    key: "email.folders", value: "[]",
                    expected: "must name at least one folder when email.server is set",
                    source: values["email.folders"]?.1 ?? source))
        }

        guard issues.isEmpty else { throw ConfigurationError(issues: issues) }
        return configuration
    }

    private static func raw(_ value: any TOMLValueConvertible) -> RawConfigValue? {
        switch value.type {
        case .string: return value.string.map { .string($0) }
        case .int: return value.int.map { .integer($0) }
        case .bool: return value.bool.map { .bool($0) }
        case .array:
            guard let array = value.array else { return nil }
            var items: [RawConfigValue] = []
            for element in array {
                guard let item = raw(element) else { return nil }
                items.append(item)
            }
            return .list(items)
        default: return nil
        }
    }

    /// "; did you mean 'server'?" when a known name is one or two edits away.
    static func suggestion(_ word: String, among candidates: [String]) -> String {
        let best = candidates.map { ($0, editDistance(word, $0)) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= 2 else { return "" }
        return " (did you mean '\(best.0)'?)"
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

extension FanficConfiguration {
    /// The configuration as TOML, secrets masked: what `fanfic config show` prints.
    public var redactedTOML: String {
        var lines: [String] = []
        let fields = ConfigurationSchema.fields
        for section in ConfigurationSchema.sections {
            if !lines.isEmpty { lines.append("") }
            lines.append("[\(section)]")
            for field in fields where field.section == section {
                lines.append("\(field.key) = \(field.render(self))")
            }
            if section == "sites" {
                for site in sites.overrides.keys.sorted() {
                    lines.append("")
                    lines += SitePolicySchema.render(site: site, sites.overrides[site]!)
                }
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Every key as `section.key`, and its environment variable: for docs and tests.
    public static var keys: [(key: String, environment: String, secret: Bool)] {
        ConfigurationSchema.fields.map { ($0.name, $0.environmentName, $0.isSecret) }
    }
}
