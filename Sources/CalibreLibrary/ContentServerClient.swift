import Foundation
import MessagePack

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A calibre Content Server over HTTP: the library calls the worker makes, sent to the running
/// server instead of starting `calibredb` (a second of Python start-up each) for every one.
///
/// It speaks the server's own endpoints: `/cdb/add-book` (the server reads the new book's
/// metadata from the EPUB, as `calibredb add` does), `/cdb/delete-books`, `/ajax/…` for searches
/// and a book's fields, and `/cdb/cmd/NAME/VERSION` (what `calibredb --with-library http://…`
/// itself sends, in MessagePack) for a format's bytes, adding a format and setting fields. The
/// credentials go as HTTP basic authentication (compose's calibre service asks for it), never in
/// a URL or a log.
public struct ContentServerClient: Sendable {
    public let base: URL
    public let libraryID: String
    public let credentials: CalibreCredentials?
    /// How long one request may take (a big EPUB on a slow disk).
    public var timeout: TimeInterval

    public init(base: URL, libraryID: String, credentials: CalibreCredentials?, timeout: TimeInterval = 300) {
        self.base = base
        self.libraryID = libraryID
        self.credentials = credentials
        self.timeout = timeout
    }

    /// Adds an EPUB as a new book (duplicates allowed: the URL lookup decided it is new).
    public func addBook(_ epub: URL) async throws -> Int {
        struct Added: Decodable {
            let book_id: Int?
        }
        let added: Added = try await json(
            try request(
                post: ["cdb", "add-book", "fanfic", "y", "story.epub"] + librarySegment,
                body: try Data(contentsOf: epub)))
        guard let id = added.book_id else {
            throw CalibreError("the Content Server added no book for \(epub.lastPathComponent)")
        }
        return id
    }

    /// Removes books (to calibre's trash, as `calibredb remove` does).
    public func removeBooks(_ ids: [Int]) async throws {
        guard !ids.isEmpty else { return }
        _ = try await send(
            try request(
                post: ["cdb", "delete-books", ids.map(String.init).joined(separator: ",")] + librarySegment,
                body: Data()))
    }

    /// Adds `file` as the book's `format` (e.g. `EPUB`), replacing one it has unless `replace` is
    /// false; answers whether the book now has this file.
    @discardableResult
    public func addFormat(of book: Int, from file: URL, format: String, replace: Bool) async throws -> Bool {
        let data = try Data(contentsOf: file)
        let answer = try await command(
            "add_format",
            [
                .int(Int64(book)), .array([.string(file.lastPathComponent), .binary(data)]), .string(format),
                .bool(replace),
            ])
        return answer == .bool(true)
    }

    /// The bytes of the book's `format` as they are stored (no metadata written into them).
    public func format(_ format: String, of book: Int) async throws -> Data {
        switch try await command("export", [.string("fmt"), .int(Int64(book)), .string(format), .null]) {
        case .binary(let data): return data
        case .null: throw CalibreError("book \(book) has no \(format) to update")
        case let other:
            throw CalibreError("the Content Server answered \(Self.kind(other)) for book \(book)'s \(format)")
        }
    }

    /// The book's tags.
    public func tags(of book: Int) async throws -> [String] {
        struct Book: Decodable {
            let tags: [String]?
        }
        let found: Book = try await json(try request(get: ["ajax", "book", "\(book)"] + librarySegment))
        return found.tags ?? []
    }

    /// Sets the book's tags. Calibre splits tags on commas, so a comma inside one becomes a semicolon,
    /// as `calibredb set_metadata` gets it.
    public func setTags(of book: Int, to tags: [String]) async throws {
        let tags = tags.map { $0.replacingOccurrences(of: ",", with: ";") }
        let answer = try await command(
            "set_metadata",
            [
                .string("fields"), .int(Int64(book)),
                .array([.array([.string("tags"), .array(tags.map { .string($0) })])]),
            ])
        if answer == .null { throw CalibreError("the Content Server has no book \(book)") }
    }

    /// A GET of JSON from the server's `/ajax` API.
    func getJSON<Answer: Decodable>(_ segments: [String], query: [String: String] = [:]) async throws -> Answer {
        try await json(try request(get: segments, query: query))
    }

    /// Runs one of calibredb's commands in the server, as calibredb itself does over HTTP.
    func command(_ name: String, _ arguments: [MessagePackValue]) async throws -> MessagePackValue {
        var request = try request(
            post: ["cdb", "cmd", name, "0"], query: libraryID.isEmpty ? [:] : ["library_id": libraryID],
            body: MessagePackValue.array(arguments).encoded())
        request.setValue(Self.messagePack, forHTTPHeaderField: "Content-Type")
        request.setValue(Self.messagePack, forHTTPHeaderField: "Accept")
        let answer: MessagePackValue
        do {
            answer = try MessagePackValue.decode(try await send(request))
        } catch let error as MessagePackValue.DecodingError {
            throw CalibreError("the Content Server's answer to \(name) is unreadable: \(error)")
        }
        if case .string(let message)? = answer["err"] { throw CalibreError("calibre \(name): \(message)") }
        guard let result = answer["result"] else {
            throw CalibreError("the Content Server's answer to \(name) has no result")
        }
        return result
    }

