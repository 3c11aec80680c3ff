"""Dynamic programming on a known MDP: evaluation, value iteration, policy iteration.

Used by Lecture 1 (MDPs and Bellman equations). Every function takes a
:class:`rl2llm.mdp.FiniteMDP` and works on the whole state space at once:
one Bellman backup is one matrix-vector product.

Every public function checks its arguments first (``mdp`` a FiniteMDP, values
finite of shape ``(S,)``, actions in ``0 .. A-1``, ``tol > 0``, ``max_iter >= 1``,
...) and raises a ``TypeError`` or ``ValueError`` naming the argument. The
iterative solvers report whether they converged (``DPResult.converged``) and
emit a :class:`ConvergenceWarning` when they stop at ``max_iter`` instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from . import _validate as check
from .mdp import FiniteMDP


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped at ``max_iter`` before meeting its stopping rule."""


def q_from_v(mdp: FiniteMDP, V: np.ndarray) -> np.ndarray:
    """Action values ``Q[s, a] = R[s, a] + gamma * E[V(s') | s, a]``; zero in terminal states.

    ``V``: finite state values, shape ``(S,)``.
    """
    return _q_from_v(mdp, _checked_values(mdp, V))


def _q_from_v(mdp: FiniteMDP, V: np.ndarray) -> np.ndarray:
    """:func:`q_from_v` without the argument check, for the solvers' inner loops."""
    # Q[s, a] = R[s, a] + gamma * E[V(s') | s, a], for every state and action at once
    Q = mdp.R + mdp.gamma * mdp._expected_next(V)
    Q[mdp.terminal] = 0.0  # the episode is over: terminal states are worth 0
    return Q


def greedy_policy(Q: np.ndarray) -> np.ndarray:
    """The action with the highest value in each state (ties go to the lowest index).

    ``Q``: an ``(S, A)`` array with ``A >= 1``, no NaN (``-inf`` marks an action never to take).
    """
    Q = check.numeric_array("Q", Q)
    if Q.ndim != 2 or Q.shape[1] == 0:
        raise ValueError(f"Q must have shape (S, A) with A >= 1, got {Q.shape}")
    check.no_nan("Q", Q)
    return np.argmax(Q, axis=1)


def bellman_optimality_backup(mdp: FiniteMDP, V: np.ndarray) -> np.ndarray:
    """The Bellman optimality operator: ``(T V)(s) = max_a Q(s, a)``. ``V``: finite, shape ``(S,)``."""
    return _max_over_actions(_q_from_v(mdp, _checked_values(mdp, V)))


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
    """The Bellman expectation operator of a policy: ``(T_pi V)(s) = R_pi(s) + gamma * (P_pi V)(s)``.

    ``V``: finite, shape ``(S,)``; ``policy``: ``(S,)`` actions or ``(S, A)`` probabilities.
    """
    V = _checked_values(mdp, V)
    P_pi, R_pi = mdp.policy_matrices(policy)
    V_new = R_pi + mdp.gamma * (P_pi @ V)
    V_new[mdp.terminal] = 0.0
    return V_new


def evaluate_policy_exact(mdp: FiniteMDP, policy: np.ndarray) -> np.ndarray:
    """Solve the Bellman expectation equation ``V = R_pi + gamma P_pi V`` as a linear system.

    Terminal states have value 0; we solve for the others only. The system has
    a unique solution when ``gamma < 1``, or when ``gamma = 1`` and the policy
    reaches a terminal state with probability 1. Otherwise ``I - gamma P_pi`` is
    singular (the return is infinite or undefined) and we say so
    (``np.linalg.LinAlgError``, a ``ValueError``).

    ``policy``: ``(S,)`` actions or ``(S, A)`` probabilities.
    """
    _check_mdp(mdp)
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
        P_live = P_pi[live][:, live].tocsc()
        A = sp.identity(int(live.sum()), format="csc") - mdp.gamma * P_live
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
    #: Whether the stopping rule was met before ``max_iter`` (else a ConvergenceWarning was emitted).
    converged: bool = False
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
    """Apply the policy's Bellman operator until one sweep changes no value by ``tol`` or more.

    Stops at ``max_iter`` sweeps at the latest; then ``result.converged`` is
    False and a :class:`ConvergenceWarning` says so (with gamma = 1 and a policy
    that never ends, the values never settle).

    Accepted: ``policy`` ``(S,)`` actions or ``(S, A)`` probabilities; ``tol`` a
    finite number > 0; ``max_iter`` an integer >= 1; ``V0`` ``None`` or finite
    values of shape ``(S,)``; ``record`` True or False.
    """
    _check_iteration_args(mdp, tol, max_iter, V0, record)
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
    result.V, result.iterations, result.converged = V, k, delta < tol
    _warn_if_not_converged(result, "evaluate_policy_iterative", tol, mdp.gamma)
    return result


