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
    let logger: Logger
    let now: @Sendable () -> Date

    /// The largest request body read (a login form).
    static let maxBodyBytes = 4096

    public init(
        store: any HistoryStore, access: DashboardAccess, logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() },
        status: @escaping @Sendable () async -> FleetStatusReport
    ) {
        self.store = store
        self.access = access
        self.logger = logger
        self.now = now
        self.status = status
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        // Before routing, so that a path that does not exist says 401 too, not what exists.
        router.add(middleware: Authentication(access: access, open: ["/healthz", "/login"]))
        router.get("/healthz") { _, _ in Response.text("ok\n") }
        router.post("/login") { request, _ in try await logIn(request) }
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
                switch Self.historyQuery(request.uri.queryParameters.map { (String($0.key), String($0.value)) }) {
                case .failure(let problem): return Response.error(.badRequest, problem.message)
                case .success(let query): return Response.json(try store.history(query))
                }
            }
        return router
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
        response.setCookie(
            Cookie(
                name: DashboardAccess.sessionCookie, value: session.id,
                maxAge: Int(DashboardAccess.sessionLifetime.components.seconds), path: "/", httpOnly: true,
                sameSite: .strict))
        return response
    }

    // MARK: Input

    struct Problem: Error, Equatable {
        let message: String
    }

    static let historyParameters = ["url", "site", "outcome", "since", "limit"]

    /// `GET /api/history`'s parameters, each checked; the first problem names the parameter and
    /// what it takes.
    static func historyQuery(_ parameters: [(name: String, value: String)]) -> Result<HistoryQuery, Problem> {
        var query = HistoryQuery()
        // Hummingbird has percent-decoded the values already.
        for (name, value) in parameters {
            switch name {
            case "url":
                guard value.count <= 2048 else { return .failure(Problem(message: "url is at most 2048 characters")) }
                query.url = value
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

    static func caller(of request: Request, access: DashboardAccess) -> DashboardAccess.Caller? {
        access.caller(
            sessionCookie: request.cookies[DashboardAccess.sessionCookie]?.value,
            authorization: request.headers[.authorization])
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        if !open.contains(request.uri.path), access.needsLogin, Self.caller(of: request, access: access) == nil {
            return Response.error(.unauthorized, "log in (POST /login) or send Authorization: Bearer TOKEN")
        }
        return try await next(request, context)
    }
}

extension HTTPField.Name {
    static let csrfToken = Self("X-CSRF-Token")!
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

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        json(["error": message], status: status)
    }
}
