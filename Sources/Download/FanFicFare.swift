import ExternalTools
import FanficCore
import Foundation

/// How `fanficfare` is run for one task: the argument vector, and its outcome.
public struct FanFicFare: Sendable {
    /// What the run should do.
    public enum Mode: Sendable, Hashable {
        /// A story not in the library: download it.
        case download
        /// Update the EPUB at `epub` (exported from the library) in place.
        case update(epub: String, method: FanficConfiguration.Calibre.UpdateMethod, force: Bool)
    }

    /// The file every run writes, inside the task's jail.
    public static let outputName = "story.epub"

    /// The `fanficfare.options` of a run, as an ini file in the task's jail: options may hold
    /// site logins (`password=...`), and a process's argument list is readable by every user of
    /// the machine (`ps`), a file of mode 0600 is not.
    public static let optionsName = "fanfic-options.ini"

    public let settings: FanficConfiguration.FanFicFare
    /// `[sites."<site>"] fanficfare_options`: added to `fanficfare.options` for that site's runs.
    public let siteOptions: [String: [String]]
    let runner: ToolRunner

    public init(settings: FanficConfiguration.FanFicFare, siteOptions: [String: [String]] = [:]) {
        self.settings = settings
        self.siteOptions = siteOptions.filter { !$0.value.isEmpty }
        self.runner = ToolRunner()
    }

    /// The configured one: `fanficfare` settings and each site's own options.
    public init(configuration: FanficConfiguration) {
        self.init(
            settings: configuration.fanficfare,
            siteOptions: configuration.sites.overrides.mapValues(\.fanficfareOptions))
    }

    /// The options of a run for `url` (a story or a list page): `fanficfare.options`, then its
    /// site's (FanFicFare reads the later of two settings of one name).
    public func options(for url: String?) -> [String] {
        guard let url, !siteOptions.isEmpty, let site = SiteRules.bundled.site(ofStoryOrList: url) else {
            return settings.options
        }
        return settings.options + (siteOptions[site] ?? [])
    }

    /// The argument vector: options first, `--`, then exactly one story input, so that a URL can
    /// never be read as an option whatever it looks like, and a story is fetched once per run.
    /// A download names the URL; an update names only the EPUB (`-u` is a flag, not an option
    /// taking the file: the URL beside it would be a second story and a second fetch), and
    /// FanFicFare reads the story's URL from the EPUB, the identity the library holds.
    /// `fanficfare.options` go in ``optionsName`` (see ``optionsFile()``), read after the user's ini
    /// files, as `-o` would be: never on the command line.
    public func arguments(url: String, mode: Mode, hailMary: Bool) -> [String] {
        var arguments = ["--non-interactive"]
        for ini in [settings.defaultsIni, settings.personalIni] where !ini.isEmpty {
            arguments += ["-c", ini]
        }
        if !options(for: url).isEmpty { arguments += ["-c", Self.optionsName] }
        if hailMary {
            // The last try: slower, so that a struggling site gets a chance.
            arguments += ["-o", "slow_down_sleep_time=5"]
        }
        arguments += ["-o", "output_filename=\(Self.outputName)"]
        switch mode {
        case .download:
            return arguments + ["--", url]
        case .update(let epub, let method, let force):
            arguments += [method == .updateAlways ? "-U" : "-u", "--update-cover"]
            if force || method == .force { arguments.append("--force") }
            return arguments + ["--", epub]
        }
    }

    /// The argument vector of a list run: options as for a story, then `--list=URL` in one
    /// argument (optparse reads no option from an argument's value, and `--` cannot go between
    /// an option and its value).
    public func listArguments(url: String) -> [String] {
        var arguments = ["--non-interactive"]
        for ini in [settings.defaultsIni, settings.personalIni] where !ini.isEmpty {
            arguments += ["-c", ini]
        }
        if !options(for: url).isEmpty { arguments += ["-c", Self.optionsName] }
        return arguments + ["--list=\(url)"]
    }

    /// At most this many lines of a list run are read as links: a page listing more is cut there
    /// (the caller keeps fewer still, `fanficfare.expand_lists`).
    public static let maxListedLinks = 10_000

    /// Runs `fanficfare --list` in `jail`.
    public func list(url: String, in jail: URL) async throws -> ListOutcome {
        try writeOptions(for: url, in: jail)
        defer { try? FileManager.default.removeItem(at: jail.appendingPathComponent(Self.optionsName)) }
        let result = try await runner.run(
            settings.command, listArguments(url: url), in: jail, timeout: .seconds(settings.timeout))
        if result.timedOut { return .failed(.failed("fanficfare ran past its \(settings.timeout) s timeout")) }
        let outcome = OutcomeClassifier.classify(
            exitStatus: result.exitStatus, stdout: result.stdout, stderr: result.stderr)
        guard outcome.disposition == .success else { return .failed(outcome) }
        let links = result.stdout.split(whereSeparator: \.isNewline).lazy
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { $0.hasPrefix("http://") || $0.hasPrefix("https://") }
            .prefix(Self.maxListedLinks)
        return .listed(Array(links))
    }

    private func writeOptions(for url: String, in jail: URL) throws {
        guard let options = optionsFile(for: url) else { return }
        let path = jail.appendingPathComponent(Self.optionsName).path
        guard
            FileManager.default.createFile(
                atPath: path, contents: Data(options.utf8), attributes: [.posixPermissions: 0o600])
        else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }

    /// The options file's text: FanFicFare's `[overrides]` section, which is what `-o` sets, one
    /// `NAME:VALUE` line per option (`%` doubled: FanFicFare's ini files interpolate). Nil
    /// without options. Configuration refuses option values with line breaks.
    public func optionsFile(for url: String? = nil) -> String? {
        let options = options(for: url)
        guard !options.isEmpty else { return nil }
        var text = "# Written by the worker for one run; deleted with its jail.\n[overrides]\n"
        for option in options {
            guard let equals = option.firstIndex(of: "=") else { continue }
            let name = option[..<equals].trimmingCharacters(in: .whitespaces)
            let value = option[option.index(after: equals)...].replacingOccurrences(of: "%", with: "%%")
            text += "\(name):\(value)\n"
        }
        return text
    }

    /// Runs FanFicFare in `jail` (its working directory, where it writes `story.epub`).
    public func run(url: String, mode: Mode, hailMary: Bool, in jail: URL) async throws -> (
        FanFicFareOutcome, ToolResult
    ) {
        try writeOptions(for: url, in: jail)
        defer { try? FileManager.default.removeItem(at: jail.appendingPathComponent(Self.optionsName)) }
        let result = try await runner.run(
            settings.command, arguments(url: url, mode: mode, hailMary: hailMary), in: jail,
            timeout: .seconds(settings.timeout))
        if result.timedOut {
            return (.failed("fanficfare ran past its \(settings.timeout) s timeout"), result)
        }
        return (
            OutcomeClassifier.classify(exitStatus: result.exitStatus, stdout: result.stdout, stderr: result.stderr),
            result
        )
    }
}
