import Foundation
import GRDB

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Finds the book whose URL identifier is exactly a story URL, without a calibre process.
///
/// Exact, because calibre's `identifiers:url:` search without `=` is a substring match
/// (`?sid=1` finds `?sid=10`'s book) and the wrong book would be overwritten. A folder library
/// is read from its `metadata.db` (read-only; calibre itself may be writing); a Content Server is
/// asked through its JSON API.
public struct BookLookup: Sendable {
    public let location: CalibreLocation
    public let credentials: CalibreCredentials?

    public init(location: CalibreLocation, credentials: CalibreCredentials? = nil) {
        self.location = location
        self.credentials = credentials
    }

    /// The ids of the books with this exact URL identifier, lowest first (normally one, or none).
    public func books(withURL url: String) async throws -> [Int] {
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
                    db, sql: "SELECT book FROM identifiers WHERE type = 'url' AND val = ? ORDER BY book",
                    arguments: [url])
            }
        case .server(let base, let libraryID):
            var components = URLComponents(
                url: base.appendingPathComponent("ajax/search/\(libraryID)"), resolvingAgainstBaseURL: false)!
            components.queryItems = [
                URLQueryItem(name: "query", value: "identifiers:\"url:=\(url)\""),
                URLQueryItem(name: "num", value: "100"),
            ]
            var request = URLRequest(url: components.url!, timeoutInterval: 30)
            if let credentials {
                let token = Data("\(credentials.username):\(credentials.password)".utf8).base64EncodedString()
                request.setValue("Basic \(token)", forHTTPHeaderField: "Authorization")
            }
            let (data, response) = try await URLSession.shared.data(for: request)
            guard let http = response as? HTTPURLResponse, http.statusCode == 200 else {
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                throw CalibreError("the Content Server answered HTTP \(status) to a search at \(base)")
            }
            struct Answer: Decodable { let book_ids: [Int] }
            return try JSONDecoder().decode(Answer.self, from: data).book_ids.sorted()
        }
    }
}

public struct CalibreError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
