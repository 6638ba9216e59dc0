import Foundation

/// The Calibre library as the worker's pipeline uses it: the real one (``CalibreStoryLibrary``:
/// `calibredb`, `ebook-meta` and the exact lookup) or an in-memory one in unit tests. `jail` is
/// the task's private working folder.
public protocol StoryLibrary: Sendable {
    /// Ids of the books whose URL identifier is exactly `url`.
    func books(withURL url: String) async throws -> [Int]
    /// Copies a book's EPUB into `directory`; returns its path.
    func exportEPUB(of book: Int, to directory: URL) async throws -> URL
    /// Adds an EPUB as a new book; returns its id.
    func add(_ epub: URL, in jail: URL) async throws -> Int
    func remove(_ book: Int, in jail: URL) async throws
    /// Replaces a book's EPUB format, keeping its metadata.
    func replaceEPUB(of book: Int, with epub: URL, in jail: URL) async throws
    func tags(of book: Int, in jail: URL) async throws -> [String]
    /// Sets a book's metadata from an OPF file.
    func setMetadata(of book: Int, from opf: URL, in jail: URL) async throws
    func setTags(of book: Int, to tags: [String], in jail: URL) async throws
    /// Writes an EPUB's own metadata as an OPF file (read with ``EbookMeta/tags(inOPF:)``).
    func writeOPF(of epub: URL, to opf: URL, in jail: URL) async throws
    /// Keeps `epub` as the book's ORIGINAL_EPUB format (calibre's own name for a format kept
    /// before a change), unless the book already has one.
    func keepOriginal(of book: Int, epub: URL, in jail: URL) async throws
}

/// The library through calibre's own tools: `calibredb` on a folder; on a Content Server, the
/// server's HTTP endpoints (``ContentServerClient``), with `calibredb` only for setting metadata from an
/// OPF file (calibre's metadata object has no other way in).
public struct CalibreStoryLibrary: StoryLibrary {
    let lookup: BookLookup
    let calibredb: Calibredb
    let server: ContentServerClient?
    let ebookMeta = EbookMeta()

    public init(location: CalibreLocation, credentials: CalibreCredentials?) {
        lookup = BookLookup(location: location, credentials: credentials)
        calibredb = Calibredb(location: location, credentials: credentials)
        if case .server(let base, let libraryID) = location {
            server = ContentServerClient(base: base, libraryID: libraryID, credentials: credentials)
        } else {
            server = nil
        }
    }

    public func books(withURL url: String) async throws -> [Int] { try await lookup.books(withURL: url) }

    public func exportEPUB(of book: Int, to directory: URL) async throws -> URL {
        guard let server else { return try await calibredb.exportEPUB(of: book, to: directory) }
        let file = directory.appendingPathComponent("export-\(book).epub")
        try await server.format("EPUB", of: book).write(to: file)
        return file
    }

    public func add(_ epub: URL, in jail: URL) async throws -> Int {
        guard let server else { return try await calibredb.add(epub, in: jail) }
        return try await server.addBook(epub)
    }

    public func remove(_ book: Int, in jail: URL) async throws {
        guard let server else { return try await calibredb.remove(book, in: jail) }
        try await server.removeBooks([book])
    }

    public func replaceEPUB(of book: Int, with epub: URL, in jail: URL) async throws {
        guard let server else { return try await calibredb.replaceEPUB(of: book, with: epub, in: jail) }
        guard try await server.addFormat(of: book, from: epub, format: "EPUB", replace: true) else {
            throw CalibreError("the Content Server did not replace book \(book)'s EPUB (is the book still there?)")
        }
    }

    public func tags(of book: Int, in jail: URL) async throws -> [String] {
        guard let server else { return try await calibredb.tags(of: book, in: jail) }
        return try await server.tags(of: book)
    }

    public func setMetadata(of book: Int, from opf: URL, in jail: URL) async throws {
        try await calibredb.setMetadata(of: book, from: opf, in: jail)
    }

    public func setTags(of book: Int, to tags: [String], in jail: URL) async throws {
        guard let server else { return try await calibredb.setTags(of: book, to: tags, in: jail) }
        try await server.setTags(of: book, to: tags)
    }

    public func writeOPF(of epub: URL, to opf: URL, in jail: URL) async throws {
        try await ebookMeta.writeOPF(of: epub, to: opf, in: jail)
    }

    public func keepOriginal(of book: Int, epub: URL, in jail: URL) async throws {
        guard let server else { return try await calibredb.keepOriginal(of: book, epub: epub, in: jail) }
        // False when the book already has one: the copy kept first stays.
        try await server.addFormat(of: book, from: epub, format: "ORIGINAL_EPUB", replace: false)
    }
}
