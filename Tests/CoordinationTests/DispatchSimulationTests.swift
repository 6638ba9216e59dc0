import FanficCore
import Foundation
import TestSupport
import Testing

@testable import Coordination

/// Thousands of random interleavings of arrivals, confirms, failures, work, worker deaths and
/// returns, coordinator restarts and duplicates, against a simulated broker. After every step:
/// - no two live workers run tasks of one site at once (the site lock);
/// - every accepted task is somewhere (ingress, a backlog, a worker queue, running) or finished;
/// - nothing is acked before the broker confirmed its copy elsewhere;
/// - a person's task waits in a worker's queue behind at most one sweep check (the one the
///   worker may already be running when it arrives).
/// At the end, with faults stopped, every task finishes.
@Suite("Dispatch state machine: randomized interleavings")
struct DispatchSimulationTests {
    /// 30 schedules in the unit suite; `FANFIC_SIMULATION_SEEDS=N` runs N (scripts/test.sh runs
    /// 200 with the integration tests).
    static let seeds = UInt64(ProcessInfo.processInfo.environment["FANFIC_SIMULATION_SEEDS"].flatMap(Int.init) ?? 30)

    /// One test, the seeds in turn, yielding between them: as parallel cases the CPU-bound
    /// schedules would fill the cooperative pool and starve the unit tests that run beside them.
    @Test("invariants hold over random schedules")
    func randomSchedules() async throws {
        for seed in 0..<Self.seeds {
            var simulation = Simulation(seed: seed)
            for _ in 0..<600 {
                try simulation.randomStep()
                try simulation.checkInvariants()
            }
            try simulation.quiesce()
            #expect(simulation.unfinished.isEmpty, "seed \(seed): never finished \(simulation.unfinished)")
            #expect(simulation.finished.count > 0, "seed \(seed)")
            await Task.yield()
        }
    }

    @Test("the random schedules do exercise every fault they claim to")
    func coverage() async throws {
        let faults = [
            "coordinator restart", "worker killed", "worker returned", "duplicate dropped", "publish failed",
            "reclaim", "reclaim before admission", "backlog drained", "presumed dead", "sweep check drained",
            "report read stale", "connection lost mid-task",
        ]
        // Seeds in order until every fault has been seen (deterministic), at most 40.
        var total: [String: Int] = [:]
        var seed: UInt64 = 0
        while seed < 40, faults.contains(where: { total[$0, default: 0] == 0 }) {
            var simulation = Simulation(seed: seed)
            for _ in 0..<600 { try simulation.randomStep() }
            try simulation.quiesce()
            total.merge(simulation.stats) { $0 + $1 }
            seed += 1
            await Task.yield()
        }
        for fault in faults {
            #expect(total[fault, default: 0] > 0, "no \(fault) in \(seed) schedules: \(total)")
        }
    }
}

struct SimulationFailure: Error, CustomStringConvertible {
    let description: String
}

/// The broker, the workers and the service loop around the machine, in memory.
struct Simulation {
    struct Message: Hashable {
        let copy: Int
        let identity: TaskIdentity
        /// A sweep's check (one in four submissions).
        var sweep = false
    }

    struct InFlight {
        let move: MoveID
        let handle: DeliveryHandle
        let fails: Bool
    }

    struct SimWorker {
        var alive = true
        /// Consumes only once the coordinator admitted it after its hello.
        var admitted = false
        var running: Message?
        /// A task it goes on running after its connection was lost: the broker gave the task
        /// back to its queue, and when the run ends the ack fails (nothing is reported; the copy
        /// runs again). Until then it contacts the site, and its reports count the task.
        var zombie: Message?
        var reclaimPending = false
    }

    var rng: SplitMix64
    var now: Duration = .zero
    var machine: DispatchStateMachine
    /// Odd seeds give each worker turns of two tasks at a site (`site_turn`), even seeds whole backlogs.
    let configuration: DispatchStateMachine.Configuration
    let sites = ["test1.com", "test2.com", "test3.com", "test4.com"]

    // The broker.
    var ingress: [Message] = []
    var unacked: [DeliveryHandle: Message] = [:]
    /// By queue: `<site>` for a site's backlog, `<site>#sweep` for its sweep backlog.
    var backlogs: [String: [Message]] = [:]
    var queues: [WorkerID: [Message]] = [:]
    var inFlight: [InFlight] = []
    var confirmedHandles: Set<DeliveryHandle> = []
    var nextHandle: DeliveryHandle = 1
    var nextCopy = 1

