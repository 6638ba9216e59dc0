import Coordination
import FanficBroker
import FanficCore
import Foundation

/// What workers said: turns each control message into the state machine's event, and keeps
/// where to answer each worker, its last report (for `fanfic status`) and the sites seen.
/// A value the term's loop owns: no broker, no clock, so its rules are tested directly.
struct ControlLedger {
    /// Where each worker's hello asked to be answered.
    var replyQueues: [WorkerID: String] = [:]
    /// Each worker's last hello or heartbeat and when it came.
    var reports: [WorkerID: (message: ControlMessage, at: Date)] = [:]
    /// Sites of tasks and reports this term has seen: where a new term looks for backlogs.
    var sitesSeen: Set<String> = []
    /// Workers this term has not admitted whose heartbeats it believes while its table is
    /// rebuilt: each was seen holding a subscription to its queue, as an admitted worker does.
    var subscribed: Set<WorkerID> = []
    /// Workers whose subscription is being looked at.
    var checking: Set<WorkerID> = []

    /// Why a control message is not believed, or nil. `user` is its publisher as the broker
    /// vouches (`user_id`); `workerUsers` empty: any user. A hello must ask to be answered on the
    /// worker's own reply queue: the coordinator publishes nowhere a message names.
    func refusal(of message: ControlMessage, from user: String?, workerUsers: Set<String>) -> String? {
        if !workerUsers.isEmpty, !workerUsers.contains(user ?? "") {
            return "published by broker user \(user.map { "'\($0)'" } ?? "unknown"), not a worker user"
        }
        if [.notify, .admit, .rejoin, .report].contains(message.kind) {
            return "a coordinator's message, not a worker's"
        }
        if message.kind == .hello, message.replyTo != FanficTopology.replyQueue(worker: message.worker) {
            return "a hello must ask for replies on \(FanficTopology.replyQueue(worker: message.worker))"
        }
        return nil
    }

    /// The state machine's event for a control message, or nil when it has none (`admit` is the
    /// coordinator's own message; a `finished` that names no task).
    mutating func translate(_ message: ControlMessage, at date: Date) -> DispatchEvent? {
        if message.kind == .hello || message.kind == .heartbeat {
            reports[message.worker] = (message, date)
            if let site = message.site { sitesSeen.insert(site) }
        }
        switch message.kind {
        case .hello:
            if let replyTo = message.replyTo { replyQueues[message.worker] = replyTo }
            return .workerHello(message.worker, site: message.site, unfinished: message.unfinished ?? 0)
        case .heartbeat:
            return .heartbeat(message.worker, site: message.site, unfinished: message.unfinished ?? 0)
        case .finished:
            return message.finishedIdentity.map { .taskFinished(message.worker, $0) }
        case .blocked:
            guard let site = message.site, let reason = message.reason else { return nil }
            return .siteBlocked(
                message.worker, site: site, retryAfter: message.retryAfter.map { .seconds($0) }, reason: reason)
        case .admit, .rejoin, .notify, .report:
            return nil  // the coordinator's own messages
        }
    }

    /// Forgets the reports of workers the table no longer has.
    mutating func keepReports(of workers: some Collection<WorkerID>) {
        let kept = Set(workers)
        reports = reports.filter { kept.contains($0.key) }
    }
}
