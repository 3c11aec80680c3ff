"""The book's own Sphinx extension: two editions, a cache that is never stale, page furniture.

What it does, in build order:

* **Cache fingerprint** (``config-inited``). The execution cache lives in
  ``_build/.jupyter_cache/<fingerprint>``, where the fingerprint hashes the
  package in ``code/`` and ``requirements.txt``. Change either and every chapter
  re-executes (the old outputs were computed by other code); edit one chapter
  and jupyter-cache re-executes that chapter alone.
* **Editions.** ``rl2llm_edition`` is ``scientist`` (default) or ``manager``
  (``RL2LLM_EDITION`` in the environment sets it too). Prose for one edition
  sits in an ``{edition}`` block; code cells are tagged ``scientist`` or
  ``manager``; untagged content is in both. The manager edition hides every
  code input, and renders from the scientist edition's executed outputs: it
  refuses to build a chapter that would need executing.
* **Checks that fail the build** with the file and the marker named: an unknown
  edition, an unknown cell tag (typos such as ``scientst``), a code cell inside
  an ``{edition}`` block, code shown in the manager edition.
* **Page furniture**: a strip at the top of every page with the edition being
  read, a link to the same page in the other edition, the chapter's reading
  time in this edition, and (scientist edition) the executed notebook.
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
    """Hash of every file under ``paths`` (relative to ``root``), contents and names, and ``extra``."""
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


def _on_config_inited(app: Sphinx, config) -> None:
    edition = config.rl2llm_edition
    if edition not in EDITIONS:
        raise BookSourceError(f"rl2llm_edition must be one of {EDITIONS}, got {edition!r}")
    root = Path(app.srcdir)
    # The scale switch changes what chapters compute, so it is part of the key too.
    scale = os.environ.get("RL2LLM_SCALE", "small")
    config.rl2llm_fingerprint = fingerprint(root, list(config.rl2llm_fingerprint_paths), extra=scale)
    base = Path(config.nb_execution_cache_path or root / "_build" / ".jupyter_cache")
    if not base.is_absolute():
        base = root / base
    cache = base / config.rl2llm_fingerprint
    cache.mkdir(parents=True, exist_ok=True)
    os.utime(cache)  # mark as most recently used
    # Keep the three most recently used caches (switching branches back and forth
    # should not re-execute everything); older ones were computed by old code.
    stale = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)[3:]
    for old in stale:
        shutil.rmtree(old, ignore_errors=True)
    config.nb_execution_cache_path = str(cache)
    # Hidden directories are never sources. Sphinx would read them (sphinx-external-toc's
    # only_build_toc_files skips them, so it does not exclude their files): pytest's
    # .pytest_cache/README.md alone fails a -W build with "document isn't included in any toctree".
    config.exclude_patterns = [*config.exclude_patterns, ".*", "**/.*"]
    if edition == "manager":
        config.nb_remove_code_source = True
    logger.info(f"[rl2llm] {edition} edition; execution cache {cache}")


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
        if other in tags:
            cell.parent.remove(cell)


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
    from jupyter_cache import get_cache
    from myst_nb.core.read import create_nb_reader

    cache = get_cache(env.mystnb_config.execution_cache_path)
    missing = []
    for docname in sorted(docnames):
        path = Path(env.doc2path(docname))
        content = path.read_text(encoding="utf8")
        reader = create_nb_reader(str(path), env.myst_config, env.mystnb_config, content)
        if reader is None:  # a plain page, nothing to execute
            continue
        notebook = reader.read(content)
        if not any(cell.cell_type == "code" for cell in notebook.cells):
            continue
        try:
            cache.match_cache_notebook(notebook)
        except KeyError:
            missing.append(str(path.relative_to(app.srcdir)))
    if missing:
        raise BookSourceError(
            "the manager edition renders the outputs the scientist edition executed, but these chapters have "
            f"no up-to-date outputs in {env.mystnb_config.execution_cache_path}: {', '.join(missing)}. "
            "Build the scientist edition first (python3 make.py build does both, in order)."
        )


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
    context["body"] = strip + context["body"]


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
        source = executed / f"{docname}.ipynb"
        if app.config.rl2llm_edition == "scientist" and source.exists():
            target = outdir / "_executed" / f"{docname}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    summary = {
        "edition": app.config.rl2llm_edition,
        "fingerprint": app.config.rl2llm_fingerprint,
        "cache": env.mystnb_config.execution_cache_path,
        "notebooks": report,
        "reading_time": app.rl2llm_reading,
    }
    (outdir / "execution.json").write_text(json.dumps(summary, indent=2, sort_keys=True))


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
    app.add_config_value("rl2llm_fingerprint", "", "env")
    app.add_config_value("rl2llm_fingerprint_paths", ["code", "requirements.txt"], "env")
    app.add_config_value("rl2llm_chapter_prefix", "book/lectures/", "html")
    app.rl2llm_reading = {}
    app.rl2llm_notebooks = set()
    app.add_directive("edition", EditionDirective)
    app.add_directive("library-versions", LibraryVersions)
    # after jupyter-book's and myst-nb's own config handlers
    app.connect("config-inited", _on_config_inited, priority=900)
    app.connect("source-read", _on_source_read)
    app.connect("env-before-read-docs", _on_env_before_read_docs, priority=900)
    app.connect("doctree-read", _on_doctree_read)
    app.connect("env-updated", _on_env_updated)
    app.connect("env-updated", _on_env_updated_dedupe_inline_scripts)
    app.connect("doctree-resolved", _on_doctree_resolved)
    app.connect("html-page-context", _on_html_page_context)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1.0", "parallel_read_safe": False, "parallel_write_safe": True}
