import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import FanficCore
import Foundation

/// `fanfic status`: the broker, the coordinators, each worker, and the depth of every queue
/// that holds tasks. Coordinators answer a request on the `fanfic.status` fanout exchange;
/// the depths are read from the broker directly.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the broker, the coordinators, the workers and the queues.",
        discussion: """
            Exits 0 when an active coordinator answered, 1 when the broker can't be reached or no \
            active coordinator answered (what could be read is printed anyway).
            """
    )

    @OptionGroup var options: CommonOptions

    @Flag(help: "Print JSON for scripts.")
    var json = false

    @Option(help: "Seconds to wait for an active coordinator's answer.")
    var wait: Double = 2

    func validate() throws {
        guard wait > 0, wait <= 60 else { throw ValidationError("--wait must be between 0 and 60 seconds") }
    }

    func run() async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let broker: CLIBroker
        do {
            broker = try await CLIBroker.connect(configuration, timeout: 5)
        } catch {
            emit(FleetStatusReport(brokerURL: configuration.broker.url, error: "\(error)"))
            throw ExitCode.failure
        }
        let report: FleetStatusReport
        do {
            report = try await FleetStatusReport.gather(
                on: broker.bus, configuration: configuration, wait: .milliseconds(Int(wait * 1000)))
        } catch {
            await broker.close()
            throw error
        }
        await broker.close()

        emit(report)
        if report.active == nil { throw ExitCode.failure }
    }

    private func emit(_ report: FleetStatusReport) {
        if json {
            var data = WireCodec.encodeValue(report)
            data.append(0x0A)
            FileHandle.standardOutput.write(data)
        } else {
            FileHandle.standardOutput.write(Data(StatusText.render(report, wait: wait).utf8))
        }
    }
}
