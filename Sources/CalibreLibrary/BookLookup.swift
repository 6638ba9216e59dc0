import Foundation
import GRDB

/// Finds the book whose URL identifier is exactly a story URL, without a calibre process.
///
/// Exact, because calibre's `identifiers:url:` search without `=` is a substring match
/// (`?sid=1` finds `?sid=10`'s book) and the wrong book would be overwritten; and calibre compares
/// identifiers without case (`COLLATE NOCASE`, and `=` in a search), while some sites' story ids
/// are case-sensitive. A folder library is read from its `metadata.db` (read-only; calibre itself
/// may be writing); a Content Server is asked through its JSON API, with the URL escaped so that
/// search syntax in it is only text, and each hit's identifier compared exactly.
public struct BookLookup: Sendable {
    public let location: CalibreLocation
    public let credentials: CalibreCredentials?

    public init(location: CalibreLocation, credentials: CalibreCredentials? = nil) {
        self.location = location
        self.credentials = credentials
    }

    /// How calibre stores a URL identifier (`clean_identifier`): trimmed, `,` replaced by `|`.
    public static func storedIdentifier(_ url: String) -> String {
        url.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: ",", with: "|")
    }

    /// A calibre search for books whose `url` identifier equals `url`; backslash, quote and
    /// parentheses escaped as calibre's parser reads them inside a quoted word.
    public static func searchExpression(forURL url: String) -> String {
        var escaped = ""
        for character in storedIdentifier(url) {
            if "\\\"()".contains(character) { escaped.append("\\") }
            escaped.append(character)
        }
        return "identifiers:\"url:=\(escaped)\""
    }

    /// The ids of the books with this exact URL identifier, lowest first (normally one, or none).
    public func books(withURL url: String) async throws -> [Int] {
        let url = Self.storedIdentifier(url)
        switch location {
        case .folder(let folder):
            let path = folder.appendingPathComponent("metadata.db").path
            guard FileManager.default.fileExists(atPath: path) else { return [] }  // no library yet
            var configuration = Configuration()
            configuration.readonly = true
            configuration.busyMode = .timeout(10)
            let database = try DatabaseQueue(path: path, configuration: configuration)
            defer { try? database.close() }
            return try await database.read { db in
                try Int.fetchAll(
                    db,
                    sql: "SELECT book FROM identifiers WHERE type = 'url' AND val = ? COLLATE BINARY ORDER BY book",
                    arguments: [url])
            }
        case .server(let base, let libraryID):
            let server = ContentServerClient(base: base, libraryID: libraryID, credentials: credentials, timeout: 30)
            let library = libraryID.isEmpty ? [] : [libraryID]
            struct Found: Decodable { let book_ids: [Int] }
            let found: Found = try await server.getJSON(
                ["ajax", "search"] + library, query: ["query": Self.searchExpression(forURL: url), "num": "100"])
            guard !found.book_ids.isEmpty else { return [] }
            // calibre's `=` ignores case: keep only the books whose identifier is exactly the URL.
            struct Book: Decodable { let identifiers: [String: String]? }
            let books: [String: Book?] = try await server.getJSON(
                ["ajax", "books"] + library,
                query: ["ids": found.book_ids.map(String.init).joined(separator: ","), "category_urls": "false"])
            return found.book_ids.filter { id in books["\(id)"]??.identifiers?["url"] == url }.sorted()
        }
    }
}

public struct CalibreError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
