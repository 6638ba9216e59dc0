import DashboardHistory
import FanficBroker
import FanficCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import DashboardServer

@Suite("Dashboard HTTP: health, login, tokens, the API and its refusals")
struct DashboardRoutesTests {
    static let token = "0123456789abcdef0123456789abcdef"
    static let password = "correct horse battery staple"

    static func application(password: String = Self.password, activeCoordinator: Bool = true) throws -> (
        some ApplicationProtocol, SQLiteHistoryStore
    ) {
        let store = try SQLiteHistoryStore.inMemory()
        try store.record([
            FanficEvent(.taskRouted, source: "c", site: "test1.com", url: "http://test1.com?sid=1"),
            FanficEvent(.taskFailed, source: "w", site: "test1.com", url: "http://test1.com?sid=1", reason: "gone"),
            FanficEvent(.taskRouted, source: "c", site: "test2.com", url: "http://test2.com?sid=2"),
        ])
        let routes = DashboardRoutes(
            store: store, access: DashboardAccess(password: password, tokens: [token]),
            logger: Logger(label: "test.dashboard")
        ) {
            var report = FleetStatusReport(brokerURL: "amqp://guest:secret@127.0.0.1:5672/%2F")
            report.broker.reachable = true
            report.active = activeCoordinator ? "coordinator@test" : nil
            report.ingress = 2
            report.backlogs = ["test3.com": 5]
            return report
        }
        return (Application(router: routes.router()), store)
    }

