import FanficBroker
import FanficCore
import Foundation

/// What the coordinator believes of a task that arrives on `fanfic.ingress`: its URL, nothing
/// else. Anyone may publish a task, so the site (the lock key and a queue name) and the canonical
/// URL (the identity duplicates are dropped by) are derived from the URL with the site rules;
/// the message's own `site` is never used. A URL the rules refuse is not a story: parked; unless
/// `lists` and it is a page of a known site (a series, author or collection page), which goes on
/// as a list task, with the site and URL the rules give it, for a worker to expand.
enum TaskIntake {
    /// The task as it goes on: canonical URL, derived site, the rest as it came; and its body,
    /// re-encoded when that changed anything.
    struct Admitted: Sendable {
        let task: TaskMessage
        let body: Data
    }

    static func admit(_ task: TaskMessage, body: Data, rules: SiteRules = .bundled, lists: Bool = false) -> Result<
        Admitted, Refusal
    > {
        let site: String
        let url: String
        switch rules.resolve(task.url) {
        case .success(let story):
            (site, url) = (story.site, story.canonicalURL)
        case .failure(let refusal):
            guard lists, let page = rules.listPage(task.url) else {
                return .failure(Refusal(reason: "not a story URL: \(refusal)"))
            }
            (site, url) = (page.site, page.url)
        }
        guard site != task.site || url != task.url else { return .success(Admitted(task: task, body: body)) }
        var derived = task
        derived.site = site
        derived.url = url
        return .success(Admitted(task: derived, body: WireCodec.encode(derived)))
    }

    struct Refusal: Error, Sendable, CustomStringConvertible {
        let reason: String
        var description: String { reason }
    }
}
