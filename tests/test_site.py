"""Static checks of the real book, both editions, built cold once per session (``built_site``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

pytestmark = pytest.mark.slow

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Lines with WARNING in the build log that are not the book's: ipykernel says this on
#: stderr each time a kernel starts (nbclient's kernels talk over local TCP).
KNOWN_LOG_WARNINGS = (
    "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.",
)
#: Tags whose attribute makes the browser load something.
LOADING_ATTRIBUTES = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src",
                      "video": "src", "audio": "src", "embed": "src", "object": "data", "track": "src"}
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)""", re.I)
_CSS_IMPORT = re.compile(r"""@import\s+['"]([^'"]+)""", re.I)


def _is_external(url: str) -> bool:
    parts = urlsplit(url.strip())
    return parts.scheme in ("http", "https") or url.strip().startswith("//")


@pytest.fixture(scope="module")
def site(built_site) -> Path:
    return built_site / "html"


def _pages(root: Path, exclude: Path | None = None) -> list[Path]:
    """The HTML pages under ``root`` (not the themes' Jinja macro files in _static/)."""
    pages = sorted(page for page in root.rglob("*.html") if "_static" not in page.relative_to(root).parts)
    if exclude is not None:
        pages = [page for page in pages if exclude not in page.parents]
    return pages


def _is_code_block(element) -> bool:
    """A Pygments code block (``div.highlight`` or its ``div.highlight-<language>`` wrapper)."""
    return any(cls == "highlight" or cls.startswith("highlight-") for cls in element.get("class", []))


@pytest.fixture(scope="module")
def scientist_pages(site) -> list[Path]:
    return _pages(site, exclude=site / "manager")


@pytest.fixture(scope="module")
def manager_pages(site) -> list[Path]:
    return _pages(site / "manager")


def _soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf8"), "html.parser")


def test_build_log_has_no_warnings(built_site):
    log_path = built_site / "build.log"
    if not log_path.exists():
        pytest.skip(f"no build log in {built_site} (RL2LLM_SITE points to a build made elsewhere)")
    log = _ANSI.sub("", log_path.read_text(errors="replace"))
    assert log.count("build succeeded") == 2, "both editions should report 'build succeeded'"
    assert "[make] done:" in log
    warnings = [line for line in log.splitlines()
                if "WARNING" in line and not any(known in line for known in KNOWN_LOG_WARNINGS)]
    assert not warnings, "warnings in the build log:\n" + "\n".join(warnings)


def test_both_editions_have_the_same_pages(site, scientist_pages, manager_pages):
    """Every page of the scientist edition is in the manager edition.

    The one exception: an index Sphinx generates from the content of one edition (such
    as sphinx-proof's ``prf-prf.html``, when every theorem is scientist-only) has no
    source page and no edition link, so no reader is sent to its missing twin.
    """
    scientist = {page.relative_to(site) for page in scientist_pages}
    manager = {page.relative_to(site / "manager") for page in manager_pages}
    assert Path("book/lectures/01-mdps-bellman.html") in scientist
    missing = sorted(str(page) for page in scientist - manager if _soup(site / page).select(".edition-strip"))
    assert not missing, f"pages of the scientist edition missing from the manager edition: {missing}"
    extra = sorted(str(page) for page in manager - scientist
                   if _soup(site / "manager" / page).select(".edition-strip"))
    assert not extra, f"pages only in the manager edition: {extra}"


def test_every_source_page_has_an_edition_link_that_resolves(site, scientist_pages, manager_pages):
    problems = []
    for page in scientist_pages + manager_pages:
        soup = _soup(page)
        if not soup.select(".edition-strip"):
            continue
        link = soup.select_one(".edition-strip a.edition-switch-link")
        if link is None:
            problems.append(f"{page.relative_to(site)}: no edition link")
            continue
        target = (page.parent / urlsplit(link["href"]).path).resolve()
        if not target.exists():
            problems.append(f"{page.relative_to(site)}: the edition link {link['href']} leads nowhere")
        if "lectures" in page.parts and not soup.select(".edition-strip .reading-time"):
            problems.append(f"{page.relative_to(site)}: a chapter without its reading time")
        if "lectures" in page.parts and site / "manager" not in page.parents:
            notebook = soup.select_one(".edition-strip a.executed-notebook")
            if notebook is None or not (page.parent / urlsplit(notebook["href"]).path).resolve().exists():
                problems.append(f"{page.relative_to(site)}: no executed notebook to download")
    lectures = [page for page in scientist_pages if "lectures" in page.parts]
    assert lectures, "no lecture pages"
    assert not problems, "\n".join(problems)


def test_manager_pages_show_no_code(site, manager_pages):
    problems = []
    for page in manager_pages:
        soup = _soup(page)
        name = page.relative_to(site)
        if soup.select(".cell_input"):
            problems.append(f"{name}: {len(soup.select('.cell_input'))} cell_input")
        for block in soup.find_all(_is_code_block):
            if block.find_parent(class_="cell_output") is None:
                classes = " ".join(block.get("class", []))
                problems.append(f"{name}: a code block ({classes}) outside a cell output: "
                                f"{block.get_text()[:80]!r}")
    assert not problems, "\n".join(problems)


