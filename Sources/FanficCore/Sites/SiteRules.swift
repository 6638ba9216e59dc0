import Foundation

/// Which URLs are stories FanFicFare can fetch, their site key (the coordinator's lock) and
/// their canonical URL, so that two spellings of one story become one task.
///
/// FanFicFare is the authority: `scripts/generate-site-rules.py` turns each of its adapters into
/// data (accepted domains, the story URL pattern, canonical URL templates inferred from its own
/// `getNormalStoryURL` over every example URL and the spellings people paste), committed as
/// `SiteRulesData.swift`. This type replays FanFicFare's URL handling over that data: the same
/// protocol and `#` fix-ups, the same `www.` fallbacks, the same choice between adapters sharing a
/// domain, then the template for the groups that matched. SiteRulesAgreementTests measures how
/// often the answer equals FanFicFare's, and fails when the committed data no longer matches the
/// installed FanFicFare.
public struct SiteRules: Sendable {
    /// One FanFicFare adapter.
    public struct Rule: Sendable, Decodable {
        /// The site key: FanFicFare's config section (`www.fanfiction.net`, `archiveofourown.org`).
        public let site: String
        public let domains: [String]
        let fragment: String?
        let pattern: String
        /// Whether FanFicFare drops `&` parameters for this adapter (most do; wattpad does not).
        let stripsParameters: Bool
        /// Canonical URL templates keyed by the sorted names of the named groups that matched.
        let templates: [String: String]
        /// Templates for one exact set of matched groups (named and numbered); empty: FanFicFare
        /// asks the site for the canonical URL, so the URL passes through as given.
        let overrides: [String: String]
        public let examples: [String]

        enum CodingKeys: String, CodingKey {
            case site, domains, fragment, pattern, templates, overrides, examples
            case stripsParameters = "strips_parameters"
        }
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
    /// Each rule's pattern as ICU takes it; nil for one that does not compile or has more groups
    /// than ``MatchedGroups`` holds.
    let compiled: [NSRegularExpression?]
    private let groupNames: [[String]]
    /// The same names as ICU knows them, and each rule's templates and overrides parsed: both
    /// are needed for every URL resolved.
    private let icuGroupNameLists: [[String]]
    /// Each rule's templates by the named groups that matched, and its overrides by the named
    /// and numbered groups that matched, as bit sets (see ``MatchedGroups``): the lookup runs for
    /// every task the coordinator routes, and sets of strings sorted and joined cost more than
    /// the regular expression.
    private let templatesByGroups: [[UInt64: Template]]
    private let overridesByGroups: [[MatchedGroups: Template]]

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
        groupNames = rules.map { Self.groupNames(in: $0.pattern) }
        icuGroupNameLists = groupNames.map { $0.map(Self.icuName) }
        let names = groupNames
        let rules = file.sites
        templatesByGroups = rules.indices.map { index in
            Self.byGroups(rules[index].templates, names: names[index]).reduce(into: [:]) { table, entry in
                if entry.groups.numbered == 0 { table[entry.groups.named] = entry.template }
            }
        }
        overridesByGroups = rules.indices.map { index in
            Self.byGroups(rules[index].overrides, names: names[index]).reduce(into: [:]) { table, entry in
                table[entry.groups] = entry.template
            }
        }
        compiled = rules.indices.map { index in
            // Groups past the bit sets' 63 are not expected of any adapter; SiteRulesTests
            // checks the bundled ones, and a rule past it matches nothing rather than wrongly.
            guard let regex = try? NSRegularExpression(pattern: Self.icuGroupNames(rules[index].pattern)),
                regex.numberOfCaptureGroups <= MatchedGroups.limit, names[index].count <= MatchedGroups.limit
            else { return nil }
            return regex
        }
    }

    /// The groups that matched, as bit sets: bit `i` of `named` for the rule's `i`th named group,
    /// bit `n` of `numbered` for group number `n` (a named group is numbered too).
    struct MatchedGroups: Hashable {
        var named: UInt64 = 0
        var numbered: UInt64 = 0
        static let limit = 63
    }

