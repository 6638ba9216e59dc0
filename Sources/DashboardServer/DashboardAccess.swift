import Foundation
import Synchronization

/// Who may use the dashboard: a browser session after the login (`dashboard.password`), or a
/// script with a read-only token (`dashboard.api_tokens`, sent as `Authorization: Bearer`).
///
/// Sessions live in memory (a restart logs everyone out), at most ``maxSessions`` at once, each
/// for ``sessionLifetime``; each has its own CSRF token, which every action must send back in
/// the `X-CSRF-Token` header.
public final class DashboardAccess: Sendable {
    public struct Session: Sendable, Hashable {
        public let id: String
        public let csrfToken: String
        public let expires: ContinuousClock.Instant
    }

    /// What a request proved.
    public enum Caller: Sendable, Hashable {
        /// A logged-in browser (or any browser when there is no password: 127.0.0.1 only).
        case session(Session)
        /// A script's read-only token.
        case token
    }

    public static let sessionLifetime: Duration = .seconds(12 * 3600)
    public static let maxSessions = 1000
    public static let sessionCookie = "fanfic_session"

    private let password: [UInt8]
    private let tokens: [[UInt8]]
    private let sessions = Mutex<[String: Session]>([:])
    /// When the latest failed logins were, at most ``maxFailedLogins``.
    private let failedLogins = Mutex<[ContinuousClock.Instant]>([])

    /// Failed logins allowed in ``failedLoginWindow``; past it, logins wait (guessing is slow).
    public static let maxFailedLogins = 10
    public static let failedLoginWindow: Duration = .seconds(60)

    public init(password: String, tokens: [String]) {
        self.password = Array(password.utf8)
        self.tokens = tokens.map { Array($0.utf8) }
    }

    /// Without a password nobody logs in: the dashboard listens on 127.0.0.1 only.
    public var needsLogin: Bool { !password.isEmpty }

    public enum LoginResult: Sendable, Hashable {
        case loggedIn(Session)
        case wrongPassword
        /// Too many failed logins lately: try again after this long.
        case tooManyFailures(retryAfter: Duration)
    }

    /// A new session when `attempt` is the password and logins are not paused by failures.
    public func logIn(password attempt: String, now: ContinuousClock.Instant = .now) -> LoginResult {
        let recent = failedLogins.withLock { failures in
            failures.removeAll { now - $0 >= Self.failedLoginWindow }
            return failures
        }
        if recent.count >= Self.maxFailedLogins, let oldest = recent.first {
            return .tooManyFailures(retryAfter: Self.failedLoginWindow - (now - oldest))
        }
        guard needsLogin, Self.same(Array(attempt.utf8), password) else {
            failedLogins.withLock { failures in
                failures.append(now)
                if failures.count > Self.maxFailedLogins { failures.removeFirst() }
            }
            return .wrongPassword
        }
        return .loggedIn(openSession(now: now))
    }

    /// A session without a password (the loopback-only dashboard): its CSRF token still guards
    /// actions against other pages the browser has open.
    public func openSession(now: ContinuousClock.Instant = .now) -> Session {
        let session = Session(
            id: Self.randomToken(), csrfToken: Self.randomToken(), expires: now + Self.sessionLifetime)
        sessions.withLock { sessions in
            if sessions.count >= Self.maxSessions {
                sessions = sessions.filter { $0.value.expires > now }
                // Still full: the oldest goes.
                if sessions.count >= Self.maxSessions,
                    let oldest = sessions.min(by: { $0.value.expires < $1.value.expires })
                {
                    sessions[oldest.key] = nil
                }
            }
            sessions[session.id] = session
        }
        return session
    }

    public func logOut(_ session: Session) {
        _ = sessions.withLock { $0.removeValue(forKey: session.id) }
    }

    /// The caller a request's cookie or bearer token proves, if any.
    public func caller(
        sessionCookie: String?, authorization: String?, now: ContinuousClock.Instant = .now
    ) -> Caller? {
        if let authorization, authorization.hasPrefix("Bearer ") {
            let offered = Array(authorization.dropFirst("Bearer ".count).utf8)
            return tokens.contains { Self.same(offered, $0) } ? .token : nil
        }
        guard let id = sessionCookie, id.utf8.count == 64 else { return nil }
        return sessions.withLock { sessions in
            guard let session = sessions[id] else { return nil }
            guard session.expires > now else {
                sessions[id] = nil
                return nil
            }
            return .session(session)
        }
    }

    /// Compared in time independent of where they differ, so the answer's timing tells nothing.
    static func same(_ offered: [UInt8], _ expected: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: offered.count ^ expected.count)
        for index in 0..<expected.count {
            difference |= expected[index] ^ (index < offered.count ? offered[index] : 0)
        }
        return difference == 0 && !expected.isEmpty
    }

    /// 256 random bits, hex.
    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in
            let value = generator.next() as UInt64
            let hex = String(value, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
    }
}
