import Foundation

/// Where the library is: a folder on this host, or a Calibre Content Server.
public enum CalibreLocation: Sendable, Hashable, CustomStringConvertible {
    /// A local library folder. calibre allows one process at a time on it: calls are serialized.
    case folder(URL)
    /// `http(s)://host:port/#library_id`: parallel calls are fine.
    case server(base: URL, libraryID: String)

    /// Parses `calibre.library` (the configuration check has vetted its form).
    public init(
        _ library: String, relativeTo directory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    ) {
        if library.hasPrefix("http://") || library.hasPrefix("https://") {
            let parts = library.split(separator: "#", maxSplits: 1)
            var base = String(parts[0])
            while base.hasSuffix("/") { base.removeLast() }
            let libraryID = parts.count > 1 ? String(parts[1]) : ""
            self = .server(base: URL(string: base)!, libraryID: libraryID)
        } else {
            self = .folder(URL(fileURLWithPath: library, relativeTo: directory).standardizedFileURL)
        }
    }

    /// What `calibredb --with-library` takes.
    var withLibrary: String {
        switch self {
        case .folder(let url): url.path
        case .server(let base, let libraryID): "\(base.absoluteString)/#\(libraryID)"
        }
    }

    public var description: String { withLibrary }
}

/// A Content Server's user name and password (the password never goes on a command line).
public struct CalibreCredentials: Sendable, Hashable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }
}
