"""What a result was computed from: the package modules behind it, and keys that change when they do.

Every chapter of the book is an executed notebook, and some results (trained
models, generated corpora: the model zoo of Part III) are cached and shared
between chapters. A cached result is only as good as the code that produced
it, so both are keyed by their *inputs*:

* the modules of ``rl2llm`` the notebook (or the producing function) imports,
  directly or through other modules of the package, found by reading their
  source (:func:`module_closure`), never by name alone;
* the files that pin the versions that ran it (``requirements.txt``);
* anything else that changes the result (the scale switch, a configuration).

Change any of them and the key changes, so the result is recomputed; change
something else and it is not. When the source cannot be analysed (a syntax
error, a magic the parser does not know), the key falls back to the whole
package: a needless re-execution is cheap, a stale result is a bug.

The build (``book/_ext/rl2llm_book.py``) uses :func:`notebook_inputs` to decide
which chapters re-execute; code that caches a shared artifact uses
:func:`artifact_key` and :func:`artifact_dir`.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import platform
import sys
import threading
import types
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterable

#: Libraries whose versions a page of the book reports when a chapter uses them.
#: ``ast.parse`` is not thread-safe on Python 3.11 (threads parsing at once can fail with "AST constructor
#: recursion depth mismatch"), so the parses of this module take turns.
_PARSE_LOCK = threading.Lock()

REPORTED_LIBRARIES = ("numpy", "scipy", "torch", "gymnasium", "transformers", "trl", "accelerate", "matplotlib")
#: Import name -> distribution name, where they differ.
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "PyYAML", "PIL": "pillow"}


def _check_package_dir(package_dir) -> Path:
    if not isinstance(package_dir, (str, os.PathLike)):
        raise TypeError(f"package_dir must be a path, got {type(package_dir).__name__}")
    path = Path(package_dir)
    if not (path / "__init__.py").is_file():
        raise ValueError(f"package_dir must be a package directory with an __init__.py, got {str(path)!r}")
    return path


def package_modules(package_dir) -> dict[str, Path]:
    """Every module of the package in ``package_dir``: dotted name -> file (``__init__.py`` for packages)."""
    root = _check_package_dir(package_dir)
    name = root.name
    modules = {}
    for file in sorted(root.rglob("*.py")):
        if "__pycache__" in file.parts:
            continue
        parts = list(file.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([name, *parts])] = file
    return modules


def _strip_magics(source: str) -> str:
    """Drop IPython magics and shell escapes, which are not Python (the line count is kept)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!", "?")) else line for line in source.splitlines())


@dataclass
class _Imports:
    modules: set[str] = field(default_factory=set)   # absolute dotted names, as imported
    strings: set[str] = field(default_factory=set)   # string constants (importlib.import_module("..."))
    parsed: bool = True


def _imports_of(source: str, current: str | None = None, is_package: bool = False) -> _Imports:
    """The modules a piece of source imports. ``current`` is its own module name (for relative imports)."""
    found = _Imports()
    try:
        with _PARSE_LOCK:
            tree = ast.parse(_strip_magics(source))
    except SyntaxError:
        found.parsed = False
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if current is None:
                    continue
                base = current.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.modules.add(module)
            # `from pkg import name` may import the submodule pkg.name
            found.modules.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 200:
            found.strings.add(node.value)
    return found


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def module_closure(package_dir, sources: Iterable[str], roots: Iterable[str] = ()) -> tuple[set[str], set[str], bool]:
    """The package modules that ``sources`` (code, as strings) import, directly or transitively.

    ``roots`` are package modules (dotted names) to start from as well.

    Returns ``(modules, top_level_imports, complete)``: the dotted names of the
    package's modules that run (parents' ``__init__`` included, since importing
    ``pkg.a`` runs ``pkg/__init__.py``); the top-level names of everything
    imported along the way (to report third-party libraries); and whether every
    source could be parsed. If one could not, ``modules`` is the whole package.
    """
    if isinstance(sources, str):
        raise TypeError("sources must be an iterable of source strings, not one string")
    available = package_modules(package_dir)
    package = Path(package_dir).name
    complete = True
    top_level: set[str] = set()
    todo: list[str] = []

    def visit(found: _Imports) -> None:
        nonlocal complete
        complete &= found.parsed
        for name in found.modules | {s for s in found.strings if s in available}:
            top_level.add(name.split(".")[0])
            for candidate in _with_parents(name):
                if candidate in available:
                    todo.append(candidate)

    for source in sources:
        if not isinstance(source, str):
            raise TypeError(f"sources must hold strings, got {type(source).__name__}")
        visit(_imports_of(source))
    for name in roots:
        if name not in available:
            raise ValueError(f"roots must name modules of the package in {package_dir}, got {name!r}")
        todo.extend(candidate for candidate in _with_parents(name) if candidate in available)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        file = available[name]
        visit(_imports_of(file.read_text(encoding="utf8"), current=name, is_package=file.name == "__init__.py"))
    if not complete:
        seen = set(available)
    top_level.discard(package)
    return seen, top_level, complete


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _package_files(package_dir: Path, modules: set[str]) -> dict[str, str]:
    """Relative path -> content hash of the given modules, every non-Python file of the package, and the
    distribution's pyproject.toml (data files and build settings can change any result)."""
    available = package_modules(package_dir)
    root = package_dir.parent
    files = {available[name] for name in modules}
    files |= {f for f in package_dir.rglob("*") if f.is_file() and f.suffix not in {".py", ".pyc"}
              and "__pycache__" not in f.parts and ".egg-info" not in str(f)}
    if (root / "pyproject.toml").is_file():
        files.add(root / "pyproject.toml")
    return {f.relative_to(root).as_posix(): _sha256(f.read_bytes()) for f in sorted(files)}


