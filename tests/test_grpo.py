"""rl2llm.grpo: group advantages equal TRL's, the loss's aggregations, a short training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rl2llm import grpo
from rl2llm.ppo import clipped_surrogate


def _trl_grpo_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group"):
    """The steps of TRL 1.16 GRPOTrainer._generate_and_score_completions (sum_then_normalize, one reward
    function of weight 1), with TRL's own nanstd."""
    from trl.trainer.utils import nanstd

    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
    std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def _trl_rloo_advantages(rewards: torch.Tensor, num_generations: int):
    """TRL 1.16 RLOOTrainer's leave-one-out baseline (every completion scorable, no normalisation)."""
    grouped = rewards.view(-1, num_generations)
    baselines = (grouped.sum(dim=1, keepdim=True) - grouped) / (num_generations - 1)
    return rewards - baselines.view(-1)


@pytest.mark.parametrize("G", [2, 4, 8])
def test_grpo_advantages_equal_trl(G):
    rng = np.random.default_rng(G)
    for rewards in (rng.random(3 * G), rng.integers(0, 2, 3 * G).astype(float), np.ones(3 * G)):
        r = torch.tensor(rewards, dtype=torch.float32)
        assert torch.allclose(grpo.group_advantages(r, G, "grpo"), _trl_grpo_advantages(r, G), atol=1e-6)
        assert torch.allclose(grpo.group_advantages(r, G, "dr_grpo"), _trl_grpo_advantages(r, G, "none"), atol=1e-6)
        assert torch.allclose(grpo.group_advantages(r, G, "rloo"), _trl_rloo_advantages(r, G), atol=1e-6)


