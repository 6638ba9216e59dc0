import Foundation

/// A value as read from config.toml or the environment, before it is checked.
enum RawConfigValue: Hashable {
    case string(String)
    case integer(Int)
    case bool(Bool)
    case list([RawConfigValue])

    var shown: String {
        switch self {
        case .string(let text): "\"\(text)\""
        case .integer(let number): "\(number)"
        case .bool(let flag): "\(flag)"
        case .list(let values): "[" + values.map(\.shown).joined(separator: ", ") + "]"
        }
    }
}

/// One key of the configuration contract: its name, type, secrecy, rules and where it lands.
struct ConfigurationField {
    enum Secrecy {
        case none
        /// The whole value is secret.
        case whole
        /// A URL whose password part is secret (`amqp://user:pass@host`).
        case urlPassword
    }

    enum Kind {
        case string, integer, bool, stringList, integerList

        /// Parses an environment variable's text (lists are comma-separated).
        func parse(environment text: String) -> RawConfigValue? {
            switch self {
            case .string: return .string(text)
            case .integer: return Int(text.trimmingCharacters(in: .whitespaces)).map { .integer($0) }
            case .bool:
                switch text.trimmingCharacters(in: .whitespaces).lowercased() {
                case "true", "1", "yes", "on": return .bool(true)
                case "false", "0", "no", "off": return .bool(false)
                default: return nil
                }
            case .stringList, .integerList:
                // Commas, or lines (a secret file with one Apprise URL per line).
                let items = text.split(whereSeparator: { $0 == "," || $0.isNewline })
                    .map { $0.trimmingCharacters(in: .whitespaces) }
                    .filter { !$0.isEmpty }
                if self == .stringList { return .list(items.map { .string($0) }) }
                let numbers = items.compactMap(Int.init)
                return numbers.count == items.count ? .list(numbers.map { .integer($0) }) : nil
            }
        }

        var typeName: String {
            switch self {
            case .string: "a string"
            case .integer: "a whole number"
            case .bool: "true or false"
            case .stringList: "a list of strings"
            case .integerList: "a list of whole numbers"
            }
        }
    }

    let section: String
    let key: String
    let kind: Kind
    let secrecy: Secrecy
    /// Checks and stores a value of the right type; returns what is allowed when it is not.
    let apply: (inout FanficConfiguration, RawConfigValue) -> String?
    /// The current value as a TOML literal, secrets masked.
    let render: (FanficConfiguration) -> String

    var name: String { "\(section).\(key)" }
    var environmentName: String { "FANFIC_\(section.uppercased())_\(key.uppercased())" }
    var isSecret: Bool { secrecy != .none }

    func masked(_ value: RawConfigValue) -> String {
        switch (secrecy, value) {
        case (.none, _): value.shown
        case (.urlPassword, .string(let url)): "\"\(Redaction.url(url))\""
        default: "***"
        }
    }
}

// MARK: Field builders

extension ConfigurationField {
    typealias Path<T> = WritableKeyPath<FanficConfiguration, T>

    static func string(
        _ section: String, _ key: String, _ path: Path<String>, secrecy: Secrecy = .none,
        rule: @escaping (String) -> String? = { _ in nil }
    ) -> ConfigurationField {
        ConfigurationField(
            section: section, key: key, kind: .string, secrecy: secrecy,
            apply: { config, raw in
                guard case .string(let text) = raw else { return "must be \(Kind.string.typeName)" }
                if let problem = rule(text) { return problem }
                config[keyPath: path] = text
                return nil
            },
            render: { config in
                let text = config[keyPath: path]
                switch secrecy {
                case .none: return TOMLLiteral.string(text)
                case .whole: return text.isEmpty ? "\"\"" : "\"***\""
                case .urlPassword: return TOMLLiteral.string(Redaction.url(text))
                }
            })
    }

