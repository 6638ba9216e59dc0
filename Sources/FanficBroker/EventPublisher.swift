import AMQP
import FanficCore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Publishes ``FanficEvent``s to `fanfic.events` in the background.
///
/// Events are for observers: publishing one never holds up the work it describes. They queue in a
/// bounded buffer (the oldest are dropped, and counted, if the broker cannot keep up) and go out
/// with up to `window` confirms awaited at once. A Service: put it first in the role's
/// ServiceGroup, so that it stops last and the events of the others' shutdown still go out.
public final class EventPublisher: Service {
    private let bus: any MessageBus
    private let logger: Logger
    private let window: Int
    private let stream: AsyncStream<FanficEvent>
    private let continuation: AsyncStream<FanficEvent>.Continuation
    private let dropped = Atomic<Int>(0)

    public init(bus: any MessageBus, logger: Logger, buffer: Int = 50_000, window: Int = 256) {
        self.bus = bus
        self.logger = logger
        self.window = window
        (stream, continuation) = AsyncStream.makeStream(of: FanficEvent.self, bufferingPolicy: .bufferingNewest(buffer))
    }

    /// Queues an event; never waits.
    public func emit(_ event: FanficEvent) {
        if case .dropped = continuation.yield(event) {
            dropped.add(1, ordering: .relaxed)
        }
    }

    /// Events dropped because the buffer was full.
    public var droppedCount: Int { dropped.load(ordering: .relaxed) }

    /// Publishes until graceful shutdown (or ``finish()``) and the buffer is empty, or until cancelled.
    public func run() async {
        await withGracefulShutdownHandler {
            await publishUntilFinished()
        } onGracefulShutdown: {
            self.finish()
        }
    }

    private func publishUntilFinished() async {
        // A callback per confirm, not a task per event: an event is published for every task
        // routed, and the publisher must keep up with routing on the coordinator's cores.
        let slots = PublishSlots(window)
        for await event in stream {
            await slots.take()
            bus.publish(
                WireCodec.encode(event), exchange: FanficTopology.events, routingKey: event.routingKey,
                properties: .persistentJSON(), mandatory: false
            ) { [logger] error in
                if let error {
                    logger.debug(
                        "event not published", metadata: ["event": "\(event.routingKey)", "error": "\(error)"])
                }
                slots.give()
            }
        }
        await slots.waitUntilAllGiven()
    }

    /// Ends ``run()`` once what is buffered has been published.
    public func finish() { continuation.finish() }
}

/// At most `count` publishes in flight: ``take()`` waits for a free slot, a confirm ``give()``s
/// it back (from any thread).
final class PublishSlots: Sendable {
    private struct State {
        var free: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let count: Int
    private let state: Mutex<State>

    init(_ count: Int) {
        self.count = max(1, count)
        state = Mutex(State(free: max(1, count)))
    }

    func take() async {
        await withCheckedContinuation { continuation in
            let taken = state.withLock { state -> Bool in
                guard state.free > 0 else {
                    state.waiters.append(continuation)
                    return false
                }
                state.free -= 1
                return true
            }
            if taken { continuation.resume() }
        }
    }

    func give() {
        let (waiter, idle) = state.withLock {
            state -> (CheckedContinuation<Void, Never>?, [CheckedContinuation<Void, Never>]) in
            // A waiter takes the slot over directly.
            if !state.waiters.isEmpty { return (state.waiters.removeFirst(), []) }
            state.free += 1
            guard state.free == count else { return (nil, []) }
            defer { state.idleWaiters = [] }
            return (nil, state.idleWaiters)
        }
        waiter?.resume()
        for continuation in idle { continuation.resume() }
    }

    /// Returns once every slot taken has been given back.
    func waitUntilAllGiven() async {
        await withCheckedContinuation { continuation in
            let idle = state.withLock { state -> Bool in
                guard state.free == count else {
                    state.idleWaiters.append(continuation)
                    return false
                }
                return true
            }
            if idle { continuation.resume() }
        }
    }
}