def test_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    std = math.sqrt(((0.75) ** 2 + 3 * 0.25 ** 2) / 3)
    assert torch.allclose(grpo.group_advantages(r, 4), torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std + 1e-4))
    assert torch.allclose(grpo.group_advantages(r, 4, "dr_grpo"), torch.tensor([0.75, -0.25, -0.25, -0.25]))
    assert torch.allclose(grpo.group_advantages(r, 4, "rloo"), torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    # a group that is all right or all wrong teaches nothing
    assert torch.equal(grpo.group_advantages(torch.ones(4), 4), torch.zeros(4))


def test_rloo_baseline_is_unbiased_and_scaled_dr_grpo():
    r = torch.tensor([0.3, 0.9, 0.1, 0.5, 2.0, 1.0])
    assert torch.allclose(grpo.group_advantages(r, 3, "rloo"), 3 / 2 * grpo.group_advantages(r, 3, "dr_grpo"))
    # the baseline of answer i does not depend on r_i: d(advantage_i)/d(r_i) = 1
    r.requires_grad_(True)
    adv = grpo.group_advantages(r, 3, "rloo")
    (g,) = torch.autograd.grad(adv[0], r)
    assert g[0] == 1 and torch.allclose(g[1:3], torch.tensor([-0.5, -0.5])) and g[3:].abs().sum() == 0


def _batch(seed=0, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([2, 7, 3, 5, 1, 4])[:B]
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    logp = -torch.rand(B, T, generator=g) * 2
    old = (logp + 0.3 * torch.randn(B, T, generator=g)).clamp(max=0)
    ref = (logp + 0.5 * torch.randn(B, T, generator=g)).clamp(max=0)
    adv = torch.randn(B, generator=g)
    return logp * mask, old * mask, ref * mask, adv, mask


def _trl_loss(per_token_logps, old, ref, advantages, mask, loss_type, beta, eps, max_completion_length):
    """TRL 1.16 GRPOTrainer._compute_loss's steps (token-level importance sampling)."""
    advantages = advantages.unsqueeze(1)
    coef_1 = torch.exp(per_token_logps - old)
    per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
    coef_2 = torch.clamp(coef_1, 1 - eps, 1 + eps)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)


@pytest.mark.parametrize("aggregation,trl_type", [("sequence", "grpo"), ("token", "bnpo"), ("constant", "dr_grpo")])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_equals_trl(aggregation, trl_type, beta):
    logp, old, ref, adv, mask = _batch()
    ours, _ = grpo.grpo_loss(logp, old, adv, mask, ref_log_probs=ref, beta=beta, aggregation=aggregation,
                             max_length=10)
    theirs = _trl_loss(logp, old, ref, adv, mask, trl_type, beta, 0.2, 10)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_token_aggregation_is_ppo_clipped_surrogate_on_real_tokens():
    logp, old, _, adv, mask = _batch(1)
    ours, _ = grpo.grpo_loss(logp, old, adv, mask, aggregation="token")
    real = mask.bool()
    surrogate = clipped_surrogate(logp[real], old[real], adv[:, None].expand_as(logp)[real], 0.2)
    assert torch.allclose(ours, -surrogate, atol=1e-6)


def test_length_bias_of_sequence_mean():
    """With the same advantage, each token of a short answer gets more push under the per-answer mean:
    the gradient per token is A / |o|; token-level and constant aggregations weigh tokens alike."""
    B, T = 2, 10
    mask = torch.zeros(B, T)
    mask[0, :2], mask[1, :10] = 1, 1
    adv = torch.tensor([-1.0, -1.0])
    grads = {}
    for how in grpo.AGGREGATIONS:
        logp = torch.full((B, T), -1.0, requires_grad=True)
        loss, _ = grpo.grpo_loss(logp, logp.detach(), adv, mask, aggregation=how)
        (g,) = torch.autograd.grad(loss, logp)
        grads[how] = g[0, 0] / g[1, 0]
    assert torch.isclose(grads["sequence"], torch.tensor(5.0))
    assert torch.isclose(grads["token"], torch.tensor(1.0)) and torch.isclose(grads["constant"], torch.tensor(1.0))


def test_k3_is_nonnegative_and_zero_at_reference():
    p = torch.log(torch.tensor([0.2, 0.5, 0.9]))
    assert torch.equal(grpo.k3_kl(p, p), torch.zeros(3))
    assert (grpo.k3_kl(p, p + torch.tensor([0.3, -0.7, 0.1])) > 0).all()


def test_k3_unbiased_for_kl():
    rng = np.random.default_rng(0)
    pi, ref = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    x = rng.choice(3, size=200_000, p=pi)
    est = grpo.k3_kl(torch.log(torch.tensor(pi[x])), torch.log(torch.tensor(ref[x]))).mean().item()
    assert abs(est - float(np.sum(pi * np.log(pi / ref)))) < 5e-3


def test_stats_and_clipping():
    logp, old, ref, adv, mask = _batch()
    _, stats = grpo.grpo_loss(logp, old, adv, mask, ref_log_probs=ref, clip=0.1)
    assert 0 < stats["clipped"] < 1 and stats["kl"] > 0


def test_bad_inputs_are_named():
    logp, old, ref, adv, mask = _batch()
    with pytest.raises(ValueError, match="rewards must hold whole groups"):
        grpo.group_advantages(torch.ones(5), 2)
    with pytest.raises(ValueError, match="group_size"):
        grpo.group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="method"):
        grpo.group_advantages(torch.ones(4), 2, "ppo")
    with pytest.raises(ValueError, match="rewards"):
        grpo.group_advantages([1.0, float("nan")], 2)
    with pytest.raises(ValueError, match="aggregation"):
        grpo.grpo_loss(logp, old, adv, mask, aggregation="mean")
    with pytest.raises(ValueError, match="ref_log_probs must be given"):
        grpo.grpo_loss(logp, old, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="advantages"):
        grpo.grpo_loss(logp, old, adv[:3], mask)
    with pytest.raises(ValueError, match="mask"):
        grpo.grpo_loss(logp, old, adv, mask * 2)
    with pytest.raises(ValueError, match="clip"):
        grpo.grpo_loss(logp, old, adv, mask, clip=1.5)
    with pytest.raises(ValueError, match="lr"):
        grpo.GRPOConfig(lr=0)
    with pytest.raises(ValueError, match="advantage"):
        grpo.GRPOConfig(advantage="mean")
    with pytest.raises(ValueError, match="group_size"):
        grpo.GRPOConfig(group_size=1)
    with pytest.raises(TypeError, match="zoo_model"):
        grpo.train_grpo("model", lambda i, c: 0.0, [], grpo.GRPOConfig())


