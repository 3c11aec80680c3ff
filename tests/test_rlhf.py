"""Tests of rl2llm.rlhf (Lecture 14): KL estimators against the exact KL, shaped rewards, token GAE,
the adaptive KL controller, and a small PPO run on the arithmetic zoo model."""

import numpy as np
import pytest
import torch

from rl2llm import rlhf
from rl2llm.advantages import gae


def _two_distributions(seed=0, vocab=7, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(vocab, generator=g, dtype=torch.float64) * scale, \
        torch.randn(vocab, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k1_and_k3_are_unbiased_k2_is_not(seed):
    """E_p[k1] = E_p[k3] = KL(p || q) exactly (expectation over the whole vocabulary), E_p[k2] != KL."""
    a, b = _two_distributions(seed, scale=1.5)
    log_p, log_q = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    exact = float(rlhf.exact_kl(a, b))
    est = rlhf.kl_estimators(log_p, log_q)          # one entry per token of the vocabulary
    p = log_p.exp()
    assert float((p * est.k1).sum()) == pytest.approx(exact, rel=1e-10)
    assert float((p * est.k3).sum()) == pytest.approx(exact, rel=1e-10)
    assert abs(float((p * est.k2).sum()) - exact) > 1e-4       # biased when p and q are far apart
    assert (est.k3 >= 0).all() and (est.k2 >= 0).all()
    assert (est.k1 < 0).any()                                  # single k1 samples can be negative


def test_k2_is_second_order_close_when_distributions_are_close():
    a, _ = _two_distributions(3)
    b = a + 0.01 * torch.randn(a.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    log_p, log_q = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    exact = float(rlhf.exact_kl(a, b))
    p = log_p.exp()
    assert float((p * rlhf.kl_estimators(log_p, log_q).k2).sum()) == pytest.approx(exact, rel=0.05)


def test_monte_carlo_estimates_agree_and_k3_has_lower_variance_when_close():
    a, _ = _two_distributions(5, vocab=11)
    b = a + 0.2 * torch.randn(a.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    log_p, log_q = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    x = torch.multinomial(log_p.exp(), 200_000, replacement=True, generator=torch.Generator().manual_seed(7))
    est = rlhf.kl_estimators(log_p[x], log_q[x])
    exact = float(rlhf.exact_kl(a, b))
    assert float(est.k1.mean()) == pytest.approx(exact, rel=0.05)
    assert float(est.k3.mean()) == pytest.approx(exact, rel=0.05)
    assert float(est.k3.std()) < float(est.k1.std())


def test_exact_kl_is_zero_for_equal_logits_and_batches():
    logits = torch.randn(3, 4, 9, dtype=torch.float64)
    assert torch.allclose(rlhf.exact_kl(logits, logits + 2.0), torch.zeros(3, 4, dtype=torch.float64))
    assert rlhf.exact_kl(logits, torch.randn(3, 4, 9, dtype=torch.float64)).shape == (3, 4)


def _batch(seed=0, B=4, T=9):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, (start, length) in enumerate([(2, 4), (3, 6), (1, 1), (4, 3)][:B]):
        mask[i, start:start + length] = 1
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3 * mask
    ref = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3 * mask
    return logp, ref, mask


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("beta", [0.0, 0.1, 2.0])
def test_shaped_rewards_sum_to_sequence_reward_minus_beta_kl(estimator, beta):
    logp, ref, mask = _batch()
    reward = torch.tensor([1.0, -0.5, 2.0, 0.0], dtype=torch.float64)
    shaped = rlhf.shaped_rewards(reward, logp, ref, mask, beta, estimator)
    kl = (getattr(rlhf.kl_estimators(logp, ref), estimator) * mask).sum(-1)
    assert torch.allclose(shaped.sum(-1), reward - beta * kl)
    assert (shaped[mask == 0] == 0).all()
    # the sequence reward sits on the last completion token
    last = torch.tensor([5, 8, 1, 6])
    rest = shaped.clone()
    rest[torch.arange(4), last] -= reward
    per_token = -beta * getattr(rlhf.kl_estimators(logp, ref), estimator) * mask
    assert torch.allclose(rest, per_token)


def test_token_advantages_match_gae_per_row_and_stop_at_the_end():
    logp, ref, mask = _batch(1)
    rewards = rlhf.shaped_rewards(torch.tensor([1.0, 0.0, -1.0, 0.5]), logp, ref, mask, 0.1)
    values = torch.randn(rewards.shape, generator=torch.Generator().manual_seed(2)) * mask
    adv, ret = rlhf.token_advantages(rewards, values, mask, gamma=1.0, lam=0.9)
    for i in range(4):
        cols = mask[i].bool().numpy()
        r, v = rewards[i].numpy()[cols], values[i].numpy()[cols]
        nxt = np.append(v[1:], 0.0)
        term = np.zeros(len(r), bool)
        term[-1] = True
        expected = gae(r, v, nxt, term, np.zeros(len(r), bool), 1.0, 0.9)
        assert np.allclose(adv[i].numpy()[cols], expected, atol=1e-6)
    assert (adv[mask == 0] == 0).all() and torch.allclose(ret, (adv + values) * mask, atol=1e-6)
    # lam = gamma = 1: every token's advantage is the rest of the row's reward minus its value
    adv1, _ = rlhf.token_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    to_go = torch.flip(torch.cumsum(torch.flip(rewards.double(), [1]), 1), [1])
    assert torch.allclose(adv1.double(), (to_go - values) * mask, atol=1e-5)


def test_adaptive_controller_moves_beta_toward_the_target():
    c = rlhf.AdaptiveKLController(0.1, target=2.0, horizon=100)
    assert c.update(4.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))        # error clipped at +0.2
    beta = c.beta
    assert c.update(1.8, 10) == pytest.approx(beta * (1 - 0.1 * 0.1))        # KL 10 % below the target
    beta = c.beta
    assert c.update(2.0, 10) == pytest.approx(beta)                          # on target: unchanged
    for _ in range(200):
        c.update(0.0, 10)
    assert c.beta == pytest.approx(beta * 0.98 ** 200)                       # no KL: shrinks 2 % a step


def test_value_head_starts_at_zero():
    head = rlhf.ValueHead(8)
    assert (head(torch.randn(2, 3, 8)) == 0).all()


def test_bad_inputs_name_the_argument():
    logp, ref, mask = _batch()
    with pytest.raises(ValueError, match="logp_policy"):
        rlhf.kl_estimators(torch.ones(3), torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        rlhf.kl_estimators(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="logits_policy"):
        rlhf.exact_kl(torch.tensor([float("nan"), 0.0]), torch.zeros(2))
    with pytest.raises(ValueError, match="beta"):
        rlhf.shaped_rewards(torch.zeros(4), logp, ref, mask, -1.0)
    with pytest.raises(ValueError, match="estimator"):
        rlhf.shaped_rewards(torch.zeros(4), logp, ref, mask, 0.1, "k4")
    with pytest.raises(ValueError, match="sequence_reward"):
        rlhf.shaped_rewards(torch.zeros(3), logp, ref, mask, 0.1)
    with pytest.raises(ValueError, match="mask"):
        rlhf.shaped_rewards(torch.zeros(4), logp, ref, mask * 2, 0.1)
    empty = mask.clone()
    empty[2] = 0
    with pytest.raises(ValueError, match="row 2"):
        rlhf.shaped_rewards(torch.zeros(4), logp, ref, empty, 0.1)
    with pytest.raises(ValueError, match="lam"):
        rlhf.token_advantages(torch.zeros(4, 9), torch.zeros(4, 9), mask, lam=1.5)
    with pytest.raises(ValueError, match="init_beta"):
        rlhf.AdaptiveKLController(0.0, 1.0)
    with pytest.raises(ValueError, match="target"):
        rlhf.AdaptiveKLController(0.1, -1.0)
    with pytest.raises(ValueError, match="n_steps"):
        rlhf.AdaptiveKLController(0.1, 1.0).update(1.0, 0)
    with pytest.raises(ValueError, match="kl_estimator"):
        rlhf.RLHFConfig(kl_estimator="k9")
    with pytest.raises(ValueError, match="minibatches"):
        rlhf.RLHFConfig(batch_size=4, minibatches=8)
    with pytest.raises(ValueError, match="beta"):
        rlhf.RLHFConfig(beta=0.0, kl_target=1.0)
    with pytest.raises(TypeError, match="steps"):
        rlhf.RLHFConfig(steps=2.5)
    with pytest.raises(TypeError, match="zoo_model"):
        rlhf.train_rlhf(object(), rlhf.gold_rewards, [])
    with pytest.raises(ValueError, match="items and completions"):
        rlhf.gold_rewards([], ["a"])


@pytest.fixture(scope="module")
def arithmetic():
    from rl2llm import zoo
    return zoo.load("arithmetic", "half-trained", progress=False), zoo.eval_items("arithmetic", 120)


def test_train_rlhf_is_deterministic_and_logs_everything(arithmetic):
    model, items = arithmetic
    config = rlhf.RLHFConfig(steps=3, batch_size=8, eval_every=2, n_samples=2)
    runs = [rlhf.train_rlhf(model, rlhf.gold_rewards, items[:40], config, seed=3, eval_items=items[100:])
            for _ in range(2)]
    a, b = runs
    assert a.proxy == b.proxy and a.kl == b.kl and a.eval_proxy == b.eval_proxy
    assert len(a.proxy) == len(a.gold) == len(a.kl) == len(a.beta) == 3
    assert a.eval_steps == [0, 2, 3]
    assert a.kl[0] == pytest.approx(0.0, abs=1e-6)          # the first batch comes from the reference itself
    assert a.proxy == a.gold                                # no gold_fn: the gold is the reward
    assert len(a.samples) == 4 and a.policy_state is not None
    # the reference model is not modified
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    rlhf.train_rlhf(model, rlhf.gold_rewards, items[:40], config, seed=4)
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())


def test_adaptive_beta_is_logged(arithmetic):
    model, items = arithmetic
    config = rlhf.RLHFConfig(steps=3, batch_size=8, beta=0.1, kl_target=1e-3, kl_horizon=10)
    h = rlhf.train_rlhf(model, rlhf.gold_rewards, items[:40], config, seed=0)
    assert h.beta[0] == pytest.approx(0.1)
    assert h.beta[1] == pytest.approx(0.1 * (1 - 0.2 * 8 / 10))            # first KL is 0: beta shrinks


@pytest.mark.slow
def test_ppo_raises_exact_match_on_arithmetic(arithmetic):
    from rl2llm import zoo
    model, _ = arithmetic
    items = zoo.eval_items("arithmetic", 500)
    config = rlhf.RLHFConfig(steps=30, batch_size=64, lr=3e-5, eval_every=30)
    h = rlhf.train_rlhf(model, rlhf.gold_rewards, items[:300], config, seed=0, eval_items=items[300:])
    assert h.eval_proxy[-1] > h.eval_proxy[0] + 0.1, h.eval_proxy


# --------------------------------------------------------------------------- the exercise's checker


def _solution(sequence_reward, logp_policy, logp_ref, mask, beta):
    rewards = -beta * (logp_policy - logp_ref) * mask
    columns = torch.arange(mask.shape[1]).expand_as(mask)
    last = torch.where(mask.bool(), columns, -1).max(dim=1).values
    rewards[torch.arange(len(last)), last] += sequence_reward
    return rewards


def test_checker_passes_the_solution_and_agrees_with_the_package():
    from rl2llm.exercises import _shaped_cases, _shaped_reference, check_shaped_rewards
    assert check_shaped_rewards(_solution).passed
    for case in _shaped_cases():
        t = lambda a: torch.tensor(a, dtype=torch.float64)
        assert np.allclose(rlhf.shaped_rewards(t(case.reward), t(case.logp), t(case.ref), t(case.mask),
                                               case.beta).numpy(), _shaped_reference(case))


@pytest.mark.parametrize("mistake, hint", [
    (lambda R, p, q, m, b: _solution(R, p, q, m, b) - _solution(R, p, q, m, 0.0)
     + torch.where(m.bool() & (torch.arange(m.shape[1]) == m.argmax(1, keepdim=True)), R[:, None], 0.0),
     "first completion token"),
    (lambda R, p, q, m, b: -b * (p - q) * m + torch.nn.functional.pad(R[:, None], (m.shape[1] - 1, 0)),
     "last column"),
    (lambda R, p, q, m, b: -b * (p - q) * m + R[:, None] * m, "every token"),
    (lambda R, p, q, m, b: _solution(R, q, p, m, b), "sign is flipped"),
    (lambda R, p, q, m, b: _solution(R, p, q, m, 1.0), "beta is missing"),
    (lambda R, p, q, m, b: _solution(R, p, q, m, b) - _solution(R, p, q, m, 0.0), "reward is missing"),
])
def test_checker_recognises_the_classic_mistakes(mistake, hint):
    from rl2llm.exercises import check_shaped_rewards
    result = check_shaped_rewards(mistake)
    assert not result.passed
    assert any(hint in f.hint for f in result.failures), result.report()


def test_checker_reports_wrong_shapes_none_and_errors():
    from rl2llm.exercises import check_shaped_rewards
    assert "shape" in check_shaped_rewards(lambda R, p, q, m, b: R).failures[0].message
    assert "None" in check_shaped_rewards(lambda R, p, q, m, b: None).failures[0].message
    assert "ZeroDivisionError" in check_shaped_rewards(lambda R, p, q, m, b: 1 / 0).failures[0].message
    with pytest.raises(TypeError, match="5 arguments"):
        check_shaped_rewards(lambda R, p: R)
    with pytest.raises(TypeError, match="fn must be"):
        check_shaped_rewards(3)
