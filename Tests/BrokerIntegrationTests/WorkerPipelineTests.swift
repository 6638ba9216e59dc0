import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

/// The real `worker` (FanFicFare against its offline test sites, calibredb on a real library,
/// Apprise) with the real `coordinator`, on the real broker.
extension BrokerTests {
    @Suite("Worker pipeline with FanFicFare and Calibre")
    struct WorkerPipelineTests {
        /// A coordinator and one real worker over a fresh library; `extra` adds config sections.
        struct System {
            let roles: RoleProcesses
            var library: TestLibrary
            let client: AMQPConnection
            let events = EventLog()

            /// - Parameter serve: puts the library behind a server and returns its URL for the config.
            init(extra: (URL) throws -> String = { _ in "" }, serve: ((TestLibrary) async throws -> String)? = nil)
                async throws
            {
                // The library folder must exist before the config that names it.
                let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("lib-\(UUID().uuidString)")
                var library = try TestLibrary(in: scratch)
                var location = library.folder.path
                if let serve {
                    location = try await serve(library)
                    library.withLibrary = location
                }
                roles = try RoleProcesses(
                    extraConfig: """
                        [calibre]
                        library = "\(location)"
                        \(try extra(scratch))
                        """)
                self.library = library
                client = try roles.connection()
                try await client.waitUntilConnected(timeout: .seconds(30))
                try await client.declare(
                    FanficTopology.declarations(retry: RetryLadder(delays: [1, 2], hailMaryDelay: 2)))
                try await events.start(client)
                try roles.startCoordinator("coordinator-a")
                try roles.startRealWorker("w1")
            }

            func submit(_ url: String, site: String = "test1.com") async throws {
                try await TaskPublisher(bus: AMQPMessageBus(client)).submit(
                    TaskMessage(url: url, site: site, submittedBy: "test"))
            }

            /// Stops every process now (synchronously: they live in process groups of their own
            /// and would outlive the test run), then closes the client in the background.
            /// Submits a URL whose earlier task has ended, and waits for this run's end. The
            /// coordinator drops a copy of a task it still counts as running: the worker's
            /// `finished` report may reach it after the `task.succeeded` event reached us, so a
            /// copy reported as a duplicate is sent again, as a user would.
            /// `canonical`: the URL the coordinator makes of `url` (events name it), when it differs.
            func submitAgain(_ spelling: String, as canonical: String? = nil, site: String = "test1.com")
                async throws -> FanficEvent
            {
                let url = canonical ?? spelling
                let ended = events.ends(of: url).count
                for _ in 0..<10 {
                    let duplicates = events.of(.taskDuplicate, url: url).count
                    try await submit(spelling, site: site)
                    do {
                        try await waitUntil("\(url) ran again or was reported a duplicate", timeout: .seconds(90)) {
                            events.ends(of: url).count > ended
                                || events.of(.taskDuplicate, url: url).count > duplicates
                        }
                    } catch {
                        // What the roles were doing, for the failure's report.
                        throw TestFailure(
                            "\(error)\n-- coordinator:\n\(roles.logText("coordinator-a").suffix(3000))"
                                + "\n-- w1:\n\(roles.logText("w1").suffix(3000))")
                    }
                    if events.ends(of: url).count > ended { return events.ends(of: url)[ended] }
                }
                throw TestFailure("\(url) was dropped as a duplicate ten times")
            }

            func stop() {
                events.stop()
                roles.stopAll()
                let client = client
                Task { await client.close() }
            }

            func failedReasons() async throws -> [String] {
                var reasons: [String] = []
                while let message = try await client.get(queue: FanficTopology.failed) {
                    if case .string(let reason) = message.properties.headers["x-fanfic-failure-reason"] {
                        reasons.append(reason)
                    }
                    try await message.ack()
                }
                return reasons
            }
        }

