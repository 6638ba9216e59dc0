import Foundation

/// An email as the ingester needs it: who sent it, and its text parts decoded to strings.
///
/// Reads the MIME structure (nested multiparts, quoted-printable and base64 transfer
/// encodings, charsets, folded headers, RFC 2047 encoded words in the subject); attachments
/// that are not text are skipped.
public struct MailMessage: Sendable {
    public struct Part: Sendable {
        public let contentType: String
        public let text: String

        public var isHTML: Bool { contentType == "text/html" }
    }

    public let headers: [String: String]
    public let parts: [Part]

    /// The sender's address, lower-cased (`From: Name <a@b.c>` gives `a@b.c`).
    public var sender: String? {
        guard let from = headers["from"] else { return nil }
        if let open = from.lastIndex(of: "<"), let close = from.lastIndex(of: ">"), open < close {
            return from[from.index(after: open)..<close].trimmingCharacters(in: .whitespaces).lowercased()
        }
        return from.split(separator: " ").first { $0.contains("@") }.map { $0.lowercased() }
    }

    public var subject: String { Self.decodeEncodedWords(headers["subject"] ?? "") }

    public init(_ raw: Data) {
        let (headers, body) = Self.split(raw)
        self.headers = headers
        var parts: [Part] = []
        Self.collect(headers: headers, body: body, into: &parts, depth: 0)
        self.parts = parts
    }

    // MARK: Structure

