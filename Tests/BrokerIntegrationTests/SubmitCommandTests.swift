import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

/// `fanfic submit` as users run it, against the real broker.
extension BrokerTests {
    @Suite("fanfic submit")
    struct SubmitCommandTests {
        static func submit(_ arguments: [String], roles: RoleProcesses) throws -> ChildProcess.Result {
            try ChildProcess.run([BuiltProducts.path("fanfic"), "submit", "--config", roles.configPath] + arguments)
        }

        @Test("queues each story once, says what was a duplicate or not a story, and publishes confirmed tasks")
        func submitsStories() async throws {
            let roles = try RoleProcesses()
            let client = try roles.connection()
            defer { Task { await client.close() } }
            let file = roles.directory.appendingPathComponent("urls.txt")
            try "# my list\nhttp://test2.com?sid=3\n\nhttps://example.com/not-a-story\n".write(
                to: file, atomically: true, encoding: .utf8)
            let run = try Self.submit(
                ["http://test1.com?sid=1", "test1.com?sid=1", "--file", file.path, "--", "--help"], roles: roles)
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stdout.contains("queued 2, 1 duplicate(s), 2 not a story URL"), "\(run.stdout)")
            try await client.waitUntilConnected(timeout: .seconds(30))
            #expect(try await client.queueState(FanficTopology.ingress)?.messageCount == 2)
        }

        @Test("--dry-run --json shows each input's site and canonical URL or why not, and publishes nothing")
        func dryRun() async throws {
            let roles = try RoleProcesses()
            let client = try roles.connection()
            defer { Task { await client.close() } }
            let run = try Self.submit(
                [
                    "--dry-run", "--json", "https://m.fanfiction.net/s/1234567/3/", "ftp://nowhere",
                    "https://archiveofourown.org/series/42", "--", "-o foo=bar",
                ],
                roles: roles)
            #expect(run.status == 0, "\(run.stderr)")
            struct Line: Decodable {
                let input: String
                let status: String
                let site: String?
                let url: String?
                let reason: String?
                let list: Bool?
            }
            let lines = try JSONDecoder().decode([Line].self, from: Data(run.stdout.utf8))
            #expect(lines.count == 4)
            let list = try #require(lines.first { $0.status == "list" }, "a series page is a list (expand_lists)")
            #expect(list.site == "archiveofourown.org" && list.url == "https://archiveofourown.org/series/42")
            #expect(list.list == true && lines.filter { $0.list == true }.count == 1)
            let story = try #require(lines.first { $0.status == "story" })
            #expect(story.site == "www.fanfiction.net")
            #expect(story.url?.hasPrefix("https://www.fanfiction.net/s/1234567/1") == true)
            #expect(lines.filter { $0.status == "refused" }.allSatisfy { $0.reason?.isEmpty == false })
            try await client.waitUntilConnected(timeout: .seconds(30))
            try await client.declare(FanficTopology.declarations(retry: FanficConfiguration().retry.ladder))
            #expect(try await client.queueState(FanficTopology.ingress)?.messageCount == 0, "nothing published")
        }

        @Test("nothing to queue is an error exit")
        func nothingQueued() throws {
            let roles = try RoleProcesses()
            let run = try Self.submit(["https://example.com/x"], roles: roles)
            #expect(run.status == 1)
            #expect(run.stdout.contains("queued 0"))
        }
    }
}
