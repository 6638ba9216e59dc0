import FanficCore
import Foundation
import Testing

@Suite("Configuration loading and validation")
struct ConfigurationTests {
    let exampleFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("config.example.toml")

    func load(_ toml: String, environment: [String: String] = [:]) throws(ConfigurationError) -> FanficConfiguration {
        try ConfigurationLoader(environment: environment).load(toml: toml, source: "config.toml")
    }

    func issues(_ toml: String, environment: [String: String] = [:]) -> [ConfigurationIssue] {
        do {
            _ = try load(toml, environment: environment)
            return []
        } catch {
            return error.issues
        }
    }

    // MARK: Defaults and the documented example

    @Test("an empty file gives DESIGN.md's defaults")
    func defaults() throws {
        let configuration = try load("")
        #expect(configuration == FanficConfiguration())
        #expect(configuration.broker.url == "amqp://guest:guest@127.0.0.1:5672/%2F")
        #expect(configuration.retry.delays == [60, 300, 900])
        #expect(configuration.retry.hailMaryDelay == 3600)
        #expect(configuration.email.tls == .implicit)
        #expect(configuration.calibre.updateMethod == .update)
        #expect(configuration.calibre.metadataMode == .removeAdd)
        #expect(configuration.fanficfare.timeout == 7200)
        #expect(configuration.worker.heartbeat == 5)
        #expect(configuration.coordinator.workerTimeout == 20)
        #expect(configuration.run.workers == 2)
    }

    @Test("config.example.toml documents every key, with the defaults")
    func exampleFileDocumentsEveryKey() throws {
        let text = try String(contentsOf: exampleFile, encoding: .utf8)
        #expect(try load(text) == FanficConfiguration())
        for key in FanficConfiguration.keys {
            let name = String(key.key.split(separator: ".").last!)
            #expect(text.contains("\n\(name) = "), "config.example.toml lacks \(key.key)")
        }
    }