    /// Headers (names lower-cased, folded lines joined) and the body after the blank line.
    static func split(_ raw: Data) -> ([String: String], Data) {
        let bytes = [UInt8](raw)
        var end = bytes.count
        var bodyStart = bytes.count
        var index = 0
        while index < bytes.count {
            if bytes[index] == 0x0A {
                // "\n\n" or "\n\r\n" ends the headers.
                if index + 1 < bytes.count, bytes[index + 1] == 0x0A {
                    end = index
                    bodyStart = index + 2
                    break
                }
                if index + 2 < bytes.count, bytes[index + 1] == 0x0D, bytes[index + 2] == 0x0A {
                    end = index
                    bodyStart = index + 3
                    break
                }
            }
            index += 1
        }
        let headerText = String(decoding: bytes[0..<end], as: UTF8.self)
        var headers: [String: String] = [:]
        // A header's folded lines are collected, then joined once: appending to the value line by
        // line would copy it again for each of (possibly) thousands of lines.
        var current: (name: String, pieces: [String])?
        func finish() {
            if let (name, pieces) = current, headers[name] == nil { headers[name] = pieces.joined(separator: " ") }
        }
        for rawLine in headerText.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            let line = String(rawLine)
            if line.first == " " || line.first == "\t", current != nil {
                current?.pieces.append(line.trimmingCharacters(in: .whitespaces))
                continue
            }
            finish()
            guard let colon = line.firstIndex(of: ":") else {
                current = nil
                continue
            }
            current = (
                line[..<colon].trimmingCharacters(in: .whitespaces).lowercased(),
                [line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)]
            )
        }
        finish()
        return (headers, Data(bytes[min(bodyStart, bytes.count)...]))
    }

    static func collect(headers: [String: String], body: Data, into parts: inout [Part], depth: Int) {
        let (type, parameters) = parseContentType(headers["content-type"] ?? "text/plain")
        // RFC 2046 boundaries are 1 to 70 characters; a longer one is not a multipart's.
        if type.hasPrefix("multipart/"), let boundary = parameters["boundary"], (1...200).contains(boundary.utf8.count),
            depth < 10
        {
            for section in splitMultipart(body, boundary: boundary) {
                let (partHeaders, partBody) = split(section)
                collect(headers: partHeaders, body: partBody, into: &parts, depth: depth + 1)
            }
            return
        }
        if type == "message/rfc822", depth < 10 {
            // A forwarded message as an attachment: its text counts too.
            let (innerHeaders, innerBody) = split(body)
            collect(headers: innerHeaders, body: innerBody, into: &parts, depth: depth + 1)
            return
        }
        guard type == "text/plain" || type == "text/html" else { return }
        let encoding = (headers["content-transfer-encoding"] ?? "7bit").lowercased()
        let decoded: Data =
            switch encoding {
            case "quoted-printable": decodeQuotedPrintable(body)
            case "base64":
                Data(base64Encoded: String(decoding: body, as: UTF8.self), options: .ignoreUnknownCharacters) ?? body
            default: body
            }
        parts.append(Part(contentType: type, text: decodeCharset(decoded, charset: parameters["charset"])))
    }

    static func parseContentType(_ value: String) -> (String, [String: String]) {
        let pieces = value.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        let type = pieces.first?.lowercased() ?? "text/plain"
        var parameters: [String: String] = [:]
        for piece in pieces.dropFirst() {
            guard let equals = piece.firstIndex(of: "=") else { continue }
            var value = piece[piece.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 {
                value = String(value.dropFirst().dropLast())
            }
            parameters[piece[..<equals].trimmingCharacters(in: .whitespaces).lowercased()] = value
        }
        return (type, parameters)
    }

    static func splitMultipart(_ body: Data, boundary: String) -> [Data] {
        let text = [UInt8](body)
        let delimiter = [UInt8](("--" + boundary).utf8)
        var sections: [Data] = []
        var starts: [Int] = []
        var index = 0
        // Delimiters start a line.
        while index + delimiter.count <= text.count {
            let atLineStart = index == 0 || text[index - 1] == 0x0A
            if atLineStart, text[index..<(index + delimiter.count)].elementsEqual(delimiter) {
                starts.append(index)
                index += delimiter.count
                continue
            }
            index += 1
        }
        for (position, start) in starts.enumerated() {
            var contentStart = start + delimiter.count
            // "--boundary--" closes the multipart.
            if contentStart + 1 < text.count, text[contentStart] == 0x2D, text[contentStart + 1] == 0x2D { break }
            while contentStart < text.count, text[contentStart] != 0x0A { contentStart += 1 }
            contentStart += 1
            var contentEnd = position + 1 < starts.count ? starts[position + 1] : text.count
            // The line break before the next delimiter belongs to the delimiter.
            if contentEnd > contentStart, text[contentEnd - 1] == 0x0A { contentEnd -= 1 }
            if contentEnd > contentStart, text[contentEnd - 1] == 0x0D { contentEnd -= 1 }
            if contentStart < contentEnd { sections.append(Data(text[contentStart..<contentEnd])) }
        }
        return sections
    }

    // MARK: Decoding

    static func decodeQuotedPrintable(_ data: Data) -> Data {
        let bytes = [UInt8](data)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case 0x30...0x39: byte - 0x30
            case 0x41...0x46: byte - 0x41 + 10
            case 0x61...0x66: byte - 0x61 + 10
            default: nil
            }
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "=") {
                // Soft line break: "=\r\n" or "=\n" joins the lines (how long URLs get wrapped).
                if index + 1 < bytes.count, bytes[index + 1] == 0x0A {
                    index += 2
                    continue
                }
                if index + 2 < bytes.count, bytes[index + 1] == 0x0D, bytes[index + 2] == 0x0A {
                    index += 3
                    continue
                }
                if index + 2 < bytes.count, let high = hex(bytes[index + 1]), let low = hex(bytes[index + 2]) {
                    output.append(high << 4 | low)
                    index += 3
                    continue
                }
            }
            output.append(byte)
            index += 1
        }
        return Data(output)
    }

    static func decodeCharset(_ data: Data, charset: String?) -> String {
        switch charset?.lowercased() {
        case "iso-8859-1", "latin1", "latin-1":
            return String(data: data, encoding: .isoLatin1) ?? String(decoding: data, as: UTF8.self)
        case "windows-1252", "cp1252":
            return String(data: data, encoding: .windowsCP1252) ?? String(decoding: data, as: UTF8.self)
        case "us-ascii", "ascii":
            return String(data: data, encoding: .ascii) ?? String(decoding: data, as: UTF8.self)
        case "utf-16":
            return String(data: data, encoding: .utf16) ?? String(decoding: data, as: UTF8.self)
        default:
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// `=?utf-8?Q?...?=` and `=?utf-8?B?...?=` words of a header, decoded in one forward pass
    /// (replacing each word in place would copy the header once per word).
    static func decodeEncodedWords(_ value: String) -> String {
        guard value.contains("=?"), let regex = try? NSRegularExpression(pattern: #"=\?([^?]+)\?([QqBb])\?([^?]*)\?="#)
        else { return value }
        var result = ""
        var copiedUpTo = value.startIndex
        for match in regex.matches(in: value, range: NSRange(value.startIndex..., in: value)) {
            guard let whole = Range(match.range, in: value), let charsetRange = Range(match.range(at: 1), in: value),
                let kindRange = Range(match.range(at: 2), in: value),
                let textRange = Range(match.range(at: 3), in: value)
            else { continue }
            let text = String(value[textRange])
            let data: Data? =
                value[kindRange].lowercased() == "b"
                ? Data(base64Encoded: text)
                : decodeQuotedPrintable(Data(text.replacingOccurrences(of: "_", with: " ").utf8))
            guard let data else { continue }
            result += value[copiedUpTo..<whole.lowerBound]
            result += decodeCharset(data, charset: String(value[charsetRange]))
            copiedUpTo = whole.upperBound
        }
        result += value[copiedUpTo...]
        return result
    }
}
