import FanficCore
import Foundation
import Testing

@Suite("Politeness per site: [sites.\"<site>\"] over the defaults")
struct SitePolicyTests {
    func load(_ toml: String) throws(ConfigurationError) -> FanficConfiguration {
        try ConfigurationLoader(environment: [:]).load(toml: toml, source: "config.toml")
    }

    func issues(_ toml: String) -> [ConfigurationIssue] {
        do {
            _ = try load(toml)
            return []
        } catch {
            return error.issues
        }
    }

    @Test("a site's own section overrides each key it sets; the rest come from the defaults")
    func overrides() throws {
        let configuration = try load(
            """
            [coordinator]
            site_pause = 2
            [fanficfare]
            options = ["is_adult=true"]
            [sites]
            max_tasks_per_hour = 100
            quiet_hours = ["02:00-04:00"]
            [sites."archiveofourown.org"]
            pause = 10
            max_tasks_per_hour = 30
            quiet_hours = ["22:30-06:00", "12:00-13:00"]
            fanficfare_options = ["slow_down_sleep_time=4"]
            """)
        let ao3 = configuration.policy(for: "archiveofourown.org")
        #expect(ao3.pause == 10 && ao3.maxTasksPerHour == 30)
        #expect(ao3.quietHours.map(\.description) == ["22:30-06:00", "12:00-13:00"])
        #expect(ao3.fanficfareOptions == ["is_adult=true", "slow_down_sleep_time=4"])
        let other = configuration.policy(for: "www.fanfiction.net")
        #expect(other.pause == 2 && other.maxTasksPerHour == 100)
        #expect(other.quietHours.map(\.description) == ["02:00-04:00"])
        #expect(other.fanficfareOptions == ["is_adult=true"])

        let shown = configuration.redactedTOML
        #expect(shown.contains("[sites.\"archiveofourown.org\"]\npause = 10\nmax_tasks_per_hour = 30"))
        #expect(shown.contains("fanficfare_options = [\"***\"]"), "options may hold a login: masked")
    }

    @Test("quiet hours: the first time included, the second excluded, across midnight when it is earlier")
    func quietHours() throws {
        let night = try #require(QuietHours("22:30-06:00"))
        #expect(night.contains(minuteOfDay: 22 * 60 + 30) && night.contains(minuteOfDay: 0))
        #expect(night.contains(minuteOfDay: 5 * 60 + 59) && !night.contains(minuteOfDay: 6 * 60))
        #expect(!night.contains(minuteOfDay: 12 * 60))
        let noon = try #require(QuietHours("12:00-13:00"))
        #expect(noon.contains(minuteOfDay: 12 * 60) && !noon.contains(minuteOfDay: 13 * 60))
        for bad in ["", "12-13", "25:00-01:00", "12:00-12:00", "12:60-13:00", "1200-1300"] {
            #expect(QuietHours(bad) == nil, "\(bad)")
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let policy = EffectiveSitePolicy(pause: 0, maxTasksPerHour: 0, quietHours: [night], fanficfareOptions: [])
        #expect(policy.isQuiet(at: Date(timeIntervalSince1970: 23 * 3600), calendar: calendar))
        #expect(!policy.isQuiet(at: Date(timeIntervalSince1970: 7 * 3600), calendar: calendar))
    }

    @Test("quiet sites: the default ranges cover the sites without their own; own ranges, even empty, win")
    func quietSites() throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let night = try #require(QuietHours("22:00-06:00"))
        let noon = try #require(QuietHours("12:00-13:00"))
        let late = Date(timeIntervalSince1970: 23 * 3600)
        let midday = Date(timeIntervalSince1970: 12 * 3600 + 30 * 60)
        let morning = Date(timeIntervalSince1970: 8 * 3600)
        let sites = ["a.com", "b.com", "c.com", "d.com"]
        let schedule = QuietSchedule(defaultRanges: [night], siteRanges: ["b.com": [noon], "c.com": []])
        for date in [late, midday, morning] {
            let expected = Set(sites.filter { schedule.isQuiet($0, at: date, calendar: calendar) })
            #expect(schedule.quietSites(among: sites, at: date, calendar: calendar) == expected)
        }
        #expect(schedule.quietSites(among: sites, at: late, calendar: calendar) == ["a.com", "d.com"])
        #expect(schedule.quietSites(among: sites, at: midday, calendar: calendar) == ["b.com"])
        // A site with its own ranges is found without being among the sites asked about.
        #expect(schedule.quietSites(among: [String](), at: midday, calendar: calendar) == ["b.com"])

        // No quiet hours anywhere: the sites are not even read.
        var read = false
        func sitesRead() -> [String] {
            read = true
            return sites
        }
        #expect(QuietSchedule().quietSites(among: sitesRead(), at: late, calendar: calendar).isEmpty)
        #expect(!read)
    }

    @Test("a bad section names the site, the key, and the fix; every problem at once")
    func validation() {
        let found = issues(
            """
            [sites]
            quiet_hours = ["nights"]
            [sites."archiveofourown.org"]
            pause = -1
            quiet_hours = ["23:00"]
            max_task_per_hour = 5
            fanficfare_options = ["password"]
            [sites."archiveofourown.og"]
            pause = 1
            """)
        let keys = Set(found.map(\.key))
        #expect(
            keys == [
                "sites.quiet_hours", "sites.\"archiveofourown.org\".pause", "sites.\"archiveofourown.org\".quiet_hours",
                "sites.\"archiveofourown.org\".max_task_per_hour", "sites.\"archiveofourown.org\".fanficfare_options",
                "sites.\"archiveofourown.og\"",
            ], "\(found)")
        #expect(found.contains { $0.expected.contains("did you mean 'max_tasks_per_hour'") })
        #expect(found.contains { $0.expected.contains("did you mean 'archiveofourown.org'") })
        #expect(found.contains { $0.expected.contains("HH:MM-HH:MM") })
        #expect(!found.contains { $0.value.contains("password") }, "option values are never shown")
    }

    @Test("the cooldown's maximum may not be shorter than the cooldown")
    func cooldownOrder() {
        let found = issues("[sites]\ncooldown = 600\ncooldown_max = 60")
        #expect(found.map(\.key) == ["sites.cooldown_max"])
    }
}
