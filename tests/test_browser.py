"""The built site in Chromium (Playwright), both editions, served from 127.0.0.1 only.

Uses the Debian Chromium (``/usr/bin/chromium``; ``RL2LLM_CHROMIUM`` names another),
never a browser Playwright downloads. Full-page screenshots of Lecture 1 go to
``<build>/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("RL2LLM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LECTURE1 = "book/lectures/01-mdps-bellman.html"
PAGES = {
    "intro": "book/intro.html",
    "lecture1": LECTURE1,
    "status": "book/status.html",
    "glossary": "book/glossary.html",
    "concept-map": "book/concept-map.html",
}
EDITIONS = {"scientist": "", "manager": "manager/"}
TIMEOUT_MS = 30_000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def server(built_site):
    """An HTTP server on 127.0.0.1 (a free port) serving <build>/html; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(built_site / "html"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set RL2LLM_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


class Watched:
    """A page with everything it logged, threw and requested."""

    def __init__(self, page):
        self.page = page
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.console_errors.append(
            f"{message.text} ({message.location.get('url', '')})"))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: self.failed.append(f"{request.url}: {request.failure}"))

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests
                if urlsplit(url).scheme not in ("data", "blob", "about") and urlsplit(url).hostname != "127.0.0.1"]

    def assert_clean(self, what: str) -> None:
        assert not self.foreign_requests(), f"{what}: requests to other hosts: {self.foreign_requests()}"
        assert not self.page_errors, f"{what}: JavaScript errors: {self.page_errors}"
        assert not self.console_errors, f"{what}: console errors: {self.console_errors}"
        # a load the browser cancels because the page navigated away (net::ERR_ABORTED) is not a failure
        failed = [entry for entry in self.failed if "net::ERR_ABORTED" not in entry]
        assert not failed, f"{what}: failed requests: {failed}"


