import Foundation

/// How the fleet treats one site, from `[sites."<site>"]` (each key optional) over the defaults:
/// `coordinator.site_pause`, `sites.max_tasks_per_hour`, `sites.quiet_hours`, `fanficfare.options`.
public struct SitePolicy: Sendable, Hashable {
    /// Seconds between two tasks of the site.
    public var pause: Int?
    /// Tasks of the site sent to workers in any hour; 0: no limit.
    public var maxTasksPerHour: Int?
    /// `HH:MM-HH:MM` ranges (the coordinator's and workers' local time) when the site is not contacted.
    public var quietHours: [String]?
    /// FanFicFare options for this site's runs, after `fanficfare.options` (`NAME=VALUE`).
    public var fanficfareOptions: [String] = []

    public init(
        pause: Int? = nil, maxTasksPerHour: Int? = nil, quietHours: [String]? = nil, fanficfareOptions: [String] = []
    ) {
        self.pause = pause
        self.maxTasksPerHour = maxTasksPerHour
        self.quietHours = quietHours
        self.fanficfareOptions = fanficfareOptions
    }

    /// The keys of a `[sites."<site>"]` section, in order.
    static let keys = ["pause", "max_tasks_per_hour", "quiet_hours", "fanficfare_options"]
}

/// A site's policy with the defaults filled in.
public struct EffectiveSitePolicy: Sendable, Hashable {
    public var pause: Int
    public var maxTasksPerHour: Int
    public var quietHours: [QuietHours]
    /// `fanficfare.options` then the site's own.
    public var fanficfareOptions: [String]

    public init(pause: Int, maxTasksPerHour: Int, quietHours: [QuietHours], fanficfareOptions: [String]) {
        self.pause = pause
        self.maxTasksPerHour = maxTasksPerHour
        self.quietHours = quietHours
        self.fanficfareOptions = fanficfareOptions
    }

    /// Whether the site is in its quiet hours at `date` (local time of `calendar`).
    public func isQuiet(at date: Date, calendar: Calendar = .current) -> Bool {
        quietHours.contains(date, calendar: calendar)
    }
}

/// `HH:MM-HH:MM`: from the first time (included) to the second (excluded), across midnight when
/// the second is earlier.
public struct QuietHours: Sendable, Hashable, CustomStringConvertible {
    public let start: Int
    public let end: Int

    public init?(_ text: String) {
        let ends = text.split(separator: "-", omittingEmptySubsequences: false)
        guard ends.count == 2, let start = Self.minutes(ends[0]), let end = Self.minutes(ends[1]), start != end
        else { return nil }
        self.start = start
        self.end = end
    }

    private static func minutes(_ text: Substring) -> Int? {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: ":")
        guard parts.count == 2, parts[0].count <= 2, parts[1].count == 2, let hour = Int(parts[0]),
            let minute = Int(parts[1]), (0...24).contains(hour), (0...59).contains(minute), hour * 60 + minute <= 1440
        else { return nil }
        return hour * 60 + minute
    }

    public func contains(minuteOfDay minute: Int) -> Bool {
        start < end ? (start <= minute && minute < end) : (minute >= start || minute < end)
    }

    public var description: String {
        String(format: "%02d:%02d-%02d:%02d", start / 60, start % 60, end / 60, end % 60)
    }
}

extension Array where Element == QuietHours {
    /// Whether `date`, in the local time of `calendar`, falls in one of the ranges.
    public func contains(_ date: Date, calendar: Calendar = .current) -> Bool {
        guard !isEmpty else { return false }
        let parts = calendar.dateComponents([.hour, .minute], from: date)
        let minute = (parts.hour ?? 0) * 60 + (parts.minute ?? 0)
        return contains { $0.contains(minuteOfDay: minute) }
    }
}

/// Every site's quiet hours, as the coordinator and the workers read them: a site's own
/// `[sites."<site>"] quiet_hours`, else `sites.quiet_hours`.
public struct QuietSchedule: Sendable, Hashable {
    public var defaultRanges: [QuietHours]
    public var siteRanges: [String: [QuietHours]]

    public init(defaultRanges: [QuietHours] = [], siteRanges: [String: [QuietHours]] = [:]) {
        self.defaultRanges = defaultRanges
        self.siteRanges = siteRanges
    }

    public init(configuration: FanficConfiguration) {
        self.init(
            defaultRanges: configuration.sites.quietHours.compactMap(QuietHours.init),
            siteRanges: configuration.sites.overrides.compactMapValues { $0.quietHours?.compactMap(QuietHours.init) })
    }

    public func isQuiet(_ site: String, at date: Date, calendar: Calendar = .current) -> Bool {
        (siteRanges[site] ?? defaultRanges).contains(date, calendar: calendar)
    }

