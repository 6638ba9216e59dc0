import Download
import ExternalTools
import FanficCore
import Foundation
import TestSupport
import Testing

@Suite("FanFicFare's argument vector")
struct FanFicFareCommandTests {
    static func command(options: [String] = []) -> FanFicFare {
        var settings = FanficConfiguration().fanficfare
        settings.personalIni = "/config/personal.ini"
        settings.options = options
        return FanFicFare(settings: settings)
    }

    @Test(
        "the URL comes last, after --, whatever it looks like",
        arguments: ["--help", "-o foo=bar", "http://x/;rm -rf ~"])
    func urlAfterDoubleDash(url: String) {
        let arguments = Self.command().arguments(url: url, mode: .download, hailMary: false)
        #expect(arguments.suffix(2) == ["--", url])
        #expect(arguments.filter { $0 == url }.count == 1)
    }

    @Test("update methods map to FanFicFare's flags")
    func updateMethods() {
        let command = Self.command()
        func flags(_ method: FanficConfiguration.Calibre.UpdateMethod, force: Bool = false) -> [String] {
            command.arguments(
                url: "u", mode: .update(epub: "story.epub", method: method, force: force), hailMary: false)
        }
        #expect(flags(.update).contains("-u") && !flags(.update).contains("--force"))
        #expect(flags(.updateAlways).contains("-U"))
        #expect(flags(.force).contains("--force"))
        #expect(flags(.update, force: true).contains("--force"))
        #expect(flags(.updateNoForce).contains("-u") && !flags(.updateNoForce).contains("--force"))
        #expect(!command.arguments(url: "u", mode: .download, hailMary: false).contains("-u"))
    }

    @Test(
        "every run names exactly one story: the URL for a download, only the EPUB for an update",
        arguments: FanficConfiguration.Calibre.UpdateMethod.allCases)
    func oneStoryInput(method: FanficConfiguration.Calibre.UpdateMethod) {
        let url = "http://test1.com?sid=1"
        let update = Self.command().arguments(
            url: url, mode: .update(epub: "story.epub", method: method, force: false), hailMary: false)
        #expect(!update.contains(url), "the URL beside the EPUB would be a second story and a second fetch")
        #expect(update.suffix(2) == ["--", "story.epub"])
        #expect(update.filter { $0 == "story.epub" }.count == 1)
        let download = Self.command().arguments(url: url, mode: .download, hailMary: false)
        #expect(download.suffix(2) == ["--", url] && !download.contains("story.epub"))
    }

