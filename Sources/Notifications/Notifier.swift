import Synchronization

/// Tells the user what happened to a story. Never fails the task: a notification that can't be
/// sent is the notifier's to log.
public protocol Notifier: Sendable {
    /// Sends; returns whether it was delivered.
    @discardableResult
    func notify(title: String, body: String) async -> Bool
}

extension AppriseNotifier: Notifier {}

/// A ``Notifier`` that keeps what it was asked to send, for tests: `"title: body"` each.
public final class RecordingNotifier: Notifier {
    private let messages = Mutex<[String]>([])

    public init() {}

    public var sent: [String] { messages.withLock { $0 } }

    public func notify(title: String, body: String) async -> Bool {
        messages.withLock { $0.append("\(title): \(body)") }
        return true
    }
}
