"""rl2llm.preferences: the gold judge, its noise, and comparisons of a model's own answers."""

import math

import numpy as np
import pytest

from rl2llm import corpora, preferences


class Scripted:
    """Stands in for a zoo model: answers in turn from a fixed list (records the calls)."""

    spec = "scripted"

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def generate(self, prompts, max_new_tokens=None, **options):
        self.calls.append((list(prompts), max_new_tokens, options))
        return [self.answers[i % len(self.answers)] for i in range(len(prompts))]


def test_gold_reward_reads_each_task():
    story = corpora.stories(1, seed=0)[0]
    assert preferences.gold_reward(story, story.reference) == corpora.gold_score(story.text)
    assert preferences.gold_reward(story, story.reference, moral_bonus=3.0) == corpora.gold_score(story.text, moral_bonus=3.0)
    task = corpora.arithmetic_problems(1, seed=0)[0]
    assert preferences.gold_reward(task, task.reference) == 1.0
    wrong = str(int(task.reference) + 1) if task.reference.strip().isdigit() else "x"
    assert preferences.gold_reward(task, wrong) == 0.0
    with pytest.raises(TypeError, match="weights"):
        preferences.gold_reward(task, task.reference, moral_bonus=1.0)


def test_label_is_bradley_terry_with_temperature():
    rng = np.random.default_rng(0)
    assert preferences.label(1.0, 0.0, 0.0, rng) is True
    assert preferences.label(0.0, 1.0, 0.0, rng) is False
    ties = np.mean([preferences.label(0.5, 0.5, 0.0, rng) for _ in range(4000)])
    assert abs(ties - 0.5) < 0.03
    for diff, noise in [(0.5, 0.5), (1.0, 2.0), (-0.3, 0.1)]:
        freq = np.mean([preferences.label(diff, 0.0, noise, rng) for _ in range(20000)])
        assert abs(freq - 1 / (1 + math.exp(-diff / noise))) < 0.015


def test_pairs_are_labelled_and_ties_dropped():
    tasks = corpora.arithmetic_problems(6, seed=1)
    right, wrong = tasks[0].reference, "x"
    # every item gets one right and one wrong answer for the first pair, two identical for the second
    model = Scripted([right, wrong, wrong, wrong])
    prefs = preferences.preference_pairs(model, tasks[:1], n_per_item=2, seed=0)
    assert len(prefs) == 1                      # the wrong/wrong pair is a tie
    assert prefs[0].chosen == right and prefs[0].rejected == wrong and prefs[0].agrees
    kept = preferences.preference_pairs(model, tasks[:1], n_per_item=2, seed=0, drop_ties=False)
    assert len(kept) == 2 and kept[1].margin == 0
    assert model.calls[0][0] == [tasks[0].prompt] * 4


def test_noise_lowers_agreement_and_repeats_with_the_seed():
    stories = corpora.stories(300, seed=2)
    good = stories[0].reference                  # a grammatical continuation
    model = Scripted([good, " Tom ran and ran and ran."])
    clean = preferences.preference_pairs(model, stories, noise=0.0, seed=0)
    noisy = preferences.preference_pairs(model, stories, noise=3.0, seed=0)
    assert preferences.agreement(clean) == 1.0
    assert 0.4 < preferences.agreement(noisy) < 0.95
    assert noisy == preferences.preference_pairs(model, stories, noise=3.0, seed=0)


@pytest.mark.parametrize("call, name", [
    (lambda: preferences.gold_reward("story", "x"), "item"),
    (lambda: preferences.gold_reward(corpora.stories(1)[0], 3), "completion"),
    (lambda: preferences.label(1.0, 0.0, -1.0, np.random.default_rng(0)), "noise"),
    (lambda: preferences.label(1.0, 0.0, 1.0, 0), "rng"),
    (lambda: preferences.label("a", 0.0, 1.0, np.random.default_rng(0)), "gold_a"),
    (lambda: preferences.preference_pairs(object(), []), "zoo_model"),
    (lambda: preferences.preference_pairs(Scripted(["1"]), corpora.stories(1)[0]), "items"),
    (lambda: preferences.preference_pairs(Scripted(["1"]), ["a"]), r"items\[0\]"),
    (lambda: preferences.preference_pairs(Scripted(["1"]), [], n_per_item=0), "n_per_item"),
    (lambda: preferences.preference_pairs(Scripted(["1"]), [], temperature=0), "temperature"),
    (lambda: preferences.agreement([]), "prefs"),
    (lambda: preferences.agreement([1]), r"prefs\[0\]"),
])
def test_bad_inputs_are_named(call, name):
    with pytest.raises((TypeError, ValueError), match=name):
        call()