        @Test(
            "a series page is read by the real FanFicFare and becomes its first expand_lists stories, each one book; one already in the library stays one book"
        )
        func listExpands() async throws {
            let system = try await System(extra: { _ in "[fanficfare]\nexpand_lists = 4" })
            defer { system.stop() }
            try await system.submit("http://test1.com?sid=2")
            try await system.events.waitForEnd(of: "http://test1.com?sid=2")

            // FanFicFare's offline test site lists sid 1 to 9 on any page that is not a story.
            let page = "http://test1.com/seriesid=1"
            try await system.submit(page)
            let listed = try await system.events.waitForEnd(of: page)
            #expect(listed.kind == .taskSucceeded, "\(listed)")
            #expect(listed.detail == "list: 4 stories queued, the first 4 of 9 (fanficfare.expand_lists)")
            let stories = (1...4).map { "http://test1.com?sid=\($0)" }
            for story in stories {
                try await system.events.waitForEnd(of: story, count: story.hasSuffix("sid=2") ? 2 : 1)
            }
            #expect(stories.allSatisfy { system.events.ends(of: $0).allSatisfy { $0.kind == .taskSucceeded } })
            let books = try system.library.books()
            #expect(books.compactMap { $0.identifiers["url"] }.sorted() == stories, "\(books.map(\.title))")
            #expect(system.events.ends(of: "http://test1.com?sid=5").isEmpty, "past the cap")
        }

        @Test("a new story is one book; ?sid=10 then ?sid=1 are two books; the same URL again updates")
        func newStoriesAndExactLookup() async throws {
            let sink = try NotificationSink(in: FileManager.default.temporaryDirectory)
            let system = try await System(extra: { _ in
                "[notifications]\napprise_urls = [\"\(sink.url)\"]\n[retry]\ndelays = [1, 2]\nhail_mary_delay = 2"
            })
            defer { system.stop() }

            try await system.submit("http://test1.com?sid=10")
            let first = try await system.events.waitForEnd(of: "http://test1.com?sid=10")
            #expect(first.kind == .taskSucceeded && first.detail == "new")
            try await system.submit("http://test1.com?sid=1")
            try await system.events.waitForEnd(of: "http://test1.com?sid=1")

            let books = try system.library.books()
            #expect(books.count == 2, "\(books.map(\.title))")
            let ten = try #require(books.first { $0.identifiers["url"] == "http://test1.com?sid=10" })
            let one = try #require(books.first { $0.identifiers["url"] == "http://test1.com?sid=1" })
            #expect(ten.title == "Test Story Title 10")
            #expect(ten.authors == "Test Author aa")
            #expect(one.title == "Test Story Title 1")
            #expect(first.calibreID == ten.id)

            // Again: found by its exact URL, so no third book.
            let again = try await system.submitAgain("http://test1.com?sid=1")
            #expect(again.kind == .taskSucceeded && again.calibreID == one.id, "\(again)")
            #expect(try system.library.books().count == 2)

            // Two new stories, two notifications with the story URL, through the real Apprise.
            try await waitUntil("both notifications arrived") { sink.received.count >= 2 }
            #expect(sink.received.contains { $0.contains("sid=10") && $0.contains("New story") })
        }

