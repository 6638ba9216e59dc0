import AMQP
import FanficBroker
import Foundation
import Logging
import Synchronization

/// The sites whose backlog queues exist, kept in the durable queue `fanfic.backlogs`, so that a
/// new term asks the broker about those backlogs only.
///
/// AMQP has no way to ask whether a queue exists other than declaring it passively, and asking
/// about one that does not is a channel error: RabbitMQ logs it as an error, closes the channel,
/// and the coordinator opens it again. Asking about both backlogs of every site the rules know
/// cost 220 of them at each start and failover, while tasks were arriving.
///
/// Each message is `{"backlogs": [...], "sweep_backlogs": [...], "complete": true|false}`, the
/// sites of each kind of queue. Before a term first declares a site's backlog (or sweep
/// backlog), it records it (`complete: false`); each discovery asks about the queues the index
/// names, then rewrites it as one complete entry and removes what it read. Without a complete
/// entry (an installation from before the index, or the queue lost), discovery asks about every
/// site the rules know, as it always did, and so writes the first one.
final class BacklogIndex: Sendable {
    struct Entry: Codable, Equatable, Sendable {
        var backlogs: [String] = []
        var sweepBacklogs: [String] = []
        var complete = false

        enum CodingKeys: String, CodingKey {
            case backlogs
            case sweepBacklogs = "sweep_backlogs"
            case complete
        }
    }

    /// Sites by kind of backlog queue.
    struct Sites: Equatable, Sendable {
        var backlogs: Set<String> = []
        var sweepBacklogs: Set<String> = []

        subscript(sweep sweep: Bool) -> Set<String> {
            get { sweep ? sweepBacklogs : backlogs }
            set { if sweep { sweepBacklogs = newValue } else { backlogs = newValue } }
        }

        func union(_ other: Sites) -> Sites {
            Sites(backlogs: backlogs.union(other.backlogs), sweepBacklogs: sweepBacklogs.union(other.sweepBacklogs))
        }
    }

    /// What a discovery read: the sites the index names, whether it names every backlog (a
    /// complete entry was among them), and the messages the rewrite replaces.
    struct Reading: Sendable {
        var sites = Sites()
        var complete = false
        var messages: [BusMessage] = []

        /// The sites whose backlogs (or sweep backlogs) to ask about: the index's, and when it is
        /// not complete, every site the rules know too.
        func sitesToAsk(sweep: Bool, known: Set<String>) -> Set<String> {
            complete ? sites[sweep: sweep] : sites[sweep: sweep].union(known)
        }
    }

    /// An entry's size and the entries read past which the index is not trusted (a coordinator
    /// writes one entry per site it parks tasks of, and rewrites them as one at each start).
    static let maxEntryBytes = 1 << 20
    static let maxEntries = 100_000

    let bus: any MessageBus
    let logger: Logger
    /// What this term knows the durable index names (read, recorded or rewritten by it): no
    /// need to record these again.
    private let named = Mutex(Sites())
    /// The backlogs this term declared (or was about to): every rewrite keeps them.
    private let declaredThisTerm = Mutex(Sites())
    private let queueDeclared = Mutex(false)
    /// The term reads the index once, at its start (a first move may need to know what it names).
    private let load = Mutex<Load>(.notStarted)
    private let readingAtStart = Mutex(Reading())

    private enum Load {
        case notStarted
        case started(Completion)
        case done
    }

    init(bus: any MessageBus, logger: Logger) {
        self.bus = bus
        self.logger = logger
    }

    /// Puts a site's backlog (or sweep backlog) in the index unless this term knows it is there.
    /// Called before the queue is first declared; the record goes out on the publishing channel
    /// before the backlog's first task, so the broker has it first. Not waited for: it would
    /// hold up the site's first move, and a record lost costs only a backlog found late (when
    /// its site's next task arrives). Before the term has read the index, a site it names is
    /// recorded again (the next rewrite folds the copies).
    func record(_ site: String, sweep: Bool = false) async throws {
        declaredThisTerm.withLock { _ = $0[sweep: sweep].insert(site) }
        guard named.withLock({ $0[sweep: sweep].insert(site).inserted }) else { return }
        try await declareQueue()
        let entry = sweep ? Entry(sweepBacklogs: [site]) : Entry(backlogs: [site])
        bus.publish(
            try JSONEncoder().encode(entry), exchange: FanficTopology.dispatch, routingKey: FanficTopology.backlogIndex,
            properties: Self.properties, mandatory: true
        ) { [self] error in
            guard let error else { return }
            named.withLock { _ = $0[sweep: sweep].remove(site) }
            logger.warning(
                "backlog not recorded in the index; a later start finds it when its site's next task arrives",
                metadata: ["site": "\(site)", "sweep": "\(sweep)", "error": "\(error)"])
        }
    }

    /// The backlogs this term declared (or was about to).
    var declaredByThisTerm: Sites { declaredThisTerm.withLock { $0 } }

