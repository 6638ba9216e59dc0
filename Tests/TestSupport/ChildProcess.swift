import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a program to completion for a test: argument vector, no shell, output through files.
///
/// posix_spawn and waitpid rather than Foundation's Process, which was seen never to notice the
/// exit of a script that had started a daemon; files rather than pipes, because a daemon the
/// program starts (a broker node, epmd) would hold a pipe open forever.
public enum ChildProcess {
    public struct Result: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    /// Waits at most `timeout` for it to exit; past that it is killed and the test fails saying
    /// which program hung, instead of the whole run hanging on it.
    public static func run(
        _ argv: [String], in directory: String? = nil, timeout: Duration = .seconds(300)
    ) throws -> Result {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("child-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outPath = scratch.appendingPathComponent("stdout").path
        let errPath = scratch.appendingPathComponent("stderr").path

        let pid = try spawn(argv, in: directory, stdout: outPath, stderr: errPath)
        var status: Int32 = 0
        let deadline = ContinuousClock.now + timeout
        while true {
            let waited = waitpid(pid, &status, WNOHANG)
            if waited == pid || (waited == -1 && errno != EINTR) { break }
            if ContinuousClock.now >= deadline {
                kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
                throw ChildProcessError(
                    description: "\(argv.joined(separator: " ")) did not exit within \(timeout); killed")
            }
            usleep(10_000)
        }
        // WIFEXITED / WEXITSTATUS, which Swift does not import.
        let exit = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return Result(
            status: exit,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }

    /// Starts a program and returns its pid without waiting; output goes to the given files
    /// (or nowhere). With `newProcessGroup`, the pid is also the group id, so that the program
    /// and every child it forks can be signalled at once.
    public static func spawn(
        _ argv: [String], in directory: String? = nil, stdout: String = "/dev/null", stderr: String = "/dev/null",
        newProcessGroup: Bool = false
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The child starts with no signal blocked and default handlers: a test thread may have
        // SIGTERM blocked, and a daemon inheriting that mask would ignore being stopped.
        var flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        if newProcessGroup {
            flags |= Int16(POSIX_SPAWN_SETPGROUP)
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        posix_spawnattr_setflags(&attributes, flags)
        // posix_spawn_file_actions_addchdir_np is not visible from Swift: env -C changes directory.
        let argv = directory.map { ["/usr/bin/env", "-C", $0] + argv } ?? argv
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawnp(&pid, argv[0], &actions, &attributes, &cArguments, environ)
        guard spawned == 0 else {
            throw ChildProcessError(description: "cannot start \(argv[0]): \(String(cString: strerror(spawned)))")
        }
        return pid
    }

    /// Whether a program is on the PATH.
    public static func isInstalled(_ program: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(program)")
        }
    }
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public let description: String
}
