import Foundation

/// Reads FanFicFare's outcome from its exit status and output.
///
/// FanFicFare reports most failures on stdout with exit status 0, and warnings (the "more
/// recently than Story" skip among them) through its logger on stderr, so the text decides and
/// the order of the checks matters: a permanent cause wins over a generic traceback, a skip
/// wins over the "Do update" line printed before it. The samples in
/// Tests/DownloadTests/Fixtures are real output of FanFicFare 4.62's offline test sites.
public enum OutcomeClassifier {
    public static func classify(exitStatus: Int32, stdout: String, stderr: String) -> FanFicFareOutcome {
        let output = stdout + "\n" + stderr

        // Permanent causes first: they may come with a traceback and a non-zero exit.
        if output.contains("Story does not exist:") { return .storyDoesNotExist }
        if output.contains("Adult check required") || output.contains("Story requires confirmation of adult status") {
            return .adultCheckRequired
        }
        if let line = firstLine(
            in: output, containing: ["Login Failed", "password required", "Timed One Time Password"])
        {
            return .loginRequired(line)
        }
        if let line = firstLine(in: output, containing: ["Bad Story URL:"]) { return .invalidURL(line) }
        if output.contains("Unknown Site(") { return .unknownSite }
        if output.contains("doesn't contain any recognizable chapters") { return .unrecognizedEPUB }

        // Updates that wrote nothing, and why.
        if output.contains("more recently than Story(") { return .fileNewerThanStory }
        if let numbers = captures(#"contains (\d+) chapters, more than source: (\d+)\."#, in: output) {
            return .moreChaptersThanSource(epub: numbers[0], source: numbers[1])
        }

        // Failures: the site's refusal of everyone first, then this story's.
        if let block = SiteBlock.find(in: output) { return .siteBlocked(block) }
        if let numbers = captures(#"!!!! (\d+) chapters errored downloading"#, in: output) {
            return .chapterErrors(count: numbers[0])
        }
        if exitStatus != 0 || output.contains("Traceback (most recent call last)")
            || output.contains("HTTP Error in FFF")
        {
            return .failed(lastMeaningfulLine(of: output) ?? "fanficfare exited with status \(exitStatus)")
        }

        // Successes.
        if let numbers = captures(#"Do update - epub\((\d+)\) vs url\((\d+)\)"#, in: output) {
            return .updated(fromChapters: numbers[0], toChapters: numbers[1])
        }
        if let numbers = captures(#"already contains (\d+) chapters\."#, in: output) {
            return .upToDate(chapters: numbers[0])
        }
        return .downloaded
    }

    private static func firstLine(in text: String, containing needles: [String]) -> String? {
        text.split(separator: "\n").first { line in needles.contains { line.contains($0) } }
            .map { String($0).trimmingCharacters(in: .whitespaces) }
    }

    private static func captures(_ pattern: String, in text: String) -> [Int]? {
        guard let regex = try? NSRegularExpression(pattern: pattern),
            let match = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text))
        else { return nil }
        return (1..<match.numberOfRanges).compactMap { index in
            Range(match.range(at: index), in: text).flatMap { Int(text[$0]) }
        }
    }

    /// The exception line at the end of a traceback, or the last line that is not a log line.
    private static func lastMeaningfulLine(of text: String) -> String? {
        text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .last { !$0.isEmpty && !$0.hasPrefix("FFF: ") }
    }
}
