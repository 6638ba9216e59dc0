import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import FanficCore
import Foundation
import Logging

struct FailedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failed",
        abstract: "Inspect and act on fanfic.failed: tasks that exhausted their retries or could not be done.",
        subcommands: [List.self, Requeue.self, Purge.self]
    )

    /// One parked message, read without taking it off the queue for good.
    struct Entry: Encodable {
        let url: String?
        let site: String?
        let attempt: Int?
        let reason: String
        /// The first bytes of a message that is not a task.
        let preview: String?
    }

    static func entry(_ delivery: AMQPDelivery) -> Entry {
        var reason = "(no reason recorded)"
        if case .string(let text) = delivery.properties.headers[FanficTopology.failureReasonHeader] { reason = text }
        if let task = try? TaskCodec.decode(delivery.body) {
            return Entry(url: task.url, site: task.site, attempt: task.attempt, reason: reason, preview: nil)
        }
        return Entry(
            url: nil, site: nil, attempt: nil, reason: reason,
            preview: String(decoding: delivery.body.prefix(80), as: UTF8.self))
    }

    /// Takes every message off fanfic.failed (unacked), lets `decide` settle each, and gives the
    /// rest back. Unacked messages return to the queue if anything fails (the broker requeues
    /// them when the connection closes): nothing is lost.
    static func sweep(
        _ connection: AMQPConnection, _ decide: (AMQPDelivery) async throws -> Bool
    ) async throws {
        var kept: [AMQPDelivery] = []
        while let delivery = try await connection.get(queue: FanficTopology.failed) {
            if try await !decide(delivery) { kept.append(delivery) }
        }
        for delivery in kept { try await delivery.nack(requeue: true) }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the failed tasks with their reasons.")

        @OptionGroup var options: CommonOptions

        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            let (connection, _) = try await CLIBroker.connect(options)
            var entries: [Entry] = []
            try await FailedCommand.sweep(connection) { delivery in
                entries.append(FailedCommand.entry(delivery))
                return false
            }
            await connection.close()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(entries), as: UTF8.self))
                return
            }
            for entry in entries {
                print(
                    "\(entry.url ?? "(not a task: \(entry.preview ?? ""))")  attempt \(entry.attempt ?? 0)  \(entry.reason)"
                )
            }
            print("\(entries.count) failed task(s)")
        }
    }

    struct Requeue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send failed tasks back to fanfic.ingress with a fresh retry ladder.")

        @OptionGroup var options: CommonOptions

        @Argument(help: "Story URLs to requeue (as listed).")
        var urls: [String] = []

        @Flag(help: "Requeue every failed task.")
        var all = false

        func validate() throws {
            if urls.isEmpty && !all { throw ValidationError("name the URLs to requeue, or --all") }
        }

        func run() async throws {
            let (connection, _) = try await CLIBroker.connect(options)
            let publisher = TaskPublisher(connection: connection)
            let wanted = Set(urls)
            var requeued = 0
            try await FailedCommand.sweep(connection) { delivery in
                guard var task = try? TaskCodec.decode(delivery.body), all || wanted.contains(task.url) else {
                    return false
                }
                task.attempt = 0
                task.retryTier = nil
                task.hailMary = false
                try await publisher.submit(task)
                try await delivery.ack()
                requeued += 1
                print("requeued  \(task.url)")
                return true
            }
            await connection.close()
            print("\(requeued) task(s) requeued")
            if requeued == 0 { throw ExitCode.failure }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete every failed task.")

        @OptionGroup var options: CommonOptions

        @Flag(help: "Really delete them.")
        var yes = false

        func validate() throws {
            if !yes { throw ValidationError("this deletes every failed task: add --yes to confirm") }
        }

        func run() async throws {
            let (connection, _) = try await CLIBroker.connect(options)
            let count = try await connection.purgeQueue(FanficTopology.failed)
            await connection.close()
            print("\(count) failed task(s) deleted")
        }
    }
}
