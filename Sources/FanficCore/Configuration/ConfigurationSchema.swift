import Foundation

/// The configuration contract of DESIGN.md: every key, its type and its rules, in file order.
/// Scripts, the compose file and the docs rely on these names; add keys, rename none.
enum ConfigurationSchema {
    static let sections = [
        "broker", "email", "calibre", "fanficfare", "retry", "notifications", "worker", "run", "coordinator",
        "limits", "dashboard", "sweep", "sites",
    ]

    static var fields: [ConfigurationField] {
        [
            .string("broker", "url", \.broker.url, secrecy: .urlPassword, rule: Rules.brokerURL),

            .string("email", "server", \.email.server, rule: Rules.hostAndPort),
            .string("email", "username", \.email.username),
            .string("email", "password", \.email.password, secrecy: .whole),
            .choice("email", "tls", \.email.tls),
            .stringList("email", "folders", \.email.folders, rule: Rules.nonEmpty("a folder name")),
            .integer("email", "sleep_time", \.email.sleepTime, range: 1...86_400),
            .stringList("email", "disabled_sites", \.email.disabledSites, rule: Rules.nonEmpty("a site key")),
            .stringList("email", "allowed_senders", \.email.allowedSenders, rule: Rules.emailAddress),
            .string("email", "processed_folder", \.email.processedFolder),
            .string("email", "ca_file", \.email.caFile),
            .integer("email", "max_urls_per_message", \.email.maxURLsPerMessage, range: 1...10_000),
            .integer("email", "max_message_bytes", \.email.maxMessageBytes, range: 1024...1_073_741_824),
            .bool("email", "mark_unmatched_seen", \.email.markUnmatchedSeen),

            .string("calibre", "library", \.calibre.library, rule: Rules.calibreLibrary),
            .string("calibre", "username", \.calibre.username),
            .string("calibre", "password", \.calibre.password, secrecy: .whole),
            .choice("calibre", "update_method", \.calibre.updateMethod),
            .choice("calibre", "metadata_mode", \.calibre.metadataMode),
            .choice("calibre", "on_fewer_chapters", \.calibre.onFewerChapters),

            .string("fanficfare", "command", \.fanficfare.command, rule: Rules.nonEmpty("a command name or path")),
            .string("fanficfare", "personal_ini", \.fanficfare.personalIni),
            .string("fanficfare", "defaults_ini", \.fanficfare.defaultsIni),
            .stringList(
                "fanficfare", "options", \.fanficfare.options, secrecy: .whole, rule: Rules.fanficfareOption),
            .integer("fanficfare", "timeout", \.fanficfare.timeout, range: 1...86_400),
            .integer("fanficfare", "expand_lists", \.fanficfare.expandLists, range: 0...1_000),

            .integerList("retry", "delays", \.retry.delays, range: 1...604_800),
            .bool("retry", "hail_mary", \.retry.hailMary),
            .integer("retry", "hail_mary_delay", \.retry.hailMaryDelay, range: 1...604_800),

            .stringList(
                "notifications", "apprise_urls", \.notifications.appriseURLs, secrecy: .whole, rule: Rules.appriseURL),

            .string("worker", "id", \.worker.id, rule: Rules.workerID),
            .integer("worker", "heartbeat", \.worker.heartbeat, range: 1...300),
            .string("worker", "slots", \.worker.slots),

            .integer("run", "workers", \.run.workers, range: 1...64),
            .integer("run", "stop_timeout", \.run.stopTimeout, range: 1...86_400),

            .integer("coordinator", "worker_timeout", \.coordinator.workerTimeout, range: 2...3600),
            .integer("coordinator", "site_pause", \.coordinator.sitePause, range: 0...86_400),
            .integer("coordinator", "site_turn", \.coordinator.siteTurn, range: 0...100_000),
            .stringList("coordinator", "site_caps", \.coordinator.siteCaps, rule: Rules.siteCap),
            .stringList("coordinator", "worker_users", \.coordinator.workerUsers, rule: Rules.brokerUser),
            .integer(
                "coordinator", "forget_workers_after", \.coordinator.forgetWorkersAfter, range: 60...31_536_000),

            .integer("limits", "max_message_bytes", \.limits.maxMessageBytes, range: 1024...16_777_216),
            .integer("limits", "max_url_length", \.limits.maxURLLength, range: 64...65_536),
            .integer("limits", "max_reason_length", \.limits.maxReasonLength, range: 80...65_536),
            .integer("limits", "max_workers", \.limits.maxWorkers, range: 1...100_000),

            .string("dashboard", "listen", \.dashboard.listen, rule: Rules.listenAddress),
            .string("dashboard", "password", \.dashboard.password, secrecy: .whole),
            .stringList("dashboard", "api_tokens", \.dashboard.apiTokens, secrecy: .whole, rule: Rules.apiToken),
            .string("dashboard", "database", \.dashboard.database, rule: Rules.nonEmpty("a file path")),
            .integer("dashboard", "retention_days", \.dashboard.retentionDays, range: 1...3650),

            .integer("sweep", "interval", \.sweep.interval, range: 0...31_536_000),
            .string(
                "sweep", "search", \.sweep.search,
                rule: Rules.nonEmpty("a calibre search, e.g. not tags:\"=Completed\"")),
            .integer("sweep", "per_site_budget", \.sweep.perSiteBudget, range: 1...10_000),
            .integer("sweep", "skip_recent_hours", \.sweep.skipRecentHours, range: 0...87_600),

            .integer("sites", "cooldown", \.sites.cooldown, range: 1...86_400),
            .integer("sites", "cooldown_max", \.sites.cooldownMax, range: 1...604_800),
            .integer("sites", "max_tasks_per_hour", \.sites.maxTasksPerHour, range: 0...100_000),
            .stringList("sites", "quiet_hours", \.sites.quietHours, rule: Rules.quietHours),
        ]
    }
}

