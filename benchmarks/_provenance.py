"""Where and with what a benchmark ran: date, machine, load, versions, commit (for the results files)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def commit(paths: tuple[str, ...] = ("code/rl2llm", "benchmarks")) -> str:
    """The repository's commit, marked when ``paths`` hold uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def provenance(packages: tuple[str, ...]) -> dict:
    """Date (UTC), machine, Python and ``packages``' versions, and the commit."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform(terse=True)},
        "versions": {"python": platform.python_version(), **{name: package_version(name) for name in packages}},
        "rl2llm_commit": commit(),
    }


def write_results(out: Path, benchmark: str, packages: tuple[str, ...], load_before: list[float],
                  result: dict) -> None:
    """Write ``result`` to ``out`` as a results file: the benchmark's name, provenance and the load around it."""
    import json

    data = {"benchmark": benchmark, "schema": 1, **provenance(packages),
            "load_average": {"before": load_before, "after": load_average()}, **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")
