import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Collects what happens on `fanfic.events` (a queue of the test's own, bound to `#`).
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [FanficEvent] = []
    private var task: Task<Void, Never>?

    /// Starts listening; call before submitting, so that nothing is missed.
    func start(_ connection: AMQPConnection) async throws {
        let queue = "test.events.\(UUID().uuidString.prefix(8))"
        // Durable and declared again after a reconnect: the log outlives a broker restart.
        try await connection.declare(
            AMQPTopology(
                queues: [QueueSpec(name: queue)],
                bindings: [BindingSpec(queue: queue, exchange: FanficTopology.events, routingKey: "#")]))
        task = Task { [weak self] in
            do {
                for try await delivery in connection.consume(queue: queue, prefetch: 100) {
                    if let event = try? WireCodec.decodeEvent(delivery.body) {
                        self?.lock.withLock { self?.events.append(event) }
                    }
                    try? await delivery.ack()
                }
            } catch {}
        }
    }

    func stop() { task?.cancel() }

    var all: [FanficEvent] { lock.withLock { events } }

    func of(_ kind: FanficEvent.Kind, url: String? = nil) -> [FanficEvent] {
        all.filter { $0.kind == kind && (url == nil || $0.url == url) }
    }

    /// Waits for the task of `url` to end (succeeded or failed) `count` times; returns the last end.
    @discardableResult
    func waitForEnd(of url: String, count: Int = 1, timeout: Duration = .seconds(90)) async throws -> FanficEvent {
        try await waitUntil("\(url) ended \(count) time(s)", timeout: timeout, every: .milliseconds(100)) {
            self.ends(of: url).count >= count
        }
        return ends(of: url)[count - 1]
    }

    func ends(of url: String) -> [FanficEvent] {
        all.filter { ($0.kind == .taskSucceeded || $0.kind == .taskFailed) && $0.url == url }
    }
}

/// A Calibre library in a temporary folder, read back with the real calibredb.
struct TestLibrary {
    let folder: URL
    /// What `--with-library` gets: the folder, or the Content Server serving it (while a
    /// calibre-server runs, calibre refuses local calls on any library).
    var withLibrary: String
    /// A Content Server user and the file holding its password (calibredb's `<f:FILE>` form).
    var credentials: (user: String, passwordFile: String)?

    init(in directory: URL) throws {
        folder = directory.appendingPathComponent("library")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        withLibrary = folder.path
        // An empty library: calibredb creates metadata.db on first use.
        _ = try calibredb(["list"])
    }

    struct Book: Decodable {
        let id: Int
        let title: String
        let authors: String
        let identifiers: [String: String]
        let tags: [String]?
        let custom: String?
        /// The paths of its format files (`.../Title.epub`, `.../Title.original_epub`).
        let formats: [String]?

        enum CodingKeys: String, CodingKey {
            case id, title, authors, identifiers, tags, formats
            case custom = "*keepme"
        }
    }

    func books() throws -> [Book] {
        let output = try calibredb(
            [
                "list", "--for-machine", "--fields",
                "title,authors,identifiers,tags,formats" + (hasCustomColumn ? ",*keepme" : ""),
            ])
        return try JSONDecoder().decode([Book].self, from: Data(output.utf8))
    }

    var hasCustomColumn: Bool {
        (try? calibredb(["custom_columns"]))?.contains("keepme") ?? false
    }

    func addCustomColumn() throws {
        _ = try calibredb(["add_custom_column", "keepme", "Keep me", "text"])
    }

    func set(custom value: String, tags: [String], on book: Int) throws {
        _ = try calibredb(["set_custom", "keepme", "\(book)", value])
        _ = try calibredb(["set_metadata", "--field", "tags:\(tags.joined(separator: ","))", "\(book)"])
    }

    @discardableResult
    func calibredb(_ arguments: [String]) throws -> String {
        let argv =
            ["/usr/bin/env", "QTWEBENGINE_DISABLE_SANDBOX=1", "calibredb"] + Array(arguments.prefix(1))
            + ["--with-library", withLibrary]
            + (credentials.map { ["--username", $0.user, "--password", "<f:\($0.passwordFile)>"] } ?? [])
            + Array(arguments.dropFirst())
        // The worker may be running calibredb on this library right now: calibre allows one.
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            let result = try ChildProcess.run(argv)
            if result.status == 0 { return result.stdout }
            guard result.stderr.contains("Another calibre program"), ContinuousClock.now < deadline else {
                throw TestFailure("calibredb \(arguments) failed: \(result.stderr)")
            }
            usleep(300_000)
        }
    }
}

/// A small HTTP listener that Apprise's `json://` URLs post to; it keeps each request body.
final class NotificationSink {
    let port: Int
    let file: String
    private let pid: pid_t

    init(in directory: URL) throws {
        port = FreePort.pick(in: 20_000...29_999)
        file = directory.appendingPathComponent("notifications.jsonl").path
        let script = """
            import http.server, sys
            out = sys.argv[2]
            class Handler(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                    with open(out, 'ab') as f:
                        f.write(body.replace(b'\\n', b' ') + b'\\n')
                    self.send_response(200)
                    self.end_headers()
                def log_message(self, *args):
                    pass
            http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), Handler).serve_forever()
            """
        pid = try ChildProcess.spawn(["python3", "-c", script, "\(port)", file])
    }

    var url: String { "json://127.0.0.1:\(port)/notify" }

    var received: [String] {
        ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    deinit {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// `calibre-server` on loopback over a library folder, for the Content Server mode.
final class ContentServer {
    let port: Int
    let libraryID: String
    private let folder: String
    private let log: String
    private var pid: pid_t = 0

    init(library: TestLibrary, log: String) async throws {
        port = FreePort.pick(in: 30_000...32_767)
        libraryID = library.folder.lastPathComponent
        folder = library.folder.path
        self.log = log
        try await start()
    }

    /// Starts the server (again, after ``stop()``) and waits until it answers.
    func start() async throws {
        pid = try ChildProcess.spawn(
            [
                "/usr/bin/env", "QTWEBENGINE_DISABLE_SANDBOX=1", "calibre-server", "--listen-on", "127.0.0.1", "--port",
                "\(port)", "--enable-local-write", folder,
            ], stdout: log, stderr: log + ".err")
        let port = self.port
        try await waitUntil("calibre-server listens", timeout: .seconds(30), every: .milliseconds(100)) {
            (try? ChildProcess.run(["curl", "-sf", "http://127.0.0.1:\(port)/ajax/library-info"]))?.status == 0
        }
    }

    var url: String { "http://127.0.0.1:\(port)/#\(libraryID)" }

    /// calibre-server was seen to ignore SIGTERM; it holds no state a test needs.
    func stop() {
        guard pid != 0 else { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        pid = 0
    }

    deinit { stop() }
}
