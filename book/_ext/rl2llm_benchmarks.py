"""The Benchmarks page: tables and verdicts read from the results files of ``benchmarks/``.

* ``{rl-benchmark} benchmarks/results/cartpole.json``: one section per
  algorithm in the file (rl2llm against Stable-Baselines3, written by
  ``benchmarks/rl_vs_sb3.py``): a verdict in words (who reaches the return goal,
  how the speeds compare, where we are behind), a table per library, and in the
  scientist edition a table per seed and where and with what it ran.
* ``{vi-benchmark} benchmarks/results/value_iteration.json``: the value
  iteration comparison with mdptoolbox (``benchmarks/value_iteration.py``).
* ``{bpe-benchmark} benchmarks/results/bpe.json``: byte-pair encoding, our
  naive and incremental trainers against Hugging Face ``tokenizers``
  (``benchmarks/bpe_vs_tokenizers.py``).
* ``{gpt-benchmark} benchmarks/results/gpt_throughput.json``: training
  throughput of our GPT against ``transformers``' ``GPT2LMHeadModel``
  (``benchmarks/gpt_throughput.py``).
* ``{dpo-benchmark} benchmarks/results/dpo_vs_trl.json``: DPO training, ours
  against TRL's ``DPOTrainer`` (``benchmarks/dpo_vs_trl.py``).
* ``{grpo-benchmark} benchmarks/results/grpo_vs_trl.json``: GRPO training, ours
  against TRL's ``GRPOTrainer`` (``benchmarks/grpo_vs_trl.py``).

The files are read while the page is read, and the page depends on them
(``env.note_dependency``): a changed results file re-reads the page on the next
build, nothing else does. A missing file gives a note that says how to produce it,
not an error. The verdicts are computed from the numbers, so the page cannot claim
what the file does not say.
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

LIBRARIES = ("rl2llm", "stable-baselines3")


def _paragraph(*parts) -> nodes.paragraph:
    """A paragraph from strings and ready nodes (``("strong", text)`` for bold)."""
    para = nodes.paragraph()
    for part in parts:
        if isinstance(part, tuple):
            para += nodes.strong(text=part[1])
        elif isinstance(part, nodes.Node):
            para += part
        else:
            para += nodes.Text(part)
    return para


def _table(header: tuple[str, ...], rows: list[tuple], classes: tuple[str, ...] = ()) -> nodes.table:
    table = nodes.table(classes=["benchmark-table", *classes])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    body = nodes.tbody()
    for parent, cells in [(head, header)] + [(body, row) for row in rows]:
        row = nodes.row()
        for text in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=str(text))
            row += entry
        parent += row
    group += head
    group += body
    return table


def _fmt_int(x) -> str:
    return f"{x:,.0f}"


class _ResultsDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def _load(self):
        """The results file as a dict, or None if it does not exist; the page depends on it either way."""
        path = Path(self.env.srcdir) / self.arguments[0]
        self.env.note_dependency(str(path))
        if not path.exists():
            return None
        return json.loads(path.read_text())

    @property
    def manager(self) -> bool:
        return getattr(self.config, "rl2llm_edition", "scientist") == "manager"

    @staticmethod
    def _load_average(data: dict) -> tuple[float | None, float | None, bool]:
        """The 1-minute load average before and after the run, and whether the machine was busy (above half
        its cores) at either end: a busy machine stretches every side's wall clock."""
        load = data.get("load_average", {})
        before, after = (load.get(k, [None])[0] for k in ("before", "after"))
        cores = data["machine"].get("cores") or 1
        return before, after, before is not None and max(before, after) > 0.5 * cores

    @staticmethod
    def _load_sentence(before: float | None, after: float | None, busy: bool, consequence: str) -> str:
        """The scientist edition's sentence on the load (empty if it was not recorded)."""
        if before is None:
            return ""
        return f" Load average (1 min) {before:.2f} before and {after:.2f} after" + (f": {consequence}" if busy
                                                                                     else ".")

    @staticmethod
    def _round_spread(data: dict, library: str, field: str, fmt) -> str:
        """The slowest and the fastest timed round of ``library`` (``field`` of its rows, written with ``fmt``)."""
        speeds = [r[field] for r in data.get("rows", []) if r["library"] == library]
        return f"{fmt(min(speeds))} to {fmt(max(speeds))}" if speeds else "not recorded"

    @staticmethod
    def _curve_table(means: dict, headers: tuple[str, str, str], missing: str) -> nodes.Node:
        """Two sides' per-step curves (``means["rl2llm"]``, ``means["trl"]``) every few steps, as a table."""
        if set(means) != {"rl2llm", "trl"}:
            return _paragraph(missing)
        n = min(len(means["rl2llm"]), len(means["trl"]))
        every = max(1, n // 8)
        marks = sorted(set(list(range(0, n, every)) + [n - 1]))
        rows = [(str(i + 1), f"{means['rl2llm'][i]:.3f}", f"{means['trl'][i]:.3f}") for i in marks]
        return _table(headers, rows)

    def _missing(self, command: str, minutes: str) -> list[nodes.Node]:
        if self.manager:
            return [_paragraph("Not measured yet: this section will show the result and its verdict once it "
                               "is.")]
        return [_paragraph("No results file yet (", nodes.literal(text=self.arguments[0]), "). Run ",
                           nodes.literal(text=command), f" ({minutes}) and build again; the page re-reads the "
                           "file on every build.")]


# --------------------------------------------------------------------------- deep RL against Stable-Baselines3


class RLBenchmark(_ResultsDirective):
    """``{rl-benchmark} <results file>``: rl2llm against Stable-Baselines3, one section per algorithm.

    With the ``:summary:`` flag: only the verdicts, one bullet per algorithm (for the top of the page).
    """

    option_spec = {"summary": directives.flag}

    def run(self):
        data = self._load()
        if data is None or not data.get("algorithms"):
            if "summary" in self.options:        # the section itself says what is missing
                return []
            if "pendulum" in self.arguments[0]:
                return self._missing(".venv/bin/python benchmarks/rl_vs_sb3.py --algos sac td3 --seeds 0 1 2",
                                     "about an hour on two cores")
            return self._missing(".venv/bin/python benchmarks/rl_vs_sb3.py --algos dqn a2c ppo",
                                 "about 20 minutes on two cores")
        if "summary" in self.options:
            items = nodes.bullet_list()
            for block in data["algorithms"].values():
                quick = " (figures from a quick run, not the benchmark)" if block["settings"].get("quick") else ""
                n = len(block["settings"].get("seeds", []))
                runs = (f", {n} training run{'s' if n != 1 else ''} each" if self.manager
                        else f", {n} seed{'s' if n != 1 else ''}")
                items += nodes.list_item("", _paragraph(("strong", f"{block['algorithm']} on {block['env_id']}"
                                                         f"{runs}{quick}: "), self._verdict(block)))
            return [items]
        out = []
        for key, block in data["algorithms"].items():
            out += self._algorithm(key, block)
        return out

    def _names(self) -> dict:
        if self.manager:
            return {"rl2llm": "the book's code", "stable-baselines3": "Stable-Baselines3"}
        return {"rl2llm": "rl2llm", "stable-baselines3": "Stable-Baselines3"}

    def _algorithm(self, key: str, b: dict) -> list[nodes.Node]:
        s, settings, goals = b["summary"], b["settings"], b["goals"]
        ours, theirs = s["rl2llm"], s["stable-baselines3"]
        name = self._names()
        section = nodes.section(ids=[f"benchmark-{key}-{b['env_id'].lower()}"])
        section += nodes.title(text=f"{b['algorithm']} on {b['env_id']}")
        out: list[nodes.Node] = [section]
        if settings.get("quick"):
            section += nodes.warning("", _paragraph(
                "These are figures from a quick run (a few thousand steps), not the benchmark: "
                "neither side has had the time to learn."))
        n = len(settings["seeds"])
        steps = _fmt_int(settings["env_steps"])
        ratio = s["speed_ratio"]
        # who reaches the return goal, and how fast each side trains (in words a manager reads)
        goal = f"{goals['return']:g}"
        if self.manager:
            score = (f"Score (how long the pole stays up, averaged over {settings['eval_episodes']} test attempts "
                     f"and over {n} training runs; {goal} counts as solving the task, 500 is the most): ")
            unit, runs = "steps of practice", "training runs"
        else:
            score = (f"Return (the mean over {settings['eval_episodes']} test episodes, averaged over {n} training "
                     f"runs with different seeds; {goal} counts as solving the task, 500 is the maximum): ")
            unit, runs = "environment steps", "runs"
        returns = (score + f"{name['rl2llm']} {ours['return_mean']:.1f} ({ours['seeds_at_goal']} of {n} {runs} at "
                   f"{goal} or more), {name['stable-baselines3']} {theirs['return_mean']:.1f} "
                   f"({theirs['seeds_at_goal']} of {n}).")
        speed = (f"Speed: {name['rl2llm']} trained at {_fmt_int(ours['steps_per_second'])} {unit} per second, "
                 f"{name['stable-baselines3']} at {_fmt_int(theirs['steps_per_second'])}: ")
        if ratio >= 1:
            speed += f"{ratio:.2f} times as fast (the goal is {goals['speed_ratio']:g} times)."
        else:
            speed += (f"{name['rl2llm']} is slower, at {ratio:.2f} times the speed "
                      f"(the goal is {goals['speed_ratio']:g} times).")
        cpu = s.get("cpu_speed_ratio")
        if cpu is not None and not self.manager:
            speed += (f" By CPU time (the seconds the process itself computed, which other work on the machine "
                      f"disturbs less) the ratio is {cpu:.2f}.")
        section += _paragraph(f"Both trained for {steps} {unit} with the same settings. ", returns,
                              " ", speed)
        section += _paragraph(("strong", "Verdict: "), self._verdict(b))
        section += _table(
            ("library", "mean score" if self.manager else "mean return", "worst run", f"runs at {goal}+",
             "steps per second"),
            [(name[lib], f"{s[lib]['return_mean']:.1f}", f"{s[lib]['return_min_seed']:.1f}",
              f"{s[lib]['seeds_at_goal']} of {s[lib]['seeds']}", _fmt_int(s[lib]["steps_per_second"]))
             for lib in LIBRARIES])
        if not self.manager:
            section += self._per_seed(b)
        section += self._provenance(b)
        return out

    def _per_seed(self, b: dict) -> nodes.table:
        """One row per seed, the two libraries side by side (return, wall and CPU seconds)."""
        runs = {(r["library"], r["seed"]): r for r in b["runs"]}
        rows = []
        for seed in b["settings"]["seeds"]:
            ours, theirs = runs.get(("rl2llm", seed)), runs.get(("stable-baselines3", seed))
            if ours is None or theirs is None:
                continue
            cells = [seed]
            cells += [f"{r['return_mean']:.1f}\u00a0±\u00a0{r['return_std']:.1f}" for r in (ours, theirs)]
            cells += [f"{r['seconds']:.1f} ({r['cpu_seconds']:.1f})" if "cpu_seconds" in r else f"{r['seconds']:.1f}"
                      for r in (ours, theirs)]
            cells.append(f"{theirs['seconds'] / ours['seconds']:.2f}")
            rows.append(tuple(cells))
        return _table(("seed", "return: rl2llm", "return: SB3", "seconds (CPU): rl2llm", "seconds (CPU): SB3",
                       "SB3 / rl2llm time"), rows, classes=("benchmark-seeds",))

    def _verdict(self, b: dict) -> str:
        s, goals = b["summary"], b["goals"]
        ours, theirs = s["rl2llm"], s["stable-baselines3"]
        us = "The book's code" if self.manager else "rl2llm"
        score = "score" if self.manager else "return"
        behind = []
        if not s["return_goal_met"]:
            behind.append(f"it does not reach the {score} goal ({ours['return_mean']:.1f} against "
                          f"{goals['return']:g})")
        elif ours["seeds_at_goal"] < ours["seeds"]:
            behind.append(f"only {ours['seeds_at_goal']} of its {ours['seeds']} runs reach {goals['return']:g}")
        if ours["return_mean"] < theirs["return_mean"] - 1.0:
            behind.append(f"its {score} is lower than Stable-Baselines3's ({ours['return_mean']:.1f} against "
                          f"{theirs['return_mean']:.1f})")
        if s["speed_ratio"] < 1:
            behind.append(f"it is slower than Stable-Baselines3 ({s['speed_ratio']:.2f} times its speed)")
        elif not s["speed_goal_met"]:
            behind.append(f"it is faster, but by {s['speed_ratio']:.2f} times, short of the "
                          f"{goals['speed_ratio']:g} times we aim for")
        if not behind:
            return (f"{us} meets both goals: it solves the task and trains {s['speed_ratio']:.2f} times as fast "
                    "as Stable-Baselines3.")
        return f"{us} is behind here: " + "; ".join(behind) + "."

    def _provenance(self, b: dict) -> nodes.paragraph:
        m, v, settings = b["machine"], b["versions"], b["settings"]
        before, after, busy = self._load_average(b)
        if self.manager:
            text = (f"Measured on {b['date'][:10]} on an ordinary {m['cores']}-core computer ({m['cpu']}), "
                    "both libraries in the same session, one after the other for each training run.")
            if busy:
                text += (" The computer was busy with other work at the time, which slows both sides, so the "
                         "speeds themselves are understated; the two libraries took turns under the same conditions.")
            return _paragraph(text)
        text = (f"Measured {b['date']} on {m['cpu']} ({m['cores']} cores, {m.get('os', '')}), "
                f"{settings['threads']} PyTorch thread(s) on both sides, seeds {', '.join(map(str, settings['seeds']))}, "
                f"{settings['eval_episodes']} greedy evaluation episodes per model (starts reset(seed={settings['eval_seed']} + i), "
                f"the same for every model). Python {v['python']}, PyTorch {v['torch']}, Gymnasium {v['gymnasium']}, "
                f"NumPy {v['numpy']}, Stable-Baselines3 {v['stable-baselines3']}, rl2llm {v['rl2llm']} at commit "
                f"{b['rl2llm_commit']}.")
        text += self._load_sentence(before, after, busy, "the machine was shared, so both speeds are understated.")
        if b.get("note"):
            text += f" Matching the settings: {b['note']}."
        return _paragraph(text)


# --------------------------------------------------------------------------- value iteration against mdptoolbox


class VIBenchmark(_ResultsDirective):
    """``{vi-benchmark} <results file>``: value iteration, rl2llm against mdptoolbox-hiive."""

    def run(self):
        data = self._load()
        if data is None:
            return self._missing(".venv/bin/python benchmarks/value_iteration.py", "a few minutes")
        rows = data["rows"]
        m, v = data["machine"], data["versions"]
        total = [(r["init"][0] + r["solve"][0], r["init"][1] + r["solve"][1]) for r in rows]
        if self.manager:
            out = [_paragraph(
                "Both libraries solve the same two planning problems to the same answer (the same values and "
                "equally good decisions in every situation). The table shows how long each takes to solve a "
                "problem once it is set up, and in total, setting up included. Most of mdptoolbox's total is "
                "spent checking the problem it is given before it starts, not solving it.")]
            out.append(_table(
                ("problem", "situations", "solving: the book's code", "solving: mdptoolbox",
                 "in total: the book's code", "in total: mdptoolbox"),
                [(r["problem"], _fmt_int(r["states"]), f"{r['solve'][0]:.2f} s", f"{r['solve'][1]:.2f} s",
                  f"{t[0]:.2f} s", f"{t[1]:.1f} s") for r, t in zip(rows, total)]))
            out.append(_paragraph(f"Measured on {data['date'][:10]} on an ordinary {m['cores']}-core computer."))
            return out
        out = [_table(
            ("problem", "states", "sweeps", "solve: rl2llm s", "mdptoolbox s", "speed-up", "with setup",
             "max |V diff|"),
            [(r["problem"], _fmt_int(r["states"]), r["sweeps"][0], f"{r['solve'][0]:.3f}", f"{r['solve'][1]:.3f}",
              f"{r['solve'][1] / r['solve'][0]:.1f}×", f"{t[1] / t[0]:.0f}×", f"{r['v_diff']:.1e}")
             for r, t in zip(rows, total)])]
        out.append(_paragraph(
            f"Best of {data['settings']['repeats']} runs, tolerance {data['settings']['tol']:g}; mdptoolbox pinned "
            "to our number of sweeps, so both do the same arithmetic. \"With setup\" adds building each library's "
            "problem object to the solve (mdptoolbox checks its input and computes an iteration bound, which is "
            f"most of its time). Measured {data['date']} on {m['cpu']} ({m['cores']} cores); Python {v['python']}, "
            f"NumPy {v['numpy']}, SciPy {v['scipy']}, mdptoolbox-hiive {v['mdptoolbox-hiive']}, rl2llm at commit "
            f"{data['rl2llm_commit']}."))
        return out


# --------------------------------------------------------------------------- BPE against Hugging Face tokenizers


class BPEBenchmark(_ResultsDirective):
    """``{bpe-benchmark} benchmarks/results/bpe.json``: byte-pair encoding, rl2llm's two trainers against
    Hugging Face ``tokenizers`` (``benchmarks/bpe_vs_tokenizers.py``): the verdicts on the two goals
    (incremental at least 10 times the naive trainer's speed; compression within 2 % of ``tokenizers``),
    the speed ratio to ``tokenizers`` as measured, a table, and where it ran."""

    def run(self):
        data = self._load()
        if data is None:
            return self._missing(".venv/bin/python benchmarks/bpe_vs_tokenizers.py", "about 15 minutes on two cores")
        s, goals, rows = data["summary"], data["goals"], data["rows"]
        out: list[nodes.Node] = []
        if data["settings"].get("quick"):
            out.append(nodes.warning("", _paragraph("These are figures from a quick run (100 KB of text), not "
                                                    "the benchmark.")))
        out += [_paragraph(("strong", "Verdict: "), self._verdict(data)), self._table(rows)]
        out.append(self._notes(data))
        return out

    def _label(self, row: dict) -> str:
        reached = (row.get("vocab_reached") or {}).get("ours", row["vocab_size"])
        size = _fmt_int(row["vocab_size"])
        if self.manager:
            text = "the book's text" if row["text"] == "the book's corpus" else "made-up words"
            stop = "" if reached == row["vocab_size"] else f"; the text runs out of pairs at {_fmt_int(reached)}"
            return f"{text} ({size} pieces asked{stop})"
        stop = "" if reached == row["vocab_size"] else f", the corpus stops at {_fmt_int(reached)}"
        return f"{row['text']} ({size} tokens asked{stop})"

    def _verdict(self, data: dict) -> str:
        s, goals, rows = data["summary"], data["goals"], data["rows"]
        mb = data["settings"]["text_bytes"] / 1e6
        fast = "the book's fast trainer" if self.manager else "the incremental trainer"
        slow = "the plain one" if self.manager else "the naive one"
        with_naive = [r for r in rows if "naive" in r["seconds"]]
        judged = [max((r for r in with_naive if r["text"] == t), key=lambda r: r["vocab_size"])
                  for t in dict.fromkeys(r["text"] for r in with_naive)]
        speedups = ", ".join(f"{r['cpu_seconds']['naive'] / r['cpu_seconds']['incremental']:.1f} times on "
                             f"{self._label(r)}" for r in judged)
        if not self.manager:
            speedups = ("by CPU time, which other work on the machine disturbs least: " + speedups
                        + "; by the wall clock: " + " and ".join(
                            f"{r['seconds']['naive'] / r['seconds']['incremental']:.1f}" for r in judged) + " times")
        words = []
        if s["speedup_goal_met"]:
            words.append(f"{fast.capitalize()} is at least {goals['incremental_speedup']:g} times as fast as "
                         f"{slow} on {mb:g} MB of text at the largest vocabulary, as we aimed for ({speedups}); "
                         "with fewer merges to learn the gain is smaller, as the table shows.")
        else:
            words.append(f"{fast.capitalize()} misses the goal of {goals['incremental_speedup']:g} times "
                         f"{slow}'s speed on {mb:g} MB of text ({speedups}).")
        gap = s["compression_gap"]
        pieces = "pieces" if self.manager else "tokens"
        if s["compression_goal_met"]:
            same = (f"exactly as many {pieces}" if gap == 0 else f"at most {gap:.2%} more or fewer {pieces}")
            words.append(f"It compresses as well as Hugging Face tokenizers: {same} on the same unseen text "
                         f"(the goal: within {goals['compression_gap']:.0%}).")
        else:
            words.append(f"Its compression misses the goal: {gap:.2%} away from Hugging Face tokenizers' "
                         f"(the goal: within {goals['compression_gap']:.0%}).")
        lib = "Hugging Face tokenizers (written in Rust" + ("" if self.manager else
                                                            f", {data['settings']['threads']} threads") + ")"
        parts = []
        for text in dict.fromkeys(r["text"] for r in rows):   # one phrase per text, the ratios as a range
            group = [r for r in rows if r["text"] == text]
            ratios = [r["seconds"]["tokenizers"] / r["seconds"]["incremental"] for r in group]
            sizes = [r["vocab_size"] for r in group]
            unit = "pieces" if self.manager else "tokens"
            where = (self._label(group[0]) if len(group) == 1 else
                     self._label(group[0]).split(" (")[0] + f" ({_fmt_int(min(sizes))} to {_fmt_int(max(sizes))} "
                                                            f"{unit})")
            span = lambda xs: f"{min(xs):.1f}" if len(xs) == 1 or f"{min(xs):.1f}" == f"{max(xs):.1f}" \
                else f"{min(xs):.1f} to {max(xs):.1f}"   # noqa: E731
            if all(x <= 1 for x in ratios):
                parts.append(f"the library trains {span([1 / x for x in ratios])} times as fast as ours on {where}")
            elif all(x > 1 for x in ratios):
                parts.append(f"ours trains {span(ratios)} times as fast on {where}")
            else:
                parts.append(f"on {where} the ratio of their time to ours is {span(ratios)}")
        words.append(f"Against {lib}: " + "; ".join(parts) + ".")
        if any(r["seconds"]["tokenizers"] > r["seconds"]["incremental"] for r in rows):
            if self.manager:
                words.append("Where the book's code is faster, most of the work is cutting the text into words, "
                             "which it hands to a fast built-in routine; on text with many different words the "
                             "learning itself takes the time, and there the library, written in a faster "
                             "language, is ahead.")
            else:
                words.append("Where ours is faster, cutting the text into words is most of the work, and ours "
                             "does it with one call of a regular-expression engine written in C; with many "
                             "distinct words the merge loop dominates, and there Rust wins.")
        return " ".join(words)

    def _table(self, rows: list[dict]) -> nodes.table:
        if self.manager:
            header = ("text", "vocabulary", "plain trainer", "fast trainer", "Hugging Face",
                      "pieces per KB: book", "pieces per KB: Hugging Face")
            body = [("the book's text" if r["text"] == "the book's corpus" else "made-up words",
                     _fmt_int(r["vocab_size"]),
                     f"{r['seconds']['naive']:.2f} s" if "naive" in r["seconds"] else "not run",
                     f"{r['seconds']['incremental']:.2f} s", f"{r['seconds']['tokenizers']:.2f} s",
                     f"{1000 / r['bytes_per_token']['ours']['all']:.0f}",
                     f"{1000 / r['bytes_per_token']['tokenizers']['all']:.0f}") for r in rows]
            return _table(header, body)
        header = ("text", "vocab", "naive s", "incremental s", "tokenizers s", "naive / incr.",
                  "tokenizers / incr.", "bytes per token: ours", "tokenizers", "same merges")
        body = []
        for r in rows:
            sec = r["seconds"]
            body.append((r["text"], _fmt_int(r["vocab_size"]),
                         f"{sec['naive']:.2f}" if "naive" in sec else "-", f"{sec['incremental']:.3f}",
                         f"{sec['tokenizers']:.3f}",
                         f"{sec['naive'] / sec['incremental']:.1f}×" if "naive" in sec else "-",
                         f"{sec['tokenizers'] / sec['incremental']:.2f}",
                         f"{r['bytes_per_token']['ours']['all']:.3f}",
                         f"{r['bytes_per_token']['tokenizers']['all']:.3f}",
                         f"{r['merges_in_common']:,} of {r['merges']['ours']:,}"))
        return _table(header, body)

    def _notes(self, data: dict) -> nodes.paragraph:
        m, v, settings, rows = data["machine"], data["versions"], data["settings"], data["rows"]
        before, after, busy = self._load_average(data)
        if self.manager:
            text = (f"Each side learned its vocabulary from the same {settings['text_bytes'] / 1e6:g} MB of text: "
                    "the book's generated stories, sums and code, which repeat a small set of words, and made-up "
                    "words with the frequencies of a natural language, which do not. The pieces per thousand "
                    "characters are measured on text neither had seen (fewer is better). "
                    f"Measured on {data['date'][:10]} on an ordinary {m['cores']}-core computer.")
            if busy:
                text += " The computer was busy with other work, which slows every side."
            return _paragraph(text)
        enc = [r["encode_seconds"] for r in rows]
        enc_ours = sum(e["bytes"] for e in enc) / sum(e["ours"] for e in enc) / 1e6
        enc_theirs = sum(e["bytes"] for e in enc) / sum(e["tokenizers"] for e in enc) / 1e6
        split = ", ".join(f"{r['split_seconds']:.2f} s on {r['text']}" for r in rows
                          if r["vocab_size"] == max(x["vocab_size"] for x in rows if x["text"] == r["text"]))
        text = (f"Training time: the whole call, best of {settings['repeats']} (the naive trainer on the made-up "
                "words: one run); both of our trainers first cut the text into words, the same step, which takes "
                f"{split}. Byte-level BPE on both sides, GPT-2's pre-tokenizer, min_frequency "
                f"{settings['min_frequency']}, the text given to each as one string; bytes per token on held-out "
                f"text; \"same merges\": merges learned by both (ties between equally frequent pairs are broken "
                f"differently). By CPU time, which adds up tokenizers' threads, tokenizers over ours: "
                + ", ".join(f"{r['cpu_seconds']['tokenizers'] / r['cpu_seconds']['incremental']:.2f}" for r in rows)
                + f" (the rows in order). Encoding the held-out text: ours {enc_ours:.1f} MB/s, tokenizers "
                f"{enc_theirs:.1f} MB/s.")
        text += (f" Measured {data['date']} on {m['cpu']} ({m['cores']} cores), tokenizers with "
                 f"RAYON_NUM_THREADS={settings['threads']}; Python {v['python']}, tokenizers {v['tokenizers']}, "
                 f"regex {v['regex']}, rl2llm at commit {data['rl2llm_commit']}.")
        text += self._load_sentence(before, after, busy, "the machine was shared, so every time is stretched.")
        return _paragraph(text)


# --------------------------------------------------------------------------- GPT training throughput against GPT2LMHeadModel


class GPTBenchmark(_ResultsDirective):
    """``{gpt-benchmark} benchmarks/results/gpt_throughput.json``: training throughput (tokens per second) of
    our GPT (``rl2llm.transformer``) against ``transformers``' ``GPT2LMHeadModel`` of the same configuration and
    weights, written by ``benchmarks/gpt_throughput.py``: a verdict on the goal (at least as fast), a table and,
    in the scientist edition, the settings, the agreement of the two losses and where it ran."""

    def run(self):
        data = self._load()
        if data is None:
            return self._missing(".venv/bin/python benchmarks/gpt_throughput.py", "about 5 minutes on two cores")
        s, settings = data["summary"], data["settings"]
        out: list[nodes.Node] = []
        if settings.get("quick"):
            out.append(nodes.warning("", _paragraph("These are figures from a quick run (a few steps), not the "
                                                    "benchmark.")))
        out.append(_paragraph(("strong", "Verdict: "), self._verdict(data)))
        ours, theirs = s["rl2llm"], s["transformers"]
        if self.manager:
            out.append(_table(("implementation", "pieces of text (tokens) per second, training"),
                              [("the book's transformer", _fmt_int(ours["tokens_per_second"])),
                               ("Hugging Face transformers", _fmt_int(theirs["tokens_per_second"]))]))
        else:
            def spread(library: str) -> str:
                return self._round_spread(data, library, "tokens_per_second", _fmt_int)
            out.append(_table(("implementation", "tokens/s (median of rounds)", "rounds (slowest to fastest)",
                               "tokens/s by CPU time", "loss at the end"),
                              [("rl2llm GPT", _fmt_int(ours["tokens_per_second"]), spread("rl2llm"),
                                _fmt_int(ours["cpu_tokens_per_second"]), f"{ours['final_loss']:.4f}"),
                               ("transformers GPT2LMHeadModel", _fmt_int(theirs["tokens_per_second"]),
                                spread("transformers"), _fmt_int(theirs["cpu_tokens_per_second"]),
                                f"{theirs['final_loss']:.4f}")]))
        out.append(self._notes(data))
        return out

    def _verdict(self, data: dict) -> str:
        s, goal = data["summary"], data["goals"]["speed_ratio"]
        ratio = s["speed_ratio"]
        if self.manager:
            if ratio >= goal:
                return (f"The book's transformer trains {ratio:.2f} times as fast as the same model in Hugging Face "
                        "transformers, the library most teams use: reading it costs no speed.")
            return (f"The book's transformer is behind here: it trains at {ratio:.2f} times the speed of the same "
                    "model in Hugging Face transformers, short of the goal of matching it.")
        cpu = s["cpu_speed_ratio"]
        if ratio >= goal:
            text = (f"rl2llm's GPT meets the goal: {ratio:.2f} times GPT2LMHeadModel's training throughput "
                    f"(the goal: at least {goal:g} times)")
        else:
            text = (f"rl2llm's GPT is behind here: {ratio:.2f} times GPT2LMHeadModel's training throughput, short "
                    f"of the goal of {goal:g} times")
        return text + f"; by CPU time {cpu:.2f} times."

    def _notes(self, data: dict) -> nodes.paragraph:
        m, v, settings, s = data["machine"], data["versions"], data["settings"], data["summary"]
        before, after, busy = self._load_average(data)
        c = settings["config"]
        if self.manager:
            text = (f"Both sides train the same small model ({settings['parameters']:,} parameters, the shape of "
                    "GPT-2 in miniature), from the same starting point, on the same text, with the same settings, "
                    "taking turns on the same computer; their training losses agree step for step. Measured on "
                    f"{data['date'][:10]} on an ordinary {m['cores']}-core computer.")
            if busy:
                text += " The computer was busy with other work, which slows both sides."
            return _paragraph(text)
        text = (f"GPT-2's block with {c['n_layer']} layers of width {c['n_embd']}, {c['n_head']} heads, a context "
                f"of {c['block_size']} and a byte-level vocabulary of {c['vocab_size']} ({settings['parameters']:,} "
                f"parameters); GPT2LMHeadModel is to_gpt2 of ours (the same initial weights, attention "
                f"implementation \"{settings['hf_attention']}\"). Batches of {settings['batch_size']} windows "
                f"({settings['tokens_per_step']:,} tokens per step), the same for both; AdamW (lr {settings['lr']:g}, "
                f"betas {tuple(settings['betas'])}), gradients clipped at {settings['grad_clip']:g}; "
                f"{settings['threads']} PyTorch thread(s); {settings['rounds']} timed rounds of "
                f"{settings['steps_per_round']} steps per side after a warm-up round, the sides alternating. "
                f"The two losses agree to {s['loss_gap_first_round']:.1e} over the first round "
                f"({s['loss_gap_final']:.1e} at the end). Measured {data['date']} on {m['cpu']} ({m['cores']} cores); "
                f"Python {v['python']}, PyTorch {v['torch']}, transformers {v['transformers']}, rl2llm at commit "
                f"{data['rl2llm_commit']}.")
        text += self._load_sentence(before, after, busy, "the machine was shared, so both speeds are understated.")
        return _paragraph(text)


class DPOBenchmark(_ResultsDirective):
    """``{dpo-benchmark} benchmarks/results/dpo_vs_trl.json``: DPO training, ours (``rl2llm.dpo``) against TRL's
    ``DPOTrainer`` on the same model, pairs and settings, written by ``benchmarks/dpo_vs_trl.py``: a verdict on
    both goals (quality at least TRL's, at least 1.5 times its steps per second), a table, the loss curves side
    by side and, in the scientist edition, the settings and where it ran."""

    def run(self):
        data = self._load()
        if data is None:
            return self._missing(".venv/bin/python benchmarks/dpo_vs_trl.py", "about 10 minutes on two cores")
        s = data["summary"]
        out: list[nodes.Node] = []
        if data["settings"].get("quick"):
            out.append(nodes.warning("", _paragraph("These are figures from a quick run (a few steps), not the "
                                                    "benchmark.")))
        out.append(_paragraph(("strong", "Verdict: "), self._verdict(data)))
        ours, theirs = s["rl2llm"], s["trl"]
        if self.manager:
            out.append(_table(("implementation", "training steps per second", "judge prefers the trained model"),
                              [("the book's code", f"{ours['steps_per_second']:.2f}", f"{ours['win_rate']:.0%}"),
                               ("TRL (Hugging Face)", f"{theirs['steps_per_second']:.2f}",
                                f"{theirs['win_rate']:.0%}")]))
        else:
            def spread(library: str) -> str:
                return self._round_spread(data, library, "steps_per_second", lambda v: f"{v:.2f}")
            out.append(_table(("implementation", "steps/s (median)", "rounds (slowest to fastest)",
                               "steps/s by CPU time", "win rate vs start", "KL (nats)", "DPO loss, all pairs"),
                              [(name, f"{x['steps_per_second']:.2f}", spread(key), f"{x['cpu_steps_per_second']:.2f}",
                                f"{x['win_rate']:.3f}", f"{x['kl']:.2f}", f"{x['train_loss']:.3f}")
                               for name, key, x in (("rl2llm.dpo", "rl2llm", ours),
                                                    ("TRL DPOTrainer", "trl", theirs))]))
            out.append(self._curves(data))
        out.append(self._notes(data))
        return out

    def _verdict(self, data: dict) -> str:
        s, goals = data["summary"], data["goals"]
        ratio, gap = s["speed_ratio"], s["win_rate_gap"]
        fast, good = ratio >= goals["speed_ratio"], s["quality_goal_met"]
        if self.manager:
            speed = (f"the book's code trains {ratio:.1f} times as fast as TRL, the library most teams use"
                     if ratio >= 1 else f"the book's code trains at {ratio:.2f} times TRL's speed, slower")
            quality = ("and the models it trains are as good, judged the same way" if good
                       else "but the models it trains are judged worse")
            return (f"On the same small model, data and settings, {speed}, {quality}. "
                    + ("Both goals are met." if fast and good else "A goal is missed, as the table shows."))
        speed = (f"{ratio:.2f} times TRL DPOTrainer's steps per second (by CPU time {s['cpu_speed_ratio']:.2f}; "
                 f"goal at least {goals['speed_ratio']:g})")
        quality = (f"win rate {s['rl2llm']['win_rate']:.3f} against TRL's {s['trl']['win_rate']:.3f} (goal: no "
                   f"more than {goals['win_rate_tolerance']:g} below)")
        if fast and good:
            return f"rl2llm.dpo meets both goals: {speed}; {quality}."
        missed = [name for name, ok in (("speed", fast), ("quality", good)) if not ok]
        return f"rl2llm.dpo is behind on {' and '.join(missed)}: {speed}; {quality}."

    def _curves(self, data: dict) -> nodes.Node:
        """The per-step training loss of each side, mean over rounds, every few steps (a table, no image)."""
        curves = data.get("curves", {})
        means = {k: [sum(c[i] for c in v) / len(v) for i in range(min(len(c) for c in v))]
                 for k, v in curves.items() if v}
        return self._curve_table(means, ("training step", "loss, rl2llm.dpo (mean of rounds)",
                                         "loss, TRL (mean of rounds)"), "Loss curves not recorded.")

    def _notes(self, data: dict) -> nodes.paragraph:
        m, v, st = data["machine"], data["versions"], data["settings"]
        before, after, busy = self._load_average(data)
        if self.manager:
            text = (f"Both sides train the book's small stories model ({st['parameters']:,} parameters) on the same "
                    f"{st['pairs']} judged pairs of its own stories, with the same settings, taking turns on the same "
                    f"computer; a judge then compares each trained model's stories with the starting model's. "
                    f"Measured on {data['date'][:10]} on an ordinary {m['cores']}-core computer.")
            if busy:
                text += " The computer was busy with other work, which slows both sides."
            return _paragraph(text)
        trl = st["trl"]
        text = (f"The zoo's stories model ({st['parameters']:,} parameters), {st['pairs']} on-policy pairs over "
                f"{st['prompts']} openings, the sigmoid loss at beta {st['beta']:g}, {st['batch_pairs']} pairs per "
                f"step, {st['steps']} steps, AdamW at a constant lr {st['lr']:g}, gradients clipped at "
                f"{st['grad_clip']:g}, {st['dtype']}, {st['threads']} PyTorch thread(s); TRL with bf16="
                f"{trl['bf16']}, activation checkpointing {trl['activation_checkpointing']}, "
                f"precompute_ref_log_probs={trl['precompute_ref_log_probs']}. {st['rounds']} timed rounds after a "
                f"warm-up round, the sides alternating; the win rate is judged on {st['test_prompts']} held-out "
                f"openings. Measured {data['date']} on {m['cpu']} ({m['cores']} cores); Python {v['python']}, "
                f"PyTorch {v['torch']}, transformers {v['transformers']}, TRL {v['trl']}, rl2llm at commit "
                f"{data['rl2llm_commit']}.")
        text += self._load_sentence(before, after, busy, "the machine was shared, so both speeds are understated.")
        return _paragraph(text)


class GRPOBenchmark(_ResultsDirective):
    """``{grpo-benchmark} benchmarks/results/grpo_vs_trl.json``: GRPO training, ours (``rl2llm.grpo``) against
    TRL's ``GRPOTrainer`` on the same model, prompts, reward and settings, written by ``benchmarks/grpo_vs_trl.py``:
    a verdict on both goals (exact match after training at least TRL's, within a margin; at least 1.5 times its
    steps per second), a table, the reward curves side by side and, in the scientist edition, the settings and
    where it ran."""

    def run(self):
        data = self._load()
        if data is None:
            return self._missing(".venv/bin/python benchmarks/grpo_vs_trl.py", "about 10 minutes on two cores")
        s = data["summary"]
        out: list[nodes.Node] = []
        if data["settings"].get("quick"):
            out.append(nodes.warning("", _paragraph("These are figures from a quick run (a few steps), not the "
                                                    "benchmark.")))
        out.append(_paragraph(("strong", "Verdict: "), self._verdict(data)))
        ours, theirs = s["rl2llm"], s["trl"]
        if self.manager:
            out.append(_table(("implementation", "training steps per second", "sums right after training"),
                              [("the book's code", f"{ours['steps_per_second']:.2f}", f"{ours['em_after_mean']:.1%}"),
                               ("TRL (Hugging Face)", f"{theirs['steps_per_second']:.2f}",
                                f"{theirs['em_after_mean']:.1%}")]))
        else:
            def spread(library: str) -> str:
                return self._round_spread(data, library, "steps_per_second", lambda v: f"{v:.2f}")
            out.append(_table(("implementation", "steps/s (median)", "rounds (slowest to fastest)",
                               "steps/s by CPU time", "exact match after, per round", "mean"),
                              [(name, f"{x['steps_per_second']:.2f}", spread(key), f"{x['cpu_steps_per_second']:.2f}",
                                ", ".join(f"{e:.3f}" for e in x["em_after"]), f"{x['em_after_mean']:.3f}")
                               for name, key, x in (("rl2llm.grpo", "rl2llm", ours),
                                                    ("TRL GRPOTrainer", "trl", theirs))]))
            out.append(self._curves(data))
        out.append(self._notes(data))
        return out

    def _verdict(self, data: dict) -> str:
        s, goals = data["summary"], data["goals"]
        ratio, gap = s["speed_ratio"], s["quality_gap"]
        fast, good = ratio >= goals["speed_ratio"], s["quality_goal_met"]
        if self.manager:
            speed = (f"the book's code trains {ratio:.1f} times as fast as TRL, the library most teams use"
                     if ratio >= 1 else f"the book's code trains at {ratio:.2f} times TRL's speed, slower")
            quality = ("and the models it trains answer as many sums right" if good
                       else "but the models it trains answer fewer sums right")
            return (f"On the same small model, sums and settings, {speed}, {quality}. "
                    + ("Both goals are met." if fast and good else "A goal is missed, as the table shows."))
        speed = (f"{ratio:.2f} times TRL GRPOTrainer's steps per second (by CPU time {s['cpu_speed_ratio']:.2f}; "
                 f"goal at least {goals['speed_ratio']:g})")
        quality = (f"exact match after training {s['rl2llm']['em_after_mean']:.3f} against TRL's "
                   f"{s['trl']['em_after_mean']:.3f}, from {s['em_before']:.3f} (goal: no more than "
                   f"{goals['quality_margin']:g} below)")
        if fast and good:
            return f"rl2llm.grpo meets both goals: {speed}; {quality}."
        missed = [name for name, ok in (("speed", fast), ("quality", good)) if not ok]
        return f"rl2llm.grpo is behind on {' and '.join(missed)}: {speed}; {quality}."

    def _curves(self, data: dict) -> nodes.Node:
        """The mean reward of each step's samples, mean over rounds, every few steps (a table, no image)."""
        means = {}
        for key in ("rl2llm", "trl"):
            curves = [r["reward"] for r in data.get("rows", []) if r["library"] == key and r.get("reward")]
            if curves:
                n = min(len(c) for c in curves)
                means[key] = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
        return self._curve_table(means, ("training step", "reward of the samples, rl2llm.grpo (mean of rounds)",
                                         "reward, TRL (mean of rounds)"), "Reward curves not recorded.")

    def _notes(self, data: dict) -> nodes.paragraph:
        m, v, st, s = data["machine"], data["versions"], data["settings"], data["summary"]
        before, after, busy = self._load_average(data)
        if self.manager:
            text = (f"Both sides train the book's small arithmetic model ({st['parameters']:,} parameters) on the "
                    f"same {st['n_prompts']} sums, {st['group_size']} attempts per sum, with the same settings, "
                    f"taking turns on the same computer; each trained model then answers {st['n_eval']} new sums. "
                    f"Measured on {data['date'][:10]} on an ordinary {m['cores']}-core computer.")
            if busy:
                text += " The computer was busy with other work, which slows both sides."
            return _paragraph(text)
        text = (f"The zoo's half-trained arithmetic model ({st['parameters']:,} parameters), {st['n_prompts']} "
                f"training sums, reward 1 for the right sum; {st['prompts_per_step']} prompts times "
                f"{st['group_size']} answers per step, at most {st['max_new_tokens']} new tokens at temperature "
                f"{st['temperature']:g}, {st['steps']} steps, lr {st['lr']:g} constant, beta {st['beta']:g}, "
                f"clip {st['clip']:g}, gradients clipped at {st['grad_clip']:g}; loss: {st['loss']}; advantage: "
                f"{st['advantage']}; {st['optimizer']}; float32, no activation checkpointing on TRL's side; "
                f"{st['threads']} PyTorch thread(s). {st['rounds']} timed rounds (seeds 0, 1, ...) after a warm-up "
                f"run, the sides alternating; exact match is greedy on {st['n_eval']} held-out sums. Importing trl "
                f"took {s['trl_import_seconds']:.1f} s (not counted). Measured {data['date']} on {m['cpu']} "
                f"({m['cores']} cores); Python {v['python']}, PyTorch {v['torch']}, transformers "
                f"{v['transformers']}, TRL {v['trl']}, rl2llm at commit {data['rl2llm_commit']}.")
        text += self._load_sentence(before, after, busy, "the machine was shared, so both speeds are understated.")
        return _paragraph(text)


def setup(app: Sphinx):
    app.add_directive("rl-benchmark", RLBenchmark)
    app.add_directive("vi-benchmark", VIBenchmark)
    app.add_directive("bpe-benchmark", BPEBenchmark)
    app.add_directive("gpt-benchmark", GPTBenchmark)
    app.add_directive("dpo-benchmark", DPOBenchmark)
    app.add_directive("grpo-benchmark", GRPOBenchmark)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
