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

/// The library through calibre's own tools: `calibredb` on a folder or a Content Server.
public struct CalibreStoryLibrary: StoryLibrary {
    let lookup: BookLookup
    let calibredb: Calibredb
    let ebookMeta = EbookMeta()

    public init(location: CalibreLocation, credentials: CalibreCredentials?) {
        lookup = BookLookup(location: location, credentials: credentials)
        calibredb = Calibredb(location: location, credentials: credentials)
    }

    public func books(withURL url: String) async throws -> [Int] { try await lookup.books(withURL: url) }
    public func exportEPUB(of book: Int, to directory: URL) async throws -> URL {
        try await calibredb.exportEPUB(of: book, to: directory)
    }
    public func add(_ epub: URL, in jail: URL) async throws -> Int { try await calibredb.add(epub, in: jail) }
    public func remove(_ book: Int, in jail: URL) async throws { try await calibredb.remove(book, in: jail) }
    public func replaceEPUB(of book: Int, with epub: URL, in jail: URL) async throws {
        try await calibredb.replaceEPUB(of: book, with: epub, in: jail)
    }
    public func tags(of book: Int, in jail: URL) async throws -> [String] {
        try await calibredb.tags(of: book, in: jail)
    }
    public func setMetadata(of book: Int, from opf: URL, in jail: URL) async throws {
        try await calibredb.setMetadata(of: book, from: opf, in: jail)
    }
    public func setTags(of book: Int, to tags: [String], in jail: URL) async throws {
        try await calibredb.setTags(of: book, to: tags, in: jail)
    }
    public func writeOPF(of epub: URL, to opf: URL, in jail: URL) async throws {
        try await ebookMeta.writeOPF(of: epub, to: opf, in: jail)
    }
    public func keepOriginal(of book: Int, epub: URL, in jail: URL) async throws {
        try await calibredb.keepOriginal(of: book, epub: epub, in: jail)
    }
}
