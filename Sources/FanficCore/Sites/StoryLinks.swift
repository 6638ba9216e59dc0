import Foundation

/// Finds story URLs in text (an email's plain or HTML part, a file, a command line) and turns
/// them into stories: site key and canonical URL, each story once, in order of appearance.
/// When lists are asked for, a page of a known site that is not a story (a series, author or
/// collection page) is found too, as a list for a worker to expand (``SiteRules/listPage(_:)``).
public struct StoryLinks: Sendable {
    /// One input that is a story, or a list page (its URL in `story.canonicalURL`).
    public struct Found: Sendable, Hashable {
        public let input: String
        public let story: SiteRules.Story
        public var isList = false
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

    /// What became of one input, as `fanfic submit --json` and the dashboard's `POST /api/submit`
    /// answer it: `status` is queued (or `story` when nothing was published), duplicate or refused.
    public struct Answer: Codable, Sendable, Hashable {
        public let input: String
        public let status: String
        public let site: String?
        public let url: String?
        public let reason: String?
        /// True for a list page, which a worker expands into its stories; absent otherwise.
        public var list: Bool?
    }

    /// One answer per input: the stories (`queued` when they were published, `story` when not),
    /// then the duplicates, then the refusals.
    public func answers(published: Bool) -> [Answer] {
        stories.map {
            Answer(
                input: $0.input, status: published ? "queued" : $0.isList ? "list" : "story", site: $0.story.site,
                url: $0.story.canonicalURL, reason: nil, list: $0.isList ? true : nil)
        }
            + duplicates.map {
                Answer(
                    input: $0.input, status: "duplicate", site: $0.story.site, url: $0.story.canonicalURL,
                    reason: "the same story as an earlier input", list: $0.isList ? true : nil)
            }
            + refused.map { Answer(input: $0.input, status: "refused", site: nil, url: nil, reason: $0.reason) }
    }

    /// Every `http(s)://` link in plain text or HTML; `lists`: list pages too.
    public static func extract(text: String, html: Bool = false, lists: Bool = false) -> StoryLinks {
        var links = StoryLinks()
        for candidate in candidates(in: text, html: html) {
            // A link joined with the next line is only believed when that makes it a story.
            if let joined = candidate.joined, case .success = SiteRules.bundled.resolve(joined) {
                links.add(joined)
            } else {
                links.add(candidate.url, lists: lists)
            }
        }
        return links
    }

    /// Each argument is meant as one URL (the command line, a file's lines); `lists`: list pages too.
    public static func resolve(inputs: [String], lists: Bool = false) -> StoryLinks {
        var links = StoryLinks()
        for input in inputs {
            let trimmed = input.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            links.add(trimmed, lists: lists)
        }
        return links
    }

    public mutating func add(_ input: String, rules: SiteRules = .bundled, lists: Bool = false) {
        switch rules.resolve(input) {
        case .success(let story):
            append(Found(input: input, story: story))
        case .failure(let refusal):
            if lists, let page = rules.listPage(input) {
                append(
                    Found(input: input, story: SiteRules.Story(site: page.site, canonicalURL: page.url), isList: true))
            } else {
                refused.append(Refused(input: input, reason: refusal.description))
            }
        }
    }

    private mutating func append(_ found: Found) {
        if stories.contains(where: { $0.story.canonicalURL == found.story.canonicalURL }) {
            duplicates.append(found)
        } else {
            stories.append(found)
        }
    }

    public mutating func merge(_ other: StoryLinks) {
        for found in other.stories { append(found) }
        duplicates += other.duplicates
        refused += other.refused
    }

    // MARK: Finding links

    struct Candidate: Equatable {
        var url: String
        /// The link with the start of the next line appended, when it may have been wrapped.
        var joined: String?
    }

    /// Every link of `text`, in order. Hand-written scans rather than regular expressions, each
    /// linear in the text: a mail is input from anyone, and a backtracking pattern over 1 MB of
    /// `<` or `href="` would take minutes.
    static func candidates(in text: String, html: Bool) -> [Candidate] {
        var found: [Candidate] = []
        if html {
            // href values first (the visible text may be shortened), then the visible text.
            let scalars = Array(text.unicodeScalars)
            found += hrefValues(in: scalars).map(unescapeHTML).filter { $0.lowercased().hasPrefix("http") }
                .map { Candidate(url: $0) }
            found += candidates(in: unescapeHTML(visibleText(of: scalars)), html: false)
            return found
        }
        // IMAP delivers CRLF line ends; a wrapped link is judged on lines without them.
        let lines = text.replacingOccurrences(of: "\r\n", with: "\n").components(separatedBy: .newlines)
        for (index, line) in lines.enumerated() {
            let scalars = Array(line.unicodeScalars)
            let links = urlRanges(in: scalars)
            for (position, range) in links.enumerated() {
                let match = string(scalars[range])
                var candidate = Candidate(url: trimPunctuation(match))
                // A link wrapped across lines by a mail program: the line ends in the link and
                // the next line goes on without a space.
                // Mail programs wrap at 72 to 78 columns; a short line ended by a link, or a next
                // line that starts with a label ("Author:"), is not a wrap.
                if position == links.count - 1, range.upperBound == scalars.count, line.count >= 70,
                    index + 1 < lines.count, let continuation = urlContinuation(lines[index + 1])
                {
                    candidate.joined = trimPunctuation(match + continuation)
                }
                found.append(candidate)
            }
        }
        return found
    }

