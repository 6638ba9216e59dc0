import Foundation
import Synchronization

/// The mailbox operations the ingester uses: an IMAP server (``IMAPMailbox``) or, in unit
/// tests, ``InMemoryMailbox``.
public protocol Mailbox: Sendable {
    /// The UIDs of the unseen messages of a folder, oldest first.
    func unseen(in folder: String) async throws -> [UInt32]
    /// A message's raw bytes (RFC 5322).
    func fetch(uid: UInt32, in folder: String) async throws -> Data
    func markSeen(uid: UInt32, in folder: String) async throws
    func move(uid: UInt32, in folder: String, to target: String) async throws
}

extension IMAPMailbox: Mailbox {}

/// ``Mailbox`` in memory: folders of messages, each seen or not.
public final class InMemoryMailbox: Mailbox {
    public struct Message: Sendable {
        public var uid: UInt32
        public var raw: Data
        public var seen = false
    }

    private let folders = Mutex<[String: [Message]]>([:])
    private let nextUID = Mutex<UInt32>(1)
    /// When set, every operation fails with it, as an unreachable server does.
    private let failure = Mutex<IMAPError?>(nil)

    public init() {}

    /// Delivers a message unseen; returns its UID.
    @discardableResult
    public func deliver(_ raw: String, to folder: String = "INBOX") -> UInt32 {
        let uid = nextUID.withLock { next in
            defer { next += 1 }
            return next
        }
        folders.withLock { $0[folder, default: []].append(Message(uid: uid, raw: Data(raw.utf8))) }
        return uid
    }

    /// The messages of a folder as they are now.
    public func messages(in folder: String) -> [Message] {
        folders.withLock { $0[folder] ?? [] }
    }

    /// Makes the mailbox unreachable (or reachable again with `nil`).
    public func fail(with description: String?) {
        failure.withLock { $0 = description.map { IMAPError($0) } }
    }

    public func unseen(in folder: String) async throws -> [UInt32] {
        try check()
        return folders.withLock { ($0[folder] ?? []).filter { !$0.seen }.map(\.uid) }
    }

    public func fetch(uid: UInt32, in folder: String) async throws -> Data {
        try check()
        guard let message = folders.withLock({ $0[folder]?.first { $0.uid == uid } }) else {
            throw IMAPError("no message \(uid) in \(folder)")
        }
        return message.raw
    }

    public func markSeen(uid: UInt32, in folder: String) async throws {
        try check()
        folders.withLock { folders in
            guard let index = folders[folder]?.firstIndex(where: { $0.uid == uid }) else { return }
            folders[folder]![index].seen = true
        }
    }

    public func move(uid: UInt32, in folder: String, to target: String) async throws {
        try check()
        folders.withLock { folders in
            guard let index = folders[folder]?.firstIndex(where: { $0.uid == uid }) else { return }
            var message = folders[folder]!.remove(at: index)
            message.seen = true
            folders[target, default: []].append(message)
        }
    }

    private func check() throws {
        if let failure = failure.withLock({ $0 }) { throw failure }
    }
}
