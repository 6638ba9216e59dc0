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

    public init(bus: any MessageBus, logger: Logger, buffer: Int = 50_000, window: Int = 64) {
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
        await withTaskGroup(of: Void.self) { group in
            var inFlight = 0
            for await event in stream {
                if inFlight >= window {
                    await group.next()
                    inFlight -= 1
                }
                inFlight += 1
                group.addTask { [bus, logger] in
                    do {
                        try await bus.publish(
                            WireCodec.encode(event), exchange: FanficTopology.events, routingKey: event.routingKey,
                            properties: .persistentJSON())
                    } catch {
                        logger.debug(
                            "event not published", metadata: ["event": "\(event.routingKey)", "error": "\(error)"])
                    }
                }
            }
        }
    }

    /// Ends ``run()`` once what is buffered has been published.
    public func finish() { continuation.finish() }
}
