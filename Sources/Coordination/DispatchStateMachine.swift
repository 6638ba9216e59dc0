import FanficCore

/// The coordinator's rules as a pure value: events in, actions out. No broker, no clock of its
/// own (the caller passes the time), no I/O; the service around it only performs the actions.
///
/// 1. A task of a site some worker holds goes to that worker's queue; else, if a worker is
///    idle (and the site's pause has passed), the site is assigned to it and the task follows;
///    else the task is parked in `fanfic.backlog.<site>` and the site waits, oldest first.
/// 2. A worker is idle when it has finished every task sent to it under its current
///    assignment (sent versus finished, never a bare "I'm idle", which races a routing).
///    It then releases its site and takes the oldest waiting site, whose whole backlog is
///    drained into its queue.
/// 3. Every move is publish, confirm, then ack of the source: `ack` is only ever emitted for
///    a delivery whose publish the broker confirmed (or for a dropped duplicate).
/// 4. The same task identity already queued or running is dropped as a duplicate.
/// 5. A worker silent for `workerTimeout` is presumed dead: its site is freed and its queue
///    reclaimed to ingress.
/// 6. After a restart, nothing is assigned until the table is rebuilt: heartbeats for one
///    timeout window (each says which site the worker holds and how much is left), or until
///    every worker the registry names has reported, then the backlogs are discovered. Tasks
///    arriving meanwhile are parked.
/// 8. A site whose holder reports a block (throttled, a challenge, down) is paused for every
///    worker: its tasks wait in its backlog for the site's delay or an exponential cooldown
///    (doubling per pause of the same outage, up to a maximum), then one worker tries it; the
///    outage ends when a task there ends without a block.
/// 9. A sweep's check (`submitted_by = "sweep"`) never goes ahead of a person's task: it goes to a
///    worker only when the site is free, else it waits in `fanfic.backlog.<site>.sweep`, which
///    is drained one task at a time, only when the site has nothing else to do and no other
///    site is waiting. A person's task is not dropped as a duplicate of a check still parked
///    there (it would wait behind it): both run, the second finds the book up to date.
/// 7. A worker that (re)starts says hello and consumes nothing until admitted. If its queue
///    still holds tasks of a site another worker now holds, the queue is first reclaimed to
///    ingress: a returning worker never runs a site behind its new holder's back.
public struct DispatchStateMachine: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Silence after which a worker is presumed dead.
        public var workerTimeout: Duration
        /// Minimum time between a site's release and its next assignment.
        public var sitePause: Duration
        /// Workers allowed on one site at once; 1 unless a site is listed here.
        public var siteCaps: [String: Int]
        /// A blocked site's first pause, doubled per further pause of the same outage up to
        /// `cooldownMax` (a longer delay the site asked for is honoured).
        public var cooldown: Duration
        public var cooldownMax: Duration
        /// `[sites."<site>"] pause`: a site's own `sitePause`.
        public var sitePauses: [String: Duration] = [:]
        /// Tasks of a site sent to workers in any hour (`max_tasks_per_hour`); 0: no limit.
        public var hourlyBudget = 0
        public var hourlyBudgets: [String: Int] = [:]
        /// Tasks a worker is sent from its site in one turn (`site_turn`); the rest waits in the
        /// site's backlog, and another waiting site goes first. 0: the whole backlog at once.
        public var siteTurn = 0

        public init(
            workerTimeout: Duration = .seconds(20), sitePause: Duration = .zero, siteCaps: [String: Int] = [:],
            cooldown: Duration = .seconds(60), cooldownMax: Duration = .seconds(3600)
        ) {
            self.workerTimeout = workerTimeout
            self.sitePause = sitePause
            self.siteCaps = siteCaps
            self.cooldown = cooldown
            self.cooldownMax = cooldownMax
        }

        func cap(_ site: String) -> Int { max(1, siteCaps[site] ?? 1) }
        func pause(_ site: String) -> Duration { sitePauses[site] ?? sitePause }
        func budget(_ site: String) -> Int { max(0, hourlyBudgets[site] ?? hourlyBudget) }
        /// How many tasks one drain may move: a turn, or nil for the whole backlog.
        var turnLimit: Int? { siteTurn > 0 ? siteTurn : nil }

        /// The pause after the `pauses`-th block of an outage (1 for the first).
        public func cooldown(pauses: Int, siteAsked: Duration?) -> Duration {
            var delay = cooldown
            for _ in 1..<max(1, min(pauses, 40)) where delay < cooldownMax { delay = delay * 2 }
            delay = min(delay, max(cooldown, cooldownMax))
            if let siteAsked, siteAsked > delay { delay = siteAsked }
            return delay
        }
    }

    struct Worker: Sendable, Hashable {
        var lastSeen: Duration
        var site: String?
        var sent = 0
        var finished = 0
        var draining = false
        /// The drain is of the site's sweep backlog (one task).
        var drainingSweep = false
        /// Tasks sent in this turn at the site.
        var turnSent = 0
        /// Identities sent under the current assignment and not yet finished.
        var outstanding: [TaskIdentity: Int] = [:]

        var isIdle: Bool { site == nil }
        var hasWorkLeft: Bool { draining || sent > finished }
        /// Unfinished tasks known only by count, not by identity.
        var anonymous: Int { sent - finished - outstanding.values.reduce(0, +) }

        /// Whether a `finished` for `identity` can be this worker's: a task this table sent it, or
        /// one of the tasks it is only known to hold by count (its report when the table was
        /// rebuilt, a drained task that did not decode), of its site. Anything else is forged or
        /// stale, and must neither release its site early nor free another worker's identity.
        func mayHaveFinished(_ identity: TaskIdentity) -> Bool {
            if outstanding[identity] != nil { return true }
            return anonymous > 0 && identity.site == site
        }
    }

    enum Phase: Sendable, Hashable {
        case rebuilding(until: Duration)
        case discovering
        case running
    }

    struct PendingMove: Sendable, Hashable {
        let task: IncomingTask
        let destination: Destination
    }

    public let configuration: Configuration
    private(set) var phase: Phase
    private(set) var workers: [WorkerID: Worker] = [:]
    /// site -> the workers holding it.
    private(set) var holders: [String: Set<WorkerID>] = [:]
    /// Sites with tasks waiting in their backlog for a worker, oldest first: sites nobody holds,
    /// and held sites whose holder has had its turn.
    private(set) var waitingSites: [String] = []
    /// Sites with sweep checks waiting in `fanfic.backlog.<site>.sweep`, oldest first.
    private(set) var sweepWaitingSites: [String] = []
    /// Copies of each identity parked in a sweep backlog (also counted in `inPipeline`).
    private(set) var sweepParked: [IdentityFingerprint: Int] = [:]
    private(set) var releasedAt: [String: Duration] = [:]
    /// Sites paused after a block, or being probed after their pause.
    public private(set) var pauses: [String: SitePause] = [:]
    /// Sites in their quiet hours: not contacted, their tasks wait in their backlogs.
    public private(set) var quietSites: Set<String> = []
    /// When tasks of each budgeted site went to a worker, in the last hour.
    private(set) var recentSends: [String: [Duration]] = [:]
    /// Workers whose drain was stopped before the backlog was empty: the site waits again after.
    private var stoppedDrains: Set<WorkerID> = []
    /// Copies of each identity in the pipeline (pending, parked, queued or running), by
    /// fingerprint: every queued task is remembered, and at 100,000 of them their URLs' strings
    /// were most of the coordinator's memory.
    private(set) var inPipeline: [IdentityFingerprint: Int] = [:]
    private(set) var pendingMoves: [MoveID: PendingMove] = [:]
    /// Workers whose queue is being reclaimed, and whether to admit them (empty) once it is done:
    /// only those that said hello. A worker presumed dead stays out until it says hello.
    private(set) var reclaiming: [WorkerID: Bool] = [:]
    /// When each unknown worker was last asked to say hello again (at most once a timeout).
    private var askedToRejoin: [WorkerID: Duration] = [:]
    /// Hellos with leftovers heard while rebuilding: decided once every running worker has
    /// reported, so that a worker already running a site wins over one returning to it.
    private var deferredHellos: [WorkerID: (site: String, unfinished: Int)] = [:]
    /// The registered workers the rebuild still waits for; nil: unknown, the whole window.
    private var awaitedWorkers: Set<WorkerID>?
    private var nextMove: UInt64 = 1

    /// A coordinator that has just started: it rebuilds its table for one timeout window.
    public init(configuration: Configuration, now: Duration) {
        self.configuration = configuration
        self.phase = .rebuilding(until: now + configuration.workerTimeout)
    }

    /// Whether the table is rebuilt and tasks are being assigned.
    public var isRunning: Bool { phase == .running }

    /// The site each live worker holds: what `fanfic status` shows.
    public var assignments: [WorkerID: String] { workers.compactMapValues(\.site) }

    public var waitingSiteCount: Int { waitingSites.count }

    /// Sites with tasks waiting in their backlog, oldest first.
    public var sitesWaiting: [String] { waitingSites }

    /// Sites with sweep checks waiting in their sweep backlog, oldest first.
    public var sitesWaitingForSweep: [String] { sweepWaitingSites }

    /// Where this term is, for `fanfic status`.
    public var statusPhase: CoordinatorStatus.Phase {
        switch phase {
        case .rebuilding: .rebuilding
        case .discovering: .discovering
        case .running: .running
        }
    }

    /// Tasks sent to each live worker under its assignment and not yet finished.
    public var unfinishedByWorker: [WorkerID: Int] {
        workers.mapValues { max(0, $0.sent - $0.finished) }
    }

    /// Workers this table knows: alive, or presumed dead with their queue being reclaimed.
    public var knownWorkers: Set<WorkerID> { Set(workers.keys).union(reclaiming.keys) }

    // MARK: Events

    public mutating func handle(_ event: DispatchEvent, at now: Duration) -> [DispatchAction] {
        var actions: [DispatchAction] = []
        switch event {
        case .taskArrived(let task):
            arrive(task, now: now, into: &actions)
        case .publishConfirmed(let move):
            if let pending = pendingMoves.removeValue(forKey: move) {
                actions.append(.ack(pending.task.handle))
                // Parked: its site waits, even if a drain that ran before this confirm found the
                // backlog empty (a needless drain finds it empty again; a missed one strands it).
                switch pending.destination {
                case .backlog(let site) where !waitingSites.contains(site): waitingSites.append(site)
                case .sweepBacklog(let site) where !sweepWaitingSites.contains(site): sweepWaitingSites.append(site)
                default: break
                }
            }
        case .publishFailed(let move):
            guard let pending = pendingMoves.removeValue(forKey: move) else { break }
            forget(pending.task.identity)
            if case .sweepBacklog = pending.destination {
                sweepParked.remove(IdentityFingerprint(pending.task.identity))
            }
            if case .worker(let id) = pending.destination, var worker = workers[id] {
                worker.sent -= 1
                worker.outstanding.remove(pending.task.identity)
                workers[id] = worker
            }
            actions.append(.requeue(pending.task.handle))
            releaseIfDone(now: now, into: &actions)
        case .workerHello(let id, let site, let unfinished):
            hello(id, site: site, unfinished: unfinished, now: now, into: &actions)
        case .workerReclaimed(let id):
            guard let admit = reclaiming.removeValue(forKey: id), admit else { break }
            seen(id, now: now, into: &actions)
            actions.append(.admit(id))
        case .heartbeat(let id, _, _) where reclaiming[id] != nil:
            break  // not admitted yet: its reclaim goes on
        case .heartbeat(let id, _, _) where workers[id] == nil && phase == .running:
            // Once the table is rebuilt, only workers that said hello to it are believed: one
            // presumed dead, or one that never said hello, is asked to (once a timeout).
            if askedToRejoin[id].map({ now - $0 >= configuration.workerTimeout }) ?? true {
                if askedToRejoin.count >= 1024 { askedToRejoin = [:] }  // bounded, whoever sends
                askedToRejoin[id] = now
                actions.append(.askToRejoin(id))
            }
        case .heartbeat(let id, let site, let unfinished):
            heartbeat(id, site: site, unfinished: unfinished, now: now, into: &actions)
        case .taskFinished(let id, let identity):
            // Only hellos and heartbeats introduce a worker: one unknown here may hold a queue
            // that its next heartbeat has to account for.
            guard var worker = workers[id] else { break }
            worker.lastSeen = now
            if let site = worker.site, worker.mayHaveFinished(identity) {
                worker.finished += 1
                worker.outstanding.remove(identity)
                forget(identity)
                // Its block, had it met one, came before this `finished`: the site answered.
                if identity.site == site, let pause = pauses[site], pause.probing {
                    pauses[site] = nil
                    actions.append(
                        .announce(.siteResumed(site: site, worker: id, outage: now - pause.since, pauses: pause.pauses))
                    )
                }
            } else {
                actions.append(.announce(.finishedIgnored(id, identity)))
            }
            workers[id] = worker
            releaseIfDone(now: now, into: &actions)
        case .backlogTaskMoved(let site, let id, let identity):
            guard var worker = workers[id], worker.site == site else { break }
            worker.sent += 1
            worker.turnSent += 1
            if let identity {
                worker.outstanding.add(identity)
                if worker.drainingSweep { sweepParked.remove(IdentityFingerprint(identity)) }
            }
            // The identity was counted in the pipeline when it was parked (unless parked before a restart).
            workers[id] = worker
            recordSend(site, now: now)
            if worker.draining, !stoppedDrains.contains(id), mayNotContact(site, now: now) {
                stoppedDrains.insert(id)
                actions.append(.stopDrain(id))
            }
        case .backlogDrained(let site, let id):
            let wasSweep = workers[id]?.drainingSweep ?? false
            if stoppedDrains.remove(id) != nil, !wasSweep, !waitingSites.contains(site) {
                // Stopped early: what is left of the backlog waits for the site's turn again.
                waitingSites.append(site)
            }
            guard var worker = workers[id], worker.site == site else {
                if wasSweep, !sweepWaitingSites.contains(site) { sweepWaitingSites.append(site) }
                break
            }
            worker.draining = false
            worker.drainingSweep = false
            workers[id] = worker
            if wasSweep {
                // It moved its one check: more may wait (a needless drain finds the queue empty).
                if worker.turnSent > 0, !sweepWaitingSites.contains(site) { sweepWaitingSites.append(site) }
                releaseIfDone(now: now, into: &actions)
                break
            }
            // A drain that moved a whole turn may have left tasks behind: the site waits for its next turn.
            if turnIsOver(id), !waitingSites.contains(site) { waitingSites.append(site) }
            releaseIfDone(now: now, into: &actions)
        case .backlogsDiscovered(let counts, let sweepCounts):
            guard phase == .discovering || phase == .running else { break }
            for site in counts.filter({ $0.value > 0 }).keys.sorted() where !waitingSites.contains(site) {
                waitingSites.append(site)
            }
            for site in sweepCounts.filter({ $0.value > 0 }).keys.sorted() where !sweepWaitingSites.contains(site) {
                sweepWaitingSites.append(site)
            }
            // Running: backlogs the discovery could not ask about at first, found later. They
            // wait like any site's backlog (a holder takes them after its turn).
            guard phase == .discovering else { break }
            phase = .running
            for id in deferredHellos.keys.sorted() {
                let (site, unfinished) = deferredHellos[id]!
                hello(id, site: site, unfinished: unfinished, now: now, into: &actions)
            }
            deferredHellos = [:]
            actions.append(.announce(.tableRebuilt(workers: workers.count, waitingSites: waitingSites.count)))
            drainWaitingIntoHolders(into: &actions)
            releaseIfDone(now: now, into: &actions)
        case .registeredWorkers(let registered):
            if case .rebuilding = phase { awaitedWorkers = registered }
        case .quietSites(let sites):
            quietSites = sites
            for (site, holders) in holders where sites.contains(site) {
                for id in holders.sorted() where workers[id]?.draining == true && !stoppedDrains.contains(id) {
                    stoppedDrains.insert(id)
                    actions.append(.stopDrain(id))
                }
            }
        case .siteBlocked(let id, let site, let retryAfter, let reason):
            block(site, by: id, retryAfter: retryAfter, reason: reason, now: now, into: &actions)
        case .tick:
            break
        }
        probeSitesWhosePauseEnded(now: now)
        expireSilentWorkers(now: now, into: &actions)
        if case .rebuilding(let until) = phase, now >= until || everyRegisteredWorkerReported {
            phase = .discovering
            actions.append(.discoverBacklogs)
        }
        if phase == .running { assignWaitingSites(now: now, into: &actions) }
        return actions
    }

    /// Whether the rebuild has heard from every worker the registry names (hellos kept for
    /// after the rebuild count: they said what they hold).
    private var everyRegisteredWorkerReported: Bool {
        guard let awaited = awaitedWorkers else { return false }
        return awaited.allSatisfy { workers[$0] != nil || deferredHellos[$0] != nil || reclaiming[$0] != nil }
    }

    // MARK: Routing

    private mutating func arrive(_ task: IncomingTask, now: Duration, into actions: inout [DispatchAction]) {
        let fingerprint = IdentityFingerprint(task.identity)
        let copies = inPipeline[fingerprint, default: 0]
        // A person's task goes on even if its only copies are sweep checks still parked: they
        // wait behind every other task of the site, and it must not.
        if copies > 0, task.isSweep || sweepParked[fingerprint, default: 0] < copies {
            actions.append(.ack(task.handle))
            actions.append(.announce(.duplicateDropped(task.identity)))
            return
        }
        let site = task.site
        let destination: Destination
        if task.isSweep {
            destination = routeSweep(task, now: now, into: &actions)
        } else if phase != .running {
            destination = .backlog(site: site)
        } else if mayNotContact(site, now: now) {
            // Paused, quiet or out of budget: it waits with the rest of the site's tasks.
            destination = .backlog(site: site)
        } else if let holder = leastLoadedHolder(of: site), !shouldWiden(site, leastLoaded: holder, now: now) {
            // Past its turn, the holder gets the site's next tasks from the backlog, after any
            // other site waiting: a big submission of one site does not starve the others.
            destination = turnIsOver(holder) ? .backlog(site: site) : .worker(holder)
        } else if let idle = idleWorker(), canAssign(site, now: now) {
            assign(site, to: idle, draining: waitingSites.contains(site), into: &actions)
            destination = .worker(idle)
        } else {
            destination = .backlog(site: site)
        }
        switch destination {
        case .worker(let id):
            workers[id]!.sent += 1
            workers[id]!.turnSent += 1
            workers[id]!.outstanding.add(task.identity)
            recordSend(site, now: now)
        case .backlog(let site):
            if !waitingSites.contains(site) { waitingSites.append(site) }
        case .sweepBacklog(let site):
            if !sweepWaitingSites.contains(site) { sweepWaitingSites.append(site) }
            sweepParked[fingerprint, default: 0] += 1
        }
        inPipeline[fingerprint, default: 0] += 1
        let move = MoveID(nextMove)
        nextMove += 1
        pendingMoves[move] = PendingMove(task: task, destination: destination)
        actions.append(.publish(move, task, to: destination))
        actions.append(.announce(.taskRouted(task.identity, destination)))
    }

    /// A sweep check goes to a worker only when its site is free and nothing else waits for the
    /// worker: an idle worker takes the site for it. Otherwise it waits in the sweep backlog.
    private mutating func routeSweep(
        _ task: IncomingTask, now: Duration, into actions: inout [DispatchAction]
    ) -> Destination {
        let site = task.site
        guard phase == .running, !mayNotContact(site, now: now), holders[site, default: []].isEmpty,
            !waitingSites.contains(site), !sweepWaitingSites.contains(site),
            !waitingSites.contains(where: { canAssign($0, now: now) }),
            let idle = idleWorker(), canAssign(site, now: now)
        else { return .sweepBacklog(site: site) }
        assign(site, to: idle, draining: false, into: &actions)
        return .worker(idle)
    }

    private func leastLoadedHolder(of site: String) -> WorkerID? {
        holders[site, default: []].sorted().min { lhs, rhs in
            let left = workers[lhs].map { $0.sent - $0.finished } ?? 0
            let right = workers[rhs].map { $0.sent - $0.finished } ?? 0
            return left < right
        }
    }

    /// A site allowed more than one worker takes another idle one when its holders are all busy.
    private func shouldWiden(_ site: String, leastLoaded holder: WorkerID, now: Duration) -> Bool {
        guard configuration.cap(site) > 1, let worker = workers[holder], worker.sent > worker.finished else {
            return false
        }
        return idleWorker() != nil && canAssign(site, now: now)
    }

    private func turnIsOver(_ id: WorkerID) -> Bool {
        guard let limit = configuration.turnLimit, let worker = workers[id] else { return false }
        return worker.turnSent >= limit
    }

    private func idleWorker() -> WorkerID? {
        workers.filter { $0.value.isIdle }.keys.sorted().first
    }

    private func canAssign(_ site: String, now: Duration) -> Bool {
        if mayNotContact(site, now: now) { return false }
        // Probed by one worker until a task there ends without a block.
        let cap = pauses[site] == nil ? configuration.cap(site) : 1
        guard holders[site, default: []].count < cap else { return false }
        if let released = releasedAt[site], now < released + configuration.pause(site) { return false }
        return true
    }

    private mutating func assign(
        _ site: String, to id: WorkerID, draining: Bool, into actions: inout [DispatchAction]
    ) {
        workers[id]!.site = site
        workers[id]!.sent = 0
        workers[id]!.finished = 0
        workers[id]!.turnSent = 0
        workers[id]!.outstanding = [:]
        workers[id]!.draining = draining
        workers[id]!.drainingSweep = false
        holders[site, default: []].insert(id)
        actions.append(.announce(.siteAssigned(site: site, worker: id)))
        if draining {
            waitingSites.removeAll { $0 == site }
            actions.append(.drainBacklog(site: site, into: id, upTo: configuration.turnLimit))
        }
    }

    /// Gives the oldest waiting sites to idle workers, each with its backlog (a turn of it); then,
    /// with workers still idle, sites with only sweep checks waiting, one check each.
    private mutating func assignWaitingSites(now: Duration, into actions: inout [DispatchAction]) {
        while let idle = idleWorker() {
            if let site = waitingSites.first(where: { canAssign($0, now: now) }) {
                assign(site, to: idle, draining: true, into: &actions)
                continue
            }
            guard
                let site = sweepWaitingSites.first(where: {
                    canAssign($0, now: now) && holders[$0, default: []].isEmpty && !waitingSites.contains($0)
                })
            else { return }
            assign(site, to: idle, draining: false, into: &actions)
            drainSweep(site, into: idle, into: &actions)
        }
    }

    /// Moves one check of the site's sweep backlog into the worker holding the site.
    private mutating func drainSweep(_ site: String, into id: WorkerID, into actions: inout [DispatchAction]) {
        workers[id]!.draining = true
        workers[id]!.drainingSweep = true
        workers[id]!.turnSent = 0
        sweepWaitingSites.removeAll { $0 == site }
        actions.append(.drainSweepBacklog(site: site, into: id))
    }

    /// After a rebuild, a parked site that a worker still holds drains into that worker.
    private mutating func drainWaitingIntoHolders(into actions: inout [DispatchAction]) {
        for site in waitingSites {
            guard let holder = holders[site, default: []].sorted().first else { continue }
            workers[holder]!.draining = true
            workers[holder]!.turnSent = 0
            actions.append(.drainBacklog(site: site, into: holder, upTo: configuration.turnLimit))
        }
        waitingSites.removeAll { !holders[$0, default: []].isEmpty }
    }

    /// Releases the site of every worker that has finished all it was sent; one whose site still
    /// has tasks waiting takes another turn there when no other site is waiting for it.
    private mutating func releaseIfDone(now: Duration, into actions: inout [DispatchAction]) {
        guard phase == .running else { return }
        for id in workers.keys.sorted() {
            guard var worker = workers[id], let site = worker.site, !worker.hasWorkLeft else { continue }
            if waitingSites.contains(site) {
                let othersWait = waitingSites.contains { $0 != site && canAssign($0, now: now) }
                if !othersWait && !mayNotContact(site, now: now) {
                    worker.sent = 0
                    worker.finished = 0
                    worker.turnSent = 0
                    worker.outstanding = [:]
                    worker.draining = true
                    workers[id] = worker
                    waitingSites.removeAll { $0 == site }
                    actions.append(.drainBacklog(site: site, into: id, upTo: configuration.turnLimit))
                    continue
                }
                // Its turn is over: behind the sites that waited meanwhile.
                waitingSites.removeAll { $0 == site }
                waitingSites.append(site)
            } else if sweepWaitingSites.contains(site), !waitingSites.contains(where: { canAssign($0, now: now) }),
                !mayNotContact(site, now: now)
            {
                // Nothing else to do here nor elsewhere: the site's next sweep check.
                worker.sent = 0
                worker.finished = 0
                worker.outstanding = [:]
                workers[id] = worker
                drainSweep(site, into: id, into: &actions)
                continue
            }
            worker.site = nil
            worker.sent = 0
            worker.finished = 0
            worker.outstanding = [:]
            workers[id] = worker
            holders[site]?.remove(id)
            if holders[site]?.isEmpty == true { holders[site] = nil }
            releasedAt[site] = now
            actions.append(.announce(.siteReleased(site: site, worker: id)))
        }
    }

    // MARK: Site pauses, quiet hours, hourly budgets

    /// Whether no task of the site may go to a worker now.
    private func mayNotContact(_ site: String, now: Duration) -> Bool {
        isPaused(site, now: now) || quietSites.contains(site) || budgetLeft(site, now: now) <= 0
    }

    /// Tasks the site may still be sent this hour (`Int.max` without a budget).
    public func budgetLeft(_ site: String, now: Duration) -> Int {
        let budget = configuration.budget(site)
        guard budget > 0 else { return .max }
        return budget - (recentSends[site] ?? []).filter { now - $0 < .seconds(3600) }.count
    }

    private mutating func recordSend(_ site: String, now: Duration) {
        guard configuration.budget(site) > 0 else { return }
        var sends = recentSends[site, default: []].filter { now - $0 < .seconds(3600) }
        sends.append(now)
        recentSends[site] = sends
    }

    private func isPaused(_ site: String, now: Duration) -> Bool {
        guard let pause = pauses[site] else { return false }
        return !pause.probing && now < pause.until
    }

    /// A block from the worker holding the site pauses it (once per pause: the reports of
    /// other holders during that pause change nothing).
    private mutating func block(
        _ site: String, by id: WorkerID, retryAfter: Duration?, reason: String, now: Duration,
        into actions: inout [DispatchAction]
    ) {
        guard let worker = workers[id], worker.site == site else {
            actions.append(.announce(.blockIgnored(id, site: site)))
            return
        }
        if isPaused(site, now: now) { return }
        let previous = pauses[site]
        let count = (previous?.pauses ?? 0) + 1
        let until = now + configuration.cooldown(pauses: count, siteAsked: retryAfter)
        pauses[site] = SitePause(reason: reason, since: previous?.since ?? now, until: until, pauses: count)
        if pauses.count > 10_000 { pauses = pauses.filter { !$0.value.probing } }  // bounded, whoever reports
        actions.append(
            .announce(
                .sitePaused(
                    site: site, worker: id, until: until, reason: reason, pauses: count,
                    waiting: max(0, worker.sent - worker.finished - 1))))
    }

    /// A pause that has passed becomes a probe: the site may be assigned again, to one worker.
    private mutating func probeSitesWhosePauseEnded(now: Duration) {
        for (site, pause) in pauses where !pause.probing && now >= pause.until {
            pauses[site]!.probing = true
        }
    }

    private mutating func forget(_ identity: TaskIdentity) {
        let fingerprint = IdentityFingerprint(identity)
        guard let count = inPipeline[fingerprint] else { return }
        inPipeline[fingerprint] = count > 1 ? count - 1 : nil
    }

    // MARK: Liveness

    private mutating func seen(_ id: WorkerID, now: Duration, into actions: inout [DispatchAction]) {
        if workers[id] == nil {
            workers[id] = Worker(lastSeen: now)
            askedToRejoin[id] = nil
            actions.append(.announce(.workerJoined(id)))
        } else {
            workers[id]!.lastSeen = now
        }
    }

    private mutating func hello(
        _ id: WorkerID, site: String?, unfinished: Int, now: Duration, into actions: inout [DispatchAction]
    ) {
        if reclaiming[id] != nil {
            reclaiming[id] = true  // admitted once its queue is emptied
            return
        }
        if workers[id] != nil {
            // Back within the timeout: the queue is what this table sent it, minus what it finished.
            seen(id, now: now, into: &actions)
            actions.append(.admit(id))
            return
        }
        if phase != .running, let site, unfinished > 0 {
            deferredHellos[id] = (site, unfinished)
            return
        }
        if let site, unfinished > 0, holders[site, default: []].count >= configuration.cap(site) {
            reclaiming[id] = true
            actions.append(.reclaim(id))
            return
        }
        heartbeat(id, site: site, unfinished: unfinished, now: now, into: &actions)
        actions.append(.admit(id))
    }

    private mutating func heartbeat(
        _ id: WorkerID, site: String?, unfinished: Int, now: Duration, into actions: inout [DispatchAction]
    ) {
        let known = workers[id] != nil
        if known, phase != .running {
            // Rebuilding: nothing has been sent to any worker in this term, so a worker's latest
            // report is the best count of what it holds (an earlier one may be stale: a queue
            // changes under a broker restart, a requeue, a reclaim another term began).
            seen(id, now: now, into: &actions)
            believe(id, site: site, unfinished: unfinished)
            return
        }
        // What a worker says it holds is believed only for workers this table does not know:
        // after a restart, or when a worker presumed dead comes back. Otherwise sent/finished rule.
        guard !known, let site, unfinished > 0 else {
            seen(id, now: now, into: &actions)
            if known, forgetStaleCount(of: id, reported: unfinished) { releaseIfDone(now: now, into: &actions) }
            return
        }
        guard holders[site, default: []].count < configuration.cap(site) else {
            // Running a site someone else holds (a worker presumed dead that was not): take back
            // what it has not started, and give it no site until it says hello again.
            reclaiming[id] = false
            actions.append(.reclaim(id))
            return
        }
        seen(id, now: now, into: &actions)
        workers[id]!.site = site
        workers[id]!.sent = unfinished
        holders[site, default: []].insert(id)
        // A backlog that site may have waits until this holder releases it, then drains.
    }

    /// Lowers the count of tasks a worker is known to hold only by number (its report when this
    /// table took it in, a drained task that did not decode) to what it now reports. Every such
    /// task it still holds was in its queue before that report, so the report counts it; the rest
    /// are gone: taken by a reclaim another term began, or parked by the worker without a
    /// `finished`. Tasks this table sent by identity are left alone: one may still be on its way
    /// and not yet counted. True when the count went down.
    private mutating func forgetStaleCount(of id: WorkerID, reported unfinished: Int) -> Bool {
        let reported = max(0, unfinished)
        guard let anonymous = workers[id]?.anonymous, anonymous > reported else { return false }
        workers[id]!.sent -= anonymous - reported
        return true
    }

    /// Takes a known worker's report as its holding, while the table is being rebuilt.
    private mutating func believe(_ id: WorkerID, site: String?, unfinished: Int) {
        guard var worker = workers[id] else { return }
        let holds = unfinished > 0 ? site : nil
        // A site that others already hold to its cap stays theirs: this report waits for the next.
        if let holds, holds != worker.site, holders[holds, default: []].count >= configuration.cap(holds) { return }
        if let old = worker.site, old != holds {
            holders[old]?.remove(id)
            if holders[old]?.isEmpty == true { holders[old] = nil }
        }
        if let holds { holders[holds, default: []].insert(id) }
        worker.site = holds
        worker.sent = unfinished
        worker.finished = 0
        worker.outstanding = [:]
        workers[id] = worker
    }

    private mutating func expireSilentWorkers(now: Duration, into actions: inout [DispatchAction]) {
        for id in workers.keys.sorted() {
            guard let worker = workers[id], now - worker.lastSeen > configuration.workerTimeout else { continue }
            workers[id] = nil
            if let site = worker.site {
                holders[site]?.remove(id)
                if holders[site]?.isEmpty == true { holders[site] = nil }
                releasedAt[site] = now
                // Its drain stops with the reclaim: what is left of the backlog waits again, first.
                if worker.drainingSweep {
                    if !sweepWaitingSites.contains(site) { sweepWaitingSites.insert(site, at: 0) }
                } else if worker.draining && !waitingSites.contains(site) {
                    waitingSites.insert(site, at: 0)
                }
            }
            // Its queue goes back to ingress: those tasks are no longer in the pipeline here.
            for (identity, count) in worker.outstanding {
                for _ in 0..<count { forget(identity) }
            }
            actions.append(.announce(.workerPresumedDead(id, site: worker.site)))
            // Should it say hello before its queue is emptied, it waits for the reclaim to finish;
            // if it does not, it stays out.
            reclaiming[id] = false
            actions.append(.reclaim(id))
        }
    }
}

extension Dictionary where Value == Int {
    fileprivate mutating func add(_ key: Key) { self[key, default: 0] += 1 }

    fileprivate mutating func remove(_ key: Key) {
        guard let count = self[key] else { return }
        self[key] = count > 1 ? count - 1 : nil
    }
}

/// A task identity in 128 bits, for remembering many of them in little memory: two hashes of it
/// keyed apart, with this process's random hashing seed (never stored nor sent, so nobody can
/// choose URLs that collide). Two distinct identities share one with odds of about n² / 2¹²⁹:
/// for a million queued tasks, 1 in 10²⁶.
struct IdentityFingerprint: Hashable, Sendable {
    let high: UInt64
    let low: UInt64

    init(_ identity: TaskIdentity) {
        high = Self.hash(identity, key: 0x9E37_79B9_7F4A_7C15)
        low = Self.hash(identity, key: 0xC2B2_AE3D_27D4_EB4F)
    }

    private static func hash(_ identity: TaskIdentity, key: UInt64) -> UInt64 {
        var hasher = Hasher()
        hasher.combine(key)
        hasher.combine(identity)
        return UInt64(bitPattern: Int64(hasher.finalize()))
    }
}