    @Test("personal.ini, extra options (in a file, never on the command line) and the Hail Mary's slower settings")
    func settings() throws {
        let command = Self.command(options: ["is_adult=true", "password=s3cret%1"])
        let arguments = command.arguments(url: "u", mode: .download, hailMary: true)
        #expect(arguments.contains("/config/personal.ini"))
        #expect(!arguments.joined(separator: " ").contains("s3cret"), "a login on the argument list: \(arguments)")
        #expect(zip(arguments, arguments.dropFirst()).contains { $0 == "-c" && $1 == FanFicFare.optionsName })
        let file = try #require(command.optionsFile())
        #expect(file.contains("[overrides]\nis_adult:true\npassword:s3cret%%1\n"))
        #expect(Self.command().optionsFile() == nil)
        #expect(!Self.command().arguments(url: "u", mode: .download, hailMary: false).contains(FanFicFare.optionsName))
        #expect(arguments.contains("slow_down_sleep_time=5"))
        #expect(
            !Self.command().arguments(url: "u", mode: .download, hailMary: false).contains("slow_down_sleep_time=5"))
    }

    @Test("a site's own FanFicFare options go into its runs only, after fanficfare.options")
    func siteOptions() throws {
        var configuration = FanficConfiguration()
        configuration.fanficfare.options = ["is_adult=true"]
        configuration.sites.overrides["test1.com"] = SitePolicy(fanficfareOptions: ["slow_down_sleep_time=4"])
        let command = FanFicFare(configuration: configuration)
        let own = try #require(command.optionsFile(for: "http://test1.com?sid=5"))
        #expect(own.hasSuffix("[overrides]\nis_adult:true\nslow_down_sleep_time:4\n"))
        #expect(command.optionsFile(for: "http://test2.com?sid=5")?.contains("slow_down") == false)
        // A site option alone still makes the run read the options file.
        configuration.fanficfare.options = []
        let alone = FanFicFare(configuration: configuration)
        #expect(
            alone.arguments(url: "http://test1.com?sid=5", mode: .download, hailMary: false).contains(
                FanFicFare.optionsName))
        #expect(
            !alone.arguments(url: "http://test2.com?sid=5", mode: .download, hailMary: false).contains(
                FanFicFare.optionsName))
    }

    /// A fresh folder for one run, as the worker's task jail.
    static func makeJail() throws -> URL {
        let jail = FileManager.default.temporaryDirectory.appendingPathComponent("ffcmd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: jail, withIntermediateDirectories: true)
        return jail
    }

    @Test("a URL that looks like an option reaches the real fanficfare as a URL, not an option")
    func realFanFicFareRefusesOptionLikeURL() async throws {
        guard ChildProcess.isInstalled("fanficfare") else { return }
        let jail = try Self.makeJail()
        defer { try? FileManager.default.removeItem(at: jail) }
        let (outcome, result) = try await Self.command().run(url: "--help", mode: .download, hailMary: false, in: jail)
        // Had it been parsed as an option, FanFicFare would have printed its usage and exited 0.
        #expect(!result.stdout.contains("usage:") && !result.stdout.contains("Usage:"))
        #expect(outcome.disposition != .success, "\(outcome)")
    }

    @Test("the real fanficfare reads the options file as -o, and the file is gone after the run")
    func realFanFicFareReadsOptionsFile() async throws {
        guard ChildProcess.isInstalled("fanficfare") else { return }
        let jail = try Self.makeJail()
        defer { try? FileManager.default.removeItem(at: jail) }
        // extratags become the book's subjects: the option reached FanFicFare if the tag is there.
        let renamed = Self.command(options: ["extratags=OptionsFileTag", "password=never-on-argv"])
        let (outcome, result) = try await renamed.run(
            url: "http://test1.com?sid=1", mode: .download, hailMary: false, in: jail)
        #expect(outcome.disposition == .success, "\(outcome) \(result.stderr.suffix(500))")
        #expect(!FileManager.default.fileExists(atPath: jail.appendingPathComponent(FanFicFare.optionsName).path))
        let epub = jail.appendingPathComponent(FanFicFare.outputName)
        let listing = try ChildProcess.run(["/usr/bin/unzip", "-p", epub.path])
        #expect(listing.stdout.contains("OptionsFileTag"), "the option reached FanFicFare")
    }

    @Test("a tool past its timeout is stopped, with its children")
    func timeout() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("timeout-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // A tool that ignores SIGTERM and leaves a child of its own behind.
        let result = try await ToolRunner(terminationGrace: .milliseconds(300)).run(
            "/bin/sh", ["-c", "trap '' TERM; sleep 300 & echo $! > child.pid; wait"], in: directory,
            timeout: .milliseconds(300))
        #expect(result.timedOut)
        #expect(result.exitStatus == 124)
        let child = try String(contentsOf: directory.appendingPathComponent("child.pid"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // Gone, or a zombie waiting for init: either way no longer running. SIGKILL is delivered
        // asynchronously: on a loaded machine the child may take a moment to exit after the
        // tool itself has been reaped, so wait for it (with a deadline) instead of looking once.
        func state() -> [Substring]? {
            (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))?.split(separator: " ")
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while let current = state(), current[2] != "Z", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let last = state()
        #expect(last == nil || last?[2] == "Z", "the tool's child still runs: \(last ?? [])")
    }
}
