import Foundation

/// Where and how to connect: parsed from an `amqp://` or `amqps://` URL, then tunable.
///
/// The URL follows RabbitMQ's URI spec: `amqp://user:pass@host:port/vhost?heartbeat=10`.
/// The vhost is percent-decoded (`%2F` is `/`; an empty path is `/` too). For `amqps://`,
/// the query may name `cacertfile`, `certfile`, `keyfile` and `verify=verify_none`.
public struct AMQPConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var virtualHost: String
    public var username: String
    public var password: String
    public var tls: TLS?

    /// Heartbeat interval offered to the broker, in seconds (0 disables: not advised).
    public var heartbeat: Int = 10
    /// TCP connect timeout.
    public var connectTimeout: Duration = .seconds(10)
    /// Timeout for the handshake and for every synchronous method (declare, bind, consume...).
    public var rpcTimeout: Duration = .seconds(15)
    /// How long a call waits for a connection before it fails with `.notConnected`.
    public var commandTimeout: Duration = .seconds(30)
    /// Delay between reconnect attempts.
    public var reconnectBackoff = Backoff()
    /// Shown in the management UI and `rabbitmqctl list_connections`.
    public var connectionName: String = "automated-fanfic"

    /// One node of the broker: where to open the TCP connection.
    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        public var description: String { "\(host):\(port)" }
    }

    /// Other nodes of the same cluster, tried in turn after `host:port` when a connection
    /// fails or is lost (same user, password, virtual host and TLS settings).
    public var alternates: [Endpoint] = []

    /// Every node, the first one first.
    public var endpoints: [Endpoint] { [Endpoint(host: host, port: port)] + alternates }

    /// TLS settings for `amqps://`.
    public struct TLS: Sendable, Hashable {
        public var caCertificatePath: String?
        public var certificatePath: String?
        public var keyPath: String?
        public var verifyPeer: Bool = true
        public var verifyHostname: Bool = true
        public init() {}
    }

    /// Capped exponential backoff with jitter.
    public struct Backoff: Sendable, Hashable {
        public var initial: Duration = .milliseconds(200)
        public var maximum: Duration = .seconds(15)
        public var multiplier: Double = 2
        public init(initial: Duration = .milliseconds(200), maximum: Duration = .seconds(15), multiplier: Double = 2) {
            self.initial = initial
            self.maximum = maximum
            self.multiplier = multiplier
        }

        /// The delay before attempt `n` (0-based), with up to 20 % random jitter so that
        /// many clients dropped at once do not come back in lockstep.
        public func delay(attempt: Int) -> Duration {
            let base = initial.seconds * pow(multiplier, Double(min(attempt, 30)))
            let capped = min(base, maximum.seconds)
            let jittered = capped * Double.random(in: 0.8...1.0)
            return .milliseconds(Int64(jittered * 1000))
        }
    }

    public init(
        host: String = "127.0.0.1",
        port: Int = 5672,
        virtualHost: String = "/",
        username: String = "guest",
        password: String = "guest",
        tls: TLS? = nil
    ) {
        self.host = host
        self.port = port
        self.virtualHost = virtualHost
        self.username = username
        self.password = password
        self.tls = tls
    }

    /// Parses a broker URL, or a comma-separated list of URLs naming the nodes of one cluster
    /// (which must agree on everything but host and port); the error says what is wrong without
    /// echoing the password.
    public init(url: String) throws(AMQPError) {
        let urls = url.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard urls.count > 1 else {
            try self.init(singleURL: url)
            return
        }
        try self.init(singleURL: urls[0])
        for other in urls.dropFirst() {
            let node = try AMQPConfiguration(singleURL: other)
            guard node.username == username, node.password == password, node.virtualHost == virtualHost,
                node.tls == tls, node.heartbeat == heartbeat
            else {
                throw AMQPError(
                    .invalidURL,
                    "the URLs of a cluster must differ only in host and port (same user, password, vhost, scheme)")
            }
            alternates.append(Endpoint(host: node.host, port: node.port))
        }
    }

    private init(singleURL url: String) throws(AMQPError) {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw AMQPError(.invalidURL, "not a URL; expected amqp://user:password@host:port/vhost")
        }
        let secure: Bool
        switch scheme {
        case "amqp": secure = false
        case "amqps": secure = true
        default:
            throw AMQPError(.invalidURL, "scheme '\(scheme)' is not supported; use amqp:// or amqps://")
        }
        guard let host = components.host, !host.isEmpty else {
            throw AMQPError(.invalidURL, "the URL names no host")
        }
        self.init(host: host, port: components.port ?? (secure ? 5671 : 5672))
        if let user = components.percentEncodedUser { username = user.removingPercentEncoding ?? user }
        if let password = components.percentEncodedPassword {
            self.password = password.removingPercentEncoding ?? password
        }
        let path = components.percentEncodedPath
        if path.isEmpty || path == "/" {
            virtualHost = "/"
        } else {
            let encoded = String(path.dropFirst())
            guard !encoded.contains("/") else {
                throw AMQPError(.invalidURL, "the virtual host must be one path segment (write '/' as %2F)")
            }
            virtualHost = encoded.removingPercentEncoding ?? encoded
        }
        if secure { tls = TLS() }
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "heartbeat":
                guard let seconds = Int(value), seconds >= 0 else {
                    throw AMQPError(.invalidURL, "heartbeat must be a whole number of seconds, got '\(value)'")
                }
                heartbeat = seconds
            case "connection_timeout":
                guard let millis = Int64(value), millis > 0 else {
                    throw AMQPError(.invalidURL, "connection_timeout must be milliseconds, got '\(value)'")
                }
                connectTimeout = .milliseconds(millis)
            case "cacertfile": tls?.caCertificatePath = value
            case "certfile": tls?.certificatePath = value
            case "keyfile": tls?.keyPath = value
            case "verify":
                guard value == "verify_none" || value == "verify_peer" else {
                    throw AMQPError(.invalidURL, "verify must be verify_peer or verify_none, got '\(value)'")
                }
                tls?.verifyPeer = value == "verify_peer"
                tls?.verifyHostname = value == "verify_peer"
            case "server_name_indication", "auth_mechanism", "channel_max", "frame_max":
                break  // accepted for compatibility; rabbitmq-c picks these itself
            default:
                throw AMQPError(.invalidURL, "unknown URL parameter '\(item.name)'")
            }
        }
    }

    /// The URL with the password replaced, for logs and status output.
    public var redactedURL: String {
        let scheme = tls == nil ? "amqp" : "amqps"
        let vhost = virtualHost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? virtualHost
        return endpoints.map { "\(scheme)://\(username):***@\($0)/\(vhost)" }.joined(separator: ",")
    }
}

extension Duration {
    /// The duration in seconds, as a floating-point number.
    public var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}
