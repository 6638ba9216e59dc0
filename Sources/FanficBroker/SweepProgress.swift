import AMQP
import FanficCore
import Foundation

/// What `fanfic status` shows of the sweeps: a summary the active sweep scheduler publishes to
/// `fanfic.sweep.progress` whenever it writes a sweep's record. Readers put it back (they never
/// see, nor may read, the record itself, whose loss would start a second sweep).
public struct SweepProgress: Codable, Sendable, Hashable {
    public struct Site: Codable, Sendable, Hashable {
        public let site: String
        public let checks: Int
        public let firstDue: Date
        public let lastDue: Date

        public init(site: String, checks: Int, firstDue: Date, lastDue: Date) {
            self.site = site
            self.checks = checks
            self.firstDue = firstDue
            self.lastDue = lastDue
        }

        /// Checks due by `now`: the plan spreads a site's checks evenly from its first to its last.
        public func released(at now: Date) -> Int {
            if checks == 0 || now < firstDue { return 0 }
            if now >= lastDue || checks == 1 { return checks }
            let share = now.timeIntervalSince(firstDue) / lastDue.timeIntervalSince(firstDue)
            return min(checks, 1 + Int(share * Double(checks - 1)))
        }

        enum CodingKeys: String, CodingKey {
            case site, checks
            case firstDue = "first_due"
            case lastDue = "last_due"
        }
    }

    public var version = 1
    public let sweep: String
    public let writtenAt: Date
    public let startsAt: Date
    public let endsAt: Date
    /// The checks are still being put into the broker.
    public let releasing: Bool
    public let sites: [Site]

    public init(sweep: String, writtenAt: Date, startsAt: Date, endsAt: Date, releasing: Bool, sites: [Site]) {
        self.sweep = sweep
        self.writtenAt = writtenAt
        self.startsAt = startsAt
        self.endsAt = endsAt
        self.releasing = releasing
        self.sites = sites
    }

    public var checks: Int { sites.reduce(0) { $0 + $1.checks } }

    /// Written later; at the same time (a release and its end within a millisecond), released.
    func isNewer(than other: SweepProgress) -> Bool {
        (writtenAt, releasing ? 0 : 1) > (other.writtenAt, other.releasing ? 0 : 1)
    }

    public func released(at now: Date) -> Int { sites.reduce(0) { $0 + $1.released(at: now) } }

    enum CodingKeys: String, CodingKey {
        case version, sweep, releasing, sites
        case writtenAt = "written_at"
        case startsAt = "starts_at"
        case endsAt = "ends_at"
    }

    /// The largest summary a reader takes (a site line is under 200 bytes).
    public static let maxBytes = 1 << 20

    /// Publishes this summary (the queue keeps the last few; readers take the newest).
    public func publish(on bus: any MessageBus) async throws {
        try await bus.publish(
            try Self.encoder.encode(self), exchange: FanficTopology.sweep, routingKey: "progress",
            properties: .persistentJSON(), mandatory: true, retryFor: .seconds(30))
    }

    /// The newest summary in `fanfic.sweep.progress`, every message put back as it was; nil when
    /// none (no sweep yet), or none that reads.
    public static func read(on bus: any MessageBus) async throws -> SweepProgress? {
        let count = Int(try await bus.queueState(FanficTopology.sweepProgress)?.messageCount ?? 0)
        var held: [BusMessage] = []
        var newest: SweepProgress?
        for _ in 0..<min(count, FanficTopology.sweepProgressKept) {
            guard let message = try await bus.get(queue: FanficTopology.sweepProgress) else { break }
            held.append(message)
            guard message.body.count <= maxBytes,
                let progress = try? decoder.decode(SweepProgress.self, from: message.body)
            else { continue }
            if newest.map({ progress.isNewer(than: $0) }) ?? true { newest = progress }
        }
        for message in held { try? await message.reject(requeue: true) }
        return newest
    }

    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .millisecondsSince1970
        return encoder
    }

    static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .millisecondsSince1970
        return decoder
    }
}
