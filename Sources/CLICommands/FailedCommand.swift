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

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the failed tasks with their reasons.")

        @OptionGroup var options: CommonOptions

        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            let broker = try await CLIBroker.connect(options)
            let entries = try await FailedTasks(bus: broker.bus).list()
            await broker.close()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(entries), as: UTF8.self))
                return
            }
            for entry in entries {
                // Whatever was parked came from the wire: printed inert.
                let what = entry.url ?? "(not a task: \(entry.preview ?? ""))"
                print("\(InertText.escape(what))  attempt \(entry.attempt ?? 0)  \(InertText.escape(entry.reason))")
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
            let broker = try await CLIBroker.connect(options)
            let wanted = Set(urls)
            let requeued = try await FailedTasks(bus: broker.bus).requeue { all || wanted.contains($0.url) }
            await broker.close()
            for task in requeued { print("requeued  \(InertText.escape(task.url))") }
            print("\(requeued.count) task(s) requeued")
            if requeued.isEmpty { throw ExitCode.failure }
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
            let broker = try await CLIBroker.connect(options)
            let count = try await FailedTasks(bus: broker.bus).purge()
            await broker.close()
            print("\(count) failed task(s) deleted")
        }
    }
}
