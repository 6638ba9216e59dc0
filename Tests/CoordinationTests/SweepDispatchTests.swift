import FanficCore
import Testing

@testable import Coordination

/// Rule 9: a sweep's checks yield to a person's tasks of the same site.
@Suite("Dispatch state machine: sweep checks yield to people")
struct SweepDispatchTests: MachineScenario {
    let configuration = DispatchStateMachine.Configuration(workerTimeout: .seconds(60))

    func check(_ handle: DeliveryHandle, site: String = "test1.com", sid: Int? = nil) -> IncomingTask {
        IncomingTask(
            handle: handle, taskID: "s\(handle)",
            identity: TaskIdentity(url: "http://\(site)?sid=\(sid ?? Int(handle))", site: site, calibreID: nil),
            isSweep: true)
    }

    func person(_ handle: DeliveryHandle, site: String = "test1.com", sid: Int? = nil) -> IncomingTask {
        IncomingTask(
            handle: handle, taskID: "t\(handle)",
            identity: TaskIdentity(url: "http://\(site)?sid=\(sid ?? Int(handle))", site: site, calibreID: nil))
    }

    /// A machine whose registered workers all said hello at 1 s: assigning from then on.
    func started(_ workers: [WorkerID]) -> DispatchStateMachine {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        for worker in workers { _ = machine.handle(.workerHello(worker, site: nil, unfinished: 0), at: .seconds(1)) }
        let discover = machine.handle(.registeredWorkers(Set(workers)), at: .seconds(1))
        #expect(discover.contains(.discoverBacklogs))
        _ = machine.handle(.backlogsDiscovered([:]), at: .seconds(1))
        #expect(machine.isRunning)
        return machine
    }

    /// Confirms every publish among the actions (the broker took them).
    func confirm(_ actions: [DispatchAction], _ machine: inout DispatchStateMachine, at time: Duration) {
        for case .publish(let move, _, _) in actions { _ = machine.handle(.publishConfirmed(move), at: time) }
    }

    @Test("a check of a free site goes to an idle worker, which takes the site")
    func freeSite() {
        var machine = started(["a"])
        let actions = machine.handle(.taskArrived(check(1)), at: .seconds(21))
        #expect(destinations(actions) == [.worker("a")])
        #expect(machine.assignments == ["a": "test1.com"])
    }

    @Test("checks of a busy site wait in its sweep backlog; a person's later task goes straight to the worker")
    func personGoesFirst() {
        var machine = started(["a"])
        let first = machine.handle(.taskArrived(person(1)), at: .seconds(21))
        #expect(destinations(first) == [.worker("a")])
        for handle in 2...4 {
            let parked = machine.handle(.taskArrived(check(DeliveryHandle(handle))), at: .seconds(21))
            #expect(destinations(parked) == [.sweepBacklog(site: "test1.com")])
            confirm(parked, &machine, at: .seconds(21))
        }
        let later = machine.handle(.taskArrived(person(5)), at: .seconds(22))
        #expect(destinations(later) == [.worker("a")], "the person's task is not behind the three checks")
        #expect(machine.sitesWaitingForSweep == ["test1.com"])
    }

