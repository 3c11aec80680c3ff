"""Fast checks of the chapters' sources (no build): what the manager edition will show."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Symbols a manager is not asked to read (the site test checks the built pages with the same set).
SYMBOLS = set("γεπΣ∑‖∞≤≥∈∀∃λθ∇αβδ")


def test_figures_the_manager_sees_are_labelled_in_words():
    """The strings in every code cell whose output the manager edition shows (untagged or tagged manager):
    no mathtext ($...$) and no symbols, so axes, legends and titles read as words."""
    repo = REPO
    problems = []
    cell = re.compile(r"```\{code-cell\}[^\n]*\n(.*?)```", re.S)
    for chapter in sorted((repo / "book" / "lectures").glob("*.md")):
        for match in cell.finditer(chapter.read_text(encoding="utf8")):
            source = match.group(1)
            tags = re.search(r"(?m)^:tags:\s*\[(.*)\]", source)
            tags = {tag.strip() for tag in tags.group(1).split(",")} if tags else set()
            if tags & {"scientist", "check", "remove-output", "remove-cell"}:
                continue
            line = chapter.read_text(encoding="utf8")[: match.start()].count("\n") + 1
            code = re.sub(r"(?m)^:.*$", "", source)
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = node.value
                    if re.search(r"\$[^$]+\$", text) or set(text) & SYMBOLS:
                        problems.append(f"{chapter.name}:{line}: {text[:60]!r}")
    assert not problems, "labels in figures or outputs of the manager edition:\n" + "\n".join(problems)
