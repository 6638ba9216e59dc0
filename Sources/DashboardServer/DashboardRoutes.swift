import DashboardHistory
import FanficBroker
import FanficCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// The dashboard's HTTP surface: `/healthz`, the login, and the API for scripts.
///
/// `/healthz` and `POST /login` need nothing; everything else answers 401 without a session
/// cookie or a bearer token (with no password set, the dashboard listens on 127.0.0.1 only and
/// reads need neither). Answers are JSON; an error is `{"error": "..."}` saying what to change.
public struct DashboardRoutes: Sendable {
    let store: any HistoryStore
    let status: @Sendable () async -> FleetStatusReport
    let access: DashboardAccess
    let actions: DashboardActions?
    let live: LiveFeed?
    let metrics: DashboardMetrics?
    /// The recorder's counts of events recorded and refused, for `/metrics`.
    let recorderCounts: @Sendable () -> (recorded: Int, refused: Int)?
    let logger: Logger
    let now: @Sendable () -> Date
    /// URLs and history searches longer than this are refused (`limits.max_url_length`).
    public var maxURLLength = FanficConfiguration.Limits().maxURLLength

    /// The largest request body read (a login form, an action).
    static let maxBodyBytes = 4096
    /// The largest `POST /api/submit` body: a pasted list of up to ``DashboardActions/maxSubmitInputs`` URLs.
    static let maxSubmitBytes = 512 * 1024