    @Test("a site's sweep backlog drains one check at a time, only when its worker has nothing else")
    func drainsOneAtATime() {
        var machine = started(["a"])
        let first = machine.handle(.taskArrived(person(1)), at: .seconds(21))
        confirm(first, &machine, at: .seconds(21))
        confirm(machine.handle(.taskArrived(check(2)), at: .seconds(21)), &machine, at: .seconds(21))
        confirm(machine.handle(.taskArrived(check(3)), at: .seconds(21)), &machine, at: .seconds(21))
        let done = machine.handle(.taskFinished("a", person(1).identity), at: .seconds(30))
        #expect(done.contains(.drainSweepBacklog(site: "test1.com", into: "a")))
        #expect(!done.contains { if case .announce(.siteReleased) = $0 { true } else { false } })
        _ = machine.handle(
            .backlogTaskMoved(site: "test1.com", worker: "a", identity: check(2).identity), at: .seconds(30))
        let drained = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(30))
        #expect(!drained.contains(.drainSweepBacklog(site: "test1.com", into: "a")), "the moved check runs first")
        // A person's task arriving now goes to the worker, behind only the check it runs.
        let arrived = machine.handle(.taskArrived(person(4)), at: .seconds(31))
        #expect(destinations(arrived) == [.worker("a")])
        _ = machine.handle(.taskFinished("a", check(2).identity), at: .seconds(32))
        let next = machine.handle(.taskFinished("a", person(4).identity), at: .seconds(33))
        #expect(next.contains(.drainSweepBacklog(site: "test1.com", into: "a")))
        _ = machine.handle(
            .backlogTaskMoved(site: "test1.com", worker: "a", identity: check(3).identity), at: .seconds(33))
        _ = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(33))
        _ = machine.handle(.taskFinished("a", check(3).identity), at: .seconds(34))
        // One more look finds the sweep backlog empty; then the site is released.
        let last = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(34))
        #expect(last.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))), "\(last)")
        #expect(machine.sitesWaitingForSweep.isEmpty)
    }

    @Test("a site's own backlog drains before its sweep backlog; another site's people go before both")
    func peopleBacklogsFirst() {
        var machine = started(["a"])
        confirm(machine.handle(.taskArrived(person(1)), at: .seconds(21)), &machine, at: .seconds(21))
        confirm(machine.handle(.taskArrived(check(2)), at: .seconds(21)), &machine, at: .seconds(21))
        let other = machine.handle(.taskArrived(person(3, site: "test2.com")), at: .seconds(21))
        #expect(destinations(other) == [.backlog(site: "test2.com")])
        confirm(other, &machine, at: .seconds(21))
        let done = machine.handle(.taskFinished("a", person(1).identity), at: .seconds(30))
        #expect(done.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        #expect(done.contains(.drainBacklog(site: "test2.com", into: "a")))
        #expect(!done.contains(.drainSweepBacklog(site: "test1.com", into: "a")))
        #expect(machine.sitesWaitingForSweep == ["test1.com"], "the check still waits")
        // test2's backlog drained and run: now test1's check.
        _ = machine.handle(
            .backlogTaskMoved(site: "test2.com", worker: "a", identity: person(3, site: "test2.com").identity),
            at: .seconds(31))
        _ = machine.handle(.backlogDrained(site: "test2.com", worker: "a"), at: .seconds(31))
        let free = machine.handle(.taskFinished("a", person(3, site: "test2.com").identity), at: .seconds(32))
        #expect(free.contains(.drainSweepBacklog(site: "test1.com", into: "a")), "\(free)")
    }

    @Test("a person's submission of a story whose check is parked is not dropped; a check of a queued story is")
    func duplicates() {
        var machine = started(["a"])
        confirm(machine.handle(.taskArrived(person(1)), at: .seconds(21)), &machine, at: .seconds(21))
        confirm(machine.handle(.taskArrived(check(2, sid: 7)), at: .seconds(21)), &machine, at: .seconds(21))
        let same = machine.handle(.taskArrived(person(3, sid: 7)), at: .seconds(22))
        #expect(destinations(same) == [.worker("a")], "\(same)")
        let again = machine.handle(.taskArrived(check(4, sid: 7)), at: .seconds(22))
        #expect(again.contains(.announce(.duplicateDropped(check(4, sid: 7).identity))))
        let twice = machine.handle(.taskArrived(person(5, sid: 7)), at: .seconds(22))
        #expect(twice.contains(.announce(.duplicateDropped(person(5, sid: 7).identity))), "queued at the worker now")
    }

    @Test("while the table is rebuilt checks are parked; then they and the sweep backlogs found are drained")
    func restart() {
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = machine.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(1))
        _ = machine.handle(.workerHello("b", site: nil, unfinished: 0), at: .seconds(1))
        let parked = machine.handle(.taskArrived(check(1)), at: .seconds(2))
        #expect(destinations(parked) == [.sweepBacklog(site: "test1.com")], "nothing is assigned while rebuilding")
        _ = machine.handle(.tick, at: .seconds(60))
        let rebuilt = machine.handle(.backlogsDiscovered([:], sweep: ["test2.com": 4]), at: .seconds(60))
        #expect(rebuilt.contains(.drainSweepBacklog(site: "test1.com", into: "a")), "\(rebuilt)")
        #expect(rebuilt.contains(.drainSweepBacklog(site: "test2.com", into: "b")), "\(rebuilt)")
    }

    @Test("checks wait while their site's hourly budget is spent")
    func budget() {
        var configuration = configuration
        configuration.hourlyBudget = 1
        var machine = DispatchStateMachine(configuration: configuration, now: .zero)
        _ = machine.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(1))
        _ = machine.handle(.registeredWorkers(["a"]), at: .seconds(1))
        _ = machine.handle(.backlogsDiscovered([:]), at: .seconds(1))
        #expect(destinations(machine.handle(.taskArrived(check(1)), at: .seconds(2))) == [.worker("a")])
        let second = machine.handle(.taskArrived(check(2)), at: .seconds(3))
        #expect(destinations(second) == [.sweepBacklog(site: "test1.com")])
        confirm(second, &machine, at: .seconds(3))
        let done = machine.handle(.taskFinished("a", check(1).identity), at: .seconds(4))
        #expect(!done.contains(.drainSweepBacklog(site: "test1.com", into: "a")), "the hour's budget is spent")
        let hourLater = machine.handle(.heartbeat("a", site: nil, unfinished: 0), at: .seconds(3603))
        #expect(hourLater.contains(.drainSweepBacklog(site: "test1.com", into: "a")), "\(hourLater)")
    }
}
