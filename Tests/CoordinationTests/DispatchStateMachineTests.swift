import FanficCore
import Testing

@testable import Coordination

/// Scenario tests: one rule each, step by step.
@Suite("Dispatch state machine: the rules")
struct DispatchStateMachineTests {
    let configuration = DispatchStateMachine.Configuration(workerTimeout: .seconds(20))

    func task(_ handle: DeliveryHandle, site: String = "test1.com", sid: Int? = nil) -> IncomingTask {
        IncomingTask(
            handle: handle, taskID: "t\(handle)",
            identity: TaskIdentity(url: "http://\(site)?sid=\(sid ?? Int(handle))", site: site, calibreID: nil))
    }

    /// A machine past its rebuild window, with `workers` said hello.
    func running(
        workers: [WorkerID] = ["a", "b"], configuration: DispatchStateMachine.Configuration? = nil
    ) -> DispatchStateMachine {
        var machine = DispatchStateMachine(configuration: configuration ?? self.configuration, now: .zero)
        for worker in workers { _ = machine.handle(.workerHello(worker, site: nil, unfinished: 0), at: .seconds(1)) }
        let discover = machine.handle(.tick, at: .seconds(20))
        #expect(discover.contains(.discoverBacklogs))
        _ = machine.handle(.backlogsDiscovered([:]), at: .seconds(20))
        #expect(machine.isRunning)
        return machine
    }

    func publishes(_ actions: [DispatchAction]) -> [(MoveID, Destination)] {
        actions.compactMap {
            if case .publish(let move, _, let destination) = $0 { return (move, destination) }
            return nil
        }
    }