    /// A rule's templates keyed as the generator writes them (the sorted names and numbers of
    /// the groups that matched, joined by commas), keyed by bit sets instead; a key naming a
    /// group the pattern does not have could never be looked up, and is left out.
    private static func byGroups(
        _ templates: [String: String], names: [String]
    ) -> [(groups: MatchedGroups, template: Template)] {
        templates.compactMap { key, template in
            var groups = MatchedGroups()
            for item in key.split(separator: ",") {
                if let number = Int(item), String(number) == item {
                    guard number >= 1, number <= MatchedGroups.limit else { return nil }
                    groups.numbered |= 1 << UInt64(number)
                } else {
                    guard let index = names.firstIndex(of: String(item)), index < MatchedGroups.limit else {
                        return nil
                    }
                    groups.named |= 1 << UInt64(index)
                }
            }
            return (groups, Template(template))
        }
    }

    /// The story a URL names, or why it is not one.
    public func resolve(_ url: String) -> Result<Story, Refusal> {
        guard var fixed = Self.fixUp(url) else { return .failure(.malformed) }
        // A host without a dot ("--help", "bad") is no site anyone serves stories from.
        guard let host = URLComponents(string: fixed)?.host, host.utf8.contains(UInt8(ascii: ".")) else {
            return .failure(.malformed)
        }
        var domain = host.lowercased()
        if domain != host { fixed = fixed.replacingOccurrences(of: host, with: domain) }

        var candidates = byDomain[domain] ?? []
        if candidates.isEmpty && domain.hasPrefix("www.") {
            domain = String(domain.dropFirst(4))
            candidates = byDomain[domain] ?? []
            fixed = Self.replace(Self.wwwScheme, in: fixed, with: "http$1://")
        }
        if candidates.isEmpty {
            candidates = byDomain["www." + domain] ?? []
            fixed = Self.replace(Self.scheme, in: fixed, with: "http$1://www.")
        }
        guard !candidates.isEmpty else { return .failure(.unsupportedSite(host: host.lowercased())) }
        let index =
            candidates.count == 1
            ? candidates[0] : candidates.first { fixed.contains(rules[$0].fragment ?? rules[$0].site) }
        guard let index else { return .failure(.unsupportedSite(host: host.lowercased())) }
        let rule = rules[index]
        if rule.stripsParameters, fixed.utf8.contains(UInt8(ascii: "&")) {
            fixed = Self.replace(Self.secondParameterOn, in: fixed, with: "")
        }

        guard let regex = compiled[index],
            let match = regex.firstMatch(in: fixed, options: .anchored, range: NSRange(fixed.startIndex..., in: fixed))
        else {
            return .failure(.notAStoryURL(site: rule.site, example: rule.examples.first))
        }
        var features = Features(
            url: fixed, match: match, groupNames: groupNames[index], icuGroupNames: icuGroupNameLists[index])
        var matched = features.matchedGroups()
        if let override = overridesByGroups[index][matched] {
            let url = override.isEmpty ? fixed : features.fill(override)
            return .success(Story(site: rule.site, canonicalURL: url))
        }
        matched.numbered = 0
        guard let template = templatesByGroups[index][matched.named] else {
            // The pattern matched, but not the parts that name a story (AO3's optional groups
            // match any page of the site): FanFicFare refuses these.
            if !rule.templates.isEmpty { return .failure(.notAStoryURL(site: rule.site, example: rule.examples.first)) }
            return .success(Story(site: rule.site, canonicalURL: fixed))
        }
        return .success(Story(site: rule.site, canonicalURL: features.fill(template)))
    }

    /// A page of a site FanFicFare knows that is not a story: a series, author or collection
    /// page, which `fanficfare --list` may turn into the stories it links to.
    public struct ListPage: Sendable, Hashable {
        public let site: String
        /// The page's URL, fixed up as story URLs are (scheme, fragment, lower-case host).
        public let url: String
    }