    static let messagePack = "application/x-msgpack"

    // MARK: HTTP

    private var librarySegment: [String] { libraryID.isEmpty ? [] : [libraryID] }

    private func request(get segments: [String], query: [String: String] = [:]) throws -> URLRequest {
        try request(segments, query: query, method: "GET", body: nil)
    }

    private func request(post segments: [String], query: [String: String] = [:], body: Data) throws -> URLRequest {
        try request(segments, query: query, method: "POST", body: body)
    }

    private func request(_ segments: [String], query: [String: String], method: String, body: Data?) throws
        -> URLRequest
    {
        // Each segment is escaped whole: a library id with '/', '?' or '#' stays one segment.
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/;?#%")
        let path = try segments.map {
            guard let escaped = $0.addingPercentEncoding(withAllowedCharacters: allowed) else {
                throw CalibreError("cannot put \($0) into a URL")
            }
            return escaped
        }.joined(separator: "/")
        guard var components = URLComponents(url: base, resolvingAgainstBaseURL: false) else {
            throw CalibreError("cannot make a URL of \(base)")
        }
        components.percentEncodedPath += "/" + path
        if !query.isEmpty {
            components.queryItems = query.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) }
            // URLComponents leaves '+' as is, which a server reads as a space.
            let encoded = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
            components.percentEncodedQuery = encoded
        }
        guard let url = components.url else { throw CalibreError("cannot make a URL of \(base) and \(path)") }
        var request = URLRequest(url: url, timeoutInterval: timeout)
        request.httpMethod = method
        request.httpBody = body
        if let credentials {
            let token = Data("\(credentials.username):\(credentials.password)".utf8).base64EncodedString()
            request.setValue("Basic \(token)", forHTTPHeaderField: "Authorization")
        }
        return request
    }

    private func json<Answer: Decodable>(_ request: URLRequest) async throws -> Answer {
        let data = try await send(request)
        do {
            return try JSONDecoder().decode(Answer.self, from: data)
        } catch {
            throw CalibreError("the Content Server's answer to \(Self.described(request)) is unreadable: \(error)")
        }
    }

    /// Sends a request; answers the body of a 200, and throws with the server's reason otherwise.
    private func send(_ request: URLRequest) async throws -> Data {
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw CalibreError(
                "cannot reach the Content Server at \(base) for \(Self.described(request)) (is calibre-server running?): \(error.localizedDescription)"
            )
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 200 else {
            let reason = String(decoding: data.prefix(300), as: UTF8.self).trimmingCharacters(
                in: .whitespacesAndNewlines)
            let hint =
                switch status {
                // Without credentials the server challenges for digest; with basic credentials
                // it refuses them as an "Unsupported authentication method".
                case 401 where Self.challenge(of: response).hasPrefix("digest"),
                    400 where reason.contains("Unsupported authentication method"):
                    " (the server asks for digest authentication, which the worker does not speak:"
                        + " start calibre-server with --auth-mode basic, behind TLS or a VPN)"
                case 401:
                    credentials == nil
                        ? " (the server asks for calibre.username and calibre.password)"
                        : " (check calibre.username and calibre.password)"
                case 403:
                    " (the user may not write: give it write access, or start calibre-server with --enable-local-write)"
                default: ""
                }
            throw CalibreError(
                "the Content Server at \(base) answered HTTP \(status) to \(Self.described(request))\(hint)"
                    + (reason.isEmpty ? "" : ": \(reason)"))
        }
        return data
    }

    /// The authentication scheme a 401 asks for, lowercased (calibre-server's default over plain
    /// HTTP is digest).
    private static func challenge(of response: URLResponse) -> String {
        ((response as? HTTPURLResponse)?.value(forHTTPHeaderField: "WWW-Authenticate") ?? "").lowercased()
    }

    /// The request's method and path, without the query (which may hold a story URL).
    private static func described(_ request: URLRequest) -> String {
        "\(request.httpMethod ?? "GET") \(request.url?.path ?? "")"
    }

    private static func kind(_ value: MessagePackValue) -> String {
        switch value {
        case .null: "nothing"
        case .bool: "a boolean"
        case .int, .double: "a number"
        case .string: "text"
        case .binary: "bytes"
        case .array: "a list"
        case .map: "a map"
        case .ext: "an extension value"
        }
    }
}
