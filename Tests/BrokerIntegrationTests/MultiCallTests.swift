import Foundation
import TestSupport
import Testing

/// The Docker images run one binary under several names: `fanfic` (and `fanfic-core`) called
/// through a link named after a role must be that role, parsing and running it for real.
@Suite("Multi-call binaries: a link named after a role runs that role")
struct MultiCallTests {
    @Test(
        "fanfic as coordinator, ingester and worker; fanfic-core as coordinator",
        arguments: [
            ("fanfic", "coordinator"), ("fanfic", "ingester"), ("fanfic", "worker"), ("fanfic-core", "coordinator"),
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
}
