import AMQP
import ArgumentParser
import Foundation
import Logging

/// Publish-with-confirm and consume throughput of the AMQP client against a real broker.
///
/// Prints one JSON object per measurement (`client`, `case`, `messages`, `seconds`, `rate`),
/// which `Benchmarks/broker-bench.sh` puts beside pika's figures from the same run.
@main
struct BrokerBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker-bench",
        abstract: "Measure persistent, confirmed publish and manual-ack consume rates.")

    @Option(help: "Broker URL.")
    var url = "amqp://guest:guest@127.0.0.1:31500/%2F"

    @Option(help: "Messages per measurement.")
    var messages = 5000

    @Option(help: "Message body size in bytes.")
    var size = 512

    @Option(help: "Publishes in flight at once for the pipelined case.")
    var window = 64

    @Option(help: "Consumer prefetch.")
    var prefetch: UInt16 = 100

    func run() async throws {
        var logger = Logger(label: "broker-bench")
        logger.logLevel = .warning
        var configuration = try AMQPConfiguration(url: url)
        configuration.connectionName = "broker-bench"
        let connection = AMQPConnection(configuration: configuration, logger: logger)
        try await connection.waitUntilConnected(timeout: .seconds(30))
        let queue = "bench.swift.\(UUID().uuidString.prefix(8))"
        try await connection.declareQueue(QueueSpec(name: queue))
        let body = Data(repeating: UInt8(ascii: "x"), count: size)
        let properties = AMQPMessageProperties(contentType: "application/octet-stream", deliveryMode: 2)

        // Sequential: each publish waits for its confirm (what pika's BlockingConnection does).
        var start = ContinuousClock.now
        for _ in 0..<messages {
            try await connection.publish(body, exchange: "", routingKey: queue, properties: properties)
        }
        report("publish_confirm_sequential", ContinuousClock.now - start)

        // Pipelined: `window` publishes in flight, each still individually confirmed.
        start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            let perTask = messages / window
            for _ in 0..<window {
                group.addTask {
                    for _ in 0..<perTask {
                        try await connection.publish(body, exchange: "", routingKey: queue, properties: properties)
                    }
                }
            }
            try await group.waitForAll()
        }
        report("publish_confirm_pipelined", ContinuousClock.now - start, count: (messages / window) * window)

        // Consume everything published, acking each delivery.
        let total = messages + (messages / window) * window
        start = ContinuousClock.now
        var received = 0
        for try await delivery in connection.consume(queue: queue, prefetch: prefetch) {
            try await delivery.ack()
            received += 1
            if received == total { break }
        }
        report("consume_ack", ContinuousClock.now - start, count: total)

        try await connection.deleteQueue(queue)
        await connection.close()
    }

    private func report(_ name: String, _ elapsed: Duration, count: Int? = nil) {
        let count = count ?? messages
        let seconds = elapsed.seconds
        print(
            "{\"client\": \"swift\", \"case\": \"\(name)\", \"messages\": \(count), \"seconds\": \(String(format: "%.3f", seconds)), \"rate\": \(String(format: "%.0f", Double(count) / seconds))}"
        )
    }
}
