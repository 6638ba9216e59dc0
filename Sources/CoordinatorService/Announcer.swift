import Coordination
import FanficBroker
import FanficCore
import Logging

/// Tells the world what the state machine decided: a log line and an event on `fanfic.events`
/// for each ``DispatchAnnouncement``.
struct Announcer: Sendable {
    let events: EventPublisher
    /// The coordinator's name, the events' source.
    let source: String
    let logger: Logger

    func announce(_ announcement: DispatchAnnouncement) {
        switch announcement {
        case .duplicateDropped(let identity):
            logger.info("duplicate dropped", metadata: ["site": "\(identity.site)", "url": "\(identity.url)"])
            events.emit(
                FanficEvent(
                    .taskDuplicate, source: source, site: identity.site, url: identity.url,
                    calibreID: identity.calibreID))
        case .taskRouted(let identity, let destination):
            let queue = destination.queueName
            logger.debug("task routed", metadata: ["url": "\(identity.url)", "queue": "\(queue)"])
            var event = FanficEvent(
                .taskRouted, source: source, site: identity.site, url: identity.url, calibreID: identity.calibreID,
                destination: queue)
            if case .worker(let id) = destination { event.worker = id }
            events.emit(event)
        case .siteAssigned(let site, let worker):
            logger.info("site assigned", metadata: ["site": "\(site)", "worker": "\(worker)"])
            events.emit(FanficEvent(.siteAssigned, source: source, worker: worker, site: site))
        case .siteReleased(let site, let worker):
            logger.info("site released", metadata: ["site": "\(site)", "worker": "\(worker)"])
            events.emit(FanficEvent(.siteReleased, source: source, worker: worker, site: site))
        case .workerJoined(let worker):
            logger.info("worker joined", metadata: ["worker": "\(worker)"])
            events.emit(FanficEvent(.workerJoined, source: source, worker: worker))
        case .workerPresumedDead(let worker, let site):
            logger.warning(
                "worker presumed dead; reclaiming its queue",
                metadata: ["worker": "\(worker)", "site": "\(site ?? "none")"])
            events.emit(FanficEvent(.workerDead, source: source, worker: worker, site: site))
        case .finishedIgnored(let worker, let identity):
            logger.warning(
                "ignored a `finished` for a task the worker was not sent",
                metadata: ["worker": "\(worker)", "url": "\(identity.url)"])
        case .sitePaused(let site, let worker, _, let reason, let pauses, _):
            // The event with the wall-clock end is the term's (it knows the clocks).
            logger.warning(
                "site paused for every worker",
                metadata: ["site": "\(site)", "worker": "\(worker)", "pause": "\(pauses)", "reason": "\(reason)"])
        case .siteResumed(let site, let worker, let outage, let pauses):
            logger.notice(
                "site answers again; resumed",
                metadata: [
                    "site": "\(site)", "worker": "\(worker)", "outage_s": "\(outage.components.seconds)",
                    "pauses": "\(pauses)",
                ])
            var event = FanficEvent(
                .siteResumed, source: source, worker: worker, site: site, detail: "after \(pauses) pauses")
            event.durationMilliseconds = Int(outage.components.seconds * 1000)
            events.emit(event)
        case .blockIgnored(let worker, let site):
            logger.warning(
                "ignored a block report from a worker that does not hold the site",
                metadata: ["worker": "\(worker)", "site": "\(site)"])
        case .tableRebuilt(let workers, let waitingSites):
            logger.notice(
                "table rebuilt; assigning", metadata: ["workers": "\(workers)", "waiting_sites": "\(waitingSites)"])
            events.emit(
                FanficEvent(
                    .coordinatorReady, source: source, detail: "workers=\(workers) waiting_sites=\(waitingSites)"))
        }
    }
}
