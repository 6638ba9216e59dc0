import AMQP
import Coordination
import FanficBroker
import FanficCore
import Foundation
import Logging
import ServiceLifecycle

/// The `coordinator` role: waits to become the active coordinator, then drives the dispatch
/// state machine over the broker until it loses the lock or is asked to stop.
///
/// Each stretch of leadership is a ``CoordinatorTerm`` that starts from an empty table and
/// rebuilds it from heartbeats: nothing carries over from a term that ended, because a lost
/// connection may have let another coordinator act meanwhile.
public final class Coordinator: Sendable {
    public struct Settings: Sendable {
        public var dispatch: DispatchStateMachine.Configuration
        /// Unacknowledged ingress deliveries at once: how many moves may be in flight.
        public var ingressPrefetch: UInt16 = 500
        /// How often time passes for the state machine.
        public var tickInterval: Duration = .milliseconds(250)
        /// How often a standby tries to become active.
        public var standbyRetry: Duration = .seconds(1)
        /// Sites whose backlogs a new term looks for, besides those it sees.
        public var knownSites: [String]
        /// `coordinator@<host>:<pid>`, in events and logs.
        public var name: String

        public init(configuration: FanficConfiguration, knownSites: [String] = SiteRules.bundled.rules.map(\.site)) {
            dispatch = DispatchStateMachine.Configuration(
                workerTimeout: .seconds(configuration.coordinator.workerTimeout),
                sitePause: .seconds(configuration.coordinator.sitePause),
                siteCaps: configuration.coordinator.siteCapTable)
            self.knownSites = knownSites
            name = "coordinator@\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
        }
    }

    let connection: AMQPConnection
    let settings: Settings
    let logger: Logger
    let events: EventPublisher
    let board: StatusBoard

    public init(connection: AMQPConnection, settings: Settings, logger: Logger) {
        self.connection = connection
        self.settings = settings
        self.logger = logger
        self.events = EventPublisher(connection: connection, logger: logger)
        self.board = StatusBoard(name: settings.name)
    }

    /// Runs until graceful shutdown (or cancellation).
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await self.events.run() }
            let responder = StatusResponder(connection: connection, board: board, logger: logger)
            let status = Task { await responder.run() }
            defer { status.cancel() }
            await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    guard let generation = await self.becomeActive() else { break }
                    let term = CoordinatorTerm(coordinator: self, generation: generation)
                    await term.run()
                    self.board.standBy()
                    if !Task.isCancelled {
                        self.logger.warning("no longer the active coordinator; standing by")
                    }
                }
            }
            events.finish()
        }
    }

    /// Waits until this process holds the leader lock; nil when asked to stop first.
    /// Returns the connection generation the lock was won on.
    private func becomeActive() async -> UInt64? {
        let lock = LeaderLock(connection: connection)
        var announcedStandby = false
        while !Task.isCancelled {
            do {
                try await connection.waitUntilConnected(timeout: .seconds(2))
                let generation = connection.connectionCount
                if try await lock.tryAcquire() {
                    logger.notice("active coordinator", metadata: ["coordinator": "\(settings.name)"])
                    events.emit(FanficEvent(.coordinatorActive, source: settings.name))
                    return generation
                }
                if !announcedStandby {
                    logger.notice(
                        "another coordinator is active; standing by", metadata: ["lock": "\(LeaderLock.queueName)"])
                    announcedStandby = true
                }
            } catch {
                logger.debug("leader lock not taken", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: settings.standbyRetry)
        }
        return nil
    }
}
