import FanficBroker
import FanficCore
import Foundation

/// `fanfic status` for people: one block per part, columns aligned.
enum StatusText {
    static func render(_ report: FleetStatusReport, wait: Double) -> String {
        var lines: [String] = []
        let now = report.checkedAt
        if report.broker.reachable {
            lines.append("Broker        \(report.broker.url)  reachable")
        } else {
            lines.append("Broker        \(report.broker.url)  NOT REACHABLE")
            if let error = report.broker.error { lines.append("              \(error)") }
            return lines.joined(separator: "\n") + "\n"
        }

        lines.append("")
        if report.coordinators.isEmpty {
            lines.append(
                "Coordinators  none answered within \(format(wait)) s (is a `coordinator` or `fanfic run` running?)")
        } else {
            lines.append("Coordinators")
            var rows: [[String]] = []
            for coordinator in report.coordinators {
                var detail: [String] = []
                if let since = coordinator.activeSince { detail.append("active for \(age(since, now: now))") }
                if let phase = coordinator.phase { detail.append("phase \(phase.rawValue)") }
                if coordinator.role == .standby { detail.append("up \(age(coordinator.startedAt, now: now))") }
                rows.append(["  " + coordinator.role.rawValue, coordinator.name, detail.joined(separator: ", ")])
            }
            lines += table(rows)
            if report.active == nil { lines.append("  no ACTIVE coordinator: tasks are not being assigned") }
        }

        lines.append("")
        if report.workers.isEmpty {
            lines.append(report.active == nil ? "Workers       unknown (no active coordinator)" : "Workers       none")
        } else {
            lines.append("Workers (\(report.workers.count))")
            var rows = [["  ID", "HOST", "SITE", "CURRENT STORY", "DONE", "QUEUED", "LAST HEARTBEAT"]]
            for worker in report.workers {
                let status = worker.status
                rows.append([
                    "  " + status.id, status.host ?? "?", status.site ?? "-", status.current ?? "-",
                    status.tasksDone.map(String.init) ?? "?", worker.queued.map(String.init) ?? "?",
                    status.lastHeartbeat.map { age($0, now: now) + " ago" } ?? "never",
                ])
            }
            lines += table(rows)
        }

        lines.append("")
        if report.backlogs.isEmpty {
            lines.append("Backlogs      empty")
        } else {
            lines.append("Backlogs (tasks waiting for a worker)")
            lines += table(report.backlogs.sorted { $0.key < $1.key }.map { ["  " + $0.key, "\($0.value)"] })
        }
        lines.append(contentsOf: sweepLines(report, now: now))
        if !report.sweepBacklogs.isEmpty {
            lines.append("Sweep checks (waiting until their site has nothing else to do)")
            lines += table(report.sweepBacklogs.sorted { $0.key < $1.key }.map { ["  " + $0.key, "\($0.value)"] })
        }

        if !report.pausedSites.isEmpty {
            lines.append("")
            lines.append("Paused sites (no worker contacts them)")
            var rows = [["  SITE", "UNTIL", "PAUSES", "WHY"]]
            for pause in report.pausedSites {
                let until =
                    pause.probing
                    ? "trying again"
                    : "\(pause.until.formatted(date: .omitted, time: .shortened)) (in \(age(now, now: pause.until)))"
                rows.append(["  " + pause.site, until, String(pause.pauses), pause.reason])
            }
            lines += table(rows)
        }

        lines.append("")
        lines.append("Queues")
        var rows = [["  fanfic.ingress", count(report.ingress), "new and retried tasks, not yet routed"]]
        for tier in report.retry {
            rows.append(["  " + tier.queue, count(tier.depth), "retry after \(duration(tier.delaySeconds))"])
        }
        rows.append(["  fanfic.failed", count(report.failed), "gave up; see `fanfic failed list`"])
        lines += table(rows)
        return lines.joined(separator: "\n") + "\n"
    }

    /// The sweep line: off, none yet, or the current sweep's progress and when the next starts.
    static func sweepLines(_ report: FleetStatusReport, now: Date) -> [String] {
        guard let sweep = report.sweep else {
            return report.sweepInterval == 0
                ? [] : ["", "Sweeps        every \(duration(report.sweepInterval)); none planned yet"]
        }
        let time = { (date: Date) in date.formatted(date: .abbreviated, time: .shortened) }
        var lines = [""]
        if sweep.endsAt <= now {
            lines.append(
                "Sweeps        the last (\(sweep.checks) checks) ended \(age(sweep.endsAt, now: now)) ago; the next starts within a minute"
            )
            return lines
        }
        let released = sweep.released(at: now)
        lines.append(
            "Sweeps        \(released) of \(sweep.checks) checks released"
                + (sweep.releasing ? " (being put into the broker)" : "")
                + "; started \(time(sweep.startsAt)), next sweep \(time(sweep.endsAt)) (in \(age(now, now: sweep.endsAt)))"
        )
        var rows = [["  SITE", "RELEASED", "CHECKS"]]
        for site in sweep.sites {
            rows.append(["  " + site.site, String(site.released(at: now)), String(site.checks)])
        }
        if sweep.sites.count > 1 { lines += table(rows) }
        return lines
    }

    private static func count(_ value: Int?) -> String { value.map(String.init) ?? "absent" }

    private static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }

    static func duration(_ seconds: Int) -> String {
        if seconds < 120 { return "\(seconds)s" }
        if seconds < 7200 { return "\(seconds / 60)m" }
        return "\(seconds / 3600)h"
    }

    static func age(_ date: Date, now: Date) -> String {
        duration(max(0, Int(now.timeIntervalSince(date).rounded())))
    }

    /// Left-aligned columns, two spaces apart.
    static func table(_ rows: [[String]]) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        let widths = (0..<columns).map { column in
            rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0
        }
        // Cells hold what coordinators and workers reported: printed inert.
        let rows = rows.map { $0.map(InertText.escape) }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
    }
}