    // The service's work in progress.
    var drains: [(site: String, worker: WorkerID, left: Int?, backlog: String)] = []

    // The workers.
    var workers: [WorkerID: SimWorker] = [:]
    /// What each worker published on the control exchange and the coordinator has not read yet,
    /// in order. A report is counted when it is made and read later, after moves made meanwhile:
    /// a hello may count a task a reclaim has since taken, a heartbeat may not count a task sent
    /// to it. Each step of time reads what was published before it (the lag stays under the
    /// worker timeout).
    var control: [WorkerID: [DispatchEvent]] = [:]
    var nextWorker = 1

    // Accounting.
    var submitted: Set<TaskIdentity> = []
    /// The same, in order: random picks must not depend on Set's per-process hash order.
    var submittedInOrder: [TaskIdentity] = []
    var finished: Set<TaskIdentity> = []
    var nextStory = 1
    /// How often each fault and decision happened, to show the schedules cover them.
    var stats: [String: Int] = [:]
    /// The last events and actions, shown when an invariant breaks.
    var trace: [String] = []

    let seed: UInt64

    init(seed: UInt64) {
        self.seed = seed
        rng = SplitMix64(seed: seed)
        var configuration = DispatchStateMachine.Configuration(workerTimeout: .seconds(20), sitePause: .seconds(1))
        configuration.siteTurn = seed % 2 == 1 ? 2 : 0
        self.configuration = configuration
        machine = DispatchStateMachine(configuration: configuration, now: .zero)
        for _ in 0..<3 { addWorker() }
        for id in workers.keys.sorted() { try! sendHello(id) }
    }

    var unfinished: Set<TaskIdentity> { submitted.subtracting(finished) }

    // MARK: Steps

    mutating func randomStep() throws {
        switch Int.random(in: 0..<114, using: &rng) {
        case 0..<14: submit(duplicate: Int.random(in: 0..<5, using: &rng) == 0)
        case 100..<112: try readControl()
        case 112..<114: loseConnection()
        case 14..<30: try deliverFromIngress()
        case 30..<42: try settleOnePublish()
        case 42..<60: try workOnce()
        case 60..<70: try drainOnce()
        case 70..<85: try advanceTime(by: .milliseconds(Int64.random(in: 100...4000, using: &rng)))
        case 85..<89: killWorker()
        case 89..<93: try reviveOrAddWorker()
        case 93..<95: try reclaimOnce()
        case 95..<97: try restartCoordinator()
        default: try advanceTime(by: .seconds(1))
        }
    }

    /// No more faults: keep stepping until everything is finished (or give up).
    mutating func quiesce() throws {
        for id in workers.keys.sorted() where !workers[id]!.alive { try revive(id) }
        for _ in 0..<20_000 {
            if unfinished.isEmpty && ingress.isEmpty && unacked.isEmpty { return }
            try deliverFromIngress()
            try settleOnePublish()
            try workOnce()
            try drainOnce()
            try reclaimOnce()
            try readControl()
            try advanceTime(by: .milliseconds(500))
            try checkInvariants()
        }
    }

    mutating func submit(duplicate: Bool) {
        let identity: TaskIdentity
        // Not one whose `finished` is still unread: read before it, a resubmission would be dropped
        // as a copy of the task just run (a known window, as long as a control message's trip).
        let resubmittable = submittedInOrder.filter { !finishedUnread.contains($0) }
        if duplicate, let existing = resubmittable.randomElement(using: &rng) {
            identity = existing
        } else {
            let site = sites.randomElement(using: &rng)!
            identity = TaskIdentity(url: "http://\(site)?sid=\(nextStory)", site: site, calibreID: nil)
            nextStory += 1
        }
        if submitted.insert(identity).inserted { submittedInOrder.append(identity) }
        finished.remove(identity)  // a resubmission after it finished is new work (an update)
        ingress.append(
            Message(copy: nextCopy, identity: identity, sweep: Int.random(in: 0..<4, using: &rng) == 0))
        nextCopy += 1
    }

    mutating func deliverFromIngress() throws {
        guard !ingress.isEmpty else { return }
        let message = ingress.removeFirst()
        let handle = nextHandle
        nextHandle += 1
        unacked[handle] = message
        let task = IncomingTask(
            handle: handle, taskID: "copy\(message.copy)", identity: message.identity, isSweep: message.sweep)
        try send(.taskArrived(task))
    }