    @Test("nothing is assigned while the table is being rebuilt: arrivals are parked")
    func rebuildParks() {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = machine.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(1))
        let actions = machine.handle(.taskArrived(task(1)), at: .seconds(2))
        #expect(publishes(actions).map(\.1) == [.backlog(site: "test1.com")])
        #expect(machine.assignments.isEmpty)
        _ = machine.handle(.tick, at: .seconds(20))
        let after = machine.handle(.backlogsDiscovered(["test1.com": 1]), at: .seconds(20))
        #expect(after.contains(.drainBacklog(site: "test1.com", into: "a")))
    }

    @Test(
        "a hello counting a task the last term already put back in ingress: the worker finishes what it holds, the site is released"
    )
    func staleHelloCount() {
        // After a broker node loss, a worker's task in hand went back to its queue, the last
        // term reclaimed that queue to ingress, and this term parked the task in the site's
        // backlog; the worker's hello still counts it. The drain sends it again, the worker
        // finishes it once and then reports it holds nothing.
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        let parked = machine.handle(.taskArrived(task(1)), at: .seconds(1))
        for (move, _) in publishes(parked) { _ = machine.handle(.publishConfirmed(move), at: .seconds(1)) }
        _ = machine.handle(.workerHello("a", site: "test1.com", unfinished: 1), at: .seconds(1))
        // Discovery ends before any heartbeat could correct the hello (a fast discovery).
        _ = machine.handle(.tick, at: .seconds(20))
        let running = machine.handle(.backlogsDiscovered(["test1.com": 1]), at: .seconds(20))
        #expect(running.contains(.drainBacklog(site: "test1.com", into: "a")))
        _ = machine.handle(
            .backlogTaskMoved(site: "test1.com", worker: "a", identity: task(1).identity), at: .seconds(20))
        _ = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(20))
        _ = machine.handle(.taskFinished("a", task(1).identity), at: .seconds(21))
        _ = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(22))
        _ = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(23))
        // The heartbeat bounds what the hello counted: the site is free (it stalled before).
        #expect(machine.assignments["a"] == nil, "the worker holds nothing; its site should be free")
    }

    @Test("a report lowers a count from a report, never a task sent by identity that may still be on its way")
    func reportBoundsOnlyCountedTasks() {
        var machine = running(workers: ["b"])
        _ = machine.handle(.workerHello("a", site: "test1.com", unfinished: 3), at: .seconds(21))
        #expect(machine.assignments["a"] == "test1.com")
        // Two of the three it counted are still there: it holds the site.
        _ = machine.handle(.heartbeat("a", site: "test1.com", unfinished: 2), at: .seconds(22))
        #expect(machine.assignments["a"] == "test1.com")
        // A task sent now by identity: a heartbeat counted before it arrived says 1, not 2.
        _ = machine.handle(.taskArrived(task(9)), at: .seconds(23))
        _ = machine.handle(.heartbeat("a", site: "test1.com", unfinished: 1), at: .seconds(23))
        _ = machine.handle(.taskFinished("a", task(1).identity), at: .seconds(24))
        let beforeItArrived = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(24))
        #expect(!beforeItArrived.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        #expect(machine.assignments["a"] == "test1.com", "the task sent by identity is still this worker's")
        let done = machine.handle(.taskFinished("a", task(9).identity), at: .seconds(25))
        #expect(done.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
    }

    @Test("a drained task that did not decode, parked by the worker without a `finished`, does not hold the site")
    func undecodableDrainedTask() {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = machine.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(1))
        _ = machine.handle(.tick, at: .seconds(20))
        let running = machine.handle(.backlogsDiscovered(["test1.com": 1]), at: .seconds(20))
        #expect(running.contains(.drainBacklog(site: "test1.com", into: "a")))
        _ = machine.handle(.backlogTaskMoved(site: "test1.com", worker: "a", identity: nil), at: .seconds(20))
        _ = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(20))
        #expect(machine.assignments["a"] == "test1.com")
        let parked = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(21))
        #expect(parked.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
    }

    @Test("a free site goes to an idle worker; the next task of that site follows it")
    func assignment() {
        var machine = running()
        let first = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        #expect(publishes(first).map(\.1) == [.worker("a")])
        #expect(first.contains(.announce(.siteAssigned(site: "test1.com", worker: "a"))))
        let second = machine.handle(.taskArrived(task(2)), at: .seconds(21))
        #expect(publishes(second).map(\.1) == [.worker("a")])
        let other = machine.handle(.taskArrived(task(3, site: "test2.com")), at: .seconds(21))
        #expect(publishes(other).map(\.1) == [.worker("b")])
        let third = machine.handle(.taskArrived(task(4, site: "test3.com")), at: .seconds(21))
        #expect(publishes(third).map(\.1) == [.backlog(site: "test3.com")])
    }

    @Test("the source is acked only after the broker confirmed the publish; a failed move is requeued")
    func ackAfterConfirm() throws {
        var machine = running()
        let actions = machine.handle(.taskArrived(task(7)), at: .seconds(21))
        #expect(!actions.contains(.ack(7)))
        let move = try #require(publishes(actions).first?.0)
        #expect(machine.handle(.publishConfirmed(move), at: .seconds(21)) == [.ack(7)])

        let second = machine.handle(.taskArrived(task(8)), at: .seconds(21))
        let failed = try #require(publishes(second).first?.0)
        let retry = machine.handle(.publishFailed(failed), at: .seconds(21))
        #expect(retry.contains(.requeue(8)))
        #expect(!retry.contains(.ack(8)))
    }

    @Test("a duplicate identity is dropped (acked, not published) while the first is in the pipeline")
    func duplicates() {
        var machine = running()
        _ = machine.handle(.taskArrived(task(1, sid: 5)), at: .seconds(21))
        let duplicate = machine.handle(.taskArrived(task(2, sid: 5)), at: .seconds(21))
        #expect(publishes(duplicate).isEmpty)
        #expect(duplicate.contains(.ack(2)))
        // Once finished, the same story may come again (an update).
        _ = machine.handle(.taskFinished("a", task(1, sid: 5).identity), at: .seconds(22))
        let again = machine.handle(.taskArrived(task(3, sid: 5)), at: .seconds(22))
        #expect(publishes(again).count == 1)
    }

    @Test("idle means every task sent was finished: then the oldest waiting site and its backlog move over")
    func releaseAndDrain() {
        var machine = running(workers: ["a"])
        _ = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        _ = machine.handle(.taskArrived(task(2)), at: .seconds(21))
        _ = machine.handle(.taskArrived(task(3, site: "test2.com")), at: .seconds(21))
        _ = machine.handle(.taskArrived(task(4, site: "test3.com")), at: .seconds(21))
        // One of two finished: still busy.
        let half = machine.handle(.taskFinished("a", task(1).identity), at: .seconds(22))
        #expect(!half.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        let done = machine.handle(.taskFinished("a", task(2).identity), at: .seconds(23))
        #expect(done.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        #expect(done.contains(.drainBacklog(site: "test2.com", into: "a")))
        #expect(!done.contains(.drainBacklog(site: "test3.com", into: "a")))
        // While draining, the worker is not idle even with nothing counted yet.
        let stillDraining = machine.handle(.tick, at: .seconds(24))
        #expect(!stillDraining.contains(.announce(.siteReleased(site: "test2.com", worker: "a"))))
        _ = machine.handle(
            .backlogTaskMoved(site: "test2.com", worker: "a", identity: task(3, site: "test2.com").identity),
            at: .seconds(24))
        _ = machine.handle(.backlogDrained(site: "test2.com", worker: "a"), at: .seconds(24))
        let next = machine.handle(.taskFinished("a", task(3, site: "test2.com").identity), at: .seconds(25))
        #expect(next.contains(.drainBacklog(site: "test3.com", into: "a")))
    }

    @Test("a silent worker is presumed dead: its site is freed and its queue reclaimed")
    func deadWorker() {
        var machine = running(workers: ["a", "b"])
        _ = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        _ = machine.handle(.heartbeat("b", site: nil, unfinished: 0), at: .seconds(15))
        let alive = machine.handle(.heartbeat("b", site: nil, unfinished: 0), at: .seconds(21))
        #expect(!alive.contains(.reclaim("a")), "20 s of silence is not yet past the timeout")
        let expired = machine.handle(.heartbeat("b", site: nil, unfinished: 0), at: .seconds(30))
        #expect(expired.contains(.reclaim("a")))
        #expect(expired.contains(.announce(.workerPresumedDead("a", site: "test1.com"))))
        // The reclaimed task comes back through ingress and is not mistaken for a duplicate.
        let back = machine.handle(.taskArrived(task(9, sid: 1)), at: .seconds(31))
        #expect(publishes(back).map(\.1) == [.worker("b")])
    }

    @Test("after a restart, heartbeats rebuild who holds what before anything is assigned")
    func rebuildFromHeartbeats() {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = machine.handle(.heartbeat("a", site: "test1.com", unfinished: 2), at: .seconds(1))
        _ = machine.handle(.heartbeat("b", site: nil, unfinished: 0), at: .seconds(1))
        _ = machine.handle(.tick, at: .seconds(20))
        _ = machine.handle(.backlogsDiscovered(["test2.com": 3]), at: .seconds(20))
        #expect(machine.assignments == ["a": "test1.com", "b": "test2.com"])
        // The held site keeps its worker: a new test1.com task goes to a, not b.
        let actions = machine.handle(.taskArrived(task(5)), at: .seconds(21))
        #expect(publishes(actions).map(\.1) == [.worker("a")])
        _ = machine.handle(.taskFinished("a", task(100).identity), at: .seconds(22))
        _ = machine.handle(.taskFinished("a", task(101).identity), at: .seconds(22))
        let last = machine.handle(.taskFinished("a", task(5).identity), at: .seconds(23))
        #expect(last.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
    }

    @Test(
        "while rebuilding, a worker's latest report replaces an earlier one: a stale count never holds a site forever")
    func rebuildBelievesTheLatestReport() {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        // Seen in the cluster test: a report from before a broker restart says 2, the queue
        // then holds 1, whose task ends before the rebuild does.
        _ = machine.handle(.heartbeat("a", site: "test1.com", unfinished: 2), at: .seconds(1))
        _ = machine.handle(.heartbeat("a", site: "test1.com", unfinished: 1), at: .seconds(2))
        _ = machine.handle(.taskFinished("a", task(100).identity), at: .seconds(3))
        _ = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(4))
        _ = machine.handle(.tick, at: .seconds(20))
        let rebuilt = machine.handle(
            .backlogsDiscovered(["test1.com": 1, "test2.com": 1]), at: .seconds(20))
        // a holds nothing now: it takes the oldest waiting site and its backlog.
        #expect(rebuilt.contains(.drainBacklog(site: "test1.com", into: "a")), "\(rebuilt)")
        _ = machine.handle(
            .backlogTaskMoved(site: "test1.com", worker: "a", identity: task(7).identity), at: .seconds(21))
        _ = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(21))
        let done = machine.handle(.taskFinished("a", task(7).identity), at: .seconds(22))
        #expect(done.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        #expect(done.contains(.drainBacklog(site: "test2.com", into: "a")), "the next site is not stuck behind a")

        // A report for a site another worker already holds (to its cap) does not take it over.
        var other = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = other.handle(.heartbeat("a", site: "test1.com", unfinished: 1), at: .seconds(1))
        _ = other.handle(.heartbeat("b", site: nil, unfinished: 0), at: .seconds(1))
        _ = other.handle(.heartbeat("b", site: "test1.com", unfinished: 1), at: .seconds(2))
        _ = other.handle(.tick, at: .seconds(20))
        _ = other.handle(.backlogsDiscovered([:]), at: .seconds(20))
        #expect(other.assignments == ["a": "test1.com"])
    }

    @Test("a site pause keeps a released site unassigned for that long")
    func sitePause() {
        var machine = DispatchStateMachine(
            configuration: .init(workerTimeout: .seconds(20), sitePause: .seconds(5)), now: .zero)
        _ = machine.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(1))
        _ = machine.handle(.tick, at: .seconds(20))
        _ = machine.handle(.backlogsDiscovered([:]), at: .seconds(20))
        _ = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        _ = machine.handle(.taskFinished("a", task(1).identity), at: .seconds(22))
        let early = machine.handle(.taskArrived(task(2)), at: .seconds(23))
        #expect(publishes(early).map(\.1) == [.backlog(site: "test1.com")])
        let later = machine.handle(.tick, at: .seconds(27))
        #expect(later.contains(.drainBacklog(site: "test1.com", into: "a")))
    }

    @Test("a site with a cap of two spreads its tasks over two workers, never three")
    func siteCap() {
        var machine = DispatchStateMachine(
            configuration: .init(workerTimeout: .seconds(20), siteCaps: ["test1.com": 2]), now: .zero)
        for worker in ["a", "b", "c"] {
            _ = machine.handle(.workerHello(worker, site: nil, unfinished: 0), at: .seconds(1))
        }
        _ = machine.handle(.tick, at: .seconds(20))
        _ = machine.handle(.backlogsDiscovered([:]), at: .seconds(20))
        var destinations: [Destination] = []
        for handle in 1...4 {
            destinations += publishes(machine.handle(.taskArrived(task(DeliveryHandle(handle))), at: .seconds(21))).map(
                \.1)
        }
        #expect(destinations == [.worker("a"), .worker("b"), .worker("a"), .worker("b")])
        #expect(machine.assignments == ["a": "test1.com", "b": "test1.com"])
    }

    @Test("a worker returning with tasks of a site someone else now holds is reclaimed before it is admitted")
    func returningWorkerConflict() {
        var machine = running(workers: ["b"])
        _ = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        let hello = machine.handle(.workerHello("a", site: "test1.com", unfinished: 3), at: .seconds(22))
        #expect(hello.contains(.reclaim("a")))
        #expect(!hello.contains(.admit("a")))
        // Its heartbeats while waiting change nothing.
        #expect(machine.handle(.heartbeat("a", site: "test1.com", unfinished: 3), at: .seconds(23)).isEmpty)
        let reclaimed = machine.handle(.workerReclaimed("a"), at: .seconds(24))
        #expect(reclaimed.contains(.admit("a")))
        // Now an ordinary idle worker: the next free site goes to it.
        let next = machine.handle(.taskArrived(task(2, site: "test2.com")), at: .seconds(25))
        #expect(publishes(next).map(\.1) == [.worker("a")])
    }

    @Test("a worker returning with tasks of a free site keeps them: it holds that site again")
    func returningWorkerAdopted() {
        var machine = running(workers: ["b"])
        let hello = machine.handle(.workerHello("a", site: "test1.com", unfinished: 2), at: .seconds(22))
        #expect(hello.contains(.admit("a")))
        #expect(machine.assignments["a"] == "test1.com")
        let next = machine.handle(.taskArrived(task(5)), at: .seconds(23))
        #expect(publishes(next).map(\.1) == [.worker("a")])
    }

    @Test("a `finished` for a task the worker was not sent neither frees its site nor another worker's identity")
    func finishedForAnotherTask() {
        var machine = running(workers: ["a", "b"])
        let sent = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        guard let (move, _) = publishes(sent).first else {
            Issue.record("not routed")
            return
        }
        _ = machine.handle(.publishConfirmed(move), at: .seconds(21))
        let forged = machine.handle(.taskFinished("a", task(7).identity), at: .seconds(22))
        #expect(forged.contains(.announce(.finishedIgnored("a", task(7).identity))))
        #expect(machine.assignments["a"] == "test1.com", "still running its one task")
        // The real one releases it.
        let real = machine.handle(.taskFinished("a", task(1).identity), at: .seconds(23))
        #expect(real.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
    }

    @Test("after the rebuild, heartbeats from an unknown worker ask it to say hello, once a timeout")
    func unknownHeartbeats() {
        var machine = running(workers: ["a"])
        _ = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(21))
        #expect(machine.handle(.heartbeat("x", site: nil, unfinished: 0), at: .seconds(21)) == [.askToRejoin("x")])
        #expect(machine.handle(.heartbeat("x", site: nil, unfinished: 0), at: .seconds(25)).isEmpty)
        _ = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(40))
        #expect(machine.handle(.heartbeat("x", site: nil, unfinished: 0), at: .seconds(41)) == [.askToRejoin("x")])
        #expect(!machine.knownWorkers.contains("x"))
        let arrived = machine.handle(.taskArrived(task(1)), at: .seconds(42))
        #expect(publishes(arrived).map(\.1) == [.worker("a")])
    }

    @Test("a worker presumed dead is not admitted when its queue is reclaimed, only after a hello")
    func deadStaysDead() {
        var machine = running(workers: ["a", "b"])
        _ = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(15))
        _ = machine.handle(.heartbeat("b", site: nil, unfinished: 0), at: .seconds(15))
        _ = machine.handle(.heartbeat("b", site: nil, unfinished: 0), at: .seconds(30))
        let dead = machine.handle(.heartbeat("b", site: nil, unfinished: 0), at: .seconds(40))
        #expect(dead.contains(.reclaim("a")))
        #expect(!machine.handle(.workerReclaimed("a"), at: .seconds(41)).contains(.admit("a")))
        #expect(machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(42)) == [.askToRejoin("a")])
        let hello = machine.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(43))
        #expect(hello.contains(.admit("a")))
    }
}

