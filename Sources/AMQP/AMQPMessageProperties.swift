import Foundation

/// The `basic` content properties of a message. Unset values are not sent.
public struct AMQPMessageProperties: Sendable, Hashable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable
    /// 2 is persistent (written to disk by durable queues), 1 transient.
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    /// Per-message TTL in milliseconds, as a decimal string (AMQP's own type).
    public var expiration: String?
    public var messageID: String?
    /// Seconds since 1970.
    public var timestamp: UInt64?
    public var type: String?
    public var appID: String?
    /// The publishing user. The broker refuses a message whose `user_id` is not the user of the
    /// connection that publishes it, so a consumer may believe it.
    public var userID: String?

    public init(
        contentType: String? = nil,
        contentEncoding: String? = nil,
        headers: AMQPTable = [:],
        deliveryMode: UInt8? = nil,
        priority: UInt8? = nil,
        correlationID: String? = nil,
        replyTo: String? = nil,
        expiration: String? = nil,
        messageID: String? = nil,
        timestamp: UInt64? = nil,
        type: String? = nil,
        appID: String? = nil,
        userID: String? = nil
    ) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.deliveryMode = deliveryMode
        self.priority = priority
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageID = messageID
        self.timestamp = timestamp
        self.type = type
        self.appID = appID
        self.userID = userID
    }

    /// Persistent JSON, the default for everything this project publishes.
    public static func persistentJSON(messageID: String? = nil, headers: AMQPTable = [:]) -> Self {
        AMQPMessageProperties(
            contentType: "application/json",
            headers: headers,
            deliveryMode: 2,
            messageID: messageID
        )
    }
}
