import FanficCore

/// What became of one story: the pipeline's answer, which ``OutcomeSettler`` records.
public enum StoryOutcome: Sendable, Hashable {
    /// In the library as `book`; `detail`: new, updated, up to date, not updated (why);
    /// `storyURL` and `title`: the story's own URL and title when its EPUB was read.
    case stored(book: Int, detail: String, notify: Bool, storyURL: String?, title: String? = nil)
    /// A list page read: `stories` (canonical, each once, at most `fanficfare.expand_lists`) are
    /// to be queued as tasks of their own; `found`: how many the page named.
    case expanded(stories: [SiteRules.Story], found: Int)
    /// Worth another try later, through the retry ladder.
    case retryable(String)
    /// Will not succeed by trying again: parked in `fanfic.failed`.
    case permanent(String)
    /// The site refused everyone (throttled, a challenge, down, unreachable): the site is paused
    /// for the fleet and the task waits for it without spending a retry step.
    /// `retryAfterSeconds`: the delay the site asked for.
    case siteBlocked(String, retryAfterSeconds: Int?)
}
