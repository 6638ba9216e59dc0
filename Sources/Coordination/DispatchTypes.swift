import FanficCore

/// A worker's id, as in its queue's name `fanfic.worker.<id>`.
public typealias WorkerID = String

/// The service's handle on a delivery from `fanfic.ingress`, to acknowledge once its task is
/// safely somewhere else.
public typealias DeliveryHandle = UInt64

/// One publish the service performs for the state machine, awaiting the broker's confirm.
public struct MoveID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (lhs: MoveID, rhs: MoveID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "move#\(rawValue)" }
}

/// A task as the coordinator sees it on the ingress queue.
public struct IncomingTask: Hashable, Sendable {
    public let handle: DeliveryHandle
    public let taskID: String
    public let identity: TaskIdentity
    /// A scheduled update check (`submitted_by = "sweep"`): it yields to a person's tasks.
    public let isSweep: Bool

    public init(handle: DeliveryHandle, taskID: String, identity: TaskIdentity, isSweep: Bool = false) {
        self.handle = handle
        self.taskID = taskID
        self.identity = identity
        self.isSweep = isSweep
    }

    public var site: String { identity.site }
}

/// Where a task goes.
public enum Destination: Hashable, Sendable {
    /// `fanfic.worker.<id>`: the worker holding the task's site runs it.
    case worker(WorkerID)
    /// `fanfic.backlog.<site>`: waits, in the broker, for a worker to free up.
    case backlog(site: String)
    /// `fanfic.backlog.<site>.sweep`: a sweep's check waits until the site has no other task.
    case sweepBacklog(site: String)
}

/// What happened, told to the state machine (with the time, by the caller).
public enum DispatchEvent: Hashable, Sendable {
    /// A task was delivered from `fanfic.ingress`.
    case taskArrived(IncomingTask)
    /// The broker confirmed a publish the machine asked for.
    case publishConfirmed(MoveID)
    /// A publish was not confirmed (nack, connection lost): its source must be retried.
    case publishFailed(MoveID)
    /// A worker started (or restarted), with what its durable queue still holds (`site` and
    /// `unfinished` from its last run). It consumes nothing until the machine admits it.
    case workerHello(WorkerID, site: String?, unfinished: Int)
    /// The service finished moving a worker's queue back to ingress.
    case workerReclaimed(WorkerID)
    /// A worker is alive; `site` is what it holds, `unfinished` the tasks it has not finished
    /// (queued and running). Only trusted while rebuilding the table after a restart.
    case heartbeat(WorkerID, site: String?, unfinished: Int)
    /// A worker finished a task (whatever the outcome: success, retry scheduled, failed).
    case taskFinished(WorkerID, TaskIdentity)
    /// The service moved one task from a site's backlog into the worker's queue (confirmed,
    /// then acked); `identity` when the message decoded.
    case backlogTaskMoved(site: String, worker: WorkerID, identity: TaskIdentity?)
    /// The service ended a drain of the site's backlog into the worker: it found the backlog
    /// empty, moved its `upTo`, or was stopped.
    case backlogDrained(site: String, worker: WorkerID)
    /// After a restart: message counts of `fanfic.backlog.<site>` for the sites that have one,
    /// and of `fanfic.backlog.<site>.sweep`. Again later, while running, for backlogs the broker
    /// did not answer about at first.
    case backlogsDiscovered([String: Int], sweep: [String: Int] = [:])
    /// A worker holding `site` met a block there (throttled, challenged, down, unreachable): the
    /// site is paused for every worker. `retryAfter`: the delay the site asked for.
    case siteBlocked(WorkerID, site: String, retryAfter: Duration?, reason: String)
    /// After a start: the workers the registry (`fanfic.workers`) names. The rebuild ends as soon
    /// as each has reported (at once when there are none), rather than after a whole timeout
    /// window: that window is spent only waiting for a registered worker that is silent.
    case registeredWorkers(Set<WorkerID>)
    /// The sites in their quiet hours now (the service reads the wall clock; this machine has none).
    case quietSites(Set<String>)
    /// Time passed (liveness checks, pauses, the end of the rebuild window).
    case tick
}

