"""Property-based tests: the theorems of Lecture 1 hold on every small random MDP."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rl2llm.dp import (
    bellman_expectation_backup,
    bellman_optimality_backup,
    evaluate_policy_exact,
    evaluate_policy_iterative,
    policy_iteration,
    q_from_v,
    value_iteration,
)
from rl2llm.mdp import FiniteMDP

FAST = settings(max_examples=150, deadline=None)
unit = st.floats(-1.0, 1.0, allow_nan=False)


@st.composite
def mdps(draw, max_gamma: float = 0.99, terminals: bool = True, sparse: bool = True) -> FiniteMDP:
    """A small random MDP: S in 2..8, A in 1..4, Dirichlet transitions, rewards in [-1, 1]."""
    S = draw(st.integers(2, 8))
    A = draw(st.integers(1, 4))
    gamma = draw(st.floats(0.0, max_gamma))
    seed = draw(st.integers(0, 2**32 - 1))
    concentration = draw(st.sampled_from([0.1, 1.0, 10.0]))  # peaked to flat transition rows
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(S, concentration), size=(S, A))
    P /= P.sum(axis=2, keepdims=True)
    R = draw(hnp.arrays(float, (S, A), elements=unit))
    terminal = np.zeros(S, dtype=bool)
    if terminals and draw(st.booleans()):
        terminal[:-1] = draw(hnp.arrays(bool, S - 1))  # the last state always stays live
        P[terminal] = np.eye(S)[terminal][:, None, :]
        R[terminal] = 0.0
    if sparse and draw(st.booleans()):
        P = sp.csr_matrix(P.reshape(S * A, S))
    return FiniteMDP(P, R, gamma, terminal=terminal)


def vectors(n: int):
    return hnp.arrays(float, n, elements=st.floats(-10.0, 10.0, allow_nan=False))


def sup(x: np.ndarray) -> float:
    return float(np.max(np.abs(x)))


@FAST
@given(data=st.data())
def test_bellman_optimality_operator_is_a_gamma_contraction(data):
    mdp = data.draw(mdps())
    U, V = data.draw(vectors(mdp.n_states)), data.draw(vectors(mdp.n_states))
    TU, TV = bellman_optimality_backup(mdp, U), bellman_optimality_backup(mdp, V)
    assert sup(TU - TV) <= mdp.gamma * sup(U - V) + 1e-12
    # Monotone too: U <= V everywhere implies T U <= T V.
    W = np.maximum(U, V)
    assert (bellman_optimality_backup(mdp, W) >= TU - 1e-12).all()


@FAST
@given(data=st.data())
def test_bellman_expectation_operator_is_a_gamma_contraction(data):
    mdp = data.draw(mdps())
    S, A = mdp.n_states, mdp.n_actions
    if data.draw(st.booleans()):
        policy = np.array(data.draw(st.lists(st.integers(0, A - 1), min_size=S, max_size=S)))
    else:
        policy = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).dirichlet(np.ones(A), size=S)
    U, V = data.draw(vectors(S)), data.draw(vectors(S))
    TU, TV = bellman_expectation_backup(mdp, U, policy), bellman_expectation_backup(mdp, V, policy)
    assert sup(TU - TV) <= mdp.gamma * sup(U - V) + 1e-12
    # The expectation operator of a policy never exceeds the optimality operator.
    assert (TU <= bellman_optimality_backup(mdp, U) + 1e-12).all()


@FAST
@given(mdp=mdps())
def test_exact_evaluation_is_the_fixed_point_and_iteration_finds_it(mdp):
    policy = np.arange(mdp.n_states) % mdp.n_actions
    V = evaluate_policy_exact(mdp, policy)
    scale = 1.0 / (1.0 - mdp.gamma)  # |V| <= max|R| / (1 - gamma)
    assert sup(V) <= scale + 1e-9
    assert sup(bellman_expectation_backup(mdp, V, policy) - V) <= 1e-10 * scale
    V_iter = evaluate_policy_iterative(mdp, policy, tol=1e-12).V
    assert sup(V_iter - V) <= 1e-12 * mdp.gamma * scale + 1e-10


@FAST
@given(mdp=mdps())
def test_policy_iteration_improves_monotonically_and_ends_greedy(mdp):
    S, A = mdp.n_states, mdp.n_actions
    result = policy_iteration(mdp, record=True)
    assert result.iterations <= min(A**S, 10_000 - 1)  # never hit max_iter; at most one visit per policy
    assert len(result.history) == result.iterations
    for before, after in zip(result.history, result.history[1:]):
        assert (after >= before - 1e-9).all()
    # The final policy is greedy with respect to its own value, and that value is V*.
    Q = q_from_v(mdp, result.V)
    assert (Q[np.arange(S), result.policy] >= Q.max(axis=1) - 1e-9).all()
    assert sup(bellman_optimality_backup(mdp, result.V) - result.V) <= 1e-9
    np.testing.assert_allclose(result.V, evaluate_policy_exact(mdp, result.policy), atol=1e-12)


@FAST
@given(mdp=mdps(), tol=st.sampled_from([1e-1, 1e-2, 1e-4, 1e-8]))
def test_value_iteration_greedy_policy_is_near_optimal(mdp, tol):
    V_star = policy_iteration(mdp).V
    result = value_iteration(mdp, tol=tol)
    g = mdp.gamma
    eps = sup(result.V - V_star)
    # The stopping rule: one small step means the values are close to V* ...
    assert eps <= tol * g / (1 - g) + 1e-9
    # ... and then acting greedily loses at most 2 gamma eps / (1 - gamma).
    V_greedy = evaluate_policy_exact(mdp, result.policy)
    assert (V_greedy <= V_star + 1e-9).all()
    assert sup(V_star - V_greedy) <= 2 * g * eps / (1 - g) + 1e-9


@settings(max_examples=80, deadline=None)
@given(mdp=mdps(max_gamma=0.95), V0=st.none() | st.just("random"))
def test_value_iteration_error_shrinks_geometrically(mdp, V0):
    V_star = policy_iteration(mdp).V
    start = None if V0 is None else np.random.default_rng(0).normal(scale=5, size=mdp.n_states)
    result = value_iteration(mdp, tol=1e-12, V0=start, record=True)
    errors = np.array([sup(V - V_star) for V in result.history])
    k = np.arange(len(errors))
    assert (errors <= mdp.gamma**k * errors[0] + 1e-10).all()
