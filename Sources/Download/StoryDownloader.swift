import ExternalTools
import Foundation

/// What fetches a story into a jail: FanFicFare (``FanFicFare``), or a fake in unit tests.
public protocol StoryDownloader: Sendable {
    /// Downloads or updates the story in `jail`, writing ``FanFicFare/outputName`` there on
    /// success; returns the classified outcome and the run's output.
    func run(url: String, mode: FanFicFare.Mode, hailMary: Bool, in jail: URL) async throws -> (
        FanFicFareOutcome, ToolResult
    )
}

extension FanFicFare: StoryDownloader {}
