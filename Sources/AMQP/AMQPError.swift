/// An error from the AMQP client: an opaque code plus what the broker or library said.
///
/// `isRetryable` tells a publisher whether the operation may simply be tried again (the
/// connection dropped before the broker confirmed, the broker was unreachable, a nack);
/// the others (access refused, a queue that does not exist, a precondition) need a human.
public struct AMQPError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, as a stable code to match on.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// The connection dropped while the operation was in flight; a publish may or may not
        /// have reached the broker and must be retried (de-duplication absorbs the double).
        public static let connectionLost = Code(name: "connectionLost")
        /// No connection could be had before the call's deadline.
        public static let notConnected = Code(name: "notConnected")
        /// The broker said no to a publish (`basic.nack`).
        public static let publishNacked = Code(name: "publishNacked")
        /// A mandatory publish could not be routed to any queue (`basic.return`).
        public static let publishReturned = Code(name: "publishReturned")
        /// The broker closed a channel (a precondition failed, a queue was not found, ...).
        public static let channelClosed = Code(name: "channelClosed")
        /// A delivery can no longer be acknowledged: its channel or connection is gone, and the
        /// broker will deliver the message again.
        public static let staleDelivery = Code(name: "staleDelivery")
        /// The broker cancelled a consumer (its queue was deleted, or a failover).
        public static let consumerCancelled = Code(name: "consumerCancelled")
        /// Login refused: wrong user name, password or virtual host permissions.
        public static let accessRefused = Code(name: "accessRefused")
        /// The broker URL cannot be used.
        public static let invalidURL = Code(name: "invalidURL")
        /// The connection was closed by its owner.
        public static let closed = Code(name: "closed")
        /// An error reported by rabbitmq-c that fits none of the above.
        public static let library = Code(name: "library")
    }

    public let code: Code
    /// A human-readable explanation (never contains credentials).
    public let message: String
    /// The AMQP reply code the broker sent, when there was one (404 NOT_FOUND, 406 ...).
    public let replyCode: UInt16?

    public init(_ code: Code, _ message: String, replyCode: UInt16? = nil) {
        self.code = code
        self.message = message
        self.replyCode = replyCode
    }

    /// Whether trying the same operation again (after a reconnect) is the right response.
    public var isRetryable: Bool {
        switch code {
        case .connectionLost, .notConnected, .publishNacked: true
        case .channelClosed: replyCode == nil || replyCode == 320 || replyCode == 541
        default: false
        }
    }

    public var description: String {
        if let replyCode { return "AMQP \(code) (\(replyCode)): \(message)" }
        return "AMQP \(code): \(message)"
    }
}
