"""The status page in a real browser: headless Chromium (Debian's) driven by Playwright.

It loads the page on a phone-sized screen, checks the server's name and counts, reaches the
search box with the keyboard through its label, searches, sees every result with the badge
saying the browser checked its signature, then has one result tampered in transit (its id kept
consistent, so only the signature can catch it) and sees that result flagged. Screenshots go
to the paths given. `server/tests/status_page.rs` runs it against a real server.

Usage: status_page.py URL EXPECTED_HITS SCREENSHOT_OK SCREENSHOT_TAMPERED
"""

import base64
import hashlib
import os
import sys

from playwright.sync_api import expect, sync_playwright


def main():
    url, hits, shot_ok, shot_bad = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    chromium = os.environ.get("SOUK_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 390, "height": 844})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        # Locator assertions, not wait_for_function: the page's CSP forbids eval, Playwright's too.
        expect(page.locator("#name")).to_have_text("Browser test")
        expect(page.locator("#count-listings")).to_have_text(str(hits))
        assert "peer-to-peer off" in page.text_content("#peer-id")
        # No horizontal scrolling on a phone-sized screen.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")

        # Keyboard: the first Tab reaches the skip link, which leads to the search box.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        box = page.get_by_label("Search listings")
        box.focus()
        page.keyboard.type("teapot")
        page.keyboard.press("Enter")
        expect(page.locator("#results li .badge")).to_have_count(hits, timeout=30000)
        checks = page.eval_on_selector_all("#results .badge", "els => els.map(e => e.dataset.check)")
        assert checks == ["ok"] * hits, checks
        assert "signature verified in your browser" in page.text_content("#results li .badge")
        titles = page.eval_on_selector_all("#results .title", "els => els.map(e => e.textContent)")
        assert all("teapot" in t.lower() for t in titles), titles
        page.screenshot(path=shot_ok, full_page=True)

        # A man in the middle changes one byte of the first hit's signature and fixes up its id.
        def tamper(route):
            response = route.fetch()
            body = response.json()
            first = body["hits"][0]
            envelope = bytearray(base64.b64decode(first["envelope"]))
            envelope[-1] ^= 1
            first["envelope"] = base64.b64encode(bytes(envelope)).decode()
            first["id"] = hashlib.sha256(envelope).hexdigest()
            route.fulfill(response=response, json=body)

        page.route("**/api/v1/listings/search*", tamper)
        box.fill("teapot")
        page.keyboard.press("Enter")
        expect(page.locator("#search-status")).to_contain_text("1 flagged", timeout=30000)
        checks = page.eval_on_selector_all("#results .badge", "els => els.map(e => e.dataset.check)")
        assert checks == ["bad"] + ["ok"] * (hits - 1), checks
        flagged = page.text_content("#results li .badge")
        assert "signature does not verify" in flagged, flagged
        assert "1 flagged" in page.text_content("#search-status")
        page.screenshot(path=shot_bad, full_page=True)
        assert not errors, errors
        browser.close()
    print("STATUS_PAGE_OK", hits)


if __name__ == "__main__":
    main()