/// Value rules; each returns what is allowed, or nil when the value is fine.
enum Rules {
    static func nonEmpty(_ what: String) -> (String) -> String? {
        { $0.trimmingCharacters(in: .whitespaces).isEmpty ? "must be \(what), not empty" : nil }
    }

    static func brokerURL(_ text: String) -> String? {
        if text.contains(",") {
            // The nodes of one cluster, tried in turn.
            return text.split(separator: ",", omittingEmptySubsequences: false).lazy
                .compactMap { brokerURL($0.trimmingCharacters(in: .whitespaces)) }.first
        }
        let lower = text.lowercased()
        guard lower.hasPrefix("amqp://") || lower.hasPrefix("amqps://") else {
            return "must be an amqp:// or amqps:// URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2F"
        }
        guard let components = URLComponents(string: text), let host = components.host, !host.isEmpty else {
            return "must name a host, e.g. amqp://user:password@broker:5672/%2F"
        }
        return nil
    }

    static func hostAndPort(_ text: String) -> String? {
        if text.isEmpty { return nil }
        if text.contains("://") || text.contains("/") {
            return "must be a host or host:port (no scheme: TLS is chosen by email.tls)"
        }
        if let colon = text.lastIndex(of: ":"), !text.hasPrefix("[") {
            guard let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port) else {
                return "the port after ':' must be a number from 1 to 65535"
            }
        }
        return nil
    }

    static func listenAddress(_ text: String) -> String? {
        text.isEmpty || ListenAddress(text, loopbackOnly: false) != nil
            ? nil : "must be host:port, e.g. 127.0.0.1:8081 or 0.0.0.0:8081 (empty: no dashboard)"
    }

    static func apiToken(_ text: String) -> String? {
        text.count >= 16 && !text.contains(where: \.isWhitespace)
            ? nil : "each token must be at least 16 characters without spaces, e.g. from `openssl rand -hex 24`"
    }

    static func emailAddress(_ text: String) -> String? {
        text.contains("@") && !text.contains(" ") ? nil : "must be email addresses like reader@example.com"
    }

    static func calibreLibrary(_ text: String) -> String? {
        if text.isEmpty { return "must be a library folder or a Content Server URL http(s)://host:port/#library_id" }
        if text.hasPrefix("http://") || text.hasPrefix("https://") {
            guard let components = URLComponents(string: text), components.host?.isEmpty == false else {
                // compose.worker.yaml makes http://:8080/#library when CALIBRE_HOST is unset.
                return
                    "must be a Content Server URL with a host, like http://127.0.0.1:8080/#library_id (compose.worker.yaml: set CALIBRE_HOST)"
            }
        }
        return nil
    }

    static func fanficfareOption(_ text: String) -> String? {
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex, !text.hasPrefix("-") else {
            return "each option must be NAME=VALUE (passed as -o NAME=VALUE), e.g. is_adult=true"
        }
        if text.contains(where: \.isNewline) {
            return "an option is one line: NAME=VALUE without line breaks"
        }
        return nil
    }

    static func appriseURL(_ text: String) -> String? {
        text.contains("://")
            ? nil : "each must be an Apprise URL like mailto://user:pass@example.com or json://host/path"
    }

    static let quietHoursExpected =
        "must be a list of HH:MM-HH:MM ranges in local time, e.g. [\"01:00-07:00\"] (across midnight: [\"22:00-06:00\"])"

    static func quietHours(_ text: String) -> String? {
        QuietHours(text) == nil ? quietHoursExpected : nil
    }

    static func siteCap(_ text: String) -> String? {
        let parts = text.split(separator: "=", maxSplits: 1)
        guard parts.count == 2, !parts[0].isEmpty, !parts[0].contains(" "), let cap = Int(parts[1]),
            (1...64).contains(cap)
        else {
            return "each must be SITE=N with N from 1 to 64, e.g. archiveofourown.org=2"
        }
        return nil
    }

    static func brokerUser(_ text: String) -> String? {
        guard !text.isEmpty, text.count <= 255, !text.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            return "each must be a broker user name, e.g. fanfic-worker"
        }
        return nil
    }

    static func workerID(_ text: String) -> String? {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "._-"))
        guard text.unicodeScalars.allSatisfy({ allowed.contains($0) && $0.isASCII }), text.count <= 64 else {
            return "must be letters, digits, '.', '_' or '-' (it names the queue fanfic.worker.<id>), at most 64"
        }
        return nil
    }
}

extension FanficConfiguration {
    /// What is wrong with a worker id (it names the queue `fanfic.worker.<id>`), or nil.
    public static func workerIDProblem(_ id: String) -> String? { Rules.workerID(id) }
}