def value_iteration(
    mdp: FiniteMDP,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    V0: np.ndarray | None = None,
    record: bool = False,
) -> DPResult:
    """Repeat ``V <- max_a [R + gamma P V]`` until a sweep changes no value by ``tol`` or more.

    Stopping rule and what it buys: if ``||V_{k+1} - V_k|| < tol`` then
    ``||V_{k+1} - V*|| < tol * gamma / (1 - gamma)``, which for gamma near 1 is
    far larger than ``tol`` (Lecture 1, gotcha "Converged" is not "correct"). If ``max_iter``
    sweeps come first, ``result.converged`` is False and a
    :class:`ConvergenceWarning` says so.

    Accepted: ``tol`` a finite number > 0; ``max_iter`` an integer >= 1; ``V0``
    ``None`` or finite values of shape ``(S,)``; ``record`` True or False.
    """
    _check_iteration_args(mdp, tol, max_iter, V0, record)
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
    result.V, result.iterations, result.converged = V, k, delta < tol
    result.policy = greedy_policy(q_from_v(mdp, V))
    _warn_if_not_converged(result, "value_iteration", tol, mdp.gamma)
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
    each is at least as large as the one before, everywhere. If ``max_iter``
    rounds come first, ``result.converged`` is False and a
    :class:`ConvergenceWarning` says so.

    Accepted: ``policy0`` ``None`` or ``(S,)`` actions; ``max_iter`` an integer
    >= 1; ``record`` True or False.
    """
    _check_policy_iteration_args(mdp, policy0, max_iter, record)
    if policy0 is None:
        policy = np.zeros(mdp.n_states, dtype=int)
    else:
        policy = np.array(policy0, dtype=int)
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
    result.converged = not improve.any()
    _warn_if_not_converged(result, "policy_iteration")
    return result


def finite_horizon(mdp: FiniteMDP, horizon: int, gamma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Backward induction over ``horizon`` steps.

    Returns ``V`` of shape ``(horizon + 1, S)``, where ``V[t, s]`` is the best
    expected return from state ``s`` with ``horizon - t`` steps left, and
    ``policy`` of shape ``(horizon, S)``: the action to take at step ``t``. With
    a reward of 1 for reaching a goal and ``gamma = 1``, ``V[0, s]`` is the
    highest achievable probability of reaching the goal within the step limit.

    Accepted: ``horizon`` an integer >= 1; ``gamma`` ``None`` (the MDP's) or a
    number in ``[0, 1]``.
    """
    horizon, gamma = _checked_horizon_args(mdp, horizon, gamma)
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

    ``policy`` is stationary ``(S,)`` or time-dependent ``(horizon, S)``, of
    whole-number actions in ``0 .. A-1``. Accepted otherwise: as
    :func:`finite_horizon`.
    """
    horizon, gamma = _checked_horizon_args(mdp, horizon, gamma)
    policy = check.as_plan("policy", policy, mdp.n_states, mdp.n_actions, horizon)

    g = mdp.gamma if gamma is None else gamma
    V = np.zeros(mdp.n_states)
    rows = np.arange(mdp.n_states)
    for t in range(horizon - 1, -1, -1):
        actions = policy if policy.ndim == 1 else policy[t]
        Q = mdp.R + g * mdp.expected_next(V)
        Q[mdp.terminal] = 0.0
        V = Q[rows, actions]
    return V


# --------------------------------------------------------------------------- argument checks and warnings


def _check_mdp(mdp) -> None:
    if not isinstance(mdp, FiniteMDP):
        raise TypeError(f"mdp must be a FiniteMDP, got {check.describe(mdp)}")


def _checked_values(mdp, V) -> np.ndarray:
    _check_mdp(mdp)
    return check.as_finite_array("V", V, (mdp.n_states,), "(S,)")


def _check_iteration_args(mdp, tol, max_iter, V0, record) -> None:
    _check_mdp(mdp)
    check.as_real("tol", tol, 0.0, low_open=True)
    check.as_int("max_iter", max_iter, 1)
    if V0 is not None:
        check.as_finite_array("V0", V0, (mdp.n_states,), "(S,)")
    check.as_bool("record", record)


def _check_policy_iteration_args(mdp, policy0, max_iter, record) -> None:
    _check_mdp(mdp)
    if policy0 is not None:
        check.as_actions_per_state("policy0", policy0, mdp.n_states, mdp.n_actions)
    check.as_int("max_iter", max_iter, 1)
    check.as_bool("record", record)


def _checked_horizon_args(mdp, horizon, gamma) -> tuple[int, float | None]:
    _check_mdp(mdp)
    horizon = check.as_int("horizon", horizon, 1)
    return horizon, None if gamma is None else check.as_real("gamma", gamma, 0.0, 1.0)


def _warn_if_not_converged(result: DPResult, solver: str, tol: float | None = None, gamma: float = 0.0) -> None:
    """Say so (a ConvergenceWarning) when a solver stopped at max_iter; ``tol=None`` means policy iteration."""
    if result.converged:
        return
    if tol is None:
        why = f"{result.deltas[-1]:.0f} states still changed action in the last of {result.iterations} rounds"
    else:
        why = (f"the last of {result.iterations} sweeps changed a value by {result.deltas[-1]:.3g}, "
               f"not below tol={tol:g}")
        if gamma == 1.0:
            why += " (with gamma = 1, values that never settle mean a policy that never reaches a terminal state)"
    warnings.warn(f"{solver} stopped at max_iter={result.iterations} without converging: {why}",
                  ConvergenceWarning, stacklevel=3)
