"""The build machinery on a tiny fixture book: the execution cache, the two editions, the markers.

Each test builds a fixture book (an intro page, three chapters and a status page)
with the real ``make.py`` and the real extension in ``book/_ext``. The fixture has a
small package of its own, ``fixturepkg``: chapter alpha imports ``fixturepkg.alpha``,
chapter beta imports ``fixturepkg.beta``, both of which import ``fixturepkg.base``;
chapter gamma imports nothing from it. Every chapter's first cell appends a line to a
counter file, so the tests can tell exactly which chapters executed. A build of the
fixture takes a few seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from bs4 import BeautifulSoup

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = ("01-alpha", "02-beta", "03-gamma")


# --------------------------------------------------------------------------- the fixture book


#: Sphinx settings that name files or folders of the repository (relative to its root).
PATH_SETTINGS = ("html_static_path", "html_extra_path", "html_favicon", "html_logo", "templates_path")


def _absolute(entry: str) -> str:
    return str(REPO / entry) if (REPO / entry).exists() else entry


def _fixture_config() -> dict:
    """The repository's _config.yml, trimmed to what a two-chapter book needs.

    Execution, parsing and Sphinx settings are the repository's own, so the fixture
    exercises the real configuration; the extension is the real one (absolute path).
    """
    real = yaml.safe_load((REPO / "_config.yml").read_text())
    sphinx = dict(real.get("sphinx", {}))
    sphinx["local_extensions"] = {"rl2llm_book": str(REPO / "book" / "_ext")}
    config = dict(sphinx.get("config", {}))
    config.pop("bibtex_reference_style", None)  # no bibliography in the fixture
    for key in PATH_SETTINGS:  # the repository's files, by absolute path
        if isinstance(config.get(key), str):
            config[key] = _absolute(config[key])
        elif isinstance(config.get(key), list):
            config[key] = [_absolute(entry) for entry in config[key]]
    config["rl2llm_package_dir"] = "code/fixturepkg"
    sphinx["config"] = config
    return {
        "title": "Fixture book",
        "author": "The tests",
        "only_build_toc_files": True,
        "exclude_patterns": real.get("exclude_patterns", ["_build", "code"]),
        "execute": real["execute"],
        "parse": real["parse"],
        "html": {"use_multitoc_numbering": True, "baseurl": ""},
        "sphinx": sphinx,
    }


TOC = """\
format: jb-book
root: book/intro
parts:
  - caption: Lectures
    numbered: true
    chapters:
      - file: book/lectures/01-alpha
      - file: book/lectures/02-beta
      - file: book/lectures/03-gamma
  - caption: Back matter
    chapters:
      - file: book/status
"""

#: What each chapter imports from the fixture package (gamma: nothing).
IMPORTS = {
    "01-alpha": "from fixturepkg.alpha import ALPHA\n",
    "02-beta": "from fixturepkg import beta\n",
    "03-gamma": "from rl2llm.progress import progress\nfor _ in progress(range(3), 'PROGRESS_MARKER', every=1):\n    pass\n",
}

PACKAGE = {
    "__init__.py": "ANSWER = 42\n",
    "base.py": "BASE = 1\n",
    "alpha.py": "from .base import BASE\nALPHA = BASE + 1\n",
    "beta.py": "from fixturepkg.base import BASE\nBETA = BASE + 2\n",
    "unused.py": "UNUSED = 0\n",
}

CHAPTER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Chapter {name}

Prose that both editions read, with math $V(s) = \\max_a Q(s, a)$.

:::{{edition}} scientist
Scientist-only prose SCIENTIST_PROSE_{tag}.
:::

:::{{edition}} manager
Manager-only prose MANAGER_PROSE_{tag}.
:::

```{{code-cell}} ipython3
with open({counter!r}, "a") as handle:
    handle.write("executed\\n")
{imports}value = 1
print("SHARED_OUTPUT_{tag}", value)
```

The value is one.

```{{code-cell}} ipython3
:tags: [check]
assert value == 1, "CLAIM_{tag}: the value is one"
print("CHECK_OUTPUT_{tag}")
```

```{{code-cell}} ipython3
:tags: [scientist]
print("SCIENTIST_OUTPUT_{tag}")
```

```{{code-cell}} ipython3
:tags: [manager]
print("MANAGER_OUTPUT_{tag}")
```
"""


