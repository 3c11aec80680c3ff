"""Tests for rl2llm.dpo: direct preference optimisation (Lecture 15).

The claims, each with a test that would fail if it were wrong: the closed form
``pi_ref * exp(r / beta) / Z`` maximises the KL-regularised objective, and the
minimiser of the population DPO loss over a table of policies (K answers per
prompt, pairs labelled by Bradley–Terry) is that closed form, to 1e-3; the
loss has its textbook values at the reference (log 2, 1, 1/(4 beta^2)) and its
gradient raises the chosen answer and lowers the rejected one; our loss equals
TRL ``DPOTrainer``'s on the same batch, model and reference, for the sigmoid,
IPO and hinge losses (to 1e-5); training leaves the zoo model untouched,
raises the implicit-reward accuracy on its data, and a LoRA adapter trains a
small fraction of the weights with the adapter-off model as its reference;
bad input is refused with the argument's name.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rl2llm import corpora, dpo, zoo  # noqa: E402
from rl2llm.preferences import Preference  # noqa: E402


# --------------------------------------------------------------------------- the closed form


def _problem(seed, n=3, K=5):
    rng = np.random.default_rng(seed)
    pi_ref = rng.dirichlet(np.ones(K), size=n)
    r = rng.normal(size=(n, K))
    return pi_ref, r


@pytest.mark.parametrize("beta", [0.3, 1.0, 3.0])
def test_the_population_dpo_minimiser_is_the_closed_form(beta):
    pi_ref, r = _problem(0)
    fitted = dpo.fit_tabular_dpo(pi_ref, r, beta)
    closed = dpo.optimal_policy(pi_ref, r, beta)
    assert np.abs(fitted - closed).max() <= 1e-3


def test_the_minimiser_does_not_depend_on_which_pairs_are_compared():
    pi_ref, r = _problem(1, n=2, K=4)
    weights = np.random.default_rng(2).random((2, 4, 4)) + 0.05   # any pairs, as long as every pair occurs
    fitted = dpo.fit_tabular_dpo(pi_ref, r, 0.5, pair_weights=weights)
    assert np.abs(fitted - dpo.optimal_policy(pi_ref, r, 0.5)).max() <= 1e-3


def test_the_closed_form_maximises_the_kl_regularised_objective():
    pi_ref, r = _problem(3, n=1, K=6)
    beta = 0.7

    def objective(pi):
        return float((pi * r).sum() - beta * (pi * np.log(pi / pi_ref)).sum())

    best = dpo.optimal_policy(pi_ref, r, beta)
    rng = np.random.default_rng(4)
    for _ in range(200):
        other = rng.dirichlet(np.ones(6))[None]
        assert objective(other) <= objective(best) + 1e-12
    # and its value is beta * log Z
    assert np.isclose(objective(best), beta * np.log((pi_ref * np.exp(r / beta)).sum()))


def test_the_closed_form_tends_to_the_best_answer_and_to_the_reference():
    pi_ref, r = _problem(5, n=1, K=4)
    assert np.allclose(dpo.optimal_policy(pi_ref, r, 1e-4)[0], np.eye(4)[np.argmax(r[0])])
    assert np.allclose(dpo.optimal_policy(pi_ref, r, 1e4), pi_ref, atol=1e-3)
    assert np.all(np.isfinite(dpo.optimal_policy(pi_ref, 1e3 * r, 1e-3)))   # no overflow


# --------------------------------------------------------------------------- the loss


def _logps(seed, n=6):
    g = torch.Generator().manual_seed(seed)
    return [-(10 + 30 * torch.rand(n, generator=g, dtype=torch.float64)) for _ in range(4)]


def test_the_losses_at_the_reference():
    pc, pr, _, _ = _logps(0)
    beta = 0.2
    assert np.isclose(float(dpo.dpo_loss(pc, pr, pc, pr, beta).loss), np.log(2))
    assert np.isclose(float(dpo.dpo_loss(pc, pr, pc, pr, beta, "hinge").loss), 1.0)
    assert np.isclose(float(dpo.dpo_loss(pc, pr, pc, pr, beta, "ipo").loss), 1 / (4 * beta ** 2))


def test_the_gradient_raises_the_chosen_and_lowers_the_rejected():
    _, _, rc, rr = _logps(1)
    pc, pr = rc.clone().requires_grad_(), rr.clone().requires_grad_()   # starting at the reference
    for loss_type in dpo.LOSS_TYPES:
        pc.grad = pr.grad = None
        dpo.dpo_loss(pc, pr, rc, rr, 0.1, loss_type).loss.backward()
        assert (pc.grad < 0).all() and (pr.grad > 0).all(), loss_type


def test_ipo_pulls_back_a_margin_beyond_its_target_and_dpo_never_does():
    _, _, rc, rr = _logps(2)
    beta = 0.5   # IPO's target log-ratio margin is 1 / (2 beta) = 1
    pc, pr = (rc + 3.0).requires_grad_(), rr.clone().requires_grad_()   # a margin of 3, beyond the target
    dpo.dpo_loss(pc, pr, rc, rr, beta, "ipo").loss.backward()
    assert (pc.grad > 0).all(), "IPO lowers the chosen answer again"
    pc.grad = None
    dpo.dpo_loss(pc, pr, rc, rr, beta).loss.backward()
    assert (pc.grad < 0).all(), "DPO keeps pushing"


def test_implicit_rewards_and_their_accuracy():
    pc, pr, rc, rr = _logps(2)
    out = dpo.dpo_loss(pc, pr, rc, rr, 0.5)
    assert torch.allclose(out.chosen_rewards, dpo.implicit_reward(pc, rc, 0.5))
    assert out.accuracy == float(((pc - rc) > (pr - rr)).double().mean())
    assert np.isclose(out.margin, float(0.5 * ((pc - rc) - (pr - rr)).mean()))


def test_label_smoothing_is_the_loss_of_flipped_labels():
    pc, pr, rc, rr = _logps(3)
    eps = 0.2
    mixed = dpo.dpo_loss(pc, pr, rc, rr, 0.3, label_smoothing=eps).loss
    right = dpo.dpo_loss(pc, pr, rc, rr, 0.3).loss
    flipped = dpo.dpo_loss(pr, pc, rr, rc, 0.3).loss
    assert torch.isclose(mixed, (1 - eps) * right + eps * flipped)


def test_ipo_with_lengths_averages_the_log_ratios_per_token():
    pc, pr, rc, rr = _logps(4)
    lc, lr = torch.full((6,), 4.0, dtype=torch.float64), torch.full((6,), 2.0, dtype=torch.float64)
    out = dpo.dpo_loss(pc, pr, rc, rr, 0.5, "ipo", chosen_lengths=lc, rejected_lengths=lr).loss
    expected = (((pc - rc) / 4 - (pr - rr) / 2 - 1.0) ** 2).mean()
    assert torch.isclose(out, expected)


# --------------------------------------------------------------------------- against TRL


def _prefs(n=6):
    out = []
    for story in corpora.stories(n, 11):
        name = story.characters[0]
        out.append(Preference(story.prompt, f" {name} was very happy. The moral of the story is to share.",
                              f" {name} was sad.", 1.5, -1.0))
    return out


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_our_loss_equals_trls_dpo_trainer(loss_type, tmp_path, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    zm = zoo.load("stories", progress=False)
    reference = zm.model
    policy = __import__("copy").deepcopy(reference)
    with torch.no_grad():   # a policy that differs from its reference
        g = torch.Generator().manual_seed(0)
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    prefs = _prefs()
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in prefs]
    args = DPOConfig(output_dir=str(tmp_path), beta=0.3, loss_type=[loss_type], bf16=False, fp16=False,
                     use_cpu=True, report_to=[], per_device_train_batch_size=len(rows), save_strategy="no",
                     activation_checkpointing=False)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=zm.tokenizer)
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, trl_batch))

    ours = dpo.preference_batch(zm.tokenizer, prefs)
    n = trl_batch["input_ids"].shape[1]
    assert torch.equal(ours.input_ids[:, :n], trl_batch["input_ids"]), "the same tokens in the same layout"
    with torch.no_grad():
        pol, ref = dpo.pair_log_probs(policy, ours), dpo.pair_log_probs(reference, ours)
    lengths = dict(chosen_lengths=pol.chosen_lengths, rejected_lengths=pol.rejected_lengths) \
        if loss_type == "ipo" else {}
    our_loss = float(dpo.dpo_loss(pol.chosen, pol.rejected, ref.chosen, ref.rejected, 0.3, loss_type,
                                  **lengths).loss)
    assert abs(our_loss - trl_loss) <= 1e-5 * max(1.0, abs(trl_loss)), (our_loss, trl_loss)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def stories():
    return zoo.load("stories", progress=False)


def test_training_leaves_the_zoo_model_alone_and_learns_its_pairs(stories):
    before = {k: v.clone() for k, v in stories.model.state_dict().items()}
    prefs = _prefs(8)
    policy, history = dpo.train_dpo(stories, prefs, beta=0.1, steps=8, lr=1e-3, batch_size=4, seed=0)
    after = stories.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the zoo model is untouched"
    assert len(history.loss) == len(history.accuracy) == 8
    assert history.trainable == sum(p.numel() for p in stories.model.parameters())
    batch = dpo.preference_batch(stories.tokenizer, prefs)
    with torch.no_grad():
        pol, ref = dpo.pair_log_probs(policy, batch), dpo.pair_log_probs(stories.model, batch)
    assert dpo.dpo_loss(pol.chosen, pol.rejected, ref.chosen, ref.rejected, 0.1).accuracy == 1.0


def test_training_is_seeded(stories):
    prefs = _prefs(8)
    a = dpo.train_dpo(stories, prefs, beta=0.1, steps=3, lr=1e-3, batch_size=4, seed=1)[1].loss
    b = dpo.train_dpo(stories, prefs, beta=0.1, steps=3, lr=1e-3, batch_size=4, seed=1)[1].loss
    assert a == b


def test_lora_trains_few_weights_and_its_reference_is_the_adapter_off(stories):
    prefs = _prefs(6)
    seen = []

    def callback(step, policy):
        seen.append(step)
        return step
    policy, history = dpo.train_dpo(stories, prefs, beta=0.1, steps=4, lr=1e-3, batch_size=3, lora_rank=2,
                                    callback=callback, eval_every=2)
    assert seen == [0, 2, 4] and [s for s, _ in history.evals] == seen
    full = sum(p.numel() for p in stories.model.parameters())
    assert 0 < history.trainable < 0.1 * full
    assert history.accuracy[0] == pytest.approx(0.5) or 0.0 <= history.accuracy[0] <= 1.0
    batch = dpo.preference_batch(stories.tokenizer, prefs)
    with torch.no_grad(), policy.disable_adapter():
        off = dpo.pair_log_probs(policy, batch)
    with torch.no_grad():
        base = dpo.pair_log_probs(stories.model, batch)
    assert torch.allclose(off.chosen, base.chosen, atol=1e-5)
    memory_lora = dpo.training_memory(policy, reference_copy=False)
    memory_full = dpo.training_memory(stories.model, reference_copy=True)
    assert memory_lora["total"] < 0.6 * memory_full["total"] and memory_lora["reference"] == 0


def test_a_custom_loss_plugs_into_the_loop(stories):
    calls = []

    def simpo_like(policy, reference):
        calls.append(reference)
        return -torch.nn.functional.logsigmoid(policy.chosen / policy.chosen_lengths
                                               - policy.rejected / policy.rejected_lengths).mean()
    _, history = dpo.train_preferences(stories, _prefs(4), simpo_like, steps=2, lr=1e-3, batch_size=2,
                                       needs_reference=False)
    assert calls == [None, None] and len(history.loss) == 2 and history.accuracy == []


def test_win_rate_and_kl_of_the_reference_against_itself(stories):
    items = zoo.eval_items("stories", 6)
    verdict = dpo.win_rate(stories.model, stories.model, stories.tokenizer, items, max_new_tokens=20)
    assert verdict.kl == 0.0
    assert verdict.win_rate == 0.5 and np.array_equal(verdict.gold_policy, verdict.gold_reference)
    again = dpo.win_rate(stories.model, stories.model, stories.tokenizer, items, max_new_tokens=20,
                         reference_texts=verdict.reference_texts)
    assert again.win_rate == 0.5
    assert dpo.sampled_kl(stories.model, stories.model, stories.tokenizer, [s.prompt for s in items],
                          max_new_tokens=20) == 0.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, error, name", [
    (lambda a: dpo.dpo_loss(a, a, a, a, 0.0), ValueError, "beta"),
    (lambda a: dpo.dpo_loss(a, a, a, a, 0.1, "kto"), ValueError, "loss_type"),
    (lambda a: dpo.dpo_loss(a, a[:2], a, a, 0.1), ValueError, "policy_rejected_logps"),
    (lambda a: dpo.dpo_loss("x", a, a, a, 0.1), TypeError, "policy_chosen_logps"),
    (lambda a: dpo.dpo_loss(a, a, a * np.nan, a, 0.1), ValueError, "ref_chosen_logps"),
    (lambda a: dpo.dpo_loss(a, a, a, a, 0.1, label_smoothing=0.5), ValueError, "label_smoothing"),
    (lambda a: dpo.dpo_loss(a, a, a, a, 0.1, "hinge", label_smoothing=0.1), ValueError, "label_smoothing"),
    (lambda a: dpo.dpo_loss(a, a, a, a, 0.1, "ipo", chosen_lengths=a), ValueError, "rejected_lengths"),
    (lambda a: dpo.dpo_loss(a, a, a, a, 0.1, "ipo", chosen_lengths=a * 0, rejected_lengths=a), ValueError,
     "chosen_lengths"),
    (lambda a: dpo.implicit_reward(a, a[:1], 0.1), ValueError, "ref_logps"),
    (lambda a: dpo.optimal_policy([0.5, 0.6], [0.0, 1.0], 1.0), ValueError, "pi_ref"),
    (lambda a: dpo.optimal_policy([0.5, 0.5], [0.0, 1.0, 2.0], 1.0), ValueError, "r"),
    (lambda a: dpo.optimal_policy([0.5, 0.5], [0.0, 1.0], -1.0), ValueError, "beta"),
    (lambda a: dpo.preference_batch(None, []), ValueError, "prefs"),
    (lambda a: dpo.preference_batch(None, ["x"]), TypeError, "prefs[0]"),
    (lambda a: dpo.training_memory("model", reference_copy=True), TypeError, "policy"),
])
def test_bad_arguments_are_refused(call, error, name):
    a = -torch.arange(1.0, 5.0, dtype=torch.float64)
    with pytest.raises(error, match=name.replace("[", r"\[").replace("]", r"\]")):
        call(a)


def test_bad_training_arguments_are_refused(stories):
    prefs = _prefs(2)
    with pytest.raises(TypeError, match="zoo_model"):
        dpo.train_dpo(stories.model, prefs, beta=0.1, steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="steps"):
        dpo.train_dpo(stories, prefs, beta=0.1, steps=0, lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        dpo.train_dpo(stories, prefs, beta=0.1, steps=1, lr=0.0)
    with pytest.raises(TypeError, match="loss_fn"):
        dpo.train_preferences(stories, prefs, "dpo", steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="lora_rank"):
        dpo.train_dpo(stories, prefs, beta=0.1, steps=1, lr=1e-3, lora_rank=0)
    with pytest.raises(TypeError, match="items"):
        dpo.win_rate(stories.model, stories.model, stories.tokenizer, "a story")
    with pytest.raises(TypeError, match="policy"):
        dpo.sampled_kl("policy", stories.model, stories.tokenizer, ["Once"])


# --------------------------------------------------------------------------- the exercise's checker


def _right(pc, pr, rc, rr, beta):
    return np.logaddexp(0.0, -beta * ((pc - rc) - (pr - rr)))


@pytest.mark.parametrize("wrong, hint", [
    (lambda pc, pr, rc, rr, b: np.logaddexp(0.0, -b * (pc - pr)), "reference"),
    (lambda pc, pr, rc, rr, b: np.logaddexp(0.0, b * ((pc - rc) - (pr - rr))), "swapped"),
    (lambda pc, pr, rc, rr, b: b * np.logaddexp(0.0, -((pc - rc) - (pr - rr))), "inside the sigmoid"),
    (lambda pc, pr, rc, rr, b: np.logaddexp(0.0, -b * ((rc - pc) - (rr - pr))), "wrong way round"),
    (lambda pc, pr, rc, rr, b: _right(pc, pr, rc, rr, b).mean(), "one loss per pair"),
    (lambda pc, pr, rc, rr, b: -np.log(1 / (1 + np.exp(-b * ((pc - rc) - (pr - rr))))), "stably"),
    (lambda pc, pr, rc, rr, b: 1 / (1 + np.exp(np.clip(b * ((pc - rc) - (pr - rr)), -50, 50))) * 0 - 1, ""),
])
def test_the_dpo_checker_recognises_the_classic_mistakes(wrong, hint):
    from rl2llm.exercises import check_dpo_losses

    with np.errstate(all="ignore"):
        result = check_dpo_losses(wrong)
    assert not result.passed
    if hint:
        assert any(hint in case.hint for case in result.failures), result.report()


def test_the_dpo_checker_passes_the_solution_and_reports_bugs():
    from rl2llm.exercises import check_dpo_losses

    assert check_dpo_losses(_right).passed
    assert "forget the return" in check_dpo_losses(lambda *a: None).failures[0].message
    assert "raised ZeroDivisionError" in check_dpo_losses(lambda *a: 1 / 0).failures[0].message
    with pytest.raises(TypeError, match="5 arguments"):
        check_dpo_losses(lambda a, b: a)
    with pytest.raises(TypeError, match="fn"):
        check_dpo_losses("dpo")


# --------------------------------------------------------------------------- the benchmark and its page


def _results(quick: bool = True, ratio: float = 2.0) -> dict:
    side = lambda sps, win: {"steps_per_second": sps, "cpu_steps_per_second": sps * 1.5, "win_rate": win,
                             "kl": 1.0, "train_loss": 0.5, "final_logged_loss": 0.4}
    return {"benchmark": "DPO", "schema": 1, "date": "2026-11-22 03:00 UTC",
            "machine": {"cpu": "a CPU", "cores": 2, "os": "Linux"},
            "versions": {"python": "3.11", "torch": "2", "transformers": "5", "trl": "1.16", "peft": "0.21"},
            "rl2llm_commit": "abc", "load_average": {"before": [0.5], "after": [0.7]},
            "settings": {"quick": quick, "threads": 2, "rounds": 1, "steps": 4, "batch_pairs": 8, "beta": 1.0,
                         "lr": 2e-4, "seed": 0, "pairs": 30, "prompts": 32, "test_prompts": 16,
                         "loss_type": "sigmoid", "optimizer": "AdamW", "grad_clip": 1.0, "lr_schedule": "constant",
                         "dtype": "float32", "model": "stories", "parameters": 389472,
                         "trl": {"bf16": False, "activation_checkpointing": False, "precompute_ref_log_probs": True}},
            "rows": [{"round": 1, "library": "rl2llm", "steps_per_second": ratio},
                     {"round": 1, "library": "trl", "steps_per_second": 1.0}],
            "curves": {"rl2llm": [[0.69, 0.6, 0.5, 0.4]], "trl": [[0.69, 0.62, 0.52, 0.41]]},
            "summary": {"rl2llm": side(ratio, 0.7), "trl": side(1.0, 0.68), "speed_ratio": ratio,
                        "cpu_speed_ratio": ratio, "speed_goal_met": ratio >= 1.5, "win_rate_gap": 0.02,
                        "quality_goal_met": True},
            "goals": {"speed_ratio": 1.5, "win_rate_tolerance": 0.05}}


def _render_page(tmp_path, edition: str, data: dict | None) -> str:
    from conftest import render_benchmark_page

    return render_benchmark_page(tmp_path, edition, "dpo-benchmark", "dpo_vs_trl.json", data)


def test_the_benchmark_page_shows_the_verdict_in_both_editions(tmp_path):
    from bs4 import BeautifulSoup

    scientist = _render_page(tmp_path, "scientist", _results())
    assert "Verdict" in scientist and "quick run" in scientist and "meets both goals" in scientist
    assert "TRL DPOTrainer" in scientist and "loss, TRL (mean of rounds)" in scientist
    manager = BeautifulSoup(_render_page(tmp_path, "manager", _results(quick=False, ratio=1.2)), "html.parser")
    body = manager.select_one('[role="main"]').get_text()
    assert "A goal is missed" in body and "1.2 times as fast as TRL" in body
    assert not manager.select_one('[role="main"]').select("code, pre"), "the manager edition shows code"


def test_the_benchmark_page_without_results_says_how_to_produce_them(tmp_path):
    assert "dpo_vs_trl.py" in _render_page(tmp_path, "scientist", None)
    assert "Not measured yet" in _render_page(tmp_path, "manager", None)


@pytest.mark.slow  # imports TRL and trains both sides for a few steps (a minute)
def test_the_benchmark_quick_run_trains_both_sides(tmp_path):
    import importlib.util
    from pathlib import Path

    pytest.importorskip("trl")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "dpo_vs_trl.py"
    spec = importlib.util.spec_from_file_location("dpo_vs_trl", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "dpo.json"
    result = bench.main(["--quick", "--out", str(out)])
    assert set(result["curves"]) == {"rl2llm", "trl"} and all(len(c[0]) == 4 for c in result["curves"].values())
    assert out.exists() and result["summary"]["speed_ratio"] > 0


def test_the_checkers_reference_is_dpo_loss():
    from rl2llm.exercises import _dpo_cases, _dpo_reference

    for case in _dpo_cases():
        t = [torch.tensor(a, dtype=torch.float64) for a in case.logps]
        assert np.allclose(_dpo_reference(case.logps, case.beta), dpo.dpo_loss(*t, case.beta).per_pair.numpy())
