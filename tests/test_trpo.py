"""Tests of rl2llm.trpo (Lecture 5): conjugate gradient, the Fisher-vector product, the KL bound, TRPO."""

import math

import numpy as np
import pytest
import torch

from rl2llm.mdp import gridworld
from rl2llm.policies import CategoricalMLP, softmax
from rl2llm.policy_gradient import exact_policy_gradient, softmax_policy_value
from rl2llm.dp import evaluate_policy_exact
from rl2llm.trpo import (
    LineSearch, TRPOConfig, categorical_kl, conjugate_gradient, fisher_operator, fisher_vector_product,
    flat_grad, flat_params, line_search, natural_policy_gradient, set_flat_params, surrogate_and_kl,
    tabular_fisher, train_trpo, trpo_step, evaluate_policy,
)


def spd_matrix(n, condition=100.0, seed=0):
    """A random symmetric positive-definite n x n matrix with the given condition number."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return Q @ np.diag(np.geomspace(1.0, condition, n)) @ Q.T


# --------------------------------------------------------------------------- conjugate gradient


def test_conjugate_gradient_solves_a_known_spd_system():
    A = spd_matrix(20, condition=100.0)
    b = np.random.default_rng(1).normal(size=20)
    x = conjugate_gradient(lambda v: A @ v, b, iters=60, tol=1e-20)
    assert np.allclose(x, np.linalg.solve(A, b), atol=1e-8)
    assert np.linalg.norm(A @ x - b) < 1e-8


def test_conjugate_gradient_is_exact_after_n_steps_and_uses_one_product_per_step():
    A = spd_matrix(6, condition=10.0, seed=3)
    b = np.arange(1.0, 7.0)
    calls = []
    x = conjugate_gradient(lambda v: calls.append(1) or A @ v, b, iters=6, tol=0.0)
    assert np.allclose(x, np.linalg.solve(A, b), atol=1e-9)
    assert len(calls) == 6


def test_conjugate_gradient_on_torch_tensors_and_early_stop():
    A = torch.tensor(spd_matrix(5, seed=4))
    b = torch.ones(5, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=50, tol=1e-24)
    assert isinstance(x, torch.Tensor)
    assert torch.allclose(A @ x, b, atol=1e-10)
    calls = []
    conjugate_gradient(lambda v: calls.append(1) or 2 * v, np.ones(4), iters=10)   # A = 2 I: one step
    assert len(calls) == 1


def test_conjugate_gradient_of_zero_is_zero():
    assert np.array_equal(conjugate_gradient(lambda v: v, np.zeros(3)), np.zeros(3))


def test_conjugate_gradient_bad_inputs():
    with pytest.raises(TypeError, match="Avp"):
        conjugate_gradient(np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="b must be a 1-D"):
        conjugate_gradient(lambda v: v, np.ones((3, 1)))
    with pytest.raises(ValueError, match="b must be finite"):
        conjugate_gradient(lambda v: v, np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="iters"):
        conjugate_gradient(lambda v: v, np.ones(3), iters=0)
    with pytest.raises(ValueError, match="tol"):
        conjugate_gradient(lambda v: v, np.ones(3), tol=-1.0)


# --------------------------------------------------------------------------- KL and the Fisher matrix


def test_categorical_kl():
    p = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    q = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    kl = categorical_kl(p, q)
    pp = torch.softmax(p[1], 0)
    assert kl[0] == 0.0
    assert torch.isclose(kl[1], (pp * (pp.log() - math.log(0.5))).sum())
    assert torch.allclose(categorical_kl(p + 3.0, p), torch.zeros(2), atol=1e-6)   # shifts change nothing
    with pytest.raises(ValueError, match="same shape"):
        categorical_kl(p, q[:1])
    with pytest.raises(TypeError, match="p_logits"):
        categorical_kl(np.zeros((2, 2)), q)
    with pytest.raises(ValueError, match="q_logits must be finite"):
        categorical_kl(p, torch.tensor([[0.0, float("inf")], [0.0, 0.0]]))


def small_policy(seed=0):
    torch.manual_seed(seed)
    policy = CategoricalMLP(obs_dim=3, n_actions=3, hidden=(4,))
    with torch.no_grad():   # move away from the near-uniform start, so the Fisher matrix is not trivial
        for p in policy.parameters():
            p.add_(torch.randn_like(p))
    obs = torch.randn(7, 3)
    return policy, obs


def explicit_fisher_from_scores(policy, obs):
    """E_s sum_a pi(a|s) g_a g_a^T, with g_a = grad log pi(a|s), built one score at a time."""
    n = len(flat_params(policy))
    F = torch.zeros(n, n)
    for s in range(len(obs)):
        log_pi = torch.log_softmax(policy(obs[s:s + 1]), dim=-1)[0]
        for a in range(policy.n_actions):
            g = flat_grad(log_pi[a], policy, retain_graph=True)
            F += log_pi[a].exp().detach() * torch.outer(g, g)
    return F / len(obs)


def explicit_fisher_from_hessian(policy, obs):
    """The Hessian of the mean KL(pi_old || pi_theta) at theta_old, by torch.autograd.functional.hessian."""
    names = [name for name, _ in policy.named_parameters()]
    shapes = [p.shape for p in policy.parameters()]
    theta0 = flat_params(policy)
    with torch.no_grad():
        old_logits = policy(obs)

    def mean_kl(theta):
        chunks, i = {}, 0
        for name, shape in zip(names, shapes):
            size = int(np.prod(shape))
            chunks[name] = theta[i:i + size].view(shape)
            i += size
        logits = torch.func.functional_call(policy, chunks, (obs,))
        return categorical_kl(old_logits, logits).mean()

    return torch.autograd.functional.hessian(mean_kl, theta0)


def test_fisher_vector_product_equals_the_explicit_fisher_times_the_vector():
    policy, obs = small_policy()
    v = torch.randn(len(flat_params(policy)))
    fvp = fisher_vector_product(policy, obs, v)
    F_scores = explicit_fisher_from_scores(policy, obs)
    F_hessian = explicit_fisher_from_hessian(policy, obs)
    assert torch.allclose(F_scores, F_hessian, atol=1e-5), "the KL Hessian is the Fisher matrix"
    assert torch.allclose(fvp, F_scores @ v, atol=1e-5)
    assert torch.allclose(fvp, F_hessian @ v, atol=1e-5)


def test_fisher_operator_damping_and_reuse():
    policy, obs = small_policy(1)
    F = explicit_fisher_from_scores(policy, obs)
    product = fisher_operator(policy, obs, damping=0.3)
    for seed in range(3):   # the same operator, applied several times (as conjugate gradient does)
        v = torch.randn(F.shape[0], generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(product(v), F @ v + 0.3 * v, atol=1e-5)


def test_conjugate_gradient_with_the_fisher_operator_solves_the_damped_system():
    policy, obs = small_policy(2)
    F = explicit_fisher_from_scores(policy, obs).double()
    g = torch.randn(F.shape[0])
    x = conjugate_gradient(fisher_operator(policy, obs, damping=0.1), g, iters=200, tol=1e-12)
    expected = torch.linalg.solve(F + 0.1 * torch.eye(F.shape[0], dtype=torch.float64), g.double())
    assert torch.allclose(x.double(), expected, atol=1e-3, rtol=1e-3)


def test_fisher_bad_inputs():
    policy, obs = small_policy()
    with pytest.raises(ValueError, match="vector must be a tensor of shape"):
        fisher_vector_product(policy, obs, torch.ones(3))
    with pytest.raises(ValueError, match="damping"):
        fisher_operator(policy, obs, damping=-1.0)
    with pytest.raises(TypeError, match="policy"):
        fisher_operator("policy", obs)
    with pytest.raises(ValueError, match="observations"):
        fisher_operator(policy, np.ones(3))


def test_flat_params_round_trip():
    policy, _ = small_policy()
    theta = flat_params(policy)
    set_flat_params(policy, theta + 1.0)
    assert torch.allclose(flat_params(policy), theta + 1.0)
    with pytest.raises(ValueError, match="flat must be a tensor of shape"):
        set_flat_params(policy, theta[:-1])
    with pytest.raises(TypeError, match="output must be a scalar"):
        flat_grad(policy(torch.ones(2, 3)), policy)


# --------------------------------------------------------------------------- the line search


def quadratic_world(kl_of_full_step, slope=1.0):
    """A surrogate `slope * sum(theta)` and a KL `c |theta|^2` scaled so the full step has the given KL."""
    old = torch.zeros(4)
    full_step = torch.ones(4)
    c = kl_of_full_step / float(full_step @ full_step)

    def evaluate(theta):
        return slope * float(theta.sum()), c * float(theta @ theta)

    return evaluate, old, full_step


def test_line_search_rejects_a_step_that_violates_the_bound():
    evaluate, old, step = quadratic_world(kl_of_full_step=0.03)
    result = line_search(evaluate, old, step, max_kl=0.01)
    assert [t.reason for t in result.trials] == ["KL over the bound", "accepted"]
    assert result.accepted and result.backtracks == 1
    assert result.trials[0].kl > 0.01 >= result.kl
    assert torch.allclose(result.params, 0.5 * step)


def test_line_search_accepts_the_full_step_within_the_bound():
    evaluate, old, step = quadratic_world(kl_of_full_step=0.005)
    result = line_search(evaluate, old, step, max_kl=0.01, expected_improvement=4.0)
    assert result.accepted and result.backtracks == 0 and len(result.trials) == 1
    assert result.trials[0].expected == 4.0 and result.improvement == 4.0


def test_line_search_keeps_the_old_parameters_when_nothing_improves():
    evaluate, old, step = quadratic_world(kl_of_full_step=0.005, slope=-1.0)
    result = line_search(evaluate, old, step, max_kl=0.01, max_backtracks=3)
    assert not result.accepted and len(result.trials) == 4
    assert all(t.reason == "no improvement" for t in result.trials)
    assert torch.equal(result.params, old) and result.kl == 0.0 and result.backtracks == 4


def test_line_search_bad_inputs():
    evaluate, old, step = quadratic_world(0.01)
    with pytest.raises(ValueError, match="max_kl"):
        line_search(evaluate, old, step, max_kl=0.0)
    with pytest.raises(ValueError, match="shrink"):
        line_search(evaluate, old, step, 0.01, shrink=1.0)
    with pytest.raises(ValueError, match="full_step must have the shape"):
        line_search(evaluate, old, step[:2], 0.01)
    with pytest.raises(TypeError, match="evaluate"):
        line_search(None, old, step, 0.01)
    with pytest.raises(ValueError, match="max_backtracks"):
        line_search(evaluate, old, step, 0.01, max_backtracks=-1)


# --------------------------------------------------------------------------- one TRPO step and training


def cartpole_batch(seed=0, n=600):
    rng = np.random.default_rng(seed)
    obs = rng.normal(scale=0.5, size=(n, 4))
    actions = rng.integers(0, 2, size=n)
    advantages = np.where(actions == (obs[:, 2] > 0), 1.0, -1.0) + rng.normal(scale=0.1, size=n)
    return obs, actions, advantages


def test_trpo_step_respects_the_kl_bound_and_improves_the_surrogate():
    torch.manual_seed(0)
    policy = CategoricalMLP(4, 2, (16,))
    obs, actions, advantages = cartpole_batch()
    old = flat_params(policy)
    with torch.no_grad():
        old_logits = policy(torch.as_tensor(obs, dtype=torch.float32))
    step = trpo_step(policy, obs, actions, advantages, max_kl=0.01)
    assert step.search.accepted
    with torch.no_grad():
        measured = categorical_kl(old_logits, policy(torch.as_tensor(obs, dtype=torch.float32))).mean()
    assert float(measured) <= 0.01 and np.isclose(float(measured), step.search.kl, rtol=1e-4)
    assert step.search.improvement > 0
    # the quadratic model's KL of the full step: at most the bound (damping shrinks the step), and accurate
    assert step.predicted_kl <= 0.01 and np.isclose(step.search.trials[0].kl, step.predicted_kl, rtol=0.1)
    undamped = trpo_step(CategoricalMLP(4, 2, (16,)), obs, actions, advantages, max_kl=0.01, damping=0.0)
    assert np.isclose(undamped.predicted_kl, 0.01)
    assert not torch.equal(flat_params(policy), old)


def test_trpo_step_without_search_takes_the_full_step():
    torch.manual_seed(0)
    policy = CategoricalMLP(4, 2, (16,))
    obs, actions, advantages = cartpole_batch()
    step = trpo_step(policy, obs, actions, advantages, max_kl=2.0, search=False)
    assert step.search.accepted and step.search.trials[0].fraction == 1.0 and len(step.search.trials) == 1


def test_trpo_step_bad_inputs():
    policy = CategoricalMLP(4, 2, (8,))
    obs, actions, advantages = cartpole_batch(n=10)
    with pytest.raises(ValueError, match="advantages must have shape"):
        trpo_step(policy, obs, actions, advantages[:5])
    with pytest.raises(ValueError, match="actions"):
        trpo_step(policy, obs, actions + 2, advantages)
    with pytest.raises(TypeError, match="policy"):
        trpo_step(torch.nn.Linear(4, 2), obs, actions, advantages)
    with pytest.raises(ValueError, match="max_kl"):
        trpo_step(policy, obs, actions, advantages, max_kl=-0.1)


def test_every_accepted_update_satisfies_the_kl_bound():
    config = TRPOConfig(n_updates=4, episodes_per_update=8, n_envs=8, max_kl=0.01)
    result = train_trpo("CartPole-v1", config, seed=0, eval_every=2, eval_episodes=5)
    assert len(result.kls) == 4 and len(result.searches) == 4
    assert np.all(result.kls[result.accepted] <= config.max_kl)
    assert np.all(result.kls[result.accepted] > 0) and np.all(result.improvements[result.accepted] > 0)
    assert list(result.eval_updates) == [2, 4] and result.eval_returns.shape == (2, 5)
    again = train_trpo("CartPole-v1", config, seed=0)
    assert np.array_equal(again.mean_returns, result.mean_returns), "the same seed gives the same run"


def test_train_trpo_bad_inputs():
    with pytest.raises(ValueError, match="max_kl"):
        TRPOConfig(max_kl=0.0)
    with pytest.raises(ValueError, match="shrink"):
        TRPOConfig(shrink=1.5)
    with pytest.raises(TypeError, match="hidden"):
        TRPOConfig(hidden=32)
    with pytest.raises(TypeError, match="line_search"):
        TRPOConfig(line_search=1)
    with pytest.raises(ValueError, match="n_updates"):
        TRPOConfig(n_updates=0)
    with pytest.raises(TypeError, match="config"):
        train_trpo("CartPole-v1", {"max_kl": 0.01})
    with pytest.raises(ValueError, match="env_id"):
        train_trpo("Pendulum-v1")
    with pytest.raises(TypeError, match="env_id"):
        train_trpo(3)
    with pytest.raises(ValueError, match="seed"):
        train_trpo("CartPole-v1", seed=-1)
    with pytest.raises(ValueError, match="policy takes"):
        evaluate_policy(CategoricalMLP(3, 2), "CartPole-v1")


@pytest.mark.slow
def test_trpo_learns_cartpole():
    """The chapter's default setting: every one of three seeds averages >= 475 over 100 evaluation episodes."""
    for seed in range(3):
        result = train_trpo("CartPole-v1", TRPOConfig(), seed=seed)
        returns = evaluate_policy(result.policy, "CartPole-v1", 100, seed=1_000 + seed)
        assert returns.mean() >= 475, f"seed {seed}: {returns.mean():.1f}"
        assert np.all(result.kls[result.accepted] <= TRPOConfig().max_kl)