def chapter_path(root: Path, name: str) -> Path:
    return root / "book" / "lectures" / f"{name}.md"


def counter_path(root: Path, name: str) -> Path:
    return root / f"counter-{name}.txt"


def make_book(root: Path) -> Path:
    """Write the fixture book into ``root`` (with a copy of the real make.py) and return root."""
    (root / "book" / "lectures").mkdir(parents=True)
    (root / "code" / "fixturepkg").mkdir(parents=True)
    shutil.copy(REPO / "make.py", root / "make.py")
    (root / "_config.yml").write_text(yaml.safe_dump(_fixture_config(), sort_keys=False))
    (root / "_toc.yml").write_text(TOC)
    (root / "requirements.txt").write_text("numpy==2.4.6\n")
    for name, text in PACKAGE.items():
        (root / "code" / "fixturepkg" / name).write_text(text)
    (root / "book" / "intro.md").write_text("# Fixture intro\n\nAn introduction with no code.\n")
    (root / "book" / "status.md").write_text("# Execution status\n\n```{execution-status}\n```\n")
    for name in CHAPTERS:
        tag = name.split("-")[1].upper()
        chapter_path(root, name).write_text(
            CHAPTER.format(name=name, tag=tag, counter=str(counter_path(root, name)), imports=IMPORTS[name]))
    return root


def executions(root: Path) -> dict[str, int]:
    """How many times each chapter has executed so far."""
    counts = {}
    for name in CHAPTERS:
        path = counter_path(root, name)
        counts[name] = len(path.read_text().splitlines()) if path.exists() else 0
    return counts


