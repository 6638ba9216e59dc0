import FanficCore
import Foundation
import MailIngest
import MessagePack

/// What the fuzzers feed arbitrary bytes to: the parsers of everything that comes from the wire
/// (a task, a control message, a mail and its links, a Content Server's MessagePack answer). Each target must never crash, hang or
/// grow memory without bound on any input, and checks one property of what it parsed. Shared by
/// the libFuzzer driver (Fuzz/Driver) and the unit tests that replay Fuzz/regressions.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case taskCodec = "task-codec"
    case controlCodec = "control-codec"
    case mime
    case links
    case messagePack = "message-pack"

    public func run(_ data: Data) {
        switch self {
        case .taskCodec:
            // The plain path reads a task as JSONDecoder does, or leaves it to JSONDecoder.
            precondition(WireCodec.plainPathAgrees(data), "the plain path reads a task otherwise than JSONDecoder")
            // A task that decodes encodes to a task that decodes to the same task.
            guard let task = try? WireCodec.decode(data) else { return }
            let again = try? WireCodec.decode(WireCodec.encode(task))
            precondition(again == task, "a decoded task does not survive its own encoding")
        case .controlCodec:
            guard let message = try? WireCodec.decodeControl(data) else { return }
            let again = try? WireCodec.decodeControl(WireCodec.encodeValue(message))
            precondition(again == message, "a decoded control message does not survive its own encoding")
        case .mime:
            let mail = MailMessage(data)
            _ = mail.sender
            _ = mail.subject
            for part in mail.parts { precondition(part.isHTML || part.contentType == "text/plain") }
        case .links:
            // The first byte picks plain text or HTML, and lists or not; every story found is a
            // story of its site, every list page found a list page of its site, its URL stable.
            let html = data.first.map { $0 & 1 == 1 } ?? false
            let lists = data.first.map { $0 & 2 == 2 } ?? false
            let links = StoryLinks.extract(
                text: String(decoding: data.dropFirst(), as: UTF8.self), html: html, lists: lists)
            for found in links.stories where found.isList {
                precondition(lists, "a list page found with lists off")
                let page = SiteRules.bundled.listPage(found.story.canonicalURL)
                precondition(
                    page?.site == found.story.site && page?.url == found.story.canonicalURL,
                    "a list page's URL is not a list page of its site: \(found.story.canonicalURL)")
            }
            for found in links.stories where !found.isList {
                guard case .success(let story) = SiteRules.bundled.resolve(found.story.canonicalURL) else {
                    preconditionFailure("a found story's canonical URL is not a story URL: \(found.story.canonicalURL)")
                }
                precondition(story == found.story, "a canonical URL resolves to another story")
            }
        case .messagePack:
            // A value that decodes encodes to bytes that decode to a value encoding the same way
            // (compared as bytes: a NaN is not equal to itself).
            guard let value = try? MessagePackValue.decode(data) else { return }
            let bytes = value.encoded()
            let again = try? MessagePackValue.decode(bytes)
            precondition(again?.encoded() == bytes, "a decoded MessagePack value does not survive its own encoding")
        }
    }
}
