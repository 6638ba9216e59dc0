import CalibreLibrary
import ExternalTools
import FanficCore
import Foundation

/// What a worker checks before it takes any work: a worker that cannot work must not hold a
/// site and its tasks. Each problem is one line saying what is missing and how to fix it. A tool
/// that vanishes later makes tasks retry (the pipeline's failures are retryable), not fail.
public enum Preflight {
    public static func problems(
        _ configuration: FanficConfiguration, locate: (String) -> String? = { ToolLocator.locate($0) }
    ) -> [String] {
        var problems: [String] = []
        var tools = [("fanficfare.command", configuration.fanficfare.command), ("calibredb", "calibredb")]
        if configuration.calibre.metadataMode == .preserveMetadata {
            tools.append(("calibre.metadata_mode = \"preserve_metadata\" needs ebook-meta", "ebook-meta"))
        }
        if !configuration.notifications.appriseURLs.isEmpty {
            tools.append(("notifications.apprise_urls needs apprise", "apprise"))
        }
        for (why, tool) in tools where locate(tool) == nil {
            problems.append(
                "\(why): '\(tool)' is not an executable \(tool.contains("/") ? "file" : "on PATH"); install it"
                    + " (scripts/install-deps.sh, or run.sh) or set its path")
        }
        if case .folder(let folder) = CalibreLocation(configuration.calibre.library) {
            var isDirectory: ObjCBool = false
            let manager = FileManager.default
            if manager.fileExists(atPath: folder.path, isDirectory: &isDirectory) {
                if !isDirectory.boolValue {
                    problems.append("calibre.library: \(folder.path) is a file, not a library folder")
                } else if !manager.isWritableFile(atPath: folder.path) {
                    problems.append("calibre.library: \(folder.path) is not writable by this user")
                }
            } else if !manager.isWritableFile(atPath: folder.deletingLastPathComponent().path) {
                problems.append(
                    "calibre.library: \(folder.path) does not exist and cannot be created here; create it"
                        + " (calibredb creates a library in an empty folder)")
            }
        }
        return problems
    }
}
