import Download
import ExternalTools
import Foundation
import TestSupport
import Testing
import ZIPFoundation

@Suite("The story's own URL, read from its EPUB")
struct StoryEPUBTests {
    static let container = """
        <?xml version="1.0"?>
        <container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
        <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
        </container>
        """

    static func package(_ metadata: String) -> String {
        """
        <?xml version="1.0" encoding="utf-8"?>
        <package version="2.0" xmlns="http://www.idpf.org/2007/opf" unique-identifier="fanficfare-uid">
        <metadata xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:opf="http://www.idpf.org/2007/opf">
        <dc:identifier id="fanficfare-uid">fanficfare-uid:test2.com-u98765-s4</dc:identifier>
        \(metadata)
        </metadata></package>
        """
    }

    /// An EPUB with these files, in a fresh folder.
    static func epub(_ files: [String: String]) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("epub-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let url = folder.appendingPathComponent("story.epub")
        let archive = try Archive(url: url, accessMode: .create)
        for (path, text) in files.sorted(by: { $0.key < $1.key }) {
            let data = Data(text.utf8)
            try archive.addEntry(
                with: path, type: .file, uncompressedSize: Int64(data.count), compressionMethod: .deflate
            ) { position, size in
                data.subdata(in: Int(position)..<Int(position) + size)
            }
        }
        return url
    }

    @Test("the URL identifier first, then dc:source; entities decoded")
    func identifierThenSource() throws {
        let both = try Self.epub([
            "META-INF/container.xml": Self.container,
            "OEBPS/content.opf": Self.package(
                """
                <dc:source>http://elsewhere.example/s/1</dc:source>
                <dc:identifier opf:scheme="URL">http://test2.com?sid=4&amp;x=&#49;</dc:identifier>
                """),
        ])
        #expect(try StoryEPUB.sourceURL(of: both) == "http://test2.com?sid=4&x=1")
        let sourceOnly = try Self.epub([
            "META-INF/container.xml": Self.container,
            "OEBPS/content.opf": Self.package("<dc:source> https://archiveofourown.org/works/1 </dc:source>"),
        ])
        #expect(try StoryEPUB.sourceURL(of: sourceOnly) == "https://archiveofourown.org/works/1")
    }

    @Test("the title: entities decoded, white space collapsed, cut at 500 characters, absent when empty")
    func title() throws {
        let epub = try Self.epub([
            "META-INF/container.xml": Self.container,
            "OEBPS/content.opf": Self.package(
                """
                <dc:title>  The Dragon&apos;s
                   Tale &amp; &#49;  </dc:title>
                <dc:source>http://test1.com?sid=1</dc:source>
                """),
        ])
        let metadata = try StoryEPUB.metadata(of: epub)
        #expect(metadata.sourceURL == "http://test1.com?sid=1" && metadata.title == "The Dragon's Tale & 1")
        #expect(StoryEPUB.title(inPackage: Self.package("<dc:title> </dc:title>")) == nil)
        #expect(StoryEPUB.title(inPackage: Self.package("")) == nil)
        let long = StoryEPUB.title(
            inPackage: Self.package("<dc:title>\(String(repeating: "a", count: 900))</dc:title>"))
        #expect(long?.count == 500)
    }

    @Test("an EPUB that names no story is a clear error, never a guess")
    func unreadable() throws {
        let cases: [(String, URL)] = [
            (
                "names no source URL",
                try Self.epub([
                    "META-INF/container.xml": Self.container,
                    "OEBPS/content.opf": Self.package("<dc:source>javascript:alert(1)</dc:source>"),
                ])
            ),
            ("no META-INF/container.xml", try Self.epub(["OEBPS/content.opf": Self.package("")])),
            ("lacks its package document", try Self.epub(["META-INF/container.xml": Self.container])),
            (
                "bytes: not a story's metadata",
                try Self.epub([
                    "META-INF/container.xml": Self.container,
                    "OEBPS/content.opf": String(repeating: "<!-- padding -->", count: 300_000),
                ])
            ),
        ]
        for (expected, epub) in cases {
            let error = #expect(throws: StoryEPUB.Unreadable.self) { try StoryEPUB.sourceURL(of: epub) }
            #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
        }
        let notZip = FileManager.default.temporaryDirectory.appendingPathComponent("not-\(UUID().uuidString).epub")
        try "plain text".write(to: notZip, atomically: true, encoding: .utf8)
        #expect(throws: StoryEPUB.Unreadable.self) { try StoryEPUB.sourceURL(of: notZip) }
    }

    @Test("FanFicFare's own EPUB of a trailing-slash spelling names its canonical URL")
    func realFanFicFare() async throws {
        guard ChildProcess.isInstalled("fanficfare") else { return }
        let jail = FileManager.default.temporaryDirectory.appendingPathComponent("epub-ffff-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: jail, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: jail) }
        let result = try ChildProcess.run(
            ["fanficfare", "--non-interactive", "-o", "output_filename=story.epub", "--", "http://test2.com/?sid=4"],
            in: jail.path)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try StoryEPUB.sourceURL(of: jail.appendingPathComponent("story.epub")) == "http://test2.com?sid=4")
    }
}
