import ExternalTools
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `calibredb` as a child process, one call at a time per local library.
///
/// A folder library takes one calibre process at a time for the whole host ("Another calibre
/// program is running"), so calls on it hold an exclusive `flock` on a file in the library
/// folder: the workers of one host queue up instead of failing. A Content Server takes parallel
/// calls. The server password is handed over in a file (`--password <f:FILE>`), never on the
/// command line.
public struct Calibredb: Sendable {
    public let location: CalibreLocation
    public let credentials: CalibreCredentials?
    public var timeout: Duration
    let runner: ToolRunner

    public init(location: CalibreLocation, credentials: CalibreCredentials? = nil, timeout: Duration = .seconds(300)) {
        self.location = location
        self.credentials = credentials
        self.timeout = timeout
        // As root, calibre's Qt WebEngine refuses to start without this (the add still works but
        // prints a traceback and makes no cover).
        self.runner = ToolRunner(environment: ["QTWEBENGINE_DISABLE_SANDBOX": "1"])
    }

    /// Adds an EPUB as a new book (duplicates allowed: the URL lookup decided it is new).
    public func add(_ epub: URL, in directory: URL) async throws -> Int {
        let result = try await call(["add", "--duplicates", "--", epub.path], in: directory)
        guard let id = Self.addedID(result.stdout) else {
            throw CalibreError("calibredb add did not report a book id: \(result.tail)")
        }
        return id
    }

    /// Replaces the book's EPUB, keeping its metadata.
    public func replaceEPUB(of book: Int, with epub: URL, in directory: URL) async throws {
        try await call(["add_format", "\(book)", "--", epub.path], in: directory)
    }

    /// Adds `epub` to the book as its ORIGINAL_EPUB format (the format comes from the file's
    /// extension); one the book already has is left as it is, so the first copy kept stays.
    public func keepOriginal(of book: Int, epub: URL, in directory: URL) async throws {
        let copy = directory.appendingPathComponent("kept-\(book).original_epub")
        try? FileManager.default.removeItem(at: copy)
        try FileManager.default.copyItem(at: epub, to: copy)
        defer { try? FileManager.default.removeItem(at: copy) }
        do {
            try await call(["add_format", "--dont-replace", "\(book)", "--", copy.path], in: directory)
        } catch let error as CalibreError where "\(error)".contains("already") {
            // The book keeps the copy kept first.
        }
    }

    public func remove(_ book: Int, in directory: URL) async throws {
        try await call(["remove", "\(book)"], in: directory)
    }

    /// Exports the book's EPUB into `directory`; returns its path.
    public func exportEPUB(of book: Int, to directory: URL) async throws -> URL {
        let target = directory.appendingPathComponent("export-\(book)")
        try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
        try await call(
            [
                "export", "--single-dir", "--to-dir", target.path, "--dont-save-cover", "--dont-write-opf",
                // The file as FanFicFare wrote it: its own metadata tells the story's tags from
                // the ones the user added in calibre.
                "--dont-update-metadata", "--formats", "epub", "\(book)",
            ], in: directory)
        let files = try FileManager.default.contentsOfDirectory(atPath: target.path).filter {
            $0.lowercased().hasSuffix(".epub")
        }
        guard let file = files.first else { throw CalibreError("book \(book) has no EPUB to update") }
        return target.appendingPathComponent(file)
    }

    /// The book's tags.
    public func tags(of book: Int, in directory: URL) async throws -> [String] {
        let result = try await call(
            ["list", "--for-machine", "--fields", "tags", "--search", "id:\(book)"], in: directory)
        struct Row: Decodable { let tags: [String]? }
        let rows = try JSONDecoder().decode([Row].self, from: Data(result.stdout.utf8))
        return rows.first?.tags ?? []
    }

    /// Sets the book's metadata from an OPF file (custom columns are left alone).
    public func setMetadata(of book: Int, from opf: URL, in directory: URL) async throws {
        try await call(["set_metadata", "\(book)", opf.path], in: directory)
    }

    public func setTags(of book: Int, to tags: [String], in directory: URL) async throws {
        let value = tags.map { $0.replacingOccurrences(of: ",", with: ";") }.joined(separator: ",")
        try await call(["set_metadata", "--field", "tags:\(value)", "\(book)"], in: directory)
    }

    /// Runs `calibredb <arguments> --with-library ...`; throws unless it succeeded.
    @discardableResult
    func call(_ arguments: [String], in directory: URL) async throws -> ToolResult {
        var argv = ["--with-library", location.withLibrary]
        let passwordFile = directory.appendingPathComponent(".calibre-password-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: passwordFile) }
        if let credentials {
            _ = FileManager.default.createFile(
                atPath: passwordFile.path, contents: Data(credentials.password.utf8),
                attributes: [.posixPermissions: 0o600])
            argv += ["--username", credentials.username, "--password", "<f:\(passwordFile.path)>"]
        }
        let command = Array(arguments.prefix(1)) + argv + Array(arguments.dropFirst())
        // Another calibre program (the user's GUI, a calibre-server on this folder) may hold the
        // library: wait for it a while rather than fail the task.
        var waited: Duration = .zero
        var result: ToolResult
        while true {
            result = try await withLibraryLock {
                try await runner.run("calibredb", command, in: directory, timeout: timeout)
            }
            guard !result.succeeded, result.stderr.contains("Another calibre program"), waited < .seconds(60) else {
                break
            }
            try await Task.sleep(for: .seconds(2))
            waited += .seconds(2)
        }
        guard result.succeeded else {
            let what = result.timedOut ? "timed out" : "exited \(result.exitStatus)"
            throw CalibreError("calibredb \(arguments.first ?? "") \(what): \(result.tail)")
        }
        return result
    }

    static func addedID(_ output: String) -> Int? {
        guard let line = output.split(separator: "\n").first(where: { $0.contains("Added book ids:") }) else {
            return nil
        }
        return line.split(separator: ":").last.flatMap {
            Int($0.split(separator: ",").first?.trimmingCharacters(in: .whitespaces) ?? "")
        }
    }

    private func withLibraryLock<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        guard case .folder(let folder) = location else { return try await body() }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let descriptor = open(folder.appendingPathComponent(".fanfic-calibre.lock").path, O_RDWR | O_CREAT, 0o644)
        guard descriptor >= 0 else { throw CalibreError("cannot open the library lock in \(folder.path)") }
        defer { close(descriptor) }
        while flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            try await Task.sleep(for: .milliseconds(50))
        }
        defer { flock(descriptor, LOCK_UN) }
        return try await body()
    }
}