/// Steps shared by the scenarios of site pauses and politeness.
protocol MachineScenario {}

extension MachineScenario {
    func task(_ handle: DeliveryHandle, site: String = "test1.com") -> IncomingTask {
        IncomingTask(
            handle: handle, taskID: "t\(handle)",
            identity: TaskIdentity(url: "http://\(site)?sid=\(handle)", site: site, calibreID: nil))
    }

    /// A machine past its rebuild window, with `workers` said hello at 1 s (silent from then on).
    func running(_ configuration: DispatchStateMachine.Configuration, workers: [WorkerID]) -> DispatchStateMachine {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        for worker in workers { _ = machine.handle(.workerHello(worker, site: nil, unfinished: 0), at: .seconds(1)) }
        _ = machine.handle(.tick, at: .seconds(20))
        _ = machine.handle(.backlogsDiscovered([:]), at: .seconds(20))
        return machine
    }

    func destinations(_ actions: [DispatchAction]) -> [Destination] {
        actions.compactMap { if case .publish(_, _, let destination) = $0 { destination } else { nil } }
    }

    func beat(_ machine: inout DispatchStateMachine, _ workers: [WorkerID], at time: Duration) {
        for worker in workers { _ = machine.handle(.heartbeat(worker, site: nil, unfinished: 0), at: time) }
    }
}

