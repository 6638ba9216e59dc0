import ExternalTools
import Foundation

/// calibre's `ebook-meta`: an EPUB's metadata as an OPF file, for `calibredb set_metadata`.
public struct EbookMeta: Sendable {
    let runner = ToolRunner(environment: ["QTWEBENGINE_DISABLE_SANDBOX": "1"])

    public init() {}

    public func writeOPF(of epub: URL, to opf: URL, in directory: URL) async throws {
        let result = try await runner.run(
            "ebook-meta", [epub.path, "--to-opf=\(opf.path)"], in: directory, timeout: .seconds(120))
        guard result.succeeded, FileManager.default.fileExists(atPath: opf.path) else {
            throw CalibreError("ebook-meta could not read \(epub.lastPathComponent): \(result.tail)")
        }
    }

    /// The `dc:subject` entries of an OPF: the tags.
    public static func tags(inOPF opf: URL) throws -> [String] {
        let text = try String(contentsOf: opf, encoding: .utf8)
        let regex = try NSRegularExpression(pattern: #"<dc:subject[^>]*>([^<]*)</dc:subject>"#)
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
            Range(match.range(at: 1), in: text).map { unescape(String(text[$0])) }
        }
    }

    static func unescape(_ text: String) -> String {
        text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
