// swift-tools-version: 6.1
import PackageDescription

/// One set of settings for every target: Swift 6 language mode (strict concurrency).
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

/// A library of commands (a role's, the CLI's): thin over AppSupport.
func commandLibrary(_ name: String, _ modules: [Target.Dependency]) -> Target {
    .target(
        name: name,
        dependencies: modules + [
            "AppSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ],
        swiftSettings: swiftSettings
    )
}

let package = Package(
    name: "AutomatedFanfic",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ingester", targets: ["IngesterApp"]),
        .executable(name: "coordinator", targets: ["CoordinatorApp"]),
        .executable(name: "worker", targets: ["WorkerApp"]),
        .executable(name: "dashboard", targets: ["DashboardApp"]),
        .executable(name: "fanfic", targets: ["FanficCLI"]),
        .executable(name: "fanfic-core", targets: ["FanficCoreCLI"]),
        .executable(name: "broker-bench", targets: ["BrokerBenchmark"]),
        .executable(name: "parsing-bench", targets: ["ParsingBenchmark"]),
        .executable(name: "fanfic-fuzz", targets: ["FuzzDriver"]),
        .executable(name: "routing-bench", targets: ["RoutingBenchmark"]),
        .executable(name: "dashboard-bench", targets: ["DashboardBenchmark"]),
        .executable(name: "sweep-bench", targets: ["SweepBenchmark"]),
        .library(name: "AMQP", targets: ["AMQP"]),
        .library(name: "FanficCore", targets: ["FanficCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // MARK: C libraries
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),

        // MARK: Libraries
        .target(
            name: "AMQP",
            dependencies: [
                "CRabbitMQ",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "MessagePack",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FanficCore",
            dependencies: [
                .product(name: "TOMLKit", package: "TOMLKit")
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FanficBroker",
            dependencies: [
                "AMQP",
                "FanficCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Coordination",
            dependencies: ["FanficCore"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CoordinatorService",
            dependencies: [
                "AMQP", "Coordination", "FanficBroker", "FanficCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WorkerRuntime",
            dependencies: [
                "AMQP", "FanficBroker", "FanficCore", "Notifications",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ExternalTools",
            dependencies: [
                .product(name: "Subprocess", package: "swift-subprocess")
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Supervision",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CalibreLibrary",
            dependencies: [
                "ExternalTools", "MessagePack",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Sweep",
            dependencies: [
                "AMQP", "CalibreLibrary", "FanficBroker", "FanficCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "DashboardHistory",
            dependencies: [
                "FanficBroker", "FanficCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "DashboardServer",
            dependencies: [
                "DashboardHistory", "FanficBroker", "FanficCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Notifications",
            dependencies: [
                "ExternalTools",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "StoryPipeline",
            dependencies: [
                "CalibreLibrary", "Download", "FanficBroker", "FanficCore", "WorkerRuntime",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "MailIngest",
            dependencies: [
                "CCurl", "AMQP", "FanficBroker", "FanficCore", "Notifications",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Download",
            dependencies: [
                "ExternalTools", "FanficCore",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "AppSupport",
            dependencies: [
                "AMQP",
                "FanficBroker",
                "FanficCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Executables (thin: parse arguments, build, run)
        // The commands, in libraries: each role's executable is one line over its command, and
        // `fanfic` (every role, when called by a role's name) and `fanfic-core` (the CLI and the
        // coordinator: the core image's) are multi-call binaries over several.
        commandLibrary("CoordinatorRole", ["CoordinatorService"]),
        commandLibrary("IngesterRole", ["MailIngest", "Notifications"]),
        commandLibrary("WorkerRole", ["CalibreLibrary", "StoryPipeline", "Sweep", "WorkerRuntime", "Notifications"]),
        commandLibrary(
            "DashboardRole",
            [
                "DashboardHistory", "DashboardServer", "FanficBroker",
                .product(name: "Hummingbird", package: "hummingbird"),
            ]),
        commandLibrary(
            "CLICommands",
            ["AMQP", "CalibreLibrary", "FanficBroker", "FanficCore", "Supervision", "Sweep", "WorkerRuntime"]),
        .executableTarget(
            name: "CoordinatorApp", dependencies: ["AppSupport", "CoordinatorRole"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "DashboardApp", dependencies: ["AppSupport", "DashboardRole"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "IngesterApp", dependencies: ["AppSupport", "IngesterRole"], swiftSettings: swiftSettings),
        .executableTarget(name: "WorkerApp", dependencies: ["AppSupport", "WorkerRole"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "FanficCLI",
            dependencies: [
                "AppSupport", "CLICommands", "CoordinatorRole", "DashboardRole", "IngesterRole", "WorkerRole",
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "FanficCoreCLI", dependencies: ["AppSupport", "CLICommands", "CoordinatorRole"],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "ParsingBenchmark",
            dependencies: ["FanficCore", "MailIngest"],
            path: "Benchmarks/ParsingBenchmark",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FuzzTargets",
            dependencies: ["FanficCore", "MailIngest", "MessagePack"],
            path: "Fuzz/FuzzTargets",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "FuzzDriver",
            dependencies: ["FuzzTargets"],
            path: "Fuzz/Driver",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "BrokerBenchmark",
            dependencies: [
                "AMQP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/BrokerBenchmark",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "DashboardBenchmark",
            dependencies: [
                "DashboardHistory", "DashboardServer", "FanficBroker", "FanficCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Benchmarks/DashboardBenchmark",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "RoutingBenchmark",
            dependencies: [
                "AMQP", "FanficBroker", "FanficCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/RoutingBenchmark",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "SweepBenchmark",
            dependencies: [
                "AMQP", "CalibreLibrary", "FanficBroker", "FanficCore", "Sweep",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/SweepBenchmark",
            swiftSettings: swiftSettings
        ),

        // MARK: Tests
        .testTarget(
            name: "FanficCoreTests",
            dependencies: ["FanficCore", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CoordinationTests",
            dependencies: ["Coordination", "FanficCore", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SweepTests",
            dependencies: [
                "CalibreLibrary", "FanficBroker", "FanficCore", "Sweep", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DownloadTests",
            dependencies: [
                "Download", "ExternalTools", "FanficCore", "TestSupport",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "MailIngestTests",
            dependencies: [
                "MailIngest", "FanficBroker", "FanficCore", "Notifications", "FuzzTargets",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Corpus"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FanficBrokerTests",
            dependencies: ["AMQP", "FanficBroker", "FanficCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "StoryPipelineTests",
            dependencies: [
                "AMQP", "CalibreLibrary", "Download", "ExternalTools", "FanficBroker", "FanficCore", "MessagePack",
                "Notifications", "StoryPipeline", "WorkerRuntime",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WorkerRuntimeTests",
            dependencies: [
                "AMQP", "FanficBroker", "FanficCore", "Notifications", "TestSupport", "WorkerRuntime",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DashboardTests",
            dependencies: [
                "DashboardHistory", "DashboardServer", "FanficBroker", "FanficCore", "TestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CoordinatorRoleTests",
            dependencies: [
                "AMQP", "Coordination", "CoordinatorService", "FanficBroker", "FanficCore", "Notifications",
                "TestSupport", "WorkerRuntime",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SupervisionTests",
            dependencies: ["Supervision"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AMQPTests",
            dependencies: ["AMQP", "CCurl", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TestSupport",
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "FanficTestWorker",
            dependencies: [
                "AppSupport", "FanficBroker", "FanficCore", "Notifications", "TestSupport", "WorkerRuntime",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tests/TestWorker",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BrokerIntegrationTests",
            dependencies: [
                "TestSupport",
                "AMQP", "CalibreLibrary", "DashboardHistory", "FanficBroker", "FanficCore", "Sweep",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
