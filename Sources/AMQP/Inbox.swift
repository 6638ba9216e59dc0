import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Work handed to the connection thread. `perform` runs on that thread and resumes the
/// caller's continuation itself; `fail` resumes it when the command never runs.
struct Command: Sendable {
    let deadline: ContinuousClock.Instant
    /// Control commands (registering a consumer, cancelling one) run while disconnected too.
    let needsConnection: Bool
    let perform: @Sendable (ConnectionLoop) -> Void
    let fail: @Sendable (AMQPError) -> Void
    /// It only writes frames (a publish, an ack) and never waits for the broker's answer: a run of
    /// these may leave in shared packets.
    var onlySends = false
    /// A declaration: run beside the declarations queued next to it (see
    /// `ConnectionLoop.declareTogether(_:)`) rather than through `perform`.
    var declaration: Declaration?
}

/// The one place where callers' threads meet the connection thread: a locked command queue
/// and a self-pipe that wakes the thread out of `poll`.
///
/// A command only writes to the pipe when the thread is (about to be) asleep: while it works
/// through a busy stream of publishes and acks it picks new commands up on its next turn, and
/// two syscalls and a wake-up per command are saved.
final class Inbox: Sendable {
    struct State {
        var commands: [Command] = []
        var stopRequested = false
        var stopped = false
        var closeWaiters: [CheckedContinuation<Void, Never>] = []
        var connected = false
        var connectCount: UInt64 = 0
        var lastError: AMQPError?
        /// Between ``beginSleep(runnable:)`` and ``endSleep()``: a new command must wake it.
        var sleeping = false
    }

    let state = Mutex(State())
    let wakeReadFD: Int32
    let wakeWriteFD: Int32

    init() {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { fatalError("pipe() failed: errno \(errno)") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeReadFD = fds[0]
        wakeWriteFD = fds[1]
    }

    deinit {
        close(wakeReadFD)
        close(wakeWriteFD)
    }

    func submit(_ command: Command) {
        let (accepted, sleeping) = state.withLock { state -> (Bool, Bool) in
            guard !state.stopped && !state.stopRequested else { return (false, false) }
            state.commands.append(command)
            defer { state.sleeping = false }
            return (true, state.sleeping)
        }
        if !accepted {
            command.fail(AMQPError(.closed, "the connection was closed by its owner"))
        } else if sleeping {
            wake()
        }
    }

    /// The connection thread is about to wait in `poll` on ``wakeReadFD``: from now on a new
    /// command writes to the pipe. False (and no sleep) when a command it would run is waiting
    /// (`runnable`: while disconnected, most commands wait for the connection).
    func beginSleep(runnable: (Command) -> Bool = { _ in true }) -> Bool {
        state.withLock { state in
            guard !state.commands.contains(where: runnable) else { return false }
            state.sleeping = true
            return true
        }
    }

    /// Back from `poll`: commands are picked up without a wake again.
    func endSleep() {
        state.withLock { $0.sleeping = false }
        drainWake()
    }

    func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWriteFD, &byte, 1)  // a full pipe already means "wake up"
    }

    func drainWake() {
        var buffer = [UInt8](repeating: 0, count: 256)
        while read(wakeReadFD, &buffer, buffer.count) > 0 {}
    }

    var isStopRequested: Bool { state.withLock { $0.stopRequested } }

    /// Takes what can run now; while disconnected, also takes the commands past their deadline.
    func takeCommands(connected: Bool, now: ContinuousClock.Instant) -> (run: [Command], expired: [Command]) {
        state.withLock { state in
            if connected {
                defer { state.commands.removeAll(keepingCapacity: true) }
                return (state.commands, [])
            }
            var run: [Command] = []
            var expired: [Command] = []
            var kept: [Command] = []
            for command in state.commands {
                if !command.needsConnection {
                    run.append(command)
                } else if command.deadline <= now {
                    expired.append(command)
                } else {
                    kept.append(command)
                }
            }
            state.commands = kept
            return (run, expired)
        }
    }

    /// The earliest deadline among waiting commands, to bound a sleep while disconnected.
    var earliestDeadline: ContinuousClock.Instant? {
        state.withLock { $0.commands.filter(\.needsConnection).map(\.deadline).min() }
    }
}
