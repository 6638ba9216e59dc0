import Foundation
import Logging
import Synchronization

/// What happened to the connection, for logs, metrics and tests.
public enum AMQPConnectionEvent: Sendable {
    /// Connected (`count` is 1 for the first connection, 2 after the first reconnect, ...).
    case connected(count: UInt64)
    /// The connection dropped; the client is reconnecting.
    case disconnected(AMQPError)
    /// The broker stopped accepting publishes (a memory or disk alarm).
    case blocked(reason: String)
    case unblocked
}

/// A self-healing AMQP 0-9-1 connection over rabbitmq-c.
///
/// One thread owns the rabbitmq-c connection and keeps servicing it (heartbeats, confirms,
/// deliveries) whatever the callers do, so a consumer may spend hours on one message. Calls
/// are async and may come from any task.
///
/// When the broker goes away the client reconnects with capped exponential backoff,
/// re-declares the topology given to ``declare(_:remember:)``, and re-subscribes every
/// consumer; the ``AMQPConsumer`` sequences carry on. What the caller must handle:
/// - a publish in flight fails with a retryable error (`.connectionLost`): the broker may or may
///   not have it, so publish again (``publish(_:exchange:routingKey:properties:mandatory:retryFor:)``
///   does that for you);
/// - settling a delivery that came over the old connection throws `.staleDelivery`: the broker
///   has already requeued it and will deliver it again.
///
/// ```swift
/// let connection = AMQPConnection(configuration: try AMQPConfiguration(url: url), logger: logger)
/// try await connection.declare(topology)
/// try await connection.publish(body, exchange: "fanfic.ingress", routingKey: "task")
/// for try await delivery in connection.consume(queue: "fanfic.ingress", prefetch: 1) {
///     try await handle(delivery.body)
///     try await delivery.ack()
/// }
/// await connection.close()
/// ```
public final class AMQPConnection: Sendable {
    public let configuration: AMQPConfiguration
    private let inbox: Inbox
    private let loop: ConnectionLoop
    private let consumerIDs = IDSource()

    /// Starts connecting at once, in the background.
    /// - Parameters:
    ///   - configuration: where and how to connect.
    ///   - logger: the caller's logger; the client logs reconnects at warning, the rest lower.
    ///   - onEvent: called on the connection thread for each ``AMQPConnectionEvent``; keep it quick.
    public init(
        configuration: AMQPConfiguration, logger: Logger,
        onEvent: (@Sendable (AMQPConnectionEvent) -> Void)? = nil
    ) {
        self.configuration = configuration
        let inbox = Inbox()
        self.inbox = inbox
        let loop = ConnectionLoop(configuration: configuration, logger: logger, inbox: inbox, onEvent: onEvent)
        self.loop = loop
        loop.owner = self
        let thread = Thread { loop.run() }
        thread.name = "amqp:\(configuration.connectionName)"
        thread.start()
    }

    deinit {
        inbox.state.withLock { $0.stopRequested = true }
        inbox.wake()
    }

    // MARK: State

    /// Whether the connection is up right now.
    public var isConnected: Bool { inbox.state.withLock { $0.connected } }

    /// How many times the client has connected (1 until the first reconnect).
    public var connectionCount: UInt64 { inbox.state.withLock { $0.connectCount } }

    /// Why the last connection attempt failed or the last connection dropped, if one did.
    public var lastError: AMQPError? { inbox.state.withLock { $0.lastError } }

    /// Waits until the connection is up, or throws `.notConnected` after `timeout`.
    public func waitUntilConnected(timeout: Duration) async throws {
        try await perform(timeout: timeout) { _ in }
    }

