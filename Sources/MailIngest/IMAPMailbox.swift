import CCurl
import Foundation

/// An IMAP mailbox through libcurl: search the unseen messages, fetch one without marking it
/// seen (`BODY.PEEK[]`), then mark it seen or move it once its tasks are safely published.
///
/// libcurl speaks IMAP, TLS (implicit `imaps://` or STARTTLS) and SASL; we send the few
/// commands we need as custom requests on one handle, which keeps the connection between
/// them. The password is set as a libcurl option, never on a command line. Calls block, so they
/// run on a thread of their own, one at a time.
public final class IMAPMailbox: @unchecked Sendable {
    public struct Settings: Sendable {
        public var host: String
        public var port: Int
        public var username: String
        public var password: String
        public var tls: TLSMode
        /// A CA bundle to trust instead of the system's (a self-signed server).
        public var caFile: String?
        public var timeout: Duration

        public enum TLSMode: String, Sendable {
            case implicit, starttls, none
        }

        public init(
            server: String, username: String, password: String, tls: TLSMode, caFile: String? = nil,
            timeout: Duration = .seconds(30)
        ) {
            var host = server
            var port = tls == .implicit ? 993 : 143
            if let colon = server.lastIndex(of: ":"), let number = Int(server[server.index(after: colon)...]) {
                host = String(server[..<colon])
                port = number
            }
            self.host = host
            self.port = port
            self.username = username
            self.password = password
            self.tls = tls
            self.caFile = caFile
            self.timeout = timeout
        }
    }

    public let settings: Settings
    private let lock = NSLock()
    private var handle: UnsafeMutableRawPointer?

    public init(settings: Settings) {
        self.settings = settings
    }

    deinit {
        if let handle { curl_easy_cleanup(handle) }
    }

