import CalibreLibrary
import Download
import ExternalTools
import Foundation
import Synchronization
import ZIPFoundation

/// A Calibre library in memory: books with a URL identifier, an EPUB and tags.
final class InMemoryLibrary: StoryLibrary {
    struct Book: Sendable {
        var url: String
        var epub: Data
        var tags: [String] = []
        /// The ORIGINAL_EPUB format, once kept.
        var original: Data?
    }

    private let state = Mutex<(books: [Int: Book], nextID: Int)>(([:], 1))

    var books: [Int: Book] { state.withLock { $0.books } }

    /// A book already in the library, as calibre would hold it.
    func hold(_ id: Int, url: String, chapters: Int = 0) throws {
        let epub = try FakeEPUB.make(sourceURL: url, chapters: chapters)
        state.withLock {
            $0.books[id] = Book(url: url, epub: epub)
            $0.nextID = max($0.nextID, id + 1)
        }
    }

    func books(withURL url: String) async throws -> [Int] {
        state.withLock { $0.books.filter { $0.value.url == url }.keys.sorted() }
    }

    func exportEPUB(of book: Int, to directory: URL) async throws -> URL {
        guard let epub = state.withLock({ $0.books[book]?.epub }) else { throw CalibreError("no book \(book)") }
        let file = directory.appendingPathComponent("\(book).epub")
        try epub.write(to: file)
        return file
    }

    func add(_ epub: URL, in jail: URL) async throws -> Int {
        let url = try StoryEPUB.sourceURL(of: epub)
        let data = try Data(contentsOf: epub)
        return state.withLock {
            let id = $0.nextID
            $0.nextID += 1
            $0.books[id] = Book(url: url, epub: data)
            return id
        }
    }

    func remove(_ book: Int, in jail: URL) async throws {
        _ = state.withLock { $0.books.removeValue(forKey: book) }
    }

    func replaceEPUB(of book: Int, with epub: URL, in jail: URL) async throws {
        let data = try Data(contentsOf: epub)
        state.withLock { $0.books[book]?.epub = data }
    }

    func tags(of book: Int, in jail: URL) async throws -> [String] { state.withLock { $0.books[book]?.tags ?? [] } }

    func setMetadata(of book: Int, from opf: URL, in jail: URL) async throws {}

    func setTags(of book: Int, to tags: [String], in jail: URL) async throws {
        state.withLock { $0.books[book]?.tags = tags }
    }

    func writeOPF(of epub: URL, to opf: URL, in jail: URL) async throws {
        try Data(#"<package><metadata></metadata></package>"#.utf8).write(to: opf)
    }

    func keepOriginal(of book: Int, epub: URL, in jail: URL) async throws {
        let data = try Data(contentsOf: epub)
        state.withLock {
            if $0.books[book] != nil, $0.books[book]?.original == nil { $0.books[book]?.original = data }
        }
    }
}

/// FanFicFare played from a script: each run answers the next outcome and, for a success,
/// writes an EPUB naming `storyURL`. Records the modes it was run in.
final class ScriptedDownloader: StoryDownloader {
    struct Step: Sendable {
        var outcome: FanFicFareOutcome
        /// The URL the written EPUB names; nil writes nothing.
        var storyURL: String?
        /// Chapters of the written EPUB.
        var chapters = 0
    }

    private let state: Mutex<(steps: [Step], modes: [FanFicFare.Mode], listed: [String])>
    /// What `fanficfare --list` answers for each page.
    let pages: [String: ListOutcome]

    init(_ steps: [Step], pages: [String: ListOutcome] = [:]) {
        state = Mutex((steps, [], []))
        self.pages = pages
    }

    var modes: [FanFicFare.Mode] { state.withLock { $0.modes } }
    /// The pages listed, in order.
    var listed: [String] { state.withLock { $0.listed } }

    func list(url: String, in jail: URL) async throws -> ListOutcome {
        state.withLock { $0.listed.append(url) }
        guard let outcome = pages[url] else { throw ToolError("the script has no page \(url)") }
        return outcome
    }

    func run(url: String, mode: FanFicFare.Mode, hailMary: Bool, in jail: URL) async throws -> (
        FanFicFareOutcome, ToolResult
    ) {
        let step = state.withLock { state -> Step? in
            state.modes.append(mode)
            return state.steps.isEmpty ? nil : state.steps.removeFirst()
        }
        guard let step else { throw ToolError("the script has no more runs") }
        if let storyURL = step.storyURL {
            try FakeEPUB.make(sourceURL: storyURL, chapters: step.chapters).write(
                to: jail.appendingPathComponent(FanFicFare.outputName))
        }
        return (step.outcome, ToolResult(exitStatus: 0, stdout: "\(step.outcome)", stderr: ""))
    }
}

/// The smallest EPUB whose package names a story URL.
enum FakeEPUB {
    static func make(sourceURL: String, chapters: Int = 0) throws -> Data {
        let archive = try Archive(accessMode: .create)
        var files = [
            "mimetype": "application/epub+zip",
            "META-INF/container.xml":
                #"<container><rootfiles><rootfile full-path="content.opf"/></rootfiles></container>"#,
            "content.opf": """
            <package xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:opf="http://www.idpf.org/2007/opf">
            <metadata><dc:identifier opf:scheme="URL">\(sourceURL)</dc:identifier></metadata></package>
            """,
        ]
        for chapter in 0..<chapters {
            files[String(format: "OEBPS/file%04d.xhtml", chapter + 1)] =
                "<html><body>chapter \(chapter + 1)</body></html>"
        }
        for (path, text) in files.sorted(by: { $0.key < $1.key }) {
            let data = Data(text.utf8)
            try archive.addEntry(with: path, type: .file, uncompressedSize: Int64(data.count)) { position, size in
                data.subdata(in: Int(position)..<Int(position) + size)
            }
        }
        guard let data = archive.data else { throw ToolError("the EPUB was not built") }
        return data
    }
}
