"""Tests for rl2llm.dp: exact and iterative evaluation, value and policy iteration,
finite-horizon planning, checked against the book's claims."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import scipy.sparse as sp

from rl2llm.dp import (
    ConvergenceWarning,
    bellman_expectation_backup,
    bellman_optimality_backup,
    evaluate_finite_horizon,
    evaluate_policy_exact,
    evaluate_policy_iterative,
    finite_horizon,
    greedy_policy,
    policy_iteration,
    q_from_v,
    value_iteration,
)
from rl2llm.mdp import RIGHT, FiniteMDP, from_gymnasium, gridworld, random_mdp, simulate_policy

SLIPPERY_GRID = ["S...#...", "..#....X", ".X..#...", "....#..G"]


@functools.cache
def frozenlake(size: str) -> tuple:
    """(env, mdp) for slippery FrozenLake: '4x4' (100-step limit) or '8x8' (200-step limit)."""
    env = gym.make("FrozenLake-v1" if size == "4x4" else "FrozenLake8x8-v1", is_slippery=True)
    return env, from_gymnasium(env)


def worlds(gamma: float = 0.99):
    """Named MDPs of every kind the book uses, all with discount ``gamma``."""
    return {
        "random-dense-a": random_mdp(10, 3, gamma=gamma, seed=0),
        "random-dense-b": random_mdp(25, 5, gamma=gamma, seed=1),
        "random-sparse": random_mdp(200, 4, gamma=gamma, n_successors=3, seed=2),
        "slippery-grid": gridworld(SLIPPERY_GRID, slip=0.2, gamma=gamma, step_reward=-0.04),
        "frozenlake-4x4": frozenlake("4x4")[1].with_gamma(gamma),
        "frozenlake-8x8": frozenlake("8x8")[1].with_gamma(gamma),
    }


WORLD_NAMES = list(worlds())


@functools.cache
def optimal(name: str, gamma: float = 0.99) -> np.ndarray:
    """V* for a named world, from policy iteration (exact linear solves)."""
    return policy_iteration(worlds(gamma)[name]).V


# --------------------------------------------------------------------------- VI and PI vs the linear solve


@pytest.mark.parametrize("name", WORLD_NAMES)
def test_value_and_policy_iteration_agree_with_the_exact_solution(name):
    mdp = worlds()[name]
    vi = value_iteration(mdp, tol=1e-12)
    pi = policy_iteration(mdp)
    assert vi.iterations < 100_000 and pi.iterations < 100
    for result in (vi, pi):
        exact = evaluate_policy_exact(mdp, result.policy)
        assert np.max(np.abs(result.V - exact)) <= 1e-8
    assert np.max(np.abs(vi.V - pi.V)) <= 1e-8
    # Both policies are optimal: their exact values coincide.
    np.testing.assert_allclose(evaluate_policy_exact(mdp, vi.policy), pi.V, atol=1e-8, rtol=0)
    # V* is a fixed point of the Bellman optimality operator.
    assert np.max(np.abs(bellman_optimality_backup(mdp, pi.V) - pi.V)) <= 1e-10
    np.testing.assert_array_equal(pi.V[mdp.terminal], 0.0)


def test_optimal_values_beat_every_deterministic_policy_on_a_small_mdp():
    mdp = random_mdp(3, 2, gamma=0.9, seed=11)
    V_star = policy_iteration(mdp).V
    best = np.full(3, -np.inf)
    for code in range(2**3):
        policy = np.array([(code >> s) & 1 for s in range(3)])
        V = evaluate_policy_exact(mdp, policy)
        assert (V <= V_star + 1e-12).all()
        best = np.maximum(best, V)
    np.testing.assert_allclose(best, V_star, atol=1e-12)


def test_exact_evaluation_solves_a_hand_computed_chain():
    # Two states, one action: s0 -> s1 w.p. 1 with reward 1; s1 loops with reward 2.
    P = np.array([[[0.0, 1.0]], [[0.0, 1.0]]])
    mdp = FiniteMDP(P, np.array([[1.0], [2.0]]), gamma=0.5)
    # V1 = 2 / (1 - 0.5) = 4, V0 = 1 + 0.5 * 4 = 3
    np.testing.assert_allclose(evaluate_policy_exact(mdp, [0, 0]), [3.0, 4.0], atol=1e-14)


def test_exact_evaluation_of_a_gridworld_by_hand():
    # S . G in a line, deterministic, step cost -1, goal pays 10, gamma 1: always go right.
    mdp = gridworld(["S.G"], gamma=1.0, step_reward=-1.0, goal_reward=10.0)
    V = evaluate_policy_exact(mdp, np.full(3, RIGHT))
    np.testing.assert_allclose(V, [9.0 - 1.0, 9.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("name", ["random-dense-b", "random-sparse", "slippery-grid", "frozenlake-8x8"])
def test_iterative_evaluation_matches_exact_evaluation(name):
    mdp = worlds(0.95)[name]
    policy = np.random.default_rng(0).integers(0, mdp.n_actions, size=mdp.n_states)
    exact = evaluate_policy_exact(mdp, policy)
    result = evaluate_policy_iterative(mdp, policy, tol=1e-12)
    assert result.iterations < 100_000
    assert result.deltas[-1] < 1e-12 <= result.deltas[-2]
    np.testing.assert_allclose(result.V, exact, atol=1e-12 * 0.95 / 0.05 + 1e-12, rtol=0)
    # The exact value is the fixed point of the policy's Bellman operator.
    np.testing.assert_allclose(bellman_expectation_backup(mdp, exact, policy), exact, atol=1e-11)


def test_iterative_evaluation_of_a_stochastic_policy():
    mdp = random_mdp(12, 3, gamma=0.9, seed=4)
    policy = np.random.default_rng(1).dirichlet(np.ones(3), size=12)
    exact = evaluate_policy_exact(mdp, policy)
    np.testing.assert_allclose(evaluate_policy_iterative(mdp, policy, tol=1e-13).V, exact, atol=1e-11)
    # ... and both equal a direct solve of V = R_pi + gamma P_pi V written out by hand.
    P_pi = np.einsum("sa,sat->st", policy, mdp.P)
    R_pi = (policy * mdp.R).sum(axis=1)
    np.testing.assert_allclose(exact, np.linalg.solve(np.eye(12) - 0.9 * P_pi, R_pi), atol=1e-12)


def test_exact_evaluation_with_gamma_one_when_the_episode_always_ends():
    env, lake = frozenlake("4x4")
    policy = value_iteration(lake.with_gamma(0.999), tol=1e-12).policy
    V = evaluate_policy_exact(lake, policy)  # gamma = 1 here
    V_iter = evaluate_policy_iterative(lake, policy, tol=1e-13).V
    np.testing.assert_allclose(V, V_iter, atol=1e-9)
    assert 0.8 < V[lake.start] < 0.83  # reaching the goal eventually, without a time limit
    # Same on a sparse gridworld, which takes the sparse solver path.
    grid = gridworld(SLIPPERY_GRID, slip=0.2, gamma=1.0, step_reward=-0.04)
    policy = policy_iteration(grid.with_gamma(0.99)).policy
    np.testing.assert_allclose(evaluate_policy_exact(grid, policy),
                               evaluate_policy_iterative(grid, policy, tol=1e-13).V, atol=1e-9)


# --------------------------------------------------------------------------- q_from_v and greedy


def test_q_from_v_is_the_one_step_lookahead():
    mdp = random_mdp(6, 3, gamma=0.7, seed=9)
    V = np.random.default_rng(2).normal(size=6)
    Q = q_from_v(mdp, V)
    for s in range(6):
        for a in range(3):
            assert Q[s, a] == pytest.approx(mdp.R[s, a] + 0.7 * mdp.P[s, a] @ V, abs=1e-13)
    np.testing.assert_array_equal(bellman_optimality_backup(mdp, V), Q.max(axis=1))


def test_q_from_v_is_zero_in_terminal_states():
    mdp = gridworld(["S.G", "..X"], slip=0.1)
    Q = q_from_v(mdp, np.full(mdp.n_states, 5.0))
    np.testing.assert_array_equal(Q[mdp.terminal], 0.0)
    assert (Q[~mdp.terminal] != 0).all()


def test_greedy_policy_takes_the_best_action_and_breaks_ties_low():
    Q = np.array([[0.0, 2.0, 1.0], [3.0, 3.0, 1.0], [-1.0, -2.0, -0.5]])
    np.testing.assert_array_equal(greedy_policy(Q), [1, 0, 2])


def test_greedy_policy_on_frozenlake_avoids_the_holes():
    _, lake = frozenlake("4x4")
    policy = policy_iteration(lake.with_gamma(0.99)).policy
    # The book's well-known answer: from the start, push left (away from the hole below-right).
    assert policy[0] == 0
    # From 14 (next to the goal) the best action is the one that cannot fall in a hole.
    P = lake.P[14, policy[14]]
    assert P[lake.terminal & (np.arange(16) != 15)].sum() == 0


# --------------------------------------------------------------------------- FrozenLake within the step limit

#: Optimal probability of reaching the goal within the environment's step limit.
EXPECTED_SUCCESS = {"4x4": 0.744, "8x8": 0.913}


@pytest.mark.parametrize("size", ["4x4", "8x8"])
def test_frozenlake_success_probability_within_the_step_limit(size):
    env, lake = frozenlake(size)
    H = env.spec.max_episode_steps
    assert H == {"4x4": 100, "8x8": 200}[size]
    V, policy = finite_horizon(lake, H, gamma=1.0)
    assert V.shape == (H + 1, lake.n_states) and policy.shape == (H, lake.n_states)
    p = V[0, lake.start]
    assert p == pytest.approx(EXPECTED_SUCCESS[size], abs=5e-4)
    # Evaluating that time-dependent policy gives the same number...
    np.testing.assert_allclose(evaluate_finite_horizon(lake, policy, H, gamma=1.0), V[0], atol=1e-12)
    # ... a probability: monotone in the time left, between 0 and 1.
    assert (np.diff(V[::-1], axis=0) >= -1e-12).all()
    assert (V >= 0).all() and (V <= 1 + 1e-12).all()
    assert (V[H] == 0).all()
    # The best stationary policy (nearly undiscounted) does no better within the step limit.
    stationary = policy_iteration(lake.with_gamma(0.999)).policy
    assert evaluate_finite_horizon(lake, stationary, H)[lake.start] <= p + 1e-12

    # Simulating the policy in the real gymnasium environment agrees within sampling error.
    n = 10_000
    returns = simulate_policy(env, policy, n, seed=2024)
    assert set(np.unique(returns)) <= {0.0, 1.0}
    assert abs(returns.mean() - p) <= 4 * np.sqrt(p * (1 - p) / n)


def test_finite_horizon_with_one_step_is_the_best_immediate_reward():
    mdp = random_mdp(8, 3, gamma=0.9, seed=3)
    V, policy = finite_horizon(mdp, 1)
    np.testing.assert_array_equal(V[0], mdp.R.max(axis=1))
    np.testing.assert_array_equal(policy[0], mdp.R.argmax(axis=1))
    np.testing.assert_array_equal(V[1], 0.0)
    np.testing.assert_array_equal(evaluate_finite_horizon(mdp, policy, 1), V[0])


def test_long_discounted_horizon_approaches_the_infinite_horizon_value():
    mdp = random_mdp(8, 3, gamma=0.8, seed=3)
    V, policy = finite_horizon(mdp, 200)
    V_star = policy_iteration(mdp).V
    np.testing.assert_allclose(V[0], V_star, atol=1e-12)
    # Backward induction with k steps left is k sweeps of value iteration from 0.
    with pytest.warns(ConvergenceWarning, match="max_iter=5"):  # 5 sweeps are not enough to converge
        vi = value_iteration(mdp, max_iter=5, record=True)
    assert vi.iterations == 5 and not vi.converged
    np.testing.assert_allclose(V[200 - 5], vi.history[5], atol=1e-12)


def test_evaluate_finite_horizon_of_a_stationary_policy_by_hand():
    # One state, one action, reward 1, gamma 0.5: return over H steps is sum 0.5^t.
    mdp = FiniteMDP(np.ones((1, 1, 1)), np.ones((1, 1)), gamma=0.5)
    for H in (1, 2, 5):
        assert evaluate_finite_horizon(mdp, [0], H)[0] == pytest.approx(2 * (1 - 0.5**H))
    assert evaluate_finite_horizon(mdp, [0], 7, gamma=1.0)[0] == pytest.approx(7.0)


def test_evaluate_finite_horizon_of_a_time_dependent_policy():
    mdp = random_mdp(5, 3, gamma=0.9, seed=6)
    H = 4
    policy = np.random.default_rng(3).integers(0, 3, size=(H, 5))
    # Backward recursion written out state by state: V_t(s) = R(s, a_t) + gamma sum_s' P V_{t+1}(s').
    V = np.zeros(5)
    for t in reversed(range(H)):
        V = np.array([mdp.R[s, policy[t, s]] + 0.9 * mdp.P[s, policy[t, s]] @ V for s in range(5)])
    np.testing.assert_allclose(evaluate_finite_horizon(mdp, policy, H), V, atol=1e-13)
    # A stationary policy is the same as repeating it at every step.
    np.testing.assert_allclose(evaluate_finite_horizon(mdp, policy[0], H),
                               evaluate_finite_horizon(mdp, np.tile(policy[0], (H, 1)), H), atol=1e-14)


@pytest.mark.parametrize("H", [3, 10, 30])
def test_finite_horizon_policy_is_time_dependent_and_achieves_its_value(H):
    _, lake = frozenlake("4x4")
    V, policy = finite_horizon(lake, H, gamma=1.0)
    np.testing.assert_allclose(evaluate_finite_horizon(lake, policy, H, gamma=1.0), V[0], atol=1e-13)
    # Later steps are the same problem with fewer steps left.
    V_short, policy_short = finite_horizon(lake, H - 1, gamma=1.0)
    np.testing.assert_allclose(V[1:], V_short, atol=1e-15)
    np.testing.assert_array_equal(policy[1:], policy_short)
    assert (V[0] >= V_short[0] - 1e-15).all()  # one more step never hurts ...
    assert (V[0, lake.start] > V_short[0, lake.start]) == (H > 6)  # ... and helps once the goal is in reach
    if H == 10:  # with few steps left, the best action really does change over time
        assert (policy != policy[0]).any()


def test_iterative_evaluation_keeps_terminal_states_at_zero():
    mdp = gridworld(["S.G", "..X"], slip=0.1, gamma=0.9)
    policy = np.full(mdp.n_states, RIGHT)
    V0 = np.full(mdp.n_states, 3.0)  # a bad guess, nonzero at the goal and the pit too
    result = evaluate_policy_iterative(mdp, policy, V0=V0, record=True)
    np.testing.assert_array_equal(V0, 3.0)  # the caller's array is not modified
    for V in result.history:
        np.testing.assert_array_equal(V[mdp.terminal], 0.0)
    np.testing.assert_allclose(result.V, evaluate_policy_exact(mdp, policy), atol=1e-9)
    vi = value_iteration(mdp, V0=V0, record=True)
    np.testing.assert_array_equal(vi.history[1][mdp.terminal], 0.0)


# --------------------------------------------------------------------------- convergence theory


@pytest.mark.parametrize("name", ["random-dense-a", "random-sparse", "slippery-grid", "frozenlake-4x4"])
@pytest.mark.parametrize("start", ["zeros", "random"])
def test_value_iteration_respects_the_contraction_bound(name, start):
    mdp = worlds(0.9)[name]
    V_star = optimal(name, 0.9)
    V0 = None if start == "zeros" else np.random.default_rng(5).normal(scale=10, size=mdp.n_states)
    result = value_iteration(mdp, tol=1e-11, V0=V0, record=True)
    history = np.array(result.history)
    assert len(history) == result.iterations + 1
    np.testing.assert_array_equal(history[0], np.zeros(mdp.n_states) if V0 is None else V0)
    errors = np.max(np.abs(history - V_star), axis=1)
    k = np.arange(len(errors))
    slack = 1e-12 * max(1.0, np.max(np.abs(V_star)))
    assert (errors <= 0.9**k * errors[0] + slack).all()
    # The bound is not vacuous: the error really does shrink by orders of magnitude.
    assert errors[-1] < 1e-8 * errors[0]
    # And ||V_{k+1} - V_k|| (the recorded deltas) is also bounded via the triangle inequality.
    deltas = np.array(result.deltas)
    assert (deltas <= (1 + 0.9) * 0.9 ** k[:-1] * errors[0] + 2 * slack).all()


@pytest.mark.parametrize("name", ["random-dense-a", "random-dense-b", "slippery-grid", "frozenlake-8x8"])
@pytest.mark.parametrize("gamma, tol", [(0.9, 1e-3), (0.99, 1e-4), (0.99, 1e-8)])
def test_value_iteration_stopping_rule_bound(name, gamma, tol):
    mdp = worlds(gamma)[name]
    V_star = optimal(name, gamma)
    result = value_iteration(mdp, tol=tol)
    assert result.deltas[-1] < tol
    assert all(d >= tol for d in result.deltas[:-1])  # it stopped at the first chance
    error = np.max(np.abs(result.V - V_star))
    assert error <= tol * gamma / (1 - gamma) + 1e-12
    # The greedy policy from those values loses at most 2 gamma eps / (1 - gamma).
    loss = np.max(V_star - evaluate_policy_exact(mdp, result.policy))
    assert loss <= 2 * gamma * error / (1 - gamma) + 1e-9


def test_policy_iteration_values_increase_and_it_stops_at_a_greedy_policy():
    mdp = gridworld(SLIPPERY_GRID, slip=0.2, gamma=0.95, step_reward=-0.04)
    result = policy_iteration(mdp, record=True)
    assert len(result.history) == result.iterations >= 2
    for before, after in zip(result.history, result.history[1:]):
        assert (after >= before - 1e-9).all()
        assert (after > before + 1e-9).any()  # each round really improves somewhere
    assert result.deltas[-1] == 0 and all(d > 0 for d in result.deltas[:-1])
    Q = q_from_v(mdp, result.V)
    np.testing.assert_allclose(Q[np.arange(mdp.n_states), result.policy], Q.max(axis=1), atol=1e-12)


def test_policy_iteration_from_a_given_policy():
    mdp = random_mdp(15, 4, gamma=0.9, seed=8)
    V_star = policy_iteration(mdp).V
    start = np.full(15, 3)
    result = policy_iteration(mdp, policy0=start, record=True)
    np.testing.assert_allclose(result.history[0], evaluate_policy_exact(mdp, start), atol=1e-12)
    np.testing.assert_allclose(result.V, V_star, atol=1e-10)
    # Starting from the optimal policy, one evaluation confirms it and nothing changes.
    again = policy_iteration(mdp, policy0=result.policy)
    assert again.iterations == 1 and again.deltas == [0.0]


# --------------------------------------------------------------------------- gamma = 1 without an end


@pytest.fixture(params=["dense", "sparse-grid"])
def endless(request):
    """A world with no terminal state and reward -1 everywhere, at gamma = 1."""
    if request.param == "dense":
        mdp = random_mdp(6, 2, gamma=1.0, seed=1)
        return FiniteMDP(mdp.P, -np.ones((6, 2)), 1.0)
    return gridworld(["...", ".#.", "..."], slip=0.2, gamma=1.0, step_reward=-1.0)


def test_gamma_one_without_terminals_is_singular(endless):
    assert not endless.terminal.any()
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        evaluate_policy_exact(endless, np.zeros(endless.n_states, dtype=int))
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        policy_iteration(endless)
    # With any discount below 1 the same world is fine.
    V = evaluate_policy_exact(endless.with_gamma(0.9), np.zeros(endless.n_states, dtype=int))
    np.testing.assert_allclose(V, -10.0, atol=1e-9)


def test_gamma_one_without_terminals_diverges_under_iteration(endless):
    policy = np.zeros(endless.n_states, dtype=int)
    with pytest.warns(ConvergenceWarning, match="max_iter=1000"):
        result = evaluate_policy_iterative(endless, policy, tol=1e-10, max_iter=1000)
    assert result.iterations == 1000 and not result.converged  # never settled
    np.testing.assert_allclose(result.V, -1000.0, atol=1e-9)  # 1000 sweeps of reward -1
    np.testing.assert_allclose(result.deltas, 1.0, atol=1e-9)  # each sweep adds another -1


def test_gamma_one_with_a_trap_that_never_ends_is_singular():
    # State 0 can reach the terminal goal, state 1 loops on itself forever.
    P = np.zeros((3, 1, 3))
    P[0, 0, 2] = 1.0
    P[1, 0, 1] = 1.0
    P[2, 0, 2] = 1.0
    mdp = FiniteMDP(P, np.array([[1.0], [0.0], [0.0]]), 1.0, terminal=[False, False, True])
    with pytest.raises(np.linalg.LinAlgError):
        evaluate_policy_exact(mdp, [0, 0, 0])
    sparse = FiniteMDP(sp.csr_matrix(P.reshape(3, 3)), mdp.R, 1.0, terminal=mdp.terminal)
    with pytest.raises(np.linalg.LinAlgError):
        evaluate_policy_exact(sparse, [0, 0, 0])


def test_all_terminal_world_has_value_zero():
    mdp = FiniteMDP(np.ones((1, 1, 1)), np.zeros((1, 1)), 1.0, terminal=[True])
    np.testing.assert_array_equal(evaluate_policy_exact(mdp, [0]), [0.0])
    np.testing.assert_array_equal(policy_iteration(mdp).V, [0.0])