@pytest.fixture(scope="module")
def arithmetic():
    from rl2llm import zoo
    return zoo.load("arithmetic", "half-trained", progress=False)


def test_train_grpo_runs_is_reproducible_and_leaves_the_zoo_model_alone(arithmetic):
    from rl2llm import corpora
    items = corpora.arithmetic_problems(64, 5, **arithmetic.spec.options)
    before = [p.detach().clone() for p in arithmetic.model.parameters()]
    config = grpo.GRPOConfig(steps=3, group_size=4, prompts_per_step=4, lr=1e-4, eval_every=2)
    reward = lambda it, c: float(it.check(c))
    evals = lambda model, tok: 0.5
    a = grpo.train_grpo(arithmetic, reward, items, config, seed=3, eval_fn=evals)
    b = grpo.train_grpo(arithmetic, reward, items, config, seed=3, eval_fn=evals)
    assert a.reward == b.reward and len(a.reward) == 3 and a.eval_steps == [0, 2, 3]
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(before, arithmetic.model.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(before, a.model.parameters()))
    with pytest.raises(TypeError, match="reward_fn"):
        grpo.train_grpo(arithmetic, None, items, config)
    with pytest.raises(ValueError, match="items"):
        grpo.train_grpo(arithmetic, reward, [], config)


def test_experiment_runners_check_their_arguments():
    with pytest.raises(ValueError, match="method"):
        grpo.arithmetic_run("sft")
    with pytest.raises(ValueError, match="scale"):
        grpo.arithmetic_run("grpo", scale="huge")
    with pytest.raises(ValueError, match="scale"):
        grpo.code_run(0, scale="huge")
    with pytest.raises(ValueError, match="jobs"):
        grpo.run_jobs([{"kind": "chess"}])
    with pytest.raises(ValueError, match="workers"):
        grpo.run_jobs([], workers=0)


def test_arithmetic_run_offline_method_gives_the_table_row():
    row = grpo.run_jobs([{"kind": "arithmetic", "method": "orpo", "seed": 0}], workers=1, cache=False)[0]
    assert row["method"] == "orpo" and row["samples"] == 640 and row["pairs"] > 0
    assert 0 <= row["em_before"] <= 1 and 0 <= row["em_after"] <= 1 and np.isfinite(row["kl"])


def test_group_advantages_checker():
    from rl2llm.exercises import check_group_advantages

    assert check_group_advantages(lambda r, G, m: grpo.group_advantages(r, G, m)).passed

    def population(r, G, m):
        g = r.view(-1, G)
        mu = g.mean(1, keepdim=True)
        return ((g - mu) / (g.std(1, unbiased=False, keepdim=True) + 1e-4) if m == "grpo" else g - mu).reshape(-1)

    report = check_group_advantages(population)
    assert not report.passed and "population standard deviation" in report.report()
    assert "includes the answer itself" in report.report()

    def no_eps(r, G, m):
        g = r.view(-1, G)
        return ((g - g.mean(1, keepdim=True)) / g.std(1, keepdim=True)).reshape(-1)

    assert "1e-4" in check_group_advantages(no_eps).report()
    assert "whole batch" in check_group_advantages(lambda r, G, m: (r - r.mean()) / (r.std() + 1e-4)).report()
    assert "return statement" in check_group_advantages(lambda r, G, m: None).report()
    assert "raised" in check_group_advantages(lambda r, G, m: r.view(G, -1, 7)).report()
    with pytest.raises(TypeError, match="fn"):
        check_group_advantages(lambda r: r)


