import CCurl
import Foundation
import Testing

@testable import AMQP

@Suite("AMQP URL parsing")
struct AMQPConfigurationTests {
    @Test("a full URL: credentials, port, encoded vhost")
    func fullURL() throws {
        let configuration = try AMQPConfiguration(url: "amqp://fan:p%40ss@rabbit.local:5673/fan%2Ffic?heartbeat=7")
        #expect(configuration.host == "rabbit.local")
        #expect(configuration.port == 5673)
        #expect(configuration.username == "fan")
        #expect(configuration.password == "p@ss")
        #expect(configuration.virtualHost == "fan/fic")
        #expect(configuration.heartbeat == 7)
        #expect(configuration.tls == nil)
    }

    @Test("defaults: port 5672, vhost '/', %2F is '/'")
    func defaults() throws {
        #expect(try AMQPConfiguration(url: "amqp://localhost").virtualHost == "/")
        #expect(try AMQPConfiguration(url: "amqp://localhost").port == 5672)
        #expect(try AMQPConfiguration(url: "amqp://guest:guest@127.0.0.1:5672/%2F").virtualHost == "/")
    }

    @Test("amqps: TLS on, port 5671, CA and verification from the query")
    func tls() throws {
        let configuration = try AMQPConfiguration(url: "amqps://u:p@rabbit/%2F?cacertfile=/ca.pem&verify=verify_none")
        #expect(configuration.port == 5671)
        #expect(configuration.tls?.caCertificatePath == "/ca.pem")
        #expect(configuration.tls?.verifyPeer == false)
    }

    @Test(
        "bad URLs are refused with a reason that does not echo the password",
        arguments: [
            "http://u:secretpw@rabbit", "amqp://u:secretpw@/vhost", "amqp://u:secretpw@rabbit/a/b",
            "amqp://u:secretpw@rabbit?heartbeat=often", "amqp://u:secretpw@rabbit?colour=blue",
        ])
    func badURLs(url: String) {
        let error = #expect(throws: AMQPError.self) { try AMQPConfiguration(url: url) }
        #expect(error?.code == .invalidURL)
        #expect(error?.message.contains("secretpw") == false)
    }

    @Test("the redacted URL hides the password")
    func redaction() throws {
        let configuration = try AMQPConfiguration(url: "amqp://fan:hunter2@rabbit:5672/%2F")
        #expect(configuration.redactedURL == "amqp://fan:***@rabbit:5672/%2F")
    }

    @Test("backoff grows, is capped, and never hits zero")
    func backoff() {
        let backoff = AMQPConfiguration.Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        #expect(backoff.delay(attempt: 0) <= .milliseconds(100))
        #expect(backoff.delay(attempt: 0) >= .milliseconds(80))
        #expect(backoff.delay(attempt: 3) >= .milliseconds(640))
        for attempt in [10, 50, 1000] {
            #expect(backoff.delay(attempt: attempt) <= .seconds(2))
            #expect(backoff.delay(attempt: attempt) >= .milliseconds(1600))
        }
    }

    @Test("topology merge replaces same-named declarations")
    func topologyMerge() {
        let first = AMQPTopology(queues: [QueueSpec(name: "a"), QueueSpec(name: "b")])
        let second = AMQPTopology(queues: [QueueSpec(name: "b").messageTTL(milliseconds: 5)])
        let merged = first.merging(second)
        #expect(merged.queues.map(\.name) == ["a", "b"])
        #expect(merged.queues[1].arguments["x-message-ttl"] == .int(5))
    }
}

@Suite("Field tables through rabbitmq-c's C types")
struct FieldTableTests {
    @Test("every kind of value survives encoding to C and back")
    func roundTrip() {
        let table: AMQPTable = [
            "string": "text ✓", "int": .int(-42), "big": .int(Int64.max), "bool": true, "double": .double(2.5),
            "bytes": .bytes(Data([0, 1, 2])), "time": .timestamp(1_700_000_000), "void": .void,
            "array": .array(["a", 1, .array([false])]), "table": .table(["inner": .table(["deep": "x"])]),
            "empty": .table([:]),
        ]
        let arena = CArena()
        #expect(CDecoding.table(arena.table(table)) == table)
    }

    @Test("message properties survive encoding to C and back")
    func properties() {
        let properties = AMQPMessageProperties(
            contentType: "application/json", headers: ["x-reason": "test"], deliveryMode: 2, priority: 3,
            correlationID: "c", replyTo: "r", expiration: "1000", messageID: "m", timestamp: 12, type: "t",
            appID: "a")
        let arena = CArena()
        #expect(CDecoding.properties(arena.properties(properties)) == properties)
        #expect(CDecoding.properties(arena.properties(AMQPMessageProperties())) == AMQPMessageProperties())
    }
}

@Suite("libcurl through its shim")
struct CurlShimTests {
    @Test("the linked libcurl speaks IMAP and IMAPS, and the typed setopt wrappers work")
    func imapSupport() throws {
        let info = try #require(curl_version_info(fanfic_curlversion_now))
        var protocols: [String] = []
        var cursor = info.pointee.protocols
        while let name = cursor?.pointee {
            protocols.append(String(cString: name))
            cursor = cursor?.advanced(by: 1)
        }
        #expect(protocols.contains("imap"))
        #expect(protocols.contains("imaps"))

        let handle = try #require(curl_easy_init())
        defer { curl_easy_cleanup(handle) }
        #expect(fanfic_curl_setopt_long(handle, CURLOPT_TIMEOUT, 5) == CURLE_OK)
        #expect(fanfic_curl_setopt_string(handle, CURLOPT_URL, "imap://127.0.0.1:1/INBOX") == CURLE_OK)
        #expect(fanfic_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, 500) == CURLE_OK)
        // Nothing listens on port 1: a refused connection, reported as a curl error, not a crash.
        #expect(curl_easy_perform(handle) == CURLE_COULDNT_CONNECT)
    }
}
