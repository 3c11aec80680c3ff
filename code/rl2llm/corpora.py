"""Generated data for Part III's language models and Part IV's alignment tasks.

Nothing is downloaded: every text comes from code and a seed
(``numpy.random.default_rng``), so the same seed gives the same data on every
machine. Three families, each designed to be *checkable*, because Part IV
aligns the models of the zoo on them:

* **Stories** from a small grammar in the spirit of TinyStories
  (:func:`stories`). Each :class:`Story` carries its attributes -- sentiment,
  length in sentences, named characters, whether it states a moral -- and
  :func:`story_attributes` recovers them from *any* text by matching its
  sentences against the grammar, so a hidden "gold" preference
  (:func:`gold_score`) can score what a model writes.
* **Arithmetic** (:func:`arithmetic_problems`): ``"07+35="`` -> ``"042"``, with
  a difficulty knob (digits, operations, number of terms), a fixed-width and a
  plain format, and a verifier :func:`check_arithmetic`.
* **Code** (:func:`code_tasks`): small Python functions (a signature and a
  docstring as the prompt, a reference body, unit tests), run by
  :func:`run_tests` in a separate process with a time limit.

Arithmetic problems and code tasks share one shape, :class:`Task`: a
``prompt``, a ``reference`` completion, a ``difficulty`` and a
``check(completion)``. :func:`corpus` concatenates any family into plain text
for language-model pretraining.

Every generator draws items one after another from one generator, so a list is
a prefix of any longer list from the same seed and options
(``stories(5, 0) == stories(10, 0)[:5]``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from . import _validate as check

SENTIMENTS = ("positive", "negative", "neutral")

# --------------------------------------------------------------------------- the story grammar

NAMES = ("Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Leo", "Zoe", "Sam", "Emma", "Jack")
ANIMALS = ("cat", "dog", "bird", "bunny", "bear", "fox", "frog", "duck", "girl", "boy")
ADJECTIVES = ("little", "big", "small", "fluffy", "brown", "tall", "young", "quiet")
PLACES = ("park", "garden", "forest", "beach", "river", "farm", "house", "school")
OBJECTS = ("ball", "kite", "box", "hat", "book", "toy car", "red cup", "stick")
MORALS = ("sharing is good", "you should always tell the truth", "friends help each other",
          "you should never give up", "being kind makes everyone happy")

#: Sentence templates by role. Slots: {X} and {Y} are two different characters of the
#: story, {adj}, {animal}, {place}, {object}, {moral} are words from the lists above.
#: A template with {Y} is used only in a story with two characters.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "opening": (
        "Once upon a time, there was a {adj} {animal} named {X}.",
        "One day, a {adj} {animal} named {X} went to the {place}.",
        "There once was a {adj} {animal} called {X}.",
    ),
    "friend": (
        "{X} had a friend named {Y}.",
        "{X} met a {adj} {animal} named {Y}.",
    ),
    "neutral": (
        "{X} walked to the {place}.",
        "{X} saw a {object} near the {place}.",
        "{X} picked up the {object}.",
        "{X} looked at the sky.",
        "{X} sat down under a tree.",
        "{X} and {Y} went to the {place} together.",
        "{X} gave the {object} to {Y}.",
        "Then {X} went home.",
    ),
    "positive": (
        "{X} was very happy.",
        "{X} smiled and laughed.",
        "{X} loved the {object}.",
        "{X} found a shiny {object} and felt glad.",
        "It was a wonderful day at the {place}.",
        "{X} and {Y} had a lot of fun.",
        "{X} hugged {Y} and said thank you.",
    ),
    "negative": (
        "{X} was very sad.",
        "{X} lost the {object} and cried.",
        "{X} felt angry and kicked the {object}.",
        "The {object} broke, and {X} was upset.",
        "It was a gloomy day at the {place}.",
        "{X} and {Y} had a big fight.",
        "{X} was scared of {Y}.",
    ),
    "moral": (
        "The moral of the story is that {moral}.",
    ),
}

_SLOT_WORDS = {"X": NAMES, "Y": NAMES, "adj": ADJECTIVES, "animal": ANIMALS, "place": PLACES,
               "object": OBJECTS, "moral": MORALS}
_SLOT = re.compile(r"\{(\w+)\}")


def _template_regex(template: str) -> re.Pattern:
    """A template as a regular expression whose named groups are its slots."""
    parts, last = [], 0
    for m in _SLOT.finditer(template):
        parts.append(re.escape(template[last:m.start()]))
        words = "|".join(re.escape(w) for w in _SLOT_WORDS[m.group(1)])
        parts.append(f"(?P<{m.group(1)}>{words})")
        last = m.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))


#: (role, template, compiled regex) for every template, to parse sentences back.
_PARSERS = [(role, t, _template_regex(t)) for role, ts in TEMPLATES.items() for t in ts]
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Story:
    """A generated story and the attributes it was generated with.

    ``text``: the story; ``sentences``: its sentences; ``roles``: each
    sentence's role in the grammar (opening, friend, neutral, positive,
    negative, moral); ``sentiment``: positive, negative or neutral;
    ``characters``: the named characters in order of appearance;
    ``has_moral``: whether it ends by stating a moral.
    """

    text: str
    sentences: tuple[str, ...]
    roles: tuple[str, ...]
    sentiment: str
    characters: tuple[str, ...]
    has_moral: bool

    @property
    def n_sentences(self) -> int:
        """The length of the story in sentences."""
        return len(self.sentences)

    @property
    def prompt(self) -> str:
        """The opening sentence: a prompt from which a model continues the story."""
        return self.sentences[0]

    @property
    def reference(self) -> str:
        """The rest of the story, as it continues the prompt (with its leading space)."""
        return self.text[len(self.sentences[0]):]

    @property
    def difficulty(self) -> int:
        """The story's length in sentences (the knob of :func:`stories`)."""
        return len(self.sentences)

    def attributes(self) -> dict:
        """The attributes as :func:`story_attributes` reports them for a text."""
        return {"sentiment": self.sentiment, "n_sentences": self.n_sentences,
                "characters": self.characters, "has_moral": self.has_moral, "grammatical": 1.0}