def library_versions(top_level: Iterable[str]) -> dict[str, str]:
    """Installed versions of the reported libraries among ``top_level`` import names."""
    versions = {}
    for name in sorted(set(top_level)):
        if name not in REPORTED_LIBRARIES:
            continue
        try:
            versions[name] = metadata.version(_DISTRIBUTIONS.get(name, name))
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class Inputs:
    """What a notebook's outputs depend on, and the key that summarises it."""

    key: str                      #: changes when any input changes
    package_fingerprint: str      #: hash of the package files it imported (shown on each page)
    modules: tuple[str, ...]      #: the package modules it imports, transitively
    libraries: tuple[str, ...]    #: the reported third-party libraries it imports
    files: dict                   #: input name -> content hash (to say *what* changed)
    complete: bool                #: False when a source could not be parsed (then: the whole package)


def notebook_inputs(code_sources: Iterable[str], package_dir, pin_files: Iterable = (), extra: str = "") -> Inputs:
    """The inputs of a notebook whose code cells are ``code_sources``.

    ``pin_files`` are files every result depends on (``requirements.txt``);
    ``extra`` is any other setting that changes results (the scale switch).
    """
    package_dir = _check_package_dir(package_dir)
    sources = list(code_sources)
    modules, top_level, complete = module_closure(package_dir, sources)
    package_files = _package_files(package_dir, modules)
    files = dict(package_files)
    files["<code cells>"] = _sha256("\n\x00\n".join(sources).encode())
    for pin in pin_files:
        pin = Path(pin)
        files[pin.name] = _sha256(pin.read_bytes()) if pin.is_file() else "missing"
    files["<settings>"] = _sha256(extra.encode())
    key = _sha256(json.dumps(files, sort_keys=True).encode())[:16]
    fingerprint = _sha256(json.dumps(package_files, sort_keys=True).encode())[:12]
    return Inputs(key=key, package_fingerprint=fingerprint, modules=tuple(sorted(modules)),
                  libraries=tuple(sorted(library_versions(top_level))), files=files, complete=complete)


# --------------------------------------------------------------------------- shared artifacts


def _package_dir_of(module: types.ModuleType) -> Path:
    top = sys.modules[module.__name__.split(".")[0]]
    if not getattr(top, "__file__", None):
        raise ValueError(f"producers must come from a package with source files, got {module.__name__!r}")
    return Path(top.__file__).parent


def artifact_key(*producers, config=None) -> str:
    """A key for a cached artifact (a trained model, a corpus) made by ``producers`` with ``config``.

    ``producers`` are the functions, classes or modules of the package that make
    the artifact. The key hashes the source of every package module they import,
    transitively, the versions of the third-party libraries those modules use,
    the Python version and ``config`` (anything JSON-serialisable: sizes, seeds,
    steps). Edit the code that trains a model and its key changes; edit an
    unrelated module and it does not.
    """
    if not producers:
        raise ValueError("artifact_key needs at least one producer (a function, class or module of the package)")
    modules = []
    for producer in producers:
        module = producer if isinstance(producer, types.ModuleType) else inspect.getmodule(producer)
        if module is None:
            raise TypeError(f"producers must be functions, classes or modules, got {producer!r}")
        modules.append(module)
    package_dir = _package_dir_of(modules[0])
    if any(_package_dir_of(m) != package_dir for m in modules):
        raise ValueError("producers must all come from one package")
    names, top_level, _ = module_closure(package_dir, [], roots=[m.__name__ for m in modules])
    try:
        config_text = json.dumps(config, sort_keys=True)
    except TypeError as error:
        raise TypeError(f"config must be JSON-serialisable (numbers, strings, lists, dicts): {error}") from None
    payload = {
        "files": _package_files(package_dir, names),
        "versions": library_versions(top_level | set(REPORTED_LIBRARIES)),
        "python": platform.python_version(),
        "config": config_text,
    }
    return _sha256(json.dumps(payload, sort_keys=True).encode())[:16]


def artifact_dir(name: str, key: str) -> Path:
    """The directory for artifact ``name`` with ``key`` (created if needed).

    It lives under ``$RL2LLM_ARTIFACTS`` (the build sets it to
    ``_build/artifacts``), else ``~/.cache/rl2llm/artifacts``. The name is for
    people; the key decides: a new key is a new, empty directory.
    """
    if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"name must be a non-empty string of letters, digits, '-' and '_', got {name!r}")
    if not isinstance(key, str) or not key or not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"key must be a hex string from artifact_key, got {key!r}")
    base = Path(os.environ.get("RL2LLM_ARTIFACTS") or Path.home() / ".cache" / "rl2llm" / "artifacts")
    path = base / f"{name}-{key}"
    path.mkdir(parents=True, exist_ok=True)
    return path
