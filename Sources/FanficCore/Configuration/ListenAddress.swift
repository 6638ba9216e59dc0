/// `dashboard.listen` as the server binds it; also the configuration's check of the key, so the
/// two cannot disagree.
public struct ListenAddress: Sendable, Hashable {
    public let host: String
    public let port: Int

    /// `host:port` (`[::1]:8081` for IPv6); with `loopbackOnly` (no password set) the host is
    /// 127.0.0.1 whatever was given. Nil when it is not host:port.
    public init?(_ listen: String, loopbackOnly: Bool) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
            (1...65_535).contains(port)
        else { return nil }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }) else { return nil }
        self.host = loopbackOnly ? "127.0.0.1" : host
        self.port = port
    }
}
