/// Everything any role reads from `config.toml`, with the defaults of DESIGN.md.
///
/// Defaults live here in code; the file and `FANFIC_<SECTION>_<KEY>` environment variables
/// only override them. Load with ``ConfigurationLoader``.
public struct FanficConfiguration: Sendable, Hashable {
    public var broker = Broker()
    public var email = Email()
    public var calibre = Calibre()
    public var fanficfare = FanFicFare()
    public var retry = Retry()
    public var notifications = Notifications()
    public var worker = Worker()
    public var run = Run()
    public var coordinator = Coordinator()
    public var limits = Limits()
    public var dashboard = Dashboard()
    public var sweep = Sweep()
    public var sites = Sites()

    public init() {}

    /// Bounds on what comes from outside (anyone may publish a task): past each, the thing is
    /// parked or refused with the reason, logged, and the loop goes on.
    public struct Limits: Sendable, Hashable {
        /// A task or control message bigger than this is parked (or dropped) unread.
        public var maxMessageBytes = 65_536
        /// A task whose URL is longer is parked.
        public var maxURLLength = 2048
        /// A failure reason is cut to this many characters in `fanfic.failed` and events.
        public var maxReasonLength = 2000
        /// Workers the coordinator keeps in its table; hellos from more are refused. (Sites
        /// need no bound: they come from the site rules, not from messages.)
        public var maxWorkers = 1000

        public init() {}

        /// The wire codec's part of them.
        public var wire: WireLimits {
            WireLimits(maxMessageBytes: maxMessageBytes, maxURLLength: maxURLLength)
        }
    }

    public struct Broker: Sendable, Hashable {
        /// `amqp://` or `amqps://` (TLS); the password is a secret.
        public var url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    }

    public struct Email: Sendable, Hashable {
        public enum TLSMode: String, Sendable, Hashable, CaseIterable {
            case implicit, starttls, none
        }

        /// `host` or `host:port`; empty means no ingester.
        public var server = ""
        public var username = ""
        public var password = ""
        public var tls = TLSMode.implicit
        public var folders = ["INBOX"]
        public var sleepTime = 60
        public var disabledSites: [String] = []
        public var allowedSenders: [String] = []
        public var processedFolder = ""
        /// A CA bundle for a server with a private or self-signed certificate; empty: the system's.
        public var caFile = ""
        /// Links beyond this many in one message are ignored (a runaway list, a newsletter).
        public var maxURLsPerMessage = 50
        /// A message bigger than this is not fetched: marked, left unseen, and the user told.
        public var maxMessageBytes = 10_485_760
        /// Mark messages without any story URL seen too (default: leave them as they are).
        public var markUnmatchedSeen = false
    }

    public struct Calibre: Sendable, Hashable {
        public enum UpdateMethod: String, Sendable, Hashable, CaseIterable {
            case update
            case updateAlways = "update_always"
            case force
            case updateNoForce = "update_no_force"
        }

        public enum MetadataMode: String, Sendable, Hashable, CaseIterable {
            case removeAdd = "remove_add"
            case preserveMetadata = "preserve_metadata"
            case addFormat = "add_format"
        }

        /// A folder, or a Content Server URL `http(s)://host:port/#library_id`.
        public var library = "./library"
        public var username = ""
        public var password = ""
        /// What to do when the site has fewer chapters than the book (an author removed some):
        /// never lose chapters unless asked to.
        public enum FewerChapters: String, Sendable, Hashable, CaseIterable {
            /// Leave the book as it is and tell the user.
            case keep
            /// Keep the book's EPUB as its ORIGINAL_EPUB format, then update.
            case backupThenUpdate = "backup_then_update"
            /// Update: the book gets the site's shorter story.
            case update
        }

        public var updateMethod = UpdateMethod.update
        public var metadataMode = MetadataMode.removeAdd
        public var onFewerChapters = FewerChapters.keep
    }

    /// How the fleet treats a site that blocks it (429, a challenge, down, unreachable).
    public struct Sites: Sendable, Hashable {
        /// Seconds a blocked site is paused for every worker the first time; doubled for each
        /// further block of the same outage, up to `cooldown_max`. A longer delay the site asked
        /// for (Retry-After) is honoured.
        public var cooldown = 60
        public var cooldownMax = 3600
        /// Tasks of one site sent to workers in any hour; 0: no limit. A site's own section may
        /// set its own.
        public var maxTasksPerHour = 0
        /// `HH:MM-HH:MM` ranges of local time when no site is contacted (unless its own section
        /// says otherwise).
        public var quietHours: [String] = []
        /// `[sites."<site>"]` sections: one site's politeness over these defaults.
        public var overrides: [String: SitePolicy] = [:]
    }