def _fill(template: str, rng: np.random.Generator, x: str, y: str | None) -> str:
    def word(m: re.Match) -> str:
        slot = m.group(1)
        if slot == "X":
            return x
        if slot == "Y":
            return y
        words = _SLOT_WORDS[slot]
        return words[int(rng.integers(len(words)))]
    return _SLOT.sub(word, template)


def _pick_template(rng: np.random.Generator, role: str, two: bool) -> str:
    options = TEMPLATES[role] if two else tuple(t for t in TEMPLATES[role] if "{Y}" not in t)
    return options[int(rng.integers(len(options)))]


def _one_story(rng: np.random.Generator, sentiment: str | None, min_sentences: int, max_sentences: int,
               moral_rate: float, two_rate: float) -> Story:
    mood = sentiment if sentiment is not None else SENTIMENTS[int(rng.integers(3))]
    length = int(rng.integers(min_sentences, max_sentences + 1))
    two = bool(rng.random() < two_rate)
    moral = bool(rng.random() < moral_rate)
    # The body needs one sentence at least: drop the second character, then the moral, if short.
    if length - 1 - two - moral < 1:
        two = False
    if length - 1 - two - moral < 1:
        moral = False
    body = length - 1 - two - moral
    first = NAMES[int(rng.integers(len(NAMES)))]
    second = None
    if two:
        k = int(rng.integers(len(NAMES) - 1))
        second = NAMES[k + (k >= NAMES.index(first))]
    n_mood = 0 if mood == "neutral" else int(rng.integers(1, body + 1))
    mood_at = set(rng.choice(body, size=n_mood, replace=False).tolist()) if n_mood else set()
    roles = ["opening"] + (["friend"] if two else [])
    roles += [mood if i in mood_at else "neutral" for i in range(body)] + (["moral"] if moral else [])
    cast = (first, second) if two else (first,)
    sentences = []
    for i, role in enumerate(roles):
        template = _pick_template(rng, role, two)
        if role in ("opening", "friend"):
            x, y = first, second
        else:
            j = int(rng.integers(len(cast)))
            x, y = cast[j], cast[1 - j] if two else None
        sentences.append(_fill(template, rng, x, y))
    return Story(" ".join(sentences), tuple(sentences), tuple(roles), mood, cast, moral)


