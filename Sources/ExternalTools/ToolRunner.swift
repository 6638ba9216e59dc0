import Foundation
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

/// One run of an external tool (fanficfare, calibredb, apprise): what it said and how it ended.
public struct ToolResult: Sendable {
    public let exitStatus: Int32
    public let stdout: String
    public let stderr: String
    /// Killed because it ran past its timeout.
    public let timedOut: Bool
    public let duration: Duration

    public init(exitStatus: Int32, stdout: String, stderr: String, timedOut: Bool = false, duration: Duration = .zero) {
        self.exitStatus = exitStatus
        self.stdout = stdout
        self.stderr = stderr
        self.timedOut = timedOut
        self.duration = duration
    }

    public var succeeded: Bool { exitStatus == 0 && !timedOut }

    /// The last lines of both outputs, for error messages and logs.
    public var tail: String {
        let lines = (stdout + "\n" + stderr).split(separator: "\n").suffix(6)
        return lines.joined(separator: " | ")
    }
}

/// Where a tool is, before anything depends on it.
public enum ToolLocator {
    /// The executable a name or path stands for: a path is checked as it is, a bare name is
    /// looked up on `PATH`. Nil when there is no such executable file.
    public static func locate(_ tool: String, path: String? = ProcessInfo.processInfo.environment["PATH"]) -> String? {
        let manager = FileManager.default
        func runnable(_ candidate: String) -> Bool {
            var isDirectory: ObjCBool = false
            return manager.fileExists(atPath: candidate, isDirectory: &isDirectory) && !isDirectory.boolValue
                && manager.isExecutableFile(atPath: candidate)
        }
        if tool.contains("/") { return runnable(tool) ? tool : nil }
        for directory in (path ?? "").split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(tool)"
            if runnable(candidate) { return candidate }
        }
        return nil
    }
}

public struct ToolError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs external tools the one safe way: an argument vector (never a shell string), a working
/// directory, a timeout after which the tool's whole process group is stopped (SIGTERM, then
/// SIGKILL), and its output captured through files so that no size limit or pipe can stall it.
public struct ToolRunner: Sendable {
    public var environment: [String: String]
    /// How long a tool past its timeout (or cancelled) has between SIGTERM and SIGKILL.
    public var terminationGrace: Duration

    public init(environment: [String: String] = [:], terminationGrace: Duration = .seconds(5)) {
        self.environment = environment
        self.terminationGrace = terminationGrace
    }

    /// - Parameters:
    ///   - executable: a name looked up on PATH, or a path.
    ///   - arguments: passed as they are; callers put `--` before user-supplied URLs.
    public func run(
        _ executable: String, _ arguments: [String], in directory: URL, timeout: Duration
    ) async throws -> ToolResult {
        let scratch = directory.appendingPathComponent(".tool-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outPath = scratch.appendingPathComponent("stdout").path
        let errPath = scratch.appendingPathComponent("stderr").path
        let out = try FileDescriptor.open(
            FilePath(outPath), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
        let err = try FileDescriptor.open(
            FilePath(errPath), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])

        var options = PlatformOptions()
        options.processGroupID = 0  // its own group: a timeout stops its children too
        options.teardownSequence = [
            .send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: terminationGrace),
            .send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .seconds(1)),
        ]
        var overrides: [Environment.Key: String?] = [:]
        for (key, value) in environment { overrides[Environment.Key(stringLiteral: key)] = value }
        let platformOptions = options
        let environmentOverrides = overrides
        let executableSpec: Executable = executable.contains("/") ? .path(FilePath(executable)) : .name(executable)
        let started = ContinuousClock.now

        // The tool's pid, to stop its whole process group on timeout ourselves: deterministic,
        // whatever the tool does with SIGTERM and whatever cancellation does.
        let processID = ProcessIDBox()
        let outcome: (status: TerminationStatus?, timedOut: Bool) = try await withThrowingTaskGroup(
            of: (TerminationStatus?, Bool).self
        ) { group in
            group.addTask {
                let status = try await Subprocess.run(
                    executableSpec, arguments: Arguments(arguments),
                    environment: .inherit.updating(environmentOverrides),
                    workingDirectory: FilePath(directory.path), platformOptions: platformOptions,
                    input: .none,
                    output: .fileDescriptor(out, closeAfterSpawningProcess: true),
                    error: .fileDescriptor(err, closeAfterSpawningProcess: true)
                ) { execution in
                    processID.value.withLock { $0 = execution.processIdentifier.value }
                }.terminationStatus
                return (status, false)
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return (nil, true)
            }
            let first = try await group.next()!
            guard first.1 else {
                group.cancelAll()
                return first
            }
            // Timed out: SIGTERM to the group, SIGKILL after the grace if it is still there.
            let pid = processID.value.withLock { $0 }
            if let pid { kill(-pid, SIGTERM) }
            group.addTask {
                try await Task.sleep(for: terminationGrace)
                if let pid { kill(-pid, SIGKILL) }
                return (nil, true)
            }
            while let next = try await group.next() {
                if !next.1 {
                    group.cancelAll()
                    break
                }
            }
            return (nil, true)
        }
        let exitStatus: Int32 =
            switch outcome.status {
            case .exited(let code): Int32(code)
            case .signaled(let signal): 128 + Int32(signal)
            case nil: 124  // timeout(1)'s convention
            }
        return ToolResult(
            exitStatus: exitStatus, stdout: Self.read(outPath), stderr: Self.read(errPath), timedOut: outcome.timedOut,
            duration: ContinuousClock.now - started)
    }

    /// At most the last 256 KiB: tracebacks and progress are long, their ends matter.
    private static func read(_ path: String) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        let keep: UInt64 = 256 * 1024
        try? handle.seek(toOffset: size > keep ? size - keep : 0)
        return String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
    }
}

/// The running tool's pid, shared between the task that runs it and the one that times it.
final class ProcessIDBox: Sendable {
    let value = Mutex<pid_t?>(nil)
}
