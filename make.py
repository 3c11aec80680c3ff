#!/usr/bin/env python3
"""Build and test "From Bellman to RLHF".

    python3 make.py build    # both editions -> _build/html/ and _build/html/manager/
    python3 make.py build --edition scientist   # one edition (the manager edition needs the
                                                # scientist edition's executed outputs in the cache)
    python3 make.py test     # all tests: package, cold build of both editions, the site in Chromium
    python3 make.py build --rerun 01-mdps-bellman   # re-execute that chapter even if its cache is fresh
    python3 make.py budget   # each chapter's execution time against its budget, from the last build
    python3 make.py clean    # remove _build/ (the execution cache included)

The first run creates a virtual environment in .venv/ from requirements.txt
(several minutes; later runs reuse it). Set RL2LLM_TORCH=cpu when it is created
to install PyTorch's CPU-only build from PyTorch's own index (on Linux the
default index serves the CUDA build, which brings several GB of CUDA libraries).
Set RL2LLM_VENV to use another environment, RL2LLM_NO_VENV=1 to use the Python
running this script as it is, RL2LLM_BUILD_DIR to write the build (and its
execution cache) somewhere else, and RL2LLM_TOC to build from another table of
contents (for example one listing only the chapter you are drafting).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
#: Everything the build writes, the execution cache included. RL2LLM_BUILD_DIR moves it
#: (the tests use that for a cold build next to your warm one).
BUILD = Path(os.environ.get("RL2LLM_BUILD_DIR", ROOT / "_build")).resolve()
#: The table of contents: which pages are built. RL2LLM_TOC names another one (drafting one chapter).
TOC = Path(os.environ.get("RL2LLM_TOC", ROOT / "_toc.yml")).resolve()
SCIENTIST_HTML = BUILD / "html"
MANAGER_BUILD = BUILD / "manager"  # its own Sphinx environment and doctrees
MANAGER_HTML = SCIENTIST_HTML / "manager"  # where readers find it
#: PyTorch's own index of CPU-only wheels (RL2LLM_TORCH=cpu).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: Execution budgets (the build flags a chapter over its budget on the status page too).
CHAPTER_BUDGET_S = 120
COLD_BUDGET_MIN = 25


def _venv_python() -> Path:
    venv = Path(os.environ.get("RL2LLM_VENV", ROOT / ".venv"))
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_environment() -> None:
    """Re-run this script inside the project's virtualenv, creating it if needed."""
    if os.environ.get("RL2LLM_NO_VENV") == "1":
        return
    python = _venv_python()
    if Path(sys.prefix).resolve() == python.parent.parent.resolve():
        return
    if not python.exists():
        print(f"[make] creating the virtual environment {python.parent.parent} from requirements.txt "
              "(one time, several minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--upgrade", "pip"], check=True)
        if os.environ.get("RL2LLM_TORCH") == "cpu":
            torch_pin = next(line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                             if line.startswith("torch=="))
            print(f"[make] RL2LLM_TORCH=cpu: installing {torch_pin} (CPU-only) from {TORCH_CPU_INDEX}", flush=True)
            subprocess.run([str(python), "-m", "pip", "install", torch_pin, "--index-url", TORCH_CPU_INDEX], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-r", str(ROOT / "requirements.txt")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-r", str(ROOT / "benchmarks/requirements.txt")], check=True)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def build_edition(edition: str, warnings_are_errors: bool = True) -> float:
    """Build one edition with Sphinx through Jupyter Book; return the seconds it took."""
    from jupyter_book.sphinx import build_sphinx

    if edition == "scientist":
        outdir, doctrees = SCIENTIST_HTML, BUILD / ".doctrees"
    else:
        outdir, doctrees = MANAGER_BUILD / "html", MANAGER_BUILD / ".doctrees"
    print(f"[make] building the {edition} edition", flush=True)
    start = time.perf_counter()
    result = build_sphinx(
        str(ROOT),
        str(outdir),
        path_config=str(ROOT / "_config.yml"),
        doctreedir=str(doctrees),
        noconfig=True,
        confoverrides={
            "rl2llm_edition": edition,
            "nb_execution_cache_path": str(BUILD / ".jupyter_cache"),
            "external_toc_path": str(TOC),
            "latex_individualpages": False,
            "nitpicky": True,
        },
        builder="html",
        warningiserror=warnings_are_errors,
        keep_going=True,
    )
    if result:
        sys.exit(f"[make] the {edition} edition failed to build (see the messages above; "
                 f"execution reports, if a cell failed, are in {outdir / 'reports'})")
    if edition == "manager":
        if MANAGER_HTML.exists():
            shutil.rmtree(MANAGER_HTML)
        shutil.copytree(outdir, MANAGER_HTML)
    return time.perf_counter() - start


