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

            /// A path to Dovecot that a test can cut (when asked for).
            let imapPath: NetworkPath?

            init(
                coordinators: [String] = ["coordinator-a"], workers: [String] = ["w1", "w2", "w3"],
                retryDelays: [Int] = [1, 2], hailMaryDelay: Int = 2, hailMary: Bool = true, cuttableIMAP: Bool = false
            ) async throws {
                dovecot = try #require(TestDovecot.shared, "dovecot could not be started")
                user = dovecot.freshUser()
                let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)")
                library = try TestLibrary(in: scratch)
                server = try await ContentServer(library: library, log: scratch.appendingPathComponent("cs.log").path)
                library.withLibrary = server.url
                imapPath =
                    cuttableIMAP
                    ? try NetworkPath(port: FreePort.pick(in: 6_000...9_999), target: dovecot.imapPort) : nil
                roles = try RoleProcesses(
                    extraConfig: """
                        [email]
                        server = "127.0.0.1:\(imapPath?.port ?? dovecot.imapPort)"
                        username = "\(user)"
                        password = "secret"
                        tls = "none"
                        sleep_time = 1
                        [calibre]
                        library = "\(server.url)"
                        [retry]
                        delays = \(retryDelays)
                        hail_mary = \(hailMary)
                        hail_mary_delay = \(hailMaryDelay)
                        """)
                client = try roles.connection()
                try await client.waitUntilConnected(timeout: .seconds(30))
                try await client.declare(
                    FanficTopology.declarations(
                        retry: RetryLadder(delays: retryDelays, hailMary: hailMary, hailMaryDelay: hailMaryDelay)))
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
                if !overlaps.isEmpty || !extra.isEmpty || bookURLs.count != Set(bookURLs).count {
                    Issue.record("what the roles logged: \(decisions())", sourceLocation: sourceLocation)
                }
            }

            /// The coordinators' log lines about sites and workers, and the workers' about their
            /// connection: why a site went where it went (a failure in CI leaves nothing else to read).
            func decisions() -> String {
                let coordinatorWords = [
                    "site ", "worker", "presumed", "reclaim", "connect", "active", "rebuil", "table",
                ]
                return roles.logLines(
                    of: ["coordinator-a", "coordinator-b", "coordinator-a2"], containing: coordinatorWords, last: 60)
                    + roles.logLines(
                        of: ["w1", "w2", "w3"], containing: ["connect", "admit", "lost", "redeliver"], last: 60)
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

        /// Fewer stories for the fault tests: two per site, a slow one, one that fails at once.
        static let faultStories = stories.filter { story in
            ["?sid=1", "?sid=2", "?sid=670", "?sid=666"].contains { story.url.hasSuffix($0) }
        }

        /// Mails the fault stories, waits until `ready`, injects the fault, and ends with the checks.
        static func survives(
            _ system: Deployment, _ stories: [(url: String, site: String, expected: Expected)] = faultStories,
            timeout: Duration = .seconds(240), when ready: (Deployment) async throws -> Bool,
            fault: (Deployment) async throws -> Void
        ) async throws {
            try system.mail(stories.map(\.url))
            try await waitUntil("the moment for the fault", timeout: .seconds(120), every: .milliseconds(100)) {
                try await ready(system)
            }
            try await fault(system)
            try await system.waitForRound(1, of: stories.map(\.url), timeout: timeout)
            try await system.verify(stories)
        }

        static func started(_ system: Deployment, _ suffix: String) -> FanficEvent? {
            system.events.of(.taskStarted).first { $0.url?.hasSuffix(suffix) == true }
        }

        @Test("fault: a worker killed with -9 mid-download")
        func workerKilled() async throws {
            let system = try await Deployment()
            defer { system.stop() }
            try await Self.survives(system, when: { Self.started($0, "?sid=670") != nil }) { system in
                let worker = try #require(Self.started(system, "?sid=670")?.worker)
                system.crash(worker)
            }
        }

        @Test("fault: the active coordinator killed, a standby takes over")
        func activeCoordinatorKilled() async throws {
            let system = try await Deployment(coordinators: ["coordinator-a", "coordinator-b"])
            defer { system.stop() }
            try await Self.survives(system, when: { !$0.events.of(.taskSucceeded).isEmpty }) { system in
                system.roles.crash("coordinator-a")
            }
            #expect(system.roles.logText("coordinator-b").contains("active coordinator"))
        }

        @Test("fault: the only coordinator killed and started again")
        func onlyCoordinatorRestarted() async throws {
            let system = try await Deployment()
            defer { system.stop() }
            try await Self.survives(system, when: { !$0.events.of(.taskSucceeded).isEmpty }) { system in
                system.roles.crash("coordinator-a")
                try system.roles.startCoordinator("coordinator-a2")
            }
        }

        @Test("fault: the broker restarted while tasks wait in backlogs, worker queues and a retry tier")
        func brokerRestarted() async throws {
            // Two workers for four sites keep backlogs full; 667 waits 5 s in a retry tier.
            let system = try await Deployment(workers: ["w1", "w2"], retryDelays: [5, 5], hailMaryDelay: 5)
            defer { system.stop() }
            try await Self.survives(system, Self.stories, when: { !$0.events.of(.taskRetrying).isEmpty }) { system in
                var held: [String: UInt32] = [:]
                for queue in [
                    FanficTopology.backlogQueue(site: "test3.com"), FanficTopology.backlogQueue(site: "test4.com"),
                    FanficTopology.workerQueue(id: "w1"), FanficTopology.workerQueue(id: "w2"), "fanfic.retry.5s",
                ] {
                    held[queue] = try await system.client.queueState(queue)?.messageCount ?? 0
                }
                #expect(held.values.reduce(0, +) > 0, "tasks wait somewhere at the restart: \(held)")
                _ = try TestBroker.script("restart")
            }
        }

        @Test("fault: the Calibre Content Server stopped for a minute, then started again")
        func calibreServerStopped() async throws {
            // A ladder that outlasts the outage (tries at 0, 15, 45 and 90 s), without the Hail
            // Mary, whose slow settings would only make the test long.
            let system = try await Deployment(retryDelays: [15, 30, 45], hailMary: false)
            defer { system.stop() }
            try await Self.survives(system, timeout: .seconds(300), when: { !$0.events.of(.taskSucceeded).isEmpty }) {
                system in
                system.server.stop()
                let stoppedAt = ContinuousClock.now
                try await waitUntil("a worker has met the stopped server", timeout: .seconds(60)) {
                    !system.events.of(.taskRetrying).isEmpty
                }
                try await Task.sleep(until: stoppedAt + .seconds(60))
                try await system.server.start()
            }
        }

        @Test("fault: IMAP unreachable for a poll")
        func imapDown() async throws {
            let system = try await Deployment(cuttableIMAP: true)
            defer { system.stop() }
            let path = try #require(system.imapPath)
            path.stop()
            let failedPolls = system.roles.logText("ingester").components(separatedBy: "mailbox not read").count
            try await Self.survives(
                system,
                when: { $0.roles.logText("ingester").components(separatedBy: "mailbox not read").count > failedPolls }
            ) { _ in
                try path.resume()
            }
        }

        @Test("fault: a garbage message published to the ingress queue is parked with its reason")
        func garbageMessage() async throws {
            let system = try await Deployment()
            defer { system.stop() }
            try await Self.survives(system, when: { _ in true }) { system in
                try await system.client.publish(
                    Data("{\"version\": 1, \"url\": 42}".utf8), exchange: FanficTopology.ingress,
                    routingKey: FanficTopology.taskRoutingKey, properties: .persistentJSON())
            }
            let parked = system.events.of(.taskParked)
            #expect(parked.count == 1 && parked.first?.reason?.isEmpty == false, "\(parked)")
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