    /// `actions`: nil refuses them (503); `live`: nil, pages update every 30 s only.
    public init(
        store: any HistoryStore, access: DashboardAccess, actions: DashboardActions? = nil, live: LiveFeed? = nil,
        metrics: DashboardMetrics? = nil,
        recorderCounts: @escaping @Sendable () -> (recorded: Int, refused: Int)? = { nil },
        logger: Logger, now: @escaping @Sendable () -> Date = { Date() },
        status: @escaping @Sendable () async -> FleetStatusReport
    ) {
        self.store = store
        self.access = access
        self.actions = actions
        self.live = live
        self.metrics = metrics
        self.recorderCounts = recorderCounts
        self.logger = logger
        self.now = now
        self.status = status
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        // Before routing, so that a path that does not exist says 401 too, not what exists.
        router.add(middleware: SecurityHeaders())
        router.add(
            middleware: Authentication(
                access: access, open: ["/healthz", "/login", "/assets/dashboard.css", "/assets/login.js"],
                pages: Set(Page.allCases.map(\.rawValue))))
        router.get("/healthz") { _, _ in Response.text("ok\n") }
        router.get("/login") { _, _ in Response.html(Assets.loginPage) }
        router.post("/login") { request, _ in try await logIn(request) }
        router.get("/assets/dashboard.css") { _, _ in Response.asset(Assets.stylesheet, type: "text/css; charset=utf-8")
        }
        router.get("/assets/dashboard.js") { _, _ in
            Response.asset(Assets.script, type: "text/javascript; charset=utf-8")
        }
        router.get("/assets/login.js") { _, _ in
            Response.asset(Assets.loginScript, type: "text/javascript; charset=utf-8")
        }
        for page in Page.allCases {
            router.get(RouterPath(page.rawValue)) { request, _ in try await render(page, request) }
        }
        router.get("/api/live") { _, _ in liveStream() }
        router.get("/metrics") { _, _ in
            guard let metrics else { return Response.error(.notFound, "metrics are off") }
            let text = metrics.scrape(status: await status(), recorder: recorderCounts())
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        router.post("/api/submit") { request, _ in try await act(request, maxBytes: Self.maxSubmitBytes, submit) }
        router.post("/api/redownload") { request, _ in try await act(request, redownload) }
        router.post("/api/retries/now") { request, _ in
            try await act(request) { actions, body in try await retry(actions, body, cancel: false) }
        }
        router.post("/api/retries/cancel") { request, _ in
            try await act(request) { actions, body in try await retry(actions, body, cancel: true) }
        }
        router.post("/api/failed/requeue") { request, _ in
            try await act(request) { actions, body in try await failed(actions, body, purge: false) }
        }
        router.post("/api/failed/purge") { request, _ in
            try await act(request) { actions, body in try await failed(actions, body, purge: true) }
        }
        router
            .get("/api/session") { request, _ in
                guard case .session(let session) = Authentication.caller(of: request, access: access) else {
                    return Response.error(.unauthorized, "a session is for a browser: log in with POST /login")
                }
                return Response.json(["csrf_token": session.csrfToken])
            }
            .post("/logout") { request, _ in
                guard case .session(let session) = Authentication.caller(of: request, access: access),
                    request.headers[.csrfToken] == session.csrfToken
                else { return Response.error(.forbidden, "log out from the page (its X-CSRF-Token header)") }
                access.logOut(session)
                var response = Response(status: .noContent)
                response.setCookie(Cookie(name: DashboardAccess.sessionCookie, value: "", maxAge: 0, path: "/"))
                return response
            }
            .get("/api/status") { _, _ in
                let report = await status()
                return Response.json(report, status: report.active == nil ? .serviceUnavailable : .ok)
            }
            .get("/api/widget") { _, _ in
                Response.json(
                    Widget(
                        report: await status(), day: try store.outcomeCounts(since: now().addingTimeInterval(-86_400))))
            }
            .get("/api/history") { request, _ in
                switch Self.historyQuery(
                    request.uri.queryParameters.map { (String($0.key), String($0.value)) }, maxURLLength: maxURLLength)
                {
                case .failure(let problem): return Response.error(.badRequest, problem.message)
                case .success(let query): return Response.json(try store.history(query))
                }
            }
        return router
    }

    // MARK: Pages

    private func render(_ page: Page, _ request: Request) async throws -> Response {
        var session: DashboardAccess.Session?
        var opened = false
        switch Authentication.caller(of: request, access: access) {
        case .session(let known): session = known
        case .token: return Response.error(.forbidden, "a token reads the API; the pages are for a browser session")
        case nil:
            // No password (127.0.0.1 only): every browser gets a session, for its CSRF token.
            session = access.openSession()
            opened = true
        }
        guard let session else { return Response.error(.unauthorized, "log in") }
        var parameters: [String: String] = [:]
        for (name, value) in request.uri.queryParameters where parameters[String(name)] == nil {
            parameters[String(name)] = String(value)
        }
        let renderer = PageRenderer(store: store, now: now(), maxURLLength: maxURLLength)
        let report = await status()
        let html: HTML
        if parameters["fragment"] == "1" {
            html = try renderer.content(page, status: report, parameters: parameters)
        } else {
            html = try renderer.page(page, status: report, parameters: parameters, csrfToken: session.csrfToken)
        }
        var response = Response.html(html.description)
        if opened { response.setCookie(Self.cookie(for: session)) }
        return response
    }

    private func liveStream() -> Response {
        guard let stream = live?.watch() else {
            return Response.error(.serviceUnavailable, "too many pages are watching; this one updates every 30 s")
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
            body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: "retry: 3000\n\n"))
                for await change in stream {
                    try await writer.write(ByteBuffer(string: "event: change\ndata: \(change)\n\n"))
                }
                try await writer.finish(nil)
            })
    }

    // MARK: Actions

    /// An action's request: from a browser session, with its CSRF token, a JSON object body of
    /// at most `maxBytes`. Tokens are read-only.
    private func act(
        _ request: Request, maxBytes: Int = Self.maxBodyBytes,
        _ perform: (DashboardActions, [String: JSONValue]) async throws -> Response
    ) async throws -> Response {
        guard
            case .session(let session) = Authentication.caller(of: request, access: access)
                ?? (access.needsLogin ? nil : .token)
        else {
            return Response.error(.forbidden, "actions need a browser session (tokens are read-only)")
        }
        guard let sent = request.headers[.csrfToken],
            DashboardAccess.same(Array(sent.utf8), Array(session.csrfToken.utf8))
        else {
            return Response.error(.forbidden, "missing or wrong X-CSRF-Token: reload the page")
        }
        guard let actions else { return Response.error(.serviceUnavailable, "actions are off: no broker connection") }
        var request = request
        guard let body = try? await request.collectBody(upTo: maxBytes) else {
            return Response.error(.contentTooLarge, "the body is at most \(maxBytes) bytes")
        }
        guard case .object(let fields)? = try? JSONValue.parse(Data(buffer: body)) else {
            return Response.error(.badRequest, "send a JSON object (Content-Type: application/json)")
        }
        do {
            return try await perform(actions, fields)
        } catch let problem as Problem {
            return Response.error(.badRequest, problem.message)
        } catch {
            logger.error("dashboard action failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return Response.error(.serviceUnavailable, "the broker did not take it: \(error); nothing was changed")
        }
    }

    private func submit(_ actions: DashboardActions, _ body: [String: JSONValue]) async throws -> Response {
        try Self.onlyKeys(body, ["urls", "force"])
        guard case .array(let items)? = body["urls"], !items.isEmpty else {
            throw Problem(message: "urls must be a list of story URLs")
        }
        guard items.count <= DashboardActions.maxSubmitInputs else {
            throw Problem(message: "at most \(DashboardActions.maxSubmitInputs) URLs at once")
        }
        var inputs: [String] = []
        for item in items {
            guard case .string(let text) = item else { throw Problem(message: "urls must hold strings") }
            inputs.append(text)
        }
        let force = try Self.flag(body, "force")
        let links = StoryLinks.resolve(inputs: inputs, lists: actions.expandLists)
        guard !links.stories.isEmpty else {
            return Response.json(
                SubmitAnswer(
                    queued: 0, answers: links.answers(published: false), error: "none of these is a story URL"),
                status: .badRequest)
        }
        let answers = try await actions.submit(inputs, force: force)
        return Response.json(SubmitAnswer(queued: links.stories.count, answers: answers, error: nil))
    }

    private func redownload(_ actions: DashboardActions, _ body: [String: JSONValue]) async throws -> Response {
        try Self.onlyKeys(body, ["url"])
        let url = try url(body)
        guard case .success = SiteRules.bundled.resolve(url) else {
            throw Problem(message: "url is not a story URL of a site FanFicFare knows")
        }
        let answers = try await actions.submit([url], force: true)
        return Response.json(SubmitAnswer(queued: 1, answers: answers, error: nil))
    }

    private func retry(_ actions: DashboardActions, _ body: [String: JSONValue], cancel: Bool) async throws -> Response
    {
        try Self.onlyKeys(body, ["url"])
        let url = try url(body)
        let count = cancel ? try await actions.cancelRetry(url: url) : try await actions.retryNow(url: url)
        guard count > 0 else { return Response.error(.notFound, "no retry of that URL is waiting") }
        return Response.json(["count": count])
    }

    private func failed(_ actions: DashboardActions, _ body: [String: JSONValue], purge: Bool) async throws -> Response
    {
        try Self.onlyKeys(body, ["urls", "all"])
        let all = try Self.flag(body, "all")
        var urls: Set<String>?
        if case .array(let items)? = body["urls"] {
            guard !all else { throw Problem(message: "give urls or all, not both") }
            guard items.count <= DashboardActions.maxSubmitInputs else {
                throw Problem(message: "at most \(DashboardActions.maxSubmitInputs) urls at once")
            }
            urls = []
            for item in items {
                guard case .string(let text) = item, !text.isEmpty, text.count <= maxURLLength else {
                    throw Problem(message: "urls must hold URLs as strings")
                }
                urls?.insert(text)
            }
        } else if !all {
            throw Problem(message: "give urls (a list) or all: true")
        }
        let count = purge ? try await actions.purgeFailed(urls: urls) : try await actions.requeueFailed(urls: urls)
        return Response.json(["count": count])
    }

    static func onlyKeys(_ body: [String: JSONValue], _ known: [String]) throws {
        if let unknown = body.keys.sorted().first(where: { !known.contains($0) }) {
            throw Problem(message: "unknown field '\(unknown.prefix(40))'; known: \(known.joined(separator: ", "))")
        }
    }

    static func flag(_ body: [String: JSONValue], _ name: String) throws -> Bool {
        switch body[name] {
        case nil, .null: return false
        case .bool(let value): return value
        default: throw Problem(message: "\(name) must be true or false")
        }
    }

    func url(_ body: [String: JSONValue]) throws -> String {
        guard case .string(let url)? = body["url"], !url.isEmpty, url.count <= maxURLLength else {
            throw Problem(message: "url must be a story URL (a string of at most \(maxURLLength) characters)")
        }
        return url
    }

    struct SubmitAnswer: Encodable {
        let queued: Int
        let answers: [StoryLinks.Answer]
        let error: String?
    }

    static func cookie(for session: DashboardAccess.Session) -> Cookie {
        Cookie(
            name: DashboardAccess.sessionCookie, value: session.id,
            maxAge: Int(DashboardAccess.sessionLifetime.components.seconds), path: "/", httpOnly: true,
            sameSite: .strict)
    }

    private func logIn(_ request: Request) async throws -> Response {
        guard access.needsLogin else {
            return Response.error(.badRequest, "no password is set (dashboard.password): there is nothing to log in to")
        }
        var request = request
        guard let body = try? await request.collectBody(upTo: Self.maxBodyBytes) else {
            return Response.error(.contentTooLarge, "the login form is at most \(Self.maxBodyBytes) bytes")
        }
        let form = Self.formFields(String(buffer: body))
        guard let attempt = form["password"] else {
            return Response.error(.badRequest, "send the form field password (application/x-www-form-urlencoded)")
        }
        let session: DashboardAccess.Session
        switch access.logIn(password: attempt) {
        case .loggedIn(let opened): session = opened
        case .wrongPassword:
            logger.warning("dashboard login refused: wrong password")
            return Response.error(.unauthorized, "wrong password")
        case .tooManyFailures(let wait):
            let seconds = max(1, Int(wait.components.seconds) + 1)
            var response = Response.error(
                .tooManyRequests, "too many failed logins in the last minute; try again in \(seconds) s")
            response.headers[.retryAfter] = "\(seconds)"
            return response
        }
        var response = Response.json(["csrf_token": session.csrfToken])
        response.setCookie(Self.cookie(for: session))
        return response
    }

    // MARK: Input

    struct Problem: Error, Equatable {
        let message: String
    }

    static let historyParameters = ["url", "q", "site", "outcome", "since", "limit"]

    /// `GET /api/history`'s parameters, each checked; the first problem names the parameter and
    /// what it takes.
    static func historyQuery(
        _ parameters: [(name: String, value: String)], maxURLLength: Int = FanficConfiguration.Limits().maxURLLength
    ) -> Result<HistoryQuery, Problem> {
        var query = HistoryQuery()
        // Hummingbird has percent-decoded the values already.
        for (name, value) in parameters {
            switch name {
            case "url":
                guard value.count <= maxURLLength else {
                    return .failure(Problem(message: "url is at most \(maxURLLength) characters"))
                }
                query.url = value
            case "q":
                guard value.count <= maxURLLength else {
                    return .failure(Problem(message: "q is at most \(maxURLLength) characters"))
                }
                query.text = value
            case "site":
                guard value.count <= 256 else { return .failure(Problem(message: "site is at most 256 characters")) }
                query.site = value
            case "outcome":
                guard let outcome = TaskOutcome(rawValue: value) else {
                    let known = TaskOutcome.allCases.map(\.rawValue).joined(separator: ", ")
                    return .failure(Problem(message: "outcome must be one of \(known)"))
                }
                query.outcome = outcome
            case "since":
                guard let date = Timestamp.parse(value) else {
                    return .failure(Problem(message: "since must be an ISO 8601 time, e.g. 2026-12-01T00:00:00Z"))
                }
                query.since = date
            case "limit":
                guard let limit = Int(value), (1...HistoryQuery.maxLimit).contains(limit) else {
                    return .failure(
                        Problem(message: "limit must be a whole number from 1 to \(HistoryQuery.maxLimit)"))
                }
                query.limit = limit
            default:
                return .failure(
                    Problem(
                        message: "unknown parameter '\(name.prefix(40))'; known: "
                            + historyParameters.joined(separator: ", ")))
            }
        }
        return .success(query)
    }

    /// `application/x-www-form-urlencoded` fields (the first of each name).
    static func formFields(_ body: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ text: Substring) -> String? {
                String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            }
            guard let name = decode(parts[0]), let value = decode(parts.count > 1 ? parts[1] : "") else { continue }
            if fields[name] == nil { fields[name] = value }
        }
        return fields
    }
}

