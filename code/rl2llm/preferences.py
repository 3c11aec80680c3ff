"""Preferences from a hidden gold judge, with noise (Part IV).

Real RLHF collects comparisons from people: "of these two answers, which is
better?". People disagree, and nobody can read off the reward they had in mind.
Here the "people" are code: a *gold* reward function over the zoo's tasks
(:func:`gold_reward`), and a noisy judge (:func:`label`) that compares two
answers through it the way the Bradley–Terry model says a person does. Because
the gold reward is known, the book can measure what real RLHF can only
estimate: how good a policy really is, and how often a label disagrees with it.

* :func:`gold_reward` — a story's gold score (``corpora.gold_score``), a task's
  graded score (1 or 0 for a sum, the fraction of unit tests passed for code).
* :func:`label` — one noisy comparison: ``P(a preferred) = sigmoid((g_a - g_b) / noise)``.
* :func:`preference_pairs` — two samples per prompt from a zoo model, judged.
* :func:`agreement` — how often the labels agree with the gold reward.

Every public function checks its arguments and names the bad one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import _validate as check
from . import corpora


@dataclass(frozen=True)
class Preference:
    """One judged comparison: ``chosen`` was preferred to ``rejected`` as continuations of ``prompt``.

    ``gold_chosen`` and ``gold_rejected`` are their gold rewards (hidden from a
    learner in real life); ``agrees`` says whether the label agrees with them
    (False: the noisy judge picked the answer with the lower gold reward).
    """

    prompt: str
    chosen: str
    rejected: str
    gold_chosen: float
    gold_rejected: float

    @property
    def agrees(self) -> bool:
        return self.gold_chosen > self.gold_rejected

    @property
    def margin(self) -> float:
        """``gold_chosen - gold_rejected`` (negative when the label disagrees with the gold reward)."""
        return self.gold_chosen - self.gold_rejected


def _check_item(name: str, item):
    if isinstance(item, corpora.Story) or (isinstance(item, corpora.Task) and item.kind in ("arithmetic", "code")):
        return item
    raise TypeError(f"{name} must be a corpora.Story or an arithmetic or code corpora.Task "
                    f"(e.g. from zoo.eval_items), got {check.describe(item)}")


def gold_reward(item, completion: str, **weights) -> float:
    """The gold reward of ``completion`` as a continuation of ``item``'s prompt.

    A story: ``corpora.gold_score(prompt + completion, **weights)`` (sentiment,
    moral, length, grammar; ``weights`` are its keyword arguments). A task:
    ``item.score(completion)`` (1 or 0 for arithmetic, the fraction of unit tests
    passed for code; no weights).
    """
    item = _check_item("item", item)
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a string, got {check.describe(completion)}")
    if isinstance(item, corpora.Story):
        return float(corpora.gold_score(item.prompt + completion, **weights))
    if weights:
        raise TypeError(f"weights apply to stories only; got {sorted(weights)} for a {item.kind} task")
    return float(item.score(completion))


def label(gold_a: float, gold_b: float, noise: float, rng: np.random.Generator) -> bool:
    """Whether the judge prefers answer a to answer b.

    Bradley–Terry with temperature ``noise``: ``P(a) = sigmoid((gold_a - gold_b) / noise)``.
    ``noise = 0`` is a perfect judge (ties go to a fair coin); the larger the
    noise, the more often a close call goes the wrong way, while a clear
    difference is still judged right, as with people.
    """
    gold_a = check.as_real("gold_a", gold_a)
    gold_b = check.as_real("gold_b", gold_b)
    noise = check.as_real("noise", noise, 0.0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (rl2llm.seeding.seed_everything returns one), "
                        f"got {check.describe(rng)}")
    diff = gold_a - gold_b
    if noise == 0.0:
        p = 0.5 if diff == 0 else float(diff > 0)
    else:
        z = diff / noise
        p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return bool(rng.random() < p)


def preference_pairs(zoo_model, items: Sequence, *, n_per_item: int = 1, noise: float = 0.0,
                     temperature: float = 1.0, max_new_tokens: int | None = None, seed: int = 0,
                     weights: dict | None = None, drop_ties: bool = True) -> list[Preference]:
    """Comparisons of the model's own answers: two samples per item, ``n_per_item`` times, judged.

    ``zoo_model``: a loaded zoo model (``zoo.load``); ``items``: stories or
    tasks whose prompts it continues. Each pair is labelled by :func:`label`
    with ``noise`` on the gold reward (``weights`` go to :func:`gold_reward`).
    ``drop_ties``: skip pairs whose gold rewards are equal (identical answers,
    or two right sums: they carry no preference); with ties kept, a coin picks.
    The same arguments give the same pairs.
    """
    if not hasattr(zoo_model, "generate") or not hasattr(zoo_model, "spec"):
        raise TypeError(f"zoo_model must be a loaded zoo model (zoo.load), got {check.describe(zoo_model)}")
    if isinstance(items, (str, corpora.Story, corpora.Task)):
        raise TypeError("items must be a list of stories or tasks, not one (wrap it: [item])")
    items = [_check_item(f"items[{i}]", item) for i, item in enumerate(items)]
    n_per_item = check.as_int("n_per_item", n_per_item, 1)
    noise = check.as_real("noise", noise, 0.0)
    temperature = check.as_real("temperature", temperature, 0.0, low_open=True)
    if max_new_tokens is not None:
        max_new_tokens = check.as_int("max_new_tokens", max_new_tokens, 1)
    seed = check.as_int("seed", seed, 0)
    weights = dict(weights or {})
    drop_ties = check.as_bool("drop_ties", drop_ties)
    rng = np.random.default_rng(seed)
    prompts = [item.prompt for item in items for _ in range(2 * n_per_item)]
    if not prompts:
        return []
    answers = zoo_model.generate(prompts, max_new_tokens, temperature=temperature, seed=seed)
    out = []
    for k, item in enumerate(items):
        for j in range(n_per_item):
            a, b = answers[2 * (k * n_per_item + j)], answers[2 * (k * n_per_item + j) + 1]
            ga, gb = gold_reward(item, a, **weights), gold_reward(item, b, **weights)
            if drop_ties and ga == gb:
                continue
            if label(ga, gb, noise, rng):
                out.append(Preference(item.prompt, a, b, ga, gb))
            else:
                out.append(Preference(item.prompt, b, a, gb, ga))
    return out


def agreement(prefs: Sequence[Preference]) -> float:
    """The fraction of comparisons whose label agrees with the gold reward (ties count as half)."""
    prefs = list(prefs)
    for i, p in enumerate(prefs):
        if not isinstance(p, Preference):
            raise TypeError(f"prefs[{i}] must be a Preference, got {check.describe(p)}")
    if not prefs:
        raise ValueError("prefs must hold at least one comparison")
    return float(np.mean([1.0 if p.margin > 0 else 0.5 if p.margin == 0 else 0.0 for p in prefs]))