def _bench_results(quick: bool = True, ratio: float = 2.0) -> dict:
    side = lambda sps, em: {"steps_per_second": sps, "cpu_steps_per_second": sps * 1.5, "em_after_mean": em,
                            "em_after": [em, em], "reward_last5_mean": 0.4}
    return {"benchmark": "GRPO", "schema": 1, "date": "2026-11-22 03:00 UTC",
            "machine": {"cpu": "a CPU", "cores": 2, "os": "Linux"},
            "versions": {"python": "3.11", "torch": "2", "transformers": "5", "trl": "1.16"},
            "rl2llm_commit": "abc", "load_average": {"before": [0.5], "after": [0.7]},
            "settings": {"quick": quick, "threads": 2, "rounds": 2, "steps": 4, "group_size": 8,
                         "prompts_per_step": 4, "lr": 3e-5, "beta": 0.0, "max_new_tokens": 4, "temperature": 1.0,
                         "clip": 0.2, "grad_clip": 1.0, "loss": "per-answer mean", "advantage": "group",
                         "optimizer": "Adam", "model": "arithmetic", "parameters": 444960, "n_prompts": 400,
                         "n_eval": 200},
            "rows": [{"round": r, "library": lib, "steps_per_second": sps, "reward": [0.2, 0.3, 0.3, 0.4]}
                     for r in (0, 1) for lib, sps in (("rl2llm", ratio), ("trl", 1.0))],
            "summary": {"rl2llm": side(ratio, 0.55), "trl": side(1.0, 0.54), "em_before": 0.455,
                        "speed_ratio": ratio, "speed_ratios": [ratio, ratio], "cpu_speed_ratio": ratio,
                        "speed_goal_met": ratio >= 1.5, "quality_gap": 0.01, "quality_goal_met": True,
                        "trl_import_seconds": 9.0},
            "goals": {"speed_ratio": 1.5, "quality_margin": 0.05}}


def _render_bench(tmp_path, edition: str, data: dict | None) -> str:
    from conftest import render_benchmark_page

    return render_benchmark_page(tmp_path, edition, "grpo-benchmark", "grpo_vs_trl.json", data)


def test_the_benchmark_page_shows_the_grpo_verdict_in_both_editions(tmp_path):
    from bs4 import BeautifulSoup

    scientist = _render_bench(tmp_path, "scientist", _bench_results())
    assert "Verdict" in scientist and "quick run" in scientist and "meets both goals" in scientist
    assert "TRL GRPOTrainer" in scientist and "reward, TRL (mean of rounds)" in scientist
    manager = BeautifulSoup(_render_bench(tmp_path, "manager", _bench_results(quick=False, ratio=1.2)),
                            "html.parser")
    body = manager.select_one('[role="main"]').get_text()
    assert "A goal is missed" in body and "1.2 times as fast as TRL" in body
    assert not manager.select_one('[role="main"]').select("code, pre"), "the manager edition shows code"


def test_the_grpo_benchmark_page_without_results_says_how_to_produce_them(tmp_path):
    assert "grpo_vs_trl.py" in _render_bench(tmp_path, "scientist", None)
    assert "Not measured yet" in _render_bench(tmp_path, "manager", None)


@pytest.mark.slow  # imports TRL and trains both sides for a few steps (a minute or two)
def test_the_grpo_benchmark_quick_run_trains_both_sides(tmp_path):
    import importlib.util
    from pathlib import Path

    pytest.importorskip("trl")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "grpo_vs_trl.py"
    spec = importlib.util.spec_from_file_location("grpo_vs_trl", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "grpo.json"
    result = bench.main(["--quick", "--out", str(out)])
    assert {r["library"] for r in result["rows"]} == {"rl2llm", "trl"}
    assert all(len(r["reward"]) == 4 for r in result["rows"])
    assert out.exists() and result["summary"]["speed_ratio"] > 0