        @Test(
            "every spelling of one story is one book, fetched once per task, with no retry, failure or removal")
        func spellingsAreOneBook() async throws {
            // The wrapper records every argument vector, then runs the real fanficfare.
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("argv-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
            let log = scratch.appendingPathComponent("calls.jsonl")
            let wrapper = scratch.appendingPathComponent("fanficfare-recorder")
            try """
            #!/usr/bin/env python3
            import json, os, sys
            with open(\(String(reflecting: log.path)), "a") as log:
                log.write(json.dumps(sys.argv[1:]) + "\\n")
            os.execvp("fanficfare", ["fanficfare"] + sys.argv[1:])

            """.write(to: wrapper, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: wrapper.path)
            let system = try await System(extra: { _ in "[fanficfare]\ncommand = \"\(wrapper.path)\"" })
            defer { system.stop() }

            // Spellings FanFicFare accepts; it stores http://test2.com?sid=4 in the EPUB, and the
            // coordinator makes each the same canonical URL before any worker sees it.
            let spellings = [
                "http://test2.com/?sid=4", "http://www.test2.com?sid=4#reviews", "http://test2.com?sid=4&chapter=3",
                "http://test2.com?sid=4",
            ]
            let canonical = "http://test2.com?sid=4"
            var ends: [FanficEvent] = []
            for url in spellings {
                ends.append(try await system.submitAgain(url, as: canonical, site: "test2.com"))
            }
            #expect(ends.map(\.kind) == Array(repeating: .taskSucceeded, count: spellings.count), "\(ends)")
            #expect(ends.map(\.detail) == ["new", "up to date", "up to date", "up to date"], "\(ends)")
            #expect(ends.allSatisfy { $0.storyURL == "http://test2.com?sid=4" }, "events carry the story's own URL")
            let books = try system.library.books()
            #expect(books.count == 1, "\(books.map(\.title))")
            #expect(books.first?.identifiers["url"] == "http://test2.com?sid=4")
            #expect(Set(ends.compactMap(\.calibreID)) == Set(books.map(\.id)))
            #expect(system.events.of(.taskRetrying).isEmpty && system.events.of(.taskFailed).isEmpty)
            #expect(try await system.failedReasons().isEmpty)
            #expect(!system.roles.logText("w1").contains("removed it"))

            // One call per task, each naming exactly one story after "--".
            let calls = try String(contentsOf: log, encoding: .utf8).split(separator: "\n").map {
                try JSONDecoder().decode([String].self, from: Data($0.utf8))
            }
            #expect(calls.count == spellings.count, "\(calls)")
            for call in calls {
                let inputs = call.split(separator: "--", maxSplits: 1, omittingEmptySubsequences: false)
                #expect(inputs.count == 2 && inputs[1].count == 1, "one story input: \(call)")
                // Only options before "--" (output_filename=story.epub names where to write).
                let options = (inputs.first ?? []).filter { !$0.hasPrefix("output_filename=") }
                #expect(!options.contains { $0.hasPrefix("http") || $0.hasSuffix(".epub") }, "\(call)")
            }
            #expect(calls.first?.last == canonical, "the download names the canonical URL")
            #expect(calls.dropFirst().allSatisfy { $0.last == "story.epub" }, "updates name only the EPUB")
        }

        @Test(
            "the same URL again updates its book in each metadata mode; custom columns and own tags survive where promised",
            arguments: ["remove_add", "preserve_metadata", "add_format"])
        func updateByMetadataMode(mode: String) async throws {
            let url = "http://test1.com?sid=1001"
            let (system, ini) = try await Self.systemWithStory(chapters: 3, calibre: "metadata_mode = \"\(mode)\"")
            defer { system.stop() }
            let book = try #require(try await Self.add(url, to: system).calibreID)
            try system.library.addCustomColumn()
            try system.library.set(custom: "mine", tags: ["favourite"], on: book)

            // The story grows between runs.
            try Self.storyINI(chapters: 5).write(toFile: ini, atomically: true, encoding: .utf8)
            let updated = try await system.submitAgain(url)
            #expect(updated.kind == .taskSucceeded && updated.detail == "updated", "\(updated)")

            let books = try system.library.books()
            #expect(books.count == 1, "one book, updated, not a second one")
            let after = try #require(books.first)
            #expect(after.identifiers["url"] == url)
            #expect(updated.calibreID == after.id)
            let chapters = try Self.chapterCount(library: system.library, book: after.id)
            #expect(chapters == 5)
            switch mode {
            case "remove_add":
                #expect(after.id != book, "remove_add gives the book a new id")
            case "preserve_metadata":
                #expect(after.id == book)
                #expect(after.custom == "mine")
                #expect(after.tags?.contains("favourite") == true, "\(after.tags ?? [])")
                #expect(after.tags?.contains("Last Update: 2020/02/02") == true, "the story's own tags are current")
            default:
                #expect(after.id == book)
                #expect(after.custom == "mine")
                #expect(after.tags == ["favourite"], "add_format touches nothing but the EPUB")
            }
        }

        @Test(
            "an author removed chapters: the book is kept, kept aside then updated, or updated, as configured",
            arguments: ["keep", "backup_then_update", "update"])
        func fewerChapters(mode: String) async throws {
            let url = "http://test1.com?sid=1001"
            let (system, ini) = try await Self.systemWithStory(chapters: 5, calibre: "on_fewer_chapters = \"\(mode)\"")
            defer { system.stop() }
            let book = try #require(try await Self.add(url, to: system).calibreID)
            #expect(try Self.chapterCount(library: system.library, book: book) == 5)

            // Two chapters taken down, on a later date.
            try Self.storyINI(chapters: 3, updated: "2020-03-03").write(toFile: ini, atomically: true, encoding: .utf8)
            let after = try await system.submitAgain(url)
            #expect(after.kind == .taskSucceeded, "\(after)")
            let books = try system.library.books()
            #expect(books.count == 1, "never a second book")
            let now = try #require(books.first)
            let originals = (now.formats ?? []).filter { $0.lowercased().hasSuffix(".original_epub") }
            switch mode {
            case "keep":
                #expect(now.id == book && originals.isEmpty)
                #expect(try Self.chapterCount(library: system.library, book: now.id) == 5, "the longer copy stays")
                #expect(after.detail?.hasPrefix("kept as it is: the site has 3 chapters, the book 5") == true)
            case "backup_then_update":
                #expect(try Self.chapterCount(library: system.library, book: now.id) == 3)
                #expect(originals.count == 1, "\(now.formats ?? [])")
                #expect(
                    try Self.chapterCount(library: system.library, book: now.id, format: "original_epub") == 5,
                    "the 5-chapter EPUB kept as the book's ORIGINAL_EPUB")
            default:
                #expect(try Self.chapterCount(library: system.library, book: now.id) == 3)
                #expect(originals.isEmpty)
            }
        }

