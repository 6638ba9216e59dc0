/// What one `fanficfare` run did, read from its output (most failures exit 0).
public enum FanFicFareOutcome: Hashable, Sendable {
    /// A new EPUB was written.
    case downloaded
    /// An existing EPUB got new chapters (`Do update - epub(from) vs url(to)`).
    case updated(fromChapters: Int, toChapters: Int)
    /// Nothing new (`already contains N chapters.`).
    case upToDate(chapters: Int)
    /// The EPUB file is newer than the story's update date, so nothing was written
    /// (`more recently than Story(...) - Skipping`): the original retries with force.
    case fileNewerThanStory
    /// The EPUB has more chapters than the site (`contains N chapters, more than source: M.`).
    case moreChaptersThanSource(epub: Int, source: Int)
    /// The EPUB holds nothing FanFicFare recognizes: probably another story; not touched.
    case unrecognizedEPUB
    /// The site wants an adult confirmation (`is_adult`).
    case adultCheckRequired
    /// The site wants a login, a password or a one-time password.
    case loginRequired(String)
    case storyDoesNotExist
    /// FanFicFare refuses the URL (wrong form for its site).
    case invalidURL(String)
    /// No FanFicFare adapter for the site.
    case unknownSite
    /// Some chapters failed to download.
    case chapterErrors(count: Int)
    /// The site refused everyone, not this story: throttled, a challenge, down, unreachable.
    case siteBlocked(SiteBlock)
    /// Anything else: a traceback, an HTTP error, a non-zero exit.
    case failed(String)

    /// What the worker does about it.
    public enum Disposition: Hashable, Sendable {
        case success
        /// Run once more at once with `--force` (unless the update method forbids force).
        case retryWithForce
        /// Wait in the next retry tier.
        case retryLater
        /// The site is blocking: pause it for the fleet; the task waits without spending a retry.
        case pauseSite
        /// Retrying cannot help: straight to `fanfic.failed`, and tell the user.
        case permanentFailure
    }

    public var disposition: Disposition {
        switch self {
        case .downloaded, .updated, .upToDate: .success
        case .fileNewerThanStory, .moreChaptersThanSource: .retryWithForce
        case .chapterErrors, .failed: .retryLater
        case .siteBlocked: .pauseSite
        case .unrecognizedEPUB, .adultCheckRequired, .loginRequired, .storyDoesNotExist, .invalidURL, .unknownSite:
            .permanentFailure
        }
    }
}