@Suite("Dispatch state machine: a blocked site is paused for the fleet")
struct SitePauseTests: MachineScenario {
    let configuration = DispatchStateMachine.Configuration(
        workerTimeout: .seconds(20), cooldown: .seconds(10), cooldownMax: .seconds(40))

    func running(workers: [WorkerID]) -> DispatchStateMachine { running(configuration, workers: workers) }

    @Test("the cooldown doubles per pause of an outage up to its maximum; a longer Retry-After wins")
    func cooldown() {
        let delays = (1...5).map { configuration.cooldown(pauses: $0, siteAsked: nil) }
        #expect(delays == [.seconds(10), .seconds(20), .seconds(40), .seconds(40), .seconds(40)])
        #expect(configuration.cooldown(pauses: 1, siteAsked: .seconds(300)) == .seconds(300))
        #expect(configuration.cooldown(pauses: 3, siteAsked: .seconds(5)) == .seconds(40))
    }

    @Test("paused: its tasks wait in the backlog, no worker gets the site until the pause ends, then one tries")
    func pauseProbeResume() {
        var machine = running(workers: ["a", "b"])
        beat(&machine, ["a", "b"], at: .seconds(21))
        _ = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        _ = machine.handle(.taskArrived(task(2)), at: .seconds(21))
        _ = machine.handle(.taskArrived(task(3, site: "test2.com")), at: .seconds(21))

        let blocked = machine.handle(
            .siteBlocked("a", site: "test1.com", retryAfter: nil, reason: "HTTP 429"), at: .seconds(22))
        #expect(
            blocked.contains(
                .announce(
                    .sitePaused(
                        site: "test1.com", worker: "a", until: .seconds(32), reason: "HTTP 429", pauses: 1, waiting: 1))
            ))
        // A second report of the same pause (another holder, a late one) changes nothing.
        let again = machine.handle(
            .siteBlocked("a", site: "test1.com", retryAfter: nil, reason: "HTTP 429"), at: .seconds(22))
        #expect(again.isEmpty)
        // Only the site's holder is believed.
        let forged = machine.handle(
            .siteBlocked("b", site: "test1.com", retryAfter: .seconds(9999), reason: "forged"), at: .seconds(22))
        #expect(forged.contains(.announce(.blockIgnored("b", site: "test1.com"))))
        #expect(machine.pauses["test1.com"]?.until == .seconds(32))