    mutating func settleOnePublish() throws {
        guard !inFlight.isEmpty else { return }
        let publish = inFlight.remove(at: Int.random(in: 0..<inFlight.count, using: &rng))
        if publish.fails {
            stats["publish failed", default: 0] += 1
            try send(.publishFailed(publish.move))
        } else {
            confirmedHandles.insert(publish.handle)
            try send(.publishConfirmed(publish.move))
        }
    }

    /// A random live worker finishes its task, or takes the next one (prefetch 1).
    mutating func workOnce() throws {
        let candidates = workers.keys.sorted().filter {
            workers[$0]!.alive && (workers[$0]!.admitted || workers[$0]!.zombie != nil)
        }
        guard let id = candidates.randomElement(using: &rng) else { return }
        if workers[id]!.zombie != nil {
            // Its ack fails: no `finished`; the copy in its queue (or wherever a reclaim took it) runs again.
            workers[id]!.zombie = nil
        } else if !workers[id]!.admitted {
            return
        } else if let message = workers[id]!.running {
            workers[id]!.running = nil
            finished.insert(message.identity)
            report(id, .taskFinished(id, message.identity))
        } else if !(queues[id] ?? []).isEmpty {
            workers[id]!.running = queues[id]!.removeFirst()
        }
    }

    /// The service moves one backlog message into a worker queue (publish, confirm, ack).
    mutating func drainOnce() throws {
        guard !drains.isEmpty else { return }
        let index = Int.random(in: 0..<drains.count, using: &rng)
        let (site, worker, left, backlog) = drains[index]
        if backlogs[backlog, default: []].isEmpty || left == 0 {
            stats[backlog == site ? "backlog drained" : "sweep check drained", default: 0] += 1
            drains.remove(at: index)
            try send(.backlogDrained(site: site, worker: worker))
        } else {
            let message = backlogs[backlog]!.removeFirst()
            queues[worker, default: []].append(message)
            drains[index].left = left.map { $0 - 1 }
            try send(.backlogTaskMoved(site: site, worker: worker, identity: message.identity))
        }
    }

    mutating func reclaimOnce() throws {
        guard let id = workers.keys.sorted().first(where: { workers[$0]!.reclaimPending }) else { return }
        ingress += queues[id] ?? []
        queues[id] = []
        workers[id]!.reclaimPending = false
        try send(.workerReclaimed(id))
    }

    mutating func advanceTime(by step: Duration) throws {
        now += step
        // What was published before this step is read by now, a dead worker's too.
        for id in control.keys.sorted() {
            for event in control[id] ?? [] { try send(event) }
            control[id] = []
        }
        for id in workers.keys.sorted() where workers[id]!.alive {
            if workers[id]!.admitted {
                let (site, unfinished) = holding(id)
                report(id, .heartbeat(id, site: site, unfinished: unfinished))
            } else {
                try sendHello(id)  // repeated until admitted (a hello can be lost with a coordinator)
            }
        }
        try send(.tick)
    }

    var finishedUnread: Set<TaskIdentity> {
        Set(
            control.values.joined().compactMap {
                if case .taskFinished(_, let identity) = $0 { identity } else { nil }
            })
    }

    mutating func report(_ id: WorkerID, _ event: DispatchEvent) {
        control[id, default: []].append(event)
    }

    /// The coordinator reads one worker's oldest control message.
    mutating func readControl() throws {
        guard let id = control.keys.sorted().filter({ !control[$0]!.isEmpty }).randomElement(using: &rng) else {
            return
        }
        let event = control[id]!.removeFirst()
        switch event {
        case .workerHello(_, _, let unfinished), .heartbeat(_, _, let unfinished):
            if unfinished != holding(id).1 { stats["report read stale", default: 0] += 1 }
        default: break
        }
        try send(event)
    }

    /// The worker's connection drops mid-task: the broker gives the task back to the head of its
    /// queue, the run goes on, and the worker says hello again.
    mutating func loseConnection() {
        let candidates = workers.keys.sorted().filter { workers[$0]!.alive && workers[$0]!.running != nil }
        guard let id = candidates.randomElement(using: &rng), let running = workers[id]!.running else { return }
        stats["connection lost mid-task", default: 0] += 1
        queues[id, default: []].insert(running, at: 0)
        workers[id]!.zombie = running
        workers[id]!.running = nil
        workers[id]!.admitted = false
    }

