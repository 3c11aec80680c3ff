"""The book's own Sphinx extension: two editions, a cache that is never stale, page furniture.

What it does, in build order:

* **Per-chapter inputs** (``env-get-outdated``, ``source-read``). For each
  chapter the build reads which modules of ``rl2llm`` its code cells import,
  directly or through other modules (:mod:`rl2llm.provenance`), and hashes them
  with ``requirements.txt`` and the scale switch into a key that goes into the
  notebook's kernelspec. jupyter-cache matches a notebook by its code and its
  kernelspec, so a chapter re-executes exactly when its code or one of its
  inputs changes; a chapter whose inputs changed is re-read even if its source
  did not. ``make.py build --rerun NN`` forces one chapter.
* **Progress and provenance.** The build log says which chapter executes and
  why, copies the chapter's progress lines (:mod:`rl2llm.progress`) as they
  come, and says how long it took. Each execution is recorded (date, seconds,
  cores, accelerator, library versions, package fingerprint) in
  ``rl2llm-provenance.json`` next to the cache; every chapter page shows it in
  one line, and ``{execution-status}`` tabulates it with the budget and the
  claims checked.
* **Editions.** ``rl2llm_edition`` is ``scientist`` (default) or ``manager``
  (``RL2LLM_EDITION`` in the environment sets it too). Prose for one edition
  sits in an ``{edition}`` block; code cells are tagged ``scientist`` or
  ``manager``; untagged content is in both. The manager edition hides every
  code input, offers no source or notebook download, launch button or
  repository link, and renders from the scientist edition's executed outputs:
  it refuses to build a chapter that would need executing.
* **Checked claims.** A code cell tagged ``check`` asserts a sentence of the
  prose about a computed result (``assert cond, "the claim"``); it runs with
  the chapter, is hidden in both editions, and is counted per chapter. A check
  cell with no assert, or an assert with no message, is a build error.
* **Checks that fail the build** with the file and the marker named: an unknown
  edition, an unknown cell tag (typos such as ``scientst``), a code cell inside
  an ``{edition}`` block, code shown in the manager edition.
* **Page furniture**: a strip at the top of every page with the edition being
  read, a link to the same page (and section) in the other edition, the
  chapter's reading time in this edition, and (scientist edition) the executed
  notebook; under it, the chapter's provenance line.
* ``{library-versions}``: the versions the build ran with (status page).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.errors import SphinxError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

EDITIONS = ("scientist", "manager")
#: Cell tags that mean something to MyST-NB or to this book; anything else is a typo.
KNOWN_TAGS = set(EDITIONS) | {
    "remove-cell", "remove-input", "remove-output", "remove-stderr", "remove-stdout",
    "hide-cell", "hide-input", "hide-output", "raises-exception", "skip-execution",
    "full-width", "margin", "output_scroll", "scroll-output", "scroll-input",
    "check",  # a cell that asserts a claim the prose makes; hidden in both editions
    "solution",  # an exercise's solution: moved to the end of the downloadable notebook
}
#: Reading speeds behind the reading time shown on each chapter.
WORDS_PER_MINUTE = 230
CODE_LINES_PER_MINUTE = 30
SECONDS_PER_FIGURE = 12


class BookSourceError(SphinxError):
    """A chapter's source breaks one of the book's rules."""

    category = "Book source error"


# --------------------------------------------------------------------------- cache


def fingerprint(root: Path, paths: list[str], extra: str = "") -> str:
    """Hash of every file under ``paths`` (relative to ``root``), contents and names, and ``extra``.

    Shown on the status page as the fingerprint of the whole package and the pins;
    re-execution is decided per chapter by :func:`_analyse`, not by this.
    """
    digest = hashlib.sha256(extra.encode())
    for entry in paths:
        path = root / entry
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc" or ".egg-info" in str(file):
                continue
            if not file.exists():
                continue
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


_OLD_CACHE_DIR = re.compile(r"^[0-9a-f]{16}$")


def _on_config_inited(app: Sphinx, config) -> None:
    edition = config.rl2llm_edition
    if edition not in EDITIONS:
        raise BookSourceError(f"rl2llm_edition must be one of {EDITIONS}, got {edition!r}")
    root = Path(app.srcdir)
    config.rl2llm_fingerprint = fingerprint(root, list(config.rl2llm_fingerprint_paths), extra=_scale())
    cache = Path(config.nb_execution_cache_path or root / "_build" / ".jupyter_cache")
    if not cache.is_absolute():
        cache = root / cache
    cache.mkdir(parents=True, exist_ok=True)
    # Before per-chapter keys, the cache lived in one folder per fingerprint of the whole package.
    for old in cache.iterdir():
        if old.is_dir() and _OLD_CACHE_DIR.match(old.name):
            shutil.rmtree(old, ignore_errors=True)
    config.nb_execution_cache_path = str(cache)
    # Shared artifacts (trained models, corpora) are cached next to the execution cache,
    # keyed by rl2llm.provenance.artifact_key; `make.py clean` removes both.
    os.environ.setdefault("RL2LLM_ARTIFACTS", str(cache.parent / "artifacts"))
    # Hidden directories are never sources. Sphinx would read them (sphinx-external-toc's
    # only_build_toc_files skips them, so it does not exclude their files): pytest's
    # .pytest_cache/README.md alone fails a -W build with "document isn't included in any toctree".
    config.exclude_patterns = [*config.exclude_patterns, ".*", "**/.*"]
    if edition == "manager":
        config.nb_remove_code_source = True
        # No code is reachable from the manager edition: no source download, no
        # notebook download, no launch button, no link to the repository or the
        # source of a page.
        options = dict(config.html_theme_options or {})
        options.update(use_download_button=False, use_repository_button=False, use_edit_page_button=False,
                       use_issues_button=False, use_source_button=False, launch_buttons={})
        config.html_theme_options = options
        config.html_show_sourcelink = False
        config.html_copy_source = False
    app.rl2llm_rerun = {name.strip().removesuffix(".md") for name in config.rl2llm_rerun if name.strip()}
    if _scale() == "large":
        # The full setting is for a bigger machine and a patient reader: a cell may take as long as it needs
        # (the per-cell timeout guards the default build's budget, not the large one).
        config.nb_execution_timeout = -1
    logger.info(f"[rl2llm] {edition} edition; execution cache {cache}; scale {_scale()}")


def _scale() -> str:
    # The scale switch changes what chapters compute, so it is part of every key.
    return os.environ.get("RL2LLM_SCALE", "small")


# --------------------------------------------------------------------------- per-chapter inputs


def _read_notebook(app: Sphinx, path: Path, content: str):
    """The notebook MyST-NB would make of ``content``, or None for a page that is not a notebook."""
    from myst_nb.core.read import create_nb_reader

    env = app.env
    reader = create_nb_reader(str(path), env.myst_config, env.mystnb_config, content)
    if reader is None:
        return None
    notebook = reader.read(content)
    if not any(cell.cell_type == "code" for cell in notebook.cells):
        return None
    return notebook


def _with_key(content: str, key: str) -> str:
    """``content`` with the inputs key in its front matter's kernelspec, same number of lines.

    jupyter-cache matches a notebook by its code cells and its kernelspec, so a key
    there makes a chapter's cache entry depend on everything the key hashes.
    """
    import yaml

    lines = content.split("\n")
    if not lines or lines[0].strip() != "---" or "---" not in [line.strip() for line in lines[1:]]:
        raise BookSourceError("a notebook chapter must start with a front matter block (---) holding its kernelspec")
    close = 1 + [line.strip() for line in lines[1:]].index("---")
    data = yaml.safe_load("\n".join(lines[1:close])) or {}
    data.setdefault("kernelspec", {})["rl2llm_inputs"] = key
    front = [json.dumps(data, sort_keys=True)] + [""] * (close - 2)  # JSON is YAML; keep line numbers
    return "\n".join(["---", *front, *lines[close:]])


def _check_claim_cells(path: Path, content: str, notebook) -> int:
    """Count the claims of the cells tagged ``check``; each must assert, and each assert must say its claim."""
    import ast

    claims = 0
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.cell_type != "code" or "check" not in cell.metadata.get("tags", []):
            continue
        source = cell.source
        first = next((line for line in source.splitlines() if line.strip()), "")
        line = next((i for i, text in enumerate(content.splitlines(), start=1) if first and text == first), "?")
        where = f"{path}:{line}"
        try:
            tree = ast.parse("\n".join("" if s.lstrip().startswith(("%", "!")) else s for s in source.splitlines()))
        except SyntaxError as error:
            raise BookSourceError(f"{where}: the check cell (code cell {number}) is not valid Python: {error}") from None
        asserts = [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]
        if not asserts:
            raise BookSourceError(f"{where}: a cell tagged 'check' must assert the claim it backs "
                                  "(assert <condition>, \"<the claim, in words>\"), and this one asserts nothing")
        for node in asserts:
            if node.msg is None:
                raise BookSourceError(f"{where}: an assert in a check cell has no message; write the claim it "
                                      "checks as the message: assert <condition>, \"<the claim, in words>\"")
        claims += len(asserts)
    return claims


def _analyse(app: Sphinx, docname: str, content: str | None = None) -> dict | None:
    """What a chapter depends on, its cache key, its claims; None for a page without code cells."""
    from jupyter_cache import get_cache
    from rl2llm.provenance import notebook_inputs

    path = Path(app.env.doc2path(docname))
    if content is None:
        content = path.read_text(encoding="utf8")
    memo = app.rl2llm_analysis.get(docname)
    digest = hashlib.sha256(content.encode()).hexdigest()
    if memo and memo[0] == digest:
        return memo[1]
    notebook = _read_notebook(app, path, content)
    if notebook is None:
        result = None
    else:
        root = Path(app.srcdir)
        inputs = notebook_inputs(
            [cell.source for cell in notebook.cells if cell.cell_type == "code"],
            root / app.config.rl2llm_package_dir,
            pin_files=[root / pin for pin in app.config.rl2llm_pin_files],
            extra=_scale(),
        )
        keyed = _with_key(content, inputs.key)
        cache = get_cache(app.env.mystnb_config.execution_cache_path)
        _, hashkey = cache.create_hashed_notebook(_read_notebook(app, path, keyed))
        result = {
            "key": inputs.key, "hashkey": hashkey, "content": keyed, "inputs": inputs,
            "claims": _check_claim_cells(path, content, notebook),
        }
    app.rl2llm_analysis[docname] = (digest, result)
    return result


def _cached_record(app: Sphinx, hashkey: str):
    from jupyter_cache import get_cache
    from jupyter_cache.cache.db import NbCacheRecord

    cache = get_cache(app.env.mystnb_config.execution_cache_path)
    try:
        return cache, NbCacheRecord.record_from_hashkey(hashkey, cache.db)
    except KeyError:
        return cache, None


# The record of each execution (when, how long, on what), by jupyter-cache hash key.
_PROVENANCE_FILE = "rl2llm-provenance.json"


def _provenance_store(app: Sphinx) -> dict:
    path = Path(app.env.mystnb_config.execution_cache_path) / _PROVENANCE_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}


def _save_provenance(app: Sphinx, hashkey: str, record: dict) -> None:
    path = Path(app.env.mystnb_config.execution_cache_path) / _PROVENANCE_FILE
    store = _provenance_store(app)
    store[hashkey] = record
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(store, indent=1, sort_keys=True))
    tmp.replace(path)


def _accelerator(libraries) -> str:
    if "torch" in libraries:
        try:
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001 - a broken CUDA setup still ran on the CPU
            pass
    return "none"


def _why(app: Sphinx, docname: str, analysis: dict) -> str:
    """Which input changed since this chapter last executed (for the build log)."""
    previous = app.rl2llm_last_inputs.get(docname)
    if docname in app.rl2llm_rerun:
        return "re-execution asked for"
    if not previous:
        return "no cached outputs"
    files = analysis["inputs"].files
    changed = sorted(name for name in set(files) | set(previous) if files.get(name) != previous.get(name))
    return ("changed: " + ", ".join(changed)) if changed else "no cached outputs for these inputs"


def _on_env_get_outdated(app: Sphinx, env, added, changed, removed) -> list[str]:
    """Chapters whose inputs (package modules, pins, scale) changed must be re-read, and so re-executed."""
    extra = []
    for docname in sorted(env.found_docs - set(added) - set(changed)):
        data = env.rl2llm_chapters.get(docname)
        if docname in env.rl2llm_status_docs:
            extra.append(docname)  # the status page lists every chapter: always fresh
            continue
        if data is None:
            continue
        analysis = _analyse(app, docname)
        if analysis is None or analysis["key"] != data.get("key") or docname in app.rl2llm_rerun:
            extra.append(docname)
            continue
        if app.config.rl2llm_edition == "scientist" and _cached_record(app, analysis["hashkey"])[1] is None:
            extra.append(docname)  # its outputs were evicted from the cache
    return extra


def _load_last_inputs(app: Sphinx) -> dict:
    path = Path(app.env.mystnb_config.execution_cache_path) / "rl2llm-last-inputs.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}


def _save_last_inputs(app: Sphinx, docname: str, files: dict) -> None:
    app.rl2llm_last_inputs[docname] = files
    path = Path(app.env.mystnb_config.execution_cache_path) / "rl2llm-last-inputs.json"
    path.write_text(json.dumps(app.rl2llm_last_inputs, indent=1, sort_keys=True))


class _ProgressTail:
    """Copy the lines a chapter's kernel writes to its progress file into the build log, as they come."""

    def __init__(self, docname: str, path: Path):
        import threading

        self.docname, self.path = docname, path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        position = 0
        while True:
            stopping = self._stop.wait(0.5)
            try:
                with self.path.open(encoding="utf8") as handle:
                    handle.seek(position)
                    chunk = handle.read()
            except OSError:
                chunk = ""
            complete, _, _ = chunk.rpartition("\n")
            if complete:
                position += len(complete.encode()) + 1
                for line in complete.splitlines():
                    _say(f"[rl2llm]   {self.docname}: {line}")
            if stopping:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _say(message: str) -> None:
    """A line in the build log, shown whatever Sphinx's verbosity (make.py runs it quietly)."""
    import sys

    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- editions