/// `GET /api/widget`: a few numbers for a homepage dashboard (gethomepage.dev's `customapi`
/// widget maps them by name).
struct Widget: Encodable {
    var workers: Int
    /// Tasks a worker is running now.
    var running: Int
    /// Tasks waiting: in ingress, in the backlogs and in workers' queues.
    var waiting: Int
    var retrying: Int
    /// Tasks in `fanfic.failed`.
    var failed: Int
    var pausedSites: Int
    var succeeded24h: Int
    var failed24h: Int
    var coordinator: Bool

    init(report: FleetStatusReport, day: [TaskOutcome: Int]) {
        workers = report.workers.count
        running = report.workers.filter { $0.status.current != nil }.count
        waiting =
            (report.ingress ?? 0) + report.backlogs.values.reduce(0, +)
            + report.workers.compactMap(\.queued).reduce(0, +)
        retrying = report.retry.compactMap(\.depth).reduce(0, +)
        failed = report.failed ?? 0
        pausedSites = report.pausedSites.count
        succeeded24h = day[.succeeded] ?? 0
        failed24h = day[.failed] ?? 0
        coordinator = report.active != nil
    }

    enum CodingKeys: String, CodingKey {
        case workers, running, waiting, retrying, failed, coordinator
        case pausedSites = "paused_sites"
        case succeeded24h = "succeeded_24h"
        case failed24h = "failed_24h"
    }
}

