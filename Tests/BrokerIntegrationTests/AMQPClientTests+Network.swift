import AMQP
import Foundation
import TestSupport
import Testing

/// TLS and network failures; part of the serialized suite, so no restart interferes.
extension BrokerTests.AMQPClientTests {
    @Test("amqps:// connects over TLS with the CA verified, and refuses a server it cannot verify")
    func tlsConnection() async throws {
        let vhost = try TestBroker.makeVirtualHost()
        defer { TestBroker.deleteVirtualHost(vhost) }
        let base = try TestBroker.script("tls-url").trimmingCharacters(in: .whitespacesAndNewlines)
        var configuration = try AMQPConfiguration(url: base.replacingOccurrences(of: "/%2F?", with: "/\(vhost)?"))
        configuration.connectionName = "tls-test"
        #expect(configuration.tls?.verifyPeer == true)
        #expect(configuration.tls?.caCertificatePath?.hasSuffix("ca.pem") == true)

        let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
        try await connection.waitUntilConnected(timeout: .seconds(30))
        try await connection.declareQueue(QueueSpec(name: "secure"))
        try await connection.publish(Data("over tls".utf8), exchange: "", routingKey: "secure")
        let delivery = try #require(await connection.get(queue: "secure"))
        #expect(String(decoding: delivery.body, as: UTF8.self) == "over tls")
        try await delivery.ack()
        let listing = try TestBroker.script("ctl", "-q", "list_connections", "vhost", "ssl")
        #expect(listing.contains("\(vhost)\ttrue"), "\(listing)")
        await connection.close()

        // The same server, without our CA: the certificate cannot be verified.
        var untrusting = configuration
        untrusting.tls?.caCertificatePath = nil
        let refused = AMQPConnection(configuration: untrusting, logger: TestBroker.logger)
        await #expect(throws: AMQPError.self) { try await refused.waitUntilConnected(timeout: .seconds(3)) }
        #expect(refused.lastError?.code == .notConnected)
        await refused.close()
    }

    @Test(
        "a silent network cut is noticed through heartbeats, calls fail instead of hanging, and the client comes back")
    func networkCut() async throws {
        let vhost = try TestBroker.makeVirtualHost()
        defer { TestBroker.deleteVirtualHost(vhost) }
        let path = try NetworkPath(port: TestBroker.port + 10, target: TestBroker.port)
        defer { path.stop() }
        var configuration = try TestBroker.configuration(virtualHost: vhost, heartbeat: 1, name: "cut-test")
        configuration.port = path.port
        configuration.rpcTimeout = .seconds(3)
        configuration.commandTimeout = .seconds(4)
        let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
        try await connection.waitUntilConnected(timeout: .seconds(30))
        try await connection.declareQueue(QueueSpec(name: "across-cut"))
        try await connection.publish(Data("before".utf8), exchange: "", routingKey: "across-cut")

        path.freeze()
        // Nothing is closed: only missing heartbeats can tell.
        try await waitUntil("the client noticed the cut", timeout: .seconds(20)) { !connection.isConnected }
        let duringCut = await #expect(throws: AMQPError.self) {
            try await connection.publish(Data("during".utf8), exchange: "", routingKey: "across-cut")
        }
        #expect(duringCut?.isRetryable == true)

        try path.replace()
        try await waitUntil("the client reconnected", timeout: .seconds(30)) { connection.connectionCount >= 2 }
        try await connection.publish(Data("after".utf8), exchange: "", routingKey: "across-cut", retryFor: .seconds(20))
        var bodies: [String] = []
        while let delivery = try await connection.get(queue: "across-cut") {
            bodies.append(String(decoding: delivery.body, as: UTF8.self))
            try await delivery.ack()
        }
        #expect(bodies == ["before", "after"])
        await connection.close()
    }
}