        // New tasks of the site wait in its backlog even though "a" still holds it.
        #expect(destinations(machine.handle(.taskArrived(task(4)), at: .seconds(23))) == [.backlog(site: "test1.com")])
        // "a" hands its two back: the site is released, and nobody takes it while paused.
        _ = machine.handle(.taskFinished("a", task(1).identity), at: .seconds(23))
        let released = machine.handle(.taskFinished("a", task(2).identity), at: .seconds(23))
        #expect(released.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        #expect(!released.contains { if case .drainBacklog = $0 { true } else { false } })
        // The other site goes on at full speed meanwhile.
        #expect(
            destinations(machine.handle(.taskArrived(task(5, site: "test2.com")), at: .seconds(24))) == [.worker("b")])
        beat(&machine, ["a", "b"], at: .seconds(30))
        #expect(!machine.handle(.tick, at: .seconds(31)).contains(.drainBacklog(site: "test1.com", into: "a")))
        // The pause is over: one worker tries the site with its backlog.
        #expect(machine.handle(.tick, at: .seconds(32)).contains(.drainBacklog(site: "test1.com", into: "a")))
        #expect(machine.pauses["test1.com"]?.probing == true)
        _ = machine.handle(
            .backlogTaskMoved(site: "test1.com", worker: "a", identity: task(4).identity), at: .seconds(32))
        _ = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(32))

        // Blocked again: twice as long.
        let second = machine.handle(
            .siteBlocked("a", site: "test1.com", retryAfter: nil, reason: "HTTP 503"), at: .seconds(33))
        #expect(
            second.contains(
                .announce(
                    .sitePaused(
                        site: "test1.com", worker: "a", until: .seconds(53), reason: "HTTP 503", pauses: 2, waiting: 0))
            ))
        _ = machine.handle(.taskFinished("a", task(4).identity), at: .seconds(33))
        #expect(machine.pauses["test1.com"]?.probing == false, "a finished task after a block is not a recovery")

        // Back after the second pause, and a task ends without a block: the outage is over.
        beat(&machine, ["a", "b"], at: .seconds(45))
        beat(&machine, ["a", "b"], at: .seconds(53))
        _ = machine.handle(.tick, at: .seconds(53))
        let arrived = machine.handle(.taskArrived(task(6)), at: .seconds(54))
        let probe = destinations(arrived)
        #expect(probe.count == 1 && probe != [.backlog(site: "test1.com")])
        guard case .worker(let prober) = probe.first else { return }
        let resumed = machine.handle(.taskFinished(prober, task(6).identity), at: .seconds(55))
        #expect(
            resumed.contains(
                .announce(.siteResumed(site: "test1.com", worker: prober, outage: .seconds(33), pauses: 2))))
        #expect(machine.pauses.isEmpty)
    }

    @Test("a site allowed several workers is tried by one after a pause, and widens only after a success")
    func probeWithOneWorker() {
        var machine = DispatchStateMachine(
            configuration: .init(
                workerTimeout: .seconds(20), siteCaps: ["test1.com": 2], cooldown: .seconds(5),
                cooldownMax: .seconds(5)),
            now: .zero)
        for worker in ["a", "b"] { _ = machine.handle(.workerHello(worker, site: nil, unfinished: 0), at: .seconds(1)) }
        _ = machine.handle(.tick, at: .seconds(20))
        _ = machine.handle(.backlogsDiscovered([:]), at: .seconds(20))
        beat(&machine, ["a", "b"], at: .seconds(21))
        _ = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        _ = machine.handle(.siteBlocked("a", site: "test1.com", retryAfter: nil, reason: "429"), at: .seconds(21))
        _ = machine.handle(.taskFinished("a", task(1).identity), at: .seconds(21))
        beat(&machine, ["a", "b"], at: .seconds(26))
        _ = machine.handle(.tick, at: .seconds(26))
        let first = destinations(machine.handle(.taskArrived(task(2)), at: .seconds(27)))
        let second = destinations(machine.handle(.taskArrived(task(3)), at: .seconds(27)))
        #expect(first == second, "both tasks go to the one worker trying the site")
        guard case .worker(let prober) = first.first else { return }
        _ = machine.handle(.taskFinished(prober, task(2).identity), at: .seconds(28))
        #expect(machine.pauses.isEmpty)
        let widened = destinations(machine.handle(.taskArrived(task(4)), at: .seconds(28)))
        #expect(widened.first != first.first, "after a success the site may take a second worker again")
    }
}

