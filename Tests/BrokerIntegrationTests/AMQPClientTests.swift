import AMQP
import FanficBroker
import FanficCore
import Foundation
import Synchronization
import TestSupport
import Testing

/// The AMQP client against the real broker started by `scripts/broker.sh`. Serialized: some
/// tests close every connection or restart the node.
extension BrokerTests {
    @Suite("AMQP client against a real RabbitMQ")
    struct AMQPClientTests {
        let ladder = RetryLadder(delays: [2, 4], hailMary: true, hailMaryDelay: 6)

        @Test("a confirmed publish is consumed and acked")
        func confirmedPublishIsConsumedAndAcked() async throws {
            try await TestBroker.withConnection { connection, _ in
                try await connection.declare(FanficTopology.declarations(retry: ladder))
                let task = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "test")
                try await TaskPublisher(bus: AMQPMessageBus(connection)).submit(task)

                let ingress = try #require(await connection.queueState(FanficTopology.ingress))
                #expect(ingress.messageCount == 1)

                var received: TaskMessage?
                for try await delivery in connection.consume(queue: FanficTopology.ingress) {
                    #expect(delivery.properties.deliveryMode == 2)
                    #expect(delivery.properties.contentType == "application/json")
                    received = try WireCodec.decode(delivery.body)
                    try await delivery.ack()
                    break
                }
                #expect(received == task)
                try await waitUntil("the ack has emptied the queue") {
                    try await connection.queueState(FanficTopology.ingress)?.messageCount == 0
                }
            }
        }