        @Test("sid 666 fails at once; sid 667 walks the whole ladder; a skipped update is forced")
        func failuresAndForce() async throws {
            let system = try await System(extra: { _ in
                "update_method = \"update_always\"\n[retry]\ndelays = [1, 2]\nhail_mary_delay = 2"
            })
            defer { system.stop() }

            try await system.submit("http://test1.com?sid=666")
            let missing = try await system.events.waitForEnd(of: "http://test1.com?sid=666")
            #expect(missing.kind == .taskFailed)
            #expect(system.events.of(.taskRetrying, url: "http://test1.com?sid=666").isEmpty, "no retries")

            try await system.submit("http://test1.com?sid=667")
            let exhausted = try await system.events.waitForEnd(of: "http://test1.com?sid=667", timeout: .seconds(120))
            #expect(exhausted.kind == .taskFailed)
            let tiers = system.events.of(.taskRetrying, url: "http://test1.com?sid=667").compactMap(\.detail)
            #expect(tiers == ["1s", "2s", "hail-mary-2s"])
            #expect(exhausted.attempt == 3, "the Hail Mary was the fourth attempt")

            let reasons = try await system.failedReasons()
            #expect(reasons.count == 2)
            #expect(reasons.contains { $0.contains("does not exist") })
            #expect(reasons.contains { $0.hasPrefix("retries exhausted") })

            // update_always on a 1975 story: FanFicFare skips ("more recently than Story"); forced.
            try await system.submit("http://test1.com?sid=1")
            try await system.events.waitForEnd(of: "http://test1.com?sid=1")
            let forced = try await system.submitAgain("http://test1.com?sid=1")
            #expect(forced.kind == .taskSucceeded && forced.detail == "updated", "\(forced)")
            #expect(system.roles.logText("w1").contains("once more with force"))
            #expect(try system.library.books().count == 1)
        }

        @Test("kill -9 during a slow download leaves no half-written book; the task completes after a restart")
        func crashDuringDownload() async throws {
            let system = try await System()
            defer { system.stop() }
            let url = "http://test1.com?sid=670"
            try await system.submit(url)
            try await waitUntil("the slow download started") { !system.events.of(.taskStarted, url: url).isEmpty }
            system.roles.crash("w1")
            #expect(try system.library.books().isEmpty, "nothing written mid-download")

            try system.roles.startRealWorker("w1")
            let end = try await system.events.waitForEnd(of: url, timeout: .seconds(120))
            #expect(end.kind == .taskSucceeded && end.detail == "new")
            #expect(try system.library.books().count == 1)
        }

        @Test("SIGTERM during a download: the worker finishes the story, then exits cleanly")
        func gracefulStop() async throws {
            let system = try await System()
            defer { system.stop() }
            let url = "http://test1.com?sid=670"
            try await system.submit(url)
            try await waitUntil("the slow download started") { !system.events.of(.taskStarted, url: url).isEmpty }
            #expect(system.roles.stop("w1", timeout: .seconds(60)) == 0, "exit status 0 after SIGTERM")
            let end = try #require(system.events.ends(of: url).first, "the task ended before the worker exited")
            #expect(end.kind == .taskSucceeded)
            #expect(try system.library.books().count == 1)
        }

        @Test("with a Content Server library: new, then an update of the same book, found through the server")
        func contentServer() async throws {
            let system = try await System(serve: { library in
                let server = try await ContentServer(
                    library: library, log: FileManager.default.temporaryDirectory.appendingPathComponent("cs.log").path)
                Self.servers.append(server)
                return server.url
            })
            defer {
                system.stop()
                Self.servers.removeAll()
            }
            try await system.submit("http://test1.com?sid=10")
            let added = try await system.events.waitForEnd(of: "http://test1.com?sid=10")
            #expect(added.kind == .taskSucceeded && added.detail == "new", "\(added)")
            let again = try await system.submitAgain("http://test1.com?sid=10")
            #expect(again.kind == .taskSucceeded && again.calibreID == added.calibreID, "\(again)")
            #expect(try system.library.books().count == 1)
        }

