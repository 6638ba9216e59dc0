import FanficCore
import Foundation
import MailIngest
import Testing

@Suite("Story links from real-looking emails")
struct StoryLinkExtractionTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus")

    /// Each message of Tests/MailIngestTests/Corpus and the stories it holds (expected.json), as
    /// URLs the site rules canonicalise (so this checks the extraction; SiteRulesTests check the
    /// rules).
    static let expectations: [(String, [String])] = {
        let file = corpus.appendingPathComponent("expected.json")
        let table = (try? JSONDecoder().decode([String: [String]].self, from: Data(contentsOf: file))) ?? [:]
        return table.keys.sorted().map { ($0, table[$0]!) }
    }()

    @Test("the corpus lists its expectations")
    func corpusListed() {
        #expect(Self.expectations.count >= 9)
    }

    @Test("each message yields exactly its stories, each once", arguments: expectations)
    func extraction(file: String, expected: [String]) throws {
        let message = MailMessage(try Data(contentsOf: Self.corpus.appendingPathComponent(file)))
        let found = Ingester.links(in: message).stories.map(\.story.canonicalURL)
        let wanted = StoryLinks.resolve(inputs: expected).stories.map(\.story.canonicalURL)
        #expect(wanted.count == expected.count, "every expectation is itself a story URL")
        #expect(Set(found) == Set(wanted), "found \(found)")
        #expect(found.count == Set(found).count, "no story twice")
    }

    @Test("the same messages with CRLF line ends, as IMAP delivers them, give the same stories")
    func crlf() throws {
        for (file, _) in Self.expectations {
            let text = try String(contentsOf: Self.corpus.appendingPathComponent(file), encoding: .utf8)
            let unix = text.replacingOccurrences(of: "\r\n", with: "\n")
            let crlf = unix.replacingOccurrences(of: "\n", with: "\r\n")
            let fromUnix = Ingester.links(in: MailMessage(Data(unix.utf8))).stories.map(\.story.canonicalURL)
            let fromCRLF = Ingester.links(in: MailMessage(Data(crlf.utf8))).stories.map(\.story.canonicalURL)
            #expect(fromUnix == fromCRLF, "\(file)")
        }
    }

    @Test("headers: folded lines, sender address, encoded-word subject")
    func headers() throws {
        let message = MailMessage(try Data(contentsOf: Self.corpus.appendingPathComponent("multipart-both.eml")))
        #expect(message.sender == "reader@example.com")
        #expect(message.subject == "Café stories")
        #expect(message.parts.count == 2)
        #expect(message.parts.contains { $0.isHTML && $0.text.contains("sid=12") }, "base64 decoded")
    }

    @Test("charsets and quoted-printable decode to the right text")
    func charset() throws {
        let message = MailMessage(try Data(contentsOf: Self.corpus.appendingPathComponent("forwarded.eml")))
        #expect(message.parts.contains { $0.text.contains("Très bien") })
    }

    @Test("links that are not stories are refused with a reason, never queued")
    func refusals() {
        let links = StoryLinks.extract(text: "see https://example.com/page and http://test1.com?sid=1")
        #expect(links.stories.map(\.story.site) == ["test1.com"])
        #expect(links.refused.map(\.input) == ["https://example.com/page"])
    }

    @Test("option-looking and shell-looking inputs are never stories")
    func hostileInputs() {
        let links = StoryLinks.resolve(inputs: [
            "--help", "-o foo=bar", "$(rm -rf ~)", "http://test1.com?sid=1;rm -rf ~",
        ])
        for found in links.stories {
            #expect(!found.story.canonicalURL.hasPrefix("-"))
            #expect(!found.story.canonicalURL.contains(" "))
        }
        #expect(links.refused.count >= 3)
    }
}
