import Foundation

/// Finds story URLs in text (an email's plain or HTML part, a file, a command line) and turns
/// them into stories: site key and canonical URL, each story once, in order of appearance.
public struct StoryLinks: Sendable {
    /// One input that is a story.
    public struct Found: Sendable, Hashable {
        public let input: String
        public let story: SiteRules.Story
    }

    /// One input that is not, and why.
    public struct Refused: Sendable, Hashable {
        public let input: String
        public let reason: String
    }

    public var stories: [Found] = []
    /// Inputs naming a story already found (another spelling of it, or the same link twice).
    public var duplicates: [Found] = []
    public var refused: [Refused] = []

    public init() {}

    /// Every `http(s)://` link in plain text or HTML.
    public static func extract(text: String, html: Bool = false) -> StoryLinks {
        var links = StoryLinks()
        for candidate in candidates(in: text, html: html) {
            // A link joined with the next line is only believed when that makes it a story.
            if let joined = candidate.joined, case .success = SiteRules.bundled.resolve(joined) {
                links.add(joined)
            } else {
                links.add(candidate.url)
            }
        }
        return links
    }

    /// Each argument is meant as one URL (the command line, a file's lines).
    public static func resolve(inputs: [String]) -> StoryLinks {
        var links = StoryLinks()
        for input in inputs {
            let trimmed = input.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            links.add(trimmed)
        }
        return links
    }

    public mutating func add(_ input: String, rules: SiteRules = .bundled) {
        switch rules.resolve(input) {
        case .success(let story):
            let found = Found(input: input, story: story)
            if stories.contains(where: { $0.story.canonicalURL == story.canonicalURL }) {
                duplicates.append(found)
            } else {
                stories.append(found)
            }
        case .failure(let refusal):
            refused.append(Refused(input: input, reason: refusal.description))
        }
    }

    public mutating func merge(_ other: StoryLinks) {
        for found in other.stories {
            if stories.contains(where: { $0.story.canonicalURL == found.story.canonicalURL }) {
                duplicates.append(found)
            } else {
                stories.append(found)
            }
        }
        duplicates += other.duplicates
        refused += other.refused
    }

    // MARK: Finding links

    struct Candidate: Equatable {
        var url: String
        /// The link with the start of the next line appended, when it may have been wrapped.
        var joined: String?
    }

    static func candidates(in text: String, html: Bool) -> [Candidate] {
        var found: [Candidate] = []
        if html {
            // href values first (the visible text may be shortened), then the visible text.
            let hrefs = matches(#"(?i)href\s*=\s*["']([^"']+)["']"#, in: text)
            found += hrefs.map(unescapeHTML).filter { $0.lowercased().hasPrefix("http") }.map { Candidate(url: $0) }
            let visible = text.replacingOccurrences(of: #"<[^>]*>"#, with: " ", options: .regularExpression)
            found += candidates(in: unescapeHTML(visible), html: false)
            return found
        }
        // IMAP delivers CRLF line ends; a wrapped link is judged on lines without them.
        let lines = text.replacingOccurrences(of: "\r\n", with: "\n").components(separatedBy: .newlines)
        let urlPattern = #"https?://[^\s<>"'\]\[)(]+"#
        for (index, line) in lines.enumerated() {
            for match in matches(urlPattern, in: line, group: 0) {
                var candidate = Candidate(url: trimPunctuation(match))
                // A link wrapped across lines by a mail program: the line ends in the link and
                // the next line goes on without a space.
                // Mail programs wrap at 72 to 78 columns; a short line ended by a link, or a next
                // line that starts with a label ("Author:"), is not a wrap.
                if line.hasSuffix(match), line.count >= 70, index + 1 < lines.count,
                    let continuation = urlContinuation(lines[index + 1])
                {
                    candidate.joined = trimPunctuation(match + continuation)
                }
                found.append(candidate)
            }
        }
        return found
    }

    /// The start of `line` when it can only be the rest of a wrapped URL: URL characters from the
    /// first column up to the end of the line or a space, not a list item's marker (`3) `, `- `,
    /// `* `, `a. `) and not a label (`Author:`). Quoted-printable soft line breaks never get here:
    /// the decoder has joined them.
    static func urlContinuation(_ line: String) -> String? {
        guard line.range(of: listItem, options: .regularExpression) == nil,
            let range = line.range(of: #"^[A-Za-z0-9/?=&%._~+#-]+"#, options: .regularExpression)
        else { return nil }
        let rest = line[range.upperBound...]
        let continuation = String(line[range])
        guard !continuation.contains("://"), rest.isEmpty || rest.first!.isWhitespace || ",;!?".contains(rest.first!)
        else { return nil }
        return continuation
    }

    /// A list item's marker at the start of a line: `3) `, `(3) `, `3. `, `a) `, `- `, `* `, `+ `, `• `.
    static let listItem = #"^\s*(\(?[0-9]{1,3}[.)]|\(?[A-Za-z][.)]|[-*+•])\s"#

    static func trimPunctuation(_ url: String) -> String {
        var url = url
        while let last = url.last, ".,;:!?>".contains(last) { url.removeLast() }
        return url
    }

    static func matches(_ pattern: String, in text: String, group: Int = 1) -> [String] {
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return [] }
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap {
            Range($0.range(at: group), in: text).map { String(text[$0]) }
        }
    }

    static func unescapeHTML(_ text: String) -> String {
        text.replacingOccurrences(of: "&amp;", with: "&").replacingOccurrences(of: "&#38;", with: "&")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&lt;", with: "<")
            .replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&nbsp;", with: " ")
    }
}
