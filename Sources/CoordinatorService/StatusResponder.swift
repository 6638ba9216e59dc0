import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import Synchronization

/// This coordinator's answer to `fanfic status`: kept current by the active term, read by the
/// responder whenever a request comes.
final class StatusBoard: Sendable {
    private let status: Mutex<CoordinatorStatus>

    init(name: String) {
        status = Mutex(
            CoordinatorStatus(
                name: name, host: ProcessInfo.processInfo.hostName, role: .standby, startedAt: Date()))
    }

    var current: CoordinatorStatus { status.withLock { $0 } }

    func update(_ body: (inout CoordinatorStatus) -> Void) {
        status.withLock { body(&$0) }
    }

    /// Back to standby: nothing of an ended term is shown as current.
    func standBy() {
        update {
            $0.role = .standby
            $0.activeSince = nil
            $0.phase = nil
            $0.workers = []
            $0.waitingSites = []
            $0.sites = []
        }
    }
}

/// Answers requests on `fanfic.status` for the whole life of the process, active or standby,
/// from a private queue bound to that fanout exchange (the broker deletes it with the
/// connection, and it is declared again after a reconnect).
struct StatusResponder: Sendable {
    let connection: AMQPConnection
    let board: StatusBoard
    let logger: Logger
    /// `fanfic.status.<this coordinator's name>`, made safe for a queue name.
    let queue: String

    init(connection: AMQPConnection, board: StatusBoard, logger: Logger) {
        self.connection = connection
        self.board = board
        self.logger = logger
        queue = FanficTopology.statusQueue(coordinator: board.current.name)
    }

    func run() async {
        while !Task.isCancelled {
            do {
                try await connection.waitUntilConnected(timeout: .seconds(5))
                try await connection.declare(
                    AMQPTopology(
                        queues: [QueueSpec(name: queue, durable: false, exclusive: true, autoDelete: true)],
                        bindings: [BindingSpec(queue: queue, exchange: FanficTopology.status, routingKey: "")]))
                for try await request in connection.consume(queue: queue, prefetch: 10) {
                    try? await request.ack()
                    guard let replyTo = request.properties.replyTo, !replyTo.isEmpty else { continue }
                    var properties = AMQPMessageProperties(contentType: "application/json", deliveryMode: 1)
                    properties.correlationID = request.properties.correlationID
                    do {
                        try await connection.publish(
                            TaskCodec.encode(board.current), exchange: "", routingKey: replyTo, properties: properties)
                    } catch {
                        logger.debug("status answer not sent", metadata: ["error": "\(error)"])
                    }
                }
                if Task.isCancelled { return }
            } catch {
                logger.debug("status requests: subscribing again", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
