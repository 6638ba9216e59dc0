import Foundation
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A real Dovecot for the ingester tests, started once per test run from a config of our own
/// (no systemd): plain IMAP and IMAPS on loopback, a self-signed certificate valid for
/// 127.0.0.1, Maildirs under a scratch folder, users `user1` ... `user20` with password `secret`.
final class TestDovecot: @unchecked Sendable {
    static let shared: TestDovecot? = try? TestDovecot()

    let directory: URL
    let imapPort: Int
    let imapsPort: Int
    let password = "secret"
    private let pid: pid_t
    private let lock = NSLock()
    private var nextUser = 0

    var certificate: String { directory.appendingPathComponent("cert.pem").path }

    private init() throws {
        directory = URL(fileURLWithPath: "/tmp/fanfic-dovecot-\(getpid())")
        try? FileManager.default.removeItem(at: directory)
        for folder in ["run", "state", "mail"] {
            try FileManager.default.createDirectory(
                at: directory.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        chmod(directory.appendingPathComponent("mail").path, 0o777)
        imapPort = FreePort.pick(in: 10_000...14_999, alsoFree: [5000])
        imapsPort = imapPort + 5000
        let path = directory.path
        let certificate = try ChildProcess.run([
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(path)/key.pem", "-out",
            "\(path)/cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ])
        guard certificate.status == 0 else { throw TestFailure("openssl: \(certificate.stderr)") }
        let users = (1...20).map { "user\($0):{PLAIN}secret" }.joined(separator: "\n")
        try (users + "\n").write(toFile: "\(path)/passwd", atomically: true, encoding: .utf8)
        try """
        base_dir = \(path)/run
        state_dir = \(path)/state
        log_path = \(path)/dovecot.log
        protocols = imap
        listen = 127.0.0.1
        ssl = yes
        ssl_cert = <\(path)/cert.pem
        ssl_key = <\(path)/key.pem
        disable_plaintext_auth = no
        auth_mechanisms = plain login
        mail_location = maildir:\(path)/mail/%u
        passdb {
          driver = passwd-file
          args = scheme=PLAIN username_format=%u \(path)/passwd
        }
        userdb {
          driver = static
          args = uid=nobody gid=nogroup home=\(path)/mail/%u
        }
        service imap-login {
          inet_listener imap {
            address = 127.0.0.1
            port = \(imapPort)
          }
          inet_listener imaps {
            address = 127.0.0.1
            port = \(imapsPort)
            ssl = yes
          }
        }
        default_internal_user = nobody
        default_login_user = nobody

        """.write(toFile: "\(path)/dovecot.conf", atomically: true, encoding: .utf8)
        pid = try ChildProcess.spawn(
            ["dovecot", "-F", "-c", "\(path)/dovecot.conf"], stdout: "\(path)/stdout", stderr: "\(path)/stderr",
            newProcessGroup: true)
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if (try? ChildProcess.run(["curl", "-s", "imap://127.0.0.1:\(imapPort)/", "-u", "user1:secret"]))?.status
                == 0
            {
                return
            }
            usleep(50_000)
        }
        throw TestFailure(
            "dovecot did not start: \((try? String(contentsOfFile: "\(path)/dovecot.log", encoding: .utf8)) ?? "")")
    }

    deinit {
        kill(-pid, SIGTERM)
    }

    /// A mailbox no other test uses.
    func freshUser() -> String {
        lock.withLock {
            nextUser += 1
            return "user\(nextUser)"
        }
    }

    /// Delivers a message unseen into the user's INBOX (Maildir `new/`, as a delivery agent does).
    func deliver(_ message: Data, to user: String) throws {
        let maildir = directory.appendingPathComponent("mail/\(user)")
        for folder in ["new", "cur", "tmp"] {
            let url = maildir.appendingPathComponent(folder)
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            chmod(url.path, 0o777)
        }
        chmod(maildir.path, 0o777)
        let name = "\(Int(Date().timeIntervalSince1970)).\(UUID().uuidString).test"
        let file = maildir.appendingPathComponent("new/\(name)")
        try message.write(to: file)
        chmod(file.path, 0o666)
    }

    /// Messages of the user's INBOX and whether each is seen, from the Maildir file names.
    func seenStates(of user: String) -> [Bool] {
        let maildir = directory.appendingPathComponent("mail/\(user)")
        let fresh =
            (try? FileManager.default.contentsOfDirectory(atPath: maildir.appendingPathComponent("new").path)) ?? []
        let current =
            (try? FileManager.default.contentsOfDirectory(atPath: maildir.appendingPathComponent("cur").path)) ?? []
        return fresh.map { _ in false }
            + current.map { name in
                guard let flags = name.split(separator: ",").last, name.contains(":2,") else { return false }
                return flags.contains("S")
            }
    }
}
