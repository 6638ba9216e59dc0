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
    /// Worker -> coordinator: hello, heartbeat, task started, task finished.
    public static let control = "fanfic.control"
    /// Topic exchange of everything that happened (`task.queued`, `task.succeeded`, ...).
    public static let events = "fanfic.events"
    /// Direct exchange routing a failed task to its delay tier (routing key: the tier's name).
    public static let retry = "fanfic.retry"
    /// Tasks that exhausted every retry, or could not be decoded, with the reason.
    public static let failed = "fanfic.failed"

    /// The ids of the workers coordinators have seen, one message each: how a new coordinator
    /// finds the queue of a worker that died while no coordinator was watching.
    public static let workers = "fanfic.workers"

    /// Fanout exchange where `fanfic status` asks every coordinator, active or standby, who it
    /// is and what its table holds (answer on the request's `reply_to`).
    public static let status = "fanfic.status"

    /// Header of a message in `fanfic.failed`: why it is there.
    public static let failureReasonHeader = "x-fanfic-failure-reason"

    /// Header of a task in a backlog or worker queue: the site the coordinator derived from its
    /// URL, which the worker checks before it runs the task.
    public static let siteHeader = "x-fanfic-site"

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

    /// A fresh queue for the answers to one `fanfic status` request.
    public static func statusReplyQueue() -> String { "\(status).reply.\(UUID().uuidString.lowercased())" }

    /// A quorum queue redelivers a message at most this many times before dead-lettering it
    /// to `fanfic.failed`: a message that crashes its consumer is parked, not looped on.
    public static let ingressDeliveryLimit: Int64 = 20

    /// `fanfic.retry.<tier>`: the delay queue of one tier.
    public static func retryQueue(_ tier: RetryLadder.Tier) -> String { "\(retry).\(tier.name)" }

    /// `fanfic.backlog.<site>`: tasks of a site that no worker holds yet.
    public static func backlogQueue(site: String) -> String { "fanfic.backlog.\(site)" }

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
            ],
            queues: [
                QueueSpec.quorum(ingress)
                    .singleActiveConsumer()
                    .deliveryLimit(ingressDeliveryLimit)
                    .deadLetter(exchange: "", routingKey: failed),
                QueueSpec.quorum(control).singleActiveConsumer(),
                QueueSpec.quorum(failed),
                QueueSpec.quorum(workers),
            ],
            bindings: [BindingSpec(queue: ingress, exchange: ingress, routingKey: taskRoutingKey)]
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
                    .deadLetter(exchange: ingress, routingKey: taskRoutingKey)
                    .atLeastOnceDeadLettering())
            topology.bindings.append(BindingSpec(queue: name, exchange: retry, routingKey: tier.name))
        }
        return topology
    }

    /// A site's backlog queue: durable, consumed by nobody, drained by the coordinator.
    public static func backlog(site: String) -> QueueSpec { QueueSpec.quorum(backlogQueue(site: site)) }

    /// A worker's own queue: durable, so a worker that restarts under the same id resumes it.
    public static func worker(id: String) -> QueueSpec { QueueSpec.quorum(workerQueue(id: id)) }

    /// Where the coordinator answers a worker's hello. Quorum, like every queue a worker relies
    /// on: a classic queue is unusable while its home node is down, and a worker would then not
    /// reconnect to the cluster. It outlives short disconnections and expires a minute after the
    /// worker is gone.
    public static func reply(worker id: String) -> QueueSpec {
        QueueSpec.quorum(replyQueue(worker: id), arguments: ["x-expires": .int(60_000)])
    }

    /// A coordinator's private queue on the `fanfic.status` exchange, bound to it (the broker
    /// deletes it with the connection).
    public static func statusRequests(coordinator name: String) -> AMQPTopology {
        let queue = statusQueue(coordinator: name)
        return AMQPTopology(
            queues: [QueueSpec(name: queue, durable: false, exclusive: true, autoDelete: true)],
            bindings: [BindingSpec(queue: queue, exchange: status, routingKey: "")])
    }

    /// The private queue of one `fanfic status` request's answers.
    public static func statusReplies(_ queue: String) -> QueueSpec {
        QueueSpec(name: queue, durable: false, exclusive: true, autoDelete: true)
    }

    /// A ``BrokerLock``'s queue: exclusive to its holder's connection, gone with it.
    public static func lock(_ name: String) -> QueueSpec {
        QueueSpec(name: name, durable: false, exclusive: true, autoDelete: false)
    }
}
