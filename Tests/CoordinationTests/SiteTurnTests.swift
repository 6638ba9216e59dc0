import FanficCore
import Testing

@testable import Coordination

/// `site_turn`: a worker takes a turn of a site's tasks, then a site that waited meanwhile goes
/// first; the site lock (one worker per site) is unchanged.
extension DispatchStateMachineTests {
    var turnsOfTwo: DispatchStateMachine.Configuration {
        var configuration = configuration
        configuration.siteTurn = 2
        return configuration
    }

    func identity(_ handle: DeliveryHandle, site: String = "test1.com") -> TaskIdentity {
        task(handle, site: site).identity
    }

    @Test("past its turn a holder's next tasks wait in the backlog; a site waiting meanwhile goes first")
    func turnsRotateSites() {
        var machine = running(workers: ["a"], configuration: turnsOfTwo)
        var destinations: [Destination] = []
        for handle: DeliveryHandle in 1...4 {
            destinations += publishes(machine.handle(.taskArrived(task(handle)), at: .seconds(21))).map(\.1)
        }
        #expect(destinations == [.worker("a"), .worker("a"), .backlog(site: "test1.com"), .backlog(site: "test1.com")])
        _ = machine.handle(.taskArrived(task(5, site: "test2.com")), at: .seconds(21))
        #expect(machine.sitesWaiting == ["test1.com", "test2.com"])

        _ = machine.handle(.taskFinished("a", identity(1)), at: .seconds(22))
        let turnOver = machine.handle(.taskFinished("a", identity(2)), at: .seconds(23))
        #expect(turnOver.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        #expect(turnOver.contains(.drainBacklog(site: "test2.com", into: "a", upTo: 2)), "\(turnOver)")
        #expect(!turnOver.contains { if case .drainBacklog(site: "test1.com", _, _) = $0 { true } else { false } })
        #expect(machine.sitesWaiting == ["test1.com"], "test1.com waits behind the site that waited")

        _ = machine.handle(
            .backlogTaskMoved(site: "test2.com", worker: "a", identity: identity(5, site: "test2.com")),
            at: .seconds(24))
        _ = machine.handle(.backlogDrained(site: "test2.com", worker: "a"), at: .seconds(24))
        let back = machine.handle(.taskFinished("a", identity(5, site: "test2.com")), at: .seconds(25))
        #expect(back.contains(.announce(.siteReleased(site: "test2.com", worker: "a"))))
        #expect(back.contains(.drainBacklog(site: "test1.com", into: "a", upTo: 2)), "\(back)")
        #expect(machine.sitesWaiting.isEmpty)
    }

    @Test("with no other site waiting, the holder takes its next turn without letting the site go")
    func nextTurnWithoutRelease() {
        var machine = running(workers: ["a"], configuration: turnsOfTwo)
        for handle: DeliveryHandle in 1...5 { _ = machine.handle(.taskArrived(task(handle)), at: .seconds(21)) }
        _ = machine.handle(.taskFinished("a", identity(1)), at: .seconds(22))
        let nextTurn = machine.handle(.taskFinished("a", identity(2)), at: .seconds(22))
        #expect(nextTurn.contains(.drainBacklog(site: "test1.com", into: "a", upTo: 2)), "\(nextTurn)")
        #expect(!nextTurn.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        #expect(machine.assignments == ["a": "test1.com"])

        for handle: DeliveryHandle in 3...4 {
            _ = machine.handle(
                .backlogTaskMoved(site: "test1.com", worker: "a", identity: identity(handle)), at: .seconds(23))
        }
        // A whole turn moved: the backlog may hold more, so the site waits for another turn.
        _ = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(23))
        #expect(machine.sitesWaiting == ["test1.com"])
        _ = machine.handle(.taskFinished("a", identity(3)), at: .seconds(24))
        let third = machine.handle(.taskFinished("a", identity(4)), at: .seconds(24))
        #expect(third.contains(.drainBacklog(site: "test1.com", into: "a", upTo: 2)))

        _ = machine.handle(.backlogTaskMoved(site: "test1.com", worker: "a", identity: identity(5)), at: .seconds(25))
        _ = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(25))
        #expect(machine.sitesWaiting.isEmpty, "a turn that found the backlog empty leaves nothing waiting")
        let done = machine.handle(.taskFinished("a", identity(5)), at: .seconds(26))
        #expect(done.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))
        #expect(!done.contains { if case .drainBacklog = $0 { true } else { false } })
    }

    @Test("without site_turn a holder is sent every task of its site and drains its whole backlog")
    func noTurns() {
        var machine = running(workers: ["a"])
        var destinations: [Destination] = []
        for handle: DeliveryHandle in 1...4 {
            destinations += publishes(machine.handle(.taskArrived(task(handle)), at: .seconds(21))).map(\.1)
        }
        #expect(destinations == Array(repeating: .worker("a"), count: 4))
    }

    /// Seen in a broker test under load: a task parked while no worker was there, a worker saying
    /// hello at once, and the drain finding the backlog empty because the parked publish was not
    /// yet confirmed. The task must not be stranded in the backlog.
    @Test("a task parked in a backlog that a drain already found empty is drained once its publish is confirmed")
    func parkedAfterDrain() throws {
        var machine = running(workers: [])
        let parked = machine.handle(.taskArrived(task(1)), at: .seconds(21))
        let move = try #require(publishes(parked).first)
        #expect(move.1 == .backlog(site: "test1.com"))
        let hello = machine.handle(.workerHello("a", site: nil, unfinished: 0), at: .seconds(21))
        #expect(hello.contains(.drainBacklog(site: "test1.com", into: "a")), "\(hello)")
        let empty = machine.handle(.backlogDrained(site: "test1.com", worker: "a"), at: .seconds(21))
        #expect(empty.contains(.announce(.siteReleased(site: "test1.com", worker: "a"))))

        let confirmed = machine.handle(.publishConfirmed(move.0), at: .seconds(22))
        #expect(confirmed.contains(.ack(1)))
        #expect(confirmed.contains(.drainBacklog(site: "test1.com", into: "a")), "\(confirmed)")
    }
}