    static func json(_ response: TestResponse) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(buffer: response.body))
    }

    static func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

    static func form(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test("/healthz needs nothing; every other path answers 401 without a session or token")
    func refusals() async throws {
        let (app, _) = try Self.application()
        try await app.test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
            for uri in ["/api/status", "/api/history", "/api/session", "/api/widget", "/nothing-here"] {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .unauthorized, "\(uri)")
                    let body = try Self.json(response) as? [String: String]
                    #expect(body?["error"]?.contains("Bearer") == true)
                }
            }
            try await client.execute(uri: "/api/status", method: .get, headers: Self.bearer("wrong-token-wrong-token"))
            { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/api/status", method: .get, headers: Self.bearer(Self.token + "x")) {
                #expect($0.status == .unauthorized)
            }
        }
    }

    @Test("a token reads the status (the JSON of fanfic status --json) and the history; 503 without a coordinator")
    func tokenReads() async throws {
        let (app, _) = try Self.application()
        try await app.test(.router) { client in
            try await client.execute(uri: "/api/status", method: .get, headers: Self.bearer(Self.token)) { response in
                #expect(response.status == .ok)
                let body = try #require(try Self.json(response) as? [String: Any])
                #expect(body["active"] as? String == "coordinator@test")
                let broker = try #require(body["broker"] as? [String: Any])
                #expect(broker["url"] as? String == "amqp://guest:***@127.0.0.1:5672/%2F", "the password is masked")
                #expect(body["checked_at"] is String)
            }
            try await client.execute(uri: "/api/widget", method: .get, headers: Self.bearer(Self.token)) { response in
                #expect(response.status == .ok)
                let widget = try #require(try Self.json(response) as? [String: Any])
                #expect(widget["failed_24h"] as? Int == 1 && widget["succeeded_24h"] as? Int == 0)
                #expect(widget["coordinator"] as? Bool == true && widget["waiting"] as? Int == 7)
            }
            try await client.execute(uri: "/api/history?site=test1.com", method: .get, headers: Self.bearer(Self.token))
            { response in
                #expect(response.status == .ok)
                let runs = try #require(try Self.json(response) as? [[String: Any]])
                #expect(runs.count == 1)
                #expect(runs.first?["url"] as? String == "http://test1.com?sid=1")
                #expect(runs.first?["outcome"] as? String == "failed")
                #expect(
                    (runs.first?["timeline"] as? [[String: Any]])?.map { $0["type"] as? String } == [
                        "task.routed", "task.failed",
                    ])
            }
            try await client.execute(
                uri: "/api/history?outcome=queued&url=SID%3D2", method: .get, headers: Self.bearer(Self.token)
            ) { response in
                let runs = try #require(try Self.json(response) as? [[String: Any]])
                #expect(runs.map { $0["url"] as? String } == ["http://test2.com?sid=2"])
            }
        }
        let (down, _) = try Self.application(activeCoordinator: false)
        try await down.test(.router) { client in
            try await client.execute(uri: "/api/status", method: .get, headers: Self.bearer(Self.token)) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try Self.json(response) as? [String: Any]
                #expect(body?["active"] == nil && body?["broker"] != nil)
            }
        }
    }

    @Test(
        "bad history parameters are refused with what they take",
        arguments: [
            ("limit=0", "limit must be a whole number from 1 to 1000"),
            ("limit=abc", "limit must be"), ("limit=5000", "limit must be"),
            ("outcome=won", "outcome must be one of queued, running"),
            ("since=yesterday", "since must be an ISO 8601 time"),
            ("colour=blue", "unknown parameter 'colour'; known: url, q, site, outcome, since, limit"),
        ])
    func badHistoryQuery(query: String, expected: String) async throws {
        let (app, _) = try Self.application()
        try await app.test(.router) { client in
            try await client.execute(uri: "/api/history?\(query)", method: .get, headers: Self.bearer(Self.token)) {
                response in
                #expect(response.status == .badRequest)
                let message = try #require((try Self.json(response) as? [String: String])?["error"])
                #expect(message.contains(expected), "\(message)")
            }
        }
    }

    @Test("login: a wrong password is refused; the right one gives a session cookie and a CSRF token")
    func login() async throws {
        let (app, _) = try Self.application()
        try await app.test(.router) { client in
            try await client.execute(uri: "/login", method: .post, body: Self.form("password=nope")) {
                #expect($0.status == .unauthorized)
                #expect($0.headers[.setCookie] == nil)
            }
            try await client.execute(uri: "/login", method: .post, body: Self.form("user=me")) {
                #expect($0.status == .badRequest)
            }
            try await client.execute(
                uri: "/login", method: .post, body: ByteBuffer(string: String(repeating: "a", count: 10_000))
            ) { #expect($0.status == .contentTooLarge) }

            let encoded = "password=" + Self.password.replacingOccurrences(of: " ", with: "+")
            let (cookie, csrf) = try await client.execute(uri: "/login", method: .post, body: Self.form(encoded)) {
                response in
                #expect(response.status == .ok)
                let setCookie = try #require(response.headers[.setCookie])
                #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict"))
                let value = try #require(setCookie.split(separator: ";").first).split(separator: "=")[1]
                let csrf = try #require((try Self.json(response) as? [String: String])?["csrf_token"])
                return (String(value), csrf)
            }
            let session: HTTPFields = [.cookie: "\(DashboardAccess.sessionCookie)=\(cookie)"]
            try await client.execute(uri: "/api/history", method: .get, headers: session) { #expect($0.status == .ok) }
            try await client.execute(uri: "/api/session", method: .get, headers: session) { response in
                let body = try Self.json(response) as? [String: String]
                #expect(body?["csrf_token"] == csrf)
            }
            // A token is not a session: /api/session is for browsers.
            try await client.execute(uri: "/api/session", method: .get, headers: Self.bearer(Self.token)) {
                #expect($0.status == .unauthorized)
            }
            // Logging out needs the CSRF token; after it, the cookie is worth nothing.
            try await client.execute(uri: "/logout", method: .post, headers: session) {
                #expect($0.status == .forbidden)
            }
            var withToken = session
            withToken[.init("X-CSRF-Token")!] = csrf
            try await client.execute(uri: "/logout", method: .post, headers: withToken) {
                #expect($0.status == .noContent)
            }
            try await client.execute(uri: "/api/history", method: .get, headers: session) {
                #expect($0.status == .unauthorized)
            }
        }
    }

    @Test("without a password reads need nothing (the dashboard is on 127.0.0.1 only) and there is no login")
    func noPassword() async throws {
        let (app, _) = try Self.application(password: "")
        try await app.test(.router) { client in
            try await client.execute(uri: "/api/history", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/login", method: .post, body: Self.form("password=")) {
                #expect($0.status == .badRequest)
            }
        }
    }

    @Test("sessions: bounded in number, expire, and tokens compare whole")
    func sessions() {
        let access = DashboardAccess(password: "pw", tokens: ["0123456789abcdef"])
        let start = ContinuousClock.now
        guard case .loggedIn(let first) = access.logIn(password: "pw", now: start) else {
            Issue.record("the password did not log in")
            return
        }
        #expect(access.logIn(password: "pW", now: start) == .wrongPassword)
        #expect(access.logIn(password: "pw ", now: start) == .wrongPassword)
        #expect(access.caller(sessionCookie: first.id, authorization: nil, now: start) == .session(first))
        #expect(access.caller(sessionCookie: first.id, authorization: nil, now: start + .seconds(13 * 3600)) == nil)
        for _ in 0..<DashboardAccess.maxSessions + 10 { _ = access.openSession(now: start) }
        #expect(access.caller(sessionCookie: nil, authorization: "Bearer 0123456789abcdef") == .token)
        #expect(access.caller(sessionCookie: nil, authorization: "Bearer 0123456789abcde") == nil)
        #expect(access.caller(sessionCookie: nil, authorization: "Bearer ") == nil)
        #expect(DashboardAccess(password: "", tokens: []).caller(sessionCookie: nil, authorization: "Bearer ") == nil)
    }

    @Test("ten failed logins in a minute pause logins, the right password too, until the oldest is a minute old")
    func failedLogins() {
        let access = DashboardAccess(password: "pw", tokens: [])
        let start = ContinuousClock.now
        for second in 0..<DashboardAccess.maxFailedLogins {
            #expect(access.logIn(password: "guess", now: start + .seconds(second)) == .wrongPassword)
        }
        #expect(access.logIn(password: "pw", now: start + .seconds(20)) == .tooManyFailures(retryAfter: .seconds(40)))
        guard case .loggedIn = access.logIn(password: "pw", now: start + .seconds(60)) else {
            Issue.record("logins stayed paused past the window")
            return
        }
    }

    @Test("listen: host:port; without a password, 127.0.0.1 whatever host is given")
    func listenAddress() {
        #expect(
            ListenAddress("0.0.0.0:8081", loopbackOnly: false) == ListenAddress("0.0.0.0:8081", loopbackOnly: false))
        #expect(ListenAddress("0.0.0.0:8081", loopbackOnly: false)?.host == "0.0.0.0")
        #expect(ListenAddress("0.0.0.0:8081", loopbackOnly: true)?.host == "127.0.0.1")
        #expect(ListenAddress("[::1]:8081", loopbackOnly: false)?.host == "::1")
        #expect(ListenAddress("dashboard.local:80", loopbackOnly: false)?.port == 80)
        for bad in ["", "8081", ":8081", "host:", "host:0", "host:70000", "a b:80", "http://x:80"] {
            #expect(ListenAddress(bad, loopbackOnly: false) == nil, "\(bad)")
        }
    }
}