/// What the service must do, in order.
public enum DispatchAction: Hashable, Sendable {
    /// Publish the task (persistent, confirmed) to the destination; report the outcome with `move`.
    case publish(MoveID, IncomingTask, to: Destination)
    /// Acknowledge an ingress delivery: its task is confirmed elsewhere (or was a duplicate).
    case ack(DeliveryHandle)
    /// Give an ingress delivery back to the queue: its move failed, it will come again.
    case requeue(DeliveryHandle)
    /// Move the messages of `fanfic.backlog.<site>` into the worker's queue (every one, or at most
    /// `upTo`: a turn), each with publish, confirm, ack; report each with `.backlogTaskMoved` and
    /// the end with `.backlogDrained`.
    case drainBacklog(site: String, into: WorkerID, upTo: Int? = nil)
    /// Move one task of `fanfic.backlog.<site>.sweep` into the worker's queue (the site has nothing
    /// else to do), reported like a backlog's drain.
    case drainSweepBacklog(site: String, into: WorkerID)
    /// Passively declare `fanfic.backlog.<site>` for every known site; answer `.backlogsDiscovered`.
    case discoverBacklogs
    /// Stop any drain into the worker's queue, then move what is left in it back to
    /// `fanfic.ingress`; answer `.workerReclaimed`.
    case reclaim(WorkerID)
    /// Stop the drain into the worker's queue (its site's hourly budget is spent, or its quiet
    /// hours began); the drain still reports `.backlogDrained` when it has stopped.
    case stopDrain(WorkerID)
    /// Tell a worker that said hello that it may consume its queue.
    case admit(WorkerID)
    /// Tell a worker this table does not know (presumed dead, or never admitted by it) to stop
    /// taking tasks and say hello again: until then its heartbeats are not believed.
    case askToRejoin(WorkerID)
    /// Something worth publishing to `fanfic.events` and logging.
    case announce(DispatchAnnouncement)
}

/// Decisions others may want to observe.
public enum DispatchAnnouncement: Hashable, Sendable {
    case duplicateDropped(TaskIdentity)
    case taskRouted(TaskIdentity, Destination)
    case siteAssigned(site: String, worker: WorkerID)
    case siteReleased(site: String, worker: WorkerID)
    case workerJoined(WorkerID)
    case workerPresumedDead(WorkerID, site: String?)
    case tableRebuilt(workers: Int, waitingSites: Int)
    /// A `finished` for a task the worker was not sent (forged, or stale): ignored.
    case finishedIgnored(WorkerID, TaskIdentity)
    /// The site is paused for the fleet until `until` (the machine's clock): the `pauses`-th
    /// pause of this outage; `waiting`: tasks of the site the table knows of (queued at the
    /// reporting worker; the backlog's depth is the service's to add).
    case sitePaused(site: String, worker: WorkerID, until: Duration, reason: String, pauses: Int, waiting: Int)
    /// A task of a paused site ran to its end without a block: the outage is over.
    case siteResumed(site: String, worker: WorkerID, outage: Duration, pauses: Int)
    /// A block reported by a worker that does not hold the site (forged, or stale): ignored.
    case blockIgnored(WorkerID, site: String)
}

/// A site paused for the fleet after a block, until `until`; then probed with one worker until
/// a task ends without a block.
public struct SitePause: Sendable, Hashable {
    /// Why (the worker's report).
    public var reason: String
    /// When the outage began, and when the current pause ends (the machine's clock).
    public var since: Duration
    public var until: Duration
    /// Pauses in this outage: the cooldown doubles with each.
    public var pauses: Int
    /// The pause has passed and one worker is trying the site again.
    public var probing: Bool

    public init(reason: String, since: Duration, until: Duration, pauses: Int, probing: Bool = false) {
        self.reason = reason
        self.since = since
        self.until = until
        self.pauses = pauses
        self.probing = probing
    }
}
