import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

/// A site that throttles, on the real system: coordinator, three real workers (FanFicFare for
/// the open sites, calibredb, Apprise), broker. `fanficfare.command` is a script that answers
/// for test4.com with FanFicFare's real 429 output while a flag file exists (and counts the
/// calls), and runs the real `fanficfare` for everything else and for test4.com afterwards.
extension BrokerTests {
    @Suite("Site safety: one cooldown for the fleet")
    struct SiteSafetyTests {
        static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("DownloadTests/Fixtures/site-throttled/stderr.txt")

        /// The fake FanFicFare: one line per call to the throttled site, in `calls`.
        static func fakeFanFicFare(in scratch: URL, calls: URL, flag: URL) throws -> URL {
            let script = scratch.appendingPathComponent("fanficfare-throttled")
            try """
            #!/usr/bin/env python3
            import os, sys, time
            if any("test4.com" in argument for argument in sys.argv[1:]):
                throttled = os.path.exists(\(pythonString(flag.path)))
                with open(\(pythonString(calls.path)), "a") as calls:
                    calls.write("%f %s\\n" % (time.time(), "throttled" if throttled else "answered"))
                if throttled:
                    sys.stderr.write(open(\(pythonString(fixture.path))).read())
                    sys.exit(1)
            os.execvp("fanficfare", ["fanficfare"] + sys.argv[1:])
            """.write(to: script, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script.path)
            return script
        }