    public struct FanFicFare: Sendable, Hashable {
        public var command = "fanficfare"
        public var personalIni = ""
        public var defaultsIni = ""
        /// Extra `-o NAME=VALUE` options.
        public var options: [String] = []
        /// Seconds per run.
        public var timeout = 7200
        /// A series, author or collection page becomes at most this many story tasks
        /// (`fanficfare --list`); 0 refuses such pages as "not a story URL".
        public var expandLists = 100
    }

    public struct Retry: Sendable, Hashable {
        public var delays = [60, 300, 900]
        public var hailMary = true
        public var hailMaryDelay = 3600

        public var ladder: RetryLadder { RetryLadder(delays: delays, hailMary: hailMary, hailMaryDelay: hailMaryDelay) }
    }

    public struct Notifications: Sendable, Hashable {
        public var appriseURLs: [String] = []
    }

    public struct Worker: Sendable, Hashable {
        /// Empty: the host name plus an index.
        public var id = ""
        /// Seconds between heartbeats.
        public var heartbeat = 5
        /// A folder the workers of one host share (compose: a volume): each claims the lowest free
        /// number in it, so that its id `<host name>-<number>` outlives its container. Empty: the
        /// number is `--index`.
        public var slots = ""
    }

    /// The `dashboard` role: web pages, the HTTP API and the history of every event.
    public struct Dashboard: Sendable, Hashable {
        /// `host:port` to listen on; empty: no dashboard (`fanfic run` starts none).
        public var listen = ""
        /// The login's password; empty: no login, and the dashboard listens on 127.0.0.1 only.
        public var password = ""
        /// Read-only tokens for scripts (`Authorization: Bearer TOKEN`): the API, the widget, /metrics.
        public var apiTokens: [String] = []
        /// The history's SQLite file (relative: to the working directory).
        public var database = "dashboard.sqlite"
        /// Days of history kept.
        public var retentionDays = 90

        public init() {}
    }

    /// Update sweeps: the stories already in the library, checked for new chapters on a schedule.
    public struct Sweep: Sendable, Hashable {
        /// Seconds one sweep of the library takes (its checks spread over it); 0: no sweeps.
        public var interval = 0
        /// The books a sweep checks: a calibre search expression.
        public var search = #"not tags:"=Completed""#
        /// Checks of one site in any hour, at most.
        public var perSiteBudget = 20
        /// A book the library updated less than this many hours ago is not checked.
        public var skipRecentHours = 12

        public init() {}
    }

    public struct Run: Sendable, Hashable {
        public var workers = 2
        /// Seconds `fanfic run` gives its children to stop (workers finish their task) before
        /// killing them; a killed worker's task is redelivered.
        public var stopTimeout = 60
    }

    public struct Coordinator: Sendable, Hashable {
        /// Seconds without a heartbeat before a worker is presumed dead.
        public var workerTimeout = 20
        /// Seconds between two tasks of one site.
        public var sitePause = 0
        /// Tasks a worker is sent from one site before a site waiting for a worker goes first
        /// (the rest waits in the site's backlog for the next turn); 0: a site's whole backlog.
        public var siteTurn = 5
        /// `SITE=N`: sites that allow N workers at once (every other site: one).
        public var siteCaps: [String] = []
        /// Broker users whose control messages (hello, heartbeat, finished) the coordinator
        /// believes; empty: any user (one broker user for everything).
        public var workerUsers: [String] = []
        /// Seconds after which a worker nobody has heard from is forgotten: its queue (reclaimed,
        /// so empty) is deleted and it leaves the registry.
        public var forgetWorkersAfter = 86_400

        /// The longest wait, in seconds, between two tries to reach a broker that went away, for
        /// every role: a third of `worker_timeout`, at most 15. After a broker restart the
        /// coordinator gives registered workers `worker_timeout` to report before it presumes them
        /// dead and hands their sites to others; a worker still running a story must be back well
        /// within that, or two workers would run one site.
        public var reconnectCeiling: Double { min(15, Double(workerTimeout) / 3) }

        /// `site_caps` as a table; the configuration check has made sure every entry parses.
        public var siteCapTable: [String: Int] {
            var table: [String: Int] = [:]
            for entry in siteCaps {
                let parts = entry.split(separator: "=", maxSplits: 1)
                if parts.count == 2, let cap = Int(parts[1]) { table[String(parts[0])] = cap }
            }
            return table
        }
    }
}
