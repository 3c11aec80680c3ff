"""rl2llm.sandbox: hostile programs score 0 and harm nothing; correct programs still pass."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from rl2llm import corpora, sandbox


@pytest.fixture(scope="module")
def task():
    return corpora.code_tasks(1, 0)[0]


def _program(task, action: str, *, catch: bool = False) -> str:
    """``action`` at module level, then the correct function (which, when ``catch``, only answers
    if the action was refused: a pass then proves the refusal happened and the harness still works)."""
    indented = "".join("    " + line + "\n" for line in action.splitlines())
    if catch:
        head = f"try:\n{indented}    _refused = False\nexcept BaseException:\n    _refused = True\n"
        doc_end = task.prompt.rstrip("\n").rsplit('"""', 1)[0] + '"""\n'
        return head + doc_end + "    if not _refused:\n        return None\n" + task.reference
    return action + "\n" + task.prompt + task.reference


def test_correct_program_passes_every_test(task):
    assert sandbox.run(task, task.prompt + task.reference) == (len(task.tests), len(task.tests))
    assert sandbox.reward(task, task.reference) == 1.0


def test_wrong_program_scores_what_it_passes(task):
    code = task.prompt + "    return None\n"
    assert sandbox.run(task, code) == (0, len(task.tests))


def test_agrees_with_corpora_run_tests_on_ordinary_programs():
    for t in corpora.code_tasks(6, 3):
        for body in (t.reference, "    return 0\n", "    return xs\n", "    syntax error(\n"):
            code = t.prompt + body
            assert sandbox.run(t, code) == corpora.run_tests(t, code)


def test_infinite_loop_is_killed_at_the_timeout(task):
    start = time.monotonic()
    code = f"def {task.entry_point}(*a):\n    while True:\n        pass\n"
    assert sandbox.run(task, code, timeout=1.0) == (0, len(task.tests))
    assert time.monotonic() - start < 5


def test_unbounded_allocation_fails_without_taking_the_memory(task):
    code = f"def {task.entry_point}(*a):\n    x = []\n    while True:\n        x.append(' ' * 10**7)\n"
    assert sandbox.run(task, code, timeout=5.0, memory_mb=128) == (0, len(task.tests))


HOSTILE = {
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "os.system": "import os\nos.system('touch {marker}')",
    "subprocess": "import subprocess\nsubprocess.run(['touch', '{marker}'])",
    "posix.system through sys.modules": "import sys\nsys.modules['posix'].system('touch {marker}')",
    "posix_spawn": "import sys\nsys.modules['posix'].posix_spawn('/usr/bin/touch', ['touch', '{marker}'], {{}})",
    "exec": "import sys\nsys.modules['posix'].execv('/usr/bin/touch', ['touch', '{marker}'])",
    "write a file": "open('{marker}', 'w').write('x')",
    "append to a file": "open('{marker}', 'a')",
    "create a file with os.open": "import sys\np = sys.modules['posix']\np.open('{marker}', 0o100 | 0o1)",
    "write in the working folder": "open('pwned.txt', 'w')",
    "delete a file": "import sys\nsys.modules['posix'].remove('{victim}')",
    "rename a file": "import sys\nsys.modules['posix'].rename('{victim}', '{marker}')",
    "mkdir": "import sys\nsys.modules['posix'].mkdir('{marker}')",
    "socket": "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))",
    "_socket": "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))",
    "ctypes": "import ctypes\nctypes.CDLL(None).system(b'touch {marker}')",
    "multiprocessing": "import multiprocessing",
    "_posixsubprocess": "import _posixsubprocess",
    "kill the parent": "import sys\nsys.modules['posix'].kill({ppid}, 9)",
    "raise own limits": "import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, (10**9, 10**9))",
    "find the harness's frame": "import sys\nsys._getframe(1).f_locals",
    "frame through a traceback": "try:\n    1/0\nexcept Exception as e:\n    e.__traceback__.tb_frame.f_back.f_locals",
    "gc": "import gc\ngc.get_objects()",
}


@pytest.fixture()
def targets(tmp_path):
    marker = tmp_path / "pwned"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    yield {"marker": marker, "victim": victim, "port": server.getsockname()[1], "server": server}
    server.close()


def _fill(action, targets):
    return action.format(marker=targets["marker"], victim=targets["victim"], port=targets["port"],
                         ppid=os.getpid())


def _nothing_happened(targets):
    assert not targets["marker"].exists(), "the hostile program created a file"
    assert targets["victim"].read_text() == "keep", "the hostile program changed a file"
    assert not list(Path(os.getcwd()).glob("pwned*")), "the hostile program wrote in the working folder"
    try:
        conn, _ = targets["server"].accept()
    except (socket.timeout, TimeoutError, BlockingIOError):
        conn = None
    assert conn is None, "the hostile program reached the local server"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_scores_zero_and_harms_nothing(task, targets, name):
    code = _program(task, _fill(HOSTILE[name], targets))
    assert sandbox.run(task, code, timeout=3.0) == (0, len(task.tests))
    _nothing_happened(targets)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_action_is_refused_not_just_failing(task, targets, name):
    """The same action, caught: the function answers only if the action raised, so a full
    score shows the sandbox refused it (and still runs the program's tests afterwards)."""
    if name == "fork bomb":
        action = "import os\nos.fork()\nos._exit(0)"   # a single fork, guarded: a child would exit at once
    else:
        action = _fill(HOSTILE[name], targets)
    code = _program(task, action, catch=True)
    assert sandbox.run(task, code, timeout=3.0) == (len(task.tests), len(task.tests))
    _nothing_happened(targets)


def test_forged_result_line_scores_zero(task):
    forge = ("import sys\nsys.__stdout__.write('@@rl2llm-sandbox-' + '0' * 24 + '@@' + "
             f"'[{{\"value\": 1}}]' * 0 + '[' + ','.join(['{{\"value\": 1}}'] * {len(task.tests)}) + ']\\n')\n"
             "sys.__stdout__.flush()")
    code = forge + "\n" + f"def {task.entry_point}(*a):\n    return 1\n"
    assert sandbox.run(task, code) == (0, len(task.tests))


def test_printing_claims_earn_nothing(task):
    code = f"print('all tests passed')\ndef {task.entry_point}(*a):\n    print('ok')\n    return None\n"
    assert sandbox.run(task, code) == (0, len(task.tests))


def test_flood_of_output_scores_zero(task):
    code = ("import sys\nw = sys.__stdout__.write\nfor _ in range(10**5):\n    w('x' * 1000)\n"
            + task.prompt + task.reference)
    assert sandbox.run(task, code, timeout=5.0) == (0, len(task.tests))


def test_overhead_per_call_is_small(task):
    code = task.prompt + task.reference
    sandbox.run(task, code)
    start = time.perf_counter()
    for _ in range(3):
        sandbox.run(task, code)
    assert (time.perf_counter() - start) / 3 < 2.0   # a fresh interpreter: tens of milliseconds idle


def test_runs_from_threads(task):
    out = []
    threads = [threading.Thread(target=lambda: out.append(sandbox.run(task, task.prompt + task.reference)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [(len(task.tests), len(task.tests))] * 3


def test_bad_arguments_are_named(task):
    arithmetic = corpora.arithmetic_problems(1, 0)[0]
    with pytest.raises(TypeError, match="task"):
        sandbox.run(arithmetic, "x")
    with pytest.raises(TypeError, match="task"):
        sandbox.run("def f(): pass", "x")
    with pytest.raises(TypeError, match="code"):
        sandbox.run(task, b"def f(): pass")
    with pytest.raises(ValueError, match="timeout"):
        sandbox.run(task, "x", timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        sandbox.run(task, "x", memory_mb=1)
    with pytest.raises(TypeError, match="completion"):
        sandbox.reward(task, None)