# --------------------------------------------------------------------------- the exact natural gradient


@pytest.fixture
def grid():
    return gridworld(["....G", ".#..X", "S#...", "....."], slip=0.1, gamma=0.9, step_reward=-0.02)


def test_tabular_fisher_is_symmetric_psd_and_ignores_shifts(grid):
    theta = np.random.default_rng(0).normal(size=(grid.n_states, grid.n_actions))
    F = tabular_fisher(grid, theta)
    assert np.allclose(F, F.T)
    assert np.linalg.eigvalsh(F).min() > -1e-12
    shift = np.zeros((grid.n_states, grid.n_actions))
    shift[3] = 1.0   # the same constant added to every score of one state: the policy does not change
    assert np.allclose(F @ shift.ravel(), 0.0)


def test_tabular_fisher_is_the_hessian_of_the_weighted_kl(grid):
    """For a small step, sum_s d(s) KL(pi_s || pi'_s) ~ step.F step / 2."""
    from rl2llm.policy_gradient import discounted_visits
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(grid.n_states, grid.n_actions))
    step = 1e-3 * rng.normal(size=theta.shape)
    p, q = softmax(theta, axis=1), softmax(theta + step, axis=1)
    d = discounted_visits(grid, p)
    kl = float(d @ (p * (np.log(p) - np.log(q))).sum(axis=1))
    quadratic = 0.5 * step.ravel() @ tabular_fisher(grid, theta) @ step.ravel()
    assert np.isclose(kl, quadratic, rtol=1e-2)