class EditionDirective(SphinxDirective):
    """``:::{edition} scientist`` ... ``:::``: prose that belongs to one edition only."""

    required_arguments = 1
    has_content = True
    option_spec = {"class": directives.class_option}

    def run(self):
        wanted = self.arguments[0].strip()
        if wanted not in EDITIONS:
            raise BookSourceError(_unknown_edition_message(self.env.doc2path(self.env.docname), self.lineno, wanted))
        if wanted != self.config.rl2llm_edition:
            return []
        box = nodes.container(classes=["edition-block", f"edition-{wanted}"] + self.options.get("class", []))
        self.state.nested_parse(self.content, self.content_offset, box)
        return [box]


def _unknown_edition_message(path, line, marker) -> str:
    hint = difflib.get_close_matches(marker, EDITIONS, n=1)
    return (f"{path}:{line}: unknown edition marker {marker!r} in an {{edition}} block; "
            f"use one of {', '.join(EDITIONS)}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


_FENCE_OPEN = re.compile(r"^(?P<fence>:{3,}|`{3,})\{edition\}\s*(?P<arg>\S*)\s*$")
_CODE_CELL = re.compile(r"^(`{3,}|:{3,})\{code-cell\}")


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    """Line scan of each source: edition blocks must name a known edition and hold no code cell.

    (A code cell inside a filtered block would otherwise vanish silently or show
    in the wrong edition, because notebooks are split into cells before any
    directive runs.)
    """
    path = app.env.doc2path(docname)
    open_block = None  # (fence, line number)
    for number, line in enumerate(source[0].splitlines(), start=1):
        stripped = line.strip()
        match = _FENCE_OPEN.match(stripped)
        if match:
            if match["arg"] not in EDITIONS:
                raise BookSourceError(_unknown_edition_message(path, number, match["arg"]))
            if open_block is None:
                open_block = (match["fence"], number)
            continue
        if open_block and stripped and set(stripped) == {open_block[0][0]} and len(stripped) >= len(open_block[0]):
            open_block = None
            continue
        if open_block and _CODE_CELL.match(stripped):
            raise BookSourceError(
                f"{path}:{number}: a code cell inside the {{edition}} block opened at line {open_block[1]}; "
                "close the block before the cell and tag the cell instead (:tags: [scientist] or [manager])"
            )
    analysis = _analyse(app, docname, source[0])
    if analysis is None:
        return
    source[0] = analysis["content"]  # the key in the kernelspec: the cache entry depends on every input
    if app.config.rl2llm_edition != "scientist":
        return
    cache, record = _cached_record(app, analysis["hashkey"])
    if record is not None and (docname in app.rl2llm_rerun or analysis["hashkey"] not in _provenance_store(app)):
        # asked for, or outputs without a record of what ran them: when in doubt, re-execute
        cache.remove_cache(record.pk)
        record = None
    if record is None:
        _say(f"[rl2llm] executing {docname} ({_why(app, docname, analysis)})")
        progress = Path(app.outdir).parent / "progress" / f"{docname.replace('/', '__')}.log"
        os.environ["RL2LLM_PROGRESS_FILE"] = str(progress)
        app.rl2llm_executing[docname] = _ProgressTail(docname, progress)


def _cell_tags(node: nodes.Element) -> list[str]:
    return list((node.get("cell_metadata") or {}).get("tags", []))


def _on_doctree_read(app: Sphinx, doctree: nodes.document) -> None:
    """Check every code cell's tags, then drop the cells of the other edition."""
    edition = app.config.rl2llm_edition
    other = "manager" if edition == "scientist" else "scientist"
    path = app.env.doc2path(app.env.docname)
    for cell in list(doctree.findall(nodes.container)):
        if cell.get("nb_element") != "cell_code":
            continue
        tags = _cell_tags(cell)
        for tag in tags:
            if tag not in KNOWN_TAGS:
                hint = difflib.get_close_matches(tag, sorted(KNOWN_TAGS), n=1)
                raise BookSourceError(
                    f"{path}:{cell.line or '?'}: unknown cell tag {tag!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; edition tags are {', '.join(EDITIONS)}"
                )
        if set(EDITIONS) <= set(tags):
            raise BookSourceError(f"{path}:{cell.line or '?'}: a cell tagged both scientist and manager; leave it untagged")
        if other in tags or "check" in tags:
            cell.parent.remove(cell)
    _record_execution(app, app.env.docname)


def _record_execution(app: Sphinx, docname: str) -> None:
    """After MyST-NB executed a chapter or took it from the cache: remember what ran it, and say so."""
    analysis = app.rl2llm_analysis.get(docname, (None, None))[1]
    if analysis is None:
        return
    inputs = analysis["inputs"]
    exec_data = (getattr(app.env, "nb_metadata", {}).get(docname) or {}).get("exec_data") or {}
    tail = app.rl2llm_executing.pop(docname, None)
    if tail is not None:
        tail.stop()
        os.environ.pop("RL2LLM_PROGRESS_FILE", None)
        from datetime import datetime, timezone

        from rl2llm.provenance import library_versions

        seconds = float(exec_data.get("runtime") or 0.0)
        _save_provenance(app, analysis["hashkey"], {
            "executed": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round(seconds, 2),
            "cores": os.cpu_count(),
            "accelerator": _accelerator(inputs.libraries),
            "libraries": library_versions(inputs.libraries),
            "package_fingerprint": inputs.package_fingerprint,
            "modules": list(inputs.modules),
            "docname": docname,
        })
        _save_last_inputs(app, docname, inputs.files)
        app.rl2llm_executed_now.add(docname)
        over = seconds > app.config.rl2llm_budget_seconds
        _say(f"[rl2llm] executed {docname} in {seconds:.1f} s"
             + (f" -- OVER its budget of {app.config.rl2llm_budget_seconds} s" if over else ""))
    else:
        record = _provenance_store(app).get(analysis["hashkey"], {})
        _say(f"[rl2llm] {docname}: outputs from the cache (executed {record.get('executed', '?')}, "
             f"{record.get('seconds', '?')} s)")
        if docname not in app.rl2llm_last_inputs:
            _save_last_inputs(app, docname, inputs.files)
    app.env.rl2llm_chapters[docname] = {"key": analysis["key"], "hashkey": analysis["hashkey"],
                                        "claims": analysis["claims"]}


def _inside_cell_output(node: nodes.Node) -> bool:
    while node is not None:
        if isinstance(node, nodes.container) and node.get("nb_element") in {"cell_code_output", "mime_bundle"}:
            return True
        node = node.parent
    return False


def _on_doctree_resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Refuse code in the manager edition; measure the reading time of this edition."""
    edition = app.config.rl2llm_edition
    if edition == "manager":
        for block in doctree.findall(nodes.literal_block):
            if not _inside_cell_output(block):
                raise BookSourceError(
                    f"{app.env.doc2path(docname)}:{block.line or '?'}: code is shown in the manager edition; "
                    "put it inside a ':::{edition} scientist' block (or tag its cell 'scientist')"
                )
    words = code_lines = figures = 0
    for node in doctree.findall(nodes.Text):
        parent = node.parent
        if _in_literal(parent):
            continue
        words += len(node.astext().split())
    for block in doctree.findall(nodes.literal_block):
        if not _inside_cell_output(block):
            code_lines += block.astext().count("\n") + 1
    for _ in doctree.findall(nodes.image):
        figures += 1
    seconds = 60 * words / WORDS_PER_MINUTE + 60 * code_lines / CODE_LINES_PER_MINUTE + SECONDS_PER_FIGURE * figures
    app.rl2llm_reading[docname] = {"minutes": max(1, math.ceil(seconds / 60)), "words": words,
                                   "code_lines": code_lines, "figures": figures}


def _in_literal(node) -> bool:
    while node is not None:
        if isinstance(node, (nodes.literal_block, nodes.raw)):
            return True
        node = node.parent
    return False


def _on_env_before_read_docs(app: Sphinx, env, docnames: list[str]) -> None:
    """Manager edition: every notebook must already have executed outputs in the cache."""
    if app.config.rl2llm_edition != "manager":
        return
    missing = []
    for docname in sorted(docnames):
        analysis = _analyse(app, docname)
        if analysis is not None and _cached_record(app, analysis["hashkey"])[1] is None:
            missing.append(str(Path(env.doc2path(docname)).relative_to(app.srcdir)))
    if missing:
        raise BookSourceError(
            "the manager edition renders the outputs the scientist edition executed, but these chapters have "
            f"no up-to-date outputs in {env.mystnb_config.execution_cache_path}: {', '.join(missing)}. "
            "Build the scientist edition first (python3 make.py build does both, in order)."
        )


def _on_env_purge_doc(app: Sphinx, env, docname: str) -> None:
    env.rl2llm_chapters.pop(docname, None)
    env.rl2llm_status_docs.discard(docname)


def _on_builder_inited(app: Sphinx) -> None:
    for name, empty in (("rl2llm_chapters", dict), ("rl2llm_status_docs", set)):
        if not hasattr(app.env, name):
            setattr(app.env, name, empty())
    app.rl2llm_last_inputs = _load_last_inputs(app)


# --------------------------------------------------------------------------- page furniture


def _on_html_page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if "body" not in context or doctree is None:
        return
    edition = app.config.rl2llm_edition
    other = "manager" if edition == "scientist" else "scientist"
    up = "../" * pagename.count("/")
    link = f"{up}manager/{pagename}.html" if edition == "scientist" else f"{up}../{pagename}.html"
    parts = [
        f'<span class="edition-name">{edition.capitalize()} edition</span>',
        f'<a class="edition-switch-link" href="{link}">Read this page in the {other} edition</a>',
    ]
    reading = app.rl2llm_reading.get(pagename)
    if reading and pagename.startswith(app.config.rl2llm_chapter_prefix):
        parts.append(f'<span class="reading-time" title="{reading["words"]} words, {reading["code_lines"]} lines of code, '
                     f'{reading["figures"]} figures">Reading time: {reading["minutes"]} min</span>')
    if edition == "scientist" and pagename in app.rl2llm_notebooks:
        parts.append(f'<a class="executed-notebook" href="{up}_executed/{pagename}.ipynb" download>'
                     "Executed notebook (.ipynb)</a>")
    strip = f'<div class="edition-strip edition-strip-{edition}">' + " · ".join(parts) + "</div>\n"
    line = _provenance_line(app, pagename)
    if line:
        strip += f'<p class="provenance">{line}</p>\n'
    context["body"] = strip + context["body"]


def _provenance_record(app: Sphinx, docname: str) -> dict | None:
    data = getattr(app.env, "rl2llm_chapters", {}).get(docname)
    if not data:
        return None
    if not hasattr(app, "_rl2llm_store"):
        app._rl2llm_store = _provenance_store(app)
    return app._rl2llm_store.get(data["hashkey"])


def _machine(record: dict) -> str:
    cores = record.get("cores")
    text = f"{cores} CPU core{'s' if cores != 1 else ''}" if cores else "an unknown machine"
    accelerator = record.get("accelerator", "none")
    return text + (f" and a {accelerator}" if accelerator and accelerator != "none" else ", no GPU")


def _provenance_line(app: Sphinx, docname: str) -> str:
    """One line saying what ran this page's code, or '' for a page without code.

    Scientist edition: date, seconds, machine, library versions, and the fingerprint
    of the package modules it imported (their names on hover). Manager edition: the
    same facts a reader needs to trust the numbers, in words.
    """
    from html import escape

    record = _provenance_record(app, docname)
    if not record:
        return ""
    when = _day(record["executed"])
    if app.config.rl2llm_edition == "manager":
        return escape(f"The numbers on this page were computed when the book was built, on {when}, "
                      f"in {record['seconds']:.0f} seconds on an ordinary computer "
                      f"({_machine(record)}).")
    libraries = ", ".join(f"{name} {version}" for name, version in sorted(record.get("libraries", {}).items()))
    modules = record.get("modules", [])
    if modules:
        package = (f"; book package code {record.get('package_fingerprint', '?')} "
                   f'<span class="provenance-modules" title="{escape(", ".join(modules))}">'
                   f"({len(modules)} modules of rl2llm)</span>")
    else:
        package = "; it imports no module of the book's package"
    return escape(f"Executed on {record['executed']} in {record['seconds']:.1f} s on {_machine(record)}"
                  + (f", with {libraries}" if libraries else "")) + package + "."


def _day(stamp: str) -> str:
    """'2026-11-21 15:30 UTC' -> '21 November 2026'."""
    from datetime import datetime

    try:
        return datetime.strptime(stamp[:10], "%Y-%m-%d").strftime("%-d %B %Y")
    except ValueError:
        return stamp


# --------------------------------------------------------------------------- status page


class execution_status(nodes.General, nodes.Element):
    """Placeholder for the per-chapter execution table, filled in when pages are written."""


class ExecutionStatus(SphinxDirective):
    """``{execution-status}``: each chapter's execution record, claims checked and budget."""

    def run(self):
        self.env.rl2llm_status_docs.add(self.env.docname)
        return [execution_status()]


def _status_rows(app: Sphinx) -> list[dict]:
    rows = []
    for docname, data in sorted(getattr(app.env, "rl2llm_chapters", {}).items()):
        record = _provenance_record(app, docname) or {}
        title = app.env.titles.get(docname)
        rows.append({
            "docname": docname,
            "title": title.astext() if title is not None else docname,
            "claims": data.get("claims", 0),
            "seconds": record.get("seconds"),
            "executed": record.get("executed", "?"),
            "machine": _machine(record) if record else "?",
            "libraries": record.get("libraries", {}),
            "fingerprint": record.get("package_fingerprint", "?"),
            "modules": record.get("modules", []),
        })
    return rows


def _on_doctree_resolved_status(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    budget = app.config.rl2llm_budget_seconds
    manager = app.config.rl2llm_edition == "manager"
    prefix = app.config.rl2llm_chapter_prefix
    for placeholder in list(doctree.findall(execution_status)):
        rows = _status_rows(app)
        if manager:
            headers = ("page", "computed on", "seconds", "machine", "statements checked")
        else:
            headers = ("page", "executed on", "seconds", "machine", "libraries", "package code", "claims checked")
        table = nodes.table(classes=["execution-status"])
        group = nodes.tgroup(cols=len(headers))
        table += group
        for _ in headers:
            group += nodes.colspec(colwidth=1)
        head = nodes.thead()
        head += _row(headers)
        group += head
        body = nodes.tbody()
        total = 0.0
        for row in rows:
            seconds = row["seconds"]
            total += seconds or 0.0
            over = seconds is not None and seconds > budget
            time_text = "?" if seconds is None else f"{seconds:.1f}" + (f" (over {budget} s)" if over else "")
            if manager:
                cells = (row["title"], _day(row["executed"]), time_text, row["machine"], str(row["claims"]))
            else:
                libraries = ", ".join(f"{k} {v}" for k, v in sorted(row["libraries"].items())) or "-"
                fingerprint = row["fingerprint"] if row["modules"] else "none imported"
                cells = (row["title"], row["executed"], time_text, row["machine"], libraries, fingerprint,
                         str(row["claims"]))
            tr = _row(cells)
            ref = nodes.reference("", row["title"], internal=True,
                                  refuri=app.builder.get_relative_uri(docname, row["docname"]))
            paragraph = tr[0][0]
            paragraph.clear()
            paragraph += ref
            if over:
                tr["classes"].append("over-budget")
            body += tr
        group += body
        chapters = sum(1 for row in rows if row["docname"].startswith(prefix))
        others = len(rows) - chapters
        pages = f"{chapters} chapter{'s' if chapters != 1 else ''}" + (
            f" and {others} other page{'s' if others != 1 else ''} with code" if others else "")
        over = [row["title"] for row in rows if row["seconds"] is not None and row["seconds"] > budget]
        claims = sum(row["claims"] for row in rows)
        if manager:
            text = (f"{pages}; the build checked {claims} statements the text makes about its own results. "
                    f"Computing everything from scratch takes {total / 60:.1f} minutes on an ordinary computer. "
                    + (f"Over the two-minute limit per chapter: {', '.join(over)}." if over
                       else "Every chapter stays within its two-minute limit."))
        else:
            text = (f"{pages}; {claims} claims checked by the build; executing every page from a cold "
                    f"cache takes {total / 60:.1f} min ({total:.0f} s; the budget for a cold build of both "
                    f"editions is {app.config.rl2llm_cold_budget_minutes} min). "
                    + (f"Over the {budget} s budget per chapter: {', '.join(over)}." if over
                       else f"Every chapter is within its {budget} s budget."))
        placeholder.replace_self([nodes.paragraph(text=text), table])


def _on_env_updated(app: Sphinx, env) -> None:
    """Remember which pages are executed notebooks (their exec data comes from MyST-NB)."""
    app.rl2llm_notebooks = {name for name, data in getattr(env, "nb_metadata", {}).items() if data.get("exec_data")}


def _on_env_updated_dedupe_inline_scripts(app: Sphinx, env) -> None:
    """Work around a Sphinx 7.4 bug that puts inline scripts twice on every page.

    An inline script (``app.add_js_file(None, body=...)``) added after the HTML
    builder started, as sphinx-thebe and sphinx-togglebutton do, reaches the builder
    once with the file name ``None`` and again, when writing starts, with ``''``; the
    two do not compare equal, so each page declares ``const THEBE_JS_URL`` twice and
    the browser throws "Identifier 'THEBE_JS_URL' has already been declared". Renaming
    ``None`` to ``''`` here (after reading, before writing) lets Sphinx's own
    de-duplication drop the second copy. Fixed upstream in Sphinx 8.2 (sphinx-doc/sphinx#13402).
    """
    files = getattr(app.builder, "_js_files", None)
    if not files:
        return
    try:
        from sphinx.builders.html._assets import _JavaScript
    except ImportError:  # a Sphinx without the private class: nothing to do
        return
    fixed = []
    for asset in files:
        if isinstance(asset, _JavaScript) and asset.filename is None:
            asset = _JavaScript("", priority=asset.priority, **asset.attributes)
        if asset not in fixed:
            fixed.append(asset)
    files[:] = fixed


def _on_build_finished(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    env = app.env
    outdir = Path(app.outdir)
    report = {}
    executed = Path(env.mystnb_config.output_folder)
    for docname, data in sorted(getattr(env, "nb_metadata", {}).items()):
        exec_data = data.get("exec_data")
        if not exec_data:
            continue
        report[docname] = {k: exec_data.get(k) for k in ("method", "runtime", "succeeded", "mtime")}
        chapter = getattr(env, "rl2llm_chapters", {}).get(docname, {})
        report[docname]["claims"] = chapter.get("claims", 0)
        report[docname]["provenance"] = _provenance_record(app, docname)
        report[docname]["executed_now"] = docname in app.rl2llm_executed_now
        source = executed / f"{docname}.ipynb"
        if app.config.rl2llm_edition == "scientist" and source.exists():
            target = outdir / "_executed" / f"{docname}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            glue = executed / f"{docname}.glue.json"
            notebook = reader_notebook(source.read_text(encoding="utf8"),
                                       glue.read_text(encoding="utf8") if glue.exists() else "{}",
                                       source_dir=(Path(app.srcdir) / docname).parent)
            target.write_text(notebook, encoding="utf8")
            # The theme's "download notebook" button serves _sources/<doc>.ipynb: the same reader's
            # notebook (solutions at the end, checks left out), not the raw conversion of the page.
            theme_copy = outdir / "_sources" / f"{docname}.ipynb"
            if theme_copy.exists():
                theme_copy.write_text(notebook, encoding="utf8")
    summary = {
        "edition": app.config.rl2llm_edition,
        "fingerprint": app.config.rl2llm_fingerprint,
        "cache": env.mystnb_config.execution_cache_path,
        "notebooks": report,
        "reading_time": app.rl2llm_reading,
        "budget_seconds": app.config.rl2llm_budget_seconds,
        "cold_budget_minutes": app.config.rl2llm_cold_budget_minutes,
    }
    (outdir / "execution.json").write_text(json.dumps(summary, indent=2, sort_keys=True))


# --------------------------------------------------------------------------- the reader's notebook

_EDITION_FENCE = re.compile(r"^(?P<fence>:{3,})\{edition\}\s*(?P<arg>\S*)\s*$")
_ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<body>[^`]*)`")


def _scientist_markdown(text: str) -> str:
    """Markdown of the scientist edition: manager blocks dropped, scientist blocks unwrapped."""
    out, stack = [], []  # stack of (fence, keep)
    for line in text.split("\n"):
        stripped = line.strip()
        match = _EDITION_FENCE.match(stripped)
        if match:
            stack.append((match["fence"], match["arg"] == "scientist"))
            continue
        if stack and set(stripped) == {":"} and len(stripped) == len(stack[-1][0]):
            stack.pop()
            continue
        if all(keep for _, keep in stack):
            out.append(line)
    return "\n".join(out).strip("\n")


_DIRECTIVE_OPEN = re.compile(r"^(?P<fence>:{3,}|`{3,})\{(?P<name>[\w:-]+)\}\s*(?P<arg>.*)$")
_OPTION = re.compile(r"^:[\w-]+:")


def _included_source(arg: str, options: dict, source_dir: Path | None) -> str | None:
    """The lines a ``literalinclude`` shows, as a fenced code block; None when they cannot be found."""
    if source_dir is None:
        return None
    path = (source_dir / arg).resolve()
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf8")
    lines = text.split("\n")
    if "pyobject" in options:
        import ast

        nodes_ = ast.parse(text).body
        node = None
        for part in options["pyobject"].split("."):
            node = next((n for n in nodes_ if getattr(n, "name", None) == part), None)
            if node is None:
                return None
            nodes_ = getattr(node, "body", [])
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        lines = lines[first - 1:node.end_lineno]
    if "start-at" in options:
        start = next((i for i, line in enumerate(lines) if options["start-at"] in line), None)
        if start is None:
            return None
        lines = lines[start:]
    for option, keep in (("end-at", 1), ("end-before", 0)):
        if option in options:
            end = next((i for i, line in enumerate(lines) if options[option] in line), None)
            if end is None:
                return None
            lines = lines[:end + keep]
    if options.get("dedent", "").isdigit():
        n = int(options["dedent"])
        lines = [line[n:] if line[:n].strip() == "" else line.lstrip() for line in lines]
    language = options.get("language", "python" if path.suffix == ".py" else "")
    return f"```{language}\n" + "\n".join(lines).rstrip() + "\n```"


def _plain_directives(text: str, exercises: dict | None = None, source_dir: Path | None = None) -> str:
    """MyST directives a notebook cannot render, as plain Markdown: a bold title, the body, no options.

    ``exercises`` maps exercise labels to their numbers in the notebook: exercises are titled
    "Exercise N" and solutions "Solution to exercise N". A ``literalinclude`` becomes the code it
    shows (found from ``source_dir``, the chapter's folder), or a note naming it.
    """
    exercises = exercises or {}
    out, fences, in_options = [], [], False
    include = None  # a literalinclude being read: its argument and options
    for line in text.split("\n"):
        stripped = line.strip()
        match = _DIRECTIVE_OPEN.match(stripped)
        if re.fullmatch(r"\([\w:.-]+\)=", stripped):
            continue  # a label target
        if match:
            name, arg = match["name"], match["arg"].strip()
            fences.append(match["fence"])
            in_options = True
            if name == "exercise":
                out.append("**Exercise**")  # numbered by its :label: option, next
            elif name == "solution":
                out.append(f"**Solution to exercise {exercises[arg]}**" if arg in exercises else "**Solution**")
            elif name == "literalinclude":
                out.append(f"*(The book shows here the source of `{arg.removeprefix('../../')}`.)*")
                include = (arg, {}, len(out) - 1)
            elif name not in ("code-cell",):
                title = name.split(":")[-1].replace("-", " ").capitalize()
                out.append(f"**{title}{': ' + arg if arg and title.lower() != arg.lower() else ''}**"
                           if name != "admonition" else f"**{arg}**")
            continue
        if fences and in_options and _OPTION.match(stripped):
            if stripped.startswith(":label:") and out and out[-1] == "**Exercise**":
                label = stripped.split(":", 2)[2].strip()
                if label in exercises:
                    out[-1] = f"**Exercise {exercises[label]}**"
            if stripped.startswith(":pyobject:") and out and out[-1].startswith("*(The book shows"):
                out[-1] = out[-1].replace("`.)*", f"`, `{stripped.split(':', 2)[2].strip()}`.)*")
            if include is not None:
                key, _, value = stripped[1:].partition(":")
                include[1][key] = value.strip()
            continue
        in_options = False
        if fences and stripped and set(stripped) == {fences[-1][0]} and len(stripped) >= len(fences[-1]):
            fences.pop()
            if include is not None:
                code = _included_source(include[0], include[1], source_dir)
                if code is not None:
                    out[include[2]] = code
                include = None
            continue
        out.append(line)
    return "\n".join(out)


def _plain_roles(text: str, glue: dict) -> str:
    """MyST roles as a notebook shows them: glued values printed, terms and references as their text."""
    def replace(match):
        role, body = match["role"], match["body"]
        label = re.sub(r"\s*<[^>]*>$", "", body).strip()
        if role in ("glue:text", "glue", "glue:any"):
            key, _, spec = body.partition(":")
            bundle = glue.get(key.strip(), {}).get("data", {})
            plain = bundle.get("text/plain", "")
            try:
                import ast

                value = ast.literal_eval(plain)
                return format(value, spec) if spec else str(value)
            except (ValueError, SyntaxError, TypeError):
                return plain.strip("'\"") or match.group(0)
        if role == "math":
            return f"${body}$"
        if role == "cite":
            return "[" + ", ".join(key.strip() for key in body.split(",")) + "]"
        if role == "eq":
            return f"the equation labelled *{label}*"
        if role in ("prf:ref", "ref", "numref") and label == body.strip() and re.fullmatch(r"[\w:.-]+", label):
            return f"*{label.replace('-', ' ')}*"  # a bare label: the page shows the target's title
        return label or body
    return _ROLE.sub(replace, text)


_EXERCISE_LABEL = re.compile(r"^:{3,}\{exercise\}[^\n]*\n(?::[\w-]+:[^\n]*\n)*?:label:\s*(\S+)", re.M)


def _split_solutions(text: str) -> tuple[str, list[str]]:
    """``text`` without its ``{solution}`` blocks, and those blocks (for the Solutions section)."""
    kept, moved, block, fence = [], [], [], None
    for line in text.split("\n"):
        stripped = line.strip()
        if fence is None:
            match = _DIRECTIVE_OPEN.match(stripped)
            if match and match["name"] == "solution" and match["fence"].startswith(":"):
                fence, block = match["fence"], [line]
            else:
                kept.append(line)
            continue
        block.append(line)
        if stripped == fence:
            moved.append("\n".join(block))
            fence = None
    if fence is not None:  # an unclosed block: leave it where it was
        kept.extend(block)
    return "\n".join(kept), moved


def reader_notebook(notebook_json: str, glue_json: str = "{}", source_dir: Path | None = None) -> str:
    """The executed notebook as a reader downloads it (scientist edition).

    Cells of the manager edition and the build's ``check`` cells are dropped; prose
    for the manager is dropped and prose for the scientist unwrapped; MyST roles
    become plain text (glued numbers printed); exercise solutions (cells tagged
    ``solution``) move to a "Solutions" section at the end, so the exercises can be
    tried before the answers are in sight.
    """
    import nbformat

    notebook = nbformat.reads(notebook_json, as_version=4)
    glue = json.loads(glue_json or "{}")
    scientist = {id(cell): _scientist_markdown(cell.source) for cell in notebook.cells
                 if cell.cell_type == "markdown"}
    labels = [m.group(1) for text in scientist.values() for m in _EXERCISE_LABEL.finditer(text)]
    exercises = {label: n for n, label in enumerate(dict.fromkeys(labels), start=1)}
    cells, solutions = [], []
    for cell in notebook.cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "code" and tags & {"check", "manager"}:
            continue
        if cell.cell_type == "markdown":
            text, moved = _split_solutions(scientist[id(cell)])
            solutions.extend(nbformat.v4.new_markdown_cell(
                _plain_roles(_plain_directives(block, exercises, source_dir), glue)) for block in moved)
            cell.source = _plain_roles(_plain_directives(text, exercises, source_dir), glue)
            if not cell.source.strip():
                continue
        (solutions if "solution" in tags else cells).append(cell)
    if solutions:
        cells.append(nbformat.v4.new_markdown_cell(
            "## Solutions\n\nThe solutions to the exercises above, in order. Try the exercises first."))
        cells.extend(solutions)
    notebook.cells = cells
    return nbformat.writes(notebook)


# --------------------------------------------------------------------------- versions table


class LibraryVersions(SphinxDirective):
    """A table of the versions of the libraries the build executed with."""

    PACKAGES = ("rl2llm", "numpy", "scipy", "torch", "gymnasium", "transformers", "trl", "matplotlib",
                "jupyter-book", "myst-nb", "sphinx")

    def run(self):
        import platform
        from importlib.metadata import PackageNotFoundError, version

        rows = [("Python", platform.python_version())]
        for name in self.PACKAGES:
            try:
                rows.append((name, version(name)))
            except PackageNotFoundError:
                rows.append((name, "not installed"))
        rows.append(("code fingerprint", self.config.rl2llm_fingerprint))
        table = nodes.table(classes=["library-versions"])
        group = nodes.tgroup(cols=2)
        table += group
        group += nodes.colspec(colwidth=1)
        group += nodes.colspec(colwidth=1)
        head = nodes.thead()
        head += _row(("library", "version"))
        group += head
        body = nodes.tbody()
        for row in rows:
            body += _row(row)
        group += body
        return [table]


def _row(cells) -> nodes.row:
    row = nodes.row()
    for text in cells:
        entry = nodes.entry()
        entry += nodes.paragraph(text=str(text))
        row += entry
    return row


# --------------------------------------------------------------------------- setup


def setup(app: Sphinx):
    app.add_config_value("rl2llm_edition", os.environ.get("RL2LLM_EDITION", "scientist"), "env")
    app.add_config_value("rl2llm_fingerprint", "", "")
    app.add_config_value("rl2llm_fingerprint_paths", ["code", "requirements.txt"], "")
    app.add_config_value("rl2llm_package_dir", "code/rl2llm", "")
    app.add_config_value("rl2llm_pin_files", ["requirements.txt"], "")
    app.add_config_value("rl2llm_rerun", [n for n in os.environ.get("RL2LLM_RERUN", "").split(",") if n], "")
    app.add_config_value("rl2llm_budget_seconds", 120, "")
    app.add_config_value("rl2llm_cold_budget_minutes", 25, "")
    app.add_config_value("rl2llm_chapter_prefix", "book/lectures/", "html")
    app.rl2llm_reading = {}
    app.rl2llm_notebooks = set()
    app.rl2llm_analysis = {}
    app.rl2llm_executing = {}
    app.rl2llm_executed_now = set()
    app.rl2llm_last_inputs = {}
    app.rl2llm_rerun = set()
    app.add_node(execution_status)
    app.add_directive("edition", EditionDirective)
    app.add_directive("library-versions", LibraryVersions)
    app.add_directive("execution-status", ExecutionStatus)
    app.add_js_file("rl2llm.js")
    # after jupyter-book's and myst-nb's own config handlers
    app.connect("config-inited", _on_config_inited, priority=900)
    app.connect("builder-inited", _on_builder_inited, priority=900)
    app.connect("env-get-outdated", _on_env_get_outdated)
    app.connect("env-purge-doc", _on_env_purge_doc)
    app.connect("source-read", _on_source_read)
    app.connect("env-before-read-docs", _on_env_before_read_docs, priority=900)
    app.connect("doctree-read", _on_doctree_read)
    app.connect("env-updated", _on_env_updated)
    app.connect("env-updated", _on_env_updated_dedupe_inline_scripts)
    app.connect("doctree-resolved", _on_doctree_resolved)
    app.connect("doctree-resolved", _on_doctree_resolved_status)
    app.connect("html-page-context", _on_html_page_context)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1.1", "parallel_read_safe": False, "parallel_write_safe": True}
