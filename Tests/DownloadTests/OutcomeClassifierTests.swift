import Download
import Foundation
import TestSupport
import Testing

@Suite("FanFicFare outcome classification")
struct OutcomeClassifierTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// Real output of FanFicFare 4.62 against its offline test sites (see each folder's name).
    static let expectations: [(String, FanFicFareOutcome)] = [
        ("new-story", .downloaded),
        ("updated", .updated(fromChapters: 2, toChapters: 3)),
        ("up-to-date", .upToDate(chapters: 9)),
        ("more-recent-than-story", .fileNewerThanStory),
        ("updated-but-more-recent", .fileNewerThanStory),
        ("more-chapters-than-source", .moreChaptersThanSource(epub: 3, source: 2)),
        ("adult-check", .adultCheckRequired),
        (
            "login-required",
            .loginRequired("Login Failed on non-interactive process. Set username and password in personal.ini.")
        ),
        (
            "one-time-password",
            .loginRequired(
                "Login Failed on non-interactive process. Need Timed One Time Password(TOTP) 2FA for (http://test1.com?sid=675)."
            )
        ),
        ("story-does-not-exist", .storyDoesNotExist),
        (
            "invalid-url",
            .invalidURL(
                "Bad Story URL: (https://test1.com?sid=1) for site: (test1.com) Example: (http://test1.com?sid=1234)")
        ),
        ("unknown-site", .unknownSite),
        (
            "chapter-download-error",
            .failed(
                "fanficfare.exceptions.FailedToDownload: Error downloading Chapter: http://test1.com?sid=667&chapter=2!"
            )
        ),
    ]

    @Test("every recorded sample is classified", arguments: expectations)
    func recorded(name: String, expected: FanFicFareOutcome) throws {
        let folder = Self.fixtures.appendingPathComponent(name)
        let stdout = try String(contentsOf: folder.appendingPathComponent("stdout.txt"), encoding: .utf8)
        let stderr = try String(contentsOf: folder.appendingPathComponent("stderr.txt"), encoding: .utf8)
        let status = Int32(
            try String(contentsOf: folder.appendingPathComponent("exit.txt"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines))!
        #expect(OutcomeClassifier.classify(exitStatus: status, stdout: stdout, stderr: stderr) == expected)
    }

    /// Real output of FanFicFare 4.62 when a site blocks it (scripts/record-block-fixtures.py).
    static let blocks: [(String, SiteBlock.Kind, Int?)] = [
        ("site-throttled-retry-after", .throttled, 429),
        ("site-throttled", .throttled, 429),
        ("cloudflare-challenge", .challenged, 403),
        ("site-unavailable", .unavailable, 503),
        ("cloudflare-525", .unavailable, 525),
        ("connection-refused", .unreachable, nil),
        ("connection-timeout", .unreachable, nil),
        ("site-unreachable", .unreachable, nil),
    ]

    @Test(
        "a site's refusal of everyone is a block with its kind and status, not the story's failure", arguments: blocks)
    func recordedBlock(name: String, kind: SiteBlock.Kind, status: Int?) throws {
        let folder = Self.fixtures.appendingPathComponent(name)
        let stdout = try String(contentsOf: folder.appendingPathComponent("stdout.txt"), encoding: .utf8)
        let stderr = try String(contentsOf: folder.appendingPathComponent("stderr.txt"), encoding: .utf8)
        let outcome = OutcomeClassifier.classify(exitStatus: 1, stdout: stdout, stderr: stderr)
        guard case .siteBlocked(let block) = outcome else {
            Issue.record("\(name): \(outcome)")
            return
        }
        #expect(block.kind == kind && block.status == status)
        #expect(!block.line.isEmpty && block.line.count <= 501)
        #expect(outcome.disposition == .pauseSite)
    }

    @Test("Retry-After is read when the output shows it (FanFicFare 4.62 honours it without saying)")
    func retryAfter() {
        let outcome = OutcomeClassifier.classify(
            exitStatus: 1, stdout: "",
            stderr: "Retry-After: 120\nfanficfare.exceptions.HTTPErrorFFF: HTTP Error in FFF 'Too Many Requests'(429)")
        #expect(
            outcome
                == .siteBlocked(
                    SiteBlock(
                        kind: .throttled, status: 429, retryAfterSeconds: 120,
                        line: "fanficfare.exceptions.HTTPErrorFFF: HTTP Error in FFF 'Too Many Requests'(429)")))
        // A story's own 404 is not the site's refusal.
        guard
            case .failed = OutcomeClassifier.classify(
                exitStatus: 1, stdout: "", stderr: "HTTP Error in FFF 'Not Found'(404)")
        else {
            Issue.record("a 404 is a failure")
            return
        }
    }

    @Test("every fixture folder has an expectation")
    func fixturesCovered() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: Self.fixtures.path)
        #expect(Set(folders) == Set(Self.expectations.map(\.0) + Self.blocks.map(\.0)))
    }

    @Test("dispositions: success, retry with force, retry later, permanent")
    func dispositions() {
        #expect(FanFicFareOutcome.downloaded.disposition == .success)
        #expect(FanFicFareOutcome.upToDate(chapters: 1).disposition == .success)
        #expect(FanFicFareOutcome.fileNewerThanStory.disposition == .retryWithForce)
        #expect(FanFicFareOutcome.moreChaptersThanSource(epub: 3, source: 2).disposition == .retryWithForce)
        #expect(FanFicFareOutcome.chapterErrors(count: 2).disposition == .retryLater)
        #expect(FanFicFareOutcome.failed("x").disposition == .retryLater)
        #expect(FanFicFareOutcome.storyDoesNotExist.disposition == .permanentFailure)
        #expect(FanFicFareOutcome.adultCheckRequired.disposition == .permanentFailure)
        #expect(FanFicFareOutcome.loginRequired("x").disposition == .permanentFailure)
        #expect(FanFicFareOutcome.unknownSite.disposition == .permanentFailure)
    }

    @Test("a non-zero exit without a known message is a retryable failure")
    func unknownFailure() {
        #expect(
            OutcomeClassifier.classify(exitStatus: 2, stdout: "", stderr: "")
                == .failed("fanficfare exited with status 2"))
        #expect(
            OutcomeClassifier.classify(
                exitStatus: 0, stdout: "", stderr: "HTTP Error in FFF 'Service Unavailable'(503)")
                == .siteBlocked(
                    SiteBlock(kind: .unavailable, status: 503, line: "HTTP Error in FFF 'Service Unavailable'(503)")))
        #expect(
            OutcomeClassifier.classify(
                exitStatus: 0, stdout: "===================\n!!!! 3 chapters errored downloading http://x !!!!\n",
                stderr: "") == .chapterErrors(count: 3))
    }

    /// The same against the installed FanFicFare, so a new release that changes its wording
    /// fails here rather than in a user's library.
    @Test(
        "the installed fanficfare's live output is classified the same way",
        .enabled(if: ChildProcess.isInstalled("fanficfare") || ProcessInfo.processInfo.environment["CI"] != nil),
        arguments: [
            (1, FanFicFareOutcome.downloaded), (665, .adultCheckRequired), (666, .storyDoesNotExist),
            (
                668,
                .loginRequired("Login Failed on non-interactive process. Set username and password in personal.ini.")
            ),
        ])
    func live(sid: Int, expected: FanFicFareOutcome) throws {
        let jail = FileManager.default.temporaryDirectory.appendingPathComponent("fff-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: jail, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: jail) }
        let result = try ChildProcess.run(
            ["fanficfare", "--non-interactive", "--", "http://test1.com?sid=\(sid)"], in: jail.path)
        #expect(
            OutcomeClassifier.classify(exitStatus: result.status, stdout: result.stdout, stderr: result.stderr)
                == expected, "stdout: \(result.stdout)\nstderr: \(result.stderr)")
        let books = try FileManager.default.contentsOfDirectory(atPath: jail.path).filter { $0.hasSuffix(".epub") }
        #expect(books.count == (expected == .downloaded ? 1 : 0))
    }
}
