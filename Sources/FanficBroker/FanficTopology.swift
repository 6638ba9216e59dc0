import AMQP
import FanficCore
import Foundation

/// The broker topology of DESIGN.md, in one place. Every process declares it at start
/// (idempotently) and again after each reconnect.
public enum FanficTopology {
    // MARK: Names (an interface: scripts and other publishers rely on them)

    /// Direct exchange and quorum queue where every new or retried task enters.
    public static let ingress = "fanfic.ingress"
    /// The routing key that binds `fanfic.ingress` (exchange) to `fanfic.ingress` (queue).
    public static let taskRoutingKey = "task"
    /// Worker -> coordinator: hello, heartbeat, task finished. A fanout exchange and the
    /// coordinator's queue, of one name.
    public static let control = "fanfic.control"
    /// Topic exchange of everything that happened (`task.queued`, `task.succeeded`, ...).
    public static let events = "fanfic.events"
    /// Direct exchange routing a failed task to its delay tier (routing key: the tier's name).
    public static let retry = "fanfic.retry"
    /// Tasks that exhausted every retry, or could not be decoded, with the reason. A fanout
    /// exchange and its queue, of one name.
    public static let failed = "fanfic.failed"

    /// Direct exchange of the coordinator's own deliveries, routed by queue name: tasks into worker
    /// and backlog queues, answers into workers' reply queues, the worker registry. Only the
    /// coordinator may publish here; nothing goes through the default exchange, so a role's
    /// permissions say exactly where it may put messages.
    public static let dispatch = "fanfic.dispatch"

    /// Direct exchange of the answers to `fanfic status`, routed by the request's reply queue,
    /// which the requester binds (an exclusive queue: nobody else may bind it).
    public static let statusReplies = "fanfic.status.replies"

    /// The ids of the workers coordinators have seen, one message each: how a new coordinator
    /// finds the queue of a worker that died while no coordinator was watching.
    public static let workers = "fanfic.workers"

    /// The sites whose backlog queues exist: how a new coordinator knows which backlogs to ask
    /// about (asking about a queue that does not exist is a channel error). Only the coordinator
    /// declares and reads it.
    public static let backlogIndex = "fanfic.backlogs"

    /// Fanout exchange where `fanfic status` asks every coordinator, active or standby, who it
    /// is and what its table holds (answer on the request's `reply_to`).
    public static let status = "fanfic.status"

    /// The dashboard's copy of every event (bound to `fanfic.events` with `#`), declared by the
    /// dashboard only: it fills while the dashboard is down and empties into its history when
    /// it is back, so a restart loses no events.
    public static let dashboardEvents = "fanfic.dashboard.events"

    /// Direct exchange of update sweeps (docs/sweeps.md): the scheduled checks (routing key
    /// `delay`) and the sweep's record (`state`).
    public static let sweep = "fanfic.sweep"
    /// A sweep's checks, each waiting out its own expiration (its due time), then dead-lettered
    /// into `fanfic.ingress`. Nobody consumes it.
    public static let sweepDelay = "fanfic.sweep.delay"
    /// The last sweep's record (one message).
    public static let sweepState = "fanfic.sweep.state"
    /// The active sweep's summary for `fanfic status` (the last few; readers take the newest).
    public static let sweepProgress = "fanfic.sweep.progress"
    public static let sweepProgressKept = 4
    /// `fanfic sweep now`: requests to start a sweep at once (its own exchange, so that the
    /// CLI's user may publish there and nowhere else of the sweeps).
    public static let sweepRequests = "fanfic.sweep.requests"
    /// The lock of the one active sweep scheduler.
    public static let sweepLock = "fanfic.lock.sweep"

    /// Events the dashboard's queue keeps while nobody reads it; past this the oldest go.
    public static let dashboardEventsMaxLength: Int64 = 1_000_000

    /// Header of a message in `fanfic.failed`: why it is there.
    public static let failureReasonHeader = "x-fanfic-failure-reason"

    /// Header of a task in a backlog or worker queue: the site the coordinator derived from its
    /// URL, which the worker checks before it runs the task.
    public static let siteHeader = "x-fanfic-site"

