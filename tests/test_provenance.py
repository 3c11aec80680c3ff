"""What results depend on (rl2llm.provenance) and progress for the build log (rl2llm.progress)."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from rl2llm import progress as progress_module
from rl2llm.progress import log, progress
from rl2llm.provenance import (
    artifact_dir, artifact_key, module_closure, notebook_inputs, package_modules,
)

REPO = Path(__file__).resolve().parents[1]


def make_package(root: Path, name: str = "toypkg") -> Path:
    """A small package: a <- b (relative), c <- b (absolute), d imported by string, e alone."""
    package = root / name
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from .b import B\nA = B\n",
        "b.py": "import numpy as np\nB = 1\n",
        "c.py": f"from {name} import b\nimport scipy.sparse\nC = b.B\n",
        "d.py": "D = 4\n",
        "e.py": "import importlib\nmod = importlib.import_module('" + name + ".d')\n",
        "sub/__init__.py": "from ..b import B\n",
        "sub/f.py": "from . import g\n",
        "sub/g.py": "G = 7\n",
        "data.json": "{}\n",
    }
    for relative, text in files.items():
        (package / relative).write_text(text)
    (root / "pyproject.toml").write_text("[project]\nname = 'toypkg'\n")
    return package


@pytest.fixture
def package(tmp_path) -> Path:
    return make_package(tmp_path)


def test_package_modules_names_every_module(package):
    assert set(package_modules(package)) == {
        "toypkg", "toypkg.a", "toypkg.b", "toypkg.c", "toypkg.d", "toypkg.e",
        "toypkg.sub", "toypkg.sub.f", "toypkg.sub.g"}


@pytest.mark.parametrize("source, expected", [
    ("from toypkg.a import A", {"toypkg", "toypkg.a", "toypkg.b"}),              # relative, transitive
    ("from toypkg import c", {"toypkg", "toypkg.c", "toypkg.b"}),                # `from pkg import module`
    ("import toypkg.e", {"toypkg", "toypkg.e", "toypkg.d"}),                      # importlib by string
    ("from toypkg.sub.f import g", {"toypkg", "toypkg.sub", "toypkg.sub.f", "toypkg.sub.g", "toypkg.b"}),
    ("import numpy as np\nprint(np.pi)", set()),
    ("%matplotlib inline\nfrom toypkg import d", {"toypkg", "toypkg.d"}),       # magics are skipped
])
def test_module_closure_follows_imports(package, source, expected):
    modules, _, complete = module_closure(package, [source])
    assert modules == expected
    assert complete


def test_module_closure_reports_third_party_imports(package):
    _, top_level, _ = module_closure(package, ["from toypkg import c\nimport gymnasium"])
    assert {"numpy", "scipy", "gymnasium"} <= top_level
    assert "toypkg" not in top_level


def test_unparseable_code_depends_on_the_whole_package(package):
    modules, _, complete = module_closure(package, ["def broken(:\n    pass"])
    assert not complete
    assert modules == set(package_modules(package)), "when in doubt, everything is an input"


def test_notebook_key_changes_with_exactly_its_inputs(package, tmp_path):
    pins = tmp_path / "requirements.txt"
    pins.write_text("numpy==2.4.6\n")
    cells = ["from toypkg.a import A\nprint(A)"]

    def key(extra: str = "small", sources=cells) -> str:
        return notebook_inputs(sources, package, pin_files=[pins], extra=extra).key

    first = key()
    assert key() == first, "the key is deterministic"
    (package / "c.py").write_text("C = 3\n")
    assert key() == first, "a module the notebook does not import is not an input"
    (package / "b.py").write_text("B = 2\n")
    second = key()
    assert second != first, "a module imported transitively is an input"
    (package / "data.json").write_text('{"x": 1}\n')
    third = key()
    assert third != second, "data files of the package are inputs (when in doubt, re-execute)"
    pins.write_text("numpy==2.4.7\n")
    fourth = key()
    assert fourth != third, "the pinned versions are an input"
    assert key(extra="large") != fourth, "the scale switch is an input"
    assert key(sources=["from toypkg.a import A\nprint(A + 1)"]) != fourth, "the code cells are an input"


def test_notebook_inputs_say_what_they_hold(package):
    inputs = notebook_inputs(["from toypkg import c\nimport numpy"], package)
    assert inputs.modules == ("toypkg", "toypkg.b", "toypkg.c")
    assert inputs.libraries == ("numpy", "scipy")
    assert "toypkg/c.py" in inputs.files and "toypkg/a.py" not in inputs.files
    assert len(inputs.package_fingerprint) == 12


def test_the_real_lecture_1_imports_what_it_should():
    import re

    text = (REPO / "book" / "lectures" / "01-mdps-bellman.md").read_text()
    cells = [re.sub(r"(?m)^:.*\n", "", cell) for cell in re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S)]
    inputs = notebook_inputs(cells, REPO / "code" / "rl2llm")
    assert inputs.complete
    assert {"rl2llm.dp", "rl2llm.mdp"} <= set(inputs.modules)
    assert "rl2llm.provenance" not in inputs.modules
    assert "gymnasium" in inputs.libraries


@pytest.mark.parametrize("call, match", [
    (lambda: package_modules(42), "package_dir must be a path"),
    (lambda: package_modules("/nonexistent/pkg"), "package_dir must be a package directory"),
    (lambda: module_closure(REPO / "code" / "rl2llm", "import numpy"), "sources must be an iterable"),
    (lambda: module_closure(REPO / "code" / "rl2llm", [42]), "sources must hold strings"),
    (lambda: artifact_key(), "at least one producer"),
    (lambda: artifact_key(42), "producers must be"),
    (lambda: artifact_key(artifact_key, config={"f": object()}), "config must be JSON-serialisable"),
    (lambda: artifact_dir("", "ab12"), "name must be"),
    (lambda: artifact_dir("../up", "ab12"), "name must be"),
    (lambda: artifact_dir("model", "not hex"), "key must be a hex string"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_artifact_key_follows_the_producing_code(tmp_path, monkeypatch):
    make_package(tmp_path, "zoopkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("zoopkg")]:
        del sys.modules[name]
    a = importlib.import_module("zoopkg.a")
    first = artifact_key(a, config={"steps": 10})
    assert artifact_key(a, config={"steps": 10}) == first
    assert artifact_key(a, config={"steps": 20}) != first, "the configuration is part of the key"
    (tmp_path / "zoopkg" / "c.py").write_text("C = 30\n")
    assert artifact_key(a, config={"steps": 10}) == first, "an unrelated module is not"
    (tmp_path / "zoopkg" / "b.py").write_text("B = 2\n")
    assert artifact_key(a, config={"steps": 10}) != first, "a module the producer imports is"


def test_artifact_dir_is_keyed(tmp_path, monkeypatch):
    monkeypatch.setenv("RL2LLM_ARTIFACTS", str(tmp_path))
    one = artifact_dir("tiny-gpt", "ab12")
    assert one == tmp_path / "tiny-gpt-ab12" and one.is_dir()
    assert artifact_dir("tiny-gpt", "cd34") != one


def test_progress_goes_to_the_build_log_file(tmp_path, monkeypatch):
    target = tmp_path / "progress.log"
    monkeypatch.setenv("RL2LLM_PROGRESS_FILE", str(target))
    assert list(progress(range(5), "training", every=2)) == [0, 1, 2, 3, 4]
    lines = target.read_text().splitlines()
    assert lines[0].startswith("training: 2/5 (") and lines[1].startswith("training: 4/5 (")
    assert lines[-1].startswith("training: done, 5/5 in ")
    log("two\nlines")
    assert target.read_text().splitlines()[-1] == "two lines"


def test_progress_goes_to_stderr_outside_the_build(monkeypatch, capsys):
    monkeypatch.delenv("RL2LLM_PROGRESS_FILE", raising=False)
    list(progress(iter(range(3)), "unsized", every=1))
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("unsized: 1 (") and err[-1].startswith("unsized: done, 3 in ")


@pytest.mark.parametrize("kwargs, match", [
    (dict(description=""), "description must be"),
    (dict(description="x", every=0), "every must be"),
    (dict(description="x", every=True), "every must be"),
    (dict(description="x", total=-1), "total must be"),
])
def test_progress_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        list(progress(range(3), **kwargs))
    with pytest.raises(TypeError, match="message must be a string"):
        progress_module.log(3)
