"""Tests for rl2llm.corpora: the generated data of Part III and the tasks of Part IV.

The claims, each with a test that would fail if it were wrong: the same seed
gives the same data and another seed other data; a list is a prefix of a
longer one; the stories' attributes are what the grammar put in (and
``story_attributes`` reads them back from the text); every arithmetic
reference answer is right and wrong answers are refused; every reference
solution passes its unit tests and wrong, crashing, looping or forging
solutions do not; the difficulty knobs do what they say; bad input is refused
with the argument's name. Timings are printed (``-s``), never asserted.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from rl2llm import corpora as C
from rl2llm.corpora import (
    Task,
    arithmetic_problems,
    check_arithmetic,
    code_tasks,
    corpus,
    gold_score,
    run_tests,
    stories,
    story_attributes,
)

# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("make", [
    lambda n, s: [x.text for x in stories(n, s)],
    lambda n, s: [(t.prompt, t.reference) for t in arithmetic_problems(n, s, digits=3, ops="+-*")],
    lambda n, s: [(t.prompt, t.reference, t.tests) for t in code_tasks(n, s)],
], ids=["stories", "arithmetic", "code"])
def test_same_seed_same_data_other_seed_other_data_and_prefixes(make):
    assert make(30, 7) == make(30, 7), "the same seed must give the same data"
    assert make(30, 7) != make(30, 8), "another seed must give other data"
    assert make(10, 7) == make(30, 7)[:10], "a shorter list must be a prefix of a longer one"


@pytest.mark.parametrize("name", C.CORPORA)
def test_corpus_is_deterministic_and_sized(name):
    a = corpus(name, 5000, 3)
    assert a == corpus(name, 5000, 3) and a != corpus(name, 5000, 4)
    assert len(a) == 5000
    assert corpus(name, 0, 3) == ""
    assert corpus(name, n_items=0, seed=3) == ""


def test_corpus_items_are_the_generators_items():
    assert corpus("stories", n_items=3, seed=5) == "".join(s.text + "\n\n" for s in stories(3, 5))
    assert corpus("arithmetic", n_items=4, seed=5, digits=3) == "".join(
        t.prompt + t.reference + "\n" for t in arithmetic_problems(4, 5, digits=3))
    assert corpus("code", n_items=2, seed=5, levels=3) == "".join(
        t.prompt + t.reference + "\n" for t in code_tasks(2, 5, levels=3))


# --------------------------------------------------------------------------- stories


STORIES = stories(400, 0)


def test_story_attributes_are_those_the_grammar_put_in():
    for s in STORIES:
        assert story_attributes(s.text) == s.attributes(), f"attributes misread for {s.text!r}"
        assert s.text == " ".join(s.sentences) and len(s.roles) == s.n_sentences
        assert s.prompt + s.reference == s.text


def test_sentiment_labels_match_the_sentences():
    for s in STORIES:
        kinds = set(s.roles)
        if s.sentiment == "negative":
            assert "negative" in kinds and "positive" not in kinds, s.text
        elif s.sentiment == "positive":
            assert "positive" in kinds and "negative" not in kinds, s.text
        else:
            assert not kinds & {"positive", "negative"}, s.text
    # all three sentiments, morals and both cast sizes occur
    assert {s.sentiment for s in STORIES} == set(C.SENTIMENTS)
    assert {s.has_moral for s in STORIES} == {True, False}
    assert {len(s.characters) for s in STORIES} == {1, 2}


def test_a_negative_story_contains_a_negative_sentence_from_the_grammar():
    negative = [s for s in STORIES if s.sentiment == "negative"]
    regexes = [C._template_regex(t) for t in C.TEMPLATES["negative"]]
    for s in negative:
        assert any(r.fullmatch(x) for x in s.sentences for r in regexes), s.text


def test_named_characters_appear_and_others_do_not():
    for s in STORIES:
        for name in C.NAMES:
            assert (name in s.text) == (name in s.characters), (name, s.text)


def test_story_knobs():
    short = stories(200, 1, min_sentences=2, max_sentences=2)
    assert {s.n_sentences for s in short} == {2}
    long = stories(200, 1, min_sentences=10, max_sentences=12)
    assert {s.n_sentences for s in long} == {10, 11, 12}
    assert all(s.sentiment == "negative" for s in stories(50, 1, sentiment="negative"))
    assert all(s.has_moral for s in stories(50, 1, moral_rate=1.0))
    assert not any(s.has_moral for s in stories(50, 1, moral_rate=0.0))
    assert all(len(s.characters) == 1 for s in stories(50, 1, two_rate=0.0))


def test_story_attributes_of_text_not_from_the_grammar():
    a = story_attributes("happy happy happy. Lily was very happy.")
    assert a["sentiment"] == "positive" and a["grammatical"] == 0.5 and a["characters"] == ("Lily",)
    assert story_attributes("")["grammatical"] == 0.0
    assert story_attributes("Lily was very happy. Lily was very sad.")["sentiment"] == "mixed"


def test_gold_score_prefers_what_it_says():
    happy = "There once was a little fox called Emma. Emma was very happy."
    sad = "There once was a little fox called Emma. Emma was very sad."
    moral = happy + " The moral of the story is that sharing is good."
    assert gold_score(happy) > gold_score(sad)
    assert gold_score(moral) > gold_score(happy)
    assert gold_score(happy) > gold_score(happy + " happy happy happy.")  # ungrammatical text is penalised
    assert gold_score(sad, sentiment_weight=-1.0) > gold_score(happy, sentiment_weight=-1.0)


@pytest.mark.parametrize("name", C.CORPORA)
def test_one_megabyte_of_text_is_fast(name):
    start = time.perf_counter()
    text = corpus(name, 1_000_000, 0)
    seconds = time.perf_counter() - start
    print(f"\n[corpora] 1 MB of {name} in {seconds:.2f} s")
    assert len(text) == 1_000_000


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize("digits,ops,terms,fixed", [
    (1, "+", 2, True), (2, "+", 2, True), (2, "+", 2, False), (3, "+-", 2, True), (2, "+-*", 3, True),
    (4, "*", 2, False), (2, "-", 4, True),
])
def test_every_arithmetic_answer_is_right(digits, ops, terms, fixed):
    tasks = arithmetic_problems(300, 2, digits=digits, ops=ops, terms=terms, fixed_width=fixed)
    for t in tasks:
        assert t.check(t.reference), (t.prompt, t.reference)
        assert check_arithmetic(t.prompt, t.reference + "\nmore text")
        wrong = str(int(t.reference) + 1)
        assert not t.check(wrong), (t.prompt, wrong)
        assert t.difficulty == digits and t.score(t.reference) == 1.0
        # Python reads the same value from the prompt (once leading zeros are dropped)
        assert int(t.reference) == eval(_strip_zeros(t.prompt[:-1])), t.prompt
    if fixed:
        assert len({len(t.prompt + t.reference) for t in tasks}) == 1, "fixed width: one length per kind"


def _strip_zeros(expression: str) -> str:
    return re.sub(r"\b0+(\d)", r"\1", expression)


def test_arithmetic_lists_are_prefixes_across_blocks():
    long = arithmetic_problems(700, 4, digits=3, ops="+-")
    assert arithmetic_problems(300, 4, digits=3, ops="+-") == long[:300]


def test_fixed_width_format():
    t = arithmetic_problems(50, 0, digits=2)
    assert all(len(x.prompt) == 6 and len(x.reference) == 3 for x in t)
    assert check_arithmetic("07+35=", "042") and check_arithmetic("07+35=", "42")
    assert not check_arithmetic("07+35=", "043") and not check_arithmetic("07+35=", "")
    assert not check_arithmetic("07+35=", "42abc") and not check_arithmetic("07+35=", "four")
    assert check_arithmetic("2+3*4=", "14") and check_arithmetic("03-41=", "-38")
    signed = arithmetic_problems(50, 0, digits=2, ops="-")
    assert all(x.reference[0] in "+-" for x in signed)


def test_arithmetic_difficulty_knob():
    for digits in (1, 3, 5):
        tasks = arithmetic_problems(200, 1, digits=digits, fixed_width=False)
        operands = [int(x) for t in tasks for x in t.prompt[:-1].split("+")]
        assert max(operands) < 10**digits and max(operands) >= 10 ** (digits - 1)
    three = arithmetic_problems(100, 1, ops="+*", terms=3)
    assert all(sum(c in "+*" for c in t.prompt) == 2 for t in three)
    assert {c for t in three for c in t.prompt if c in "+-*"} == {"+", "*"}


# --------------------------------------------------------------------------- code


TASKS = code_tasks(40, 0)


def test_every_reference_solution_passes_and_a_wrong_one_fails():
    start = time.perf_counter()
    for t in TASKS:
        assert run_tests(t, t.prompt + t.reference) == (len(t.tests), len(t.tests)), t.prompt + t.reference
        assert t.check(t.reference)
        assert run_tests(t, t.prompt + "    return None\n")[0] == 0
    print(f"\n[corpora] {3 * len(TASKS)} test runs in {time.perf_counter() - start:.2f} s")
    assert {t.params["template"] for t in code_tasks(200, 0)} == {f.__name__[3:] for fs in C.CODE_TEMPLATES.values() for f in fs}


def test_partial_credit_crashes_loops_and_forgeries():
    t = next(x for x in code_tasks(50, 1, levels=1) if x.params["template"] == "max_of_two")
    passed, total = run_tests(t, t.prompt + "    return a\n")  # right when a >= b
    assert 0 < passed < total and t.score("    return a\n") == passed / total
    assert run_tests(t, "this is not python") == (0, total)
    assert run_tests(t, t.prompt + "    raise ValueError\n") == (0, total)
    assert run_tests(t, "import sys\nsys.exit(0)\n") == (0, total)
    assert run_tests(t, "import os\nos._exit(0)\n") == (0, total)
    start = time.perf_counter()
    assert run_tests(t, t.prompt + "    while True:\n        pass\n", timeout=1.0) == (0, total)
    assert time.perf_counter() - start < 10
    forged = "print('all tests passed')\n" + t.prompt + "    print('ok')\n    return 0\n"
    assert run_tests(t, forged)[0] < total
    assert run_tests(t, t.prompt + "    return True if a >= b else False\n")[0] < total  # a bool is not an int


def test_code_difficulty_levels():
    for level in (1, 2, 3):
        tasks = code_tasks(30, 2, levels=level)
        assert {t.difficulty for t in tasks} == {level}
        names = {f.__name__[3:] for f in C.CODE_TEMPLATES[level]}
        assert {t.params["template"] for t in tasks} <= names
    assert {t.difficulty for t in code_tasks(60, 2, levels=[1, 3])} == {1, 3}
    assert all(len(t.tests) == 9 for t in code_tasks(10, 2, n_tests=9))


def test_code_prompt_shape():
    for t in TASKS:
        assert t.prompt.startswith(f"def {t.entry_point}(") and t.prompt.endswith('"""\n')
        assert t.reference.startswith("    ")
        compile(t.prompt + t.reference, "<task>", "exec")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call,error,words", [
    (lambda: stories(-1, 0), ValueError, "n"),
    (lambda: stories(2.0, 0), TypeError, "n"),
    (lambda: stories(2, -1), ValueError, "seed"),
    (lambda: stories(2, "a"), TypeError, "seed"),
    (lambda: stories(2, 0, sentiment="happy"), ValueError, "sentiment"),
    (lambda: stories(2, 0, min_sentences=1), ValueError, "min_sentences"),
    (lambda: stories(2, 0, min_sentences=5, max_sentences=4), ValueError, "max_sentences"),
    (lambda: stories(2, 0, moral_rate=1.5), ValueError, "moral_rate"),
    (lambda: stories(2, 0, two_rate=np.nan), ValueError, "two_rate"),
    (lambda: story_attributes(3), TypeError, "text"),
    (lambda: gold_score("x", target_sentences=-1), ValueError, "target_sentences"),
    (lambda: gold_score("x", moral_bonus="a"), TypeError, "moral_bonus"),
    (lambda: arithmetic_problems(2, 0, digits=0), ValueError, "digits"),
    (lambda: arithmetic_problems(2, 0, digits=10), ValueError, "digits"),
    (lambda: arithmetic_problems(2, 0, ops="/"), ValueError, "ops"),
    (lambda: arithmetic_problems(2, 0, ops=""), ValueError, "ops"),
    (lambda: arithmetic_problems(2, 0, ops="++"), ValueError, "ops"),
    (lambda: arithmetic_problems(2, 0, ops=["+"]), TypeError, "ops"),
    (lambda: arithmetic_problems(2, 0, terms=1), ValueError, "terms"),
    (lambda: arithmetic_problems(2, 0, fixed_width=1), TypeError, "fixed_width"),
    (lambda: arithmetic_problems(-2, 0), ValueError, "n"),
    (lambda: check_arithmetic("7+", "7"), ValueError, "prompt"),
    (lambda: check_arithmetic("7+3", "10"), ValueError, "prompt"),
    (lambda: check_arithmetic(None, "10"), TypeError, "prompt"),
    (lambda: check_arithmetic("7+3=", 10), TypeError, "completion"),
    (lambda: code_tasks(2, 0, levels=4), ValueError, "levels"),
    (lambda: code_tasks(2, 0, levels=()), ValueError, "levels"),
    (lambda: code_tasks(2, 0, levels="1"), TypeError, "levels"),
    (lambda: code_tasks(2, 0, levels=None), TypeError, "levels"),
    (lambda: code_tasks(2, 0, n_tests=3), ValueError, "n_tests"),
    (lambda: code_tasks(2, 1.5), TypeError, "seed"),
    (lambda: run_tests("task", "code"), TypeError, "task"),
    (lambda: run_tests(arithmetic_problems(1, 0)[0], "x"), TypeError, "task"),
    (lambda: run_tests(TASKS[0], b"code"), TypeError, "code"),
    (lambda: run_tests(TASKS[0], "x", timeout=0), ValueError, "timeout"),
    (lambda: run_tests(TASKS[0], "x", memory_mb=10), ValueError, "memory_mb"),
    (lambda: TASKS[0].check(None), TypeError, "completion"),
    (lambda: corpus("poems", 10), ValueError, "name"),
    (lambda: corpus("stories"), ValueError, "n_chars"),
    (lambda: corpus("stories", 10, n_items=2), ValueError, "n_items"),
    (lambda: corpus("stories", -1), ValueError, "n_chars"),
    (lambda: corpus("stories", n_items=-1), ValueError, "n_items"),
    (lambda: corpus("stories", 10, -3), ValueError, "seed"),
    (lambda: corpus("arithmetic", 10, digits=0), ValueError, "digits"),
    (lambda: corpus("arithmetic", 10, colour="red"), TypeError, "colour"),
])
def test_bad_input_names_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_task_is_a_plain_record():
    t = arithmetic_problems(1, 0)[0]
    assert isinstance(t, Task) and t.kind == "arithmetic" and t.prompt.endswith("=")
    assert Task("arithmetic", "1+1=", "2", 1).check("2")
