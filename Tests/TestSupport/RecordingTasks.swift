/// How a test tells the test worker (Tests/TestWorker) how long a task takes: in the task's
/// `submitted_by`, the one field the coordinator passes on as it came (it derives the site and
/// the canonical URL from the URL, so a URL cannot carry it).
public enum RecordingTasks {
    public static func submitter(milliseconds: Int) -> String { "test ms=\(milliseconds)" }

    /// The duration `submitter(milliseconds:)` wrote, if any.
    public static func milliseconds(from submittedBy: String) -> Int? {
        guard let range = submittedBy.range(of: "ms=") else { return nil }
        return Int(submittedBy[range.upperBound...].prefix { $0.isNumber })
    }
}
