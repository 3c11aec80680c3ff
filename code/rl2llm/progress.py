"""Progress of long computations, for the person waiting on the build, not for the reader of the page.

A chapter that trains for a minute should tell the builder where it is. Printing
would put the progress into the page, so :func:`log` and :func:`progress` write
elsewhere: while the book is being built, to the file named by
``$RL2LLM_PROGRESS_FILE``, which the build copies line by line into its log;
anywhere else (a notebook opened by hand, a script), to standard error.

    for step in progress(range(n_steps), "PPO on CartPole", every=50):
        ...
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def log(message: str) -> None:
    """Write one line of progress (to the build log while building, else to standard error)."""
    if not isinstance(message, str):
        raise TypeError(f"message must be a string, got {type(message).__name__}")
    line = message.replace("\n", " ") + "\n"
    path = os.environ.get("RL2LLM_PROGRESS_FILE")
    if path:
        with open(path, "a", encoding="utf8") as handle:
            handle.write(line)
    else:
        sys.stderr.write(line)
        sys.stderr.flush()


def progress(items: Iterable[T], description: str, every: int | None = None, total: int | None = None) -> Iterator[T]:
    """Yield from ``items``, logging ``description: i/total (elapsed)`` every ``every`` items and at the end.

    ``total`` defaults to ``len(items)`` when it has one; ``every`` defaults to
    about a tenth of it (or 100 without a total).
    """
    if not isinstance(description, str) or not description:
        raise ValueError(f"description must be a non-empty string, got {description!r}")
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise ValueError(f"total must be a non-negative integer, got {total!r}")
    if every is None:
        every = max(1, (total or 1000) // 10)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    start = time.perf_counter()
    count = 0
    of = f"/{total}" if total is not None else ""
    for item in items:
        yield item
        count += 1
        if count % every == 0 and count != total:
            log(f"{description}: {count}{of} ({time.perf_counter() - start:.1f} s)")
    log(f"{description}: done, {count}{of} in {time.perf_counter() - start:.1f} s")