def _story_options(sentiment, min_sentences, max_sentences, moral_rate, two_rate):
    if sentiment is not None and sentiment not in SENTIMENTS:
        raise ValueError(f"sentiment must be None or one of {SENTIMENTS}, got {check.describe(sentiment)}")
    lo = check.as_int("min_sentences", min_sentences, 2, 100)
    hi = check.as_int("max_sentences", max_sentences, 2, 100)
    if hi < lo:
        raise ValueError(f"max_sentences must be >= min_sentences = {lo}, got {hi}")
    return (sentiment, lo, hi, check.as_real("moral_rate", moral_rate, 0.0, 1.0),
            check.as_real("two_rate", two_rate, 0.0, 1.0))


def _iter_stories(seed, sentiment=None, min_sentences=3, max_sentences=8, moral_rate=0.3,
                  two_rate=0.5) -> Iterator[Story]:
    options = _story_options(sentiment, min_sentences, max_sentences, moral_rate, two_rate)
    return _story_stream(np.random.default_rng(check.as_int("seed", seed, 0)), options)


def _story_stream(rng, options) -> Iterator[Story]:
    while True:
        yield _one_story(rng, *options)


def stories(n: int, seed: int = 0, *, sentiment: str | None = None, min_sentences: int = 3,
            max_sentences: int = 8, moral_rate: float = 0.3, two_rate: float = 0.5) -> list[Story]:
    """``n`` stories from the grammar, each with its attributes.

    ``sentiment``: None draws positive, negative or neutral uniformly; a name
    fixes it. A positive (negative) story has one or more positive (negative)
    sentences and no sentence of the opposite sentiment; a neutral one has
    neither. ``min_sentences .. max_sentences`` (2 .. 100): the length, uniform
    in that range (the difficulty knob). ``moral_rate``: the probability that
    the story ends by stating a moral; ``two_rate``: the probability of a second
    named character (the second character, then the moral, are dropped when
    the story is too short for them: it needs one sentence besides the opening).
    """
    n = check.as_int("n", n, 0)
    it = _iter_stories(seed, sentiment, min_sentences, max_sentences, moral_rate, two_rate)
    return [next(it) for _ in range(n)]


