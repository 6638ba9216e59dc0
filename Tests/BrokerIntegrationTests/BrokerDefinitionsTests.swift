import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The compose file's RabbitMQ definitions (docker/rabbitmq): secrets made by
/// docker/make-secrets.sh, definitions rendered from them and imported into the real broker;
/// then every role runs with its own user, its broker URL read from a `_FILE` secret.
extension BrokerTests {
    @Suite("RabbitMQ definitions: one least-privilege user per role")
    struct BrokerDefinitionsTests {
        static let docker = TestBroker.repositoryRoot.appendingPathComponent("docker")
        static let token = "definitions-test-token-0123456789"

        @Test("each role works with its own user; what a role does not need is refused")
        func rolesWithTheirOwnUsers() async throws {
            let vhost = "defs-\(UUID().uuidString.prefix(8).lowercased())"
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("defs-\(UUID().uuidString)")
            try FileManager.default.createDirectory(
                at: scratch, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            let secrets = scratch.appendingPathComponent("secrets")
            defer {
                TestBroker.deleteVirtualHost(vhost)
                for user in [
                    "admin", "fanfic-coordinator", "fanfic-worker", "fanfic-ingester", "fanfic-cli", "fanfic-dashboard",
                ] {
                    _ = try? TestBroker.script("ctl", "-q", "delete_user", user)
                }
                try? FileManager.default.removeItem(at: scratch)
            }

            let made = try ChildProcess.run([
                "/usr/bin/env", "BROKER_HOST=127.0.0.1", "BROKER_PORT=\(TestBroker.port)", "BROKER_VHOST=\(vhost)",
                Self.docker.appendingPathComponent("make-secrets.sh").path, secrets.path,
            ])
            #expect(made.status == 0, "\(made.stderr)")
            let again = try ChildProcess.run([Self.docker.appendingPathComponent("make-secrets.sh").path, secrets.path])
            #expect(again.stdout.contains("nothing new"), "existing secrets are kept: \(again.stdout)")

            var urls: [String: String] = [:]
            for role in ["coordinator", "worker", "ingester", "cli", "dashboard"] {
                urls[role] = try String(
                    contentsOf: secrets.appendingPathComponent("\(role)_broker_url"), encoding: .utf8
                )
                .trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let adminPassword = try String(
                contentsOf: secrets.appendingPathComponent("rabbitmq_admin_password"), encoding: .utf8
            ).trimmingCharacters(in: .whitespacesAndNewlines)
            urls["admin"] = "amqp://admin:\(adminPassword)@127.0.0.1:\(TestBroker.port)/\(vhost)"

            let definitions = scratch.appendingPathComponent("definitions.json").path
            let rendered = try ChildProcess.run([
                Self.docker.appendingPathComponent("rabbitmq/render-definitions.sh").path,
                Self.docker.appendingPathComponent("rabbitmq/definitions.template.json").path, definitions,
                secrets.path, vhost,
            ])
            #expect(rendered.status == 0, "\(rendered.stderr)")
            let text = try String(contentsOfFile: definitions, encoding: .utf8)
            let workerURL = try String(contentsOf: secrets.appendingPathComponent("worker_broker_url"), encoding: .utf8)
            let workerPassword = try #require(
                workerURL.split(separator: ":").dropFirst(2).first?.split(separator: "@").first)
            #expect(!text.contains(workerPassword), "only hashes are written")
            #expect(!text.contains("@VHOST@") && !text.contains("_HASH@"))
            // The broker's CLI runs as the rabbitmq user: let it read the file.
            chmod(definitions, 0o644)
            try TestBroker.script("ctl", "-q", "import_definitions", definitions)

            // Roles: coordinator and a test worker, each with its own URL secret.
            let config = scratch.appendingPathComponent("config.toml").path
            try "[worker]\nheartbeat = 1\n[coordinator]\nworker_timeout = 3\n".write(
                toFile: config, atomically: true, encoding: .utf8)
            func secret(_ role: String) -> String { "FANFIC_BROKER_URL_FILE=\(secrets.path)/\(role)_broker_url" }
            let records = scratch.appendingPathComponent("records.jsonl").path
            let coordinator = try LaunchedProcess(
                [
                    "/usr/bin/env", secret("coordinator"), "FANFIC_COORDINATOR_WORKER_USERS=fanfic-worker",
                    BuiltProducts.path("coordinator"), "--config", config,
                ],
                output: scratch.appendingPathComponent("coordinator.log").path)
            let worker = try LaunchedProcess(
                [
                    "/usr/bin/env", secret("worker"), BuiltProducts.path("FanficTestWorker"), "--config", config,
                    "--id", "w1", "--record", records,
                ], output: scratch.appendingPathComponent("worker.log").path)
            defer {
                _ = worker
                _ = coordinator
            }

            // The CLI as its own user: submit, then status shows the worker; failed list works.
            func cli(_ arguments: [String]) throws -> ChildProcess.Result {
                try ChildProcess.run(
                    ["/usr/bin/env", secret("cli"), BuiltProducts.path("fanfic")] + arguments + ["--config", config])
            }
            // The import is asynchronous: the first connections may be refused for a moment.
            var submitted = try cli(["submit", "http://test1.com?sid=1"])
            try await waitUntil("the CLI user can submit", timeout: .seconds(30), every: .milliseconds(500)) {
                if submitted.status == 0 { return true }
                submitted = try cli(["submit", "http://test1.com?sid=1"])
                return submitted.status == 0
            }
            try await waitUntil("the worker ran the task", timeout: .seconds(60), every: .milliseconds(200)) {
                ((try? String(contentsOfFile: records, encoding: .utf8)) ?? "").contains("\"end\"")
            }
            var status = try cli(["status", "--json"])
            try await waitUntil("status, as the CLI user, lists the worker", timeout: .seconds(20)) {
                status = try cli(["status", "--json"])
                return status.status == 0 && status.stdout.contains("\"id\":\"w1\"")
            }
            // fanfic sweep now: the CLI user may ask for a sweep (and status read its progress, above).
            let sweepNow = try cli(["sweep", "now"])
            #expect(sweepNow.status == 0 && sweepNow.stdout.contains("asked for a sweep now"), "\(sweepNow.stderr)")
            let listed = try ChildProcess.run(
                ["/usr/bin/env", "FANFIC_BROKER_URL=\(urls["admin"]!)", BuiltProducts.path("fanfic"), "failed", "list"]
                    + ["--config", config])
            #expect(listed.status == 0, "\(listed.stderr)")
            // The CLI user may not read fanfic.failed: refused, even with nothing parked, rather
            // than told that nothing failed.
            let refused = try cli(["failed", "list"])
            #expect(refused.status != 0 && !refused.stdout.contains("0 failed task"), "\(refused.stdout)")

            // The ingester as its own user: a story link from a real mailbox becomes a task the worker runs.
            let dovecot = try #require(TestDovecot.shared, "dovecot could not be started")
            let user = dovecot.freshUser()
            let mail = "From: reader@example.com\r\nSubject: story\r\n\r\nhttp://test2.com?sid=2\r\n"
            try dovecot.deliver(Data(mail.utf8), to: user)
            let ingested = try ChildProcess.run([
                "/usr/bin/env", secret("ingester"), "FANFIC_EMAIL_SERVER=127.0.0.1:\(dovecot.imapPort)",
                "FANFIC_EMAIL_USERNAME=\(user)", "FANFIC_EMAIL_PASSWORD=secret", "FANFIC_EMAIL_TLS=none",
                BuiltProducts.path("ingester"), "--once", "--config", config,
            ])
            #expect(ingested.status == 0, "\(ingested.stderr)")
            try await waitUntil("the worker ran the emailed story", timeout: .seconds(60), every: .milliseconds(200)) {
                ((try? String(contentsOfFile: records, encoding: .utf8)) ?? "").contains("sid=2")
            }
            // The dashboard as its own user, with the secrets make-secrets.sh made: it records the
            // history, answers the status, and requeues a failed task (it reads fanfic.failed).
            let port = FreePort.pick(in: 20_000...29_999)
            try "\(Self.token)\n".write(
                to: secrets.appendingPathComponent("dashboard_api_tokens"), atomically: true, encoding: .utf8)
            let dashboard = try LaunchedProcess(
                [
                    "/usr/bin/env", secret("dashboard"), "FANFIC_DASHBOARD_LISTEN=127.0.0.1:\(port)",
                    "FANFIC_DASHBOARD_PASSWORD_FILE=\(secrets.path)/dashboard_password",
                    "FANFIC_DASHBOARD_API_TOKENS_FILE=\(secrets.path)/dashboard_api_tokens",
                    "FANFIC_DASHBOARD_DATABASE=\(scratch.path)/dashboard/history.sqlite",
                    BuiltProducts.path("dashboard"), "--config", config,
                ], output: scratch.appendingPathComponent("dashboard.log").path)
            defer { _ = dashboard }
            let header = scratch.appendingPathComponent("auth-header")
            try "Authorization: Bearer \(Self.token)\n".write(to: header, atomically: true, encoding: .utf8)
            func dashboardGet(_ path: String) -> String {
                (try? ChildProcess.run(
                    ["curl", "-sf", "--max-time", "5", "-H", "@\(header.path)", "http://127.0.0.1:\(port)\(path)"]
                ).stdout) ?? ""
            }
            try await waitUntil("the dashboard answers its status", timeout: .seconds(60), every: .milliseconds(500)) {
                dashboardGet("/api/status").contains("\"active\"")
            }
            let later = try cli(["submit", "http://test3.com?sid=3"])
            #expect(later.status == 0, "\(later.stderr)")
            try await waitUntil("the dashboard recorded the run", timeout: .seconds(60), every: .milliseconds(500)) {
                dashboardGet("/api/history?url=test3.com").contains("task.routed")
            }
            #expect(!dashboard.text.contains("ACCESS_REFUSED"), "\(dashboard.text.suffix(1500))")
            #expect(!coordinator.text.contains("ACCESS_REFUSED"), "\(coordinator.text.suffix(1500))")
            #expect(!worker.text.contains("ACCESS_REFUSED"), "\(worker.text.suffix(1500))")

            // Every role's user through the matrix of operations.
            let ladder = FanficConfiguration().retry.ladder
            let results = try await PermissionMatrix.run(urls: urls, ladder: ladder)
            let table = PermissionMatrix.check(results)
            // A worker claiming to be the coordinator: the broker refuses a user_id that is not the
            // connection's own.
            var forgedProperties = AMQPMessageProperties.persistentJSON()
            forgedProperties.userID = "fanfic-coordinator"
            let forger = AMQPConnection(
                configuration: try AMQPConfiguration(url: urls["worker"]!), logger: TestBroker.logger)
            try await forger.waitUntilConnected(timeout: .seconds(30))
            var forgery: String?
            do {
                try await forger.publish(
                    Data(#"{"type":"hello"}"#.utf8), exchange: FanficTopology.control, routingKey: "",
                    properties: forgedProperties)
            } catch {
                forgery = "\(error)"
            }
            await forger.close()
            #expect(forgery?.contains("406") == true, "a forged user_id: \(forgery ?? "accepted")")

            // fanfic failed is the operator's: the CLI user may not read the parked tasks (the
            // matrix left some there), the admin may.
            let refusedList = try cli(["failed", "list"])
            #expect(refusedList.status != 0 && refusedList.stderr.contains("ACCESS_REFUSED"), "\(refusedList.stderr)")

            // For the record (the closing note's matrix): which broker, and what it answered.
            let version = (try? TestBroker.script("ctl", "-q", "version"))?.trimmingCharacters(
                in: .whitespacesAndNewlines)
            try table.write(
                toFile: FileManager.default.temporaryDirectory.appendingPathComponent(
                    "fanfic-permission-matrix-\(version ?? "unknown").tsv"
                ).path, atomically: true, encoding: .utf8)
        }
    }
}
