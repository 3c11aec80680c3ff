"""rl2llm.reward_model: Bradley–Terry and Plackett–Luce, the reward model, calibration, best-of-n."""

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rl2llm import reward_model as R


def P(prompt, chosen, rejected, gc=1.0, gr=0.0):
    return SimpleNamespace(prompt=prompt, chosen=chosen, rejected=rejected, gold_chosen=gc, gold_rejected=gr)


# --------------------------------------------------------------------------- losses


def test_bradley_terry_is_the_negative_log_likelihood():
    rc, rr = torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 0.5, -1.0])
    expected = -np.mean(np.log(1 / (1 + np.exp(-(rc - rr).numpy()))))
    assert float(R.bradley_terry_loss(rc, rr)) == pytest.approx(expected, rel=1e-6)
    # a margin asks for a bigger gap: it is the loss of the shifted difference
    m = torch.tensor([0.5, 0.0, 1.0])
    assert float(R.bradley_terry_loss(rc, rr, m)) == pytest.approx(float(R.bradley_terry_loss(rc - m, rr)))
    assert float(R.bradley_terry_loss(rc, rr, 0.5)) == pytest.approx(float(R.bradley_terry_loss(rc - 0.5, rr)))
    # equal rewards: log 2
    assert float(R.bradley_terry_loss([0.0], [0.0])) == pytest.approx(math.log(2))


def test_bradley_terry_is_stable_for_large_gaps():
    assert float(R.bradley_terry_loss([-200.0], [200.0])) == pytest.approx(400.0)
    assert float(R.bradley_terry_loss([200.0], [-200.0])) == pytest.approx(0.0, abs=1e-12)


def test_plackett_luce_with_two_items_is_bradley_terry():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 2, generator=g)
    ranking = torch.stack([torch.randperm(2, generator=g) for _ in range(6)])
    chosen = s.gather(1, ranking[:, :1]).squeeze(1)
    rejected = s.gather(1, ranking[:, 1:]).squeeze(1)
    assert float(R.plackett_luce_loss(s, ranking)) == pytest.approx(float(R.bradley_terry_loss(chosen, rejected)),
                                                                     abs=1e-6)


def test_plackett_luce_matches_the_brute_force_likelihood_for_three_items():
    s = np.array([[0.3, -1.2, 2.0], [1.0, 1.0, 0.0]])
    rankings = np.array([[2, 0, 1], [1, 2, 0]])
    total = 0.0
    for row, rank in zip(s, rankings):
        # probability of the ranking: pick best among all, then among the rest
        w = np.exp(row)
        p, rest = 1.0, list(range(3))
        for i in rank:
            p *= w[i] / w[rest].sum()
            rest.remove(i)
        total += -np.log(p)
        # and the probabilities of all 6 rankings sum to 1 (a distribution over orders)
        probs = []
        for perm in itertools.permutations(range(3)):
            q, rest = 1.0, list(range(3))
            for i in perm:
                q *= w[i] / w[rest].sum()
                rest.remove(i)
            probs.append(q)
        assert sum(probs) == pytest.approx(1.0)
    assert float(R.plackett_luce_loss(s, rankings)) == pytest.approx(total / 2, rel=1e-6)


