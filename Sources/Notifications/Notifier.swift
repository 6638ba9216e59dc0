/// Tells the user what happened to a story. Never fails the task: a notification that can't be
/// sent is the notifier's to log.
public protocol Notifier: Sendable {
    /// Sends; returns whether it was delivered.
    @discardableResult
    func notify(title: String, body: String) async -> Bool
}

extension AppriseNotifier: Notifier {}
