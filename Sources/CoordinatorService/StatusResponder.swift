import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import ServiceLifecycle

/// Answers requests on `fanfic.status` for the whole life of the process, active or standby,
/// from a private queue bound to that fanout exchange (the broker deletes it with the
/// connection, and it is declared again after a reconnect). A Service of the coordinator role.
struct StatusResponder: Service {
    let bus: any MessageBus
    let board: StatusBoard
    let logger: Logger
    /// `fanfic.status.<this coordinator's name>`, made safe for a queue name.
    var queue: String { FanficTopology.statusQueue(coordinator: board.current.name) }

    func run() async {
        await cancelWhenGracefulShutdown { await answerUntilCancelled() }
    }

    private func answerUntilCancelled() async {
        while !Task.isCancelled {
            do {
                try await bus.waitUntilConnected(timeout: .seconds(5))
                try await bus.declare(FanficTopology.statusRequests(coordinator: board.current.name))
                for try await request in bus.consume(queue: queue, prefetch: 10) {
                    try? await request.ack()
                    do {
                        try await StatusExchange.answer(request, with: board.current, on: bus)
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
