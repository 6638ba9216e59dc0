import Foundation
import TestSupport
import Testing

/// The Docker images run one binary under several names: `fanfic` (and `fanfic-core`) called
/// through a link named after a role must be that role, parsing and running it for real.
@Suite("Multi-call binaries: a link named after a role runs that role")
struct MultiCallTests {
    @Test(
        "fanfic as coordinator, dashboard, ingester and worker; fanfic-core as coordinator",
        arguments: [
            ("fanfic", "coordinator"), ("fanfic", "dashboard"), ("fanfic", "ingester"), ("fanfic", "worker"),
            ("fanfic-core", "coordinator"),
        ])
    func roleByName(binary: String, role: String) throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("multicall-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let link = folder.appendingPathComponent(role).path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: BuiltProducts.path(binary))
        // A role that really runs validates its configuration first: exit 78, the key named.
        let config = folder.appendingPathComponent("config.toml").path
        try Data().write(to: URL(fileURLWithPath: config))
        let result = try ChildProcess.run(["/usr/bin/env", "FANFIC_BROKER_URL=not-a-url", link, "--config", config])
        #expect(result.status == 78, "\(binary) as \(role): status \(result.status)\n\(result.stdout)\(result.stderr)")
        #expect(result.stderr.contains("broker.url"), "\(result.stderr)")
    }

    @Test("dashboard without dashboard.listen, or with a database it cannot open, exits 78 naming the key")
    func dashboardCannotStart() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dashboard-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let config = folder.appendingPathComponent("config.toml").path
        try Data().write(to: URL(fileURLWithPath: config))
        let noListen = try ChildProcess.run([BuiltProducts.path("dashboard"), "--config", config])
        #expect(noListen.status == 78, "\(noListen.stderr)")
        #expect(noListen.stderr.contains("dashboard.listen is empty"), "\(noListen.stderr)")

        let blocker = folder.appendingPathComponent("file")
        try Data("x".utf8).write(to: blocker)
        let badDatabase = try ChildProcess.run([
            "/usr/bin/env", "FANFIC_DASHBOARD_LISTEN=127.0.0.1:1",
            "FANFIC_DASHBOARD_DATABASE=\(blocker.path)/history.sqlite",
            BuiltProducts.path("dashboard"), "--config", config,
        ])
        #expect(badDatabase.status == 78, "\(badDatabase.stderr)")
        #expect(badDatabase.stderr.contains("dashboard.database"), "\(badDatabase.stderr)")
    }
}