    @Test("a missing file named by --config is an error; the default path may be absent")
    func missingFile() throws {
        let loader = ConfigurationLoader(environment: [:])
        let error = #expect(throws: ConfigurationError.self) {
            try loader.load(path: "/nonexistent/config.toml", required: true)
        }
        #expect(error?.fileProblem?.contains("/nonexistent/config.toml") == true)
        #expect(try loader.load(path: "/nonexistent/config.toml", required: false) == FanficConfiguration())
    }

    @Test("every key of the contract is read from the file")
    func fullFile() throws {
        let configuration = try load(
            """
            [broker]
            url = "amqps://fan:s3cret@rabbit.example:5671/fanfic"
            [email]
            server = "imap.example.com:993"
            username = "reader"
            password = "imap-secret"
            tls = "starttls"
            folders = ["INBOX", "Fics"]
            sleep_time = 30
            disabled_sites = ["www.fanfiction.net"]
            allowed_senders = ["me@example.com"]
            processed_folder = "Done"
            [calibre]
            library = "http://calibre:8080/#books"
            username = "cal"
            password = "cal-secret"
            update_method = "update_always"
            metadata_mode = "preserve_metadata"
            [fanficfare]
            command = "/usr/local/bin/fanficfare"
            personal_ini = "/config/personal.ini"
            defaults_ini = "/config/defaults.ini"
            options = ["is_adult=true"]
            timeout = 600
            [retry]
            delays = [1, 2]
            hail_mary = false
            hail_mary_delay = 10
            [notifications]
            apprise_urls = ["json://127.0.0.1:9999/notify"]
            [worker]
            id = "box-1"
            heartbeat = 2
            [run]
            workers = 4
            [coordinator]
            worker_timeout = 10
            site_pause = 3
            site_turn = 10
            site_caps = ["archiveofourown.org=2"]
            """)
        #expect(configuration.broker.url == "amqps://fan:s3cret@rabbit.example:5671/fanfic")
        #expect(configuration.email.server == "imap.example.com:993")
        #expect(configuration.email.tls == .starttls)
        #expect(configuration.email.folders == ["INBOX", "Fics"])
        #expect(configuration.email.sleepTime == 30)
        #expect(configuration.email.disabledSites == ["www.fanfiction.net"])
        #expect(configuration.email.allowedSenders == ["me@example.com"])
        #expect(configuration.email.processedFolder == "Done")
        #expect(configuration.calibre.library == "http://calibre:8080/#books")
        #expect(configuration.calibre.updateMethod == .updateAlways)
        #expect(configuration.calibre.metadataMode == .preserveMetadata)
        #expect(configuration.fanficfare.options == ["is_adult=true"])
        #expect(configuration.fanficfare.timeout == 600)
        #expect(configuration.retry.ladder == RetryLadder(delays: [1, 2], hailMary: false, hailMaryDelay: 10))
        #expect(configuration.notifications.appriseURLs == ["json://127.0.0.1:9999/notify"])
        #expect(configuration.worker.id == "box-1")
        #expect(configuration.worker.heartbeat == 2)
        #expect(configuration.run.workers == 4)
        #expect(configuration.coordinator.workerTimeout == 10)
        #expect(configuration.coordinator.sitePause == 3)
        #expect(configuration.coordinator.siteTurn == 10)
        #expect(configuration.coordinator.siteCapTable == ["archiveofourown.org": 2])
    }

    // MARK: Each kind of error

    @Test("a TOML syntax error names the line")
    func syntaxError() {
        let error = #expect(throws: ConfigurationError.self) { try load("[email]\nserver = \"unterminated\n") }
        #expect(error?.fileProblem?.contains("line 2") == true)
    }

    @Test("an unknown section or key is an error with a suggestion")
    func unknownNames() {
        let found = issues("[emial]\nserver = \"x\"\n[calibre]\nlibary = \"/books\"\n")
        #expect(found.count == 2)
        #expect(found.contains { $0.key == "emial" && $0.expected.contains("did you mean 'email'") })
        #expect(found.contains { $0.key == "calibre.libary" && $0.expected.contains("did you mean 'library'") })
    }

    @Test(
        "a wrong type, range or choice names the key, the value and what is allowed",
        arguments: [
            (
                "[calibre]\nupdate_method = \"sometimes\"", "calibre.update_method",
                "update, update_always, force, update_no_force"
            ),
            ("[calibre]\nmetadata_mode = 3", "calibre.metadata_mode", "remove_add, preserve_metadata, add_format"),
            ("[email]\ntls = \"ssl\"", "email.tls", "implicit, starttls, none"),
            ("[email]\nsleep_time = 0", "email.sleep_time", "from 1 to 86400"),
            ("[email]\nsleep_time = \"60\"", "email.sleep_time", "whole number"),
            ("[email]\nserver = \"imaps://mail.example.com\"", "email.server", "no scheme"),
            ("[email]\nserver = \"mail.example.com:99999\"", "email.server", "port"),
            ("[email]\nallowed_senders = [\"nobody\"]", "email.allowed_senders", "email addresses"),
            ("[email]\nfolders = \"INBOX\"", "email.folders", "list of strings"),
            ("[broker]\nurl = \"http://rabbit:5672\"", "broker.url", "amqp://"),
            ("[calibre]\nlibrary = \"\"", "calibre.library", "library folder"),
            ("[fanficfare]\noptions = [\"--force\"]", "fanficfare.options", "NAME=VALUE"),
            ("[fanficfare]\ntimeout = -5", "fanficfare.timeout", "from 1"),
            ("[retry]\ndelays = [60, 0]", "retry.delays", "list of whole numbers"),
            ("[retry]\nhail_mary = \"yes\"", "retry.hail_mary", "true or false"),
            ("[notifications]\napprise_urls = [\"not a url\"]", "notifications.apprise_urls", "Apprise URL"),
            ("[worker]\nid = \"my worker\"", "worker.id", "letters, digits"),
            ("[worker]\nheartbeat = 0", "worker.heartbeat", "from 1 to 300"),
            ("[run]\nworkers = 0", "run.workers", "from 1 to 64"),
            ("[coordinator]\nsite_pause = -1", "coordinator.site_pause", "from 0"),
            ("[coordinator]\nsite_turn = -1", "coordinator.site_turn", "from 0"),
            ("[coordinator]\nsite_caps = [\"ao3=many\"]", "coordinator.site_caps", "SITE=N"),
        ])
    func invalidValue(toml: String, key: String, allowed: String) {
        let found = issues(toml)
        #expect(found.count == 1, "\(found)")
        let issue = found.first
        #expect(issue?.key == key)
        #expect(issue?.expected.contains(allowed) == true, "\(String(describing: issue))")
        #expect(issue?.source == "config.toml")
        #expect(issue?.description.contains(key) == true)
    }

    @Test("rules across keys: the worker timeout must cover two heartbeats")
    func crossField() {
        let found = issues("[worker]\nheartbeat = 10\n[coordinator]\nworker_timeout = 15\n")
        #expect(found.map(\.key) == ["coordinator.worker_timeout"])
        #expect(found.first?.expected.contains("worker.heartbeat") == true)
    }

    @Test("every role retries a lost broker well within the worker timeout, and at most every 15 s")
    func reconnectCeiling() {
        var coordinator = FanficConfiguration().coordinator
        #expect(coordinator.reconnectCeiling == 20.0 / 3, "the default worker_timeout, 20 s")
        coordinator.workerTimeout = 3
        #expect(coordinator.reconnectCeiling == 1)
        coordinator.workerTimeout = 600
        #expect(coordinator.reconnectCeiling == 15)
    }

    @Test("every problem is reported at once")
    func allIssues() {
        #expect(issues("[run]\nworkers = 0\n[worker]\nheartbeat = 0\n[calibre]\nupdate_method = \"x\"\n").count == 3)
    }

    // MARK: Environment

    @Test("environment variables override the file, for every kind of value")
    func environmentOverrides() throws {
        let configuration = try load(
            "[calibre]\nupdate_method = \"update\"\n",
            environment: [
                "FANFIC_CALIBRE_UPDATE_METHOD": "force",
                "FANFIC_EMAIL_SLEEP_TIME": "15",
                "FANFIC_RETRY_HAIL_MARY": "false",
                "FANFIC_RETRY_DELAYS": "1, 2,3",
                "FANFIC_EMAIL_FOLDERS": "INBOX,Fanfic",
                "FANFIC_EMAIL_DISABLED_SITES": "",
                "FANFIC_BROKER_URL": "amqp://u:p@rabbit:5672/%2F",
                "FANFIC_TEST_UNRELATED": "ignored",
            ])
        #expect(configuration.calibre.updateMethod == .force)
        #expect(configuration.email.sleepTime == 15)
        #expect(configuration.retry.hailMary == false)
        #expect(configuration.retry.delays == [1, 2, 3])
        #expect(configuration.email.folders == ["INBOX", "Fanfic"])
        #expect(configuration.email.disabledSites == [])
        #expect(configuration.broker.url == "amqp://u:p@rabbit:5672/%2F")
    }

    @Test("a bad environment value names the variable")
    func badEnvironmentValue() {
        let found = issues("", environment: ["FANFIC_EMAIL_SLEEP_TIME": "soon", "FANFIC_RETRY_DELAYS": "1,x"])
        #expect(found.count == 2)
        #expect(found.contains { $0.key == "email.sleep_time" && $0.source == "FANFIC_EMAIL_SLEEP_TIME" })
        #expect(found.contains { $0.key == "retry.delays" && $0.expected.contains("comma-separated") })
    }

    @Test("a Content Server URL without a host (compose.worker.yaml without CALIBRE_HOST) says what to set")
    func contentServerWithoutHost() {
        let found = issues("", environment: ["FANFIC_CALIBRE_LIBRARY": "http://:8080/#library"])
        #expect(found.count == 1)
        #expect(found.first?.key == "calibre.library" && found.first?.source == "FANFIC_CALIBRE_LIBRARY")
        #expect(found.first?.expected.contains("CALIBRE_HOST") == true)
    }

    @Test("every key has its environment variable")
    func environmentNames() {
        let names = FanficConfiguration.keys.map(\.environment)
        #expect(names.contains("FANFIC_EMAIL_SLEEP_TIME"))
        #expect(names.contains("FANFIC_COORDINATOR_WORKER_TIMEOUT"))
        #expect(Set(names).count == names.count)
        #expect(FanficConfiguration.keys.count == 58)
        #expect(names.contains("FANFIC_SITES_COOLDOWN") && names.contains("FANFIC_CALIBRE_ON_FEWER_CHAPTERS"))
        #expect(names.contains("FANFIC_WORKER_SLOTS") && names.contains("FANFIC_COORDINATOR_FORGET_WORKERS_AFTER"))
        #expect(names.contains("FANFIC_RUN_STOP_TIMEOUT") && names.contains("FANFIC_COORDINATOR_SITE_TURN"))
    }

    @Test("secrets can be read from files named by _FILE variables")
    func secretFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let imap = directory.appendingPathComponent("imap")
        try "imap-secret\n".write(to: imap, atomically: true, encoding: .utf8)
        let broker = directory.appendingPathComponent("broker")
        try "amqp://fan:pw@rabbit:5672/%2F".write(to: broker, atomically: true, encoding: .utf8)

        let configuration = try load(
            "", environment: ["FANFIC_EMAIL_PASSWORD_FILE": imap.path, "FANFIC_BROKER_URL_FILE": broker.path])
        #expect(configuration.email.password == "imap-secret")
        #expect(configuration.broker.url == "amqp://fan:pw@rabbit:5672/%2F")

        let missing = issues("", environment: ["FANFIC_CALIBRE_PASSWORD_FILE": "/nonexistent/secret"])
        #expect(missing.first?.key == "calibre.password")
        #expect(missing.first?.source == "FANFIC_CALIBRE_PASSWORD_FILE")

        let both = issues(
            "", environment: ["FANFIC_EMAIL_PASSWORD_FILE": imap.path, "FANFIC_EMAIL_PASSWORD": "inline"])
        #expect(both.first?.expected.contains("not both") == true)
    }

    @Test("[dashboard]: listen, the password and tokens (from files too), the history's file and retention")
    func dashboard() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let passwordFile = directory.appendingPathComponent("password")
        try "dashboard-secret\n".write(to: passwordFile, atomically: true, encoding: .utf8)
        let configuration = try load(
            """
            [dashboard]
            listen = "0.0.0.0:8081"
            api_tokens = ["0123456789abcdef0123"]
            database = "/data/history.sqlite"
            retention_days = 30
            """, environment: ["FANFIC_DASHBOARD_PASSWORD_FILE": passwordFile.path])
        #expect(configuration.dashboard.listen == "0.0.0.0:8081")
        #expect(configuration.dashboard.password == "dashboard-secret")
        #expect(configuration.dashboard.apiTokens == ["0123456789abcdef0123"])
        #expect(configuration.dashboard.database == "/data/history.sqlite")
        #expect(configuration.dashboard.retentionDays == 30)
        #expect(!configuration.redactedTOML.contains("0123456789abcdef0123"))
        #expect(!configuration.redactedTOML.contains("dashboard-secret"))

        let found = issues(
            """
            [dashboard]
            listen = "8081"
            api_tokens = ["short"]
            retention_days = 0
            """)
        #expect(Set(found.map(\.key)) == ["dashboard.listen", "dashboard.api_tokens", "dashboard.retention_days"])
        #expect(found.first { $0.key == "dashboard.listen" }?.expected.contains("host:port") == true)
        #expect(found.first { $0.key == "dashboard.api_tokens" }?.expected.contains("16 characters") == true)
        #expect(!found.description.contains("short"), "a refused token is not echoed")
    }

    // MARK: Secrets stay secret

    @Test("printed configuration and error messages mask secrets")
    func redaction() throws {
        let configuration = try load(
            """
            [broker]
            url = "amqp://fan:brokerpw@rabbit:5672/%2F"
            [email]
            password = "imappw"
            [calibre]
            password = "calibrepw"
            [notifications]
            apprise_urls = ["pover://user@tokenpw"]
            """)
        let printed = configuration.redactedTOML
        for secret in ["brokerpw", "imappw", "calibrepw", "tokenpw"] {
            #expect(!printed.contains(secret), "\(secret) leaked into:\n\(printed)")
        }
        #expect(printed.contains("url = \"amqp://fan:***@rabbit:5672/%2F\""))
        #expect(printed.contains("[coordinator]"))

        let error = #expect(throws: ConfigurationError.self) {
            try load("[broker]\nurl = \"http://fan:brokerpw@rabbit\"\n")
        }
        #expect(error?.description.contains("brokerpw") == false)
        #expect(error?.description.contains("broker.url") == true)
    }
}
