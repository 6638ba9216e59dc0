import FanficCore
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A worker's stable id: it names the worker's durable queue, so a restarted worker resumes it.
public enum WorkerIdentity {
    /// The configured id, or `<host name>-<index>` made safe for a queue name.
    public static func resolve(configured: String, index: Int, hostName: String = ProcessInfo.processInfo.hostName)
        -> String
    {
        if !configured.isEmpty { return configured }
        let host = hostName.split(separator: ".").first.map(String.init) ?? "worker"
        let safe = String(host.lowercased().map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "-" })
        return "\(safe.isEmpty ? "worker" : safe)-\(index)"
    }

    /// What is wrong with an id given on the command line, or nil: the same rule as `worker.id`.
    public static func problem(with id: String) -> String? {
        id.isEmpty ? "must not be empty" : FanficConfiguration.workerIDProblem(id)
    }

    /// The lowest number in `folder` that no live process holds, held until this claim ends
    /// (its process exits, however it exits: the kernel drops the lock with the descriptor).
    ///
    /// Replicas of one compose service get random host names and nothing that tells them
    /// apart; sharing a volume, they number themselves 1, 2, 3... and a recreated container
    /// takes the number its predecessor left, and with it that worker's queue.
    public final class SlotClaim: Sendable {
        public let number: Int
        private let descriptor: Int32

        public init(in folder: String, limit: Int = 1000) throws {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for number in 1...limit {
                let path = (folder as NSString).appendingPathComponent("slot-\(number).lock")
                let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
                guard descriptor >= 0 else {
                    throw ClaimError(folder: folder, reason: String(cString: strerror(errno)))
                }
                if flock(descriptor, LOCK_EX | LOCK_NB) == 0 {
                    self.number = number
                    self.descriptor = descriptor
                    return
                }
                let failure = errno
                close(descriptor)
                guard failure == EWOULDBLOCK else {
                    throw ClaimError(folder: folder, reason: String(cString: strerror(failure)))
                }
            }
            throw ClaimError(folder: folder, reason: "all \(limit) numbers are taken")
        }

        deinit { close(descriptor) }
    }

    public struct ClaimError: Error, CustomStringConvertible {
        public let folder: String
        public let reason: String
        public var description: String { "worker.slots \(folder.debugDescription): no number claimed: \(reason)" }
    }
}