    /// The sites in their quiet hours at `date`: those of `sites` without ranges of their own when
    /// the default ranges hold `date`, and those whose own ranges do. `sites` is read only in the
    /// first case: the coordinator asks every tick, over every site FanFicFare knows, and most
    /// installations have no default quiet hours.
    public func quietSites(
        among sites: @autoclosure () -> some Sequence<String>, at date: Date, calendar: Calendar = .current
    ) -> Set<String> {
        guard !defaultRanges.isEmpty || !siteRanges.isEmpty else { return [] }
        let parts = calendar.dateComponents([.hour, .minute], from: date)
        let minute = (parts.hour ?? 0) * 60 + (parts.minute ?? 0)
        func holds(_ ranges: [QuietHours]) -> Bool { ranges.contains { $0.contains(minuteOfDay: minute) } }
        var quiet = Set(siteRanges.filter { holds($0.value) }.keys)
        if holds(defaultRanges) {
            for site in sites() where siteRanges[site] == nil { quiet.insert(site) }
        }
        return quiet
    }
}

extension FanficConfiguration {
    /// The policy of `site`: its `[sites."<site>"]` section over the defaults.
    public func policy(for site: String) -> EffectiveSitePolicy {
        let own = sites.overrides[site] ?? SitePolicy()
        return EffectiveSitePolicy(
            pause: own.pause ?? coordinator.sitePause,
            maxTasksPerHour: own.maxTasksPerHour ?? sites.maxTasksPerHour,
            quietHours: (own.quietHours ?? sites.quietHours).compactMap(QuietHours.init),
            fanficfareOptions: fanficfare.options + own.fanficfareOptions)
    }
}

/// Reads and checks `[sites."<site>"]` sections (the loader's part for them).
enum SitePolicySchema {
    /// The policy of one section, or the issues found (each naming `sites."<site>".<key>`).
    static func parse(site: String, table: [String: RawConfigValue], source: String) -> (
        SitePolicy, [ConfigurationIssue]
    ) {
        var policy = SitePolicy()
        var issues: [ConfigurationIssue] = []
        func issue(_ key: String, _ value: RawConfigValue?, _ expected: String) {
            issues.append(
                ConfigurationIssue(
                    key: "sites.\"\(site)\"" + (key.isEmpty ? "" : ".\(key)"),
                    value: key == "fanficfare_options" ? "***" : value?.shown ?? "…", expected: expected,
                    source: source))
        }
        let known = SiteRules.bundled.rules.map(\.site)
        if !known.contains(site) {
            issue(
                "", nil,
                "unknown site\(ConfigurationLoader.suggestion(site, among: known)); a section is named by a site's key "
                    + "as `fanfic status` shows it, e.g. [sites.\"archiveofourown.org\"]")
        }
        for key in table.keys.sorted() {
            let value = table[key]!
            switch (key, value) {
            case ("pause", .integer(let seconds)) where (0...86_400).contains(seconds):
                policy.pause = seconds
            case ("pause", _):
                issue(key, value, "must be a whole number of seconds from 0 to 86400")
            case ("max_tasks_per_hour", .integer(let count)) where (0...100_000).contains(count):
                policy.maxTasksPerHour = count
            case ("max_tasks_per_hour", _):
                issue(key, value, "must be a whole number from 0 (no limit) to 100000")
            case ("quiet_hours", _):
                if let ranges = quietHours(value) {
                    policy.quietHours = ranges
                } else {
                    issue(key, value, Rules.quietHoursExpected)
                }
            case ("fanficfare_options", .list(let items)):
                var options: [String] = []
                for item in items {
                    guard case .string(let text) = item, Rules.fanficfareOption(text) == nil else {
                        issue(key, value, Rules.fanficfareOption("") ?? "a list of NAME=VALUE")
                        break
                    }
                    options.append(text)
                }
                if options.count == items.count { policy.fanficfareOptions = options }
            case ("fanficfare_options", _):
                issue(key, value, "must be a list of NAME=VALUE strings, e.g. [\"slow_down_sleep_time=4\"]")
            default:
                issue(
                    key, value,
                    "unknown key\(ConfigurationLoader.suggestion(key, among: SitePolicy.keys)); "
                        + "[sites.\"\(site)\"] takes \(SitePolicy.keys.joined(separator: ", "))")
            }
        }
        return (policy, issues)
    }

    static func quietHours(_ value: RawConfigValue) -> [String]? {
        guard case .list(let items) = value else { return nil }
        var ranges: [String] = []
        for item in items {
            guard case .string(let text) = item, Rules.quietHours(text) == nil else { return nil }
            ranges.append(text)
        }
        return ranges
    }

    /// A section as TOML, for `fanfic config show`.
    static func render(site: String, _ policy: SitePolicy) -> [String] {
        var lines = ["[sites.\(TOMLLiteral.string(site))]"]
        if let pause = policy.pause { lines.append("pause = \(pause)") }
        if let count = policy.maxTasksPerHour { lines.append("max_tasks_per_hour = \(count)") }
        if let ranges = policy.quietHours {
            lines.append("quiet_hours = [" + ranges.map(TOMLLiteral.string).joined(separator: ", ") + "]")
        }
        if !policy.fanficfareOptions.isEmpty {
            // Options may hold a site's login: shown masked like fanficfare.options.
            lines.append(
                "fanficfare_options = [" + policy.fanficfareOptions.map { _ in "\"***\"" }.joined(separator: ", ") + "]"
            )
        }
        return lines
    }
}
