import CRabbitMQ
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The connection's own thread: the only code that touches rabbitmq-c state.
///
/// 1. Connects (TCP or TLS, login, a confirm-mode publish channel, an RPC channel), declares
///    the remembered topology, re-subscribes every consumer.
/// 2. Serves: runs queued commands, reads frames (confirms, deliveries, returns, closes), and
///    sleeps in `poll` on the socket and the wake pipe, calling into rabbitmq-c at least once
///    a second so heartbeats go out and a silent broker is noticed.
/// 3. On any connection failure: fails unconfirmed publishes (the caller must publish again),
///    marks outstanding deliveries stale, waits a capped exponential backoff, and starts over.
///
/// `@unchecked Sendable`: it is handed to its thread once; afterwards only that thread and the
/// commands it runs touch its state.
final class ConnectionLoop: @unchecked Sendable {
    static let publishChannel: UInt16 = 1
    static let rpcChannel: UInt16 = 2
    /// At most this many declaration methods unanswered: their answers never fill the socket
    /// buffers, which would stall a broker that waits for us to read before it reads on.
    static let pipelineWindow = 128

    let configuration: AMQPConfiguration
    let logger: Logger
    let inbox: Inbox
    let onEvent: (@Sendable (AMQPConnectionEvent) -> Void)?
    weak var owner: AMQPConnection?

    private var connection: amqp_connection_state_t?
    /// Set when a command or frame handler found the connection dead.
    private var broken: AMQPError?
    /// Whether TCP_CORK is set on the socket now (see ``runCommands(connected:)``).
    private var socketCorked = false
    private var topology = AMQPTopology()
    private var channelEpochs: [UInt16: UInt64] = [:]
    private var epochCounter: UInt64 = 0
    private var nextPublishTag: UInt64 = 1
    private var pendingPublishes = PendingPublishes<PendingPublish>()
    private var consumers: [UInt64: ConsumerState] = [:]
    private var consumerByChannel: [UInt16: UInt64] = [:]
    private var freeChannels: [UInt16] = []
    private var nextChannel: UInt16 = 3

    struct PendingPublish {
        let waiter: PublishWaiter
        var returned: AMQPError?
    }

    /// Who hears how a publish ended: a task awaiting it, or a callback (run on this thread).
    enum PublishWaiter {
        case task(CheckedContinuation<Void, any Error>)
        case callback(@Sendable (AMQPError?) -> Void)

        func finish(_ error: AMQPError?) {
            switch self {
            case .task(let continuation):
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            case .callback(let callback):
                callback(error)
            }
        }
    }

    final class ConsumerState {
        let id: UInt64
        let queue: String
        let prefetch: UInt16
        let exclusive: Bool
        let arguments: AMQPTable
        let continuation: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation
        /// False: a lost connection ends the subscription (with `.connectionLost`) instead of
        /// subscribing again after the reconnect.
        var resumesAfterReconnect = true
        var channel: UInt16?
        var consumerTag: String?
        var unacked: Set<UInt64> = []
        var cancelling = false

        init(
            id: UInt64, queue: String, prefetch: UInt16, exclusive: Bool, arguments: AMQPTable,
            continuation: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation
        ) {
            self.id = id
            self.queue = queue
            self.prefetch = prefetch
            self.exclusive = exclusive
            self.arguments = arguments
            self.continuation = continuation
        }
    }

    /// Thrown inside the loop when the connection itself is unusable.
    struct ConnectionFailure: Error {
        let error: AMQPError
    }

    init(
        configuration: AMQPConfiguration, logger: Logger, inbox: Inbox,
        onEvent: (@Sendable (AMQPConnectionEvent) -> Void)?
    ) {
        self.configuration = configuration
        self.logger = logger
        self.inbox = inbox
        self.onEvent = onEvent
    }

    var isConnected: Bool { connection != nil && broken == nil }

    // MARK: Main loop

    /// The node of ``AMQPConfiguration/endpoints`` to try next.
    private var endpointIndex = 0
    /// The node of the current or last attempt, for logs.
    private var endpoint: AMQPConfiguration.Endpoint {
        configuration.endpoints[endpointIndex % configuration.endpoints.count]
    }

    func run() {
        var attempt = 0
        while !inbox.isStopRequested {
            do {
                try connect()
                attempt = 0
                try serve()
            } catch {
                let failedNode = endpoint
                // A cluster: the next attempt goes to the next node.
                endpointIndex += 1
                // A refused declaration (a queue that exists with other arguments) is the broker's
                // word, worth logging as is; backoff keeps it from becoming a busy loop.
                let reason =
                    (error as? ConnectionFailure)?.error ?? (error as? AMQPError) ?? AMQPError(.library, "\(error)")
                let wasConnected = inbox.state.withLock { state -> Bool in
                    state.lastError = reason
                    return state.connected
                }
                teardown(reason)
                if inbox.isStopRequested { break }
                let delay = configuration.reconnectBackoff.delay(attempt: attempt)
                attempt += 1
                let level: Logger.Level = (reason.code == .accessRefused || attempt > 3) ? .error : .warning
                logger.log(
                    level: level,
                    wasConnected ? "broker connection lost; reconnecting" : "cannot connect to the broker; retrying",
                    metadata: [
                        "amqp.url": "\(configuration.redactedURL)",
                        "amqp.node": "\(failedNode)",
                        "amqp.error": "\(reason)",
                        "amqp.retry_in_ms": "\(Int(delay.seconds * 1000))",
                    ]
                )
                waitDisconnected(for: delay)
            }
        }
        shutdown()
    }

