import FanficCore
import Foundation
import Testing

/// scripts/compose-test.sh points this at the broker of a running compose project: each role's
/// user, with the password docker/make-secrets.sh made, through the permission matrix. Skipped
/// unless FANFIC_COMPOSE_SECRETS (the project's secrets folder) and FANFIC_COMPOSE_BROKER
/// (host:port of its published AMQP port) are set; FANFIC_COMPOSE_CONFIG, the project's
/// config.toml, gives its retry tiers.
@Suite(
    "Compose's broker: each role's user refused what it must not do",
    .enabled(if: ProcessInfo.processInfo.environment["FANFIC_COMPOSE_SECRETS"] != nil), .timeLimit(.minutes(5)))
struct ComposePermissionTests {
    @Test("the permission matrix against the compose project's RabbitMQ")
    func matrix() async throws {
        let environment = ProcessInfo.processInfo.environment
        let secrets = try #require(environment["FANFIC_COMPOSE_SECRETS"])
        let broker = try #require(environment["FANFIC_COMPOSE_BROKER"], "FANFIC_COMPOSE_BROKER=host:port")
        var urls: [String: String] = [:]
        for role in PermissionMatrix.roles {
            let file = URL(fileURLWithPath: secrets).appendingPathComponent("\(role)_broker_url")
            let url = try String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            // The URLs name the compose service (rabbitmq:5672); this test reaches its published port.
            urls[role] = url.replacingOccurrences(of: "@rabbitmq:5672/", with: "@\(broker)/")
        }
        // The project's retry tiers, the queues its coordinator declared.
        let configuration = try ConfigurationLoader(environment: [:])
            .load(path: environment["FANFIC_COMPOSE_CONFIG"] ?? "/nonexistent", required: false)
        let results = try await PermissionMatrix.run(urls: urls, ladder: configuration.retry.ladder)
        let table = PermissionMatrix.check(results)
        #expect(results.count > 20)
        if let out = environment["FANFIC_COMPOSE_MATRIX_OUT"] {
            try table.write(toFile: out, atomically: true, encoding: .utf8)
        }
    }
}
