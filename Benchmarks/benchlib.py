"""Helpers the benchmark scripts share (they run from the repository root)."""
import sqlite3
import sys
import time


def rss_kb(pid):
    """Resident memory of a process in KiB, 0 once it is gone."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_for(what, condition, timeout=120):
    """Polls `condition` until it holds; exits with a message after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting until {what}")


def book_count(library):
    """Books in a Calibre library folder, read-only (0 while it cannot be read)."""
    try:
        db = sqlite3.connect(f"file:{library}/metadata.db?mode=ro", uri=True)
        count = db.execute("select count(*) from books").fetchone()[0]
        db.close()
        return count
    except sqlite3.Error:
        return 0


def smaps_rollup_kb(pid):
    """RSS, PSS and private memory (clean + dirty) of a process in KiB, from smaps_rollup."""
    fields = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1])
    return {
        "Rss": fields["Rss"],
        "Pss": fields["Pss"],
        "Private": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def wait_until_assigning(run_log, workers):
    """Waits until `fanfic run` (its output in `run_log`) has every worker admitted and its
    coordinator assigning."""
    log = lambda: open(run_log).read()
    wait_for("every worker is admitted", lambda: log().count("admitted; consuming") >= workers)
    wait_for("the coordinator is assigning", lambda: "table rebuilt" in log())
