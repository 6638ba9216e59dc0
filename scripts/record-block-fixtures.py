#!/usr/bin/env python3
"""Records FanFicFare's real output when a site blocks it, as fixtures for OutcomeClassifierTests.

FanFicFare's offline test sites never block, so this runs the real `fanficfare` against a plain
http adapter (libraryofmoria.com) through a local HTTP proxy that answers like a blocking site:
429 with and without Retry-After, a Cloudflare 403 challenge, 503, Cloudflare's 525; and with
the proxy refusing or never answering, and with no proxy at all (the name does not resolve
here). Run from the repository's root: python3 scripts/record-block-fixtures.py
"""
import http.server
import os
import pathlib
import socket
import subprocess
import threading

URL = "http://www.libraryofmoria.com/a/viewstory.php?sid=1234"
FIXTURES = pathlib.Path("Tests/DownloadTests/Fixtures")
# Fewer of FanFicFare's own retries (it backs off 4, 8, 16 s): the output is the same.
OPTIONS = ["-o", "max_request_retries=1", "-o", "connect_timeout=3", "-o", "slow_down_sleep_time=0"]


def answering(status, headers, body):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = body.encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def serve(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def silent_listener():
    """Accepts connections and never answers: a timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []

    def accept():
        while True:
            held.append(listener.accept())

    threading.Thread(target=accept, daemon=True).start()
    return listener


def closed_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def record(name, proxy):
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    if proxy:
        env["http_proxy"] = proxy
    work = pathlib.Path("/tmp/record-block-fixtures") / name
    work.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["fanficfare", "--non-interactive", *OPTIONS, "--", URL], cwd=work, env=env, capture_output=True,
        text=True, timeout=300)
    folder = FIXTURES / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stdout.txt").write_text(result.stdout)
    (folder / "stderr.txt").write_text(result.stderr)
    (folder / "exit.txt").write_text(f"{result.returncode}\n")
    last = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
    print(f"{name}: exit {result.returncode}: {last[0][:120]}")


cloudflare = {"Server": "cloudflare", "CF-RAY": "8f00000000000000-AMS", "cf-mitigated": "challenge"}
answers = {
    "site-throttled-retry-after": (429, {"Retry-After": "2"}, "Too many requests"),
    "site-throttled": (429, {}, "Too many requests"),
    "cloudflare-challenge": (403, cloudflare, "<title>Just a moment...</title>"),
    "site-unavailable": (503, {"Retry-After": "1"}, "Service Unavailable"),
    "cloudflare-525": (525, {"Server": "cloudflare"}, "SSL handshake failed"),
}
for name, (status, headers, body) in answers.items():
    server = serve(answering(status, headers, body))
    record(name, f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
record("connection-refused", f"http://127.0.0.1:{closed_port()}")
listener = silent_listener()
record("connection-timeout", f"http://127.0.0.1:{listener.getsockname()[1]}")
record("site-unreachable", None)
