import FanficBroker
import FanficCore
import Foundation
import Testing

@testable import CoordinatorService

/// What the coordinator believes of a task from ingress: derived from its URL, never its fields.
@Suite("Task intake: site and URL derived from the URL alone")
struct TaskIntakeTests {
    func admit(_ url: String, site: String, lists: Bool) -> Result<TaskIntake.Admitted, TaskIntake.Refusal> {
        let task = TaskMessage(url: url, site: site, submittedBy: "test")
        return TaskIntake.admit(task, body: WireCodec.encode(task), lists: lists)
    }

    @Test(
        "a list page of a known site is admitted with the site its URL names (not the one it claims) when lists are on")
    func listPage() throws {
        let admitted = try admit("HTTP://TEST1.COM/seriesid=1#top", site: "test4.com", lists: true).get()
        #expect(admitted.task.site == "test1.com" && admitted.task.url == "http://test1.com/seriesid=1")
        #expect(try WireCodec.decode(admitted.body) == admitted.task, "the body says what the task now says")
    }

    @Test("lists off, or a page of a site FanFicFare does not know: refused as not a story URL")
    func refused() {
        guard case .failure(let off) = admit("http://test1.com/seriesid=1", site: "test1.com", lists: false) else {
            Issue.record("admitted with lists off")
            return
        }
        #expect(off.reason.hasPrefix("not a story URL"))
        guard case .failure = admit("https://example.org/series/1", site: "example.org", lists: true) else {
            Issue.record("an unknown site's page admitted")
            return
        }
    }
}