/// Every path but the open ones needs a caller (see ``DashboardAccess``), or no password set.
struct Authentication: RouterMiddleware {
    typealias Context = BasicRequestContext
    let access: DashboardAccess
    /// Paths anyone may ask for.
    let open: Set<String>
    /// The pages: without a session they answer 401 with the login form.
    let pages: Set<String>

    static func caller(of request: Request, access: DashboardAccess) -> DashboardAccess.Caller? {
        access.caller(
            sessionCookie: request.cookies[DashboardAccess.sessionCookie]?.value,
            authorization: request.headers[.authorization])
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        if !open.contains(request.uri.path), access.needsLogin, Self.caller(of: request, access: access) == nil {
            if pages.contains(request.uri.path) {
                var response = Response.html(Assets.loginPage)
                response.status = .unauthorized
                return response
            }
            return Response.error(.unauthorized, "log in (POST /login) or send Authorization: Bearer TOKEN")
        }
        return try await next(request, context)
    }
}

/// Headers every answer carries: the pages load scripts and styles from the dashboard only, in
/// no frame, and nothing is guessed from content.
struct SecurityHeaders: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.contentSecurityPolicy] =
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'"
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[.referrerPolicy] = "no-referrer"
        return response
    }
}

extension HTTPField.Name {
    static let csrfToken = Self("X-CSRF-Token")!
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
    static let referrerPolicy = Self("Referrer-Policy")!
}

extension Response {
    static func text(_ text: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        var data = WireCodec.encodeValue(value)
        data.append(0x0A)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func html(_ text: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: type, .cacheControl: "max-age=300"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        json(["error": message], status: status)
    }
}