    /// What the index held at the start of the term: the first caller reads it, the others wait
    /// for that reading. Its messages stay unacked until ``rewrite(_:)`` or
    /// ``giveBack()``.
    func loadOnce() async -> Reading {
        let (completion, mine) = load.withLock { state -> (Completion?, Bool) in
            switch state {
            case .notStarted:
                let completion = Completion()
                state = .started(completion)
                return (completion, true)
            case .started(let completion): return (completion, false)
            case .done: return (nil, false)
            }
        }
        if mine, let completion {
            let reading = await read()
            readingAtStart.withLock { $0 = reading }
            load.withLock { $0 = .done }
            completion.finish()
        } else if let completion {
            await completion.waitUntilFinished()
        }
        return readingAtStart.withLock { $0 }
    }

    /// Puts back what the start of the term read and no rewrite replaced (the term ends first).
    func giveBack() async {
        for message in takeMessagesRead() {
            try? await message.reject(requeue: true)
        }
    }

    /// Reads the whole index.
    private func read() async -> Reading {
        var messages: [BusMessage] = []
        var sites = Sites()
        var complete = false
        var ignored = 0
        do {
            try await declareQueue()
            while messages.count < Self.maxEntries, let message = try await bus.get(queue: FanficTopology.backlogIndex)
            {
                messages.append(message)
                guard let entry = Self.entry(message.body) else {
                    ignored += 1
                    continue
                }
                sites.backlogs.formUnion(entry.backlogs)
                sites.sweepBacklogs.formUnion(entry.sweepBacklogs)
                complete = complete || entry.complete
            }
        } catch {
            for message in messages { try? await message.reject(requeue: true) }
            logger.warning(
                "backlog index not read; asking about every known site", metadata: ["error": "\(error)"])
            return Reading()
        }
        if ignored > 0 {
            logger.warning(
                "backlog index: entries that are not an index entry dropped", metadata: ["count": "\(ignored)"])
        }
        if messages.count >= Self.maxEntries {
            logger.warning(
                "backlog index holds too many entries; asking about every known site",
                metadata: ["entries": "\(messages.count)"])
            complete = false
        }
        // Named until the rewrite: what was read stays in the queue (unacked) until then.
        named.withLock { $0 = $0.union(sites) }
        return Reading(sites: sites, complete: complete, messages: messages)
    }

    /// Replaces what the start of the term read with one complete entry: `found` (the backlogs
    /// that exist or could not be asked about) and every one this term declared (perhaps after
    /// the question).
    func rewrite(_ found: Sites) async {
        let sites = declaredThisTerm.withLock { $0.union(found) }
        // Taken once: a message is settled by the rewrite or by ``giveBack()``, never both.
        let messages = takeMessagesRead()
        do {
            try await publish(
                Entry(backlogs: sites.backlogs.sorted(), sweepBacklogs: sites.sweepBacklogs.sorted(), complete: true))
            for message in messages { try? await message.ack() }
            // Records published after the read stay in the queue; they name declared backlogs.
            named.withLock { $0 = sites }
            logger.debug(
                "backlog index rewritten",
                metadata: [
                    "backlogs": "\(sites.backlogs.count)", "sweep_backlogs": "\(sites.sweepBacklogs.count)",
                    "entries_replaced": "\(messages.count)",
                ])
        } catch {
            for message in messages { try? await message.reject(requeue: true) }
            logger.warning("backlog index not rewritten", metadata: ["error": "\(error)"])
        }
    }

    private func takeMessagesRead() -> [BusMessage] {
        readingAtStart.withLock { reading in
            defer { reading.messages = [] }
            return reading.messages
        }
    }

    /// An entry, if `body` is one: well-formed, bounded, each site a plausible host name.
    static func entry(_ body: Data) -> Entry? {
        guard body.count <= maxEntryBytes, let entry = try? JSONDecoder().decode(Entry.self, from: body),
            entry.backlogs.allSatisfy(isSiteName), entry.sweepBacklogs.allSatisfy(isSiteName)
        else { return nil }
        return entry
    }

    /// A site as queue names carry it: printable ASCII without spaces, short enough that
    /// `fanfic.backlog.<site>.sweep` stays within AMQP's 255 bytes.
    static func isSiteName(_ site: String) -> Bool {
        !site.isEmpty && site.utf8.count <= 230 && site.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    private static let properties = AMQPMessageProperties(contentType: "application/json", deliveryMode: 2)

    private func declareQueue() async throws {
        if queueDeclared.withLock({ $0 }) { return }
        try await bus.declare(FanficTopology.backlogIndexQueue())
        queueDeclared.withLock { $0 = true }
    }

    private func publish(_ entry: Entry) async throws {
        try await bus.publish(
            try JSONEncoder().encode(entry), exchange: FanficTopology.dispatch, routingKey: FanficTopology.backlogIndex,
            properties: Self.properties, mandatory: true, retryFor: .seconds(10))
    }
}
