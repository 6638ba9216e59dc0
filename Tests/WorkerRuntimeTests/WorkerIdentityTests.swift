import Foundation
import Testing

@testable import WorkerRuntime

@Suite("Worker ids that outlive their container")
struct WorkerIdentityTests {
    @Test("replicas sharing a folder number themselves 1, 2, 3; a number let go is the next one taken")
    func slots() throws {
        let folder = FileManager.default.temporaryDirectory
            .appendingPathComponent("fanfic-slots-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var first: WorkerIdentity.SlotClaim? = try WorkerIdentity.SlotClaim(in: folder)
        let second = try WorkerIdentity.SlotClaim(in: folder)
        let third = try WorkerIdentity.SlotClaim(in: folder)
        #expect([first?.number, second.number, third.number] == [1, 2, 3])
        first = nil  // its container is recreated
        let recreated = try WorkerIdentity.SlotClaim(in: folder)
        #expect(recreated.number == 1)
        #expect(WorkerIdentity.resolve(configured: "", index: recreated.number, hostName: "Home.lan") == "home-1")
        #expect(throws: WorkerIdentity.ClaimError.self) { try WorkerIdentity.SlotClaim(in: folder, limit: 3) }
        _ = first
    }
}
