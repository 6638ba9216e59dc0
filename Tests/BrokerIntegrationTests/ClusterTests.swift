import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

/// A two-node RabbitMQ cluster on loopback (two nodes of scripts/broker.sh, joined), quorum
/// queues, and clients given both nodes: one node stops mid-run, the clients fail over.
extension BrokerTests {
    @Suite("Two-node RabbitMQ cluster")
    struct ClusterTests {
        /// One node of the test cluster, managed with scripts/broker.sh.
        struct Node {
            let port: Int
            var name: String { "fanfic-test-\(port)@localhost" }
            var directory: String { "/tmp/fanfic-cluster-\(port)" }

            @discardableResult
            func broker(_ arguments: String...) throws -> String {
                let result = try ChildProcess.run(
                    ["/usr/bin/env", "FANFIC_BROKER_PORT=\(port)", "FANFIC_BROKER_DIR=\(directory)", TestBroker.script]
                        + arguments)
                guard result.status == 0 else {
                    throw TestFailure("broker.sh \(arguments) on \(name): \(result.stdout)\(result.stderr)")
                }
                return result.stdout
            }

            var url: String { "amqp://guest:guest@127.0.0.1:\(port)/%2F" }
        }

        @Test("a node stops mid-run: clients fail over to the other, every task runs once, none lost")
        func nodeStopped() async throws {
            let a = Node(port: TestBroker.port + 20)
            let b = Node(port: TestBroker.port + 30)
            for node in [a, b] {
                try? FileManager.default.removeItem(atPath: node.directory)
                try node.broker("start")
            }
            defer {
                for node in [a, b] {
                    _ = try? node.broker("stop")
                    try? FileManager.default.removeItem(atPath: node.directory)
                }
            }
            try b.broker("ctl", "-q", "stop_app")
            try b.broker("ctl", "-q", "reset")
            try b.broker("ctl", "-q", "join_cluster", a.name)
            try b.broker("ctl", "-q", "start_app")
            #expect(try a.broker("ctl", "-q", "cluster_status").contains(b.name))

            let roles = try RoleProcesses()
            defer { roles.stopAll() }
            // The coordinator prefers node a, the workers node b: stopping b moves the workers.
            roles.environment = ["FANFIC_BROKER_URL": "\(a.url),\(b.url)"]
            try roles.startCoordinator("coordinator-a")
            roles.environment = ["FANFIC_BROKER_URL": "\(b.url),\(a.url)"]
            for id in ["w1", "w2", "w3"] { try roles.startWorker(id, taskMilliseconds: 300) }

            var configuration = try AMQPConfiguration(url: "\(a.url),\(b.url)")
            configuration.connectionName = "cluster-test"
            let client = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
            defer { Task { await client.close() } }
            let tasks = (1...24).map { index in
                let site = CoordinatorServiceTests.sites[index % 4]
                return TaskMessage(url: "http://\(site)?sid=\(index)", site: site, submittedBy: "test")
            }
            try await CoordinatorServiceTests.submit(tasks, through: client)
            let queues = try await client.queueState(FanficTopology.ingress)
            #expect(queues != nil)

            try await waitUntil("a third of the tasks ran", timeout: .seconds(60), every: .milliseconds(100)) {
                roles.finishedURLs().count >= 8
            }
            let before = ["w1", "w2", "w3"].map { roles.logText($0).count }
            try b.broker("stop")
            // Each worker moves to node a. With two nodes, a quorum queue has no majority while
            // one is down, so the work itself waits for b (three nodes would carry on).
            try await waitUntil("every worker went to node a", timeout: .seconds(60), every: .milliseconds(200)) {
                zip(["w1", "w2", "w3"], before).allSatisfy { worker, offset in
                    roles.logText(worker).dropFirst(offset).contains("amqp.node=127.0.0.1:\(a.port)")
                }
            }
            try b.broker("start")
            try await CoordinatorServiceTests.expectAllFinishedWithoutOverlap(roles, tasks, timeout: .seconds(120))
            let runs = roles.runs().filter { $0.end != nil }
            let counts = Dictionary(grouping: runs, by: \.url).mapValues(\.count)
            #expect(counts.values.allSatisfy { $0 >= 1 } && counts.count == tasks.count)
            #expect(try await client.queueState(FanficTopology.failed)?.messageCount == 0, "nothing parked")
        }
    }
}