    /// UIDs of the folder's unseen messages not marked skipped, oldest first.
    public func unseen(in folder: String) async throws -> [UInt32] {
        let response = try await command("UID SEARCH UNSEEN UNKEYWORD \(skippedKeyword)", folder: folder)
        // Lines end in CRLF, one Character in Swift: split on any newline. Other untagged lines
        // may follow (a new keyword makes Dovecot send FLAGS and PERMANENTFLAGS).
        let line = response.body.split(whereSeparator: \.isNewline).first { $0.hasPrefix("* SEARCH") } ?? ""
        return line.split(separator: " ").dropFirst(2).compactMap {
            UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    /// The whole message, without setting `\Seen`.
    public func fetch(uid: UInt32, in folder: String) async throws -> Data {
        let response = try await command("UID FETCH \(uid) BODY.PEEK[]", folder: folder)
        // libcurl hands the literal of a custom FETCH to the header callback:
        // `* N FETCH (UID u BODY[] {size}\r\n<size bytes>)`.
        let data = response.headers
        guard let marker = data.range(of: Data("BODY[] {".utf8)) else {
            throw IMAPError("message \(uid) in \(folder) was not returned (deleted meanwhile?)")
        }
        guard let close = data[marker.upperBound...].firstIndex(of: UInt8(ascii: "}")),
            let size = Int(String(decoding: data[marker.upperBound..<close], as: UTF8.self))
        else { throw IMAPError("unreadable FETCH response for message \(uid)") }
        var start = close + 1
        if data.count > start, data[start] == UInt8(ascii: "\r") { start += 1 }
        if data.count > start, data[start] == UInt8(ascii: "\n") { start += 1 }
        guard data.count >= start + size else { throw IMAPError("message \(uid) arrived truncated") }
        return data[start..<(start + size)]
    }

    /// The message's size (`RFC822.SIZE`), without fetching it.
    public func size(uid: UInt32, in folder: String) async throws -> Int {
        let response = try await command("UID FETCH \(uid) RFC822.SIZE", folder: folder)
        let text = response.body + String(decoding: response.headers, as: UTF8.self)
        guard let marker = text.range(of: "RFC822.SIZE "),
            let size = Int(text[marker.upperBound...].prefix { $0.isNumber })
        else { throw IMAPError("the size of message \(uid) in \(folder) was not returned (deleted meanwhile?)") }
        return size
    }

    public func markSkipped(uid: UInt32, in folder: String) async throws {
        _ = try await command("UID STORE \(uid) +FLAGS (\(skippedKeyword))", folder: folder)
    }

    public func markSeen(uid: UInt32, in folder: String) async throws {
        _ = try await command("UID STORE \(uid) +FLAGS (\\Seen)", folder: folder)
    }

    /// Marks the message seen and moves it to `target` (created if missing).
    public func move(uid: UInt32, in folder: String, to target: String) async throws {
        _ = try? await command("CREATE \(Self.quoted(target))", folder: nil)
        _ = try await command("UID STORE \(uid) +FLAGS (\\Seen)", folder: folder)
        _ = try await command("UID MOVE \(uid) \(Self.quoted(target))", folder: folder)
    }

    static func quoted(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    // MARK: libcurl

    struct Response {
        var headers = Data()
        var body = ""
    }

    private func command(_ request: String, folder: String?) async throws -> Response {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { [self] in
                continuation.resume(with: Result { try self.perform(request, folder: folder) })
            }
            thread.name = "imap:\(settings.host)"
            thread.start()
        }
    }

    private func perform(_ request: String, folder: String?) throws -> Response {
        lock.lock()
        defer { lock.unlock() }
        if handle == nil { handle = curl_easy_init() }
        guard let handle else { throw IMAPError("libcurl could not start") }
        curl_easy_reset(handle)  // keeps the connection cache: the next call reuses the login

        let scheme = settings.tls == .implicit ? "imaps" : "imap"
        var url = "\(scheme)://\(settings.host):\(settings.port)/"
        if let folder {
            url += folder.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? folder
        }
        let headers = ResponseBuffer()
        let body = ResponseBuffer()
        let headerContext = Unmanaged.passRetained(headers)
        let bodyContext = Unmanaged.passRetained(body)
        defer {
            headerContext.release()
            bodyContext.release()
        }

        var status = CURLE_OK
        func set(_ code: CURLcode) { if status == CURLE_OK { status = code } }
        set(fanfic_curl_setopt_string(handle, CURLOPT_URL, url))
        set(fanfic_curl_setopt_string(handle, CURLOPT_USERNAME, settings.username))
        set(fanfic_curl_setopt_string(handle, CURLOPT_PASSWORD, settings.password))
        set(fanfic_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request))
        set(fanfic_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        let seconds = Int(settings.timeout.components.seconds)
        set(fanfic_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, seconds))
        set(fanfic_curl_setopt_long(handle, CURLOPT_TIMEOUT, seconds * 2))
        if settings.tls == .starttls {
            set(fanfic_curl_setopt_long(handle, CURLOPT_USE_SSL, Int(CURLUSESSL_ALL.rawValue)))
        }
        if let caFile = settings.caFile, !caFile.isEmpty {
            set(fanfic_curl_setopt_string(handle, CURLOPT_CAINFO, caFile))
        }
        set(fanfic_curl_setopt_write_function(handle, appendToBuffer))
        set(fanfic_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, bodyContext.toOpaque()))
        set(fanfic_curl_setopt_header_function(handle, appendToBuffer))
        set(fanfic_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, headerContext.toOpaque()))
        guard status == CURLE_OK else { throw IMAPError("libcurl refused an option: \(Self.describe(status))") }

        let result = curl_easy_perform(handle)
        guard result == CURLE_OK else {
            throw IMAPError(Self.describe(result), code: Int(result.rawValue))
        }
        return Response(headers: headers.data, body: String(decoding: body.data, as: UTF8.self))
    }

    static func describe(_ code: CURLcode) -> String {
        let text = String(cString: curl_easy_strerror(code))
        switch code {
        case CURLE_LOGIN_DENIED: return "login refused (user name or password): \(text)"
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST: return "server unreachable: \(text)"
        case CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CONNECT_ERROR, CURLE_SSL_CACERT_BADFILE:
            return "TLS failed: \(text)"
        default: return text
        }
    }
}

/// Where libcurl's callback appends what arrives (one for the body, one for the "headers",
/// which for IMAP are the server's untagged responses).
final class ResponseBuffer {
    var data = Data()
}

private func appendToBuffer(
    _ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?
) -> Int {
    guard let data, let context else { return 0 }
    Unmanaged<ResponseBuffer>.fromOpaque(context).takeUnretainedValue().data.append(
        UnsafeRawPointer(data).assumingMemoryBound(to: UInt8.self), count: size * count)
    return size * count
}

public struct IMAPError: Error, Sendable, CustomStringConvertible {
    public let description: String
    /// libcurl's error code, when it was libcurl that failed.
    public let code: Int?

    init(_ description: String, code: Int? = nil) {
        self.description = description
        self.code = code
    }
}
