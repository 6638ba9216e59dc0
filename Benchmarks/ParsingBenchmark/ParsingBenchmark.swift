import FanficCore
import Foundation
import MailIngest

/// How mail parsing and link extraction scale on hostile input (issue: no super-linear parsing).
/// Each case is parsed at 256 KiB and 1 MiB; printed: seconds (median of 3), the ratio to an
/// ordinary 1 MiB mail parsed in the same run, and the growth from 256 KiB to 1 MiB (about 4 for
/// linear work, 16 for quadratic). Figures only: nothing here passes or fails.
@main
enum ParsingBenchmark {
    struct Case: Sendable {
        let name: String
        let make: @Sendable (Int) -> Data
        let parse: @Sendable (Data) -> Void
    }

    static func repeated(_ unit: String, to size: Int, prefix: String = "") -> Data {
        var text = prefix
        text.reserveCapacity(size + unit.utf8.count)
        while text.utf8.count < size { text += unit }
        return Data(text.utf8)
    }

    static func links(html: Bool) -> @Sendable (Data) -> Void {
        { data in _ = StoryLinks.extract(text: String(decoding: data, as: UTF8.self), html: html) }
    }

    @Sendable static func mail(_ data: Data) {
        let message = MailMessage(data)
        _ = message.subject
        for part in message.parts { _ = StoryLinks.extract(text: part.text, html: part.isHTML) }
    }

    static let cases: [Case] = [
        Case(
            name: "ordinary mail (baseline)",
            make: {
                repeated(
                    "Chapter 12 is up! Read it at https://www.fanfiction.net/s/1234567/12/ tonight.\r\n", to: $0,
                    prefix: "From: a@example.com\r\nSubject: update\r\n\r\n")
            },
            parse: mail),
        Case(name: "HTML: '<' with no '>'", make: { repeated("<", to: $0) }, parse: links(html: true)),
        Case(
            name: "HTML: 'href=\"' with no closing quote", make: { repeated("href=\"", to: $0) },
            parse: links(html: true)),
        Case(name: "HTML: '<a href=' unclosed", make: { repeated("<a href='x", to: $0) }, parse: links(html: true)),
        Case(name: "text: 'http://' repeated", make: { repeated("http://", to: $0) }, parse: links(html: false)),
        Case(name: "text: 'http://a ' repeated", make: { repeated("http://a ", to: $0) }, parse: links(html: false)),
        Case(
            name: "mail: one header folded on every line",
            make: { repeated(" x\r\n", to: $0, prefix: "Subject: a\r\n") }, parse: mail),
        Case(
            name: "mail: subject of encoded words",
            make: { repeated("=?utf-8?Q?a?= ", to: $0, prefix: "Subject: ") }, parse: mail),
        Case(
            name: "mail: multipart of empty parts",
            make: {
                repeated(
                    "--b\r\n\r\n", to: $0,
                    prefix: "Content-Type: multipart/mixed; boundary=b\r\n\r\n")
            }, parse: mail),
        Case(
            name: "mail: quoted-printable of '='",
            make: { repeated("=", to: $0, prefix: "Content-Transfer-Encoding: quoted-printable\r\n\r\n") },
            parse: mail),
    ]

    static func seconds(_ body: () -> Void) -> Double {
        var runs: [Double] = []
        for _ in 0..<3 {
            let start = ContinuousClock.now
            body()
            let elapsed = (ContinuousClock.now - start).components
            runs.append(Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
        }
        return runs.sorted()[1]
    }

    static func main() {
        let small = 256 << 10
        let large = 1 << 20
        var baseline: Double?
        print("case\tseconds (1 MiB)\tx baseline\tgrowth 256K->1M")
        for benchmark in cases {
            let smallInput = benchmark.make(small)
            let largeInput = benchmark.make(large)
            let smallTime = seconds { benchmark.parse(smallInput) }
            let largeTime = seconds { benchmark.parse(largeInput) }
            if baseline == nil { baseline = largeTime }
            print(
                "\(benchmark.name)\t\(String(format: "%.3f", largeTime))\t\(String(format: "%.1f", largeTime / baseline!))\t\(String(format: "%.1f", largeTime / max(smallTime, 1e-9)))"
            )
        }
    }
}
