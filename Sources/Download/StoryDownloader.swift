import ExternalTools
import Foundation

/// What fetches a story into a jail: FanFicFare (``FanFicFare``), or a fake in unit tests.
public protocol StoryDownloader: Sendable {
    /// Downloads or updates the story in `jail`, writing ``FanFicFare/outputName`` there on
    /// success; returns the classified outcome and the run's output.
    func run(url: String, mode: FanFicFare.Mode, hailMary: Bool, in jail: URL) async throws -> (
        FanFicFareOutcome, ToolResult
    )

    /// Reads a series, author or collection page (`fanficfare --list`): the links it holds, in
    /// its order, unchecked; or why it could not be read.
    func list(url: String, in jail: URL) async throws -> ListOutcome
}

/// What reading a list page gave.
public enum ListOutcome: Sendable, Hashable {
    /// The URLs FanFicFare printed, one per line, as printed: the caller checks each.
    case listed([String])
    /// Not read: the failure, classified as a story run's would be.
    case failed(FanFicFareOutcome)
}

extension FanFicFare: StoryDownloader {}