    /// What a worker reports: the site of the task it runs (one of a lost connection first) or
    /// of its queue head, and how many are left, the one of a lost connection included.
    func holding(_ id: WorkerID) -> (String?, Int) {
        let worker = workers[id]!
        let queue = queues[id] ?? []
        let site = worker.zombie?.identity.site ?? worker.running?.identity.site ?? queue.first?.identity.site
        return (site, queue.count + (worker.running == nil ? 0 : 1) + (worker.zombie == nil ? 0 : 1))
    }

    mutating func sendHello(_ id: WorkerID) throws {
        let (site, unfinished) = holding(id)
        report(id, .workerHello(id, site: site, unfinished: unfinished))
    }

    mutating func killWorker() {
        let alive = workers.keys.sorted().filter { workers[$0]!.alive }
        guard alive.count > 1, let id = alive.randomElement(using: &rng) else { return }
        stats["worker killed", default: 0] += 1
        workers[id]!.alive = false
        workers[id]!.admitted = false
        workers[id]!.zombie = nil
        // Its unacked delivery goes back to the head of its queue.
        if let running = workers[id]!.running {
            queues[id, default: []].insert(running, at: 0)
            workers[id]!.running = nil
        }
    }

    mutating func reviveOrAddWorker() throws {
        let returnable = workers.keys.sorted().filter { !workers[$0]!.alive }
        if let id = returnable.randomElement(using: &rng), Bool.random(using: &rng) {
            try revive(id)
        } else if workers.count < 6 {
            try sendHello(addWorker())
        }
    }

    mutating func revive(_ id: WorkerID) throws {
        stats["worker returned", default: 0] += 1
        workers[id]!.alive = true
        try sendHello(id)
    }

    @discardableResult
    mutating func addWorker() -> WorkerID {
        let id = "w\(nextWorker)"
        nextWorker += 1
        workers[id] = SimWorker()
        queues[id] = []
        return id
    }

    /// The coordinator process dies: unacked ingress deliveries return, confirms and the
    /// service's work in progress are lost; published messages stay where they were published.
    mutating func restartCoordinator() throws {
        stats["coordinator restart", default: 0] += 1
        ingress = unacked.keys.sorted().map { unacked[$0]! } + ingress
        unacked = [:]
        inFlight = []
        drains = []
        // Reclaims are the coordinator's work too: they stop with it. A dead worker's leftovers
        // are decided again when it says hello.
        for id in workers.keys { workers[id]!.reclaimPending = false }
        machine = DispatchStateMachine(configuration: configuration, now: now)
    }

    // MARK: Performing the machine's actions

    mutating func send(_ event: DispatchEvent) throws {
        let actions = machine.handle(event, at: now)
        record("\(now) \(event)")
        for action in actions {
            record("    -> \(action)")
            try perform(action)
        }
    }

    mutating func record(_ line: String) {
        trace.append(line)
        if trace.count > 4000 { trace.removeFirst(1000) }
    }

    /// The failure with the trace's last lines about `words` (`FANFIC_SIMULATION_TRACE=N`: the
    /// last N lines, all of them).
    func failure(_ text: String, about words: [String] = []) -> SimulationFailure {
        if let all = ProcessInfo.processInfo.environment["FANFIC_SIMULATION_TRACE"].flatMap(Int.init) {
            return SimulationFailure(description: "seed \(seed), \(text)\n" + trace.suffix(all).joined(separator: "\n"))
        }
        let lines = trace.suffix(3000).filter { line in
            words.isEmpty || words.contains { line.contains($0) } || line.contains("Hello") || line.contains("iscover")
                || line.contains("admit") || line.contains("eclaim")
        }
        return SimulationFailure(description: "seed \(seed), \(text)\n" + lines.suffix(70).joined(separator: "\n"))
    }

