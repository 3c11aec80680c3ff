"""Dynamic programming on a known MDP: evaluation, value iteration, policy iteration.

Used by Lecture 1 (MDPs and Bellman equations). Every function takes a
:class:`rl2llm.mdp.FiniteMDP` and works on the whole state space at once:
one Bellman backup is one matrix-vector product.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .mdp import FiniteMDP


def q_from_v(mdp: FiniteMDP, V: np.ndarray) -> np.ndarray:
    """Action values ``Q[s, a] = R[s, a] + gamma * E[V(s') | s, a]``; zero in terminal states."""
    Q = mdp.expected_next(V)  # a fresh (S, A) array: scale and shift it in place
    Q *= mdp.gamma
    Q += mdp.R
    Q[np.flatnonzero(mdp.terminal)] = 0.0  # row indices: several times faster than a 2-D boolean mask
    return Q


def greedy_policy(Q: np.ndarray) -> np.ndarray:
    """The action with the highest value in each state (ties go to the lowest index)."""
    return np.argmax(Q, axis=1)


def bellman_optimality_backup(mdp: FiniteMDP, V: np.ndarray) -> np.ndarray:
    """The Bellman optimality operator: ``(T V)(s) = max_a Q(s, a)``."""
    return _max_over_actions(q_from_v(mdp, V))


def _max_over_actions(Q: np.ndarray) -> np.ndarray:
    """``Q.max(axis=1)``, computed one action column at a time.

    Same numbers, but NumPy reduces a short last axis (4 actions) element by
    element; a loop of A vectorized ``np.maximum`` calls over S states is about
    15x faster and was the bulk of each value-iteration sweep.
    """
    best = Q[:, 0].copy()
    for a in range(1, Q.shape[1]):
        np.maximum(best, Q[:, a], out=best)
    return best


def bellman_expectation_backup(mdp: FiniteMDP, V: np.ndarray, policy: np.ndarray) -> np.ndarray:
    """The Bellman expectation operator of a policy: ``(T_pi V)(s) = R_pi(s) + gamma * (P_pi V)(s)``."""
    P_pi, R_pi = mdp.policy_matrices(policy)
    V_new = R_pi + mdp.gamma * (P_pi @ V)
    V_new[mdp.terminal] = 0.0
    return V_new


def evaluate_policy_exact(mdp: FiniteMDP, policy: np.ndarray) -> np.ndarray:
    """Solve the Bellman expectation equation ``V = R_pi + gamma P_pi V`` as a linear system.

    Terminal states have value 0; we solve for the others only. The system has
    a unique solution when ``gamma < 1``, or when ``gamma = 1`` and the policy
    reaches a terminal state with probability 1. Otherwise ``I - gamma P_pi`` is
    singular (the return is infinite or undefined) and we say so.
    """
    P_pi, R_pi = mdp.policy_matrices(policy)
    live = ~mdp.terminal
    V = np.zeros(mdp.n_states)
    if not live.any():
        return V
    if mdp.gamma >= 1.0 and not _always_reaches_terminal(P_pi, mdp.terminal):
        # Exactly singular; a sparse LU often misses this (round-off leaves a
        # tiny pivot) and would return values of order 1e16 instead.
        raise np.linalg.LinAlgError(_SINGULAR)
    if sp.issparse(P_pi):
        A = sp.identity(int(live.sum()), format="csc") - mdp.gamma * P_pi[live][:, live].tocsc()
        with np.errstate(all="raise"):
            try:
                solution = spla.spsolve(A, R_pi[live])
            except (RuntimeError, FloatingPointError) as err:
                raise np.linalg.LinAlgError(_SINGULAR) from err
        if not np.all(np.isfinite(solution)):
            raise np.linalg.LinAlgError(_SINGULAR)
    else:
        A = np.eye(int(live.sum())) - mdp.gamma * P_pi[np.ix_(live, live)]
        if np.linalg.cond(A) > 1e12:
            raise np.linalg.LinAlgError(_SINGULAR)
        solution = np.linalg.solve(A, R_pi[live])
    V[live] = solution
    return V


def _always_reaches_terminal(P_pi, terminal: np.ndarray) -> bool:
    """Whether every state can reach a terminal state under ``P_pi`` (then, and
    only then, the episode ends with probability 1 and ``I - P_pi`` restricted
    to the live states is invertible)."""
    reach = np.asarray(terminal, dtype=bool).copy()
    while True:
        grown = reach | (np.asarray(P_pi @ reach.astype(float)).ravel() > 0)
        if (grown == reach).all():
            return bool(reach.all())
        reach = grown


_SINGULAR = (
    "I - gamma * P_pi is singular: with gamma = 1 this policy can go on forever "
    "without reaching a terminal state, so its return is not a finite number"
)


@dataclass
class DPResult:
    """What a dynamic-programming run returns."""

    V: np.ndarray
    policy: np.ndarray
    iterations: int
    #: Sup-norm change ``||V_{k+1} - V_k||`` at each sweep (value iteration,
    #: iterative evaluation) or number of changed actions (policy iteration).
    deltas: list[float] = field(default_factory=list)
    #: Value estimates after each sweep, kept only when asked for.
    history: list[np.ndarray] = field(default_factory=list)


def evaluate_policy_iterative(
    mdp: FiniteMDP,
    policy: np.ndarray,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    V0: np.ndarray | None = None,
    record: bool = False,
) -> DPResult:
    """Apply the policy's Bellman operator until the values stop changing by more than ``tol``.

    Stops early at ``max_iter`` sweeps; check ``result.iterations`` (with
    gamma = 1 and a policy that never ends, the values never settle).
    """
    P_pi, R_pi = mdp.policy_matrices(policy)
    V = np.zeros(mdp.n_states) if V0 is None else np.array(V0, dtype=float)
    result = DPResult(V, np.asarray(policy), 0)
    for k in range(1, max_iter + 1):
        V_new = R_pi + mdp.gamma * (P_pi @ V)
        V_new[mdp.terminal] = 0.0
        delta = float(np.max(np.abs(V_new - V)))
        V = V_new
        result.deltas.append(delta)
        if record:
            result.history.append(V.copy())
        if delta < tol:
            break
    result.V, result.iterations = V, k
    return result


def value_iteration(
    mdp: FiniteMDP,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    V0: np.ndarray | None = None,
    record: bool = False,
) -> DPResult:
    """Repeat ``V <- max_a [R + gamma P V]`` until one sweep changes no value by ``tol`` or more.

    Stopping rule and what it buys: if ``||V_{k+1} - V_k|| < tol`` then
    ``||V_{k+1} - V*|| < tol * gamma / (1 - gamma)``, which for gamma near 1 is
    far larger than ``tol`` (Lecture 1, "the stopping rule").
    """
    V = np.zeros(mdp.n_states) if V0 is None else np.array(V0, dtype=float)
    result = DPResult(V, np.zeros(mdp.n_states, dtype=int), 0)
    if record:
        result.history.append(V.copy())
    for k in range(1, max_iter + 1):
        V_new = bellman_optimality_backup(mdp, V)
        change = V_new - V
        delta = float(np.max(np.abs(change, out=change)))
        V = V_new
        result.deltas.append(delta)
        if record:
            result.history.append(V.copy())
        if delta < tol:
            break
    result.V, result.iterations = V, k
    result.policy = greedy_policy(q_from_v(mdp, V))
    return result


def policy_iteration(
    mdp: FiniteMDP,
    policy0: np.ndarray | None = None,
    max_iter: int = 10_000,
    record: bool = False,
) -> DPResult:
    """Evaluate the policy exactly, act greedily on its values, repeat until nothing changes.

    A state switches action only if the new action is better by more than a
    hair (1e-12 relative), so equally good actions cannot make the loop cycle.
    ``result.history`` (when ``record``) holds the value of every policy visited:
    each is at least as large as the one before, everywhere.
    """
    policy = np.zeros(mdp.n_states, dtype=int) if policy0 is None else np.array(policy0, dtype=int)
    result = DPResult(np.zeros(mdp.n_states), policy, 0)
    for k in range(1, max_iter + 1):
        V = evaluate_policy_exact(mdp, policy)
        if record:
            result.history.append(V.copy())
        Q = q_from_v(mdp, V)
        current = Q[np.arange(mdp.n_states), policy]
        best = Q.max(axis=1)
        improve = best > current + 1e-12 * np.maximum(1.0, np.abs(best))
        new_policy = np.where(improve, greedy_policy(Q), policy)
        result.deltas.append(float(improve.sum()))
        if not improve.any():
            break
        policy = new_policy
    result.V, result.policy, result.iterations = V, policy, k
    return result


def finite_horizon(mdp: FiniteMDP, horizon: int, gamma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Backward induction over ``horizon`` steps.

    Returns ``V`` of shape ``(horizon + 1, S)``, where ``V[t, s]`` is the best
    expected return from state ``s`` with ``horizon - t`` steps left, and
    ``policy`` of shape ``(horizon, S)``: the action to take at step ``t``. With
    a reward of 1 for reaching a goal and ``gamma = 1``, ``V[0, s]`` is the
    highest achievable probability of reaching the goal within the step limit.
    """
    g = mdp.gamma if gamma is None else gamma
    V = np.zeros((horizon + 1, mdp.n_states))
    policy = np.zeros((horizon, mdp.n_states), dtype=int)
    for t in range(horizon - 1, -1, -1):
        Q = mdp.R + g * mdp.expected_next(V[t + 1])
        Q[mdp.terminal] = 0.0
        policy[t] = greedy_policy(Q)
        V[t] = Q.max(axis=1)
    return V, policy


def evaluate_finite_horizon(mdp: FiniteMDP, policy: np.ndarray, horizon: int, gamma: float | None = None) -> np.ndarray:
    """Exact expected return of ``policy`` over ``horizon`` steps from every state.

    ``policy`` is stationary ``(S,)`` or time-dependent ``(horizon, S)``.
    """
    g = mdp.gamma if gamma is None else gamma
    policy = np.asarray(policy)
    V = np.zeros(mdp.n_states)
    rows = np.arange(mdp.n_states)
    for t in range(horizon - 1, -1, -1):
        actions = policy if policy.ndim == 1 else policy[t]
        Q = mdp.R + g * mdp.expected_next(V)
        Q[mdp.terminal] = 0.0
        V = Q[rows, actions]
    return V
