import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

/// The real `ingester --once` against a real Dovecot and the real broker.
extension BrokerTests {
    @Suite("Ingester on a real Dovecot")
    struct IngesterTests {
        static let corpus = TestBroker.repositoryRoot.appendingPathComponent("Tests/MailIngestTests/Corpus")

        /// A mailbox, a virtual host and a config for `ingester --once`.
        struct Setup {
            let dovecot: TestDovecot
            let user: String
            let roles: RoleProcesses
            let client: AMQPConnection

            init(
                tls: String = "none", port: ((TestDovecot) -> Int)? = nil, password: String = "secret",
                caFile: Bool = false
            )
                async throws
            {
                let dovecot = try #require(TestDovecot.shared, "dovecot could not be started")
                self.dovecot = dovecot
                user = dovecot.freshUser()
                let server = "127.0.0.1:\(port?(dovecot) ?? dovecot.imapPort)"
                roles = try RoleProcesses(
                    extraConfig: """
                        [email]
                        server = "\(server)"
                        username = "\(user)"
                        password = "\(password)"
                        tls = "\(tls)"
                        ca_file = "\(caFile ? dovecot.certificate : "")"
                        """)
                client = try roles.connection()
                try await client.waitUntilConnected(timeout: .seconds(30))
                try await client.declare(FanficTopology.declarations(retry: FanficConfiguration().retry.ladder))
            }

            func deliver(_ file: String) throws {
                try dovecot.deliver(try Data(contentsOf: IngesterTests.corpus.appendingPathComponent(file)), to: user)
            }

            /// Runs `ingester --once`; returns its exit status and output.
            func pollOnce() throws -> ChildProcess.Result {
                try ChildProcess.run([BuiltProducts.path("ingester"), "--once", "--config", roles.configPath])
            }

            /// The tasks waiting in fanfic.ingress, taken off the queue. A consumer rather than
            /// basic.get, which RabbitMQ refuses on a single-active-consumer quorum queue.
            func queuedTasks() async throws -> [TaskMessage] {
                let count = Int(try await client.queueState(FanficTopology.ingress)?.messageCount ?? 0)
                guard count > 0 else { return [] }
                var tasks: [TaskMessage] = []
                for try await delivery in client.consume(queue: FanficTopology.ingress, prefetch: 100) {
                    tasks.append(try WireCodec.decode(delivery.body))
                    try await delivery.ack()
                    if tasks.count == count { break }
                }
                return tasks
            }

            func close() {
                let client = client
                Task { await client.close() }
            }
        }

        @Test("every kind of email yields exactly its tasks; the mail is then seen and a second poll queues nothing")
        func corpusThroughIMAP() async throws {
            let setup = try await Setup()
            defer { setup.close() }
            var expected: Set<String> = []
            for (file, urls) in StoryLinkCorpus.expectations {
                try setup.deliver(file)
                expected.formUnion(StoryLinks.resolve(inputs: urls).stories.map(\.story.canonicalURL))
            }
            let run = try setup.pollOnce()
            #expect(run.status == 0, "\(run.stderr)")
            let tasks = try await setup.queuedTasks()
            #expect(Set(tasks.map(\.url)) == expected, "\(run.stderr.suffix(3000))")
            #expect(tasks.count == expected.count, "one task per story")
            #expect(tasks.allSatisfy { $0.submittedBy.hasPrefix("email:") })
            // Mail with stories is seen; the one without stays unseen (email.mark_unmatched_seen).
            let states = setup.dovecot.seenStates(of: setup.user)
            #expect(states.filter { $0 }.count == StoryLinkCorpus.expectations.count - 1, "\(states)")
            #expect(states.filter { !$0 }.count == 1)

            let again = try setup.pollOnce()
            #expect(again.status == 0)
            #expect(try await setup.queuedTasks().isEmpty, "nothing new on a second poll")
        }

        @Test("IMAPS with the server's certificate as CA works; without it, TLS fails and the poll says so")
        func implicitTLS() async throws {
            let verified = try await Setup(tls: "implicit", port: { $0.imapsPort }, caFile: true)
            defer { verified.close() }
            try verified.deliver("plain.eml")
            let run = try verified.pollOnce()
            #expect(run.status == 0, "\(run.stderr)")
            #expect(try await verified.queuedTasks().count == 2)

            let unverified = try await Setup(tls: "implicit", port: { $0.imapsPort }, caFile: false)
            defer { unverified.close() }
            try unverified.deliver("plain.eml")
            let refused = try unverified.pollOnce()
            #expect(refused.status == 1)
            #expect(
                refused.stderr.contains("TLS failed") || refused.stderr.contains("certificate"), "\(refused.stderr)")
            #expect(unverified.dovecot.seenStates(of: unverified.user) == [false])
        }

        @Test("a wrong password is a clear error, and nothing is marked")
        func wrongPassword() async throws {
            let setup = try await Setup(password: "wrong")
            defer { setup.close() }
            try setup.deliver("plain.eml")
            let run = try setup.pollOnce()
            #expect(run.status == 1)
            #expect(run.stderr.contains("login refused"), "\(run.stderr)")
            #expect(!run.stderr.contains("wrong"), "the password is never printed")
            #expect(setup.dovecot.seenStates(of: setup.user) == [false])
        }

        @Test("with the broker stopped a poll marks nothing; once it is back the tasks arrive and the mail is seen")
        func brokerDown() async throws {
            let setup = try await Setup()
            defer { setup.close() }
            try setup.deliver("plain.eml")
            try TestBroker.script("stop-app")
            let down: ChildProcess.Result
            do {
                down = try setup.pollOnce()
            } catch {
                try TestBroker.script("start-app")
                throw error
            }
            try TestBroker.script("start-app")
            #expect(down.status == 1)
            #expect(setup.dovecot.seenStates(of: setup.user) == [false], "nothing marked while the broker was down")

            try await setup.client.waitUntilConnected(timeout: .seconds(60))
            let up = try setup.pollOnce()
            #expect(up.status == 0, "\(up.stderr)")
            #expect(try await setup.queuedTasks().count == 2)
            #expect(setup.dovecot.seenStates(of: setup.user) == [true])
        }
    }
}

/// The corpus and its stories: `Tests/MailIngestTests/Corpus/expected.json`.
enum StoryLinkCorpus {
    static let expectations: [(String, [String])] = {
        let file = TestBroker.repositoryRoot.appendingPathComponent("Tests/MailIngestTests/Corpus/expected.json")
        let table = (try? JSONDecoder().decode([String: [String]].self, from: Data(contentsOf: file))) ?? [:]
        return table.keys.sorted().map { ($0, table[$0]!) }
    }()
}