def test_scientist_edition_shows_the_code(site):
    lecture = _soup(site / "book" / "lectures" / "01-mdps-bellman.html")
    assert lecture.select(".cell_input"), "the scientist edition of Lecture 1 shows no code cell"


def test_pages_load_nothing_from_the_internet(site, scientist_pages, manager_pages):
    """Every script, stylesheet, image, frame a page loads is local, and exists."""
    problems = []
    stylesheets = set()
    for page in scientist_pages + manager_pages:
        soup = _soup(page)
        name = page.relative_to(site)
        for tag, attribute in LOADING_ATTRIBUTES.items():
            for element in soup.find_all(tag):
                url = element.get(attribute)
                if not url:
                    continue
                if tag == "link" and not set(element.get("rel", [])) & {"stylesheet", "preload", "icon",
                                                                        "modulepreload", "prefetch"}:
                    continue  # navigation links (next, prev, search, index) load nothing
                if _is_external(url):
                    problems.append(f"{name}: <{tag} {attribute}={url!r}>")
                    continue
                parts = urlsplit(url)
                if parts.scheme == "data" or not parts.path:
                    continue
                target = (page.parent / parts.path).resolve()
                if not target.exists():
                    problems.append(f"{name}: <{tag} {attribute}={url!r}> points to a missing file")
                elif target.suffix == ".css":
                    stylesheets.add(target)
        for style in soup.find_all("style"):
            for url in _CSS_URL.findall(style.get_text()) + _CSS_IMPORT.findall(style.get_text()):
                if _is_external(url):
                    problems.append(f"{name}: inline style loads {url!r}")
    # every stylesheet under _static (whether or not a page links it), and what they import
    stylesheets |= set(site.rglob("_static/**/*.css"))
    for css in sorted(stylesheets):
        text = css.read_text(encoding="utf8", errors="replace")
        for url in _CSS_URL.findall(text) + _CSS_IMPORT.findall(text):
            if _is_external(url):
                problems.append(f"{css.relative_to(site)}: loads {url!r}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_no_inline_script_is_included_twice(site, scientist_pages, manager_pages):
    """A script declaring a ``const`` twice throws in the browser (see the extension's Sphinx 7.4 workaround)."""
    problems = []
    for page in scientist_pages + manager_pages:
        bodies = [script.string.strip() for script in _soup(page).find_all("script")
                  if not script.get("src") and script.get("type", "text/javascript") == "text/javascript"
                  and script.string and script.string.strip()]
        twice = sorted({body[:80] for body in bodies if bodies.count(body) > 1})
        if twice:
            problems.append(f"{page.relative_to(site)}: {twice}")
    assert not problems, "inline scripts included twice:\n" + "\n".join(problems)


def test_mathjax_is_the_vendored_copy(site, scientist_pages, manager_pages):
    """Every page with math loads MathJax, and always the copy in _static (the manager chapters have none)."""
    with_math = 0
    for page in scientist_pages + manager_pages:
        soup = _soup(page)
        scripts = [script.get("src", "") for script in soup.find_all("script")]
        mathjax = [src for src in scripts if "mathjax" in src.lower()]
        if soup.select(".math"):
            with_math += 1
            assert mathjax, f"{page}: math but no MathJax script"
        for src in mathjax:
            assert not _is_external(src) and (page.parent / urlsplit(src).path).resolve().exists(), src
    assert _soup(site / "book" / "lectures" / "01-mdps-bellman.html").select(".math"), \
        "Lecture 1 (scientist edition) has no math, so this test checks nothing"
    assert with_math


def test_manager_renders_the_scientist_execution(built_site, site):
    scientist = json.loads((site / "execution.json").read_text())
    manager = json.loads((site / "manager" / "execution.json").read_text())
    assert scientist["edition"] == "scientist" and manager["edition"] == "manager"
    assert "book/lectures/01-mdps-bellman" in scientist["notebooks"]
    assert set(manager["notebooks"]) == set(scientist["notebooks"]), \
        "the manager edition shows other notebooks than the scientist edition executed"
    assert manager["fingerprint"] == scientist["fingerprint"]
    assert manager["cache"] == scientist["cache"]
    failed = [name for name, data in scientist["notebooks"].items() if not data.get("succeeded")]
    assert not failed, f"notebooks that did not execute successfully: {failed}"
    log_path = built_site / "build.log"
    if log_path.exists():
        log = _ANSI.sub("", log_path.read_text(errors="replace"))
        manager_log = log.split("[make] building the manager edition", 1)[-1]
        assert "Executing notebook" not in manager_log, "the manager edition executed a notebook"


# --------------------------------------------------------------------------- the manager edition, mechanically

#: Symbols a manager is not asked to read (in prose, outputs, figure labels and legends of that edition).
SYMBOLS = set("γεπΣ∑‖∞≤≥∈∀∃λθ∇αβδ")
#: Phrases that point a reader at something the manager edition does not have.
DANGLING = ("scientist edition", "as the theorem says", "the code above", "the code below", "see the code",
            "in the code", "the proof", "the derivation")


def _book_repository() -> str:
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text())
    url = (config.get("repository") or {}).get("url", "")
    return url.split("://", 1)[-1].rstrip("/")


