import Foundation

/// Which URLs are stories FanFicFare can fetch, their site key (the coordinator's lock) and
/// their canonical URL, so that two spellings of one story become one task.
///
/// FanFicFare is the authority: `scripts/generate-site-rules.py` turns each of its adapters into
/// data (accepted domains, the story URL pattern, canonical URL templates inferred from its own
/// `getNormalStoryURL`), committed as `SiteRulesData.swift`. This type replays FanFicFare's URL
/// handling over that data: the same protocol and `#` fix-ups, the same `www.` fallbacks, the same
/// choice between adapters sharing a domain. SiteRulesAgreementTests measures how often the
/// answer equals FanFicFare's on every example URL and its variants, and fails when the
/// committed data no longer matches the installed FanFicFare.
public struct SiteRules: Sendable {
    /// One FanFicFare adapter.
    public struct Rule: Sendable, Decodable {
        /// The site key: FanFicFare's config section (`www.fanfiction.net`, `archiveofourown.org`).
        public let site: String
        public let domains: [String]
        let fragment: String?
        let pattern: String
        /// Canonical URL templates keyed by the sorted names of the groups that matched.
        let templates: [String: String]
        /// For adapters that only rewrite scheme and host: the canonical `scheme://host`.
        let origin: String?
        public let examples: [String]
    }

    /// A URL that is a story.
    public struct Story: Sendable, Hashable {
        public let site: String
        public let canonicalURL: String
    }

    /// Why a URL is not a story URL.
    public enum Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        case unsupportedSite(host: String)
        case notAStoryURL(site: String, example: String?)
        case malformed

