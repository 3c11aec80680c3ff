"""A sandbox for the code a language model writes: Lecture 16's verifiable reward.

Lecture 16 rewards the code model with the fraction of unit tests its program
passes. The program is untrusted: a small model that is being optimised for
reward can write ``while True: pass``, allocate without bound, fork, delete
files or open a socket, by accident or because that happened to score. :func:`run`
runs a task's tests on a program in a fresh Python process and, before the
program runs, installs in that process:

* **resource limits**: CPU seconds, address space (``memory_mb``), and a file
  size of 0 (no byte can be written to a file);
* **an audit hook** (:func:`sys.addaudithook`, PEP 578; once added it cannot be
  removed) that refuses the events a test of a pure function never needs:
  starting processes (``os.fork``, ``os.system``, ``os.exec*``,
  ``os.posix_spawn``, ``subprocess.Popen``), sockets, ``ctypes``, opening a file
  for writing, deleting, renaming or creating files and folders, changing
  limits, sending signals, and the introspection routes to the
  harness's own frames and objects (``sys._getframe``, traceback frames, ``gc``);
  and it refuses to import the modules that reach around those events
  (``ctypes``, ``_posixsubprocess``, ``multiprocessing``, ``socket``, ...;
  a module the interpreter loaded at start-up, such as ``posix``, is already
  there, which is why the events themselves are refused too);
* **a wall-clock timeout** after which the whole process group is killed.

The child only reports what the function returned, behind a random marker line
that must appear exactly once; the parent compares the values with the expected
ones (which the child never sees), so printing "all tests passed" or forging
the marker earns nothing. Any refusal, crash or timeout makes the failing tests
count as failed; a program that breaks the harness scores 0.

What this is not: a security boundary against a determined adversary. Audit
hooks are a CPython feature for *observing* a process; known techniques
(memory corruption through a C extension, bugs in the interpreter) get around
them, reading files is still allowed, and the process runs as the same user.
Running code you do not trust needs an operating-system sandbox: a container or
a virtual machine with no network, seccomp, a separate user. This module is
enough for the book's purpose: a 0.4M-parameter model's attempts at ten-line
functions, on the reader's own machine, where the danger is an accident, not
an attack.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time

from rl2llm import _validate as check
from rl2llm.corpora import Task

__all__ = ["run", "reward", "BLOCKED_EVENTS", "BLOCKED_MODULES", "OUTPUT_LIMIT"]

#: Audit events refused in the child (exact names, or a prefix ending in ".").
BLOCKED_EVENTS = (
    "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.kill",
    "os.killpg", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.link", "os.symlink",
    "os.truncate", "os.chmod", "os.chown", "os.utime", "os.chdir", "os.chroot", "os.putenv",
    "os.unsetenv", "os.setxattr", "os.removexattr", "os.startfile", "subprocess.", "socket.",
    "ctypes.", "shutil.", "mmap.", "resource.", "signal.", "sys._getframe",
    "sys._current_frames", "sys.setprofile", "sys.settrace", "sys.addaudithook", "gc.",
    "object.__getattr__", "object.__setattr__", "object.__delattr__", "code.__new__",
    "function.__new__", "marshal.", "pickle.find_class", "builtins.input", "urllib.", "http.",
    "ftplib.", "smtplib.", "telnetlib.", "poplib.", "imaplib.", "nntplib.", "webbrowser.",
    "pty.", "fcntl.", "os.fchmod", "os.fchown", "os.lchown", "os.lchmod", "os.chflags",
    "os.mkfifo", "os.mknod", "os.memfd_create", "os.eventfd", "os.pidfd_open",
)

#: Modules the candidate may not import: each reaches processes, memory or the network
#: around the audited functions (``_posixsubprocess.fork_exec`` is not audited).
BLOCKED_MODULES = (
    "ctypes", "_ctypes", "_posixsubprocess", "subprocess", "multiprocessing", "_multiprocessing",
    "socket", "_socket", "ssl", "_ssl", "asyncio", "select", "selectors", "mmap", "pty", "fcntl",
    "resource", "signal", "concurrent", "gc", "inspect", "importlib",
    "_imp", "marshal", "pickle", "_pickle", "shutil", "tempfile", "urllib", "http", "ftplib",
    "smtplib", "telnetlib", "webbrowser", "sysconfig", "_xxsubinterpreters", "faulthandler",
    "tracemalloc", "cffi", "_cffi_backend",
)

#: Bytes of the child's standard output the parent reads at most (the rest is refused).
OUTPUT_LIMIT = 1 << 20

_HARNESS = r"""
import json, sys