        static func pythonString(_ text: String) -> String {
            "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }

        @Test("3 workers, 30 stories over 3 sites, one throttling: one call per cooldown, no retry spent, one notice")
        func throttledSite() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("sites-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
            let library = try TestLibrary(in: scratch)
            let calls = scratch.appendingPathComponent("calls.txt")
            let flag = scratch.appendingPathComponent("throttled")
            FileManager.default.createFile(atPath: flag.path, contents: nil)
            let fake = try Self.fakeFanFicFare(in: scratch, calls: calls, flag: flag)
            let sink = try NotificationSink(in: scratch)
            let cooldown = 4
            let roles = try RoleProcesses(
                extraConfig: """
                    [calibre]
                    library = "\(library.folder.path)"
                    [fanficfare]
                    command = "\(fake.path)"
                    [retry]
                    delays = [1, 2]
                    hail_mary_delay = 2
                    [notifications]
                    apprise_urls = ["\(sink.url)"]
                    [sites]
                    cooldown = \(cooldown)
                    cooldown_max = \(2 * cooldown)
                    """)
            let client = try roles.connection()
            let events = EventLog()
            defer {
                events.stop()
                roles.stopAll()
                Task { await client.close() }
            }
            try await client.waitUntilConnected(timeout: .seconds(30))
            try await client.declare(FanficTopology.declarations(retry: RetryLadder(delays: [1, 2], hailMaryDelay: 2)))
            try await events.start(client)
            try roles.startCoordinator("coordinator-a")
            for id in ["w1", "w2", "w3"] { try roles.startRealWorker(id) }

            let sites = ["test1.com", "test2.com", "test4.com"]
            let urls = sites.flatMap { site in (1...10).map { "http://\(site)?sid=\($0)" } }
            let publisher = TaskPublisher(bus: AMQPMessageBus(client))
            for (index, url) in urls.enumerated() {
                try await publisher.submit(TaskMessage(url: url, site: sites[index / 10], submittedBy: "test"))
            }
            let open = urls.filter { !$0.contains("test4.com") }
            let throttled = urls.filter { $0.contains("test4.com") }

            // The open sites finish while test4.com stays throttled through three pauses.
            do {
                try await waitUntil("the open sites' 20 stories are books", timeout: .seconds(300)) {
                    open.allSatisfy { !events.ends(of: $0).isEmpty }
                }
                try await waitUntil("three pauses of test4.com", timeout: .seconds(120)) {
                    events.of(.sitePaused).count >= 3
                }
            } catch {
                throw TestFailure(
                    "\(error)\n-- coordinator:\n\(roles.logText("coordinator-a").suffix(4000))"
                        + "\n-- w1:\n\(roles.logText("w1").suffix(3000))")
            }
            // `fanfic status` shows the pause, why and until when.
            var shown: [String: Any] = [:]
            try await waitUntil("fanfic status shows test4.com paused", timeout: .seconds(60)) {
                let run = try ChildProcess.run(
                    [BuiltProducts.path("fanfic"), "status", "--config", roles.configPath, "--json"])
                let report = try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
                let paused = (report?["paused_sites"] as? [[String: Any]]) ?? []
                guard let site = paused.first(where: { $0["site"] as? String == "test4.com" }),
                    site["probing"] as? Bool == false
                else { return false }
                shown = site
                return true
            }
            #expect((shown["reason"] as? String)?.contains("throttling us (HTTP 429)") == true, "\(shown)")
            #expect(shown["until"] is String && (shown["pauses"] as? Int ?? 0) >= 1, "\(shown)")
            let text = try ChildProcess.run([BuiltProducts.path("fanfic"), "status", "--config", roles.configPath])
            #expect(text.stdout.contains("Paused sites") && text.stdout.contains("test4.com"), "\(text.stdout)")

            let throttleEnded = Date()
            try FileManager.default.removeItem(at: flag)
            let firstPause = try #require(events.of(.sitePaused).first?.at)

            // Every story ends as a book once the site answers.
            try await waitUntil("all 30 stories are books", timeout: .seconds(300)) {
                urls.allSatisfy { !events.ends(of: $0).isEmpty }
            }
            let books = try library.books()
            #expect(books.count == 30, "\(books.count) books")
            #expect(Set(books.compactMap { $0.identifiers["url"] }) == Set(urls), "each story once")
            for url in urls {
                let end = try #require(events.ends(of: url).first)
                #expect(end.kind == .taskSucceeded && end.attempt == 0, "no retry step spent: \(end)")
            }
            #expect(events.of(.taskRetrying).isEmpty, "no task climbed the ladder")
            #expect(open.allSatisfy { events.of(.taskDeferred, url: $0).isEmpty }, "the open sites never waited")

            // One call per cooldown window while throttled: each call was met by a block, and
            // each block paused the site (no window saw two).
            let lines = try String(contentsOf: calls, encoding: .utf8).split(separator: "\n")
            let duringThrottle = lines.filter { $0.hasSuffix(" throttled") }.compactMap {
                Double($0.split(separator: " ").first ?? "")
            }
            let pauses = events.of(.sitePaused)
            #expect(duringThrottle.count == pauses.count, "calls \(duringThrottle.count), pauses \(pauses.count)")
            let sorted = duringThrottle.sorted()
            for (earlier, later) in zip(sorted, sorted.dropFirst()) {
                #expect(later - earlier >= Double(cooldown) - 0.5, "two calls within one cooldown: \(sorted)")
            }
            // What per-task retries would have made in the same time: each of the 10 tasks
            // once, then once per tier (1 s, 2 s, the 2 s Hail Mary) while the window lasted.
            let window = throttleEnded.timeIntervalSince(firstPause)
            let perTask = throttled.count * 4
            #expect(duringThrottle.count < perTask)
            #expect(events.of(.siteResumed).count == 1)

            // One notification for the outage and one for its end, none per story.
            try await waitUntil("the recovery notice arrived") {
                sink.received.contains { $0.contains("answers again") }
            }
            let blocking = sink.received.filter { $0.contains("is blocking us") }
            #expect(blocking.count == 1, "\(blocking)")
            #expect(blocking.first?.contains("paused until") == true && blocking.first?.contains("waiting") == true)
            #expect(sink.received.filter { $0.contains("answers again") }.count == 1)
            #expect(!sink.received.contains { $0.contains("Story failed") })
            print(
                "site safety: \(duringThrottle.count) calls to the throttled site in \(Int(window)) s of throttling "
                    + "(\(pauses.count) pauses); per-task retries: at least \(perTask)")
        }
    }
}