def test_loss_inputs_are_checked():
    with pytest.raises(ValueError, match="r_chosen and r_rejected"):
        R.bradley_terry_loss([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="r_chosen"):
        R.bradley_terry_loss([[1.0]], [[1.0]])
    with pytest.raises(ValueError, match="margin"):
        R.bradley_terry_loss([1.0, 2.0], [1.0, 0.0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="r_rejected"):
        R.bradley_terry_loss([1.0], [float("nan")])
    with pytest.raises(ValueError, match=r"ranking\[1\] must be a permutation"):
        R.plackett_luce_loss([[0.0, 1.0], [0.0, 1.0]], [[0, 1], [1, 1]])
    with pytest.raises(ValueError, match="ranking must have the shape"):
        R.plackett_luce_loss([[0.0, 1.0]], [[0, 1, 2]])
    with pytest.raises(TypeError, match="ranking must hold integer"):
        R.plackett_luce_loss([[0.0, 1.0]], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="scores must have shape"):
        R.plackett_luce_loss([[0.0]], [[0]])


# --------------------------------------------------------------------------- calibration, KL, curves


def test_calibration_of_a_calibrated_predictor_is_near_zero():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(float)
    cal = R.calibration(p, y, n_bins=10)
    assert cal["ece"] < 0.02 and cal["count"].sum() == 20000
    over = R.calibration(np.where(p > 0.5, 1.0, 0.0), y)  # overconfident: always 0 or 1
    assert over["ece"] > 0.2
    with pytest.raises(ValueError, match="p_predicted must lie"):
        R.calibration([1.5], [1.0])
    with pytest.raises(ValueError, match="outcomes must lie"):
        R.calibration([0.5], [2.0])
    with pytest.raises(ValueError, match="one length"):
        R.calibration([0.5, 0.5], [1.0])


def test_best_of_n_kl_closed_form_matches_the_exact_discrete_value():
    assert R.best_of_n_kl(1) == 0.0
    M = 200000  # many equally likely outcomes, no ties: best-of-n picks the i-th with (i/M)^n - ((i-1)/M)^n
    i = np.arange(1, M + 1) / M
    for n in (2, 4, 16):
        q = i ** n - (i - 1 / M) ** n
        kl = float(np.sum(q * np.log(q * M)))
        assert R.best_of_n_kl(n) == pytest.approx(kl, abs=1e-3)
    with pytest.raises(ValueError, match="n must"):
        R.best_of_n_kl(0)


def test_best_of_n_curve_matches_enumerating_every_subset():
    rng = np.random.default_rng(1)
    proxy, gold = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    cur = R.best_of_n_curve(proxy, gold, [1, 3, 7])
    for j, n in enumerate([1, 3, 7]):
        g, p = [], []
        for row in range(3):
            vals = [(proxy[row, list(c)].max(), gold[row, list(c)][np.argmax(proxy[row, list(c)])])
                    for c in itertools.combinations(range(7), n)]
            p.append(np.mean([v[0] for v in vals]))
            g.append(np.mean([v[1] for v in vals]))
        assert cur["proxy"][j] == pytest.approx(np.mean(p))
        assert cur["gold"][j] == pytest.approx(np.mean(g))
    assert cur["kl"][0] == 0.0
    with pytest.raises(ValueError, match=r"ns\[\]"):
        R.best_of_n_curve(proxy, gold, [8])
    with pytest.raises(ValueError, match="one shape"):
        R.best_of_n_curve(proxy, gold[:2], [1])


def test_best_of_n_keeps_the_best_sample():
    class Policy:
        def generate(self, prompts, max_new_tokens=None, *, temperature=1.0, seed=0):
            return [f"{p}-{i % 3}" for i, p in enumerate(prompts)]

    items = [SimpleNamespace(prompt="a"), SimpleNamespace(prompt="b")]
    picked = R.best_of_n(Policy(), lambda ps, cs: [float(c[-1]) for c in cs], items, 3)
    assert picked == ["a-2", "b-2"]
    with pytest.raises(TypeError, match="policy"):
        R.best_of_n(object(), lambda ps, cs: cs, items, 3)
    with pytest.raises(TypeError, match="reward_fn"):
        R.best_of_n(Policy(), 3, items, 3)
    with pytest.raises(ValueError, match="n must"):
        R.best_of_n(Policy(), lambda ps, cs: cs, items, 0)
    with pytest.raises(TypeError, match=r"items\[0\]"):
        R.best_of_n(Policy(), lambda ps, cs: cs, ["a"], 2)


# --------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def rm():
    return R.RewardModel.from_zoo("stories", seed=0)


def test_reward_model_is_a_sequence_classifier_reading_the_last_token(rm):
    from transformers import LlamaForSequenceClassification

    assert isinstance(rm.model, LlamaForSequenceClassification) and rm.model.config.num_labels == 1
    texts = ["Once upon a time, there was a cat named Sam.", "Sam was happy. " * 6]
    batch = R.encode_texts(rm.tokenizer, texts)
    assert (batch["input_ids"][0, batch["attention_mask"][0].sum() - 1] == rm.tokenizer.eos_token_id)
    assert batch["input_ids"][0, -1] == rm.tokenizer.pad_token_id   # right-padded
    together = rm.score(texts)
    alone = np.array([rm.score([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5), "padding must not change a text's reward"
    assert np.allclose(rm.reward_fn(["Once upon a time, "], ["there was a cat named Sam."]), together[:1])


def test_same_seed_same_head_other_seed_other_head():
    a = R.RewardModel.from_zoo("stories", seed=3).model.score.weight
    b = R.RewardModel.from_zoo("stories", seed=3).model.score.weight
    c = R.RewardModel.from_zoo("stories", seed=4).model.score.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_learns_a_visible_preference_and_is_deterministic(tmp_path):
    prefs = [P("Once upon a time, ", "Sam was very happy.", "Sam was very sad."),
             P("One day, ", "Mia smiled and laughed.", "Mia felt angry and cried."),
             P("Once upon a time, ", "It was a wonderful day.", "It was a gloomy day."),
             P("One day, ", "Leo was very happy.", "Leo was very sad.")]
    rm1, h1 = R.train_reward_model(prefs, seed=0, steps=12, batch_size=4, lr=1e-3)
    rm2, h2 = R.train_reward_model(prefs, seed=0, steps=12, batch_size=4, lr=1e-3)
    assert h1["loss"] == h2["loss"]
    assert h1["loss"][-1] < 0.5 * h1["loss"][0]
    assert R.pairwise_accuracy(rm1, prefs) == 1.0
    assert R.pairwise_accuracy(rm1, prefs, against="label") == 1.0
    saved = R.RewardModel.load(rm1.save(tmp_path / "rm"))
    assert np.allclose(saved.score(["Sam was happy."]), rm1.score(["Sam was happy."]), atol=1e-6)
    mean, spread = R.ensemble_scores([rm1, saved], ["Sam was happy.", "Sam was sad.", "Mia cried."])
    assert spread.max() < 1e-4 and mean[0] > mean[1]


def test_model_inputs_are_checked(rm):
    with pytest.raises(TypeError, match="prefs"):
        R.train_reward_model("abc", steps=1)
    with pytest.raises(ValueError, match="prefs must hold"):
        R.train_reward_model([], steps=1)
    with pytest.raises(TypeError, match=r"prefs\[0\]"):
        R.train_reward_model([SimpleNamespace(prompt="a", chosen=1, rejected="b")], steps=1)
    with pytest.raises(ValueError, match="steps"):
        R.train_reward_model([P("a", "b", "c")], steps=0)
    with pytest.raises(ValueError, match="lr"):
        R.train_reward_model([P("a", "b", "c")], lr=0.0)
    with pytest.raises(ValueError, match="threads"):
        R.train_reward_model([P("a", "b", "c")], threads=0)
    with pytest.raises(TypeError, match="rm must be a RewardModel"):
        R.pairwise_accuracy("rm", [P("a", "b", "c")])
    with pytest.raises(ValueError, match="against"):
        R.pairwise_accuracy(rm, [P("a", "b", "c")], against="both")
    with pytest.raises(TypeError, match="texts must be a list"):
        rm.score("one text")
    with pytest.raises(ValueError, match="same length"):
        rm.reward_fn(["a"], ["b", "c"])
    with pytest.raises(ValueError, match="at least 2 reward models"):
        R.ensemble_scores([rm], ["a", "b"])
    with pytest.raises(ValueError, match="name must be one of"):
        R.RewardModel.from_zoo("poems")
    with pytest.raises(ValueError, match="unknown keys"):
        R.proxy_reward_model(config={"noize": 1.0})
    with pytest.raises(ValueError, match="path must be a folder"):
        R.RewardModel.load("/nonexistent")


# --------------------------------------------------------------------------- TRL


TRL_ARGS = dict(per_device_train_batch_size=4, learning_rate=5e-4, bf16=False, gradient_checkpointing=False,
                lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, report_to=[], logging_steps=1000,
                save_strategy="no", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
                center_rewards_coefficient=None, max_length=None, seed=0)


def _trl_trainer(rm, prefs, tmp_path, **overrides):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    data = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in prefs])
    args = RewardConfig(output_dir=str(tmp_path / "trl"), **{**TRL_ARGS, **overrides})
    return RewardTrainer(model=rm.model, args=args, train_dataset=data, processing_class=rm.tokenizer)


@pytest.mark.slow
def test_trl_reward_trainer_computes_the_same_loss_on_the_same_batch(tmp_path):
    rm = R.RewardModel.from_zoo("stories", seed=0)
    prefs = [P("Once upon a time, ", "Sam was very happy. The end.", "Sam was sad."),
             P("One day, ", "Mia smiled.", "Mia felt angry and cried all day long."),
             P("One day, ", "Leo ran to the park and played.", "Leo sat.")]
    trainer = _trl_trainer(rm, prefs, tmp_path)
    examples = [trainer.train_dataset[i] for i in range(len(prefs))]
    batch = trainer.data_collator(examples)
    chosen, rejected = R.preference_texts(prefs)
    ours = R.encode_texts(rm.tokenizer, chosen + rejected)
    assert torch.equal(batch["input_ids"], ours["input_ids"]), "TRL tokenizes prompt + answer + EOS as we do"
    rm.model.eval()
    with torch.no_grad():
        theirs = trainer.compute_loss(rm.model, dict(batch))
        r = rm.rewards(chosen + rejected)
        mine = R.bradley_terry_loss(r[:3], r[3:])
    assert abs(float(theirs) - float(mine)) <= 1e-5


@pytest.mark.slow
def test_trl_and_our_training_reach_accuracies_within_seed_noise(tmp_path):
    from rl2llm import corpora, preferences, zoo

    zm = zoo.load("stories", progress=False)
    train = preferences.preference_pairs(zm, corpora.stories(96, 1011), seed=11)
    test = preferences.preference_pairs(zm, zoo.eval_items("stories", 96), seed=12)
    ours, theirs = [], []
    for seed in (0, 1, 2):
        rm, _ = R.train_reward_model(train, seed=seed, steps=40, batch_size=8, lr=5e-4)
        ours.append(R.pairwise_accuracy(rm, test))
        rm = R.RewardModel.from_zoo("stories", seed=seed)
        trainer = _trl_trainer(rm, train, tmp_path, per_device_train_batch_size=8, max_steps=40, seed=seed)
        trainer.train()
        rm.model.eval()
        theirs.append(R.pairwise_accuracy(rm, test))
    spread = max(np.ptp(ours), np.ptp(theirs), 0.05)
    assert abs(np.mean(ours) - np.mean(theirs)) <= 2 * spread, (ours, theirs)
    assert min(ours + theirs) > 0.6, (ours, theirs)


# --------------------------------------------------------------------------- the exercise checker


def _pl_solution(scores, ranking):
    ordered = scores.gather(1, ranking)
    rest = torch.logcumsumexp(ordered.flip(1), dim=1).flip(1)
    return -(ordered - rest)[:, :-1].sum(1).mean()


def test_plackett_luce_checker_passes_the_reference_and_a_solution():
    from rl2llm.exercises import check_plackett_luce

    assert check_plackett_luce(R.plackett_luce_loss).passed
    assert check_plackett_luce(_pl_solution).passed
    assert check_plackett_luce(lambda s, r: float(_pl_solution(s, r))).passed


@pytest.mark.parametrize("wrong, fragment", [
    (lambda s, r: _pl_solution(s, r.flip(1)), "worst to best"),
    (lambda s, r: _pl_solution(s, torch.arange(s.shape[1]).expand_as(r).contiguous()), "given order"),
    (lambda s, r: -(s.gather(1, r) - torch.logsumexp(s, 1, keepdim=True))[:, :-1].sum(1).mean(),
     "still in play"),
    (lambda s, r: -(s.gather(1, r[:, :1]).squeeze(1) - torch.logsumexp(s, 1)).mean(), "only the first choice"),
    (lambda s, r: _pl_solution(s, r) * s.shape[0], "summed over the rows"),
    (lambda s, r: -_pl_solution(s, r), "log-likelihood"),
])
def test_plackett_luce_classic_mistakes_get_their_hint(wrong, fragment):
    from rl2llm.exercises import check_plackett_luce

    result = check_plackett_luce(wrong)
    assert not result.passed
    assert any(fragment in f.hint for f in result.failures), result.report()


def test_plackett_luce_checker_reports_overflow_none_shapes_and_exceptions():
    from rl2llm.exercises import check_plackett_luce

    def naive(s, r):
        ordered = s.gather(1, r)
        e = torch.exp(ordered)
        rest = e.flip(1).cumsum(1).flip(1)
        return -torch.log(e / rest)[:, :-1].sum(1).mean()

    report = check_plackett_luce(naive)
    assert not report.passed and "logsumexp" in report.report()
    assert "return statement" in check_plackett_luce(lambda s, r: None).report()
    assert "one loss per row" in check_plackett_luce(
        lambda s, r: -(s.gather(1, r) - torch.logcumsumexp(s.gather(1, r).flip(1), 1).flip(1))[:, :-1].sum(1)
    ).report()
    assert "raised ZeroDivisionError" in check_plackett_luce(lambda s, r: 1 / 0).report()
    with pytest.raises(TypeError, match="fn must take 2 arguments"):
        check_plackett_luce(lambda s: s)
    with pytest.raises(TypeError, match="fn must be your function"):
        check_plackett_luce(3)
