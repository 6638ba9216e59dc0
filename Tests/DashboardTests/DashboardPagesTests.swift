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
@testable import FanficBroker

@Suite("Dashboard pages and actions: rendered, escaped, live, and every action's refusals")
struct DashboardPagesTests {
    static let token = DashboardRoutesTests.token
    static let password = DashboardRoutesTests.password
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!
    static let hostile = "http://test1.com?sid=66&x=<script>alert(1)</script>"

    struct Setup {
        let app: Application<RouterResponder<BasicRequestContext>>
        let store: SQLiteHistoryStore
        let broker: InMemoryBroker
    }

    static func setUp(password: String = Self.password) throws -> Setup {
        let store = try SQLiteHistoryStore.inMemory()
        let at = Date()
        func event(_ kind: FanficEvent.Kind, _ url: String, site: String = "test1.com", seconds: Double) -> FanficEvent
        {
            var event = FanficEvent(kind, source: "w", at: at.addingTimeInterval(seconds), site: site, url: url)
            if kind == .taskSucceeded { (event.durationMilliseconds, event.title) = (2000, "<i>Tea</i> & Cake") }
            if kind == .taskFailed { event.reason = "story not found" }
            if kind == .taskRetrying { (event.reason, event.attempt) = ("timed out", 1) }
            return event
        }
        try store.record([
            event(.taskRouted, "http://test1.com?sid=1", seconds: -60),
            event(.taskSucceeded, "http://test1.com?sid=1", seconds: -50),
            event(.taskRouted, "http://test2.com?sid=2", site: "test2.com", seconds: -40),
            event(.taskFailed, "http://test2.com?sid=2", site: "test2.com", seconds: -30),
            event(.taskRouted, "http://test3.com?sid=3", site: "test3.com", seconds: -20),
            event(.taskRetrying, "http://test3.com?sid=3", site: "test3.com", seconds: -10),
            event(.taskRouted, hostile, seconds: -5),
            FanficEvent(
                .mailPolled, source: "ingester@h", at: at.addingTimeInterval(-3), detail: "INBOX: 3 message(s)"),
            FanficEvent(.workerDead, source: "c", at: at.addingTimeInterval(-2), worker: "w9"),
        ])
        let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: DashboardActionsTests.ladder))
        let actions = DashboardActions(
            bus: InMemoryBus(broker: broker), ladder: DashboardActionsTests.ladder, source: "dashboard@test"
        ) { _ in }
        let routes = DashboardRoutes(
            store: store, access: DashboardAccess(password: password, tokens: [token]), actions: actions,
            logger: Logger(label: "test.dashboard")
        ) {
            var report = FleetStatusReport(brokerURL: "amqp://127.0.0.1")
            report.active = "coordinator@test"
            report.workers = [
                .init(status: WorkerStatus(id: "w1", host: "host-a", site: "test1.com", current: hostile), queued: 3)
            ]
            report.backlogs = ["test4.com": 7]
            report.sweepBacklogs = ["test2.com": 5]
            // Every check due long ago, the sweep over only at the end of time: nothing depends on the clock.
            let epoch = Date(timeIntervalSince1970: 0)
            report.sweep = SweepProgress(
                sweep: "s1", writtenAt: epoch, startsAt: epoch, endsAt: .distantFuture, releasing: false,
                sites: [.init(site: "test2.com", checks: 4, firstDue: epoch, lastDue: epoch + 100)])
            report.sweepInterval = 86_400
            report.failed = 1
            return report
        }
        return Setup(app: Application(router: routes.router()), store: store, broker: broker)
    }

    /// Logs in; the headers of the session with its CSRF token.
    static func logIn(_ client: some TestClientProtocol) async throws -> HTTPFields {
        let encoded = "password=" + password.replacingOccurrences(of: " ", with: "+")
        return try await client.execute(uri: "/login", method: .post, body: ByteBuffer(string: encoded)) { response in
            let cookie = try #require(response.headers[.setCookie]?.split(separator: ";").first)
            let csrf = try #require((try DashboardRoutesTests.json(response) as? [String: String])?["csrf_token"])
            return [.cookie: String(cookie), csrfHeader: csrf, .contentType: "application/json"]
        }
    }

    static func text(_ response: TestResponse) -> String { String(buffer: response.body) }

    @Test("without a session a page is the login form with 401; with one, each page renders its data, escaped")
    func pages() async throws {
        let setup = try Self.setUp()
        try await setup.app.test(.router) { client in
            for page in Page.allCases {
                try await client.execute(uri: page.rawValue, method: .get) { response in
                    #expect(response.status == .unauthorized)
                    #expect(Self.text(response).contains("type=\"password\""))
                }
                try await client.execute(
                    uri: page.rawValue, method: .get, headers: DashboardRoutesTests.bearer(Self.token)
                ) { #expect($0.status == .forbidden, "a token reads the API, not the pages") }
            }
            try await client.execute(uri: "/login", method: .get) { #expect(Self.text($0).contains("Log in")) }
            let session = try await Self.logIn(client)
            let csrf = try #require(session[Self.csrfHeader])
            var pages: [Page: String] = [:]
            for page in Page.allCases {
                pages[page] = try await client.execute(uri: page.rawValue, method: .get, headers: session) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentSecurityPolicy]?.contains("script-src 'self'") == true)
                    return Self.text(response)
                }
            }
            for (page, html) in pages {
                #expect(html.contains("<meta name=\"csrf-token\" content=\"\(csrf)\">"), "\(page)")
                #expect(!html.contains("<script>alert"), "\(page): what came from the wire is escaped")
            }
            let now = try #require(pages[.now])
            #expect(now.contains("host-a") && now.contains("test4.com") && now.contains("id=\"add-form\""))
            #expect(now.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
            #expect(now.contains("<tr><td>test2.com</td><td>0</td><td>5</td></tr>"), "sweep checks waiting, per site")
            #expect(now.contains("<b>4</b> of 4 checks released"), "the sweep's progress")
            #expect(now.contains("<tr><td>test2.com</td><td>4</td><td>4</td></tr>"))
            #expect(now.contains("data-action=\"retry-now\" data-url=\"http://test3.com?sid=3\""))
            let history = try #require(pages[.history])
            #expect(history.contains("http://test1.com?sid=1") && history.contains("data-action=\"redownload\""))
            #expect(history.contains("INBOX: 3 message(s)") && history.contains("worker w9"), "mail checks, workers")
            #expect(history.contains("<b>&lt;i&gt;Tea&lt;/i&gt; &amp; Cake</b>"), "the title, escaped")
            let sites = try #require(pages[.sites])
            #expect(sites.contains("test1.com") && sites.contains("100%") && sites.contains("0%"))
            let failed = try #require(pages[.failed])
            #expect(failed.contains("story not found") && failed.contains("data-action=\"failed-requeue\""))
            #expect(!failed.contains("sid=1\""), "a story that succeeded is not under Failed")

            // The fragment is the page's <main> alone, and takes the page's filters.
            try await client.execute(uri: "/history?fragment=1&outcome=failed", method: .get, headers: session) {
                let html = Self.text($0)
                #expect(!html.contains("<html") && html.contains("test2.com?sid=2") && !html.contains("sid=1<"))
            }
            try await client.execute(uri: "/history?q=sid%3D3&fragment=1", method: .get, headers: session) {
                let html = Self.text($0)
                #expect(html.contains("sid=3") && !html.contains("sid=2"))
            }
            try await client.execute(uri: "/history?q=CAKE&fragment=1", method: .get, headers: session) {
                let html = Self.text($0)
                #expect(html.contains("sid=1") && !html.contains("sid=3"), "the search finds titles too")
            }
            try await client.execute(uri: "/assets/dashboard.js", method: .get) { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/assets/dashboard.js", method: .get, headers: session) {
                #expect(Self.text($0).contains("EventSource"))
            }
        }
    }

    @Test("actions refuse: no session, a token, no or a wrong CSRF token, bad input; nothing is queued")
    func actionRefusals() async throws {
        let setup = try Self.setUp()
        try await setup.app.test(.router) { client in
            let body = ByteBuffer(string: #"{"urls": ["http://test1.com?sid=9"]}"#)
            try await client.execute(uri: "/api/submit", method: .post, body: body) {
                #expect($0.status == .unauthorized)
            }
            try await client.execute(
                uri: "/api/submit", method: .post, headers: DashboardRoutesTests.bearer(Self.token), body: body
            ) { #expect($0.status == .forbidden) }
            let session = try await Self.logIn(client)
            var noToken = session
            noToken[Self.csrfHeader] = nil
            var wrongToken = session
            wrongToken[Self.csrfHeader] = String(repeating: "0", count: 64)
            for headers in [noToken, wrongToken] {
                try await client.execute(uri: "/api/submit", method: .post, headers: headers, body: body) { response in
                    #expect(response.status == .forbidden)
                    #expect(Self.text(response).contains("X-CSRF-Token"))
                }
            }
            let bad: [(String, String, String)] = [
                ("/api/submit", "not json", "JSON object"),
                ("/api/submit", #"["http://test1.com?sid=9"]"#, "JSON object"),
                ("/api/submit", #"{"urls": "http://test1.com?sid=9"}"#, "urls must be a list"),
                ("/api/submit", #"{"urls": [1]}"#, "strings"),
                ("/api/submit", #"{"urls": ["x"], "force": "yes"}"#, "force must be true or false"),
                ("/api/submit", #"{"urls": ["x"], "priority": 1}"#, "unknown field 'priority'"),
                ("/api/submit", #"{"urls": ["not a story", "ftp://x"]}"#, "none of these is a story URL"),
                ("/api/redownload", #"{"url": "http://example.invalid/"}"#, "not a story URL"),
                ("/api/retries/now", #"{}"#, "url must be"),
                ("/api/failed/purge", #"{}"#, "give urls (a list) or all: true"),
                ("/api/failed/requeue", #"{"urls": [], "all": true}"#, "not both"),
            ]
            for (path, text, expected) in bad {
                try await client.execute(uri: path, method: .post, headers: session, body: ByteBuffer(string: text)) {
                    response in
                    #expect(response.status == .badRequest, "\(path) \(text)")
                    #expect(Self.text(response).contains(expected), "\(path) \(text): \(Self.text(response))")
                }
            }
            let tooBig = ByteBuffer(string: #"{"url": ""# + String(repeating: "a", count: 5000) + #""}"#)
            try await client.execute(uri: "/api/retries/now", method: .post, headers: session, body: tooBig) {
                #expect($0.status == .contentTooLarge)
            }
            try await client.execute(
                uri: "/api/retries/cancel", method: .post, headers: session,
                body: ByteBuffer(string: #"{"url": "http://test1.com?sid=1"}"#)
            ) { #expect($0.status == .notFound) }
            #expect(setup.broker.messages(in: FanficTopology.ingress).isEmpty)
        }
    }

    @Test("submit and redownload queue through the broker and answer like fanfic submit --json")
    func submit() async throws {
        let setup = try Self.setUp()
        try await setup.app.test(.router) { client in
            let session = try await Self.logIn(client)
            let body = ByteBuffer(
                string: #"{"urls": ["http://test1.com?sid=9", "http://test1.com?sid=9&chapter=3", "nope"]}"#)
            try await client.execute(uri: "/api/submit", method: .post, headers: session, body: body) { response in
                #expect(response.status == .ok)
                let answer = try #require(try DashboardRoutesTests.json(response) as? [String: Any])
                #expect(answer["queued"] as? Int == 1)
                let statuses = (answer["answers"] as? [[String: Any]])?.compactMap { $0["status"] as? String }
                #expect(statuses == ["queued", "duplicate", "refused"])
            }
            try await client.execute(
                uri: "/api/redownload", method: .post, headers: session,
                body: ByteBuffer(string: #"{"url": "http://test2.com?sid=2"}"#)
            ) { #expect($0.status == .ok) }
            let queued = setup.broker.messages(in: FanficTopology.ingress).compactMap { try? WireCodec.decode($0.body) }
            #expect(queued.map(\.url) == ["http://test1.com?sid=9", "http://test2.com?sid=2"])
            #expect(queued.map(\.behavior) == [.normal, .force])
        }
    }

    @Test("without a password a page opens a session (for its CSRF token), and actions still need that token")
    func noPassword() async throws {
        let setup = try Self.setUp(password: "")
        try await setup.app.test(.router) { client in
            let body = ByteBuffer(string: #"{"urls": ["http://test1.com?sid=9"]}"#)
            try await client.execute(uri: "/api/submit", method: .post, body: body) {
                #expect($0.status == .forbidden, "another site's page in the same browser cannot act")
            }
            let (cookie, csrf) = try await client.execute(uri: "/", method: .get) { response in
                #expect(response.status == .ok)
                let cookie = try #require(response.headers[.setCookie]?.split(separator: ";").first)
                let html = Self.text(response)
                let start = try #require(html.range(of: "name=\"csrf-token\" content=\""))
                return (String(cookie), String(html[start.upperBound...].prefix(64)))
            }
            try await client.execute(
                uri: "/api/submit", method: .post, headers: [.cookie: cookie, Self.csrfHeader: csrf], body: body
            ) { #expect($0.status == .ok) }
            #expect(setup.broker.messages(in: FanficTopology.ingress).count == 1)
        }
    }

    @Test("the live feed tells watchers when the history changes, and ends their streams at shutdown")
    func live() async throws {
        let store = try SQLiteHistoryStore.inMemory()
        let feed = LiveFeed(store: store, interval: .milliseconds(10)) { FleetStatusReport(brokerURL: "amqp://x") }
        let stream = try #require(feed.watch())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await feed.run() }
            var iterator = stream.makeAsyncIterator()
            #expect(await iterator.next() == 1, "the first look is a change")
            try store.record([FanficEvent(.taskRouted, source: "c", site: "test1.com", url: "http://test1.com?sid=1")])
            #expect(await iterator.next() == 2)
            group.cancelAll()
            #expect(await iterator.next() == nil, "the stream ends with the feed")
        }
        #expect(feed.watch() == nil, "no new watcher after the end")
    }
}
