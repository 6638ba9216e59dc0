import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

/// The whole system as users run it: emails in a real Dovecot mailbox, the real `ingester`,
/// `coordinator` and three real `worker`s as separate processes, FanFicFare against its offline
/// test sites, a Calibre Content Server library, RabbitMQ.
extension BrokerTests {
    @Suite("End to end: emails to books through every executable")
    struct EndToEndTests {
        enum Expected: Equatable {
            case book, failed
        }

        /// 40 stories over 4 sites: most succeed; some fail at once (no such story, adult check,
        /// login), one only after the whole retry ladder (667), some are slow (670, 671).
        static let stories: [(url: String, site: String, expected: Expected)] = {
            let specials: [String: [(Int, Expected)]] = [
                "test1.com": [(666, .failed), (664, .book)],
                "test2.com": [(667, .failed), (669, .book)],
                "test3.com": [(670, .book), (665, .failed)],
                "test4.com": [(671, .book), (668, .failed)],
            ]
            return specials.keys.sorted().flatMap { site in
                ((1...8).map { ($0, Expected.book) } + specials[site]!).map {
                    (url: "http://\(site)?sid=\($0.0)", site: site, expected: $0.1)
                }
            }
        }()

        /// Everything one test runs, and the checks every test ends with.
        final class Deployment: @unchecked Sendable {
            let dovecot: TestDovecot
            let user: String
            var library: TestLibrary
            let server: ContentServer
            let roles: RoleProcesses
            let client: AMQPConnection
            let events = EventLog()
            private let lock = NSLock()
            private var killed: [String: Date] = [:]

            init(coordinators: [String] = ["coordinator-a"], workers: [String] = ["w1", "w2", "w3"]) async throws {
                dovecot = try #require(TestDovecot.shared, "dovecot could not be started")
                user = dovecot.freshUser()
                let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)")
                library = try TestLibrary(in: scratch)
                server = try await ContentServer(library: library, log: scratch.appendingPathComponent("cs.log").path)
                library.withLibrary = server.url
                roles = try RoleProcesses(
                    extraConfig: """
                        [email]
                        server = "127.0.0.1:\(dovecot.imapPort)"
                        username = "\(user)"
                        password = "secret"
                        tls = "none"
                        sleep_time = 1
                        [calibre]
                        library = "\(server.url)"
                        [retry]
                        delays = [1, 2]
                        hail_mary_delay = 2
                        """)
                client = try roles.connection()
                try await client.waitUntilConnected(timeout: .seconds(30))
                try await client.declare(
                    FanficTopology.declarations(retry: RetryLadder(delays: [1, 2], hailMaryDelay: 2)))
                try await events.start(client)
                for name in coordinators { try roles.startCoordinator(name) }
                for id in workers { try roles.startRealWorker(id) }
                try roles.startIngester()
            }

            /// Emails the URLs, ten to a message, as a reader forwarding lists would.
            func mail(_ urls: [String]) throws {
                for (index, start) in stride(from: 0, to: urls.count, by: 10).enumerated() {
                    let body = urls[start..<min(start + 10, urls.count)].joined(separator: "\r\n")
                    let message =
                        "From: reader@example.com\r\nSubject: stories \(index)\r\n\r\nPlease get:\r\n\(body)\r\n"
                    try dovecot.deliver(Data(message.utf8), to: user)
                }
            }

            /// A worker killed with -9: its last task's interval ends here.
            func crash(_ worker: String) {
                roles.crash(worker)
                lock.withLock { killed[worker] = Date() }
            }

            /// Waits until every story has ended (succeeded or failed) `round` times.
            func waitForRound(_ round: Int, of stories: [String], timeout: Duration = .seconds(240)) async throws {
                do {
                    try await waitUntil(
                        "every story ended \(round) time(s)", timeout: timeout, every: .milliseconds(250)
                    ) {
                        stories.allSatisfy { self.events.ends(of: $0).count >= round }
                    }
                } catch {
                    let missing = stories.filter { events.ends(of: $0).count < round }
                    let coordinator = String(roles.logText("coordinator-a").suffix(2000))
                    let ingester = String(roles.logText("ingester").suffix(1500))
                    Issue.record("not ended: \(missing)\ncoordinator: \(coordinator)\ningester: \(ingester)")
                    throw error
                }
            }

            /// The checks every end-to-end test ends with: every story accounted for (one book,
            /// or in fanfic.failed with its reason), no duplicate book, never two workers on a site.
            func verify(
                _ stories: [(url: String, site: String, expected: Expected)],
                sourceLocation: SourceLocation = #_sourceLocation
            ) async throws {
                for story in stories {
                    let last = events.ends(of: story.url).last
                    let wanted: FanficEvent.Kind = story.expected == .book ? .taskSucceeded : .taskFailed
                    #expect(
                        last?.kind == wanted, "\(story.url): \(String(describing: last))",
                        sourceLocation: sourceLocation)
                }

