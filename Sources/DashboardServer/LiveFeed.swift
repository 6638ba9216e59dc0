import DashboardHistory
import FanficBroker
import FanficCore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Tells open pages when something changed (`GET /api/live`, server-sent events): one loop for
/// every browser looks once a second at the history's event count and the fleet's status, and
/// only while someone watches. A page that hears `change` fetches its content again.
///
/// A Service: at graceful shutdown it ends every stream, so that no open page holds the HTTP
/// server's shutdown up.
public final class LiveFeed: Service, Sendable {
    let store: any HistoryStore
    let status: @Sendable () async -> FleetStatusReport
    let interval: Duration
    private let watchers = Mutex<(next: UInt64, streams: [UInt64: AsyncStream<Int>.Continuation], closed: Bool)>(
        (0, [:], false))

    /// At most this many pages watch at once; more are refused (each holds a connection).
    public static let maxWatchers = 100

    public init(
        store: any HistoryStore, interval: Duration = .seconds(1),
        status: @escaping @Sendable () async -> FleetStatusReport
    ) {
        self.store = store
        self.interval = interval
        self.status = status
    }

    /// A stream of change counts for one page, or nil when too many watch (or shutting down).
    /// It ends when the page goes (its consumer stops) or the dashboard stops.
    public func watch() -> AsyncStream<Int>? {
        let (stream, continuation) = AsyncStream.makeStream(of: Int.self, bufferingPolicy: .bufferingNewest(1))
        let id: UInt64? = watchers.withLock { state in
            guard !state.closed, state.streams.count < Self.maxWatchers else { return nil }
            state.next += 1
            state.streams[state.next] = continuation
            return state.next
        }
        guard let id else { return nil }
        continuation.onTermination = { [weak self] _ in
            _ = self?.watchers.withLock { $0.streams.removeValue(forKey: id) }
        }
        return stream
    }

    public var watcherCount: Int { watchers.withLock { $0.streams.count } }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.watchUntilCancelled() }
        let streams = watchers.withLock { state in
            state.closed = true
            return Array(state.streams.values)
        }
        for stream in streams { stream.finish() }
    }

    private func watchUntilCancelled() async {
        var last: Data?
        var changes = 0
        while !Task.isCancelled {
            if watcherCount > 0 {
                let now = await signature()
                if now != last {
                    last = now
                    changes += 1
                    let streams = watchers.withLock { Array($0.streams.values) }
                    for stream in streams { stream.yield(changes) }
                }
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// What the pages show, in a few bytes: the events kept and the status without its time.
    private func signature() async -> Data {
        var report = await status()
        report.checkedAt = Date(timeIntervalSince1970: 0)
        var signature = WireCodec.encodeValue(report)
        signature.append(contentsOf: Array(String((try? store.eventCount()) ?? -1).utf8))
        return signature
    }
}
