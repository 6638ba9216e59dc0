import Foundation
import Synchronization

/// The mailbox operations the ingester uses: an IMAP server (``IMAPMailbox``) or, in unit
/// tests, ``InMemoryMailbox``.
public protocol Mailbox: Sendable {
    /// The UIDs of the unseen messages of a folder that are not marked ``skippedKeyword``,
    /// oldest first.
    func unseen(in folder: String) async throws -> [UInt32]
    /// A message's size in bytes, before it is fetched.
    func size(uid: UInt32, in folder: String) async throws -> Int
    /// A message's raw bytes (RFC 5322).
    func fetch(uid: UInt32, in folder: String) async throws -> Data
    /// Marks a message ``skippedKeyword``: left unseen for its reader, never fetched again.
    func markSkipped(uid: UInt32, in folder: String) async throws
    func markSeen(uid: UInt32, in folder: String) async throws
    func move(uid: UInt32, in folder: String, to target: String) async throws
}

/// The IMAP keyword of messages the ingester will not read again (too big, from a sender not
/// allowed, without story links): they stay unseen for their reader.
public let skippedKeyword = "$FanficSkipped"

extension IMAPMailbox: Mailbox {}

/// ``Mailbox`` in memory: folders of messages, each seen or not.
public final class InMemoryMailbox: Mailbox {
    public struct Message: Sendable {
        public var uid: UInt32
        public var raw: Data
        public var seen = false
        public var skipped = false
    }

    private let folders = Mutex<[String: [Message]]>([:])
    private let nextUID = Mutex<UInt32>(1)
    /// When set, every operation fails with it, as an unreachable server does.
    private let failure = Mutex<IMAPError?>(nil)
    private let fetched = Mutex(0)

    /// How many messages were fetched so far.
    public var fetchCount: Int { fetched.withLock { $0 } }

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
        return folders.withLock { ($0[folder] ?? []).filter { !$0.seen && !$0.skipped }.map(\.uid) }
    }

    public func size(uid: UInt32, in folder: String) async throws -> Int {
        try check()
        guard let message = folders.withLock({ $0[folder]?.first { $0.uid == uid } }) else {
            throw IMAPError("no message \(uid) in \(folder)")
        }
        return message.raw.count
    }

    public func fetch(uid: UInt32, in folder: String) async throws -> Data {
        try check()
        guard let message = folders.withLock({ $0[folder]?.first { $0.uid == uid } }) else {
            throw IMAPError("no message \(uid) in \(folder)")
        }
        fetched.withLock { $0 += 1 }
        return message.raw
    }

    public func markSkipped(uid: UInt32, in folder: String) async throws {
        try check()
        folders.withLock { folders in
            guard let index = folders[folder]?.firstIndex(where: { $0.uid == uid }) else { return }
            folders[folder]![index].skipped = true
        }
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