def cmd_build(args) -> None:
    editions = ("scientist", "manager") if args.edition == "both" else (args.edition,)
    if args.rerun:
        if "scientist" not in editions:
            sys.exit("[make] --rerun re-executes chapters, which only the scientist edition does")
        names = [_chapter_docname(name) for name in args.rerun]
        os.environ["RL2LLM_RERUN"] = ",".join(names)
        print(f"[make] re-executing {', '.join(names)}", flush=True)
    times, zoo = {}, {}
    if "scientist" in editions:
        zoo = train_zoo()
    for edition in editions:
        times[edition] = build_edition(edition, warnings_are_errors=not args.allow_warnings)
    if "scientist" in times:
        _record_build(times, zoo)
    print("[make] done: " + ", ".join(f"{edition} {seconds:.0f} s" for edition, seconds in times.items()) + "\n"
          f"       open {SCIENTIST_HTML / 'index.html'} (manager edition: {MANAGER_HTML / 'index.html'})")


def _toc_files(toc: Path) -> list[Path]:
    """The source files the table of contents lists (``file:`` entries, any depth)."""
    import yaml

    found = []

    def visit(node) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                found.append(node["file"])
            if isinstance(node.get("root"), str):
                found.append(node["root"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)
    visit(yaml.safe_load(toc.read_text()))
    return [ROOT / f"{name}.md" for name in found if (ROOT / f"{name}.md").is_file()]


_CELL = re.compile(r"^(`{3,}|:{3,})\{code-cell\}[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)


def _code_cells(markdown: str) -> list[str]:
    """The code of a MyST notebook's cells, without their options (``:tags:`` lines, a ``---`` block)."""
    cells = []
    for match in _CELL.finditer(markdown):
        lines = match.group(2).splitlines()
        if lines and lines[0].strip() == "---":
            end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), 0)
            lines = lines[end + 1:]
        while lines and re.match(r"^:\w[\w-]*:", lines[0]):
            lines = lines[1:]
        cells.append("\n".join(lines))
    return cells


def pages_using_zoo(toc: Path = TOC) -> list[str]:
    """The pages of the table of contents whose code imports rl2llm.zoo, directly or through the package."""
    package = ROOT / "code" / "rl2llm"
    if not (package / "zoo.py").is_file():  # a book without the zoo (the build machinery's fixture book)
        return []
    from rl2llm.provenance import module_closure

    pages = []
    for path in _toc_files(toc):
        text = path.read_text(encoding="utf8")
        modules, _, complete = module_closure(package, _code_cells(text))
        if ("rl2llm.zoo" in modules) if complete else ("zoo" in text):
            pages.append(path.relative_to(ROOT).as_posix())
    return pages


def train_zoo() -> dict:
    """Train the zoo's models that are missing from the build's cache, before any chapter executes, so no
    chapter pays for them (a no-op when they are cached, or when no page of the book uses the zoo).
    Returns, per model, the seconds spent here and the seconds its training took (from its card)."""
    os.environ.setdefault("RL2LLM_ARTIFACTS", str(BUILD / "artifacts"))  # as book/_ext does
    pages = pages_using_zoo()
    if not pages:
        return {}
    from rl2llm import zoo

    print(f"[make] the model zoo (used by {', '.join(pages)}), cached in {os.environ['RL2LLM_ARTIFACTS']}",
          flush=True)
    models = zoo.build_all()
    print("[make] zoo ready in " + ", ".join(f"{name} {m['seconds']:.1f} s" for name, m in models.items()),
          flush=True)
    return models


def _chapter_docname(name: str) -> str:
    """'01', '01-mdps-bellman', 'book/lectures/01-mdps-bellman.md' -> 'book/lectures/01-mdps-bellman'."""
    stem = Path(name).name.removesuffix(".md")
    matches = sorted(p for p in (ROOT / "book" / "lectures").glob("*.md") if p.stem == stem or p.stem.startswith(stem + "-"))
    if len(matches) != 1:
        known = ", ".join(sorted(p.stem for p in (ROOT / "book" / "lectures").glob("*.md")))
        sys.exit(f"[make] --rerun {name!r}: " + ("matches several chapters" if matches else "no such chapter")
                 + f"; chapters are: {known}")
    return matches[0].relative_to(ROOT).with_suffix("").as_posix()


def _record_build(times: dict, zoo: dict | None = None) -> None:
    """Keep the wall time of this build, what it executed and the zoo's training times, for `make.py budget`."""
    import json

    report = json.loads((SCIENTIST_HTML / "execution.json").read_text())
    executed = [name for name, data in report["notebooks"].items() if data.get("executed_now")]
    (BUILD / "last-build.json").write_text(json.dumps(
        {"seconds": times, "executed": executed, "zoo": zoo or {}, "finished": time.time()},
        indent=1))


