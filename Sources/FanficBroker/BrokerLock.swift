import AMQP
import Foundation

/// A lock shared by processes on any host, through the broker: held while this connection holds
/// an exclusive queue of the lock's name. The broker refuses the same exclusive queue to every
/// other connection (405 RESOURCE_LOCKED) and deletes it when its connection goes away, so a
/// holder that crashes releases the lock as soon as the broker notices.
public struct BrokerLock: Sendable {
    /// Workers writing to one Calibre Content Server take turns through this lock: calibre-server
    /// reads a new book's metadata in request threads that change the process-wide working
    /// directory (calibre's `CurrentDir`, while rendering a cover), so two adds at once can leave
    /// it in a deleted folder, after which every book is added without its metadata.
    public static let calibreServer = FanficTopology.calibreServerLock

    public struct Timeout: Error, CustomStringConvertible {
        public let name: String
        public let waited: Duration
        public var description: String { "the lock \(name) was not free within \(waited.components.seconds) s" }
    }

    public let name: String
    let bus: any MessageBus

    public init(_ name: String, bus: any MessageBus) {
        self.name = name
        self.bus = bus
    }

    /// Tries once. True when this connection now holds the lock (or already did); the lock is
    /// kept until ``release()`` or until this connection is gone.
    public func tryAcquire() async throws -> Bool {
        do {
            // Not remembered: after a reconnect the lock is gone, not silently taken again.
            try await bus.declare(
                AMQPTopology(queues: [FanficTopology.lock(name)]),
                remember: false)
            return true
        } catch let error as AMQPError where error.code == .channelClosed && error.replyCode == 405 {
            return false
        }
    }

    public func release() async {
        _ = try? await bus.deleteQueue(name)
    }

    /// Runs `body` while holding the lock; waits for it (polling every `poll`) at most `timeout`.
    public func withLock<T: Sendable>(
        timeout: Duration, poll: Duration = .milliseconds(100), _ body: () async throws -> T
    ) async throws -> T {
        let started = ContinuousClock.now
        while try await !tryAcquire() {
            guard ContinuousClock.now - started < timeout else { throw Timeout(name: name, waited: timeout) }
            try await Task.sleep(for: poll)
        }
        do {
            let result = try await body()
            await release()
            return result
        } catch {
            await release()
            throw error
        }
    }
}
