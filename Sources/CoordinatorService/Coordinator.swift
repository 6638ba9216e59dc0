import AMQP
import Coordination
import FanficBroker
import FanficCore
import Foundation
import Logging
import ServiceLifecycle

/// The `coordinator` role's leadership loop, a Service: waits to become the active coordinator,
/// then drives the dispatch state machine over the bus until it loses the lock or is asked to stop.
///
/// Each stretch of leadership is a ``CoordinatorTerm`` that starts from an empty table and
/// rebuilds it from heartbeats: nothing carries over from a term that ended, because a lost
/// connection may have let another coordinator act meanwhile. The role's other services (its
/// ``EventPublisher`` and ``StatusResponder``) run beside it: see ``services``.
public struct Coordinator: Service {
    public struct Settings: Sendable {
        public var dispatch: DispatchStateMachine.Configuration
        /// Unacknowledged ingress deliveries at once: how many moves may be in flight.
        public var ingressPrefetch: UInt16 = 500
        /// How often time passes for the state machine.
        public var tickInterval: Duration = .milliseconds(250)
        /// How often the active coordinator sweeps the worker registry (see ``WorkerRegistry``).
        public var registrySweepInterval: Duration = .seconds(300)
        /// Silence after which a worker is forgotten (`coordinator.forget_workers_after`).
        public var forgetWorkersAfter: TimeInterval = 86_400
        /// How often a standby tries to become active.
        public var standbyRetry: Duration = .seconds(1)
        /// How long a term waits before asking again about a backlog the broker did not answer
        /// about (doubling, up to a minute).
        public var backlogRetry: Duration = .seconds(5)
        /// How long a term that ends waits for its moves in flight to settle.
        public var endingGrace: Duration = .seconds(10)
        /// Sites whose backlogs a new term looks for, besides those it sees.
        public var knownSites: [String]
        /// Broker users whose control messages count (`coordinator.worker_users`); empty: any.
        public var workerUsers: Set<String> = []
        /// Quiet hours (`sites.quiet_hours` and each site's own), local time.
        public var quietHours = QuietSchedule()
        /// Bounds on what comes from outside (`[limits]`).
        public var limits = FanficConfiguration.Limits()
        /// Whether a list page is admitted as a task, for a worker to expand (`fanficfare.expand_lists` > 0).
        public var expandLists = true
        /// `coordinator@<host>:<pid>`, in events and logs.
        public var name: String

        public init(configuration: FanficConfiguration, knownSites: [String] = SiteRules.bundled.rules.map(\.site)) {
            self.init(
                dispatch: DispatchStateMachine.Configuration(
                    workerTimeout: .seconds(configuration.coordinator.workerTimeout),
                    sitePause: .seconds(configuration.coordinator.sitePause),
                    siteCaps: configuration.coordinator.siteCapTable,
                    cooldown: .seconds(configuration.sites.cooldown),
                    cooldownMax: .seconds(configuration.sites.cooldownMax)),
                knownSites: knownSites,
                name: "coordinator@\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)")
            workerUsers = Set(configuration.coordinator.workerUsers)
            forgetWorkersAfter = TimeInterval(configuration.coordinator.forgetWorkersAfter)
            registrySweepInterval = .seconds(min(300, max(1, configuration.coordinator.forgetWorkersAfter / 4)))
            limits = configuration.limits
            expandLists = configuration.fanficfare.expandLists > 0
            let overrides = configuration.sites.overrides
            dispatch.sitePauses = overrides.compactMapValues { $0.pause.map { .seconds($0) } }
            dispatch.hourlyBudget = configuration.sites.maxTasksPerHour
            dispatch.hourlyBudgets = overrides.compactMapValues(\.maxTasksPerHour)
            dispatch.siteTurn = configuration.coordinator.siteTurn
            quietHours = QuietSchedule(configuration: configuration)
        }

        /// The sites in their quiet hours at `date`, among the known ones, `seen` and those with
        /// quiet hours of their own.
        func quietSites(seen: Set<String>, at date: Date, calendar: Calendar = .current) -> Set<String> {
            quietHours.quietSites(among: Set(knownSites).union(seen), at: date, calendar: calendar)
        }

        public init(dispatch: DispatchStateMachine.Configuration, knownSites: [String], name: String) {
            self.dispatch = dispatch
            self.knownSites = knownSites
            self.name = name
        }
    }

    let bus: any MessageBus
    let settings: Settings
    let logger: Logger
    let events: EventPublisher
    let board: StatusBoard

    public init(bus: any MessageBus, settings: Settings, events: EventPublisher, board: StatusBoard, logger: Logger) {
        self.bus = bus
        self.settings = settings
        self.logger = logger
        self.events = events
        self.board = board
    }

    /// The role's services in start order (a ServiceGroup stops them in reverse): the event
    /// publisher outlives the others, so the events of a term that ends still go out.
    public static func services(bus: any MessageBus, settings: Settings, logger: Logger) -> [any Service] {
        let events = EventPublisher(bus: bus, logger: logger)
        let board = StatusBoard(name: settings.name)
        return [
            events,
            StatusResponder(bus: bus, board: board, logger: logger),
            Coordinator(bus: bus, settings: settings, events: events, board: board, logger: logger),
        ]
    }

    /// Runs until graceful shutdown (or cancellation).
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                guard let generation = await self.becomeActive() else { break }
                let term = CoordinatorTerm(
                    bus: bus, generation: generation, settings: settings, events: events, board: board,
                    logger: logger)
                await term.run()
                board.standBy()
                if !Task.isCancelled {
                    logger.warning("no longer the active coordinator; standing by")
                }
            }
        }
    }

    /// Waits until this process holds the leader lock; nil when asked to stop first.
    /// Returns the connection generation the lock was won on.
    private func becomeActive() async -> UInt64? {
        let lock = BrokerLock(FanficTopology.coordinatorLock, bus: bus)
        var announcedStandby = false
        while !Task.isCancelled {
            do {
                try await bus.waitUntilConnected(timeout: .seconds(2))
                let generation = bus.generation
                if try await lock.tryAcquire() {
                    logger.notice("active coordinator", metadata: ["coordinator": "\(settings.name)"])
                    events.emit(FanficEvent(.coordinatorActive, source: settings.name))
                    return generation
                }
                if !announcedStandby {
                    logger.notice(
                        "another coordinator is active; standing by",
                        metadata: ["lock": "\(FanficTopology.coordinatorLock)"])
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
