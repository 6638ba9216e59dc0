import AMQP
import AppSupport
import ArgumentParser
import CalibreLibrary
import FanficBroker
import FanficCore
import Foundation
import Sweep

struct SweepCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Show what an update sweep would check, and when (--dry-run); or start one now (now).",
        discussion: """
            Reads the books sweep.search finds in calibre.library (through calibredb), leaves out \
            those that are not stories of a site FanFicFare knows, second books of one story and \
            books updated less than sweep.skip_recent_hours ago, and spreads the rest over \
            sweep.interval seconds, at most sweep.per_site_budget checks of a site an hour; \
            --dry-run publishes nothing. `fanfic sweep now` asks the active sweep scheduler (a \
            worker) to end the current sweep (its checks not yet due are removed) and start a new \
            one within a minute; `fanfic status` shows its progress.
            """
    )

    enum Action: String, ExpressibleByArgument, CaseIterable {
        case now
    }

    @Argument(help: "now: start a sweep at once.")
    var action: Action?

    @OptionGroup var options: CommonOptions

    @Flag(help: "Only show the plan.")
    var dryRun = false

    @Flag(help: "Print the whole plan as JSON: every check with its due time, each site, each skipped book.")
    var json = false

    func validate() throws {
        if dryRun == (action != nil) {
            throw ValidationError("say either --dry-run (show the plan) or now (start a sweep)")
        }
        if json && action != nil { throw ValidationError("--json goes with --dry-run") }
    }

    func run() async throws {
        if action == .now { return try await startNow() }
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let sweep = configuration.sweep
        let calibre = configuration.calibre
        let catalog = LibraryCatalog(
            location: CalibreLocation(calibre.library),
            credentials: calibre.username.isEmpty
                ? nil : CalibreCredentials(username: calibre.username, password: calibre.password))
        let books: [LibraryBook]
        do {
            books = try await catalog.books(matching: sweep.search)
        } catch {
            throw ValidationError(
                "cannot read the library \(calibre.library) with sweep.search '\(sweep.search)': \(error)")
        }
        let now = Date()
        var settings = sweep
        // With sweeps off, the plan is still shown, as for a daily sweep.
        if settings.interval == 0 { settings.interval = 86_400 }
        let plan = SweepPlanner.plan(books: books, settings: settings, now: now, start: now)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.dateEncodingStrategy = .custom { date, encoder in
                var container = encoder.singleValueContainer()
                try container.encode(Timestamp.format(date))
            }
            print(String(decoding: try encoder.encode(plan), as: UTF8.self))
            return
        }
        if sweep.interval == 0 { print("sweeps are off (sweep.interval = 0); a daily sweep would check:") }
        print(
            "\(books.count) book(s) match '\(sweep.search)'; \(plan.checks.count) check(s) from \(Timestamp.format(plan.startsAt)) to \(Timestamp.format(plan.endsAt))"
        )
        for site in plan.sites {
            let every = PlanText.duration(site.spacingSeconds)
            print(
                "  \(site.site): \(site.planned) of \(site.books), one every \(every)"
                    + (site.deferred > 0
                        ? ", \(site.deferred) deferred to the next sweep (per_site_budget \(sweep.perSiteBudget)/h)"
                        : ""))
        }
        for check in plan.checks.prefix(10) {
            print(
                "  \(Timestamp.format(check.dueAt))  \(check.site)  \(InertText.escape(check.url))  (book \(check.book))"
            )
        }
        if plan.checks.count > 10 { print("  ... \(plan.checks.count - 10) more (--json lists every one)") }
        if !plan.skipped.isEmpty {
            var reasons: [String: Int] = [:]
            for skipped in plan.skipped { reasons[Self.kind(of: skipped.reason), default: 0] += 1 }
            print(
                "skipped: " + reasons.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            )
        }
    }

    /// Publishes a request the active sweep scheduler takes at its next look (within a minute).
    func startNow() async throws {
        let broker = try await CLIBroker.connect(options)
        defer { Task { await broker.close() } }
        if broker.configuration.sweep.interval == 0 {
            print("note: sweep.interval is 0 in this configuration; only workers with sweeps on run them")
        }
        do {
            try await broker.bus.publish(
                Data(#"{"type":"sweep-now"}"#.utf8), exchange: FanficTopology.sweepRequests, routingKey: "",
                properties: .persistentJSON(), mandatory: true, retryFor: .seconds(10))
        } catch {
            throw ValidationError("the broker did not take the request: \(error)")
        }
        print("asked for a sweep now: the active sweep scheduler starts one within a minute (fanfic status shows it)")
    }

    /// A skip reason without its particulars, for the summary line.
    static func kind(of reason: String) -> String {
        if reason.hasPrefix("updated") { return "updated recently" }
        if reason.hasPrefix("the same story") { return "second book of a story" }
        if reason.hasPrefix("no url") { return "not a story" }
        return "not of a known site"
    }
}

enum PlanText {
    /// `45 s`, `12 min`, `2.5 h`.
    static func duration(_ seconds: Double) -> String {
        if seconds < 90 { return "\(Int(seconds.rounded())) s" }
        if seconds < 5400 { return "\(Int((seconds / 60).rounded())) min" }
        return String(format: "%.1f h", seconds / 3600)
    }
}