    /// The list page a URL names: one of a known site that its story pattern refuses. Whether it
    /// lists anything only FanFicFare can tell, by reading it.
    public func listPage(_ url: String) -> ListPage? {
        guard case .failure(.notAStoryURL(let site, _)) = resolve(url), var fixed = Self.fixUp(url),
            URLParts(fixed) != nil, let host = URLComponents(string: fixed)?.host
        else { return nil }
        let lowered = host.lowercased()
        if lowered != host { fixed = fixed.replacingOccurrences(of: host, with: lowered) }
        return ListPage(site: site, url: fixed)
    }

    /// The site of a story URL or of a list page; nil for any other URL.
    public func site(ofStoryOrList url: String) -> String? {
        if case .success(let story) = resolve(url) { return story.site }
        return listPage(url)?.site
    }

    // MARK: Features of a URL (the generator computes the same ones)

    /// What a template may name: the pattern's groups by name and number, `@scheme`, `@host`,
    /// `@path`, `@query`, `@rest` (path and query), `@tail` (what follows the match), the path's
    /// segments `@0`, `@1`, ... and `@last`, and query parameters `?name` (the first that has a
    /// value). Empty values are absent. Each is worked out only when a template names it: this
    /// runs for every task the coordinator routes, and a template names two or three.
    struct Features {
        let url: String
        let match: NSTextCheckingResult
        let groupNames: [String]
        let icuGroupNames: [String]
        /// The URL's parts, split the first time a template names one.
        private var parts: URLParts??

        init(url: String, match: NSTextCheckingResult, groupNames: [String], icuGroupNames: [String]) {
            self.url = url
            self.match = match
            self.groupNames = groupNames
            self.icuGroupNames = icuGroupNames
        }

        private func text(_ range: NSRange) -> Substring? {
            guard let range = Range(range, in: url), !range.isEmpty else { return nil }
            return url[range]
        }

        /// The groups that matched something (an empty match is no match), named and numbered.
        func matchedGroups() -> MatchedGroups {
            var groups = MatchedGroups()
            for (index, icuName) in icuGroupNames.enumerated() where text(match.range(withName: icuName)) != nil {
                groups.named |= 1 << UInt64(index)
            }
            if match.numberOfRanges > 1 {
                for number in 1..<match.numberOfRanges where text(match.range(at: number)) != nil {
                    groups.numbered |= 1 << UInt64(number)
                }
            }
            return groups
        }

        /// The template with each name replaced by its feature's value (empty when absent).
        mutating func fill(_ template: Template) -> String {
            var result = ""
            for piece in template.pieces {
                switch piece {
                case .literal(let text): result += text
                case .feature(let name): if let value = feature(name) { result += value }
                }
            }
            return result
        }

        private mutating func feature(_ name: String) -> Substring? {
            if let number = Int(name), String(number) == name {
                return number >= 1 && number < match.numberOfRanges ? text(match.range(at: number)) : nil
            }
            if name == "@tail" {
                guard let end = Range(match.range, in: url)?.upperBound else { return nil }
                return nonEmpty(url[end...])
            }
            if name.hasPrefix("@") || name.hasPrefix("?") {
                if parts == nil { parts = .some(URLParts(url)) }
                return parts!.flatMap { nonEmpty(Self.part(name, of: $0)) }
            }
            guard let index = groupNames.firstIndex(of: name) else { return nil }
            return text(match.range(withName: icuGroupNames[index]))
        }

        private func nonEmpty(_ value: Substring?) -> Substring? { value?.isEmpty == false ? value : nil }