        public var description: String {
            switch self {
            case .unsupportedSite(let host): "FanFicFare has no adapter for \(host)"
            case .notAStoryURL(let site, let example):
                "not a story URL for \(site)" + (example.map { " (a story URL looks like \($0))" } ?? "")
            case .malformed: "not a URL"
            }
        }
    }

    public let fanficfareVersion: String
    public let rules: [Rule]
    private let byDomain: [String: [Int]]
    private let compiled: [NSRegularExpression?]

    /// The generated data, as committed.
    public static var bundledJSON: String { generatedJSON }

    /// The rules generated from the FanFicFare version named in `SiteRulesData.swift`.
    public static let bundled: SiteRules = try! SiteRules(json: Data(generatedJSON.utf8))

    init(json: Data) throws {
        struct File: Decodable {
            let fanficfare_version: String
            let sites: [Rule]
        }
        let file = try JSONDecoder().decode(File.self, from: json)
        fanficfareVersion = file.fanficfare_version
        rules = file.sites
        var byDomain: [String: [Int]] = [:]
        for (index, rule) in rules.enumerated() {
            for domain in rule.domains { byDomain[domain, default: []].append(index) }
        }
        self.byDomain = byDomain
        compiled = rules.map { try? NSRegularExpression(pattern: $0.pattern) }
    }

    /// The story a URL names, or why it is not one.
    public func resolve(_ url: String) -> Result<Story, Refusal> {
        guard var fixed = Self.fixUp(url) else { return .failure(.malformed) }
        // A host without a dot ("--help", "bad") is no site anyone serves stories from.
        guard let host = URLComponents(string: fixed)?.host, host.contains(".") else { return .failure(.malformed) }
        var domain = host.lowercased()
        if domain != host { fixed = fixed.replacingOccurrences(of: host, with: domain) }

        var candidates = byDomain[domain] ?? []
        if candidates.isEmpty && domain.hasPrefix("www.") {
            domain = String(domain.dropFirst(4))
            candidates = byDomain[domain] ?? []
            fixed = Self.replace(#"^http(s?)://www\."#, in: fixed, with: "http$1://")
        }
        if candidates.isEmpty {
            candidates = byDomain["www." + domain] ?? []
            fixed = Self.replace(#"^http(s?)://"#, in: fixed, with: "http$1://www.")
        }
        guard !candidates.isEmpty else { return .failure(.unsupportedSite(host: host.lowercased())) }
        let index =
            candidates.count == 1
            ? candidates[0] : candidates.first { fixed.contains(rules[$0].fragment ?? rules[$0].site) }
        guard let index else { return .failure(.unsupportedSite(host: host.lowercased())) }
        let rule = rules[index]
        // FanFicFare's default: drop '&' parameters (?sid=999 stays).
        fixed = Self.replace("&.*$", in: fixed, with: "")

        guard let regex = compiled[index],
            let match = regex.firstMatch(in: fixed, options: .anchored, range: NSRange(fixed.startIndex..., in: fixed))
        else {
            return .failure(.notAStoryURL(site: rule.site, example: rule.examples.first))
        }
        var groups: [String: String] = [:]
        for name in Self.groupNames(in: rule.pattern) {
            let range = match.range(withName: name)
            if range.location != NSNotFound, let swiftRange = Range(range, in: fixed), !swiftRange.isEmpty {
                groups[name] = String(fixed[swiftRange])
            }
        }
        let key = groups.keys.sorted().joined(separator: ",")
        guard let template = rule.templates[key] else {
            // The pattern matched, but not the parts that name a story (AO3's optional groups
            // match any page of the site): FanFicFare refuses these.
            if !rule.templates.isEmpty { return .failure(.notAStoryURL(site: rule.site, example: rule.examples.first)) }
            if let origin = rule.origin {
                return .success(Story(site: rule.site, canonicalURL: origin + Self.pathAndQuery(of: fixed)))
            }
            return .success(Story(site: rule.site, canonicalURL: fixed))
        }
        return .success(Story(site: rule.site, canonicalURL: Self.fill(template, with: groups)))
    }

    // MARK: FanFicFare's fix-ups

    /// `_get_class_for`'s first steps: repair the protocol, add one if missing, drop `#...`
    /// (except XenForo's `#post-N`).
    static func fixUp(_ url: String) -> String? {
        var fixed = url.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !fixed.isEmpty, !fixed.contains(" ") else { return nil }
        fixed = replace(#"(?i)^[htp]+(s?)[:/]+"#, in: fixed, with: "http$1://")
        if fixed.hasPrefix("//") { fixed = "http:" + url }
        if !fixed.hasPrefix("http") { fixed = "http://" + url }
        if !fixed.contains("#post-") { fixed = replace("#.*$", in: fixed, with: "") }
        return fixed
    }

    static func replace(_ pattern: String, in text: String, with template: String) -> String {
        let regex = try! NSRegularExpression(pattern: pattern)
        return regex.stringByReplacingMatches(
            in: text, range: NSRange(text.startIndex..., in: text), withTemplate: template)
    }

    static func pathAndQuery(of url: String) -> String {
        replace(#"^https?://[^/?#]*"#, in: url, with: "")
    }

    static func groupNames(in pattern: String) -> [String] {
        let regex = try! NSRegularExpression(pattern: #"\(\?<([A-Za-z_][A-Za-z0-9_]*)>"#)
        return regex.matches(in: pattern, range: NSRange(pattern.startIndex..., in: pattern)).compactMap {
            Range($0.range(at: 1), in: pattern).map { String(pattern[$0]) }
        }
    }

    /// `{name}` becomes the group's value; `{{` and `}}` are literal braces.
    static func fill(_ template: String, with groups: [String: String]) -> String {
        var result = ""
        var index = template.startIndex
        while index < template.endIndex {
            let character = template[index]
            let next = template.index(after: index)
            if character == "{", next < template.endIndex, template[next] == "{" {
                result.append("{")
                index = template.index(after: next)
            } else if character == "}", next < template.endIndex, template[next] == "}" {
                result.append("}")
                index = template.index(after: next)
            } else if character == "{", let close = template[next...].firstIndex(of: "}") {
                result += groups[String(template[next..<close])] ?? ""
                index = template.index(after: close)
            } else {
                result.append(character)
                index = next
            }
        }
        return result
    }
}
