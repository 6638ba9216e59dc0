import FanficCore
import Testing

@testable import Coordination

@Suite("Task identities remembered by fingerprint")
struct IdentityFingerprintTests {
    @Test("the same identity gives the same fingerprint; any field that differs gives another")
    func distinguishes() {
        let identity = TaskIdentity(
            url: "https://archiveofourown.org/works/1", site: "archiveofourown.org", calibreID: 7)
        #expect(IdentityFingerprint(identity) == IdentityFingerprint(identity))
        let others = [
            TaskIdentity(url: "https://archiveofourown.org/works/2", site: "archiveofourown.org", calibreID: 7),
            TaskIdentity(url: "https://archiveofourown.org/works/1", site: "test1.com", calibreID: 7),
            TaskIdentity(url: "https://archiveofourown.org/works/1", site: "archiveofourown.org", calibreID: nil),
            TaskIdentity(url: "https://archiveofourown.org/works/1", site: "archiveofourown.org", calibreID: 8),
            // Where one string ends and the next begins is part of the identity.
            TaskIdentity(url: "https://archiveofourown.org/works/1a", site: "rchiveofourown.org", calibreID: 7),
        ]
        for other in others { #expect(IdentityFingerprint(other) != IdentityFingerprint(identity), "\(other)") }
    }

    @Test("100,000 distinct identities, 100,000 distinct fingerprints")
    func noCollisions() {
        var seen = Set<IdentityFingerprint>()
        for n in 0..<100_000 {
            seen.insert(
                IdentityFingerprint(TaskIdentity(url: "http://test1.com?sid=\(n)", site: "test1.com", calibreID: nil)))
        }
        #expect(seen.count == 100_000)
    }
}
