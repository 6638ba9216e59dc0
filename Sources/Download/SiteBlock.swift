import Foundation

/// The site, not the story, refused: it throttles us, shows a challenge, is down, or cannot be
/// reached. Every story of that site would meet the same answer, so the fleet pauses the site
/// instead of walking each task up the retry ladder.
public struct SiteBlock: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, Codable {
        /// 429 Too Many Requests.
        case throttled
        /// 403 with a Cloudflare (or similar) challenge page.
        case challenged
        /// 502, 503, 504 and Cloudflare's 520-527: the site or its front is down.
        case unavailable
        /// No connection at all: refused, timed out, name not resolved.
        case unreachable
    }

    public var kind: Kind
    /// The HTTP status the site answered, when it answered.
    public var status: Int?
    /// The delay the site asked for (`Retry-After`), when FanFicFare's output shows one.
    public var retryAfterSeconds: Int?
    /// The line of FanFicFare's output that says so.
    public var line: String

    public init(kind: Kind, status: Int? = nil, retryAfterSeconds: Int? = nil, line: String) {
        self.kind = kind
        self.status = status
        self.retryAfterSeconds = retryAfterSeconds
        self.line = line
    }

    /// One line for reasons, events and notifications.
    public var summary: String {
        let what =
            switch kind {
            case .throttled: "the site is throttling us"
            case .challenged: "the site answers with a challenge page"
            case .unavailable: "the site is unavailable"
            case .unreachable: "the site cannot be reached"
            }
        var text = what
        if let status { text += " (HTTP \(status))" }
        if let retryAfterSeconds { text += ", asked to wait \(retryAfterSeconds) s" }
        return text
    }

    public var description: String { "\(summary): \(line)" }

    /// Statuses that say the site (or its front) refuses everyone right now.
    static func kind(ofStatus status: Int) -> Kind? {
        switch status {
        case 429: .throttled
        case 403: .challenged
        case 502, 503, 504, 520...527: .unavailable
        default: nil
        }
    }

    /// Reads a block from FanFicFare's output, or nil when the output says something else.
    ///
    /// FanFicFare 4.62 reports an HTTP error as `HTTP Error in FFF 'REASON'(STATUS)` (after its
    /// own retries of 429, 5xx and 525, which honour `Retry-After`), and a failed connection as
    /// a requests or urllib3 exception naming the cause. Its output shows neither the response's
    /// headers nor its body, so a 403 cannot be told from a Cloudflare challenge: every 403
    /// counts as one (on AO3 and fanfiction.net it is), and a task that keeps meeting one is
    /// bounded by `OutcomeSettler.maxDeferrals`.
    static func find(in output: String) -> SiteBlock? {
        let lines = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let retryAfter = retryAfterSeconds(in: output)
        for line in lines.reversed() {
            guard let status = httpStatus(in: line), let kind = kind(ofStatus: status) else { continue }
            return SiteBlock(
                kind: kind, status: status, retryAfterSeconds: kind == .throttled ? retryAfter : nil,
                line: bounded(line))
        }
        let unreachable = [
            "Connection refused", "ConnectTimeout", "ReadTimeout", "timed out", "Name or service not known",
            "Temporary failure in name resolution", "NameResolutionError", "No route to host",
            "Network is unreachable", "Failed to establish a new connection", "RemoteDisconnected",
            "Connection reset by peer",
        ]
        if let line = lines.last(where: { line in unreachable.contains { line.contains($0) } }) {
            return SiteBlock(kind: .unreachable, line: bounded(line))
        }
        return nil
    }

    private static func httpStatus(in line: String) -> Int? {
        let patterns = [
            #"HTTP Error in FFF '[^']*'\((\d{3})\)"#, #"HTTP Error (\d{3})\b"#, #"\b(\d{3}) Client Error"#,
            #"\b(\d{3}) Server Error"#,
        ]
        for pattern in patterns {
            if let value = StoryEPUB.firstMatch(pattern, in: line).flatMap({ Int($0) }) { return value }
        }
        return nil
    }

    /// `Retry-After: N` (seconds) anywhere in the output, bounded to a day.
    private static func retryAfterSeconds(in output: String) -> Int? {
        guard let value = StoryEPUB.firstMatch(#"(?i)retry-after['"]?\s*[:=]\s*['"]?(\d{1,6})"#, in: output),
            let seconds = Int(value)
        else { return nil }
        return min(seconds, 86_400)
    }

    private static func bounded(_ line: String) -> String {
        line.count > 500 ? String(line.prefix(500)) + "…" : line
    }
}
