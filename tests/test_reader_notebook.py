"""The notebook a reader downloads from the scientist edition (book/_ext/rl2llm_book.reader_notebook)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
from rl2llm_book import reader_notebook  # noqa: E402

MARKDOWN = """\
(lecture-09)=
# A chapter

::::{edition} scientist
The optimum is {glue:text}`best:.1%` after {glue:text}`sweeps` sweeps, see {term}`value <value function>`
and {cite}`bellman1957dynamic,howard1960dynamic`.

:::{prf:definition} Value
:label: def-value
The value.
:::
::::

:::{edition} manager
MANAGER_ONLY prose.
:::

```{literalinclude} ../../code/rl2llm/dp.py
:pyobject: value_iteration
```
"""


def _notebook() -> str:
    cells = [
        nbformat.v4.new_markdown_cell(MARKDOWN),
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["scientist"]}),
        nbformat.v4.new_code_cell("assert x == 1, 'CLAIM'", metadata={"tags": ["check"]}),
        nbformat.v4.new_code_cell("print('MANAGER_CELL')", metadata={"tags": ["manager"]}),
        nbformat.v4.new_markdown_cell("### Exercise\n\nWrite `f`."),
        nbformat.v4.new_code_cell("def f(): return 'SOLUTION'", metadata={"tags": ["scientist", "hide-cell", "solution"]}),
        nbformat.v4.new_code_cell("print('after')"),
    ]
    return nbformat.writes(nbformat.v4.new_notebook(cells=cells))


GLUE = json.dumps({"best": {"data": {"text/plain": "0.7441895"}}, "sweeps": {"data": {"text/plain": "27"}}})


def test_the_reader_gets_the_scientist_notebook_in_plain_markdown():
    notebook = nbformat.reads(reader_notebook(_notebook(), GLUE), as_version=4)
    sources = [cell.source for cell in notebook.cells]
    text = "\n".join(sources)
    assert "The optimum is 74.4% after 27 sweeps, see value" in text
    assert "[bellman1957dynamic, howard1960dynamic]" in text
    assert "**Definition: Value**" in text and "The value." in text
    assert "source of `code/rl2llm/dp.py`, `value_iteration`" in text
    for gone in ("MANAGER_ONLY", "MANAGER_CELL", "CLAIM", ":::", "{glue", "{term}", "(lecture-09)=", ":label:"):
        assert gone not in text, gone


def test_solutions_move_to_the_end():
    notebook = nbformat.reads(reader_notebook(_notebook(), GLUE), as_version=4)
    sources = [cell.source for cell in notebook.cells]
    assert sources[-2].startswith("## Solutions")
    assert sources[-1] == "def f(): return 'SOLUTION'"
    assert sources.index("print('after')") < sources.index(sources[-2])
    assert nbformat.validate(notebook) is None


EXERCISES = """\
## Exercises

::::{edition} scientist
:::{exercise}
:label: ex-first

Derive {eq}`bellman-eq` and follow {prf:ref}`alg-trpo`.
:::

:::{solution} ex-first
:class: dropdown

WRITTEN_SOLUTION_ONE.
:::
::::

:::{exercise}
:label: ex-second

Second question.
:::

:::{solution} ex-second
:class: dropdown

WRITTEN_SOLUTION_TWO.
:::
"""


def test_exercises_are_numbered_and_written_solutions_move_to_the_end():
    cells = [nbformat.v4.new_markdown_cell(EXERCISES),
             nbformat.v4.new_code_cell("def g(): return 'CODE_SOLUTION'",
                                       metadata={"tags": ["scientist", "hide-cell", "solution"]}),
             nbformat.v4.new_code_cell("print('after')")]
    out = nbformat.reads(reader_notebook(nbformat.writes(nbformat.v4.new_notebook(cells=cells))), as_version=4)
    sources = [cell.source for cell in out.cells]
    heading = next(i for i, s in enumerate(sources) if s.startswith("## Solutions"))
    questions = sources[0]
    assert "**Exercise 1**" in questions and "**Exercise 2**" in questions
    assert "WRITTEN_SOLUTION" not in questions and "CODE_SOLUTION" not in "\n".join(sources[:heading])
    after = sources[heading + 1:]
    assert after[0].startswith("**Solution to exercise 1**") and "WRITTEN_SOLUTION_ONE." in after[0]
    assert after[1].startswith("**Solution to exercise 2**") and "WRITTEN_SOLUTION_TWO." in after[1]
    assert after[2] == "def g(): return 'CODE_SOLUTION'"
    assert "the equation labelled *bellman-eq*" in questions and "*alg trpo*" in questions
    for gone in (":::", ":label:", ":class:", "{eq}", "{prf:ref}"):
        assert gone not in "\n".join(sources), gone


def test_literalincludes_become_the_code_they_show():
    lectures = Path(__file__).resolve().parents[1] / "book" / "lectures"
    partial = """\
```{literalinclude} ../../code/rl2llm/rollouts.py
:pyobject: reward_to_go
:start-at: out = np.empty_like(rewards)
:end-at: return out
:dedent: 4
```
"""
    cells = [nbformat.v4.new_markdown_cell(MARKDOWN), nbformat.v4.new_markdown_cell(partial),
             nbformat.v4.new_markdown_cell("```{literalinclude} ../../code/rl2llm/no_such_module.py\n```\n")]
    out = nbformat.reads(reader_notebook(nbformat.writes(nbformat.v4.new_notebook(cells=cells)), "{}",
                                         source_dir=lectures), as_version=4)
    whole, part, missing = (cell.source for cell in out.cells)
    assert "```python\ndef value_iteration(" in whole and "The book shows here" not in whole
    assert part.startswith("```python\nout = np.empty_like(rewards)") and part.rstrip().endswith("return out\n```")
    assert "The book shows here the source of `code/rl2llm/no_such_module.py`" in missing
    before = nbformat.v4.new_markdown_cell(
        "```{literalinclude} ../../code/rl2llm/rollouts.py\n:pyobject: reward_to_go\n"
        ":end-before: out = np.empty_like(rewards)\n```\n")
    out = nbformat.reads(reader_notebook(nbformat.writes(nbformat.v4.new_notebook(cells=[before])), "{}",
                                         source_dir=lectures), as_version=4)
    shown = out.cells[0].source
    assert shown.startswith("```python\ndef reward_to_go(") and "np.empty_like" not in shown