        private static func part(_ name: String, of parts: URLParts) -> Substring? {
            switch name {
            case "@scheme": return parts.scheme
            case "@host": return parts.host
            case "@path": return parts.path
            case "@query": return parts.query
            case "@rest": return Substring(parts.path + parts.query)
            case "@last": return parts.path.split(separator: "/", omittingEmptySubsequences: true).last
            default: break
            }
            if name.hasPrefix("@"), let index = Int(name.dropFirst()), String(index) == name.dropFirst(), index >= 0 {
                let segments = parts.path.split(separator: "/", omittingEmptySubsequences: true)
                return index < segments.count ? segments[index] : nil
            }
            guard name.hasPrefix("?"), !parts.query.isEmpty else { return nil }
            // `name=value` pairs between `&`s, scanned in place (no arrays: this runs per task routed),
            // byte for byte: FanFicFare compares code points, not canonically equivalent characters.
            let wanted = name.utf8.dropFirst()
            let query = parts.query
            var start = query.utf8.index(after: query.startIndex)
            while start <= query.endIndex {
                let end = query.utf8[start...].firstIndex(of: UInt8(ascii: "&")) ?? query.endIndex
                let parameter = query.utf8[start..<end]
                if let equals = parameter.firstIndex(of: UInt8(ascii: "=")),
                    parameter[..<equals].elementsEqual(wanted), parameter.index(after: equals) < end
                {
                    return query[parameter.index(after: equals)..<end]
                }
                guard end < query.endIndex else { break }
                start = query.utf8.index(after: end)
            }
            return nil
        }
    }

    /// A canonical URL template, parsed once: `{name}` is a feature's value (empty when absent),
    /// `{{` and `}}` are literal braces.
    struct Template {
        enum Piece: Equatable {
            case literal(String)
            case feature(String)
        }

        let pieces: [Piece]
        let isEmpty: Bool

        init(_ template: String) {
            isEmpty = template.isEmpty
            var pieces: [Piece] = []
            var literal = ""
            var index = template.startIndex
            while index < template.endIndex {
                let character = template[index]
                let next = template.index(after: index)
                if character == "{", next < template.endIndex, template[next] == "{" {
                    literal.append("{")
                    index = template.index(after: next)
                } else if character == "}", next < template.endIndex, template[next] == "}" {
                    literal.append("}")
                    index = template.index(after: next)
                } else if character == "{", let close = template[next...].firstIndex(of: "}") {
                    if !literal.isEmpty { pieces.append(.literal(literal)) }
                    literal = ""
                    pieces.append(.feature(String(template[next..<close])))
                    index = template.index(after: close)
                } else {
                    literal.append(character)
                    index = next
                }
            }
            if !literal.isEmpty { pieces.append(.literal(literal)) }
            self.pieces = pieces
        }
    }

    /// What `^(https?)://([^/?#]*)([^?#]*)(\?[^#]*)?` captures, the generator's split of a URL,
    /// without a regular expression: this runs for every task the coordinator routes.
    struct URLParts {
        let scheme: Substring
        let host: Substring
        let path: Substring
        /// With its `?`; empty when there is none.
        let query: Substring

