import Foundation
import ZIPFoundation

/// The story's own URL, read from the EPUB FanFicFare wrote: the identity the library keys on.
///
/// FanFicFare stores the URL it fetched from (its canonical form, which may differ from the
/// spelling a task carried) as `<dc:identifier opf:scheme="URL">` and `<dc:source>` in the
/// package document; calibre takes the first as the book's `url` identifier. The EPUB comes from
/// a site, so every read is bounded.
public enum StoryEPUB {
    /// Why an EPUB names no story.
    public struct Unreadable: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// The package document is a few kilobytes; anything near this is not one.
    static let maximumDocumentBytes = 4 << 20
    /// A story URL longer than this is not believed.
    static let maximumURLLength = 2048

    /// The URL the EPUB says the story came from.
    public static func sourceURL(of epub: URL) throws(Unreadable) -> String {
        try metadata(of: epub).sourceURL
    }

    /// What the EPUB's package document says of the story: where it came from (required) and its
    /// title (at most ``maximumTitleLength`` characters, when present).
    public static func metadata(of epub: URL) throws(Unreadable) -> (sourceURL: String, title: String?) {
        let archive: Archive
        do {
            archive = try Archive(url: epub, accessMode: .read)
        } catch {
            throw Unreadable(description: "\(epub.lastPathComponent) is not a readable EPUB: \(error)")
        }
        guard let container = try read("META-INF/container.xml", in: archive),
            let rootfile = firstMatch(#"<rootfile\b[^>]*\bfull-path\s*=\s*["']([^"']+)["']"#, in: container)
        else {
            throw Unreadable(description: "\(epub.lastPathComponent) has no META-INF/container.xml naming its package")
        }
        guard let package = try read(unescape(rootfile), in: archive) else {
            throw Unreadable(description: "\(epub.lastPathComponent) lacks its package document \(rootfile)")
        }
        guard let url = sourceURL(inPackage: package) else {
            throw Unreadable(description: "\(epub.lastPathComponent) names no source URL in its metadata")
        }
        return (url, title(inPackage: package))
    }

    /// A title longer than this is cut (it only names the story in events and pages).
    static let maximumTitleLength = 500

    /// `dc:title`, unescaped, its white space collapsed, cut to ``maximumTitleLength``.
    public static func title(inPackage package: String) -> String? {
        guard let raw = firstMatch(#"(?i)<dc:title\b[^>]*>\s*([^<]*?)\s*</dc:title>"#, in: package) else { return nil }
        let title = unescape(raw).split(whereSeparator: \.isWhitespace).joined(separator: " ")
        return title.isEmpty ? nil : String(title.prefix(maximumTitleLength))
    }

    /// `dc:identifier` with scheme URL first (what calibre stores), else `dc:source`; only an
    /// http(s) URL without spaces, of bounded length.
    public static func sourceURL(inPackage package: String) -> String? {
        let candidates = [
            firstMatch(
                #"(?i)<dc:identifier\b[^>]*\bopf:scheme\s*=\s*["']URL["'][^>]*>\s*([^<]*?)\s*</dc:identifier>"#,
                in: package),
            firstMatch(#"(?i)<dc:source\b[^>]*>\s*([^<]*?)\s*</dc:source>"#, in: package),
        ]
        for case let raw? in candidates {
            let url = unescape(raw)
            let lower = url.lowercased()
            if (lower.hasPrefix("http://") || lower.hasPrefix("https://")) && url.count <= maximumURLLength
                && !url.contains(where: \.isWhitespace)
            {
                return url
            }
        }
        return nil
    }

    /// The chapters of an EPUB FanFicFare wrote: its `OEBPS/fileNNNN.xhtml` documents (the title
    /// and log pages are named otherwise). Nil when the file is not a readable EPUB.
    public static func chapterCount(of epub: URL) -> Int? {
        guard let archive = try? Archive(url: epub, accessMode: .read) else { return nil }
        let chapter = try! NSRegularExpression(pattern: #"^OEBPS/file\d+\.xhtml$"#)
        return archive.reduce(0) { count, entry in
            let path = entry.path
            return chapter.firstMatch(in: path, range: NSRange(path.startIndex..., in: path)) == nil ? count : count + 1
        }
    }

    private static func read(_ path: String, in archive: Archive) throws(Unreadable) -> String? {
        guard let entry = archive[path] else { return nil }
        guard entry.uncompressedSize <= UInt64(maximumDocumentBytes) else {
            throw Unreadable(
                description: "\(path) in the EPUB is \(entry.uncompressedSize) bytes: not a story's metadata")
        }
        var data = Data()
        do {
            _ = try archive.extract(entry, skipCRC32: false) { chunk in
                // The header's size may lie: stop at the bound whatever it said.
                guard data.count + chunk.count <= maximumDocumentBytes else { throw CocoaError(.fileReadTooLarge) }
                data.append(chunk)
            }
        } catch {
            throw Unreadable(description: "\(path) in the EPUB cannot be read: \(error)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    static func firstMatch(_ pattern: String, in text: String) -> String? {
        guard let regex = try? NSRegularExpression(pattern: pattern),
            let match = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
            let range = Range(match.range(at: 1), in: text)
        else { return nil }
        return String(text[range])
    }

    /// XML's predefined entities and numeric references.
    static func unescape(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var result = text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
        let numeric = try! NSRegularExpression(pattern: "&#(x?)([0-9A-Fa-f]{1,6});")
        for match in numeric.matches(in: result, range: NSRange(result.startIndex..., in: result)).reversed() {
            guard let whole = Range(match.range, in: result), let digits = Range(match.range(at: 2), in: result),
                let hex = Range(match.range(at: 1), in: result)
            else { continue }
            let value = UInt32(result[digits], radix: result[hex].isEmpty ? 10 : 16)
            if let value, let scalar = Unicode.Scalar(value) { result.replaceSubrange(whole, with: String(scalar)) }
        }
        return result.replacingOccurrences(of: "&amp;", with: "&")
    }
}
