import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Writes children's lines to standard output as `docker compose` does: `name | line`, names
/// padded to one width, each child in its own colour when standard output is a terminal.
/// Whole lines are written at once, so lines of different children never interleave.
public final class LinePrinter: Sendable {
    private let width: Int
    private let colours: [String: String]
    private let lock = Mutex(())

    /// ANSI colours `docker compose` cycles through.
    private static let palette = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"]

    public init(names: [String], colour: Bool = LinePrinter.terminalWantsColour) {
        width = names.map(\.count).max() ?? 0
        var colours: [String: String] = [:]
        if colour {
            for (index, name) in names.enumerated() { colours[name] = Self.palette[index % Self.palette.count] }
        }
        self.colours = colours
    }

    /// A terminal, no `NO_COLOR`, and not a dumb terminal.
    public static var terminalWantsColour: Bool {
        let environment = ProcessInfo.processInfo.environment
        return isatty(STDOUT_FILENO) == 1 && environment["NO_COLOR"] == nil && environment["TERM"] != "dumb"
    }

    public func line(_ name: String, _ text: String) {
        let padded = name.padding(toLength: max(width, name.count), withPad: " ", startingAt: 0)
        let prefix = colours[name].map { "\u{1B}[\($0)m\(padded) |\u{1B}[0m " } ?? "\(padded) | "
        write(prefix + text + "\n")
    }

    private func write(_ text: String) {
        lock.withLock { _ in
            var bytes = Array(text.utf8)[...]
            while !bytes.isEmpty {
                let written = bytes.withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return
                }
                bytes = bytes.dropFirst(written)
            }
        }
    }
}