def story_attributes(text: str) -> dict:
    """The attributes of a text, read by matching each sentence against the grammar.

    Returns ``sentiment`` (positive or negative where such sentences are the
    majority, neutral where there are none, mixed on a tie), ``n_sentences``,
    ``characters`` (names in grammatical sentences, in order of appearance),
    ``has_moral`` (a grammatical moral sentence anywhere) and ``grammatical``
    (the fraction of sentences that the grammar produces; 0 for an empty text).
    Text that is not from the grammar counts as ungrammatical and carries no
    sentiment, so repeating "happy" outside a template earns nothing.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {check.describe(text)}")
    sentences = [s for s in _SENTENCE_SPLIT.split(text.strip()) if s]
    counts = {"positive": 0, "negative": 0}
    characters: list[str] = []
    moral, good = False, 0
    for sentence in sentences:
        for role, _, regex in _PARSERS:
            m = regex.fullmatch(sentence)
            if m is None:
                continue
            good += 1
            counts[role] = counts.get(role, 0) + 1
            moral |= role == "moral"
            names = sorted((m.start(s), m.group(s)) for s in ("X", "Y") if s in m.groupdict())
            characters += [name for _, name in names if name not in characters]
            break
    pos, neg = counts["positive"], counts["negative"]
    mood = "neutral" if pos == neg == 0 else "positive" if pos > neg else "negative" if neg > pos else "mixed"
    return {"sentiment": mood, "n_sentences": len(sentences), "characters": tuple(characters),
            "has_moral": moral, "grammatical": good / len(sentences) if sentences else 0.0}


def gold_score(text: str, *, sentiment_weight: float = 1.0, moral_bonus: float = 0.5,
               target_sentences: int = 6, length_weight: float = 0.1,
               grammar_weight: float = 2.0) -> float:
    """A programmable "gold" preference over stories (Part IV's hidden reward).

    ``sentiment_weight`` times +1 for a positive story, -1 for a negative one
    (0 for neutral or mixed); plus ``moral_bonus`` if it states a moral; minus
    ``length_weight`` per sentence away from ``target_sentences``; minus
    ``grammar_weight`` times the fraction of sentences the grammar does not
    produce. All weights are keyword arguments so a chapter can define its own
    preference.
    """
    sentiment_weight = check.as_real("sentiment_weight", sentiment_weight)
    moral_bonus = check.as_real("moral_bonus", moral_bonus)
    target_sentences = check.as_int("target_sentences", target_sentences, 0)
    length_weight = check.as_real("length_weight", length_weight)
    grammar_weight = check.as_real("grammar_weight", grammar_weight)
    a = story_attributes(text)
    sign = {"positive": 1.0, "negative": -1.0}.get(a["sentiment"], 0.0)
    return (sentiment_weight * sign + moral_bonus * a["has_moral"]
            - length_weight * abs(a["n_sentences"] - target_sentences)
            - grammar_weight * (1.0 - a["grammatical"]))


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """A checkable task: ``prompt`` + a completion, judged by :meth:`check`.

    ``kind``: ``"arithmetic"`` or ``"code"``. ``reference``: a completion that
    passes (the answer; the body of the function). ``difficulty``: the number
    of digits (arithmetic) or the level 1 .. 3 (code). ``params``: how it was
    made (ops and terms; the template's name). For code, ``entry_point`` names
    the function and ``tests`` holds ``(args, expected)`` pairs.
    """

    kind: str
    prompt: str
    reference: str
    difficulty: int
    params: dict = field(default_factory=dict, compare=True)
    entry_point: str = ""
    tests: tuple = ()

    def check(self, completion: str) -> bool:
        """Whether ``completion`` solves the task (the right number; every unit test passed)."""
        if self.kind == "arithmetic":
            return check_arithmetic(self.prompt, completion)
        passed, total = run_tests(self, self.prompt + _as_str("completion", completion))
        return passed == total

    def score(self, completion: str) -> float:
        """A graded reward in [0, 1]: 1 or 0 for arithmetic, the fraction of unit tests passed for code."""
        if self.kind == "arithmetic":
            return float(self.check(completion))
        passed, total = run_tests(self, self.prompt + _as_str("completion", completion))
        return passed / total


def _as_str(name: str, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {check.describe(value)}")
    return value


# --------------------------------------------------------------------------- arithmetic

ARITHMETIC_OPS = "+-*"
_EXPRESSION = re.compile(r"\s*(\d+)((?:\s*[-+*]\s*\d+)*)\s*=\s*")
_TERM = re.compile(r"\s*([-+*])\s*(\d+)")
_ANSWER = re.compile(r"[+-]?\d+")


def _evaluate(numbers: list[int], ops: list[str]) -> int:
    """The value of n0 op0 n1 op1 ..., with * before + and - (as written in school and in Python)."""
    total, product = 0, numbers[0]
    sign = 1
    for op, x in zip(ops, numbers[1:]):
        if op == "*":
            product *= x
        else:
            total += sign * product
            sign, product = (1 if op == "+" else -1), x
    return total + sign * product


def _answer_width(digits: int, ops: str, terms: int) -> int:
    """Digits needed for the largest magnitude any problem of this kind can have."""
    top = 10**digits - 1
    bound = top**terms if "*" in ops else terms * top
    return len(str(bound))


def arithmetic_problems(n: int, seed: int = 0, digits: int = 2, ops: str = "+", *, terms: int = 2,
                        fixed_width: bool = True) -> list[Task]:
    """``n`` arithmetic problems, e.g. ``prompt="07+35="``, ``reference="042"``.

    The difficulty knob: ``digits`` (1 .. 9) per operand, each uniform in
    ``0 .. 10**digits - 1``; ``ops``, the operations to draw from (a non-empty
    string of distinct characters from ``"+-*"``), one per gap between the
    ``terms`` (2 .. 6) operands, with ``*`` before ``+`` and ``-``.
    ``fixed_width`` pads operands to ``digits`` and answers to the width of
    the largest possible answer, with a sign in front of every answer when
    ``ops`` contains ``-`` (``"03-41=-38"``, ``"41-03=+38"``): every problem of
    a kind then has the same length, which lets a small model line up digits.
    Otherwise numbers are written plainly (``"7+35="``, ``"42"``).
    """
    n = check.as_int("n", n, 0)
    it = _iter_arithmetic(seed, digits, ops, terms=terms, fixed_width=fixed_width)
    return [next(it) for _ in range(n)]


def _iter_arithmetic(seed, digits=2, ops="+", *, terms=2, fixed_width=True) -> Iterator[Task]:
    seed = check.as_int("seed", seed, 0)
    digits = check.as_int("digits", digits, 1, 9)
    terms = check.as_int("terms", terms, 2, 6)
    fixed_width = check.as_bool("fixed_width", fixed_width)
    if not isinstance(ops, str):
        raise TypeError(f"ops must be a string of operations from {ARITHMETIC_OPS!r}, got {check.describe(ops)}")
    if not ops or any(c not in ARITHMETIC_OPS for c in ops) or len(set(ops)) != len(ops):
        raise ValueError(f"ops must be a non-empty string of distinct operations from {ARITHMETIC_OPS!r}, "
                         f"got {ops!r}")
    return _arithmetic_stream(np.random.default_rng(seed), digits, ops, terms, fixed_width)


def _arithmetic_stream(rng, digits, ops, terms, fixed_width) -> Iterator[Task]:
    width = _answer_width(digits, ops, terms)
    signed = "-" in ops
    while True:  # in blocks of 256 problems (drawn the same whatever n is, so lists stay prefixes)
        block_numbers = rng.integers(0, 10**digits, size=(256, terms)).tolist()
        block_ops = rng.integers(len(ops), size=(256, terms - 1)).tolist()
        yield from _arithmetic_block(block_numbers, block_ops, digits, ops, terms, fixed_width, width, signed)


def _arithmetic_block(block_numbers, block_ops, digits, ops, terms, fixed_width, width, signed) -> Iterator[Task]:
    params = {"ops": ops, "terms": terms, "fixed_width": fixed_width}
    for numbers, op_indices in zip(block_numbers, block_ops):
        chosen = [ops[i] for i in op_indices]
        value = _evaluate(numbers, chosen)
        if fixed_width:
            shown = [f"{x:0{digits}d}" for x in numbers]
            answer = ("-" if value < 0 else "+" if signed else "") + f"{abs(value):0{width}d}"
        else:
            shown, answer = [str(x) for x in numbers], str(value)
        prompt = shown[0] + "".join(op + x for op, x in zip(chosen, shown[1:])) + "="
        yield Task("arithmetic", prompt, answer, digits, dict(params))


def check_arithmetic(prompt: str, completion: str) -> bool:
    """Whether ``completion`` starts with the value of the expression in ``prompt``.

    ``prompt``: operands and ``+ - *`` ending with ``=`` (leading zeros are
    fine: ``"07+35="``). The answer is the completion's first
    whitespace-separated word, read as an integer with an optional sign, so
    ``"042"``, ``"+42"`` and ``"42\\n..."`` are all right for 42; the format is
    not judged. A malformed prompt is the caller's error (``ValueError``); a
    malformed completion is a wrong answer (False).
    """
    _as_str("prompt", prompt)
    _as_str("completion", completion)
    m = _EXPRESSION.fullmatch(prompt)
    if m is None:
        raise ValueError(f"prompt must be an expression like '07+35=' (numbers, + - *, ending with =), "
                         f"got {prompt!r}")
    numbers, ops = [int(m.group(1))], []
    for op, x in _TERM.findall(m.group(2)):
        ops.append(op)
        numbers.append(int(x))
    words = completion.split()
    return bool(words) and _ANSWER.fullmatch(words[0]) is not None and int(words[0]) == _evaluate(numbers, ops)


# --------------------------------------------------------------------------- code tasks

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _ints(rng, k, lo=-20, hi=20):
    return [int(x) for x in rng.integers(lo, hi + 1, size=k)]


def _word(rng, alphabet, lo=0, hi=10):
    return "".join(alphabet[int(i)] for i in rng.integers(len(alphabet), size=int(rng.integers(lo, hi + 1))))


def _t_add_constant(rng, k_tests):
    k = int(rng.integers(1, 10))
    return dict(args="x: int", ret="int", doc=f"Return x plus {k}.", names=(f"add_{k}", f"plus_{k}"),
                body=f"return x + {k}", solve=lambda x: x + k,
                cases=[(x,) for x in _ints(rng, k_tests, -100, 100)])


def _t_max_of_two(rng, k_tests):
    cases = [tuple(_ints(rng, 2)) for _ in range(k_tests - 1)] + [(3, 3)]
    return dict(args="a: int, b: int", ret="int", doc="Return the larger of a and b.",
                names=("max_of_two", "larger", "bigger"), body="return a if a >= b else b",
                solve=max, cases=cases)


def _t_sum_list(rng, k_tests):
    cases = [(_ints(rng, int(rng.integers(1, 7))),) for _ in range(k_tests - 1)] + [([],)]
    return dict(args="xs: list[int]", ret="int", doc="Return the sum of the numbers in xs (0 for an empty list).",
                names=("sum_list", "total", "add_all"), body="return sum(xs)", solve=sum, cases=cases)


def _t_reverse(rng, k_tests):
    cases = [(_word(rng, _LETTERS),) for _ in range(k_tests - 1)] + [("",)]
    return dict(args="s: str", ret="str", doc="Return s written backwards.",
                names=("reverse_string", "backwards", "reverse"), body="return s[::-1]",
                solve=lambda s: s[::-1], cases=cases)


def _t_count_char(rng, k_tests):
    c = "abxyz"[int(rng.integers(5))]
    cases = [(_word(rng, "abxyz"),) for _ in range(k_tests)]
    return dict(args="s: str", ret="int", doc=f"Return how many times the letter '{c}' appears in s.",
                names=(f"count_{c}", f"number_of_{c}"), body=f"return s.count({c!r})",
                solve=lambda s: s.count(c), cases=cases)


def _t_clamp(rng, k_tests):
    lo = int(rng.integers(-10, 0))
    hi = int(rng.integers(1, 11))
    return dict(args="x: int", ret="int", doc=f"Return x limited to the range {lo} .. {hi}.",
                names=("clamp", "limit"), body=f"return max({lo}, min({hi}, x))",
                solve=lambda x: max(lo, min(hi, x)), cases=[(x,) for x in _ints(rng, k_tests, -20, 20)])


def _t_multiples(rng, k_tests):
    k = int(rng.integers(2, 6))
    return dict(args="n: int", ret="list[int]", doc=f"Return the list of the first n positive multiples of {k}.",
                names=(f"multiples_of_{k}", f"first_multiples_of_{k}"),
                body=f"return [{k} * i for i in range(1, n + 1)]",
                solve=lambda n: [k * i for i in range(1, n + 1)],
                cases=[(int(x),) for x in rng.integers(0, 8, size=k_tests)])


def _t_count_vowels(rng, k_tests):
    return dict(args="s: str", ret="int", doc="Return the number of vowels (a, e, i, o, u) in s.",
                names=("count_vowels", "vowels"), body="return sum(1 for ch in s if ch in 'aeiou')",
                solve=lambda s: sum(ch in "aeiou" for ch in s),
                cases=[(_word(rng, _LETTERS),) for _ in range(k_tests)])


def _t_palindrome(rng, k_tests):
    cases = []
    for i in range(k_tests):
        w = _word(rng, "abc", 0, 4)
        cases.append((w + w[::-1][i % 2:] if i % 3 else w + "ab",))
    return dict(args="s: str", ret="bool", doc="Return True if s reads the same forwards and backwards.",
                names=("is_palindrome", "palindrome"), body="return s == s[::-1]",
                solve=lambda s: s == s[::-1], cases=cases)


_WORD_PAIRS = (("Fizz", "Buzz"), ("Ping", "Pong"), ("Tick", "Tock"), ("Foo", "Bar"))


def _t_fizzbuzz(rng, k_tests):
    a = int(rng.integers(2, 6))
    b = a + int(rng.integers(1, 4))
    w1, w2 = _WORD_PAIRS[int(rng.integers(len(_WORD_PAIRS)))]
    body = (f"if n % {a} == 0 and n % {b} == 0:\n        return {w1 + w2!r}\n"
            f"    if n % {a} == 0:\n        return {w1!r}\n"
            f"    if n % {b} == 0:\n        return {w2!r}\n    return str(n)")

    def solve(n):
        return (w1 if n % a == 0 else "") + (w2 if n % b == 0 else "") or str(n)
    cases = [(a * b,), (a,), (b,), (1,)] + [(int(x),) for x in rng.integers(1, 60, size=max(k_tests - 4, 0))]
    return dict(args="n: int", ret="str",
                doc=f"Return '{w1}{w2}' if n is divisible by both {a} and {b}, '{w1}' if only by {a}, "
                    f"'{w2}' if only by {b}, and str(n) otherwise.",
                names=(f"{w1.lower()}_{w2.lower()}",), body=body, solve=solve, cases=cases[:k_tests])


def _t_running_max(rng, k_tests):
    body = ("out, best = [], None\n    for x in xs:\n        best = x if best is None or x > best else best\n"
            "        out.append(best)\n    return out")

    def solve(xs):
        return [max(xs[:i + 1]) for i in range(len(xs))]
    cases = [(_ints(rng, int(rng.integers(1, 8))),) for _ in range(k_tests - 1)] + [([],)]
    return dict(args="xs: list[int]", ret="list[int]",
                doc="Return the list whose i-th entry is the largest of xs[0], ..., xs[i].",
                names=("running_max", "prefix_max"), body=body, solve=solve, cases=cases)


#: Code templates by difficulty level: 1 one line with no logic, 2 one line with a
#: library call or a comprehension, 3 branches or a loop with state.
CODE_TEMPLATES: dict[int, tuple[Callable, ...]] = {
    1: (_t_add_constant, _t_max_of_two, _t_sum_list, _t_reverse),
    2: (_t_count_char, _t_clamp, _t_multiples, _t_count_vowels, _t_palindrome),
    3: (_t_fizzbuzz, _t_running_max),
}


def code_tasks(n: int, seed: int = 0, *, levels=(1, 2, 3), n_tests: int = 6) -> list[Task]:
    """``n`` small Python functions to write, each with ``n_tests`` (4 .. 50) unit tests.

    The prompt is a signature and a docstring with one example (the first
    test); the reference is the body that follows it, so ``prompt + reference``
    is a complete function. ``levels``: the difficulty levels to draw from (a
    level or a collection of them, from 1, 2, 3; see ``CODE_TEMPLATES``): a
    level is drawn uniformly, then a template of it, then its constants and
    its test inputs.
    """
    n = check.as_int("n", n, 0)
    it = _iter_code(seed, levels=levels, n_tests=n_tests)
    return [next(it) for _ in range(n)]


def _iter_code(seed, *, levels=(1, 2, 3), n_tests=6) -> Iterator[Task]:
    seed = check.as_int("seed", seed, 0)
    n_tests = check.as_int("n_tests", n_tests, 4, 50)
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, (bool, np.bool_)):
        levels = (levels,)
    try:
        levels = tuple(levels)
    except TypeError:
        raise TypeError(f"levels must be a level or a collection of levels from 1, 2, 3, "
                        f"got {check.describe(levels)}") from None
    if not levels:
        raise ValueError("levels must name at least one level from 1, 2, 3, got an empty collection")
    levels = tuple(sorted({check.as_int("levels (each level)", v, 1, 3) for v in levels}))
    return _code_stream(np.random.default_rng(seed), levels, n_tests)


def _code_stream(rng, levels, n_tests) -> Iterator[Task]:
    while True:
        level = levels[int(rng.integers(len(levels)))]
        options = CODE_TEMPLATES[level]
        make = options[int(rng.integers(len(options)))]
        spec = make(rng, n_tests)
        name = spec["names"][int(rng.integers(len(spec["names"])))]
        tests = tuple((args, _plain(spec["solve"](*args))) for args in spec["cases"])
        example_args = ", ".join(repr(a) for a in tests[0][0])
        prompt = (f"def {name}({spec['args']}) -> {spec['ret']}:\n"
                  f'    """{spec["doc"]}\n\n    >>> {name}({example_args})\n    {tests[0][1]!r}\n    """\n')
        yield Task("code", prompt, "    " + spec["body"] + "\n", level, {"template": make.__name__[3:]}, name, tests)


def _plain(value):
    """``value`` as it comes back through JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


#: The program that runs a candidate in the child process. It reads the code, the
#: function's name, the arguments and the limits as JSON from stdin, and writes the
#: return values (never the verdicts: the parent compares them with the expected
#: values it keeps to itself) on one line after a random marker.
_HARNESS = r"""
import contextlib, io, json, sys
data = json.loads(sys.stdin.read())
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (data["memory"], data["memory"]))
    resource.setrlimit(resource.RLIMIT_CPU, (data["cpu"], data["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
except Exception:
    pass
real_stdout, sink, results = sys.stdout, io.StringIO(), []
with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
    env = {"__name__": "candidate"}
    try:
        exec(compile(data["code"], "<candidate>", "exec"), env)
        f = env[data["entry"]]
    except BaseException:
        f = None
    for args in data["args"]:
        try:
            results.append({"value": json.loads(json.dumps(f(*args)))})
        except BaseException:
            results.append(None)
real_stdout.write(data["marker"] + json.dumps(results) + "\n")
real_stdout.flush()
"""


def run_tests(task: Task, code: str, timeout: float = 5.0, *, memory_mb: int = 512) -> tuple[int, int]:
    """Run ``task``'s unit tests on ``code`` (a complete program defining ``task.entry_point``).

    Returns ``(passed, total)``. The code runs in a fresh Python process
    (``python -I -S``: no user site, no environment variables, a temporary
    working directory) with a wall-clock ``timeout`` in seconds for the whole
    run (the process group is killed when it expires: every test then counts as
    failed), a CPU-time limit, an address-space limit of ``memory_mb`` and no
    file writes (POSIX resource limits). The child only returns what the
    function returned; the parent compares it with the expected values, so
    code that prints "all tests passed" or forges the output line gains nothing
    without computing the right answers.

    Limits, honestly: this is not a security sandbox. The code can read files,
    open network connections and start processes (root ignores process limits);
    keeping untrusted code off the network needs an OS sandbox (a container, a
    network namespace, seccomp). It is safe enough for the book's purpose: small
    models' attempts at ten-line functions, on the reader's own machine.
    """
    if not isinstance(task, Task) or task.kind != "code":
        raise TypeError(f"task must be a code Task (from code_tasks), got {check.describe(task)}")
    _as_str("code", code)
    timeout = check.as_real("timeout", timeout, 0.0, low_open=True)
    memory_mb = check.as_int("memory_mb", memory_mb, 64)
    total = len(task.tests)
    marker = "@@rl2llm-" + secrets.token_hex(8) + "@@"
    payload = json.dumps({"code": code, "entry": task.entry_point, "args": [list(a) for a, _ in task.tests],
                          "memory": memory_mb * 2**20, "cpu": max(1, int(np.ceil(timeout))), "marker": marker})
    with tempfile.TemporaryDirectory(prefix="rl2llm-tests-") as workdir:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HARNESS], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=workdir,
                                env={"PATH": os.environ.get("PATH", "")}, start_new_session=True, text=True)
        try:
            stdout, _ = proc.communicate(payload, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return 0, total
        finally:
            _kill_group(proc)  # children the code may have left behind
    line = next((ln[len(marker):] for ln in stdout.splitlines() if ln.startswith(marker)), None)
    if line is None:
        return 0, total
    try:
        results = json.loads(line)
    except ValueError:
        return 0, total
    if not isinstance(results, list) or len(results) != total:
        return 0, total
    passed = sum(isinstance(r, dict) and "value" in r and r["value"] == expected and type(r["value"]) is type(expected)
                 for r, (_, expected) in zip(results, task.tests))
    return int(passed), total


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


# --------------------------------------------------------------------------- pretraining text

CORPORA = ("stories", "arithmetic", "code")


def _items(name: str, seed: int, options: dict) -> Iterator[str]:
    """The corpus's items as text, from one generator (options are checked here, at the call)."""
    if name == "stories":
        return (story.text + "\n\n" for story in _iter_stories(seed, **options))
    if name == "arithmetic":
        return (t.prompt + t.reference + "\n" for t in _iter_arithmetic(seed, **options))
    return (t.prompt + t.reference + "\n" for t in _iter_code(seed, **options))


def corpus(name: str, n_chars: int | None = None, seed: int = 0, *, n_items: int | None = None,
           **options) -> str:
    """Plain text for language-model pretraining: ``"stories"``, ``"arithmetic"`` or ``"code"``.

    Give exactly one size: ``n_chars`` (whole items are added until the text
    has at least that many characters; it is then cut to exactly ``n_chars``)
    or ``n_items`` (that many whole items). Stories end with a blank line,
    arithmetic problems with a newline (``"07+35=042\\n"``), functions with a
    blank line. ``options`` go to the generator (:func:`stories`,
    :func:`arithmetic_problems` or :func:`code_tasks`, without ``n`` and ``seed``).
    """
    if name not in CORPORA:
        raise ValueError(f"name must be one of {CORPORA}, got {check.describe(name)}")
    if (n_chars is None) == (n_items is None):
        raise ValueError("give exactly one of n_chars and n_items")
    try:
        items = _items(name, seed, options)
    except TypeError as err:  # an option the generator does not take
        if "unexpected keyword" in str(err) or "positional argument" in str(err):
            raise TypeError(f"options: {err}") from None
        raise
    if n_items is not None:
        n_items = check.as_int("n_items", n_items, 0)
        return "".join(next(items) for _ in range(n_items))
    n_chars = check.as_int("n_chars", n_chars, 0)
    parts, length = [], 0
    while length < n_chars:
        item = next(items)
        parts.append(item)
        length += len(item)
    return "".join(parts)[:n_chars]
