import Coordination
import FanficBroker
import FanficCore
import Foundation
import Synchronization

/// This coordinator's answer to `fanfic status`: kept current by the active term, read by the
/// ``StatusResponder`` whenever a request comes.
public final class StatusBoard: Sendable {
    private let status: Mutex<CoordinatorStatus>

    public init(name: String) {
        status = Mutex(
            CoordinatorStatus(
                name: name, host: ProcessInfo.processInfo.hostName, role: .standby, startedAt: Date()))
    }

    public var current: CoordinatorStatus { status.withLock { $0 } }

    func update(_ body: (inout CoordinatorStatus) -> Void) {
        status.withLock { body(&$0) }
    }

    /// A term began.
    func becameActive(at date: Date) {
        update {
            $0.role = .active
            $0.activeSince = date
        }
    }

    /// Copies the term's table and what workers reported (every tick: a few workers, cheap).
    func show(_ machine: DispatchStateMachine, ledger: ControlLedger, now: Duration) {
        let assignments = machine.assignments
        let unfinished = machine.unfinishedByWorker
        let workers = unfinished.keys.sorted().map { id in
            let report = ledger.reports[id]
            return WorkerStatus(
                id: id, host: report?.message.host, site: assignments[id], current: report?.message.current,
                tasksDone: report?.message.tasksDone, unfinished: unfinished[id], lastHeartbeat: report?.at)
        }
        let sites = ledger.sitesSeen.union(assignments.values).union(machine.sitesWaiting).sorted()
        let wallNow = Date()
        let paused = machine.pauses.keys.sorted().map { site in
            let pause = machine.pauses[site]!
            return PausedSite(
                site: site, reason: pause.reason, since: wallNow - (now - pause.since).timeInterval,
                until: wallNow + (pause.until - now).timeInterval, pauses: pause.pauses, probing: pause.probing)
        }
        update {
            $0.pausedSites = paused
            $0.phase = machine.statusPhase
            $0.workers = workers
            $0.waitingSites = machine.sitesWaiting
            $0.sites = sites
        }
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
            $0.pausedSites = []
        }
    }
}

extension Destination {
    /// The queue a task routed here goes to.
    var queueName: String {
        switch self {
        case .worker(let id): FanficTopology.workerQueue(id: id)
        case .backlog(let site): FanficTopology.backlogQueue(site: site)
        case .sweepBacklog(let site): FanficTopology.sweepBacklogQueue(site: site)
        }
    }
}