        init?(_ url: String) {
            // Over scalars, as the expression matches: a combining mark after a `/` leaves it a
            // `/`. Searched as UTF-8 bytes, which is the same: an ASCII byte is always a scalar
            // of its own, so every index found is a scalar boundary.
            let bytes = url.utf8
            let schemeLength: Int
            if bytes.starts(with: "http://".utf8) {
                schemeLength = 4
            } else if bytes.starts(with: "https://".utf8) {
                schemeLength = 5
            } else {
                return nil
            }
            let (slash, question, hash) = (UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "#"))
            let schemeEnd = bytes.index(bytes.startIndex, offsetBy: schemeLength)
            let hostStart = bytes.index(schemeEnd, offsetBy: 3)
            let hostEnd =
                bytes[hostStart...].firstIndex { $0 == slash || $0 == question || $0 == hash } ?? bytes.endIndex
            let pathEnd = bytes[hostEnd...].firstIndex { $0 == question || $0 == hash } ?? bytes.endIndex
            let queryEnd =
                bytes[pathEnd...].first == question ? bytes[pathEnd...].firstIndex(of: hash) ?? bytes.endIndex : pathEnd
            scheme = url[..<schemeEnd]
            host = url[hostStart..<hostEnd]
            path = url[hostEnd..<pathEnd]
            query = url[pathEnd..<queryEnd]
        }
    }

    // MARK: FanFicFare's fix-ups

    /// `_get_class_for`'s first steps: repair the protocol, add one if missing, drop `#...`
    /// (except XenForo's `#post-N`).
    static func fixUp(_ url: String) -> String? {
        // Trimming goes through CharacterSet, slow for something that runs for every task routed:
        // a URL that starts and ends with visible ASCII has nothing to trim.
        func visibleASCII(_ byte: UInt8?) -> Bool { byte.map { $0 > 0x20 && $0 < 0x7F } ?? false }
        var fixed =
            visibleASCII(url.utf8.first) && visibleASCII(url.utf8.last)
            ? url : url.trimmingCharacters(in: .whitespacesAndNewlines)
        // No URL holds a space or a control character; one inside would also make the fragment
        // pattern below stop at it (ICU ends a line at \u{0B}), so a second fix-up would cut more.
        guard !fixed.isEmpty, !fixed.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else { return nil }
        // The regular expressions change nothing in a well-formed URL (the usual case): skip them.
        if !Self.hasPlainScheme(fixed) { fixed = replace(mangledScheme, in: fixed, with: "http$1://") }
        if fixed.hasPrefix("//") { fixed = "http:" + url }
        if !fixed.hasPrefix("http") { fixed = "http://" + url }
        // A byte search, as FanFicFare's `in` looks for a code point: Foundation's `contains`
        // with a string goes through NSString, slow for every task routed.
        if fixed.utf8.contains(UInt8(ascii: "#")), !fixed.contains("#post-") {
            fixed = replace(fragment, in: fixed, with: "")
        }
        return fixed
    }

    /// `http://` or `https://` and then neither `:` nor `/`: what `mangledScheme` leaves as is.
    static func hasPlainScheme(_ url: String) -> Bool {
        let bytes = url.utf8
        for scheme in ["http://", "https://"] where bytes.starts(with: scheme.utf8) {
            let next = bytes.dropFirst(scheme.utf8.count).first
            return next != UInt8(ascii: ":") && next != UInt8(ascii: "/")
        }
        return false
    }

    // Compiled once: resolving runs for every task the coordinator routes, and compiling an
    // ICU pattern costs more than matching it.
    private static let mangledScheme = try! NSRegularExpression(pattern: #"(?i)^[htp]+(s?)[:/]+"#)
    private static let fragment = try! NSRegularExpression(pattern: "#.*$")
    private static let wwwScheme = try! NSRegularExpression(pattern: #"^http(s?)://www\."#)
    private static let scheme = try! NSRegularExpression(pattern: #"^http(s?)://"#)
    private static let secondParameterOn = try! NSRegularExpression(pattern: "&.*$")
    private static let groupName = try! NSRegularExpression(pattern: #"\(\?<([A-Za-z_][A-Za-z0-9_]*)>"#)

    static func replace(_ regex: NSRegularExpression, in text: String, with template: String) -> String {
        regex.stringByReplacingMatches(
            in: text, range: NSRange(text.startIndex..., in: text), withTemplate: template)
    }

    /// ICU takes only letters and digits in a group's name (FanFicFare's sofurry has `story_id`).
    static func icuName(_ name: String) -> String { name.filter { $0.isASCII && ($0.isLetter || $0.isNumber) } }

    static func icuGroupNames(_ pattern: String) -> String {
        var pattern = pattern
        for name in groupNames(in: pattern) where icuName(name) != name {
            pattern = pattern.replacingOccurrences(of: "(?<\(name)>", with: "(?<\(icuName(name))>")
                .replacingOccurrences(of: "\\k<\(name)>", with: "\\k<\(icuName(name))>")
        }
        return pattern
    }

    static func groupNames(in pattern: String) -> [String] {
        groupName.matches(in: pattern, range: NSRange(pattern.startIndex..., in: pattern)).compactMap {
            Range($0.range(at: 1), in: pattern).map { String(pattern[$0]) }
        }
    }
}