    private func serve() throws {
        let clock = ContinuousClock()
        var lastTick = clock.now
        while !inbox.isStopRequested {
            runCommands(connected: true)
            if let broken { throw ConnectionFailure(error: broken) }
            try readFrames(timeoutMicroseconds: 0)
            if clock.now - lastTick >= .seconds(1) {
                // A real (if tiny) wait lets rabbitmq-c send a due heartbeat and notice a
                // broker that has gone silent.
                try readFrames(timeoutMicroseconds: 1000)
                lastTick = clock.now
            }
            if let broken { throw ConnectionFailure(error: broken) }
            guard let connection else { return }
            if amqp_frames_enqueued(connection) != 0 || amqp_data_in_buffer(connection) != 0
                || !inbox.beginSleep()
            {
                continue
            }
            var fds = [
                pollfd(fd: amqp_get_sockfd(connection), events: Int16(POLLIN), revents: 0),
                pollfd(fd: inbox.wakeReadFD, events: Int16(POLLIN), revents: 0),
            ]
            _ = poll(&fds, 2, 1000)
            inbox.endSleep()
        }
    }

    private func runCommands(connected: Bool) {
        let (run, expired) = inbox.takeCommands(connected: connected, now: .now)
        for command in expired {
            command.fail(AMQPError(.notConnected, "no broker connection within the call's timeout"))
        }
        // A run of publishes and acks leaves in as few packets as it fills, not a packet each
        // (on loopback every packet costs both sides a trip through the TCP stack). Anything that
        // waits for the broker's answer goes out uncorked, or the question would sit unsent.
        let onlySends = run.lazy.map(\.onlySends)
        defer { setCork(false) }
        // Declarations (a coordinator's first moves into many new queues) share one round trip:
        // each goes out with the later ones of the run, ahead of the publishes and acks between
        // them (those never change what a declaration finds), never ahead of anything else.
        var declared: Set<Int> = []  // empty (no allocation) in the usual run without one
        var kinds: [(declaration: Bool, onlySends: Bool)]?
        for (index, command) in run.enumerated() where !declared.contains(index) {
            if broken != nil && command.needsConnection {
                command.fail(AMQPError(.connectionLost, broken!.message))
                continue
            }
            if command.declaration != nil {
                if kinds == nil { kinds = run.map { ($0.declaration != nil, $0.onlySends) } }
                let together = Self.declaredTogether(from: index, of: kinds!)
                declared.formUnion(together)
                declareTogether(together.compactMap { run[$0].declaration })
                continue
            }
            setCork(connected && Self.corked(at: index, of: onlySends))
            command.perform(self)
        }
    }

    /// The declarations of a run that go out with the one at `index`: it and every later one up
    /// to the first command that is neither a declaration nor only sends (a publish, an ack).
    static func declaredTogether(from index: Int, of commands: [(declaration: Bool, onlySends: Bool)]) -> [Int] {
        var together: [Int] = []
        for later in index..<commands.count {
            if commands[later].declaration {
                together.append(later)
            } else if !commands[later].onlySends {
                break
            }
        }
        return together
    }

    /// Whether the socket is corked while the command at `index` of a run is performed: inside
    /// every stretch of two or more commands that only send; never for one that waits for an answer.
    static func corked(at index: Int, of onlySends: some RandomAccessCollection<Bool>) -> Bool {
        let position = onlySends.index(onlySends.startIndex, offsetBy: index)
        guard onlySends[position] else { return false }
        let next = onlySends.index(after: position)
        return (next < onlySends.endIndex && onlySends[next])
            || (position > onlySends.startIndex && onlySends[onlySends.index(before: position)])
    }