@Suite("Dispatch state machine: politeness per site")
struct SitePolitenessTests: MachineScenario {
    @Test("max tasks per hour: past the budget tasks wait in the backlog, a drain stops, the hour's end frees them")
    func hourlyBudget() {
        var configuration = DispatchStateMachine.Configuration(workerTimeout: .seconds(20))
        configuration.hourlyBudgets = ["test1.com": 2]
        var machine = running(configuration, workers: ["a"])
        beat(&machine, ["a"], at: .seconds(21))
        #expect(destinations(machine.handle(.taskArrived(task(1)), at: .seconds(21))) == [.worker("a")])
        #expect(destinations(machine.handle(.taskArrived(task(2)), at: .seconds(21))) == [.worker("a")])
        #expect(machine.budgetLeft("test1.com", now: .seconds(21)) == 0)
        #expect(destinations(machine.handle(.taskArrived(task(3)), at: .seconds(21))) == [.backlog(site: "test1.com")])
        // Another site is not held back by it.
        #expect(
            destinations(machine.handle(.taskArrived(task(4, site: "test2.com")), at: .seconds(21)))
                == [.backlog(site: "test2.com")], "only one worker, busy")
        _ = machine.handle(.taskFinished("a", task(1).identity), at: .seconds(22))
        let released = machine.handle(.taskFinished("a", task(2).identity), at: .seconds(22))
        #expect(
            released.contains(.drainBacklog(site: "test2.com", into: "a")), "the waiting site with budget goes first")
        _ = machine.handle(.backlogDrained(site: "test2.com", worker: "a"), at: .seconds(22))

        // An hour after the first sends, the budget is back and the backlog drains; the drain is
        // stopped once it has moved the hour's share.
        var time: Duration = .seconds(22)
        var resumed: [DispatchAction] = []
        while !resumed.contains(.drainBacklog(site: "test1.com", into: "a")) && time < .seconds(4000) {
            time += .seconds(10)
            resumed = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: time)
        }
        #expect(resumed.contains(.drainBacklog(site: "test1.com", into: "a")))
        #expect(time > .seconds(3621), "not before the hour is over: \(time)")
        _ = machine.handle(.backlogTaskMoved(site: "test1.com", worker: "a", identity: task(3).identity), at: time)
        _ = machine.handle(.backlogTaskMoved(site: "test1.com", worker: "a", identity: task(5).identity), at: time)
        let stopped = machine.handle(
            .backlogTaskMoved(site: "test1.com", worker: "a", identity: task(6).identity), at: time)
        #expect(stopped.isEmpty, "stopped once, at the second move")
        #expect(machine.budgetLeft("test1.com", now: time) < 0 || machine.budgetLeft("test1.com", now: time) == 0)
        _ = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: time)
        #expect(machine.sitesWaiting.contains("test1.com"), "what is left waits for the next hour")
    }

    @Test("the drain into a worker stops when the site's budget is spent")
    func drainStops() {
        var configuration = DispatchStateMachine.Configuration(workerTimeout: .seconds(20))
        configuration.hourlyBudget = 1
        var machineWithBacklog = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = machineWithBacklog.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(1))
        _ = machineWithBacklog.handle(.tick, at: .seconds(20))
        let drain = machineWithBacklog.handle(.backlogsDiscovered(["test1.com": 5]), at: .seconds(20))
        #expect(drain.contains(.drainBacklog(site: "test1.com", into: "a")))
        let moved = machineWithBacklog.handle(
            .backlogTaskMoved(site: "test1.com", worker: "a", identity: task(1).identity), at: .seconds(20))
        #expect(moved.contains(.stopDrain("a")))
        _ = machineWithBacklog.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(20))
        let done = machineWithBacklog.handle(.taskFinished("a", task(1).identity), at: .seconds(20))
        #expect(done.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        #expect(!done.contains(.drainBacklog(site: "test1.com", into: "a")), "no budget left this hour")
        #expect(machineWithBacklog.sitesWaiting == ["test1.com"])
    }

    @Test("quiet hours: the site's tasks wait in its backlog, a drain stops, and the end of quiet hours resumes it")
    func quiet() {
        var machine = running(.init(workerTimeout: .seconds(20)), workers: ["a", "b"])
        beat(&machine, ["a", "b"], at: .seconds(21))
        _ = machine.handle(.quietSites(["test1.com"]), at: .seconds(21))
        #expect(destinations(machine.handle(.taskArrived(task(1)), at: .seconds(21))) == [.backlog(site: "test1.com")])
        #expect(
            destinations(machine.handle(.taskArrived(task(2, site: "test2.com")), at: .seconds(21))) == [.worker("a")])
        #expect(!machine.handle(.tick, at: .seconds(22)).contains(.drainBacklog(site: "test1.com", into: "b")))
        let resumed = machine.handle(.quietSites([]), at: .seconds(23))
        #expect(resumed.contains(.drainBacklog(site: "test1.com", into: "b")))
        // Quiet hours beginning while a backlog drains stop the drain.
        let stopped = machine.handle(.quietSites(["test1.com"]), at: .seconds(24))
        #expect(stopped.contains(.stopDrain("b")))
    }

    @Test("a site's own pause between its release and its next assignment")
    func ownPause() {
        var configuration = DispatchStateMachine.Configuration(workerTimeout: .seconds(20))
        configuration.sitePauses = ["test1.com": .seconds(5)]
        var machine = running(configuration, workers: ["a"])
        beat(&machine, ["a"], at: .seconds(21))
        _ = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        _ = machine.handle(.taskFinished("a", task(1).identity), at: .seconds(22))
        #expect(destinations(machine.handle(.taskArrived(task(2)), at: .seconds(23))) == [.backlog(site: "test1.com")])
        #expect(
            destinations(machine.handle(.taskArrived(task(3, site: "test2.com")), at: .seconds(23))) == [.worker("a")],
            "other sites are not held back")
        _ = machine.handle(.taskFinished("a", task(3, site: "test2.com").identity), at: .seconds(24))
        #expect(!machine.handle(.tick, at: .seconds(26)).contains(.drainBacklog(site: "test1.com", into: "a")))
        #expect(machine.handle(.tick, at: .seconds(27)).contains(.drainBacklog(site: "test1.com", into: "a")))
    }
}

