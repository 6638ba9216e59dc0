import CalibreLibrary
import FanficCore
import Foundation

/// What one update sweep checks, and when: the books a calibre search chose, less those that
/// cannot be checked (not a story of a site FanFicFare knows, updated too recently, a second
/// book of one story), spread evenly over the sweep's interval site by site, never more checks of
/// a site in an hour than its budget. A site with more books than its budget allows in one
/// interval has the rest deferred to the next sweep, the least recently updated going first.
///
/// A value computed from its inputs alone (no clock, no library, no broker): what
/// `fanfic sweep --dry-run` prints is exactly what a sweep starting then would release.
public struct SweepPlan: Sendable, Hashable, Encodable {
    /// One check: an update task for `url` due at `dueAt`.
    public struct Check: Sendable, Hashable, Encodable {
        public let url: String
        public let site: String
        public let book: Int
        public let dueAt: Date
        public let lastModified: Date

        enum CodingKeys: String, CodingKey {
            case url, site, book
            case dueAt = "due_at"
            case lastModified = "last_modified"
        }
    }

    /// One site's share.
    public struct Site: Sendable, Hashable, Encodable {
        public let site: String
        /// Books of the site the sweep could check.
        public let books: Int
        /// Checked in this sweep.
        public let planned: Int
        /// Left for the next sweep: over the budget.
        public let deferred: Int
        /// Seconds between two of its checks.
        public let spacingSeconds: Double

        enum CodingKeys: String, CodingKey {
            case site, books, planned, deferred
            case spacingSeconds = "spacing_s"
        }
    }

    /// A book the sweep leaves alone, and why.
    public struct Skipped: Sendable, Hashable, Encodable {
        public let book: Int
        public let url: String?
        public let reason: String
    }

    public let startsAt: Date
    public let endsAt: Date
    /// Every check, in due order.
    public let checks: [Check]
    public let sites: [Site]
    public let skipped: [Skipped]

    enum CodingKeys: String, CodingKey {
        case checks, sites, skipped
        case startsAt = "starts_at"
        case endsAt = "ends_at"
    }
}

public enum SweepPlanner {
    /// The plan of a sweep starting at `start`, judged at `now` (the skip window counts from it).
    public static func plan(
        books: [LibraryBook], settings: FanficConfiguration.Sweep, rules: SiteRules = .bundled, now: Date,
        start: Date
    ) -> SweepPlan {
        let interval = TimeInterval(max(settings.interval, 1))
        var skipped: [SweepPlan.Skipped] = []
        var bySite: [String: [(book: LibraryBook, url: String)]] = [:]
        var seen: [String: Int] = [:]
        let recent = TimeInterval(settings.skipRecentHours) * 3600
        for book in books.sorted(by: { $0.id < $1.id }) {
            guard let url = book.url else {
                skipped.append(.init(book: book.id, url: nil, reason: "no url identifier: not a story FanFicFare made"))
                continue
            }
            guard case .success(let story) = rules.resolve(url) else {
                skipped.append(.init(book: book.id, url: url, reason: "not a story URL of a site FanFicFare knows"))
                continue
            }
            if let first = seen[story.canonicalURL] {
                skipped.append(.init(book: book.id, url: url, reason: "the same story as book \(first)"))
                continue
            }
            seen[story.canonicalURL] = book.id
            let age = now.timeIntervalSince(book.lastModified)
            if age < recent {
                let hours = max(0, Int(age / 3600))
                skipped.append(
                    .init(
                        book: book.id, url: url,
                        reason: "updated \(hours) h ago (sweep.skip_recent_hours = \(settings.skipRecentHours))"))
                continue
            }
            bySite[story.site, default: []].append((book, story.canonicalURL))
        }
        // The budget allows this many checks of one site in one interval: one per slot, the
        // budget's spacing and 1 % more, so that a check the broker delivers a little late and the
        // next one on time are never budget + 1 in one hour (sweep-bench measured 13 of 12 in a
        // sliding hour with the exact spacing and a few ms of delivery jitter).
        let slot = 3600 / Double(settings.perSiteBudget) * 1.01
        let capacity = max(1, Int((interval / slot).rounded(.down)))
        let siteKeys = bySite.keys.sorted()
        var checks: [SweepPlan.Check] = []
        var sites: [SweepPlan.Site] = []
        for (index, site) in siteKeys.enumerated() {
            // The least recently updated first: the longest without a check.
            let candidates = bySite[site]!.sorted {
                ($0.book.lastModified, $0.book.id) < ($1.book.lastModified, $1.book.id)
            }
            let planned = min(candidates.count, capacity)
            let spacing = interval / Double(planned)
            // Sites start at staggered points of their first slot, so that the sweep's first
            // moments are not one check of every site at once.
            let offset = spacing * Double(index) / Double(siteKeys.count)
            for (slot, candidate) in candidates.prefix(planned).enumerated() {
                checks.append(
                    SweepPlan.Check(
                        url: candidate.url, site: site, book: candidate.book.id,
                        dueAt: start.addingTimeInterval(offset + spacing * Double(slot)),
                        lastModified: candidate.book.lastModified))
            }
            sites.append(
                SweepPlan.Site(
                    site: site, books: candidates.count, planned: planned, deferred: candidates.count - planned,
                    spacingSeconds: spacing))
        }
        checks.sort { ($0.dueAt, $0.site, $0.book) < ($1.dueAt, $1.site, $1.book) }
        return SweepPlan(
            startsAt: start, endsAt: start.addingTimeInterval(interval), checks: checks, sites: sites, skipped: skipped)
    }
}