#: The book's own repository (its source, code included): no manager page links to it.
#: (Links to papers' or other projects' repositories in the bibliography are citations.)
BOOK_REPOSITORY = _book_repository()


def _manager_body(page: Path) -> BeautifulSoup:
    """A manager page's article, without the edition strip and the provenance line (which may name editions)."""
    soup = _soup(page)
    article = soup.select_one("article") or soup
    for furniture in article.select(".edition-strip, p.provenance"):
        furniture.decompose()
    return article


def test_every_notebook_download_is_the_readers_notebook(site, scientist_pages):
    """Both the theme's download button and the strip's link serve the reader's notebook: solutions
    gathered at the end, the build's checks left out."""
    served = 0
    for page in scientist_pages:
        for a in _soup(page).select('a[href$=".ipynb"]'):
            target = (page.parent / a["href"]).resolve()
            assert target.is_file(), f"{page.relative_to(site)} links a notebook that is not there: {a['href']}"
            cells = json.loads(target.read_text(encoding="utf8"))["cells"]
            tags = [c.get("metadata", {}).get("tags", []) for c in cells]
            assert not any("check" in t for t in tags), f"{a['href']} contains the build's checks"
            solutions = [i for i, t in enumerate(tags) if "solution" in t]
            if solutions:
                heading = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                               and "".join(c["source"]).startswith("## Solutions"))
                assert heading < min(solutions), f"{a['href']}: a solution sits before the Solutions heading"
            served += 1
    assert served >= 4, "the chapters offer their notebooks for download"


def test_manager_edition_reaches_no_code(site, manager_pages):
    """No source download, no notebook, no launch button, no link to the repository or a page's source."""
    assert not (site / "manager" / "_sources").exists(), "the manager edition ships the chapters' sources"
    assert not list((site / "manager").rglob("*.ipynb")), "the manager edition ships notebooks"
    problems = []
    for page in manager_pages:
        soup = _soup(page)
        name = page.relative_to(site)
        for element in soup.find_all(["a", "button"]):
            href = element.get("href", "") or ""
            label = " ".join([element.get_text(" ", strip=True), element.get("title", "") or "",
                              element.get("data-bs-title", "") or "", element.get("aria-label", "") or ""]).lower()
            if re.search(r"\.(ipynb|md|py)($|[?#])|_sources/|binder|colab|/edit/", href) or (
                    BOOK_REPOSITORY and BOOK_REPOSITORY in href):
                problems.append(f"{name}: link to {href!r}")
            if re.search(r"download|launch|binder|edit this page|source repository|open an issue", label):
                problems.append(f"{name}: a control {label.strip()[:60]!r}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_manager_chapters_point_at_nothing_they_lack(site, manager_pages):
    """Every in-page or cross-page anchor exists in the manager edition; no prose points at the other edition."""
    problems = []
    for page in manager_pages:
        name = page.relative_to(site)
        body = _manager_body(page)
        text = body.get_text(" ", strip=True).lower()
        for phrase in DANGLING:
            if phrase in text:
                problems.append(f"{name}: says {phrase!r}")
        for link in body.find_all("a", href=True):
            parts = urlsplit(link["href"])
            if parts.scheme or not parts.fragment:
                continue
            target = (page.parent / parts.path).resolve() if parts.path else page
            if not target.exists() or not _soup(target).find(id=parts.fragment):
                problems.append(f"{name}: link to {link['href']!r}, which the manager edition does not have")
    assert not problems, "\n".join(problems)


def test_manager_chapters_use_words_not_symbols(site):
    """Manager chapters: no math markup, and no symbols in prose, printed outputs or figure cells' labels."""
    problems = []
    for page in sorted((site / "manager" / "book" / "lectures").glob("*.html")):
        name = page.relative_to(site)
        body = _manager_body(page)
        if body.select(".math, span.math, div.math, mjx-container"):
            problems.append(f"{name}: {len(body.select('.math, mjx-container'))} pieces of math")
        found = sorted(set(body.get_text()) & SYMBOLS)
        if found:
            problems.append(f"{name}: symbols {''.join(found)}")
    assert not problems, "\n".join(problems)


def test_status_page_counts_claims_and_times(site):
    for base in (site, site / "manager"):
        page = _soup(base / "book" / "status.html")
        table = page.select_one("table.execution-status")
        assert table is not None, f"{base}: no execution-status table"
        rows = {row.select("td")[0].get_text(strip=True): [td.get_text(strip=True) for td in row.select("td")]
                for row in table.select("tbody tr")}
        assert any("Bellman" in title for title in rows), rows
        for title, cells in rows.items():
            assert int(cells[-1]) >= 1, f"{title}: no claims checked"
        text = page.get_text(" ", strip=True)
        assert re.search(r"\d+ claims checked by the build|the build checked \d+ statements", text), text[:1500]