    private static func string(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    /// Whether `scalars` holds `word` at `index`, ASCII letters in any case when `anyCase`.
    private static func has(_ word: String, at index: Int, in scalars: [Unicode.Scalar], anyCase: Bool = false) -> Bool
    {
        var position = index
        for expected in word.unicodeScalars {
            guard position < scalars.count else { return false }
            let actual = scalars[position]
            let same = anyCase ? asciiLowercase(actual) == asciiLowercase(expected) : actual == expected
            guard same else { return false }
            position += 1
        }
        return true
    }

    private static func asciiLowercase(_ scalar: Unicode.Scalar) -> UInt32 {
        (65...90).contains(scalar.value) ? scalar.value + 32 : scalar.value
    }

    /// The ranges of `https?://` followed by at least one character that is not a space, a quote,
    /// `<`, `>`, a bracket or a parenthesis.
    static func urlRanges(in scalars: [Unicode.Scalar]) -> [Range<Int>] {
        func ends(_ scalar: Unicode.Scalar) -> Bool {
            scalar.properties.isWhitespace || "<>\"'[]()".unicodeScalars.contains(scalar)
        }
        var ranges: [Range<Int>] = []
        var index = 0
        while index < scalars.count {
            if scalars[index] == "h" {
                let scheme =
                    has("https://", at: index, in: scalars) ? 8 : has("http://", at: index, in: scalars) ? 7 : 0
                if scheme > 0 {
                    var end = index + scheme
                    while end < scalars.count, !ends(scalars[end]) { end += 1 }
                    if end > index + scheme {
                        ranges.append(index..<end)
                        index = end
                        continue
                    }
                }
            }
            index += 1
        }
        return ranges
    }

    /// The text with every tag (`<` to the next `>`) replaced by a space. A `<` with no `>` after
    /// it is text; once one is found, every later one is too (no second search to the end).
    static func visibleText(of scalars: [Unicode.Scalar]) -> String {
        var visible = String.UnicodeScalarView()
        var closingAhead = true
        var index = 0
        while index < scalars.count {
            if scalars[index] == "<", closingAhead {
                var end = index + 1
                while end < scalars.count, scalars[end] != ">" { end += 1 }
                if end < scalars.count {
                    visible.append(" ")
                    index = end + 1
                    continue
                }
                closingAhead = false
            }
            visible.append(scalars[index])
            index += 1
        }
        return String(visible)
    }

    /// The values of `href = "..."` or `href='...'` (any case, spaces around `=`), a value ending
    /// at the next quote of either kind. Where a search for a closing quote failed, no quote
    /// follows: later searches from there fail at once.
    static func hrefValues(in scalars: [Unicode.Scalar]) -> [String] {
        func isQuote(_ scalar: Unicode.Scalar) -> Bool { scalar == "\"" || scalar == "'" }
        var values: [String] = []
        var noQuoteFrom = scalars.count
        var index = 0
        while index < scalars.count {
            guard has("href", at: index, in: scalars, anyCase: true) else {
                index += 1
                continue
            }
            var position = index + 4
            while position < scalars.count, scalars[position].properties.isWhitespace { position += 1 }
            guard position < scalars.count, scalars[position] == "=" else {
                index += 1
                continue
            }
            position += 1
            while position < scalars.count, scalars[position].properties.isWhitespace { position += 1 }
            guard position < scalars.count, isQuote(scalars[position]) else {
                index += 1
                continue
            }
            let start = position + 1
            var end = start
            while end < noQuoteFrom, !isQuote(scalars[end]) { end += 1 }
            guard end < noQuoteFrom else {
                noQuoteFrom = min(noQuoteFrom, start)
                index += 1
                continue
            }
            guard end > start else {
                index += 1
                continue
            }
            values.append(string(scalars[start..<end]))
            index = end + 1
        }
        return values
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

    static func unescapeHTML(_ text: String) -> String {
        text.replacingOccurrences(of: "&amp;", with: "&").replacingOccurrences(of: "&#38;", with: "&")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&lt;", with: "<")
            .replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&nbsp;", with: " ")
    }
}
