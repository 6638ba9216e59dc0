import Foundation
import Logging
import ServiceLifecycle
import Subprocess
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

#if canImport(SystemPackage)
    import SystemPackage
#else
    import System
#endif

/// `fanfic run`'s process manager: keeps every child running, restarting one that exits with a
/// growing delay, forwards their output line by line, and on graceful shutdown stops them in
/// order (workers and ingester, then the coordinator) within one timeout, killing what is left.
///
/// Children run in process groups of their own, so a Ctrl-C at the terminal reaches only the
/// supervisor, which then stops them in that order instead of all at once.
public final class Supervisor: Service, Sendable {
    public struct Settings: Sendable {
        public var children: [ChildSpec]
        public var stopTimeout: Duration
        public var backoff: RestartBackoff

        public init(children: [ChildSpec], stopTimeout: Duration, backoff: RestartBackoff = RestartBackoff()) {
            self.children = children
            self.stopTimeout = stopTimeout
            self.backoff = backoff
        }
    }

    private struct State {
        var stopping = false
        /// Running children by name.
        var running: [String: pid_t] = [:]
        var signalled: Set<pid_t> = []
    }

    let settings: Settings
    let printer: LinePrinter
    let logger: Logger
    private let state = Mutex(State())

    public init(settings: Settings, printer: LinePrinter, logger: Logger) {
        self.settings = settings
        self.printer = printer
        self.logger = logger
    }

    public func run() async {
        await withDiscardingTaskGroup { group in
            for child in settings.children {
                group.addTask { await self.supervise(child) }
            }
            group.addTask {
                do {
                    try await gracefulShutdown()
                } catch {
                    // Cancelled without a graceful shutdown: stop the children all the same.
                }
                await self.stopAll()
            }
        }
        logger.notice("every child stopped")
    }

    private var isStopping: Bool { state.withLock { $0.stopping } }

    // MARK: One child

    private func supervise(_ child: ChildSpec) async {
        var backoff = settings.backoff
        var options = PlatformOptions()
        options.processGroupID = 0
        let platformOptions = options
        while !isStopping {
            let started = ContinuousClock.now
            let outcome: String
            do {
                let result = try await Subprocess.run(
                    .path(FilePath(child.executable)),
                    arguments: Arguments(executablePathOverride: child.invokedAs, remainingValues: child.arguments),
                    environment: .inherit, platformOptions: platformOptions,
                    input: .none, output: .sequence, error: .sequence
                ) { execution in
                    self.started(child, pid: execution.processIdentifier.value)
                    async let out: Void = self.forward(execution.standardOutput, of: child)
                    async let err: Void = self.forward(execution.standardError, of: child)
                    _ = await (out, err)
                }
                outcome = Self.describe(result.terminationStatus)
            } catch {
                outcome = "could not start \(child.executable): \(error)"
            }
            state.withLock { _ = $0.running.removeValue(forKey: child.name) }
            if isStopping {
                logger.info("stopped", metadata: ["child": "\(child.name)", "status": "\(outcome)"])
                return
            }
            let delay = backoff.delay(afterRunOf: ContinuousClock.now - started)
            logger.warning(
                "\(child.name) exited; restarting in \(delay.components.seconds) s",
                metadata: ["child": "\(child.name)", "status": "\(outcome)"])
            await sleepUnlessStopping(delay)
        }
    }

    private func started(_ child: ChildSpec, pid: pid_t) {
        let lateForStop = state.withLock { state -> Bool in
            state.running[child.name] = pid
            return state.stopping
        }
        logger.notice("started", metadata: ["child": "\(child.name)", "pid": "\(pid)"])
        // Started while a stop began: it gets the stop signal the others got.
        if lateForStop { signal(pid, SIGTERM) }
    }

    private func forward(_ output: SubprocessOutputSequence, of child: ChildSpec) async {
        do {
            for try await line in output.strings() {
                printer.line(child.name, line)
            }
        } catch {
            logger.debug("output of \(child.name) ended", metadata: ["error": "\(error)"])
        }
    }

    private func sleepUnlessStopping(_ delay: Duration) async {
        let until = ContinuousClock.now + delay
        while ContinuousClock.now < until, !isStopping {
            try? await Task.sleep(for: min(.milliseconds(100), until - .now))
        }
    }

    // MARK: Stopping

    /// SIGTERM rank by rank (each rank gets the rest of the timeout), then SIGKILL to the
    /// process groups of whatever is still running when the timeout is up.
    private func stopAll() async {
        state.withLock { $0.stopping = true }
        let deadline = ContinuousClock.now + settings.stopTimeout
        logger.notice(
            "stopping every child", metadata: ["timeout_s": "\(settings.stopTimeout.components.seconds)"])
        let ranks = Set(settings.children.map(\.stopRank)).sorted()
        for rank in ranks {
            let names = Set(settings.children.filter { $0.stopRank == rank }.map(\.name))
            while ContinuousClock.now < deadline {
                let pids = state.withLock { state in state.running.filter { names.contains($0.key) }.map(\.value) }
                if pids.isEmpty { break }
                for pid in pids { signal(pid, SIGTERM) }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        let left = state.withLock { $0.running }
        for (name, pid) in left.sorted(by: { $0.key < $1.key }) {
            logger.warning("did not stop in time; killing it", metadata: ["child": "\(name)", "pid": "\(pid)"])
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
        }
    }

    /// Each child is sent a given signal once.
    private func signal(_ pid: pid_t, _ signal: Int32) {
        let first = state.withLock { $0.signalled.insert(pid).inserted }
        if first { kill(pid, signal) }
    }

    static func describe(_ status: TerminationStatus) -> String {
        switch status {
        case .exited(let code): "exit \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}