def _main():
    import io, resource
    data = json.loads(sys.stdin.read())
    marker, write, flush = data["marker"], sys.stdout.write, sys.stdout.flush
    resource.setrlimit(resource.RLIMIT_AS, (data["memory"], data["memory"]))
    resource.setrlimit(resource.RLIMIT_CPU, (data["cpu"], data["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    blocked_events = tuple(data["events"])
    blocked_modules = frozenset(data["modules"])
    write_flags = 0
    import os
    for name in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE"):
        write_flags |= getattr(os, name, 0)
    dumps = json.dumps

    def hook(event, args):
        if event == "open":
            mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & write_flags):
                raise PermissionError("sandbox: opening a file for writing is refused")
            return
        if event == "import":
            if str(args[0]).split(".")[0] in blocked_modules:
                raise ImportError("sandbox: importing " + str(args[0]) + " is refused")
            return
        for name in blocked_events:
            if event == name or (name.endswith(".") and event.startswith(name)) or (
                    not name.endswith(".") and event.startswith(name + ".")) or (
                    name in ("os.exec", "os.spawn") and event.startswith(name)):
                raise PermissionError("sandbox: " + event + " is refused")

    sink = io.StringIO()
    sys.stdout = sys.stderr = sink
    results = []
    env = {"__name__": "candidate", "__builtins__": __builtins__}
    source, entry, cases = data["code"], data["entry"], data["args"]
    del data
    sys.addaudithook(hook)
    try:
        exec(compile(source, "<candidate>", "exec"), env)
        f = env[entry]
    except BaseException:
        f = None
    for args in cases:
        try:
            results.append({"value": json.loads(dumps(f(*args)))})
        except BaseException:
            results.append(None)
    try:
        text = dumps(results)
    except BaseException:
        text = "null"
    write(marker + text + "\n")
    flush()

_main()
"""


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child's process group, then the child itself (it may have left its group)."""
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            kill()
        except (ProcessLookupError, PermissionError, OSError):
            pass


def _check_task(task) -> Task:
    if not isinstance(task, Task) or task.kind != "code":
        raise TypeError(f"task must be a code Task (from rl2llm.corpora.code_tasks), got {check.describe(task)}")
    return task


def run(task: Task, code: str, *, timeout: float = 5.0, memory_mb: int = 256) -> tuple[int, int]:
    """Run ``task``'s unit tests on ``code`` (a whole program defining ``task.entry_point``).

    Returns ``(passed, total)``. The code runs in a fresh ``python -I -S``
    process in an empty temporary folder, with the resource limits, the audit
    hook and the blocked imports described in the module's docstring, and a
    wall-clock ``timeout`` in seconds for the whole run; a timeout, a crash, a
    refused action that escapes the program, an output of more than
    :data:`OUTPUT_LIMIT` bytes or a missing or repeated result line makes every
    test count as failed. A refused action the program catches only fails what
    it breaks. Not a security boundary (see the module's docstring).
    """
    task = _check_task(task)
    if not isinstance(code, str):
        raise TypeError(f"code must be a string, got {check.describe(code)}")
    timeout = check.as_real("timeout", timeout, 0.0, low_open=True)
    memory_mb = check.as_int("memory_mb", memory_mb, 64)
    total = len(task.tests)
    marker = "@@rl2llm-sandbox-" + secrets.token_hex(12) + "@@"
    payload = json.dumps({"code": code, "entry": task.entry_point, "args": [list(a) for a, _ in task.tests],
                          "memory": memory_mb * 2**20, "cpu": max(1, int(timeout + 0.999)),
                          "marker": marker, "events": list(BLOCKED_EVENTS), "modules": list(BLOCKED_MODULES)})
    chunks: list[bytes] = []
    with tempfile.TemporaryDirectory(prefix="rl2llm-sandbox-") as workdir:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HARNESS], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=workdir,
                                env={"PATH": "/usr/bin:/bin"}, start_new_session=True)
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read(OUTPUT_LIMIT + 1)), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        try:
            proc.stdin.write(payload.encode())
            proc.stdin.close()
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            reader.join(timeout=max(0.05, deadline - time.monotonic()))
            finished = not reader.is_alive()
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            finished = False
        finally:
            _kill(proc)
            reader.join(timeout=1.0)
            for stream in (proc.stdout, proc.stdin):
                try:
                    stream.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
    out = chunks[0] if chunks else b""
    if not finished or len(out) > OUTPUT_LIMIT:
        return 0, total
    lines = [ln[len(marker):] for ln in out.decode("utf-8", "replace").splitlines() if ln.startswith(marker)]
    if len(lines) != 1:
        return 0, total
    try:
        results = json.loads(lines[0])
    except ValueError:
        return 0, total
    if not isinstance(results, list) or len(results) != total:
        return 0, total
    passed = sum(isinstance(r, dict) and "value" in r and r["value"] == expected and type(r["value"]) is type(expected)
                 for r, (_, expected) in zip(results, task.tests))
    return int(passed), total


def reward(task: Task, completion: str, *, timeout: float = 5.0, memory_mb: int = 256) -> float:
    """The code reward of Lecture 16: the fraction of ``task``'s tests that ``prompt + completion`` passes."""
    task = _check_task(task)
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a string, got {check.describe(completion)}")
    passed, total = run(task, task.prompt + completion, timeout=timeout, memory_mb=memory_mb)
    return passed / total