        @Test("publishes each started once the one before holds its place arrive in order, many in flight at once")
        func submittedOrder() async throws {
            try await TestBroker.withConnection { connection, _ in
                let queue = "in-order"
                _ = try? await connection.deleteQueue(queue)
                try await connection.declareQueue(QueueSpec(name: queue))
                let count = 300
                let gates = (0...count).map { _ in AsyncStream.makeStream(of: Void.self) }
                let flight = InFlight()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // Started in reverse: each publish waits for its gate, never for a confirm.
                    for index in (0..<count).reversed() {
                        group.addTask {
                            for await _ in gates[index].stream { break }
                            try await connection.publish(
                                Data("\(index)".utf8), exchange: "", routingKey: queue, mandatory: true
                            ) {
                                flight.counts.withLock {
                                    $0.now += 1; $0.most = max($0.most, $0.now)
                                }
                                gates[index + 1].continuation.yield()
                            }
                            flight.counts.withLock { $0.now -= 1 }
                        }
                    }
                    gates[0].continuation.yield()
                    try await group.waitForAll()
                }
                // Without the early call each publish would wait for the confirm before it.
                #expect(flight.counts.withLock { $0.most } > 1)
                var bodies: [String] = []
                for try await delivery in connection.consume(queue: queue, prefetch: 100) {
                    bodies.append(String(decoding: delivery.body, as: UTF8.self))
                    try await delivery.ack()
                    if bodies.count == count { break }
                }
                #expect(bodies == (0..<count).map { "\($0)" })
                _ = try? await connection.deleteQueue(queue)
            }
        }

        @Test("a mandatory publish nobody can take is returned as an error")
        func unroutableMandatoryPublishIsReturned() async throws {
            try await TestBroker.withConnection { connection, _ in
                try await connection.declare(AMQPTopology(exchanges: [ExchangeSpec(name: "lonely", kind: .direct)]))
                let error = await #expect(throws: AMQPError.self) {
                    try await connection.publish(
                        Data("x".utf8), exchange: "lonely", routingKey: "nobody", mandatory: true)
                }
                #expect(error?.code == .publishReturned)
                #expect(error?.replyCode == 312)
                // Not mandatory: the broker confirms and drops it, as AMQP says.
                try await connection.publish(Data("x".utf8), exchange: "lonely", routingKey: "nobody")
            }
        }

        @Test("a publish the broker refuses (basic.nack) is an error the caller sees")
        func nackedPublishIsAnError() async throws {
            try await TestBroker.withConnection { connection, _ in
                // A full queue that rejects new messages: the broker nacks the publish.
                try await connection.declareQueue(
                    QueueSpec(name: "full", arguments: ["x-max-length": 1, "x-overflow": "reject-publish"]))
                try await connection.publish(Data("first".utf8), exchange: "", routingKey: "full")
                let error = await #expect(throws: AMQPError.self) {
                    try await connection.publish(Data("second".utf8), exchange: "", routingKey: "full")
                }
                #expect(error?.code == .publishNacked)
                #expect(error?.isRetryable == true)
                #expect(try await connection.queueState("full")?.messageCount == 1)
            }
        }

        @Test("a publish with a callback hears the confirm, or the broker's nack, on the callback")
        func callbackPublish() async throws {
            try await TestBroker.withConnection { connection, _ in
                _ = try? await connection.deleteQueue("callback-full")
                try await connection.declareQueue(
                    QueueSpec(name: "callback-full", arguments: ["x-max-length": 1, "x-overflow": "reject-publish"]))
                func publish(_ text: String) async -> AMQPError? {
                    await withCheckedContinuation { continuation in
                        connection.publish(Data(text.utf8), exchange: "", routingKey: "callback-full") {
                            continuation.resume(returning: $0)
                        }
                    }
                }
                #expect(await publish("first") == nil)
                #expect(await publish("second")?.code == .publishNacked)
                #expect(try await connection.queueState("callback-full")?.messageCount == 1)
                _ = try? await connection.deleteQueue("callback-full")
            }
        }

        @Test(
            "callback publishes in a burst arrive in call order, a query among them is answered, acks without waiting settle"
        )
        func callbackBurst() async throws {
            try await TestBroker.withConnection { connection, vhost in
                let queue = "callback-burst"
                _ = try? await connection.deleteQueue(queue)
                try await connection.declareQueue(QueueSpec(name: queue))
                try await connection.declare(AMQPTopology(exchanges: [ExchangeSpec(name: "lonely", kind: .direct)]))
                let count = 500
                let (outcomes, outcome) = AsyncStream.makeStream(of: AMQPError?.self)
                // No await between them: they reach the connection's thread together, and leave
                // as runs of sends (corked), with a query and a returned publish in the middle.
                for index in 0..<count / 2 {
                    connection.publish(Data("\(index)".utf8), exchange: "", routingKey: queue, mandatory: true) {
                        outcome.yield($0)
                    }
                }
                async let asked = connection.queueState(queue)
                connection.publish(Data("x".utf8), exchange: "lonely", routingKey: "nobody", mandatory: true) {
                    outcome.yield($0)
                }
                for index in count / 2..<count {
                    connection.publish(Data("\(index)".utf8), exchange: "", routingKey: queue, mandatory: true) {
                        outcome.yield($0)
                    }
                }
                #expect(try await asked != nil, "the query is answered")
                var confirmed = 0
                var errors: [AMQPError] = []
                for await result in outcomes {
                    if let result { errors.append(result) } else { confirmed += 1 }
                    if confirmed + errors.count == count + 1 { break }
                }
                #expect(confirmed == count)
                #expect(errors.map(\.code) == [.publishReturned], "the one nobody takes comes back")

                // Consumed on a connection of its own, closed right after the last ack: the acks
                // still reach the broker (else the messages would be back in the queue).
                let consumer = AMQPConnection(
                    configuration: try TestBroker.configuration(virtualHost: vhost, name: "burst-consumer"),
                    logger: TestBroker.logger)
                try await consumer.waitUntilConnected(timeout: .seconds(30))
                var bodies: [String] = []
                do {
                    for try await delivery in consumer.consume(queue: queue, prefetch: 100) {
                        bodies.append(String(decoding: delivery.body, as: UTF8.self))
                        delivery.ackWithoutWaiting()
                        if bodies.count == count { break }
                    }
                } catch {
                    await consumer.close()
                    throw error
                }
                await consumer.close()
                #expect(bodies == (0..<count).map { "\($0)" })
                #expect(try await connection.queueState(queue)?.messageCount == 0, "every ack reached the broker")
                _ = try? await connection.deleteQueue(queue)
            }
        }

        @Test("a consumer stopped with deliveries unsettled: their acks, sent in a burst, land and end its channel")
        func acksAfterStoppingLand() async throws {
            try await TestBroker.withConnection { connection, vhost in
                let queue = "acks-after-stop"
                _ = try? await connection.deleteQueue(queue)
                try await connection.declareQueue(QueueSpec(name: queue))
                let count = 200
                for index in 0..<count {
                    try await connection.publish(Data("\(index)".utf8), exchange: "", routingKey: queue)
                }
                let consumer = AMQPConnection(
                    configuration: try TestBroker.configuration(virtualHost: vhost, name: "stopped-consumer"),
                    logger: TestBroker.logger)
                try await consumer.waitUntilConnected(timeout: .seconds(30))
                var held: [AMQPDelivery] = []
                for try await delivery in consumer.consume(queue: queue, prefetch: UInt16(count)) {
                    held.append(delivery)
                    if held.count == count { break }
                }
                // The subscription is cancelled; the acks go out together (a corked run of sends),
                // and the last one closes the consumer's channel, which waits for the broker.
                for delivery in held { delivery.ackWithoutWaiting() }
                #expect(try await consumer.queueState(queue)?.consumerCount == 0, "the connection still answers")
                await consumer.close()
                #expect(try await connection.queueState(queue)?.messageCount == 0, "every ack reached the broker")
                _ = try? await connection.deleteQueue(queue)
            }
        }

        @Test("a publish to a missing exchange fails, and the next publish works")
        func publishToMissingExchangeFailsAndChannelRecovers() async throws {
            try await TestBroker.withConnection { connection, _ in
                let error = await #expect(throws: AMQPError.self) {
                    try await connection.publish(Data("x".utf8), exchange: "does-not-exist", routingKey: "k")
                }
                #expect(error?.code == .channelClosed)
                #expect(error?.replyCode == 404)
                try await connection.declareQueue(QueueSpec(name: "after-error"))
                try await connection.publish(Data("ok".utf8), exchange: "", routingKey: "after-error")
                let delivery = try #require(await connection.get(queue: "after-error"))
                #expect(String(decoding: delivery.body, as: UTF8.self) == "ok")
                try await delivery.ack()
                #expect(connection.connectionCount == 1)
            }
        }

        @Test("passive declare reports counts, and nil for a missing queue; purge and delete")
        func passiveDeclareAndQueueManagement() async throws {
            try await TestBroker.withConnection { connection, _ in
                #expect(try await connection.queueState("missing") == nil)
                try await connection.declareQueue(QueueSpec(name: "counted"))
                for index in 0..<3 {
                    try await connection.publish(Data("\(index)".utf8), exchange: "", routingKey: "counted")
                }
                #expect(try await connection.queueState("counted")?.messageCount == 3)
                #expect(try await connection.purgeQueue("counted") == 3)
                #expect(try await connection.queueState("counted")?.messageCount == 0)
                try await connection.deleteQueue("counted")
                #expect(try await connection.queueState("counted") == nil)
            }
        }

        @Test("a changed queue argument is refused with the broker's reason, and the client carries on")
        func conflictingDeclarationIsAnError() async throws {
            try await TestBroker.withConnection { connection, _ in
                try await connection.declareQueue(QueueSpec(name: "ttl").messageTTL(milliseconds: 1000))
                let error = await #expect(throws: AMQPError.self) {
                    try await connection.declareQueue(QueueSpec(name: "ttl").messageTTL(milliseconds: 2000))
                }
                #expect(error?.replyCode == 406)
                #expect(error?.message.contains("x-message-ttl") == true)
                #expect(try await connection.queueState("ttl") != nil)
            }
        }

        @Test(
            "a topology refused in its middle names what was refused, keeps what came before, and the client carries on"
        )
        func topologyRefusedInTheMiddle() async throws {
            try await TestBroker.withConnection { connection, _ in
                try await connection.declareQueue(QueueSpec(name: "middle-ttl").messageTTL(milliseconds: 1000))
                let error = await #expect(throws: AMQPError.self) {
                    try await connection.declare(
                        AMQPTopology(queues: [
                            QueueSpec(name: "middle-before"),
                            QueueSpec(name: "middle-ttl").messageTTL(milliseconds: 2000),
                            QueueSpec(name: "middle-after"),
                        ]))
                }
                #expect(error?.replyCode == 406)
                #expect(error?.message.contains("declare queue 'middle-ttl'") == true)
                #expect(try await connection.queueState("middle-before") != nil)
                try await connection.declare(AMQPTopology(queues: [QueueSpec(name: "middle-after")]))
                #expect(try await connection.queueState("middle-after") != nil)
            }
        }

        @Test("a topology of more methods than go out unanswered at once is declared whole")
        func topologyLargerThanTheWindow() async throws {
            try await TestBroker.withConnection { connection, _ in
                let names = (0..<150).map { "window-\($0)" }
                try await connection.declare(
                    AMQPTopology(
                        queues: names.map { QueueSpec(name: $0) },
                        bindings: names.map { BindingSpec(queue: $0, exchange: "amq.direct", routingKey: $0) }))
                for name in names { #expect(try await connection.queueState(name) != nil) }
                try await connection.publish(
                    Data("b".utf8), exchange: "amq.direct", routingKey: "window-149", mandatory: true)
                #expect(try await connection.queueState("window-149")?.messageCount == 1, "the last binding was made")
            }
        }

        @Test(
            "declarations made at once are each answered, a refused one alone fails, and deliveries and confirms among their answers are kept"
        )
        func declarationsTogether() async throws {
            try await TestBroker.withConnection { connection, _ in
                let flowing = "together-flow"
                try await connection.declareQueue(QueueSpec(name: flowing))
                try await connection.declareQueue(QueueSpec(name: "together-9").messageTTL(milliseconds: 1000))
                let messages = 300
                let received = Task {
                    var count = 0
                    for try await delivery in connection.consume(queue: flowing, prefetch: 50) {
                        delivery.ackWithoutWaiting()
                        count += 1
                        if count == messages { break }
                    }
                    return count
                }
                // Confirms and deliveries arrive while the declarations wait for their answers.
                let (outcomes, outcome) = AsyncStream.makeStream(of: AMQPError?.self)
                for index in 0..<messages {
                    connection.publish(Data("\(index)".utf8), exchange: "", routingKey: flowing, mandatory: true) {
                        outcome.yield($0)
                    }
                }
                let refusals = await withTaskGroup(of: (Int, AMQPError?).self) { group in
                    for index in 0..<30 {
                        group.addTask {
                            var queue = QueueSpec(name: "together-\(index)")
                            if index == 9 { queue = queue.messageTTL(milliseconds: 2000) }
                            let binding = BindingSpec(queue: queue.name, exchange: "amq.direct", routingKey: queue.name)
                            do {
                                try await connection.declare(AMQPTopology(queues: [queue], bindings: [binding]))
                                return (index, nil)
                            } catch {
                                return (index, error as? AMQPError ?? AMQPError(.library, "\(error)"))
                            }
                        }
                    }
                    var refusals: [Int: AMQPError] = [:]
                    for await (index, error) in group { refusals[index] = error }
                    return refusals
                }
                #expect(refusals.keys.sorted() == [9], "\(refusals)")
                #expect(refusals[9]?.replyCode == 406)
                #expect(refusals[9]?.message.contains("together-9") == true)
                for index in 0..<30 where index != 9 {
                    #expect(try await connection.queueState("together-\(index)") != nil)
                }
                try await connection.publish(
                    Data("b".utf8), exchange: "amq.direct", routingKey: "together-29", mandatory: true)
                #expect(try await connection.queueState("together-29")?.messageCount == 1, "the binding was made")
                var confirmed = 0
                for await result in outcomes {
                    #expect(result == nil)
                    confirmed += 1
                    if confirmed == messages { break }
                }
                #expect(try await received.value == messages)
            }
        }

        @Test("basic.get fetches one message with its headers and the count left")
        func basicGetFetchesMessages() async throws {
            try await TestBroker.withConnection { connection, _ in
                try await connection.declareQueue(QueueSpec(name: "got"))
                let headers: AMQPTable = [
                    "reason": "because", "count": 3, "flag": true,
                    "nested": .table(["list": .array([1, "two"])]),
                ]
                for index in 0..<2 {
                    try await connection.publish(
                        Data("m\(index)".utf8), exchange: "", routingKey: "got",
                        properties: AMQPMessageProperties(headers: headers, deliveryMode: 2, messageID: "id-\(index)"))
                }
                let first = try #require(await connection.get(queue: "got"))
                #expect(first.properties.messageID == "id-0")
                #expect(first.properties.headers == headers)
                #expect(first.messageCount == 1)
                try await first.ack()
                let second = try #require(await connection.get(queue: "got"))
                try await second.nack(requeue: true)
                let again = try #require(await connection.get(queue: "got"))
                #expect(again.redelivered)
                #expect(again.properties.messageID == "id-1")
                try await again.ack()
                #expect(try await connection.get(queue: "got") == nil)
            }
        }

        @Test("a wrong password is reported as access refused, and no call hangs")
        func wrongPasswordIsAccessRefused() async throws {
            let vhost = try TestBroker.makeVirtualHost()
            defer { TestBroker.deleteVirtualHost(vhost) }
            var configuration = try TestBroker.configuration(virtualHost: vhost)
            configuration.password = "wrong"
            configuration.commandTimeout = .seconds(2)
            let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
            let error = await #expect(throws: AMQPError.self) {
                try await connection.waitUntilConnected(timeout: .seconds(3))
            }
            #expect(error?.code == .notConnected)
            #expect(connection.lastError?.code == .accessRefused)
            #expect(connection.lastError?.message.contains("wrong") == false)
            await #expect(throws: AMQPError.self) {
                try await connection.publish(Data(), exchange: "", routingKey: "x")
            }
            await connection.close()
        }

        @Test("deleting a consumed queue cancels the consumer visibly")
        func deletedQueueCancelsConsumer() async throws {
            try await TestBroker.withConnection { connection, _ in
                try await connection.declareQueue(QueueSpec(name: "doomed"))
                let consumer = connection.consume(queue: "doomed")
                try await waitUntil("the consumer is registered") {
                    try await connection.queueState("doomed")?.consumerCount == 1
                }
                try await connection.deleteQueue("doomed")
                let error = await #expect(throws: AMQPError.self) {
                    for try await _ in consumer {}
                }
                #expect(error?.code == .consumerCancelled)
            }
        }

        @Test("consuming a queue that does not exist ends the sequence with 404")
        func consumingMissingQueueFails() async throws {
            try await TestBroker.withConnection { connection, _ in
                let error = await #expect(throws: AMQPError.self) {
                    for try await _ in connection.consume(queue: "nowhere") {}
                }
                #expect(error?.replyCode == 404)
            }
        }

        @Test("a consumer busy for longer than three heartbeat intervals keeps its connection")
        func busyConsumerKeepsConnection() async throws {
            // Heartbeat 2 s rather than 1 s: a CI machine loaded by the other suites may stall a thread
            // for a second, which is not what this test is about.
            try await TestBroker.withConnection(heartbeat: 2, name: "heartbeat-test") { connection, vhost in
                try await connection.declareQueue(QueueSpec(name: "slow"))
                try await connection.publish(Data("work".utf8), exchange: "", routingKey: "slow")
                let timeouts = try TestBroker.script("ctl", "-q", "list_connections", "vhost", "timeout")
                #expect(timeouts.contains("\(vhost)\t2"), "negotiated heartbeat: \(timeouts)")

                for try await delivery in connection.consume(queue: "slow") {
                    // The work itself: three and a half heartbeat intervals in which this task never
                    // touches the connection. Only the connection thread keeps it alive.
                    try await Task.sleep(for: .seconds(7))
                    try await delivery.ack()
                    break
                }
                #expect(connection.connectionCount == 1)
                #expect(connection.lastError == nil)
                try await waitUntil("the ack has emptied the queue") {
                    try await connection.queueState("slow")?.messageCount == 0
                }
            }
        }

        @Test("a task in a retry tier comes back to ingress after its delay, not before")
        func retryTierDeliversBackAfterDelay() async throws {
            try await TestBroker.withConnection { connection, _ in
                try await connection.declare(FanficTopology.declarations(retry: ladder))
                var task = TaskMessage(url: "http://test2.com?sid=7", site: "test2.com", submittedBy: "test")
                task.attempt = 1
                let tier = try #require(ladder.tiers.first)
                #expect(tier.delaySeconds == 2)

                let consumer = connection.consume(queue: FanficTopology.ingress)
                let published = ContinuousClock.now
                try await TaskPublisher(bus: AMQPMessageBus(connection)).scheduleRetry(task, tier: tier)
                #expect(try await connection.queueState(FanficTopology.retryQueue(tier))?.messageCount == 1)

                var elapsed: Duration?
                for try await delivery in consumer {
                    elapsed = ContinuousClock.now - published
                    #expect(try WireCodec.decode(delivery.body) == task)
                    #expect(delivery.exchange == FanficTopology.ingress)
                    #expect(delivery.routingKey == FanficTopology.taskRoutingKey)
                    try await delivery.ack()
                    break
                }
                let waited = try #require(elapsed)
                #expect(waited >= .milliseconds(1950), "came back after \(waited)")
                #expect(waited < .seconds(20))
            }
        }

        @Test("declaring the topology twice is harmless, and every tier has its TTL")
        func topologyIsIdempotent() async throws {
            try await TestBroker.withConnection { connection, vhost in
                try await connection.declare(FanficTopology.declarations(retry: ladder))
                try await connection.declare(FanficTopology.declarations(retry: ladder))
                let listing = try TestBroker.script("ctl", "-q", "list_queues", "-p", vhost, "name", "arguments")
                for tier in ladder.tiers {
                    let name = FanficTopology.retryQueue(tier)
                    let line = try #require(listing.split(separator: "\n").first { $0.hasPrefix(name + "\t") })
                    #expect(line.contains("x-message-ttl"))
                    #expect(line.contains("\(tier.delaySeconds * 1000)"))
                }
                #expect(listing.contains("fanfic.ingress"))
                #expect(listing.contains("fanfic.failed"))
                #expect(listing.contains("fanfic.control"))
            }
        }

        // MARK: Recovery

        @Test("publisher and consumer recover after close_all_connections, losing nothing")
        func recoversFromClosedConnections() async throws {
            try await recoveryScenario(name: "close-all") { vhost in
                // Without -p, rabbitmqctl closes only the connections of the default vhost.
                try TestBroker.script("ctl", "-q", "close_all_connections", "-p", vhost, "test: forced close")
            }
        }

        @Test("publisher and consumer recover after stop_app / start_app, losing nothing")
        func recoversFromAppRestart() async throws {
            try await recoveryScenario(name: "app-restart") { _ in
                try TestBroker.script("stop-app")
                try TestBroker.script("start-app")
            }
        }

        /// Publishes `total` persistent messages while a consumer counts them; `disrupt` runs when
        /// about a third have arrived. Every message must arrive (duplicates allowed).
        private func recoveryScenario(name: String, disrupt: @escaping @Sendable (String) throws -> Void) async throws {
            let total = 600
            try await TestBroker.withConnection(name: "\(name)-publisher") { publisher, vhost in
                try await publisher.declare(FanficTopology.declarations(retry: ladder))
                let consumerConnection = AMQPConnection(
                    configuration: try TestBroker.configuration(virtualHost: vhost, name: "\(name)-consumer"),
                    logger: TestBroker.logger)
                defer { Task { await consumerConnection.close() } }
                try await consumerConnection.waitUntilConnected(timeout: .seconds(30))
                let counter = CountingConsumer(connection: consumerConnection, queue: FanficTopology.ingress)

                let publishing = Task {
                    let tasks = TaskPublisher(bus: AMQPMessageBus(publisher), retryFor: .seconds(90))
                    for index in 0..<total {
                        let task = TaskMessage(
                            id: "m\(index)", url: "http://test1.com?sid=\(index)", site: "test1.com", submittedBy: name)
                        try await tasks.submit(task)
                        // Paced, so that the disruption comes while publishes are in flight.
                        try await Task.sleep(for: .milliseconds(5))
                    }
                }
                try await waitUntil("a third of the messages arrived", timeout: .seconds(60)) {
                    counter.uniqueCount >= total / 3
                }
                try disrupt(vhost)
                try await waitUntil("both clients reconnected", timeout: .seconds(60)) {
                    publisher.connectionCount >= 2 && consumerConnection.connectionCount >= 2
                }
                try await publishing.value
                try await waitUntil("every message arrived", timeout: .seconds(90)) { counter.uniqueCount == total }
                await counter.stop()
                let seen = counter.snapshot
                #expect(seen.unique.count == total)
                try await waitUntil("ingress drained") {
                    try await publisher.queueState(FanficTopology.ingress)?.messageCount == 0
                }
            }
        }

        @Test("a persistent message in a durable queue survives a broker restart")
        func messageSurvivesBrokerRestart() async throws {
            try await TestBroker.withConnection { connection, _ in
                try await connection.declare(FanficTopology.declarations(retry: ladder))
                try await connection.declareQueue(QueueSpec(name: "classic-durable"))
                let task = TaskMessage(url: "http://test3.com?sid=3", site: "test3.com", submittedBy: "test")
                try await TaskPublisher(bus: AMQPMessageBus(connection)).submit(task)
                try await connection.publish(
                    Data("classic".utf8), exchange: "", routingKey: "classic-durable",
                    properties: .persistentJSON(messageID: "c1"))

                try TestBroker.script("restart")
                try await waitUntil("the client reconnected", timeout: .seconds(60)) { connection.connectionCount >= 2 }

                let classic = try #require(await connection.get(queue: "classic-durable"))
                #expect(classic.properties.messageID == "c1")
                try await classic.ack()
                for try await delivery in connection.consume(queue: FanficTopology.ingress) {
                    #expect(try WireCodec.decode(delivery.body) == task)
                    try await delivery.ack()
                    break
                }
            }
        }
    }
}

/// Publishes submitted and not yet confirmed: now, and the most at once.
private final class InFlight: Sendable {
    let counts = Mutex((now: 0, most: 0))
}