@pytest.fixture
def watched(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield Watched(page)
    context.close()


def _wait_for_math(page) -> int:
    page.wait_for_function("() => window.MathJax && window.MathJax.startup && window.MathJax.startup.promise")
    page.evaluate("() => MathJax.startup.promise.then(() => true)")  # the first typeset is done
    page.wait_for_selector("mjx-container", state="attached")
    return page.locator("mjx-container").count()


def _title(page) -> str:
    return page.locator("main h1").first.inner_text().replace("#", "").replace("¶", "").strip()


@pytest.mark.parametrize("edition", sorted(EDITIONS))
@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_cleanly_and_offline(server, watched, edition, name):
    page = watched.page
    url = server + EDITIONS[edition] + PAGES[name]
    response = page.goto(url, wait_until="networkidle")
    assert response is not None and response.ok, f"{url}: HTTP {response and response.status}"
    assert page.locator("main h1").count() >= 1, f"{url}: no title"
    if page.locator("mjx-container, .math").count():
        _wait_for_math(page)
        page.wait_for_load_state("networkidle")  # fonts MathJax asked for
    watched.assert_clean(f"{edition} {name}")


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_lecture1_math_renders(server, watched, built_site, edition):
    """The scientist edition's math typesets without TeX errors; the manager edition has none to typeset."""
    page = watched.page
    page.goto(server + EDITIONS[edition] + LECTURE1, wait_until="networkidle")
    if edition == "manager":
        assert page.locator(".math, mjx-container").count() == 0, "math in the manager edition of Lecture 1"
    else:
        assert _wait_for_math(page) > 0, "no typeset math on Lecture 1"
    errors = page.locator("mjx-merror")
    assert errors.count() == 0, "TeX errors: " + "; ".join(
        errors.nth(i).get_attribute("data-mjx-error") or errors.nth(i).inner_text() for i in range(errors.count()))
    page.wait_for_load_state("networkidle")
    screenshots = built_site / "screenshots"
    screenshots.mkdir(exist_ok=True)
    page.screenshot(path=str(screenshots / f"lecture1-{edition}.png"), full_page=True)
    watched.assert_clean(f"{edition} Lecture 1")


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_search_finds_lecture1(server, watched, edition):
    page = watched.page
    page.goto(server + EDITIONS[edition] + "search.html?q=Bellman", wait_until="networkidle")
    result = page.locator("#search-results a[href*='01-mdps-bellman']").first
    result.wait_for(state="attached")
    href = result.get_attribute("href")
    assert "01-mdps-bellman" in href
    watched.assert_clean(f"{edition} search")


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_edition_link_leads_to_the_same_chapter(server, watched, edition):
    page = watched.page
    page.goto(server + EDITIONS[edition] + LECTURE1, wait_until="networkidle")
    title = _title(page)
    other = "manager" if edition == "scientist" else "scientist"
    link = page.locator(".edition-strip a.edition-switch-link")
    assert link.count() == 1
    assert other in link.inner_text()
    with page.expect_navigation():
        link.click()
    page.wait_for_load_state("networkidle")
    assert page.url.split("?")[0].split("#")[0] == server + EDITIONS[other] + LECTURE1
    assert _title(page) == title
    assert page.locator(f".edition-strip-{other}").count() == 1, "the page reached is not the other edition"
    watched.assert_clean(f"{edition} -> {other} edition link")


def test_manager_lecture1_shows_no_code(server, watched):
    page = watched.page
    page.goto(server + "manager/" + LECTURE1, wait_until="networkidle")
    assert page.locator(".cell_input").count() == 0
    outside = page.evaluate(
        "() => [...document.querySelectorAll('div.highlight')].filter(e => !e.closest('.cell_output')).length")
    assert outside == 0, f"{outside} code blocks outside cell outputs in the manager edition"
    assert page.locator(".cell_output").count() > 0, "the manager edition shows no executed output"
    # and the scientist edition does show the code, so the check above can fail
    page.goto(server + LECTURE1, wait_until="networkidle")
    assert page.locator(".cell_input").count() > 0


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_edition_link_keeps_the_section_being_read(server, watched, edition):
    """Scrolled to a section, the reader switching editions lands on that section, not at the top."""
    page = watched.page
    other = "manager" if edition == "scientist" else "scientist"
    ids = "() => [...document.querySelectorAll('main section[id]')].map(s => s.id)"
    page.goto(server + EDITIONS[other] + LECTURE1, wait_until="networkidle")
    theirs = set(page.evaluate(ids))
    page.goto(server + EDITIONS[edition] + LECTURE1, wait_until="networkidle")
    if page.locator(".math").count():
        _wait_for_math(page)  # typesetting moves the sections; read the page as a reader would, after it
        page.wait_for_load_state("networkidle")
    ours = page.evaluate(ids)
    shared = [section for section in ours[2:] if section in theirs]
    assert shared, f"no section of Lecture 1 is in both editions: {ours} / {sorted(theirs)}"
    target = shared[len(shared) // 2]
    # a little into the section, as a reader would be (instant: the theme scrolls smoothly)
    page.evaluate(f"""() => {{
        document.getElementById({target!r}).scrollIntoView({{behavior: "instant"}});
        window.scrollBy({{top: 40, behavior: "instant"}});
    }}""")
    page.wait_for_timeout(300)
    sticky = page.locator("a.edition-switch-sticky")
    assert sticky.count() == 1 and sticky.is_visible(), "no edition switch in view while reading"
    box = sticky.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= 120, f"the edition switch is cut off or misplaced: {box}"
    assert other in sticky.inner_text().lower()
    box = sticky.bounding_box()  # a real mouse click where it is (Playwright's click() would scroll first)
    with page.expect_navigation():
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_load_state("networkidle")
    assert page.url.endswith(f"#{target}"), f"landed on {page.url}, not on section {target}"
    assert page.url.split("#")[0] == server + EDITIONS[other] + LECTURE1
    if page.locator(".math").count():
        _wait_for_math(page)
    page.wait_for_timeout(500)  # the page puts the section back at the top once math and images are in
    top = page.evaluate(f"() => document.getElementById({target!r}).getBoundingClientRect().top")
    assert -5 <= top <= 200, f"section {target} is at {top} px, not at the top of the window"
    watched.assert_clean(f"{edition} -> {other}, section {target}")