        @Test(
            "through compose's calibre service: docker/calibre-server.sh with basic auth and a user from a secret file")
        func authenticatedContentServer() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("auth-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: scratch) }
            let passwordFile = scratch.appendingPathComponent("calibre_password").path
            let password = UUID().uuidString
            try "\(password)\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
            let port = FreePort.pick(in: 30_000...32_767)
            var server: LaunchedProcess?
            let system = try await System(
                extra: { _ in "username = \"fanfic\"\npassword = \"\(password)\"" },
                serve: { library in
                    server = try LaunchedProcess(
                        [
                            "/usr/bin/env", "CALIBRE_LIBRARY=\(library.folder.path)",
                            "CALIBRE_USERDB=\(scratch.path)/users.sqlite", "CALIBRE_PASSWORD_FILE=\(passwordFile)",
                            "CALIBRE_PORT=\(port)", "CALIBRE_LISTEN=127.0.0.1", "QTWEBENGINE_DISABLE_SANDBOX=1",
                            TestBroker.repositoryRoot.appendingPathComponent("docker/calibre-server.sh").path,
                        ], output: scratch.appendingPathComponent("server.log").path)
                    try await waitUntil("calibre-server listens", timeout: .seconds(60), every: .milliseconds(200)) {
                        (try? ChildProcess.run(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/"]))?.status
                            == 0
                    }
                    let unauthenticated = try ChildProcess.run([
                        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "http://127.0.0.1:\(port)/ajax/library-info",
                    ])
                    #expect(unauthenticated.stdout == "401", "the server asks for credentials")
                    return "http://127.0.0.1:\(port)/#\(library.folder.lastPathComponent)"
                })
            defer {
                system.stop()
                server = nil  // SIGKILL to its group: calibre-server ignores SIGTERM
            }
            var library = system.library
            library.credentials = ("fanfic", passwordFile)
            try await system.submit("http://test1.com?sid=12")
            let added = try await system.events.waitForEnd(of: "http://test1.com?sid=12")
            #expect(added.kind == .taskSucceeded && added.detail == "new", "\(added)")
            let again = try await system.submitAgain("http://test1.com?sid=12")
            #expect(again.kind == .taskSucceeded && again.calibreID == added.calibreID, "\(again)")
            #expect(try library.books().count == 1)
            #expect(!(server?.text.contains(password) ?? true), "the password is never printed")
        }

        nonisolated(unsafe) static var servers: [ContentServer] = []

        /// A system whose FanFicFare reads the test story sid=1001 from an ini file (rewrite it to
        /// change the story); `calibre`: lines for the [calibre] section.
        static func systemWithStory(chapters: Int, calibre: String) async throws -> (System, ini: String) {
            var ini = ""
            let system = try await System(extra: { scratch in
                ini = scratch.appendingPathComponent("stories.ini").path
                try storyINI(chapters: chapters).write(toFile: ini, atomically: true, encoding: .utf8)
                return "\(calibre)\n[fanficfare]\npersonal_ini = \"\(ini)\""
            })
            return (system, ini)
        }

        /// Submits a story and waits for its task's end.
        static func add(_ url: String, to system: System) async throws -> FanficEvent {
            try await system.submit(url)
            return try await system.events.waitForEnd(of: url)
        }

        static func storyINI(chapters: Int, updated: String? = nil) -> String {
            let titles = (1...chapters).map { "Chapter \($0)" }.joined(separator: ",")
            return """
                [teststory:1001]
                title:Growing Story {{storyId}}
                dateUpdated:\(updated ?? (chapters > 3 ? "2020-02-02" : "2020-01-02"))
                chaptertitles:\(titles)

                """
        }

        /// Chapters in the book's EPUB (or another format of it), counted from a fresh export.
        static func chapterCount(library: TestLibrary, book: Int, format: String = "epub") throws -> Int {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            try library.calibredb([
                "export", "--single-dir", "--to-dir", directory.path, "--dont-save-cover", "--dont-write-opf",
                "--formats", format, "\(book)",
            ])
            let epub = try #require(try FileManager.default.contentsOfDirectory(atPath: directory.path).first)
            let listing = try ChildProcess.run(["unzip", "-l", directory.appendingPathComponent(epub).path]).stdout
            return listing.split(separator: "\n").filter { $0.contains("OEBPS/file") && $0.hasSuffix(".xhtml") }.count
        }
    }
}