    /// Header of a task that waited for its site's pause: how many times. Past
    /// ``OutcomeSettler/maxDeferrals`` a block counts as the story's own failure (a story that
    /// always meets a 403 must not circle forever). Forging it only shortens that task's wait.
    public static let deferralsHeader = "x-fanfic-deferrals"

    /// Exclusive queue held by the active coordinator (a ``BrokerLock``: the broker deletes it with
    /// its connection, so a crashed or partitioned coordinator loses it as soon as the broker
    /// notices). Single active consumer on `fanfic.ingress` alone would not do: the control queue
    /// has to follow the same coordinator, and SAC does not say who is active.
    public static let coordinatorLock = "fanfic.coordinator.active"

    /// Exclusive queue a worker holds while it writes to a Content Server: writes take turns.
    public static let calibreServerLock = "fanfic.lock.calibre"

    /// `fanfic.reply.<id>`: where the coordinator answers a worker's hello.
    public static func replyQueue(worker id: String) -> String { "fanfic.reply.\(id)" }

    /// `fanfic.status.<name>`: a coordinator's queue on the `fanfic.status` exchange; `name` is
    /// made safe for a queue name.
    public static func statusQueue(coordinator name: String) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        return "\(status).\(String(name.map { allowed.contains($0) ? $0 : "-" }))"
    }

    /// The prefix of every `fanfic status` reply queue: the only queues a coordinator answers to.
    public static let statusReplyPrefix = "\(status).reply."

    /// A fresh queue for the answers to one `fanfic status` request.
    public static func statusReplyQueue() -> String { statusReplyPrefix + UUID().uuidString.lowercased() }

    /// Whether a `reply_to` names a `fanfic status` reply queue (and nothing else).
    public static func isStatusReplyQueue(_ name: String) -> Bool {
        guard name.hasPrefix(statusReplyPrefix), name.utf8.count <= 255 else { return false }
        let id = name.dropFirst(statusReplyPrefix.count)
        return !id.isEmpty && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
    }

    // MARK: Delivery limits and dead-lettering, queue by queue
    //
    // RabbitMQ 4 gives quorum queues a delivery limit of 20 and drops a message past it when the
    // queue has no dead-letter target; RabbitMQ 3 has no limit unless one is set. So each queue
    // says what it wants:
    // - fanfic.ingress: 20, then parked in fanfic.failed (a task that keeps crashing the
    //   coordinator is set aside, not looped on);
    // - worker and backlog queues: 50, then parked in fanfic.failed. A worker that stops
    //   gracefully cancels its subscription before it acks its last task, so nothing is returned
    //   and nothing counted; before RabbitMQ 4.3 a crash or kill returns the task in hand and
    //   counts, and 50 leaves room for that;
    // - fanfic.failed, fanfic.workers and fanfic.backlogs: no limit that matters (one million):
    //   read by `get`, then acked or put back at the tail, never returned, so nothing counts; they
    //   are the last stop;
    // - retry queues: no consumers (their messages expire to fanfic.ingress); the default, stated;
    // - fanfic.control and reply queues: 20, then dropped: a control message states what its
    //   worker says again at its next beat (and heartbeats expire); none is worth parking;
    // - status and lock queues: classic, exclusive, gone with their connection.

    public static let ingressDeliveryLimit: Int64 = 20
    public static let taskQueueDeliveryLimit: Int64 = 50
    public static let controlDeliveryLimit: Int64 = 20
    public static let keptDeliveryLimit: Int64 = 1_000_000

    /// `fanfic.retry.<tier>`: the delay queue of one tier.
    public static func retryQueue(_ tier: RetryLadder.Tier) -> String { "\(retry).\(tier.name)" }

    /// `fanfic.backlog.<site>`: tasks of a site that no worker holds yet.
    public static func backlogQueue(site: String) -> String { "fanfic.backlog.\(site)" }

    /// `fanfic.backlog.<site>.sweep`: a sweep's checks of a site, waiting until it is free.
    public static func sweepBacklogQueue(site: String) -> String { "fanfic.backlog.\(site).sweep" }

    /// `fanfic.worker.<id>`: tasks of the site assigned to that worker.
    public static func workerQueue(id: String) -> String { "fanfic.worker.\(id)" }

    // MARK: Declarations

    /// Everything that exists independently of which sites and workers there are.
    public static func declarations(retry ladder: RetryLadder) -> AMQPTopology {
        var topology = AMQPTopology(
            exchanges: [
                ExchangeSpec(name: ingress, kind: .direct),
                ExchangeSpec(name: events, kind: .topic),
                ExchangeSpec(name: retry, kind: .direct),
                ExchangeSpec(name: status, kind: .fanout),
                ExchangeSpec(name: control, kind: .fanout),
                ExchangeSpec(name: failed, kind: .fanout),
                ExchangeSpec(name: dispatch, kind: .direct),
                ExchangeSpec(name: statusReplies, kind: .direct),
                ExchangeSpec(name: sweep, kind: .direct),
                ExchangeSpec(name: sweepRequests, kind: .fanout),
            ],
            queues: [
                QueueSpec.quorum(ingress)
                    .singleActiveConsumer()
                    .deliveryLimit(ingressDeliveryLimit)
                    .deadLetter(exchange: failed)
                    .atLeastOnceDeadLettering(),
                QueueSpec.quorum(control).singleActiveConsumer().deliveryLimit(controlDeliveryLimit),
                QueueSpec.quorum(failed).deliveryLimit(keptDeliveryLimit),
                QueueSpec.quorum(workers).deliveryLimit(keptDeliveryLimit),
                // Like a retry tier: expired checks go to ingress, at least once.
                QueueSpec.quorum(sweepDelay)
                    .deliveryLimit(keptDeliveryLimit)
                    .deadLetter(exchange: ingress, routingKey: taskRoutingKey)
                    .atLeastOnceDeadLettering(),
                QueueSpec.quorum(sweepState).deliveryLimit(keptDeliveryLimit),
                QueueSpec.quorum(sweepProgress).deliveryLimit(keptDeliveryLimit)
                    .maxLength(dropOldestPast: Int64(sweepProgressKept)),
                QueueSpec.quorum(sweepRequests).deliveryLimit(controlDeliveryLimit)
                    .maxLength(dropOldestPast: 10),
            ],
            bindings: [
                BindingSpec(queue: ingress, exchange: ingress, routingKey: taskRoutingKey),
                BindingSpec(queue: control, exchange: control, routingKey: ""),
                BindingSpec(queue: failed, exchange: failed, routingKey: ""),
                BindingSpec(queue: workers, exchange: dispatch, routingKey: workers),
                BindingSpec(queue: sweepDelay, exchange: sweep, routingKey: "delay"),
                BindingSpec(queue: sweepState, exchange: sweep, routingKey: "state"),
                BindingSpec(queue: sweepProgress, exchange: sweep, routingKey: "progress"),
                BindingSpec(queue: sweepRequests, exchange: sweepRequests, routingKey: ""),
            ]
        )
        for tier in ladder.tiers {
            let name = retryQueue(tier)
            // Quorum queues, like every queue here: a classic queue is unusable while its home
            // node is down, and since every process declares this topology, no process could
            // connect to the rest of a cluster. One TTL per queue expires messages in order at
            // the head (RabbitMQ 3.10+), then dead-letters them back to ingress, at least once:
            // a task expiring while the broker restarts is kept until ingress has it.
            topology.queues.append(
                QueueSpec.quorum(name)
                    .messageTTL(milliseconds: Int64(tier.delaySeconds) * 1000)
                    .deliveryLimit(ingressDeliveryLimit)
                    .deadLetter(exchange: ingress, routingKey: taskRoutingKey)
                    .atLeastOnceDeadLettering())
            topology.bindings.append(BindingSpec(queue: name, exchange: retry, routingKey: tier.name))
        }
        return topology
    }

    /// The dashboard's event queue and its binding to every event.
    public static func dashboard() -> AMQPTopology {
        AMQPTopology(
            exchanges: [ExchangeSpec(name: events, kind: .topic)],
            queues: [
                QueueSpec.quorum(dashboardEvents).deliveryLimit(controlDeliveryLimit)
                    .maxLength(dropOldestPast: dashboardEventsMaxLength)
            ],
            bindings: [BindingSpec(queue: dashboardEvents, exchange: events, routingKey: "#")])
    }

    /// A site's backlog queue: durable, consumed by nobody, drained by the coordinator; bound to
    /// `fanfic.dispatch` by its name.
    public static func backlog(site: String) -> AMQPTopology {
        dispatched(QueueSpec.quorum(backlogQueue(site: site)).taskQueue())
    }

    /// The index of backlog sites (``backlogIndex``): durable, read by `get` and rewritten, never
    /// returned (so no delivery limit that matters); bound to `fanfic.dispatch` by its name.
    public static func backlogIndexQueue() -> AMQPTopology {
        dispatched(QueueSpec.quorum(backlogIndex).deliveryLimit(keptDeliveryLimit))
    }

    /// A site's sweep backlog: like its backlog, drained only when the site has nothing else to do.
    public static func sweepBacklog(site: String) -> AMQPTopology {
        dispatched(QueueSpec.quorum(sweepBacklogQueue(site: site)).taskQueue())
    }

    /// A worker's own queue: durable, so a worker that restarts under the same id resumes it;
    /// bound to `fanfic.dispatch` by its name. The coordinator declares it (a worker may not).
    public static func worker(id: String) -> AMQPTopology {
        dispatched(QueueSpec.quorum(workerQueue(id: id)).taskQueue())
    }

    /// Where the coordinator answers a worker's hello, bound to `fanfic.dispatch` by its name.
    /// Quorum, like every queue a worker relies on: a classic queue is unusable while its home
    /// node is down, and a worker would then not reconnect to the cluster. It outlives short
    /// disconnections and expires a minute after the worker is gone.
    public static func reply(worker id: String) -> AMQPTopology {
        dispatched(
            QueueSpec.quorum(replyQueue(worker: id), arguments: ["x-expires": .int(60_000)])
                .deliveryLimit(controlDeliveryLimit))
    }

    /// A worker's queue and reply queue, as the coordinator declares them when it hears its hello.
    public static func workerQueues(id: String) -> AMQPTopology { worker(id: id).merging(reply(worker: id)) }

    private static func dispatched(_ queue: QueueSpec) -> AMQPTopology {
        AMQPTopology(
            queues: [queue], bindings: [BindingSpec(queue: queue.name, exchange: dispatch, routingKey: queue.name)])
    }

    /// A coordinator's private queue on the `fanfic.status` exchange, bound to it (the broker
    /// deletes it with the connection).
    public static func statusRequests(coordinator name: String) -> AMQPTopology {
        let queue = statusQueue(coordinator: name)
        return AMQPTopology(
            queues: [QueueSpec(name: queue, durable: false, exclusive: true, autoDelete: true)],
            bindings: [BindingSpec(queue: queue, exchange: status, routingKey: "")])
    }

    /// The private queue of one `fanfic status` request's answers, bound to `fanfic.status.replies`.
    public static func statusReplies(_ queue: String) -> AMQPTopology {
        AMQPTopology(
            queues: [QueueSpec(name: queue, durable: false, exclusive: true, autoDelete: true)],
            bindings: [BindingSpec(queue: queue, exchange: statusReplies, routingKey: queue)])
    }

    /// A ``BrokerLock``'s queue: exclusive to its holder's connection, gone with it.
    public static func lock(_ name: String) -> QueueSpec {
        QueueSpec(name: name, durable: false, exclusive: true, autoDelete: false)
    }
}

extension QueueSpec {
    /// A queue of tasks in their site's turn (worker, backlog): redelivered at most
    /// ``FanficTopology/taskQueueDeliveryLimit`` times, then parked in `fanfic.failed`.
    func taskQueue() -> QueueSpec {
        deliveryLimit(FanficTopology.taskQueueDeliveryLimit).deadLetter(exchange: FanficTopology.failed)
            .atLeastOnceDeadLettering()
    }
}