def test_natural_gradient_of_the_tabular_softmax_is_the_advantage(grid):
    theta = np.random.default_rng(2).normal(size=(grid.n_states, grid.n_actions))
    natural = natural_policy_gradient(grid, theta)
    probs = softmax(theta, axis=1)
    V = evaluate_policy_exact(grid, probs)
    Q = grid.R + grid.gamma * grid.expected_next(V)
    advantage = Q - V[:, None]
    live = ~grid.terminal
    centred = advantage - advantage.mean(axis=1, keepdims=True)
    assert np.allclose(natural[live], centred[live], atol=1e-6)
    assert np.allclose(natural[grid.terminal], 0.0)
    # and it is an ascent direction: a small natural step raises J
    J0 = softmax_policy_value(grid, theta)
    assert softmax_policy_value(grid, theta + 1e-2 * natural) > J0
    assert np.sum(natural * exact_policy_gradient(grid, theta)) > 0


def test_tabular_bad_inputs(grid):
    with pytest.raises(ValueError, match="theta must have shape"):
        tabular_fisher(grid, np.zeros((3, 4)))
    with pytest.raises(TypeError, match="mdp"):
        natural_policy_gradient("grid", np.zeros((3, 4)))


# --------------------------------------------------------------------------- the self-checking exercise