def run_make(root: Path, *args: str, build_dir: Path | None = None, **extra_env: str) -> subprocess.CompletedProcess:
    # The chapters' kernels import the fixture package from the fixture's code/.
    pythonpath = os.pathsep.join(filter(None, [str(root / "code"), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, RL2LLM_NO_VENV="1", PYTHONUNBUFFERED="1", PYTHONPATH=pythonpath, **extra_env)
    for name in ("RL2LLM_EDITION", "RL2LLM_SCALE", "RL2LLM_RERUN", "RL2LLM_PROGRESS_FILE", "RL2LLM_ARTIFACTS"):
        if name not in extra_env:
            env.pop(name, None)
    if build_dir is None:
        env.pop("RL2LLM_BUILD_DIR", None)
    else:
        env["RL2LLM_BUILD_DIR"] = str(build_dir)
    return subprocess.run([sys.executable, "make.py", *args], cwd=root, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def output_of(result: subprocess.CompletedProcess) -> str:
    return _ANSI.sub("", result.stdout)


def build_ok(root: Path, *args: str, build_dir: Path | None = None, **extra_env: str) -> str:
    result = run_make(root, "build", *args, build_dir=build_dir, **extra_env)
    assert result.returncode == 0, f"make.py build {' '.join(args)} failed:\n{output_of(result)[-6000:]}"
    return output_of(result)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> tuple[Path, str]:
    """The fixture book built once with `make.py build` (both editions); (root, build output)."""
    root = make_book(tmp_path_factory.mktemp("book"))
    return root, build_ok(root)


def html(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf8"), "html.parser")


# --------------------------------------------------------------------------- 1. the cache


def _counts(a: int, b: int, c: int) -> dict[str, int]:
    return dict(zip(CHAPTERS, (a, b, c)))


def test_cache_reexecutes_exactly_what_changed(tmp_path):
    root = make_book(tmp_path)
    package = root / "code" / "fixturepkg"

    out = build_ok(root)
    assert executions(root) == _counts(1, 1, 1), "the first build executes every chapter once"
    for name in CHAPTERS:  # progress: what executes, then how long it took
        assert f"[rl2llm] executing book/lectures/{name}" in out, out[-3000:]
        assert re.search(rf"\[rl2llm\] executed book/lectures/{name} in [0-9.]+ s", out), out[-3000:]

    out = build_ok(root)
    assert executions(root) == _counts(1, 1, 1), "a rebuild with no change executes nothing"
    assert "[rl2llm] executing" not in out

    edit(chapter_path(root, "01-alpha"), "value = 1", "value = 1  # edited")
    build_ok(root)
    assert executions(root) == _counts(2, 1, 1), "editing chapter A's code re-executes A alone"

    edit(chapter_path(root, "02-beta"), "Prose that both editions read", "Prose, edited, that both editions read")
    out = build_ok(root)
    assert "02-beta" in out, "the prose edit should at least make Sphinx re-read chapter B"
    assert executions(root) == _counts(2, 1, 1), "editing only prose in chapter B re-executes nothing"

    (package / "alpha.py").write_text(PACKAGE["alpha.py"] + "# edited\n")
    out = build_ok(root)
    assert executions(root) == _counts(3, 1, 1), "changing a module only A imports re-executes A alone"
    assert "(changed: fixturepkg/alpha.py)" in out, "the log should say which input changed"

    (package / "base.py").write_text("BASE = 1  # edited\n")
    build_ok(root)
    assert executions(root) == _counts(4, 2, 1), \
        "changing a module A and B import through other modules re-executes A and B, not C"

    (package / "unused.py").write_text("UNUSED = 1\n")
    build_ok(root)
    assert executions(root) == _counts(4, 2, 1), "changing a module no chapter imports executes nothing"

    (package / "__init__.py").write_text("ANSWER = 43\n")
    build_ok(root)
    assert executions(root) == _counts(5, 3, 1), "importing fixturepkg.x runs fixturepkg/__init__.py: A and B"

    (root / "requirements.txt").write_text("numpy==2.4.6\nscipy==1.17.1\n")
    build_ok(root)
    assert executions(root) == _counts(6, 4, 2), "changing requirements.txt re-executes every chapter"

    build_ok(root, RL2LLM_SCALE="large")
    assert executions(root) == _counts(7, 5, 3), "changing the scale switch re-executes every chapter"
    build_ok(root)
    assert executions(root) == _counts(7, 5, 3), "switching back finds the small-scale outputs still cached"

    out = build_ok(root, "--rerun", "02")
    assert executions(root) == _counts(7, 6, 3), "make.py build --rerun 02 re-executes chapter 02 alone"
    assert "re-execution asked for" in out

    result = run_make(root, "build", "--rerun", "09")
    assert result.returncode != 0 and "no such chapter" in output_of(result), output_of(result)[-2000:]


def test_progress_reaches_the_build_log_not_the_page(built_book):
    root, out = built_book
    lines = [line for line in out.splitlines() if "PROGRESS_MARKER" in line]
    assert any("book/lectures/03-gamma: PROGRESS_MARKER: 1/3" in line for line in lines), out[-3000:]
    assert any("PROGRESS_MARKER: done, 3/3" in line for line in lines), out[-3000:]
    for edition in ("", "manager/"):
        page = html(root / "_build" / "html" / edition / "book" / "lectures" / "03-gamma.html")
        outputs = " ".join(node.get_text() for node in page.select(".cell_output"))
        assert "SHARED_OUTPUT_GAMMA" in outputs
        assert "PROGRESS_MARKER" not in outputs, "progress leaked into the page"


def test_every_chapter_says_what_ran_it(built_book):
    import json

    root, _ = built_book
    site = root / "_build" / "html"
    report = json.loads((site / "execution.json").read_text())
    for name in CHAPTERS:
        record = report["notebooks"][f"book/lectures/{name}"]["provenance"]
        assert record["cores"] >= 1 and record["seconds"] > 0
        assert record["libraries"] == {}  # the fixture chapters import none of the reported libraries
        line = html(site / "book" / "lectures" / f"{name}.html").select_one("p.provenance")
        assert line is not None, f"{name}: no provenance line"
        text = line.get_text(" ", strip=True)
        assert re.search(r"Executed on \d{4}-\d\d-\d\d \d\d:\d\d UTC in [0-9.]+ s on \d+ CPU cores?", text), text
        if name == "03-gamma":
            assert "imports no module of the book's package" in text, text
        else:
            assert record["package_fingerprint"] in text, text
        line = html(site / "manager" / "book" / "lectures" / f"{name}.html").select_one("p.provenance")
        assert line is not None, f"manager {name}: no provenance line"
        text = line.get_text(" ", strip=True)
        assert re.search(r"computed when the book was built, on \d+ \w+ \d{4}, in \d+ seconds on an ordinary "
                         r"computer \(\d+ CPU cores?, no GPU\)", text), text
        assert "package" not in text and "numpy" not in text, f"manager {name}: {text}"
    modules = {name: report["notebooks"][f"book/lectures/{name}"]["provenance"]["modules"] for name in CHAPTERS}
    assert modules["01-alpha"] == ["fixturepkg", "fixturepkg.alpha", "fixturepkg.base"]
    assert modules["02-beta"] == ["fixturepkg", "fixturepkg.base", "fixturepkg.beta"]
    assert modules["03-gamma"] == []


def test_status_page_lists_chapters_budgets_and_claims(built_book):
    root, _ = built_book
    for edition in ("", "manager/"):
        page = html(root / "_build" / "html" / edition / "book" / "status.html")
        table = page.select_one("table.execution-status")
        assert table is not None, f"{edition}: no execution-status table"
        rows = table.select("tbody tr")
        assert len(rows) == len(CHAPTERS)
        for row in rows:
            cells = [cell.get_text(strip=True) for cell in row.select("td")]
            assert cells[-1] == "1", f"claims checked: {cells}"
            assert re.fullmatch(r"[0-9.]+", cells[2]), f"seconds: {cells}"
        text = page.get_text(" ", strip=True)
        if edition:
            assert "3 chapters; the build checked 3 statements" in text, text[:2000]
            assert "Every chapter stays within its two-minute limit" in text
        else:
            assert "3 chapters; 3 claims checked by the build" in text, text[:2000]
            assert "Every chapter is within its 120 s budget" in text


def test_budget_command_reports_the_last_build(built_book):
    root, _ = built_book
    result = run_make(root, "budget")
    out = output_of(result)
    assert result.returncode == 0, out
    for name in CHAPTERS:
        assert re.search(rf"book/lectures/{name}\s+[0-9.]+s\s+120s\s+1\s+ok", out), out
    assert re.search(r"cold build of both editions: about [0-9.]+ min of the 25 min budget", out), out


def test_check_cells_are_hidden_in_both_editions(built_book):
    root, _ = built_book
    for edition in ("", "manager/"):
        for name in CHAPTERS:
            text = (root / "_build" / "html" / edition / "book" / "lectures" / f"{name}.html").read_text()
            tag = name.split("-")[1].upper()
            assert "SHARED_OUTPUT_" + tag in text
            assert f"CLAIM_{tag}" not in text and f"CHECK_OUTPUT_{tag}" not in text, \
                f"{edition or 'scientist/'}{name}: a check cell is visible"


def test_a_false_claim_fails_the_build_naming_chapter_and_claim(tmp_path):
    root = make_book(tmp_path)
    edit(chapter_path(root, "02-beta"), 'assert value == 1, "CLAIM_BETA: the value is one"',
         'assert value == 2, "CLAIM_BETA: the value is two"')
    result = run_make(root, "build")
    out = output_of(result)
    assert result.returncode != 0, "a false claim built"
    assert "02-beta.md" in out and "CLAIM_BETA: the value is two" in out, out[-4000:]


@pytest.mark.parametrize("bad, message", [
    ('assert value == 1, "CLAIM_BETA: the value is one"', "asserts nothing"),
    ('assert value == 1', "has no message"),
])
def test_check_cells_must_assert_a_stated_claim(tmp_path, bad, message):
    root = make_book(tmp_path)
    replacement = "print(value)" if message == "asserts nothing" else bad
    edit(chapter_path(root, "02-beta"), 'assert value == 1, "CLAIM_BETA: the value is one"', replacement)
    result = run_make(root, "build")
    out = output_of(result)
    assert result.returncode != 0, out[-2000:]
    assert f"{chapter_path(root, '02-beta')}:" in out and message in out, out[-3000:]


# --------------------------------------------------------------------------- 2. one execution, two editions


def test_building_the_second_edition_executes_nothing(built_book):
    root, out = built_book
    assert executions(root) == _counts(1, 1, 1), \
        "make.py build (scientist then manager) must execute each chapter exactly once"
    manager_log = out.split("[make] building the manager edition", 1)[1]
    assert "Executing notebook" not in manager_log, manager_log[-3000:]
    assert "[rl2llm] executing" not in manager_log, manager_log[-3000:]

    import json
    scientist = json.loads((root / "_build" / "html" / "execution.json").read_text())
    manager = json.loads((root / "_build" / "html" / "manager" / "execution.json").read_text())
    expected = {f"book/lectures/{name}" for name in CHAPTERS}
    assert set(scientist["notebooks"]) == expected
    assert set(manager["notebooks"]) == expected
    assert manager["fingerprint"] == scientist["fingerprint"]
    assert manager["cache"] == scientist["cache"]
    assert all(entry["succeeded"] for entry in scientist["notebooks"].values())


def test_manager_edition_refuses_an_empty_cache(built_book, tmp_path):
    root, _ = built_book
    before = executions(root)
    result = run_make(root, "build", "--edition", "manager", build_dir=tmp_path / "fresh")
    out = output_of(result)
    assert result.returncode != 0, f"the manager edition built from an empty cache:\n{out[-3000:]}"
    assert "no up-to-date outputs" in out, out[-3000:]
    assert "Build the scientist edition first" in out, out[-3000:]
    for name in CHAPTERS:
        assert f"book/lectures/{name}.md" in out, f"the message should name {name}:\n{out[-3000:]}"
    assert executions(root) == before, "the manager edition executed a chapter"


def test_scientist_edition_alone(built_book, tmp_path):
    """`make.py build --edition scientist` builds that edition only."""
    root, _ = built_book
    before = executions(root)
    out = build_ok(root, "--edition", "scientist", build_dir=tmp_path / "sci")
    assert "[make] building the manager edition" not in out
    assert (tmp_path / "sci" / "html" / "book" / "lectures" / "01-alpha.html").exists()
    assert not (tmp_path / "sci" / "html" / "manager").exists()
    assert executions(root) == {name: count + 1 for name, count in before.items()}  # a cold cache


# --------------------------------------------------------------------------- 3. markers


BAD_SOURCES = {
    "unknown-edition": (
        ":::{edition} scientist\nScientist-only", ":::{edition} scientst\nScientist-only", ["scientst"]),
    "unknown-tag": (":tags: [scientist]", ":tags: [scientst]", ["scientst"]),
    "code-cell-in-edition-block": (
        "Manager-only prose MANAGER_PROSE_BETA.\n:::",
        "Manager-only prose MANAGER_PROSE_BETA.\n\n```{code-cell} ipython3\nprint('hidden')\n```\n:::",
        ["code cell inside the {edition} block"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_bad_markers_fail_the_build(case, tmp_path):
    root = make_book(tmp_path)
    old, new, expected = BAD_SOURCES[case]
    edit(chapter_path(root, "02-beta"), old, new)
    result = run_make(root, "build")
    out = output_of(result)
    assert result.returncode != 0, f"{case}: the build succeeded:\n{out[-3000:]}"
    # the message names the file (with its line) and the marker
    error = [line for line in out.splitlines() if str(chapter_path(root, "02-beta")) + ":" in line
             and ("unknown" in line or "code cell" in line)]
    assert error, f"{case}: no error naming {chapter_path(root, '02-beta')}:\n{out[-3000:]}"
    for needle in expected:
        assert needle in error[0], f"{case}: {needle!r} not in {error[0]!r}"
    assert "[make] the scientist edition failed to build" in out


def test_editions_show_their_own_content(built_book):
    root, _ = built_book
    site = root / "_build" / "html"
    for name in CHAPTERS:
        tag = name.split("-")[1].upper()
        scientist = (site / "book" / "lectures" / f"{name}.html").read_text(encoding="utf8")
        manager = (site / "manager" / "book" / "lectures" / f"{name}.html").read_text(encoding="utf8")
        for text in (f"SHARED_OUTPUT_{tag}", "Prose that both editions read"):
            assert text in scientist and text in manager, text
        assert f"SCIENTIST_PROSE_{tag}" in scientist and f"SCIENTIST_OUTPUT_{tag}" in scientist
        assert f"MANAGER_PROSE_{tag}" not in scientist and f"MANAGER_OUTPUT_{tag}" not in scientist
        assert f"MANAGER_PROSE_{tag}" in manager and f"MANAGER_OUTPUT_{tag}" in manager
        assert f"SCIENTIST_PROSE_{tag}" not in manager and f"SCIENTIST_OUTPUT_{tag}" not in manager
        assert html(site / "book" / "lectures" / f"{name}.html").select("div.cell_input"), \
            "the scientist edition shows the code"
        soup = html(site / "manager" / "book" / "lectures" / f"{name}.html")
        assert not soup.select(".cell_input"), f"manager {name}: a cell_input"
        assert "with open(" not in manager, f"manager {name}: code source in the page"


def test_no_inline_script_is_included_twice(built_book):
    """Sphinx 7.4 writes inline scripts added after the builder started twice; the extension dedupes them."""
    root, _ = built_book
    site = root / "_build" / "html"
    for page in [site / "book" / "intro.html", site / "manager" / "book" / "lectures" / "01-alpha.html"]:
        bodies = [script.string.strip() for script in html(page).find_all("script")
                  if not script.get("src") and script.string and script.string.strip()]
        assert bodies, f"{page}: no inline scripts at all"
        twice = sorted({body[:80] for body in bodies if bodies.count(body) > 1})
        assert not twice, f"{page}: inline scripts included twice: {twice}"


def _strip(path: Path):
    strips = html(path).select("div.edition-strip")
    assert len(strips) == 1, f"{path}: {len(strips)} edition strips"
    return strips[0]


def test_edition_links_and_reading_time(built_book):
    root, _ = built_book
    site = root / "_build" / "html"
    pages = ["book/intro.html"] + [f"book/lectures/{name}.html" for name in CHAPTERS]
    for edition, base, other_base in (("scientist", site, site / "manager"), ("manager", site / "manager", site)):
        for page in pages:
            path = base / page
            strip = _strip(path)
            assert f"{edition.capitalize()} edition" in strip.get_text()
            link = strip.select_one("a.edition-switch-link")
            assert link is not None, f"{edition} {page}: no edition link"
            href = link["href"]
            assert not urlsplit(href).scheme, f"{edition} {page}: absolute edition link {href}"
            target = (path.parent / urlsplit(href).path).resolve()
            assert target == (other_base / page).resolve(), \
                f"{edition} {page}: the edition link {href} leads to {target}, not the same page in the other edition"
            assert target.exists(), f"{edition} {page}: the edition link {href} leads to a missing file"
            reading = strip.select_one(".reading-time")
            if page.startswith("book/lectures/"):
                assert reading is not None and re.fullmatch(r"Reading time: \d+ min", reading.get_text()), \
                    f"{edition} {page}: no reading time"
            else:
                assert reading is None, f"{edition} {page}: a reading time on a page that is no chapter"
    # the manager edition reads no code, so its reading time counts none
    for name in CHAPTERS:
        title = _strip(site / "manager" / "book" / "lectures" / f"{name}.html").select_one(".reading-time")["title"]
        assert " 0 lines of code" in title, title


def test_the_downloadable_notebook_is_the_readers(built_book):
    """Scientist edition only: no check cells, no manager cells or prose, plain Markdown."""
    root, _ = built_book
    for name in CHAPTERS:
        tag = name.split("-")[1].upper()
        text = (root / "_build" / "html" / "_executed" / "book" / "lectures" / f"{name}.ipynb").read_text()
        assert "SHARED_OUTPUT_" + tag in text and "SCIENTIST_PROSE_" + tag in text
        for gone in (f"CLAIM_{tag}", f"MANAGER_PROSE_{tag}", f"MANAGER_OUTPUT_{tag}", "{edition}"):
            assert gone not in text, f"{name}: {gone} in the downloadable notebook"