    /// Closes the connection (unsettled deliveries go back to their queues) and stops its thread.
    /// Consumers' sequences end; later calls fail with `.closed`.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let alreadyStopped = inbox.state.withLock { state -> Bool in
                if state.stopped { return true }
                state.stopRequested = true
                state.closeWaiters.append(continuation)
                return false
            }
            if alreadyStopped { continuation.resume() } else { inbox.wake() }
        }
    }

    // MARK: Topology

    /// Declares exchanges, queues and bindings; with `remember`, declares them again after
    /// every reconnect, before consumers resume. Their methods go out without waiting for each
    /// answer, together with those of the declarations other tasks make at the same time: one
    /// round trip for all (a refusal fails only the declaration it belongs to).
    public func declare(_ topology: AMQPTopology, remember: Bool = true) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let declaration = Declaration(topology: topology, remember: remember) { error in
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            }
            inbox.submit(
                Command(
                    deadline: .now + configuration.commandTimeout, needsConnection: true,
                    perform: { $0.declareTogether([declaration]) }, fail: { continuation.resume(throwing: $0) },
                    declaration: declaration))
        }
    }

    /// Declares one queue and reports its message and consumer counts.
    @discardableResult
    public func declareQueue(_ spec: QueueSpec) async throws -> QueueState {
        try await perform { try $0.declareQueue(spec, passive: false) }
    }

    /// Passively declares a queue: its counts if it exists, `nil` if it does not.
    public func queueState(_ name: String) async throws -> QueueState? {
        do {
            return try await perform { try $0.declareQueue(QueueSpec(name: name), passive: true) }
        } catch let error as AMQPError where error.code == .channelClosed && error.replyCode == 404 {
            return nil
        }
    }

    /// Whether an exchange exists (a passive declaration, which needs no permission).
    public func exchangeExists(_ name: String) async throws -> Bool {
        do {
            try await perform { try $0.checkExchange(name) }
            return true
        } catch let error as AMQPError where error.code == .channelClosed && error.replyCode == 404 {
            return false
        }
    }

    public func bind(_ spec: BindingSpec) async throws {
        try await perform { try $0.bind(spec) }
    }

    /// Removes every ready message from a queue; returns how many.
    @discardableResult
    public func purgeQueue(_ name: String) async throws -> UInt32 {
        try await perform { try $0.purgeQueue(name) }
    }

    /// Deletes a queue; returns how many messages it held.
    @discardableResult
    public func deleteQueue(_ name: String, ifUnused: Bool = false, ifEmpty: Bool = false) async throws -> UInt32 {
        try await perform { try $0.deleteQueue(name, ifUnused: ifUnused, ifEmpty: ifEmpty) }
    }

    public func deleteExchange(_ name: String) async throws {
        try await perform { try $0.deleteExchange(name) }
    }

    // MARK: Publishing

    /// Publishes one message and returns once the broker has confirmed it (`basic.ack`).
    ///
    /// Throws `.publishNacked` when the broker refuses it, `.publishReturned` when `mandatory`
    /// and no queue is bound for it, and `.connectionLost` / `.notConnected` when the outcome is
    /// unknown. With `retryFor`, retryable failures are retried (after reconnecting) until that
    /// much time has passed, so a success means "confirmed at least once".
    ///
    /// `submitted` is called as soon as the message holds its place in the connection's outgoing
    /// order, long before the confirm: every publish made after that call goes out after this one,
    /// on the same channel, so the broker puts them into a queue in that order. A caller that
    /// needs order into a queue can start the next publish then instead of awaiting the confirm.
    public func publish(
        _ body: Data,
        exchange: String,
        routingKey: String,
        properties: AMQPMessageProperties = AMQPMessageProperties(deliveryMode: 2),
        mandatory: Bool = false,
        retryFor: Duration? = nil,
        submitted: (@Sendable () -> Void)? = nil
    ) async throws {
        let deadline = retryFor.map { ContinuousClock.now + $0 }
        var submitted = submitted
        while true {
            do {
                // Only the first attempt holds a place in the order; a retry goes out when it can.
                defer { submitted = nil }
                return try await publishOnce(
                    body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory,
                    timeout: deadline.map { max($0 - .now, .milliseconds(1)) } ?? configuration.commandTimeout,
                    submitted: submitted)
            } catch let error as AMQPError where error.isRetryable {
                guard let deadline, ContinuousClock.now < deadline else { throw error }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func publishOnce(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        timeout: Duration, submitted: (@Sendable () -> Void)?
    ) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            defer { submitted?() }
            inbox.submit(
                Command(
                    deadline: .now + timeout, needsConnection: true,
                    perform: { loop in
                        loop.publish(
                            body: body, exchange: exchange, routingKey: routingKey, properties: properties,
                            mandatory: mandatory, waiter: .task(continuation))
                    },
                    fail: { continuation.resume(throwing: $0) }, onlySends: true))
        }
    }

    /// Publishes one message without waiting for it: `confirmed` hears how it ended (nil: the
    /// broker confirmed it), on the connection's thread, which it must not hold up. For a stream
    /// of messages whose publisher needs no task per message in flight (events, a coordinator's
    /// moves). Not retried. It holds its place in the outgoing order when this returns: publishes
    /// made after it go out after it.
    public func publish(
        _ body: Data, exchange: String, routingKey: String,
        properties: AMQPMessageProperties = AMQPMessageProperties(deliveryMode: 2), mandatory: Bool = false,
        confirmed: @escaping @Sendable (AMQPError?) -> Void
    ) {
        inbox.submit(
            Command(
                deadline: .now + configuration.commandTimeout, needsConnection: true,
                perform: { loop in
                    loop.publish(
                        body: body, exchange: exchange, routingKey: routingKey, properties: properties,
                        mandatory: mandatory, waiter: .callback(confirmed))
                },
                fail: { confirmed($0) }, onlySends: true))
    }

    // MARK: Consuming

    /// Fetches one message (`basic.get`), or `nil` when the queue is empty.
    public func get(queue: String) async throws -> AMQPDelivery? {
        try await perform { try $0.get(queue: queue) }
    }

    /// Subscribes to a queue with manual acknowledgement.
    ///
    /// The subscription survives reconnects. It ends with an error if the broker refuses it
    /// (no such queue) or cancels it (queue deleted); it ends normally when the connection is
    /// closed. Stopping the iteration cancels the subscription; deliveries not yet settled can
    /// still be settled, after which the channel closes.
    /// - Parameters:
    ///   - prefetch: how many unacknowledged deliveries the broker may hand over at once.
    ///   - resumesAfterReconnect: false ends the subscription with `.connectionLost` when the
    ///     connection is lost, for a consumer that must ask again before it takes more work.
    public func consume(
        queue: String, prefetch: UInt16 = 1, exclusive: Bool = false, arguments: AMQPTable = [:],
        resumesAfterReconnect: Bool = true
    ) -> AMQPConsumer {
        let id = consumerIDs.next()
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: AMQPDelivery.self)
        let inbox = self.inbox
        continuation.onTermination = { _ in
            inbox.submit(
                Command(
                    deadline: .now, needsConnection: false, perform: { $0.cancelConsumer(id: id) }, fail: { _ in }))
        }
        let consumer = ConnectionLoop.ConsumerState(
            id: id, queue: queue, prefetch: prefetch, exclusive: exclusive, arguments: arguments,
            continuation: continuation)
        consumer.resumesAfterReconnect = resumesAfterReconnect
        let box = UncheckedBox(consumer)
        inbox.submit(
            Command(
                deadline: .now, needsConnection: false, perform: { $0.addConsumer(box.value) },
                fail: { continuation.finish(throwing: $0) }))
        return AMQPConsumer(stream: stream)
    }

    func settle(_ token: DeliveryToken, _ settlement: Settlement) async throws {
        try await perform(needsConnection: false, onlySends: true) { try $0.settle(token, settlement) }
    }

    /// Settles without waiting to hear how it went: for a caller that would ignore the error
    /// anyway (a settle that fails leaves the message to be delivered again).
    func settleWithoutWaiting(_ token: DeliveryToken, _ settlement: Settlement) {
        inbox.submit(
            Command(
                deadline: .now + configuration.commandTimeout, needsConnection: false,
                perform: { loop in _ = try? loop.settle(token, settlement) }, fail: { _ in }, onlySends: true))
    }

    // MARK: Plumbing

    private func perform<T: Sendable>(
        timeout: Duration? = nil, needsConnection: Bool = true, onlySends: Bool = false,
        _ body: @escaping @Sendable (ConnectionLoop) throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            inbox.submit(
                Command(
                    deadline: .now + (timeout ?? configuration.commandTimeout), needsConnection: needsConnection,
                    perform: { loop in continuation.resume(with: Result { try body(loop) }) },
                    fail: { continuation.resume(throwing: $0) }, onlySends: onlySends))
        }
    }
}

/// The deliveries of one subscription, in order.
public struct AMQPConsumer: AsyncSequence, Sendable {
    public typealias Element = AMQPDelivery
    let stream: AsyncThrowingStream<AMQPDelivery, any Error>

    public func makeAsyncIterator() -> AsyncThrowingStream<AMQPDelivery, any Error>.AsyncIterator {
        stream.makeAsyncIterator()
    }
}

/// Hands a value that is only ever touched on the connection thread across to it.
struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

final class IDSource: Sendable {
    private let counter = Mutex<UInt64>(0)
    func next() -> UInt64 {
        counter.withLock {
            $0 += 1
            return $0
        }
    }
}
