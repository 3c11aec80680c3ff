"""Shared fixtures.

``built_site`` builds the real book cold, once per test session, for the slow site
and browser tests: both editions with ``make.py build`` into ``_build/cold`` (its own
execution cache, so every chapter executes; your warm ``_build`` is left alone).
Set ``RL2LLM_SITE`` to an existing build directory (one holding ``html/``) to test
that build instead, e.g. ``RL2LLM_SITE=_build python3 make.py test tests/test_browser.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Filled by the ``built_site`` fixture, reported at the end of the session.
_COLD_BUILD: dict[str, object] = {}


@pytest.fixture(scope="session")
def built_site() -> Path:
    """The build directory of the real book, both editions (``<dir>/html``, ``<dir>/html/manager``).

    The build's output is in ``<dir>/build.log``.
    """
    existing = os.environ.get("RL2LLM_SITE")
    if existing:
        build = Path(existing).resolve()
        if not (build / "html" / "index.html").exists():
            pytest.fail(f"RL2LLM_SITE={existing}: no built site in {build / 'html'}")
        return build

    build = REPO / "_build" / "cold"
    if build.exists():
        import shutil

        shutil.rmtree(build)
    build.mkdir(parents=True)
    log = build / "build.log"
    env = dict(os.environ, RL2LLM_BUILD_DIR=str(build), RL2LLM_NO_VENV="1", PYTHONUNBUFFERED="1")
    env.pop("RL2LLM_EDITION", None)
    start = time.perf_counter()
    with log.open("w") as handle:
        result = subprocess.run([sys.executable, str(REPO / "make.py"), "build"], cwd=REPO, env=env,
                                stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    _COLD_BUILD.update(seconds=seconds, build=build, returncode=result.returncode)
    print(f"\n[built_site] cold build of both editions: {seconds:.1f} s (log: {log})")
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-8000:]
        pytest.fail(f"the cold build failed (exit {result.returncode}); the end of {log}:\n{tail}", pytrace=False)
    return build


def pytest_terminal_summary(terminalreporter):
    """After a cold build, print its figures: every CI log then carries each chapter's time and the total."""
    if _COLD_BUILD:
        terminalreporter.write_line(
            f"cold build of the book (both editions): {_COLD_BUILD['seconds']:.1f} s, "
            f"exit {_COLD_BUILD['returncode']}, in {_COLD_BUILD['build']}")
        if _COLD_BUILD["returncode"] == 0:
            sys.path.insert(0, str(REPO))
            try:
                from make import budget_report
            finally:
                sys.path.pop(0)
            terminalreporter.section("execution budget (python3 make.py budget)")
            for line in budget_report(Path(_COLD_BUILD["build"])).splitlines():
                terminalreporter.write_line(line)


def render_benchmark_page(tmp_path: Path, edition: str, directive: str, file_name: str, data) -> str:
    """The HTML of a one-page site showing one Benchmarks-page directive, in ``edition``.

    ``data``: the results (a dict written as JSON, or the path of a results
    file to copy) at ``benchmarks/results/<file_name>``, or None for a missing
    file. Sphinx runs with warnings as errors.
    """
    import json
    import shutil

    src = tmp_path / f"src-{edition}"
    (src / "benchmarks" / "results").mkdir(parents=True)
    target = src / "benchmarks" / "results" / file_name
    if isinstance(data, dict):
        target.write_text(json.dumps(data))
    elif data is not None:
        shutil.copy(data, target)
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO / 'book' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'rl2llm_benchmarks']\n"
        f"def setup(app):\n    app.add_config_value('rl2llm_edition', {edition!r}, 'env')\n")
    (src / "index.md").write_text(f"# Benchmarks\n\n```{{{directive}}} benchmarks/results/{file_name}\n```\n")
    out = tmp_path / f"out-{edition}"
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-E", "-b", "html", str(src), str(out)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return (out / "index.html").read_text()
