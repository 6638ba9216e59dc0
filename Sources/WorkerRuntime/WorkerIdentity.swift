import FanficCore
import Foundation

/// A worker's stable id: it names the worker's durable queue, so a restarted worker resumes it.
public enum WorkerIdentity {
    /// The configured id, or `<host name>-<index>` made safe for a queue name.
    public static func resolve(configured: String, index: Int, hostName: String = ProcessInfo.processInfo.hostName)
        -> String
    {
        if !configured.isEmpty { return configured }
        let host = hostName.split(separator: ".").first.map(String.init) ?? "worker"
        let safe = String(host.lowercased().map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "-" })
        return "\(safe.isEmpty ? "worker" : safe)-\(index)"
    }

    /// What is wrong with an id given on the command line, or nil: the same rule as `worker.id`.
    public static func problem(with id: String) -> String? {
        id.isEmpty ? "must not be empty" : FanficConfiguration.workerIDProblem(id)
    }
}
