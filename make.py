#!/usr/bin/env python3
"""Build and test "From Bellman to RLHF".

    python3 make.py build    # both editions -> _build/html/ and _build/html/manager/
    python3 make.py build --edition scientist   # one edition (the manager edition needs the
                                                # scientist edition's executed outputs in the cache)
    python3 make.py test     # all tests: package, cold build of both editions, the site in Chromium
    python3 make.py clean    # remove _build/ (the execution cache included)

The first run creates a virtual environment in .venv/ from requirements.txt
(several minutes; later runs reuse it). Set RL2LLM_VENV to use another one, or
RL2LLM_NO_VENV=1 to use the Python running this script as it is, and
RL2LLM_BUILD_DIR to write the build (and its execution cache) somewhere else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
#: Everything the build writes, the execution cache included. RL2LLM_BUILD_DIR moves it
#: (the tests use that for a cold build next to your warm one).
BUILD = Path(os.environ.get("RL2LLM_BUILD_DIR", ROOT / "_build")).resolve()
SCIENTIST_HTML = BUILD / "html"
MANAGER_BUILD = BUILD / "manager"  # its own Sphinx environment and doctrees
MANAGER_HTML = SCIENTIST_HTML / "manager"  # where readers find it


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
        subprocess.run([str(python), "-m", "pip", "install", "-r", str(ROOT / "requirements.txt")], check=True)
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
            "external_toc_path": str(ROOT / "_toc.yml"),
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
    times = {}
    for edition in editions:
        times[edition] = build_edition(edition, warnings_are_errors=not args.allow_warnings)
    print("[make] done: " + ", ".join(f"{edition} {seconds:.0f} s" for edition, seconds in times.items()) + "\n"
          f"       open {SCIENTIST_HTML / 'index.html'} (manager edition: {MANAGER_HTML / 'index.html'})")


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
    build.set_defaults(func=cmd_build)
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
    if args.command != "clean":
        ensure_environment()
    args.func(args)


if __name__ == "__main__":
    main()