    mutating func perform(_ action: DispatchAction) throws {
        switch action {
        case .publish(let move, let task, let destination):
            guard let message = unacked[task.handle] else {
                throw failure("publish of \(task.handle), which is not an unacked delivery")
            }
            let fails = Int.random(in: 0..<20, using: &rng) == 0
            if !fails {
                switch destination {
                case .worker(let id): queues[id, default: []].append(message)
                case .backlog(let site): backlogs[site, default: []].append(message)
                case .sweepBacklog(let site): backlogs[site + "#sweep", default: []].append(message)
                }
            }
            inFlight.append(InFlight(move: move, handle: task.handle, fails: fails))
        case .ack(let handle):
            guard let message = unacked.removeValue(forKey: handle) else {
                throw failure("ack of \(handle), which is not an unacked delivery")
            }
            if !confirmedHandles.contains(handle) && !isElsewhere(message.identity) {
                throw failure(
                    "acked \(message.identity) before any copy was confirmed elsewhere",
                    about: [message.identity.url + ")", "copy\(message.copy)\""])
            }
        case .requeue(let handle):
            if let message = unacked.removeValue(forKey: handle) { ingress.append(message) }
        case .drainBacklog(let site, let worker, let limit):
            drains.append((site, worker, limit, site))
        case .drainSweepBacklog(let site, let worker):
            drains.append((site, worker, 1, site + "#sweep"))
        case .discoverBacklogs:
            let counts = backlogs.filter { !$0.value.isEmpty }.mapValues(\.count)
            let sweep = Dictionary(
                uniqueKeysWithValues: counts.filter { $0.key.hasSuffix("#sweep") }.map {
                    (String($0.key.dropLast("#sweep".count)), $0.value)
                })
            try send(.backlogsDiscovered(counts.filter { !$0.key.hasSuffix("#sweep") }, sweep: sweep))
        case .reclaim(let id):
            stats["reclaim", default: 0] += 1
            if workers[id]?.alive == true && workers[id]?.admitted == false {
                stats["reclaim before admission", default: 0] += 1
            }
            // The service stops every drain into that queue before it empties it.
            drains.removeAll { $0.worker == id }
            workers[id]?.reclaimPending = true
        case .stopDrain(let id):
            // The service stops the drain, which then reports itself over.
            if let index = drains.firstIndex(where: { $0.worker == id }) {
                let site = drains.remove(at: index).site
                try send(.backlogDrained(site: site, worker: id))
            }
        case .admit(let id):
            if workers[id]?.alive == true { workers[id]!.admitted = true }
        case .askToRejoin(let id):
            // The worker stops taking tasks (the one in hand goes on) and says hello again.
            stats["asked to rejoin", default: 0] += 1
            if workers[id]?.alive == true { workers[id]!.admitted = false }
        case .announce(.duplicateDropped):
            stats["duplicate dropped", default: 0] += 1
        case .announce(.workerPresumedDead):
            stats["presumed dead", default: 0] += 1
        case .announce:
            break
        }
    }

    /// Whether a copy of the identity is in a queue, a backlog or running (a duplicate's original),
    /// or ran and its `finished` is still on its way (to the coordinator, it is running).
    func isElsewhere(_ identity: TaskIdentity) -> Bool {
        finishedUnread.contains(identity)
            || workers.values.contains { $0.running?.identity == identity }
            || queues.values.contains { $0.contains { $0.identity == identity } }
            || backlogs.values.contains { $0.contains { $0.identity == identity } }
            || unacked.values.contains { $0.identity == identity }
    }

    // MARK: Invariants

    func checkInvariants() throws {
        // The site lock: at most one live worker runs a task of a site.
        var runners: [String: [WorkerID]] = [:]
        for (id, worker) in workers where worker.alive {
            if let site = worker.running?.identity.site { runners[site, default: []].append(id) }
            if let site = worker.zombie?.identity.site { runners[site, default: []].append(id) }
        }
        for (site, ids) in runners where ids.count > configuration.cap(site) {
            throw failure("at \(now): \(ids.sorted()) all run tasks of \(site)", about: ids.map { "\"\($0)\"" })
        }
        // A person's task waits behind one sweep check at most.
        for (id, worker) in workers where worker.alive {
            let line = (worker.running.map { [$0] } ?? []) + (queues[id] ?? [])
            guard let lastPerson = line.lastIndex(where: { !$0.sweep }) else { continue }
            let ahead = line[..<lastPerson].filter(\.sweep).count
            if ahead > 1 {
                throw failure(
                    "at \(now): a person's task waits behind \(ahead) sweep checks in \(id)", about: ["\"\(id)\""])
            }
        }
        // Nothing lost: every unfinished identity has a copy somewhere.
        for identity in unfinished {
            let inIngress = ingress.contains { $0.identity == identity }
            if !inIngress && !isElsewhere(identity) {
                throw failure("at \(now): \(identity) is lost")
            }
        }
    }
}
