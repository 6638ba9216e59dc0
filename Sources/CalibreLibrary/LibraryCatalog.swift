import ExternalTools
import Foundation

/// One book as a sweep sees it: its id, the story URL it was made from, when the library last
/// changed it, its title.
public struct LibraryBook: Sendable, Hashable, Codable {
    public let id: Int
    /// The `url` identifier FanFicFare's EPUB gave it; nil for a book that is not a story.
    public let url: String?
    public let lastModified: Date
    public let title: String?

    public init(id: Int, url: String?, lastModified: Date, title: String? = nil) {
        self.id = id
        self.url = url
        self.lastModified = lastModified
        self.title = title
    }
}

/// The books of a library that match a calibre search, through `calibredb list` (a folder or a
/// Content Server alike): calibre evaluates its own search syntax, which nothing else reads
/// faithfully. The search is one argument, never shell text.
public struct LibraryCatalog: Sendable {
    let calibredb: Calibredb

    public init(location: CalibreLocation, credentials: CalibreCredentials? = nil) {
        calibredb = Calibredb(location: location, credentials: credentials, timeout: .seconds(600))
    }

    /// The books `search` finds, lowest id first.
    public func books(matching search: String) async throws -> [LibraryBook] {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("catalog-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            at: scratch, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: scratch) }
        let result = try await calibredb.call(
            ["list", "--for-machine", "--fields", "identifiers,last_modified,title", "--search", search], in: scratch)
        return try Self.books(fromListJSON: Data(result.stdout.utf8))
    }

    /// `calibredb list --for-machine`'s JSON, read: a book without a readable `last_modified`
    /// is an error (the sweep needs it), one without a `url` identifier has `url` nil.
    public static func books(fromListJSON data: Data) throws -> [LibraryBook] {
        struct Listed: Decodable {
            let id: Int
            let identifiers: [String: String]?
            let last_modified: String?
            let title: String?
        }
        let listed: [Listed]
        do {
            listed = try JSONDecoder().decode([Listed].self, from: data)
        } catch {
            throw CalibreError("calibredb list did not answer the JSON it should: \(error)")
        }
        let parser = ISO8601DateFormatter()
        return try listed.map { book in
            guard let text = book.last_modified, let modified = parser.date(from: text) else {
                throw CalibreError("calibredb list gave book \(book.id) no readable last_modified")
            }
            return LibraryBook(id: book.id, url: book.identifiers?["url"], lastModified: modified, title: book.title)
        }.sorted { $0.id < $1.id }
    }
}
