import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import FanficCore
import Foundation
import Logging

struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Queue stories by URL: arguments, a file (--file), or standard input (-).",
        discussion: """
            Each input is checked against FanFicFare's sites and canonicalised (chapter links, \
            mobile hosts and other spellings of one story become one task); each story is \
            published to fanfic.ingress with a publisher confirm. A series, author or collection \
            page of a known site is queued as a list, which a worker expands into its stories \
            (at most fanficfare.expand_lists of them; 0 refuses lists). Exits 1 when nothing was queued.
            """
    )

    @OptionGroup var options: CommonOptions

    @Argument(help: "Story URLs; '-' reads them from standard input, one per line.")
    var urls: [String] = []

    @Option(name: .long, help: "Read URLs from this file, one per line ('#' starts a comment).")
    var file: String?

    @Flag(help: "Only show what would be queued; publish nothing.")
    var dryRun = false

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Flag(help: "Download again even if the library's copy looks current.")
    var force = false

    func validate() throws {
        if urls.isEmpty && file == nil {
            throw ValidationError("give story URLs, --file FILE, or '-' to read standard input")
        }
    }

    func run() async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let links = try StoryLinks.resolve(inputs: gatherInputs(), lists: configuration.fanficfare.expandLists > 0)
        if !dryRun && !links.stories.isEmpty {
            try await publish(links.stories.map(\.story), configuration: configuration)
        }
        report(links.answers(published: !dryRun), queued: dryRun ? 0 : links.stories.count)
        if links.stories.isEmpty { throw ExitCode.failure }
    }

    private func gatherInputs() throws -> [String] {
        var inputs: [String] = []
        for url in urls {
            if url == "-" {
                while let line = readLine() { inputs.append(line) }
            } else {
                inputs.append(url)
            }
        }
        if let file {
            do {
                inputs += try String(contentsOfFile: file, encoding: .utf8).components(separatedBy: .newlines)
            } catch {
                throw ValidationError("cannot read --file \(file): \(error.localizedDescription)")
            }
        }
        return inputs
    }

    private func publish(_ stories: [SiteRules.Story], configuration: FanficConfiguration) async throws {
        let broker = try await CLIBroker.connect(configuration)
        let connection = broker.connection
        do {
            let publisher = TaskPublisher(bus: broker.bus)
            let who = "cli:\(ProcessInfo.processInfo.environment["USER"] ?? "unknown")"
            let behavior: TaskMessage.Behavior = force ? .force : .normal
            try await withThrowingTaskGroup(of: Void.self) { group in
                for story in stories {
                    let task = TaskMessage(
                        url: story.canonicalURL, site: story.site, behavior: behavior, submittedBy: who)
                    group.addTask { try await publisher.submit(task) }
                }
                try await group.waitForAll()
            }
            await connection.close()
        } catch {
            await connection.close()
            let reason = connection.lastError.map { "\($0)" } ?? "\(error)"
            throw ValidationError(
                "nothing queued: the broker at \(connection.configuration.redactedURL) did not confirm: \(reason)")
        }
    }

    private func report(_ lines: [StoryLinks.Answer], queued: Int) {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            if let data = try? encoder.encode(lines) { print(String(decoding: data, as: UTF8.self)) }
            return
        }
        for line in lines {
            switch line.status {
            case "queued", "story", "list":
                let what = line.status == "queued" ? "queued " : line.status == "list" ? "list   " : "story  "
                print(
                    "\(what)  \(line.site ?? "")  \(line.url ?? "")"
                        + (line.status == "queued" && line.list == true ? "  (a list)" : ""))
            case "duplicate": print("same     \(line.input)  (as \(line.url ?? ""))")
            default: print("refused  \(line.input)  (\(line.reason ?? ""))")
            }
        }
        let stories = lines.filter { ["queued", "story", "list"].contains($0.status) }.count
        let duplicates = lines.filter { $0.status == "duplicate" }.count
        let refused = lines.filter { $0.status == "refused" }.count
        let verb = dryRun ? "would queue" : "queued"
        print("\(verb) \(dryRun ? stories : queued), \(duplicates) duplicate(s), \(refused) not a story URL")
    }
}
