import Foundation
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A process started by the test, in a process group of its own, with its output in a file.
final class LaunchedProcess {
    let pid: pid_t
    let output: String
    private var reaped: Int32?

    init(_ argv: [String], output: String) throws {
        self.output = output
        pid = try ChildProcess.spawn(argv, stdout: output, stderr: output + ".err", newProcessGroup: true)
    }

    var text: String {
        ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
            + ((try? String(contentsOfFile: output + ".err", encoding: .utf8)) ?? "")
    }

    /// Whether it still runs (reaps it, keeping its status, once it has exited).
    var isRunning: Bool {
        guard reaped == nil else { return false }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return true }
        reaped = (status >> 8) & 0xFF
        return false
    }

    /// Its exit status, once ``isRunning`` has seen it exit.
    var exitStatus: Int32? { reaped }

    /// SIGTERM, then its exit status once it has exited (nil if not within `timeout`).
    func terminate(timeout: Duration) async -> Int32? {
        if let reaped { return reaped }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while ContinuousClock.now < deadline {
            if waitpid(pid, &status, WNOHANG) == pid {
                reaped = (status >> 8) & 0xFF
                return reaped
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// Whatever a failed test left: the group, killed.
    deinit {
        if reaped == nil {
            kill(-pid, SIGKILL)
            _ = waitpid(pid, nil, 0)
        }
    }
}
