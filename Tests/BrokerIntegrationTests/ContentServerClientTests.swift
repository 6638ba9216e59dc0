import CalibreLibrary
import Foundation
import TestSupport
import Testing

/// The worker's library calls sent to a real calibre-server over HTTP, read back with calibredb.
extension BrokerTests {
    @Suite("A Content Server library through its HTTP endpoints, without calibredb")
    struct ContentServerClientTests {
        @Test("add, read the EPUB back byte for byte, replace it, keep an original once, tags, remove")
        func everyCall() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent(
                "cs-client-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: scratch) }
            var library = try TestLibrary(in: scratch)
            let first = scratch.appendingPathComponent("first.epub")
            let second = scratch.appendingPathComponent("second.epub")
            for (epub, sid) in [(first, 1), (second, 2)] {
                let made = try ChildProcess.run(
                    [
                        "fanficfare", "--non-interactive", "-o", "output_filename=\(epub.path)", "--",
                        "http://test1.com?sid=\(sid)",
                    ])
                try #require(made.status == 0, "\(made.stderr)")
            }
            let server = try await ContentServer(library: library, log: scratch.appendingPathComponent("cs.log").path)
            defer { server.stop() }
            library.withLibrary = server.url
            let location = CalibreLocation(server.url)
            guard case .server(let base, let libraryID) = location else {
                throw TestFailure("not a server: \(location)")
            }
            let client = ContentServerClient(base: base, libraryID: libraryID, credentials: nil)
            let stories = CalibreStoryLibrary(location: location, credentials: nil)

            // A new book carries the EPUB's metadata, read by the server (as calibredb add does).
            let id = try await stories.add(first, in: scratch)
            let added = try #require(try library.books().first { $0.id == id })
            #expect(added.identifiers["url"] == "http://test1.com?sid=1", "\(added)")
            #expect(try await stories.books(withURL: "http://test1.com?sid=1") == [id])

            // The stored EPUB comes back as FanFicFare wrote it, not rewritten by the server.
            let exported = try await stories.exportEPUB(of: id, to: scratch)
            #expect(try Data(contentsOf: exported) == Data(contentsOf: first))

            try await stories.replaceEPUB(of: id, with: second, in: scratch)
            #expect(try await client.format("EPUB", of: id) == Data(contentsOf: second))

            // ORIGINAL_EPUB is kept once: a second copy leaves the first.
            try await stories.keepOriginal(of: id, epub: first, in: scratch)
            try await stories.keepOriginal(of: id, epub: second, in: scratch)
            #expect(try await client.format("ORIGINAL_EPUB", of: id) == Data(contentsOf: first))

            try await stories.setTags(of: id, to: ["Mine", "Theirs, with a comma"], in: scratch)
            // Calibre splits tags on commas: one inside a tag comes back as a semicolon, as with calibredb.
            let tags = try await stories.tags(of: id, in: scratch)
            #expect(Set(tags) == ["Mine", "Theirs; with a comma"], "\(tags)")

            try await stories.remove(id, in: scratch)
            #expect(try library.books().isEmpty)
            #expect(try await stories.books(withURL: "http://test1.com?sid=1").isEmpty)

            // A book that is not there is a clear error, not a crash or a silent success.
            await #expect(throws: CalibreError.self) { try await stories.exportEPUB(of: id, to: scratch) }
            await #expect(throws: CalibreError.self) { try await stories.replaceEPUB(of: id, with: first, in: scratch) }
        }

        @Test("a server that refuses writes answers with a reason that says what to fix")
        func refusals() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent(
                "cs-refuse-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: scratch) }
            var library = try TestLibrary(in: scratch)
            // No --enable-local-write: the server reads, but writes from loopback are refused.
            let (server, port) = try await Self.startServer(of: library, in: scratch, answering: "200")
            defer { _ = server }
            let epub = scratch.appendingPathComponent("story.epub")
            try Data("not really an epub".utf8).write(to: epub)
            let stories = CalibreStoryLibrary(
                location: CalibreLocation("http://127.0.0.1:\(port)/#library"), credentials: nil)
            do {
                _ = try await stories.add(epub, in: scratch)
                Issue.record("the add was accepted")
            } catch let error as CalibreError {
                #expect("\(error)".contains("HTTP 403") && "\(error)".contains("--enable-local-write"), "\(error)")
            }
            // Read through the running server: calibredb on the folder would meet the server's lock.
            library.withLibrary = "http://127.0.0.1:\(port)/#library"
            #expect(try library.books().isEmpty)
        }

        @Test("a server asking for digest authentication (calibre's default over HTTP) is named, with the fix")
        func digestAuthentication() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent(
                "cs-digest-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: scratch) }
            let library = try TestLibrary(in: scratch)
            let users = scratch.appendingPathComponent("users.sqlite").path
            let made = try ChildProcess.run([
                "calibre-debug", "-c",
                "import sys; from calibre.srv.users import UserManager; UserManager(sys.argv[-1]).add_user('fanfic', 'secret', readonly=False)",
                users,
            ])
            try #require(made.status == 0, "\(made.stderr)")
            let (server, port) = try await Self.startServer(
                of: library, in: scratch, options: ["--enable-auth", "--userdb", users], answering: "401")
            defer { _ = server }
            let stories = CalibreStoryLibrary(
                location: CalibreLocation("http://127.0.0.1:\(port)/#library"),
                credentials: CalibreCredentials(username: "fanfic", password: "secret"))
            do {
                _ = try await stories.books(withURL: "http://test1.com?sid=1")
                Issue.record("the lookup was answered")
            } catch let error as CalibreError {
                #expect("\(error)".contains("--auth-mode basic"), "\(error)")
                #expect(!"\(error)".contains("secret"), "the password stays out of the error")
            }
            let anonymous = CalibreStoryLibrary(
                location: CalibreLocation("http://127.0.0.1:\(port)/#library"), credentials: nil)
            do {
                _ = try await anonymous.books(withURL: "http://test1.com?sid=1")
                Issue.record("the lookup was answered without credentials")
            } catch let error as CalibreError {
                #expect("\(error)".contains("HTTP 401") && "\(error)".contains("--auth-mode basic"), "\(error)")
            }
        }

        /// A calibre-server of its own on a free port, once `/ajax/library-info` answers `status`.
        static func startServer(
            of library: TestLibrary, in scratch: URL, options: [String] = [], answering status: String
        ) async throws -> (LaunchedProcess, Int) {
            let port = FreePort.pick(in: 30_000...32_767)
            let server = try LaunchedProcess(
                [
                    "/usr/bin/env", "QTWEBENGINE_DISABLE_SANDBOX=1", "calibre-server", "--listen-on", "127.0.0.1",
                    "--port", "\(port)",
                ] + options + [library.folder.path], output: scratch.appendingPathComponent("server.log").path)
            try await waitUntil("calibre-server listens", timeout: .seconds(30), every: .milliseconds(100)) {
                let probe = try? ChildProcess.run([
                    "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/ajax/library-info",
                ])
                return probe?.stdout == status
            }
            return (server, port)
        }
    }
}
