import DashboardHistory
import FanficBroker
import FanficCore
import Foundation

/// The dashboard's pages, rendered on the server: Now, History, Sites and Failed. Each page's
/// `<main>` is also served alone (`?fragment=1`), which the page's script fetches again whenever
/// the live feed says something changed: the page stays current without a reload.
public enum Page: String, CaseIterable, Sendable {
    case now = "/"
    case history = "/history"
    case sites = "/sites"
    case failed = "/failed"

    public var title: String {
        switch self {
        case .now: "Now"
        case .history: "History"
        case .sites: "Sites"
        case .failed: "Failed"
        }
    }
}

/// What a page is rendered from: the store, the fleet's status, the time, and the request.
public struct PageRenderer: Sendable {
    let store: any HistoryStore
    let now: Date
    /// History searches are cut to this (`limits.max_url_length`).
    let maxURLLength: Int

    public init(store: any HistoryStore, now: Date, maxURLLength: Int = FanficConfiguration.Limits().maxURLLength) {
        self.store = store
        self.now = now
        self.maxURLLength = maxURLLength
    }

    /// The page's HTML as the server sends it (`fragment`: its `<main>` alone), for benchmarks.
    public func render(
        _ page: Page, status: FleetStatusReport, parameters: [String: String] = [:], fragment: Bool = false
    ) throws -> String {
        fragment
            ? try content(page, status: status, parameters: parameters).description
            : try self.page(page, status: status, parameters: parameters, csrfToken: String(repeating: "0", count: 64))
                .description
    }