@Suite("Dispatch state machine: a start with nothing to wait for")
struct QuickRebuildTests: MachineScenario {
    let configuration = DispatchStateMachine.Configuration(workerTimeout: .seconds(20))

    @Test("no registered worker: the backlogs are looked at once, not after the whole window")
    func emptyRegistry() {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        let actions = machine.handle(.registeredWorkers([]), at: .milliseconds(300))
        #expect(actions.contains(.discoverBacklogs))
        _ = machine.handle(.backlogsDiscovered([:]), at: .milliseconds(310))
        #expect(machine.isRunning)
    }

    @Test("every registered worker reported: assigning starts; one silent: the whole window")
    func registeredWorkersReport() {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = machine.handle(.registeredWorkers(["a", "b"]), at: .milliseconds(200))
        #expect(
            !machine.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(1)).contains(.discoverBacklogs))
        let reported = machine.handle(.heartbeat("b", site: "test2.com", unfinished: 2), at: .seconds(2))
        #expect(reported.contains(.discoverBacklogs))
        _ = machine.handle(.backlogsDiscovered([:]), at: .seconds(2))
        #expect(machine.assignments == ["b": "test2.com"], "what it reported holding is believed")

        var waiting = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = waiting.handle(.registeredWorkers(["a", "gone"]), at: .milliseconds(200))
        _ = waiting.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(1))
        beat(&waiting, ["a"], at: .seconds(10))
        #expect(!waiting.handle(.tick, at: .seconds(19)).contains(.discoverBacklogs))
        #expect(waiting.handle(.tick, at: .seconds(20)).contains(.discoverBacklogs))
    }

    @Test("a returning worker with leftovers counts as reported; its hello is decided after the rebuild")
    func deferredHelloCounts() {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = machine.handle(.registeredWorkers(["a"]), at: .milliseconds(200))
        let hello = machine.handle(.workerHello("a", site: "test1.com", unfinished: 3), at: .seconds(1))
        #expect(hello.contains(.discoverBacklogs))
        let rebuilt = machine.handle(.backlogsDiscovered([:]), at: .seconds(1))
        #expect(rebuilt.contains(.admit("a")))
        #expect(machine.assignments == ["a": "test1.com"])
    }
}