def budget_report(build: Path = BUILD) -> str:
    """Each chapter's last execution time against its budget, and the cold build against 25 minutes."""
    import json

    path = build / "html" / "execution.json"
    if not path.exists():
        return f"[make] no build in {build}: run python3 make.py build first"
    report = json.loads(path.read_text())
    budget = report.get("budget_seconds", CHAPTER_BUDGET_S)
    lines = [f"{'chapter':<44}{'executed':>10}{'budget':>8}  claims  status"]
    total = 0.0
    for name, data in sorted(report["notebooks"].items()):
        seconds = (data.get("provenance") or {}).get("seconds", data.get("runtime"))
        seconds = float(seconds or 0.0)
        total += seconds
        status = "OVER BUDGET" if seconds > budget else "ok"
        lines.append(f"{name:<44}{seconds:>9.1f}s{budget:>7}s  {data.get('claims', 0):>6}  {status}")
    last = build / "last-build.json"
    rendering, zoo = None, 0.0
    if last.exists():
        record = json.loads(last.read_text())
        executed_now = sum(float((report["notebooks"].get(n, {}).get("provenance") or {}).get("seconds", 0))
                           for n in record.get("executed", []))
        rendering = max(0.0, sum(record["seconds"].values()) - executed_now)
        zoo = sum(model["train_seconds"] for model in record.get("zoo", {}).values())
    cold = total + (rendering or 0.0) + zoo
    lines.append(f"{'all chapters executed cold':<44}{total:>9.1f}s")
    if rendering is not None:
        lines.append(f"{'  + rendering both editions (last build)':<44}{rendering:>9.1f}s")
    if zoo:
        lines.append(f"{'  + training the model zoo (cold)':<44}{zoo:>9.1f}s")
    lines.append(f"cold build of both editions: about {cold / 60:.1f} min of the {COLD_BUDGET_MIN} min budget"
                 + (" -- OVER BUDGET" if cold > COLD_BUDGET_MIN * 60 else ""))
    over = [name for name, data in report["notebooks"].items()
            if float((data.get("provenance") or {}).get("seconds", data.get("runtime")) or 0) > budget]
    if over:
        lines.append(f"over the {budget} s chapter budget: {', '.join(over)}")
    return "\n".join(lines)


def cmd_budget(args) -> None:
    build = Path(args.build_dir).resolve() if args.build_dir else BUILD
    print(budget_report(build))


def cmd_test(args) -> None:
    command = [sys.executable, "-m", "pytest", "-m", "slow or not slow", *args.pytest_args]
    if args.fast:
        command = [sys.executable, "-m", "pytest", *args.pytest_args]
    sys.exit(subprocess.call(command, cwd=ROOT))


def cmd_clean(args) -> None:
    shutil.rmtree(BUILD, ignore_errors=True)
    print(f"[make] removed {BUILD}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build both editions")
    build.add_argument("--allow-warnings", action="store_true", help="do not treat warnings as errors (drafting)")
    build.add_argument("--edition", choices=("both", "scientist", "manager"), default="both",
                       help="build one edition only (default: both, scientist first)")
    build.add_argument("--rerun", action="append", default=[], metavar="CHAPTER",
                       help="re-execute this chapter even if its cached outputs are up to date "
                            "(e.g. 01 or 01-mdps-bellman; repeat for several)")
    build.set_defaults(func=cmd_build)
    budget = sub.add_parser("budget", help="each chapter's execution time against its budget, from the last build")
    budget.add_argument("--build-dir", help="the build to report on (default: _build, or RL2LLM_BUILD_DIR)")
    budget.set_defaults(func=cmd_budget)
    test = sub.add_parser("test", help="run every test, the slow ones (cold build, browser) included")
    test.add_argument("--fast", action="store_true", help="only the fast tests (no book build)")
    test.add_argument("pytest_args", nargs="*", help="passed on to pytest")
    test.set_defaults(func=cmd_test)
    clean = sub.add_parser("clean", help="remove _build/ and the execution cache")
    clean.set_defaults(func=cmd_clean)
    argv = sys.argv[1:]
    if argv[:1] == ["test"]:
        # Everything after `test` but --fast goes to pytest as it is, options included
        # (argparse alone rejects `make.py test -k value_iteration` or `make.py test -x`).
        rest = [arg for arg in argv[1:] if arg != "--fast"]
        args = parser.parse_args(["test", *(["--fast"] if "--fast" in argv[1:] else [])])
        args.pytest_args = rest[1:] if rest[:1] == ["--"] else rest
    else:
        args = parser.parse_args(argv)
    if args.command not in ("clean", "budget"):
        ensure_environment()
    args.func(args)


if __name__ == "__main__":
    main()
