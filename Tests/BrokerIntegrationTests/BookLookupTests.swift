import CalibreLibrary
import Foundation
import TestSupport
import Testing

/// The library lookup by URL with the real calibre: exact, whatever the URL holds.
extension BrokerTests {
    @Suite("Finding a book by its exact URL, in a folder and through a Content Server")
    struct BookLookupTests {
        @Test("search syntax, quotes and case in a URL select no other book")
        func hostileURLs() async throws {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("lookup-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: scratch) }
            var library = try TestLibrary(in: scratch)
            // Two books: a story URL, and one whose URL differs only in case (sofurry's ids do).
            let stored = "https://www.fanfiction.net/s/1/1/x"
            let epub = scratch.appendingPathComponent("book.epub")
            let made = try ChildProcess.run(
                [
                    "fanficfare", "--non-interactive", "-o", "output_filename=\(epub.path)", "--",
                    "http://test1.com?sid=1",
                ])
            try #require(made.status == 0, "\(made.stderr)")
            let first = try Self.add(epub, url: stored, to: library)
            let second = try Self.add(epub, url: "https://sofurry.com/s/AbC", to: library)

            let server = try await ContentServer(library: library, log: scratch.appendingPathComponent("cs.log").path)
            defer { server.stop() }
            let folderLookup = BookLookup(location: CalibreLocation(library.folder.path))
            let serverLookup = BookLookup(location: CalibreLocation(server.url))
            library.withLibrary = server.url

            for lookup in [folderLookup, serverLookup] {
                #expect(try await lookup.books(withURL: stored) == [first])
                #expect(try await lookup.books(withURL: " \(stored) ") == [first], "calibre stores it trimmed")
                #expect(try await lookup.books(withURL: "https://sofurry.com/s/AbC") == [second])
                #expect(try await lookup.books(withURL: "https://sofurry.com/s/abc").isEmpty, "ids are case-sensitive")
                for hostile in [
                    #"https://www.fanfiction.net/s/1/1/x" or id:1 or ""#, #"x" or id:\#(second) or "x"#,
                    #"https://www.fanfiction.net/s/1/1/x\" or id:1 or \""#,
                    "https://www.fanfiction.net/s/1/1/x) or (id:1",
                    "https://www.fanfiction.net/s/1/1/",
                    #"""
                    x""" or id:1 or """x
                    """#,
                ] {
                    #expect(try await lookup.books(withURL: hostile).isEmpty, "\(hostile) selected a book")
                }
            }
            #expect(
                BookLookup.searchExpression(forURL: #"a"b\c(d)"#) == #"identifiers:"url:=a\"b\\c\(d\)""#)
        }

        /// Adds the EPUB as a new book with this URL identifier; returns its id.
        static func add(_ epub: URL, url: String, to library: TestLibrary) throws -> Int {
            let output = try library.calibredb(["add", "--duplicates", "--identifier", "url:\(url)", epub.path])
            let id = output.split(separator: ":").last.flatMap {
                Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            return try #require(id, "calibredb add said: \(output)")
        }
    }
}
