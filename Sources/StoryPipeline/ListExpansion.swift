import Download
import FanficCore
import Foundation
import Logging
import WorkerRuntime

extension StoryPipeline {
    /// A series, author or collection page: `fanficfare --list` reads it under the site's lock
    /// like any fetch; each link it prints is checked as any submission is (canonical, a story of
    /// a site FanFicFare knows, each story once, list pages among them ignored: no list expands
    /// into another), and the first `expand_lists` go on as tasks of their own.
    func expand(_ page: SiteRules.ListPage, in jail: URL, logger: Logger) async throws -> StoryOutcome {
        guard settings.expandLists > 0 else {
            return .permanent("a list page, not a story: this worker's fanficfare.expand_lists is 0")
        }
        let listed = try await StageTimes.measure(.fanficfare) { try await downloader.list(url: page.url, in: jail) }
        switch listed {
        case .failed(let outcome):
            let reason = "the list could not be read: \(Self.reason(outcome))"
            switch outcome.disposition {
            case .pauseSite:
                guard case .siteBlocked(let block) = outcome else { return .retryable(reason) }
                logger.warning(
                    "the site is blocking", metadata: ["block": "\(block.summary)", "line": "\(block.line)"])
                return .siteBlocked(block.summary, retryAfterSeconds: block.retryAfterSeconds)
            case .permanentFailure:
                return .permanent(reason)
            case .retryLater, .retryWithForce, .success:
                return .retryable(reason)
            }
        case .listed(let links):
            let stories = StoryLinks.resolve(inputs: links).stories.map(\.story)
            logger.debug(
                "list read",
                metadata: ["links": "\(links.count)", "stories": "\(stories.count)", "page": "\(page.url)"])
            guard !stories.isEmpty else {
                return .permanent(
                    "FanFicFare found no story on this page (\(links.count) links): not a series, author or collection page it can read"
                )
            }
            return .expanded(stories: Array(stories.prefix(settings.expandLists)), found: stories.count)
        }
    }
}