    /// The whole page: the layout around ``content(_:status:parameters:)``.
    func page(_ page: Page, status: FleetStatusReport, parameters: [String: String], csrfToken: String) throws -> HTML {
        let main = try content(page, status: status, parameters: parameters)
        let navigation = Page.allCases.map { item in
            HTML(
                "<a href=\"\(item.rawValue)\"\(HTML(raw: item == page ? " aria-current=\"page\"" : ""))>\(item.title)</a>"
            )
        }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta name="csrf-token" content="\(csrfToken)">
            <title>\(page.title) · AutomatedFanfic</title>
            <link rel="stylesheet" href="/assets/dashboard.css">
            <script src="/assets/dashboard.js" defer></script>
            </head><body data-page="\(page.title.lowercased())">
            <header><strong>AutomatedFanfic</strong><nav>\(navigation)</nav>
            <span id="live" title="live updates">connecting…</span>
            <button type="button" id="logout">Log out</button></header>
            \(page == .now ? addForm : "")
            <main id="content">\(main)</main>
            </body></html>
            """
    }

    /// The page's `<main>`.
    func content(_ page: Page, status: FleetStatusReport, parameters: [String: String]) throws -> HTML {
        switch page {
        case .now: return try nowPage(status)
        case .history: return try historyPage(parameters)
        case .sites: return try sitesPage(parameters)
        case .failed: return try failedPage(status)
        }
    }

    private var addForm: HTML {
        """
        <section class="add"><form id="add-form">
        <label for="add-urls">Add stories (one URL per line)</label>
        <textarea id="add-urls" name="urls" rows="3" placeholder="https://…"></textarea>
        <label><input type="checkbox" name="force"> download again from scratch</label>
        <button type="submit">Add</button></form>
        <div id="add-result" role="status"></div></section>
        """
    }

    // MARK: Now

    private func nowPage(_ status: FleetStatusReport) throws -> HTML {
        var sections: [HTML] = []
        if status.active == nil {
            let why = status.broker.error.map { " (\($0))" } ?? ""
            sections.append("<p class=\"warn\">No active coordinator answers\(why): nothing is being routed.</p>")
        }
        let waiting =
            (status.ingress ?? 0) + status.backlogs.values.reduce(0, +)
            + status.workers.compactMap(\.queued).reduce(0, +)
        let retrying = status.retry.compactMap(\.depth).reduce(0, +)
        sections.append(
            """
            <ul class="counts">
            <li><b>\(status.workers.filter { $0.status.current != nil }.count)</b> running</li>
            <li><b>\(waiting)</b> waiting</li><li><b>\(retrying)</b> retrying</li>
            <li><a href="/failed"><b>\(status.failed ?? 0)</b> failed</a></li>
            <li><b>\(status.pausedSites.count)</b> paused sites</li></ul>
            """)
        // Each running story's start, from its run's latest `task.started`.
        var rows: [HTML] = []
        for worker in status.workers.sorted(by: { $0.status.id < $1.status.id }) {
            var elapsed = ""
            if let current = worker.status.current,
                let run = try store.history(HistoryQuery(url: current, limit: 1)).first,
                let started = run.timeline.last(where: { $0.kind == .taskStarted })
            {
                elapsed = Self.duration(now.timeIntervalSince(started.at))
            }
            rows.append(
                """
                <tr><td>\(worker.status.id)</td><td>\(worker.status.host ?? "")</td>\
                <td>\(worker.status.site ?? "—")</td><td>\(Self.link(worker.status.current))</td>\
                <td>\(elapsed)</td><td>\(worker.queued.map { "\($0)" } ?? "")</td></tr>
                """)
        }
        sections.append(
            Self.table(
                "Workers", headers: ["Worker", "Host", "Site", "Story", "Elapsed", "Queued"], rows: rows,
                empty: "No worker has joined."))
        let waitingSites = Set(status.backlogs.keys).union(status.sweepBacklogs.keys).sorted()
        let backlogs = waitingSites.map {
            HTML("<tr><td>\($0)</td><td>\(status.backlogs[$0] ?? 0)</td><td>\(status.sweepBacklogs[$0] ?? 0)</td></tr>")
        }
        sections.append(
            Self.table(
                "Sites waiting", headers: ["Site", "Backlog", "Sweep checks"], rows: backlogs,
                empty: "No site has a backlog."))
        if let sweep = sweepSection(status) { sections.append(sweep) }
        let tiers = status.retry.map {
            HTML(
                "<tr><td>\($0.queue)</td><td>\(Self.duration(TimeInterval($0.delaySeconds)))</td><td>\($0.depth.map { "\($0)" } ?? "?")</td></tr>"
            )
        }
        sections.append(Self.table("Retry tiers", headers: ["Queue", "Delay", "Waiting"], rows: tiers, empty: ""))
        let waitingRetries = try store.history(HistoryQuery(outcome: .retrying, limit: 200, latestOnly: true))
        let retryRows = waitingRetries.map { run in
            let last = run.timeline.last { $0.kind == .taskRetrying }
            return HTML(
                """
                <tr><td>\(Self.link(run.url))</td><td>\(run.site ?? "")</td><td>\(last?.attempt.map { "\($0)" } ?? "")</td>\
                <td>\(last?.reason ?? "")</td><td>\(ago(run.lastAt))</td>\
                <td class="actions"><button type="button" data-action="retry-now" data-url="\(run.url)">Retry now</button>\
                <button type="button" data-action="retry-cancel" data-url="\(run.url)">Cancel</button></td></tr>
                """)
        }
        sections.append(
            Self.table(
                "Waiting retries", headers: ["Story", "Site", "Attempt", "Reason", "Since", ""], rows: retryRows,
                empty: "No task is waiting to be retried."))
        let paused = status.pausedSites.map {
            HTML(
                "<tr><td>\($0.site)</td><td>\($0.reason)</td><td>\(Timestamp.format($0.until))</td><td>\($0.pauses)</td></tr>"
            )
        }
        sections.append(
            Self.table(
                "Paused sites", headers: ["Site", "Reason", "Until", "Pauses"], rows: paused,
                empty: "No site is paused."))
        return "\(sections)"
    }

    /// The current sweep: checks released of those planned, per site, and when the next starts.
    private func sweepSection(_ status: FleetStatusReport) -> HTML? {
        guard let sweep = status.sweep else {
            guard status.sweepInterval > 0 else { return nil }
            return
                "<section><h2>Sweep</h2><p>Every \(Self.duration(TimeInterval(status.sweepInterval))); none planned yet.</p></section>"
        }
        if sweep.endsAt <= now {
            return """
                <section><h2>Sweep</h2><p>The last sweep (\(sweep.checks) checks) ended \(ago(sweep.endsAt)); \
                the next starts within a minute.</p></section>
                """
        }
        let rows = sweep.sites.map {
            HTML("<tr><td>\($0.site)</td><td>\($0.released(at: now))</td><td>\($0.checks)</td></tr>")
        }
        let summary: HTML = """
            <p><b>\(sweep.released(at: now))</b> of \(sweep.checks) checks released\(sweep.releasing ? " (being put into the broker)" : ""); \
            started \(Timestamp.format(sweep.startsAt)), the next sweep \(Timestamp.format(sweep.endsAt)).</p>
            """
        let table = Self.table(
            "Sweep checks per site", headers: ["Site", "Released", "Checks"], rows: rows, empty: "No check planned.")
        return "<section><h2>Sweep</h2>\(summary)</section>\(table)"
    }

    // MARK: History

    static let windows: [(name: String, seconds: TimeInterval?)] = [
        ("1h", 3600), ("24h", 86_400), ("7d", 7 * 86_400), ("30d", 30 * 86_400), ("all", nil),
    ]

    private func historyPage(_ parameters: [String: String]) throws -> HTML {
        var query = HistoryQuery(limit: 100)
        let search = String((parameters["q"] ?? "").prefix(maxURLLength))
        if !search.isEmpty { query.text = search }
        let site = String((parameters["site"] ?? "").prefix(256))
        if !site.isEmpty { query.site = site }
        query.outcome = parameters["outcome"].flatMap(TaskOutcome.init(rawValue:))
        let window = Self.windows.first { $0.name == parameters["window"] } ?? Self.windows[4]
        query.since = window.seconds.map { now.addingTimeInterval(-$0) }
        let runs = try store.history(query)
        let outcomes =
            [HTML(raw: "<option value=\"\">any outcome</option>")]
            + TaskOutcome.allCases.map {
                HTML("<option\(HTML(raw: query.outcome == $0 ? " selected" : ""))>\($0.rawValue)</option>")
            }
        let windows = Self.windows.map {
            HTML(
                "<option value=\"\($0.name)\"\(HTML(raw: $0.name == window.name ? " selected" : ""))>\($0.name == "all" ? "any time" : "last " + $0.name)</option>"
            )
        }
        let rows = runs.enumerated().map { index, run in
            HTML(
                """
                <tr><td>\(ago(run.lastAt))</td><td><span class="outcome \(run.outcome.rawValue)">\(run.outcome.rawValue)</span></td>\
                <td>\(run.site ?? "")</td><td><details id="run-\(index)-\(Timestamp.milliseconds(run.firstAt))">\
                <summary>\(run.title.map { HTML("<b>\($0)</b> ") } ?? "")\(run.url)</summary>\(Self.timeline(run.timeline))</details></td>\
                <td>\(run.calibreID.map { "\($0)" } ?? "")</td>\
                <td class="actions"><button type="button" data-action="redownload" data-url="\(run.url)">Redownload</button></td></tr>
                """)
        }
        return """
            <form class="filters" method="get" action="/history">
            <input type="search" name="q" value="\(search)" placeholder="part of a URL or title" aria-label="URL or title contains">
            <input type="text" name="site" value="\(site)" placeholder="site" aria-label="site">
            <select name="outcome" aria-label="outcome">\(outcomes)</select>
            <select name="window" aria-label="time">\(windows)</select>
            <button type="submit">Search</button></form>
            \(Self.table("Task runs", headers: ["Last event", "Outcome", "Site", "Story (click for its timeline)", "Book", ""], rows: rows, empty: "No task run matches."))
            \(try fleetEvents())
            """
    }

    /// Mail checks, workers joining and dying, sites pausing: what happened beside the tasks.
    private func fleetEvents() throws -> HTML {
        let events = try store.events(
            of: [.mailPolled, .workerJoined, .workerDead, .sitePaused, .siteResumed, .coordinatorActive], limit: 50)
        let rows = events.map { event in
            let what = [event.worker.map { "worker \($0)" }, event.site, event.detail, event.reason]
                .compactMap { $0 }.joined(separator: " · ")
            return HTML(
                "<tr><td>\(ago(event.at))</td><td>\(event.kind.rawValue)</td><td>\(event.source)</td><td>\(what)</td></tr>"
            )
        }
        return Self.table(
            "Mail checks, workers and sites", headers: ["When", "Event", "From", "What"], rows: rows,
            empty: "Nothing yet.")
    }

    private static func timeline(_ events: [FanficEvent]) -> HTML {
        let items = events.map { event in
            var notes: [String] = []
            if let worker = event.worker { notes.append("worker \(worker)") }
            if let destination = event.destination { notes.append("to \(destination)") }
            if let detail = event.detail { notes.append(detail) }
            if let attempt = event.attempt, attempt > 0 { notes.append("attempt \(attempt)") }
            if let id = event.calibreID { notes.append("book \(id)") }
            if let duration = event.durationMilliseconds { notes.append(Self.duration(Double(duration) / 1000)) }
            if let reason = event.reason { notes.append(reason) }
            return HTML(
                "<li><time>\(Timestamp.format(event.at))</time> <b>\(event.kind.rawValue)</b> \(notes.joined(separator: " · "))</li>"
            )
        }
        return "<ol class=\"timeline\">\(items)</ol>"
    }

    // MARK: Sites

    private func sitesPage(_ parameters: [String: String]) throws -> HTML {
        let choices = Self.windows.filter { ["24h", "7d", "30d"].contains($0.name) }
        let window = choices.first { $0.name == parameters["window"] } ?? choices[0]
        let figures = try store.siteFigures(since: now.addingTimeInterval(-(window.seconds ?? 86_400)))
        let tabs = choices.map {
            HTML(
                "<a href=\"/sites?window=\($0.name)\"\(HTML(raw: $0.name == window.name ? " aria-current=\"page\"" : ""))>\($0.name)</a>"
            )
        }
        let rows = figures.map { site in
            HTML(
                """
                <tr><td><a href="/history?site=\(Self.queryEscape(site.site))&amp;window=\(window.name)">\(site.site)</a></td>\
                <td>\(site.runs)</td><td>\(site.succeeded)</td><td>\(site.failed)</td>\
                <td>\(site.successRate.map { String(format: "%.0f%%", $0 * 100) } ?? "—")</td>\
                <td>\(site.medianMilliseconds.map { Self.duration(Double($0) / 1000) } ?? "—")</td>\
                <td>\(site.p95Milliseconds.map { Self.duration(Double($0) / 1000) } ?? "—")</td><td>\(site.retries)</td></tr>
                """)
        }
        return """
            <nav class="tabs">\(tabs)</nav>
            \(Self.table("Sites, last \(window.name)", headers: ["Site", "Runs", "Succeeded", "Failed", "Success rate", "Median", "p95", "Retries"], rows: rows, empty: "No task ran in this window."))
            """
    }

    // MARK: Failed

    private func failedPage(_ status: FleetStatusReport) throws -> HTML {
        let runs = try store.history(HistoryQuery(outcome: .failed, limit: Self.failedShown, latestOnly: true))
        let rows = runs.map { run in
            let failure = run.timeline.last { $0.kind == .taskFailed }
            return HTML(
                """
                <tr><td>\(ago(run.lastAt))</td><td>\(run.site ?? "")</td><td>\(Self.link(run.url))</td>\
                <td>\(failure?.reason ?? "")</td><td>\(failure?.attempt.map { "\($0)" } ?? "")</td>\
                <td class="actions"><button type="button" data-action="failed-requeue" data-url="\(run.url)">Requeue</button>\
                <button type="button" data-action="failed-purge" data-url="\(run.url)">Purge</button></td></tr>
                """)
        }
        return """
            <p>\(status.failed.map { "\($0) message(s) in fanfic.failed." } ?? "fanfic.failed's depth is not known.")
            \(runs.count == Self.failedShown ? "The latest \(Self.failedShown) are listed." : "")
            <button type="button" data-action="failed-requeue-all">Requeue all</button>
            <button type="button" data-action="failed-purge-all">Purge all</button></p>
            \(Self.table("Failed tasks", headers: ["Failed", "Site", "Story", "Reason", "Attempts", ""], rows: rows, empty: "No task has failed."))
            """
    }

    /// The Failed page lists at most this many (the latest); "Requeue all" takes every one.
    static let failedShown = 200

    // MARK: Pieces

    static func table(_ caption: String, headers: [String], rows: [HTML], empty: String) -> HTML {
        let head = headers.map { HTML("<th>\($0)</th>") }
        let body =
            rows.isEmpty ? [HTML("<tr><td colspan=\"\(headers.count)\" class=\"empty\">\(empty)</td></tr>")] : rows
        return
            "<section><h2>\(caption)</h2><table><thead><tr>\(head)</tr></thead><tbody>\(body)</tbody></table></section>"
    }

    static func link(_ url: String?) -> HTML {
        guard let url else { return "—" }
        guard HTML.isLinkable(url) else { return "\(url)" }
        return "<a href=\"\(url)\" rel=\"noreferrer noopener\" target=\"_blank\">\(url)</a>"
    }

    func ago(_ date: Date) -> HTML {
        "<time datetime=\"\(Timestamp.format(date))\" title=\"\(Timestamp.format(date))\">\(Self.duration(max(0, now.timeIntervalSince(date)))) ago</time>"
    }

    /// `42 s`, `3 min 05 s`, `2 h 10 min`, `3 d 4 h`.
    static func duration(_ seconds: TimeInterval) -> String {
        let total = Int(seconds.rounded())
        if total < 60 { return "\(total) s" }
        if total < 3600 { return "\(total / 60) min \(String(format: "%02d", total % 60)) s" }
        if total < 86_400 { return "\(total / 3600) h \(total % 3600 / 60) min" }
        return "\(total / 86_400) d \(total % 86_400 / 3600) h"
    }

    static func queryEscape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
    }
}