def reader_cg(Avp, b, iters, conjugate=True, stop=True, recompute=False, sign=1.0, residual_sign=-1.0,
              fewer=0, build=False):
    if build:   # the whole matrix, one product per column
        A = np.stack([Avp(e) for e in np.eye(len(b))], axis=1)
        return np.linalg.solve(A, b)
    x = np.zeros_like(b)
    r = b.copy()
    p, rr = r.copy(), r @ r
    for _ in range(iters - fewer):
        if stop and rr < 1e-20:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + sign * alpha * p
        r = b - Avp(x) if recompute else r + residual_sign * alpha * Ap
        new = r @ r
        p = r + new / rr * p if conjugate else r.copy()
        rr = new
    return x


def test_check_conjugate_gradient_passes_the_reference_and_the_package():
    from rl2llm.exercises import check_conjugate_gradient
    assert check_conjugate_gradient(reader_cg).passed
    assert check_conjugate_gradient(lambda Avp, b, iters: conjugate_gradient(Avp, b, iters)).passed


@pytest.mark.parametrize("options, expected", [
    (dict(conjugate=False), "what steepest descent reaches"),
    (dict(sign=-1.0), "wrong sign"),
    (dict(recompute=True), "one product A p per iteration"),
    (dict(residual_sign=1.0), "residual updated as r + alpha A p"),
    (dict(fewer=1), "one iteration fewer than allowed"),
    (dict(build=True), "you built the matrix"),
])
def test_check_conjugate_gradient_recognises_typical_mistakes(options, expected):
    from rl2llm.exercises import check_conjugate_gradient
    result = check_conjugate_gradient(lambda Avp, b, iters: reader_cg(Avp, b, iters, **options))
    assert not result.passed and expected in " ".join(result.report().split())


def test_check_conjugate_gradient_reports_nan_none_matrices_and_bad_arguments():
    from rl2llm.exercises import check_conjugate_gradient
    with np.errstate(all="ignore"):
        report = check_conjugate_gradient(lambda Avp, b, iters: reader_cg(Avp, b, iters, stop=False)).report()
    assert "5 of 6 cases pass" in report and "0 / 0" in report
    assert "forget the return" in check_conjugate_gradient(lambda Avp, b, iters: None).report()
    assert "not the matrix" in check_conjugate_gradient(lambda Avp, b, iters: np.linalg.solve(Avp, b)).report()
    assert "returned b unchanged" in check_conjugate_gradient(lambda Avp, b, iters: b).report()
    with pytest.raises(TypeError, match="fn must take 3 arguments"):
        check_conjugate_gradient(lambda Avp, b: b)
    with pytest.raises(TypeError, match="fn must be your function"):
        check_conjugate_gradient("cg")
