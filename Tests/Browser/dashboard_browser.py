#!/usr/bin/env python3
"""Drives the dashboard in headless Chromium against a live system (real broker, coordinator,
workers, FanFicFare's offline test sites), as a person would: logs in, adds URLs, watches them
appear under Now and finish under History without reloading, requeues a failed task. Saves a
screenshot of each page in ARTIFACTS. Exits non-zero, naming the step, when a step fails.

Environment: DASHBOARD_URL (http://127.0.0.1:PORT), DASHBOARD_PASSWORD_FILE (the password is
never on a command line), ARTIFACTS (a folder), CHROMIUM (default /usr/bin/chromium).
Run by RunCommandTests' browser test; needs `pip install playwright` and Debian's chromium.
"""
import os
import sys
import time

from playwright.sync_api import sync_playwright, expect

BASE = os.environ["DASHBOARD_URL"].rstrip("/")
PASSWORD = open(os.environ["DASHBOARD_PASSWORD_FILE"]).read().strip()
ARTIFACTS = os.environ["ARTIFACTS"]
TIMEOUT_MS = 120_000

# Two slow stories on one site (FanFicFare's test sid 670... sleeps a second per chapter): the
# first runs for about ten seconds while the second waits for the site, long enough to be seen.
SLOW = ["http://test1.com?sid=670", "http://test1.com?sid=6702"]
# Does not exist: fails for good, goes to fanfic.failed.
MISSING = "http://test2.com?sid=666"


def step(name):
    print(f"step: {name}", flush=True)


def mark_page(page):
    """A value that lives as long as the document: a reload would lose it."""
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page, where):
    if page.evaluate("window.__notReloaded") is not True:
        raise AssertionError(f"{where}: the page was reloaded")


def shot(page, name):
    path = os.path.join(ARTIFACTS, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}", flush=True)


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        # expect() has a timeout of its own (5 s by default): every wait here is for the live
        # system, bounded by the same deadline.
        expect.set_options(timeout=TIMEOUT_MS)
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        step("a page without a session shows the login form")
        response = page.goto(BASE + "/")
        assert response.status == 401, f"expected 401 before logging in, got {response.status}"
        shot(page, "login")
        page.fill("#password", "wrong password")
        page.click("button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("wrong password")

        step("log in")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("header nav a[aria-current=page]")).to_have_text("Now")
        expect(page.locator("#live")).to_have_text("live")
        mark_page(page)

        step("add URLs: two slow stories, one that does not exist, one that is not a URL")
        page.fill("#add-urls", "\n".join(SLOW + [MISSING, "not a url"]))
        page.click("#add-form button[type=submit]")
        expect(page.locator("#add-result .answer.queued")).to_have_count(3)
        expect(page.locator("#add-result .answer.refused")).to_have_count(1)

        step("the slow story appears under Now, running, without a reload")
        expect(page.locator("#content")).to_contain_text(SLOW[0])
        assert_not_reloaded(page, "Now")
        shot(page, "now")

        step("History: the slow stories finish, without a reload")
        page.click("header nav a[href='/history']")
        mark_page(page)
        for url in SLOW:
            row = page.locator("#content tr", has_text=url)
            expect(row.locator(".outcome").first).to_have_text("succeeded")
        assert_not_reloaded(page, "History")
        page.locator("#content tr", has_text=SLOW[0]).locator("summary").first.click()
        expect(page.locator("#content details[open] ol.timeline")).to_contain_text("task.succeeded")
        shot(page, "history")

        step("Failed: the missing story is listed; requeue it")
        page.click("header nav a[href='/failed']")
        mark_page(page)
        row = page.locator("#content tr", has_text=MISSING)
        expect(row).to_have_count(1)
        shot(page, "failed")
        row.locator("button[data-action=failed-requeue]").click()

        step("the requeued task runs again: a second run of it in History")
        page.goto(BASE + "/history?q=sid%3D666")
        mark_page(page)
        expect(page.locator("#content tbody tr", has_text=MISSING)).to_have_count(2)
        assert_not_reloaded(page, "History after the requeue")

        step("Sites: per-site figures")
        page.click("header nav a[href='/sites']")
        expect(page.locator("#content tr", has_text="test1.com")).to_have_count(1)
        shot(page, "sites")

        step("log out: the pages ask for the password again")
        page.click("#logout")
        expect(page.locator("#password")).to_be_visible()

        if errors:
            raise AssertionError(f"script errors on the pages: {errors}")
        browser.close()
    print("browser test passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - the message is the test's failure
        print(f"FAILED: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