    /// Holds back partial packets on the socket until uncorked (which sends what is held).
    private func setCork(_ on: Bool) {
        guard on != socketCorked, let connection else { return }
        let socket = amqp_get_sockfd(connection)
        guard socket >= 0 else { return }
        var value: Int32 = on ? 1 : 0
        if setsockopt(socket, Int32(IPPROTO_TCP), TCP_CORK, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 {
            socketCorked = on
        }
    }

    /// Called before every wait for the broker's answer, wherever it happens: a command that
    /// only sends may still need one (the last ack on a cancelled consumer closes its channel;
    /// a publish may reopen its channel), and a question held in a corked socket would wait
    /// for the kernel's 200 ms cork timer before it leaves.
    private func uncorkToAwaitReply() {
        setCork(false)
    }

    /// Sleeps out a reconnect delay while still answering control commands and expiring
    /// calls that waited too long for a connection.
    private func waitDisconnected(for delay: Duration) {
        let until = ContinuousClock.now + delay
        while !inbox.isStopRequested {
            runCommands(connected: false)
            let now = ContinuousClock.now
            guard now < until else { return }
            var wakeAt = until
            if let deadline = inbox.earliestDeadline, deadline < wakeAt { wakeAt = max(deadline, now) }
            let milliseconds = Int32(max(1, min((wakeAt - now).seconds * 1000, 1000)))
            guard inbox.beginSleep(runnable: { !$0.needsConnection || $0.deadline <= now }) else { continue }
            var fds = [pollfd(fd: inbox.wakeReadFD, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 1, milliseconds)
            inbox.endSleep()
        }
    }

    // MARK: Connect and tear down

    private func connect() throws {
        guard let connection = amqp_new_connection() else {
            throw ConnectionFailure(error: AMQPError(.library, "amqp_new_connection failed"))
        }
        self.connection = connection
        broken = nil
        socketCorked = false  // a new socket
        let arena = CArena()
        let socket: OpaquePointer?
        if let tls = configuration.tls {
            socket = amqp_ssl_socket_new(connection)
            guard let socket else { throw failure(.library, "cannot create a TLS socket") }
            if let ca = tls.caCertificatePath {
                try checkStatus(amqp_ssl_socket_set_cacert(socket, ca), "loading CA certificate \(ca)")
            }
            if let cert = tls.certificatePath, let key = tls.keyPath {
                try checkStatus(amqp_ssl_socket_set_key(socket, cert, key), "loading client certificate \(cert)")
            }
            amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
            amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
        } else {
            socket = amqp_tcp_socket_new(connection)
        }
        guard let socket else { throw failure(.library, "cannot create a socket") }

        var rpcTimeout = timeval(configuration.rpcTimeout)
        _ = amqp_set_handshake_timeout(connection, &rpcTimeout)
        _ = amqp_set_rpc_timeout(connection, &rpcTimeout)
        var connectTimeout = timeval(configuration.connectTimeout)
        let opened = amqp_socket_open_noblock(socket, endpoint.host, Int32(endpoint.port), &connectTimeout)
        guard opened == AMQP_STATUS_OK.rawValue else {
            throw failure(.notConnected, "cannot reach \(endpoint): \(Self.errorText(opened))")
        }
        tuneSocket(amqp_get_sockfd(connection))

        var properties = arena.table(clientProperties)
        let reply = fanfic_amqp_login_plain(
            connection, arena.cString(configuration.virtualHost), 2047, 131_072,
            Int32(configuration.heartbeat), &properties,
            arena.cString(configuration.username), arena.cString(configuration.password))
        try checkConnectionLevel(reply, doing: "login")

        try openPublishChannel()
        try openRPCChannel()
        if let refusal = try pipelined(TopologyMethod.declaring(topology)).refusal { throw refusal }
        for consumer in consumers.values.sorted(by: { $0.id < $1.id }) {
            try subscribeOrFinish(consumer)
        }

        let count = inbox.state.withLock { state -> UInt64 in
            state.connected = true
            state.connectCount += 1
            return state.connectCount
        }
        logger.info(
            "connected to the broker",
            metadata: [
                "amqp.url": "\(configuration.redactedURL)", "amqp.node": "\(endpoint)",
                "amqp.connection_count": "\(count)",
            ])
        onEvent?(.connected(count: count))
    }

    private var clientProperties: AMQPTable {
        [
            "product": "AutomatedFanfic",
            "connection_name": .string(configuration.connectionName),
            "capabilities": .table([
                "publisher_confirms": true,
                "consumer_cancel_notify": true,
                "exchange_exchange_bindings": true,
                "basic.nack": true,
                "connection.blocked": true,
                "authentication_failure_close": true,
            ]),
        ]
    }

    /// Lets the kernel give up on a dead peer: rabbitmq-c 0.11 can otherwise block in a
    /// write forever when the network silently drops.
    private func tuneSocket(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
        var userTimeout = UInt32(max(configuration.heartbeat * 2, 10) * 1000)
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_USER_TIMEOUT, &userTimeout, socklen_t(MemoryLayout<UInt32>.size))
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    private func openPublishChannel() throws {
        guard let connection else { throw failure(.connectionLost, "no connection") }
        uncorkToAwaitReply()
        amqp_channel_open(connection, Self.publishChannel)
        try checkChannelLevel(
            amqp_get_rpc_reply(connection), channel: Self.publishChannel, doing: "open publish channel")
        amqp_confirm_select(connection, Self.publishChannel)
        try checkChannelLevel(amqp_get_rpc_reply(connection), channel: Self.publishChannel, doing: "confirm.select")
        nextPublishTag = 1
        markOpened(Self.publishChannel)
    }

    private func openRPCChannel() throws {
        guard let connection else { throw failure(.connectionLost, "no connection") }
        uncorkToAwaitReply()
        amqp_channel_open(connection, Self.rpcChannel)
        try checkChannelLevel(amqp_get_rpc_reply(connection), channel: Self.rpcChannel, doing: "open channel")
        markOpened(Self.rpcChannel)
    }

    private func markOpened(_ channel: UInt16) {
        epochCounter += 1
        channelEpochs[channel] = epochCounter
    }

    private func teardown(_ reason: AMQPError) {
        failPendingPublishes(
            AMQPError(.connectionLost, "connection lost before the broker confirmed: \(reason.message)"))
        if let connection {
            amqp_destroy_connection(connection)
        }
        connection = nil
        broken = nil
        channelEpochs = [:]
        consumerByChannel = [:]
        freeChannels = []
        nextChannel = 3
        for (id, consumer) in consumers {
            consumer.channel = nil
            consumer.consumerTag = nil
            consumer.unacked = []
            if consumer.cancelling { consumers[id] = nil }
            if !consumer.resumesAfterReconnect, consumers[id] != nil {
                consumers[id] = nil
                consumer.continuation.finish(
                    throwing: AMQPError(.connectionLost, "the connection was lost: \(reason.message)"))
            }
        }
        let wasConnected = inbox.state.withLock { state -> Bool in
            defer { state.connected = false }
            return state.connected
        }
        if wasConnected { onEvent?(.disconnected(reason)) }
    }

    private func shutdown() {
        if connection != nil, broken == nil {
            // What was asked before the close goes out first: acks sent without waiting among
            // them (dropped, their messages would be delivered again).
            runCommands(connected: true)
        }
        if let connection, broken == nil {
            uncorkToAwaitReply()
            _ = amqp_connection_close(connection, AMQP_REPLY_SUCCESS)
        }
        let closed = AMQPError(.closed, "the connection was closed by its owner")
        teardown(closed)
        for consumer in consumers.values { consumer.continuation.finish() }
        consumers = [:]
        let (commands, waiters) = inbox.state.withLock { state in
            state.stopped = true
            defer {
                state.commands = []
                state.closeWaiters = []
            }
            return (state.commands, state.closeWaiters)
        }
        for command in commands { command.fail(closed) }
        for waiter in waiters { waiter.resume() }
        logger.debug("broker connection closed")
    }

    private func failPendingPublishes(_ error: AMQPError) {
        for publish in pendingPublishes.removeAll() { publish.waiter.finish(error) }
    }

    // MARK: Frames

    private func readFrames(timeoutMicroseconds: Int) throws {
        guard let connection else { return }
        var timeout = timeval(tv_sec: 0, tv_usec: timeoutMicroseconds)
        while broken == nil {
            var frame = amqp_frame_t()
            let status = amqp_simple_wait_frame_noblock(connection, &frame, &timeout)
            if status == AMQP_STATUS_TIMEOUT.rawValue { return }
            guard status == AMQP_STATUS_OK.rawValue else {
                throw failure(.connectionLost, Self.errorText(status))
            }
            do {
                try handle(frame)
            } catch let error as AMQPError {
                throw ConnectionFailure(error: error)
            }
            // Frames rabbitmq-c queued while it waited for an RPC's answer pin their channels'
            // memory, and the release walks that queue once per channel: with hundreds queued,
            // releasing after every frame costs more than the frames. Released once it is empty.
            if amqp_frames_enqueued(connection) == 0 { amqp_maybe_release_buffers(connection) }
            timeout = timeval(tv_sec: 0, tv_usec: 0)
        }
    }

    private func handle(_ frame: amqp_frame_t) throws {
        guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { return }
        let method = frame.payload.method
        let channel = frame.channel
        switch method.id {
        case fanfic_amqp_basic_deliver_method:
            let deliver = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            try handleDeliver(channel: channel, deliver)
        case fanfic_amqp_basic_ack_method:
            let ack = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            confirm(upTo: ack.delivery_tag, multiple: ack.multiple != 0, nacked: false)
        case fanfic_amqp_basic_nack_method:
            let nack = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            confirm(upTo: nack.delivery_tag, multiple: nack.multiple != 0, nacked: true)
        case fanfic_amqp_basic_return_method:
            let returned = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            try handleReturn(channel: channel, returned)
        case fanfic_amqp_basic_cancel_method:
            let cancel = method.decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            handleServerCancel(channel: channel, tag: String(amqpBytes: cancel.consumer_tag))
        case fanfic_amqp_channel_close_method:
            let close = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            try handleChannelClose(channel: channel, code: close.reply_code, text: String(amqpBytes: close.reply_text))
        case fanfic_amqp_connection_close_method:
            let close = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            throw connectionClosedByBroker(close)
        case fanfic_amqp_connection_blocked_method:
            let blocked = method.decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
            let reason = String(amqpBytes: blocked.reason)
            logger.warning("the broker blocked publishing", metadata: ["amqp.reason": "\(reason)"])
            onEvent?(.blocked(reason: reason))
        case fanfic_amqp_connection_unblocked_method:
            logger.info("the broker unblocked publishing")
            onEvent?(.unblocked)
        default:
            logger.trace("ignored frame", metadata: ["amqp.method": "\(method.id)", "amqp.channel": "\(channel)"])
        }
    }

    private func handleDeliver(channel: UInt16, _ deliver: amqp_basic_deliver_t) throws {
        guard let connection else { return }
        let tag = deliver.delivery_tag
        let exchange = String(amqpBytes: deliver.exchange)
        let routingKey = String(amqpBytes: deliver.routing_key)
        let redelivered = deliver.redelivered != 0
        var message = amqp_message_t()
        try checkConnectionLevel(amqp_read_message(connection, channel, &message, 0), doing: "read delivery")
        defer { amqp_destroy_message(&message) }

        // Sent before the broker saw our channel.close, read (queued by rabbitmq-c during that
        // RPC) after it: the channel is closed, and any frame on it would be a connection error
        // ("expected 'channel.open'"). The broker requeues what a closed channel held.
        guard channelEpochs[channel] != nil else { return }
        guard let id = consumerByChannel[channel], let consumer = consumers[id], let owner else {
            _ = amqp_basic_reject(connection, channel, tag, 1)
            return
        }
        // A delivery of an earlier subscription on this channel number, before it was closed
        // and reopened: its tag means nothing on the new channel, and the broker requeued it.
        if let expected = consumer.consumerTag, expected != String(amqpBytes: deliver.consumer_tag) { return }
        if consumer.cancelling {
            // Arrived between our basic.cancel and its cancel-ok: give it straight back.
            _ = amqp_basic_reject(connection, channel, tag, 1)
            return
        }
        consumer.unacked.insert(tag)
        let delivery = AMQPDelivery(
            body: Data(amqpBytes: message.body),
            properties: CDecoding.properties(message.properties),
            exchange: exchange,
            routingKey: routingKey,
            redelivered: redelivered,
            deliveryTag: tag,
            messageCount: nil,
            token: DeliveryToken(channel: channel, channelEpoch: channelEpochs[channel] ?? 0, tag: tag, consumerID: id),
            connection: owner
        )
        consumer.continuation.yield(delivery)
    }

    private func handleReturn(channel: UInt16, _ returned: amqp_basic_return_t) throws {
        guard let connection else { return }
        var message = amqp_message_t()
        try checkConnectionLevel(amqp_read_message(connection, channel, &message, 0), doing: "read returned message")
        defer { amqp_destroy_message(&message) }
        let headers = CDecoding.properties(message.properties).headers
        let text = String(amqpBytes: returned.reply_text)
        let error = AMQPError(
            .publishReturned,
            "unroutable: exchange '\(String(amqpBytes: returned.exchange))' routing key "
                + "'\(String(amqpBytes: returned.routing_key))': \(text)",
            replyCode: returned.reply_code)
        guard let tag = headers[Self.publishTagHeader]?.intValue,
            pendingPublishes.update(tag: UInt64(tag), { $0.returned = error })
        else {
            logger.warning(
                "broker returned a message that no publish is waiting for", metadata: ["amqp.error": "\(error)"])
            return
        }
    }

    private func confirm(upTo tag: UInt64, multiple: Bool, nacked: Bool) {
        let settled =
            multiple ? pendingPublishes.removeAll(through: tag) : pendingPublishes.remove(tag: tag).map { [$0] } ?? []
        for publish in settled {
            publish.waiter.finish(
                nacked ? AMQPError(.publishNacked, "the broker refused the message (basic.nack)") : publish.returned)
        }
    }

    private func handleServerCancel(channel: UInt16, tag: String) {
        guard let id = consumerByChannel[channel], let consumer = consumers[id] else { return }
        logger.warning("the broker cancelled a consumer", metadata: ["amqp.queue": "\(consumer.queue)"])
        consumer.continuation.finish(
            throwing: AMQPError(
                .consumerCancelled, "the broker cancelled the consumer of '\(consumer.queue)' (queue deleted?)"))
        consumer.cancelling = true
        consumer.consumerTag = nil
        if consumer.unacked.isEmpty { closeConsumerChannel(consumer) }
    }

    /// The broker closed one channel (a failed ack, a consumer timeout, a precondition).
    private func handleChannelClose(channel: UInt16, code: UInt16, text: String) throws {
        sendChannelCloseOK(channel)
        let error = AMQPError(.channelClosed, text, replyCode: code)
        logger.warning(
            "the broker closed a channel", metadata: ["amqp.channel": "\(channel)", "amqp.error": "\(error)"])
        try reopenAfterClose(channel: channel, error: error)
    }

    private func reopenAfterClose(channel: UInt16, error: AMQPError) throws {
        channelEpochs[channel] = nil
        switch channel {
        case Self.publishChannel:
            failPendingPublishes(
                AMQPError(.channelClosed, "publish channel closed: \(error.message)", replyCode: error.replyCode))
            try openPublishChannel()
        case Self.rpcChannel:
            try openRPCChannel()
        default:
            guard let id = consumerByChannel.removeValue(forKey: channel), let consumer = consumers[id] else {
                freeChannels.append(channel)
                return
            }
            freeChannels.append(channel)
            consumer.channel = nil
            consumer.unacked = []
            if consumer.cancelling {
                consumers[id] = nil
            } else {
                try subscribeOrFinish(consumer)  // e.g. after a delivery-ack timeout: carry on
            }
        }
    }

    private func sendChannelCloseOK(_ channel: UInt16) {
        guard let connection else { return }
        var closeOK = amqp_channel_close_ok_t(dummy: 0)
        let status = amqp_send_method(connection, channel, fanfic_amqp_channel_close_ok_method, &closeOK)
        if status != AMQP_STATUS_OK.rawValue { broken = AMQPError(.connectionLost, Self.errorText(status)) }
    }

    private func connectionClosedByBroker(_ close: amqp_connection_close_t) -> ConnectionFailure {
        if let connection {
            var closeOK = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(connection, 0, fanfic_amqp_connection_close_ok_method, &closeOK)
        }
        let code = close.reply_code
        let text = String(amqpBytes: close.reply_text)
        let kind: AMQPError.Code = (code == 403 || code == 530) ? .accessRefused : .connectionLost
        return ConnectionFailure(error: AMQPError(kind, "the broker closed the connection: \(text)", replyCode: code))
    }

    // MARK: Reply checks

    /// Checks a reply where a server exception can only be connection-level (login, reads).
    private func checkConnectionLevel(_ reply: amqp_rpc_reply_t, doing what: String) throws {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            throw failure(.connectionLost, "\(what): \(Self.errorText(-Int32(reply.library_error)))")
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == fanfic_amqp_connection_close_method:
            throw connectionClosedByBroker(
                reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee)
        default:
            throw failure(.connectionLost, "\(what): unexpected reply \(reply.reply.id)")
        }
    }

    /// Checks a synchronous method's reply; a channel close becomes an `AMQPError` for the
    /// caller (and the channel is reopened), anything else kills the connection.
    private func checkChannelLevel(_ reply: amqp_rpc_reply_t, channel: UInt16, doing what: String) throws {
        if reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && reply.reply.id == fanfic_amqp_channel_close_method {
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            throw try refusal(close, channel: channel, doing: what)
        }
        try checkConnectionLevel(reply, doing: what)
    }

    /// The broker closed `channel`, refusing `what`: answers the close, reopens the channel, and
    /// returns the refusal for the caller.
    private func refusal(_ close: amqp_channel_close_t, channel: UInt16, doing what: String) throws -> AMQPError {
        let error = AMQPError(
            .channelClosed, "\(what): \(String(amqpBytes: close.reply_text))", replyCode: close.reply_code)
        sendChannelCloseOK(channel)
        try reopenAfterClose(channel: channel, error: error)
        return error
    }

    private func checkStatus(_ status: Int32, _ what: String) throws {
        guard status == AMQP_STATUS_OK.rawValue else { throw failure(.library, "\(what): \(Self.errorText(status))") }
    }

    private func failure(_ code: AMQPError.Code, _ message: String) -> ConnectionFailure {
        ConnectionFailure(error: AMQPError(code, message))
    }

    static func errorText(_ status: Int32) -> String {
        String(cString: amqp_error_string2(status))
    }

    static let publishTagHeader = "x-amqp-publish-tag"

    // MARK: Operations (called by commands, on this thread)

    func run<T>(_ body: () throws -> T) throws -> T {
        guard isConnected else { throw AMQPError(.notConnected, "not connected to the broker") }
        do {
            return try body()
        } catch let failure as ConnectionFailure {
            broken = failure.error
            throw AMQPError(.connectionLost, failure.error.message, replyCode: failure.error.replyCode)
        }
    }

    /// Declares each topology (remembering those that ask to be) and tells each how it ended.
    /// Their methods go out at once and their answers are read after: one round trip for all
    /// of them. The broker stops at a method it refuses (it closes the channel and ignores what
    /// follows); that declaration hears the refusal, and the ones after it go out again.
    func declareTogether(_ declarations: [Declaration]) {
        var pending = declarations[...]
        while !pending.isEmpty {
            guard isConnected else {
                let error = AMQPError(.connectionLost, broken?.message ?? "not connected to the broker")
                for declaration in pending { declaration.finish(error) }
                return
            }
            let methods = pending.map { TopologyMethod.declaring($0.topology) }
            let outcome: (answered: Int, refusal: AMQPError?)
            do {
                outcome = try pipelined(methods.flatMap { $0 })
            } catch let failure as ConnectionFailure {
                broken = failure.error
                outcome = (0, AMQPError(.connectionLost, failure.error.message, replyCode: failure.error.replyCode))
            } catch {
                outcome = (0, AMQPError(.library, "\(error)"))
            }
            var answered = outcome.answered
            for (declaration, count) in zip(pending, methods.map(\.count)) {
                if answered < count, let refusal = outcome.refusal {
                    pending.removeFirst()
                    declaration.finish(refusal)
                    break
                }
                answered -= count
                pending.removeFirst()
                if declaration.remember { topology = topology.merging(declaration.topology) }
                declaration.finish(nil)
            }
            // A lost connection fails the rest at the top of the loop.
        }
    }

    /// Sends `methods` on the RPC channel without waiting for each answer (at most
    /// ``pipelineWindow`` unanswered), and reads the answers in order, handling the frames of
    /// other channels (deliveries, confirms) that arrive between them. Returns how many were
    /// answered and, when the broker refused the next one, its refusal (the channel is reopened);
    /// throws when the connection is unusable.
    private func pipelined(_ methods: [TopologyMethod]) throws -> (answered: Int, refusal: AMQPError?) {
        guard let connection else { throw failure(.connectionLost, "no connection") }
        var sent = 0
        var answered = 0
        var deadline = ContinuousClock.now + configuration.rpcTimeout
        while answered < methods.count {
            if sent < methods.count && sent - answered < Self.pipelineWindow {
                setCork(true)
                while sent < methods.count && sent - answered < Self.pipelineWindow {
                    let status = methods[sent].send(on: connection, channel: Self.rpcChannel)
                    guard status == AMQP_STATUS_OK.rawValue else {
                        throw failure(.connectionLost, "\(methods[sent].what): \(Self.errorText(status))")
                    }
                    sent += 1
                }
                uncorkToAwaitReply()
            }
            let left = deadline - .now
            guard left > .zero else {
                throw failure(
                    .connectionLost, "\(methods[answered].what): no answer within \(configuration.rpcTimeout)")
            }
            var timeout = timeval(left)
            var frame = amqp_frame_t()
            let status = amqp_simple_wait_frame_noblock(connection, &frame, &timeout)
            if status == AMQP_STATUS_TIMEOUT.rawValue { continue }
            guard status == AMQP_STATUS_OK.rawValue else { throw failure(.connectionLost, Self.errorText(status)) }
            if frame.channel == Self.rpcChannel && frame.frame_type == UInt8(AMQP_FRAME_METHOD) {
                let method = frame.payload.method
                if method.id == methods[answered].replyID {
                    answered += 1
                    deadline = ContinuousClock.now + configuration.rpcTimeout
                } else if method.id == fanfic_amqp_channel_close_method {
                    // The broker ignores what was sent after the refused method, until the close-ok.
                    let close = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                    return (answered, try refusal(close, channel: Self.rpcChannel, doing: methods[answered].what))
                } else {
                    throw failure(.connectionLost, "\(methods[answered].what): unexpected reply \(method.id)")
                }
            } else {
                do {
                    try handle(frame)
                } catch let error as AMQPError {
                    throw ConnectionFailure(error: error)
                }
                if let broken { throw ConnectionFailure(error: broken) }
            }
            if amqp_frames_enqueued(connection) == 0 { amqp_maybe_release_buffers(connection) }
        }
        return (answered, nil)
    }

    /// One synchronous method on the RPC channel: call it, then check its reply (a channel-level
    /// refusal becomes an `AMQPError` and the channel is reopened).
    private func rpc<T>(_ what: String, _ call: (amqp_connection_state_t, CArena) -> T) throws -> T {
        guard let connection else { throw failure(.connectionLost, "no connection") }
        uncorkToAwaitReply()
        let arena = CArena()
        let result = call(connection, arena)
        try checkChannelLevel(amqp_get_rpc_reply(connection), channel: Self.rpcChannel, doing: what)
        return result
    }

    private func declareExchange(_ spec: ExchangeSpec, passive: Bool = false) throws {
        _ = try rpc("declare exchange '\(spec.name)'") { connection, arena in
            amqp_exchange_declare(
                connection, Self.rpcChannel, arena.bytes(spec.name), arena.bytes(spec.kind.rawValue),
                passive ? 1 : 0, spec.durable ? 1 : 0, spec.autoDelete ? 1 : 0, 0, arena.table(spec.arguments))
        }
    }

    /// A passive exchange declaration: needs no permission, fails with 404 when there is none.
    func checkExchange(_ name: String) throws {
        try run { try declareExchange(ExchangeSpec(name: name, kind: .direct), passive: true) }
    }

    private func declareQueueNow(_ spec: QueueSpec, passive: Bool) throws -> QueueState {
        let ok = try rpc("declare queue '\(spec.name)'") { connection, arena in
            amqp_queue_declare(
                connection, Self.rpcChannel, arena.bytes(spec.name), passive ? 1 : 0, spec.durable ? 1 : 0,
                spec.exclusive ? 1 : 0, spec.autoDelete ? 1 : 0, arena.table(spec.arguments))
        }
        guard let ok else { throw failure(.library, "queue.declare-ok missing") }
        return QueueState(
            name: String(amqpBytes: ok.pointee.queue), messageCount: ok.pointee.message_count,
            consumerCount: ok.pointee.consumer_count)
    }

    private func bindNow(_ spec: BindingSpec) throws {
        _ = try rpc("bind '\(spec.queue)' to '\(spec.exchange)'") { connection, arena in
            amqp_queue_bind(
                connection, Self.rpcChannel, arena.bytes(spec.queue), arena.bytes(spec.exchange),
                arena.bytes(spec.routingKey), arena.table(spec.arguments))
        }
    }

    func declareQueue(_ spec: QueueSpec, passive: Bool) throws -> QueueState {
        try run { try declareQueueNow(spec, passive: passive) }
    }

    func bind(_ spec: BindingSpec) throws {
        try run { try bindNow(spec) }
    }

    func purgeQueue(_ name: String) throws -> UInt32 {
        try run {
            let ok = try rpc("purge '\(name)'") { connection, arena in
                amqp_queue_purge(connection, Self.rpcChannel, arena.bytes(name))
            }
            return ok?.pointee.message_count ?? 0
        }
    }

    func deleteQueue(_ name: String, ifUnused: Bool, ifEmpty: Bool) throws -> UInt32 {
        try run {
            let ok = try rpc("delete '\(name)'") { connection, arena in
                amqp_queue_delete(connection, Self.rpcChannel, arena.bytes(name), ifUnused ? 1 : 0, ifEmpty ? 1 : 0)
            }
            return ok?.pointee.message_count ?? 0
        }
    }

    func deleteExchange(_ name: String) throws {
        try run {
            _ = try rpc("delete exchange '\(name)'") { connection, arena in
                amqp_exchange_delete(connection, Self.rpcChannel, arena.bytes(name), 0)
            }
        }
    }

    func publish(
        body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        waiter: PublishWaiter
    ) {
        do {
            try run {
                guard let connection else { throw failure(.connectionLost, "no connection") }
                let arena = CArena()
                let tag = nextPublishTag
                var properties = properties
                if mandatory { properties.headers[Self.publishTagHeader] = .int(Int64(tag)) }
                var cProperties = arena.properties(properties)
                let status = amqp_basic_publish(
                    connection, Self.publishChannel, arena.bytes(exchange), arena.bytes(routingKey),
                    mandatory ? 1 : 0, 0, &cProperties, arena.bytes(body))
                guard status == AMQP_STATUS_OK.rawValue else {
                    throw failure(.connectionLost, "publish: \(Self.errorText(status))")
                }
                nextPublishTag += 1
                pendingPublishes.append(PendingPublish(waiter: waiter), tag: tag)
            }
        } catch {
            waiter.finish((error as? AMQPError) ?? AMQPError(.library, "\(error)"))
        }
    }

    func get(queue: String) throws -> AMQPDelivery? {
        try run {
            guard let connection, let owner else { throw failure(.connectionLost, "no connection") }
            let arena = CArena()
            uncorkToAwaitReply()
            let reply = amqp_basic_get(connection, Self.rpcChannel, arena.bytes(queue), 0)
            try checkChannelLevel(reply, channel: Self.rpcChannel, doing: "get from '\(queue)'")
            guard reply.reply.id == fanfic_amqp_basic_get_ok_method else { return nil }
            let ok = reply.reply.decoded.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
            let tag = ok.delivery_tag
            let exchange = String(amqpBytes: ok.exchange)
            let routingKey = String(amqpBytes: ok.routing_key)
            let redelivered = ok.redelivered != 0
            let remaining = ok.message_count
            var message = amqp_message_t()
            try checkConnectionLevel(amqp_read_message(connection, Self.rpcChannel, &message, 0), doing: "read message")
            defer { amqp_destroy_message(&message) }
            return AMQPDelivery(
                body: Data(amqpBytes: message.body),
                properties: CDecoding.properties(message.properties),
                exchange: exchange, routingKey: routingKey, redelivered: redelivered, deliveryTag: tag,
                messageCount: remaining,
                token: DeliveryToken(
                    channel: Self.rpcChannel, channelEpoch: channelEpochs[Self.rpcChannel] ?? 0, tag: tag,
                    consumerID: nil),
                connection: owner)
        }
    }

    func settle(_ token: DeliveryToken, _ settlement: Settlement) throws {
        guard let connection, broken == nil, let epoch = channelEpochs[token.channel], epoch == token.channelEpoch
        else {
            throw AMQPError(
                .staleDelivery, "the channel that carried this delivery is gone; the broker will deliver it again")
        }
        let status: Int32
        switch settlement {
        case .ack: status = amqp_basic_ack(connection, token.channel, token.tag, 0)
        case .nack(let requeue): status = amqp_basic_nack(connection, token.channel, token.tag, 0, requeue ? 1 : 0)
        case .reject(let requeue): status = amqp_basic_reject(connection, token.channel, token.tag, requeue ? 1 : 0)
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            broken = AMQPError(.connectionLost, Self.errorText(status))
            throw AMQPError(.connectionLost, "settle: \(Self.errorText(status))")
        }
        if let id = token.consumerID, let consumer = consumers[id] {
            consumer.unacked.remove(token.tag)
            if consumer.cancelling && consumer.unacked.isEmpty { closeConsumerChannel(consumer) }
        }
    }

    // MARK: Consumers

    func addConsumer(_ consumer: ConsumerState) {
        consumers[consumer.id] = consumer
        guard isConnected else { return }  // subscribed on (re)connect
        do {
            try run { try subscribeOrFinish(consumer) }
        } catch {
            // The connection broke; the consumer stays registered and subscribes on reconnect.
        }
    }

    /// Opens a channel and subscribes; a channel-level refusal (no such queue, exclusive
    /// consumer elsewhere) ends the consumer's stream with the broker's reason.
    private func subscribeOrFinish(_ consumer: ConsumerState) throws {
        guard let connection else { throw failure(.connectionLost, "no connection") }
        let channel =
            freeChannels.popLast()
            ?? { () -> UInt16 in
                defer { nextChannel += 1 }
                return nextChannel
            }()
        do {
            uncorkToAwaitReply()
            amqp_channel_open(connection, channel)
            try checkChannelLevel(amqp_get_rpc_reply(connection), channel: channel, doing: "open channel")
            markOpened(channel)
            amqp_basic_qos(connection, channel, 0, consumer.prefetch, 0)
            try checkChannelLevel(amqp_get_rpc_reply(connection), channel: channel, doing: "basic.qos")
            let arena = CArena()
            let ok = amqp_basic_consume(
                connection, channel, arena.bytes(consumer.queue), amqp_bytes_t(len: 0, bytes: nil), 0, 0,
                consumer.exclusive ? 1 : 0, arena.table(consumer.arguments))
            // Registered only once subscribed: a refusal must not look like a subscription
            // to restore (which would try again, forever).
            try checkChannelLevel(
                amqp_get_rpc_reply(connection), channel: channel, doing: "consume '\(consumer.queue)'")
            consumerByChannel[channel] = consumer.id
            consumer.channel = channel
            consumer.consumerTag = ok.map { String(amqpBytes: $0.pointee.consumer_tag) }
            logger.debug("consuming", metadata: ["amqp.queue": "\(consumer.queue)", "amqp.channel": "\(channel)"])
        } catch let error as AMQPError {
            consumerByChannel[channel] = nil
            channelEpochs[channel] = nil
            consumer.channel = nil
            consumers[consumer.id] = nil
            consumer.continuation.finish(throwing: error)
        }
    }

    func cancelConsumer(id: UInt64) {
        guard let consumer = consumers[id] else { return }
        guard isConnected, let channel = consumer.channel else {
            consumers[id] = nil
            return
        }
        consumer.cancelling = true
        if let tag = consumer.consumerTag, let connection {
            let arena = CArena()
            uncorkToAwaitReply()
            amqp_basic_cancel(connection, channel, arena.bytes(tag))
            do {
                try run {
                    try checkChannelLevel(amqp_get_rpc_reply(connection), channel: channel, doing: "cancel consumer")
                }
            } catch {
                return
            }
            consumer.consumerTag = nil
        }
        // Keep the channel while deliveries are unsettled so their acks still land.
        if consumer.unacked.isEmpty { closeConsumerChannel(consumer) }
    }

    private func closeConsumerChannel(_ consumer: ConsumerState) {
        consumers[consumer.id] = nil
        guard let channel = consumer.channel, let connection else { return }
        consumer.channel = nil
        consumerByChannel[channel] = nil
        channelEpochs[channel] = nil
        uncorkToAwaitReply()
        let reply = amqp_channel_close(connection, channel, AMQP_REPLY_SUCCESS)
        if reply.reply_type == AMQP_RESPONSE_NORMAL {
            freeChannels.append(channel)
        } else if reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION {
            broken = AMQPError(.connectionLost, Self.errorText(-Int32(reply.library_error)))
        }
    }
}

extension timeval {
    init(_ duration: Duration) {
        let parts = duration.components
        self.init(tv_sec: Int(parts.seconds), tv_usec: Int(parts.attoseconds / 1_000_000_000_000))
    }
}