    static func choice<E: RawRepresentable & CaseIterable>(_ section: String, _ key: String, _ path: Path<E>)
        -> ConfigurationField where E.RawValue == String
    {
        let allowed = E.allCases.map(\.rawValue)
        return ConfigurationField(
            section: section, key: key, kind: .string, secrecy: .none,
            apply: { config, raw in
                guard case .string(let text) = raw, let value = E(rawValue: text) else {
                    return "must be one of \(allowed.joined(separator: ", "))"
                }
                config[keyPath: path] = value
                return nil
            },
            render: { TOMLLiteral.string($0[keyPath: path].rawValue) })
    }

    static func integer(_ section: String, _ key: String, _ path: Path<Int>, range: ClosedRange<Int>)
        -> ConfigurationField
    {
        ConfigurationField(
            section: section, key: key, kind: .integer, secrecy: .none,
            apply: { config, raw in
                guard case .integer(let number) = raw, range.contains(number) else {
                    return "must be a whole number from \(range.lowerBound) to \(range.upperBound)"
                }
                config[keyPath: path] = number
                return nil
            },
            render: { "\($0[keyPath: path])" })
    }

    static func bool(_ section: String, _ key: String, _ path: Path<Bool>) -> ConfigurationField {
        ConfigurationField(
            section: section, key: key, kind: .bool, secrecy: .none,
            apply: { config, raw in
                guard case .bool(let flag) = raw else { return "must be true or false" }
                config[keyPath: path] = flag
                return nil
            },
            render: { "\($0[keyPath: path])" })
    }

    static func stringList(
        _ section: String, _ key: String, _ path: Path<[String]>, secrecy: Secrecy = .none,
        rule: @escaping (String) -> String? = { _ in nil }
    ) -> ConfigurationField {
        ConfigurationField(
            section: section, key: key, kind: .stringList, secrecy: secrecy,
            apply: { config, raw in
                guard case .list(let items) = raw else { return "must be \(Kind.stringList.typeName)" }
                var texts: [String] = []
                for item in items {
                    guard case .string(let text) = item else { return "must be \(Kind.stringList.typeName)" }
                    if let problem = rule(text) { return problem }
                    texts.append(text)
                }
                config[keyPath: path] = texts
                return nil
            },
            render: { config in
                let items = config[keyPath: path]
                return "[" + items.map { secrecy == .none ? TOMLLiteral.string($0) : "\"***\"" }.joined(separator: ", ")
                    + "]"
            })
    }

    static func integerList(_ section: String, _ key: String, _ path: Path<[Int]>, range: ClosedRange<Int>)
        -> ConfigurationField
    {
        ConfigurationField(
            section: section, key: key, kind: .integerList, secrecy: .none,
            apply: { config, raw in
                let expected = "must be a list of whole numbers from \(range.lowerBound) to \(range.upperBound)"
                guard case .list(let items) = raw else { return expected }
                var numbers: [Int] = []
                for item in items {
                    guard case .integer(let number) = item, range.contains(number) else { return expected }
                    numbers.append(number)
                }
                config[keyPath: path] = numbers
                return nil
            },
            render: { "[" + $0[keyPath: path].map(String.init).joined(separator: ", ") + "]" })
    }
}

enum TOMLLiteral {
    static func string(_ text: String) -> String {
        var escaped = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\t": escaped += "\\t"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return "\"\(escaped)\""
    }
}

/// Masks secrets for logs and printed configuration.
public enum Redaction {
    /// `scheme://user:secret@host` becomes `scheme://user:***@host`, in each URL of a
    /// comma-separated list (a cluster's nodes); other text is unchanged.
    public static func url(_ text: String) -> String {
        if text.contains(",") {
            return text.split(separator: ",", omittingEmptySubsequences: false).map { url(String($0)) }
                .joined(separator: ",")
        }
        guard let schemeEnd = text.range(of: "://"),
            let at = text[schemeEnd.upperBound...].firstIndex(of: "@")
        else { return text }
        let userInfo = text[schemeEnd.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":***" + String(text[at...])
    }
}