                let books = try library.books()
                let bookURLs = books.compactMap { $0.identifiers["url"] }
                let wantedBooks = stories.filter { $0.expected == .book }.map(\.url)
                let extra = Set(bookURLs).subtracting(wantedBooks)
                let missing = Set(wantedBooks).subtracting(bookURLs)
                #expect(
                    bookURLs.sorted() == wantedBooks.sorted(),
                    "one book per story: extra \(extra), missing \(missing), \(bookURLs.count) books",
                    sourceLocation: sourceLocation)

                let listing = try ChildProcess.run([
                    BuiltProducts.path("fanfic"), "failed", "list", "--json", "--config", roles.configPath,
                ])
                struct Parked: Decodable {
                    let url: String?
                    let reason: String
                }
                let parked = (try? JSONDecoder().decode([Parked].self, from: Data(listing.stdout.utf8))) ?? []
                for story in stories where story.expected == .failed {
                    let entries = parked.filter { $0.url == story.url }
                    #expect(!entries.isEmpty, "\(story.url) is in fanfic.failed", sourceLocation: sourceLocation)
                    #expect(
                        entries.allSatisfy { !$0.reason.isEmpty && $0.reason != "(no reason recorded)" },
                        "\(story.url) has its reason: \(entries.map(\.reason))", sourceLocation: sourceLocation)
                }
                #expect(
                    parked.allSatisfy { parkedURL in
                        stories.contains { $0.url == parkedURL.url && $0.expected == .failed }
                    }
                        || parked.contains { $0.url == nil },
                    "only failing stories are parked: \(parked.compactMap(\.url))", sourceLocation: sourceLocation)

                let overlaps = Self.overlaps(events.all, killed: lock.withLock { killed })
                #expect(
                    overlaps.isEmpty, "two workers on one site at once: \(overlaps.prefix(3))",
                    sourceLocation: sourceLocation)
            }

            struct Interval: CustomStringConvertible {
                let worker: String
                let site: String
                let url: String
                let start: Date
                let end: Date
                var description: String {
                    "\(worker) \(url) \(start.timeIntervalSince1970)...\(end.timeIntervalSince1970)"
                }
            }

            /// Each task run from its `task.started` to its outcome event (same worker and task id);
            /// a run whose worker was killed ends at the kill. Runs of one site by two workers must
            /// not overlap.
            static func overlaps(_ events: [FanficEvent], killed: [String: Date]) -> [(Interval, Interval)] {
                var open: [String: FanficEvent] = [:]
                var intervals: [Interval] = []
                let ends: Set<FanficEvent.Kind> = [.taskSucceeded, .taskFailed, .taskRetrying]
                for event in events.sorted(by: { $0.at < $1.at }) {
                    guard let worker = event.worker, let taskID = event.taskID else { continue }
                    let key = "\(worker) \(taskID)"
                    if event.kind == .taskStarted {
                        if let previous = open[key] {
                            intervals.append(interval(previous, end: killed[worker] ?? event.at))
                        }
                        open[key] = event
                    } else if ends.contains(event.kind), let started = open.removeValue(forKey: key) {
                        intervals.append(interval(started, end: event.at))
                    }
                }
                for started in open.values {
                    intervals.append(interval(started, end: killed[started.worker ?? ""] ?? .distantFuture))
                }
                var found: [(Interval, Interval)] = []
                for (site, runs) in Dictionary(grouping: intervals, by: \.site) {
                    _ = site
                    for (index, first) in runs.enumerated() {
                        for second in runs[(index + 1)...] where first.worker != second.worker {
                            if first.start < second.end && second.start < first.end { found.append((first, second)) }
                        }
                    }
                }
                return found
            }

            private static func interval(_ started: FanficEvent, end: Date) -> Interval {
                Interval(
                    worker: started.worker ?? "?", site: started.site ?? "?", url: started.url ?? "?",
                    start: started.at, end: end)
            }

            func stop() {
                events.stop()
                roles.stopAll()
                let client = client
                Task { await client.close() }
            }
        }

        @Test("40 stories over 4 sites by email: each one book or failed with its reason; a second email updates")
        func fortyStories() async throws {
            let system = try await Deployment()
            defer { system.stop() }
            let urls = Self.stories.map(\.url)
            try system.mail(urls)
            try await system.waitForRound(1, of: urls)
            try await system.verify(Self.stories)
            let booksAfterFirst = try system.library.books().count
            #expect(system.dovecot.seenStates(of: system.user).allSatisfy { $0 }, "every email marked seen")

            // The same list again: updates, not duplicates.
            try system.mail(urls)
            try await system.waitForRound(2, of: urls)
            try await system.verify(Self.stories)
            for story in Self.stories where story.expected == .book {
                let second = system.events.ends(of: story.url)[1]
                #expect(second.detail != "new", "\(story.url) was updated, not added again: \(second)")
            }
            #expect(try system.library.books().count == booksAfterFirst)
        }
    }
}
