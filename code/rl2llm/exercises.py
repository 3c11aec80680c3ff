"""Exercises that check themselves: you write a function, a checker says precisely what is wrong.

Used by Lecture 1 (MDPs and Bellman equations), whose exercises ask for

* ``evaluate_policy(mdp, policy) -> V``, checked by :func:`check_policy_evaluation`;
* ``value_iteration(mdp) -> (V, policy)``, checked by :func:`check_value_iteration`;

by Lecture 2 (policy gradients): reward-to-go, checked by :func:`check_reward_to_go`;
by Lecture 3 (Q-learning): the targets of SARSA, expected SARSA and Q-learning,
checked by :func:`check_td_target`; and by Lecture 4 (actor-critic): generalised
advantage estimates over episodes that terminate or are truncated, checked by
:func:`check_gae`; and by Lecture 5 (TRPO): conjugate gradient with a
matrix-vector product, checked by :func:`check_conjugate_gradient`; and by Lecture 6
(PPO): the clipped policy loss, per action or per token, checked by :func:`check_ppo_loss`; and by Lecture 11
(tokenization): the BPE encoding of one piece, checked by :func:`check_bpe_encode`; and by
Lecture 9 (attention): scaled dot-product attention with a causal mask, checked by :func:`check_attention`;
and by Lecture 8 (model-based RL): the cross-entropy method's refit, checked by :func:`check_cem_refit`;
and by Lecture 7 (off-policy learning): SAC's log-probability of a tanh-squashed Gaussian action,
checked by :func:`check_squashed_log_prob`; and by Lecture 10 (transformers): the parameter
count of a GPT from its configuration, checked by :func:`check_parameter_count`; and by Lecture 12
(language modelling): nucleus (top-p) filtering of next-token logits, checked by :func:`check_top_p_filter`; and by Lecture 15 (direct preference optimisation): the DPO loss per pair, checked by
:func:`check_dpo_losses`; and by Lecture 14 (PPO for language models): the per-token rewards of RLHF,
checked by :func:`check_shaped_rewards`; and by Lecture 13 (reward modelling): the Plackett–Luce loss of rankings,
checked by :func:`check_plackett_luce`; and by Lecture 16 (beyond DPO): GRPO, Dr. GRPO and RLOO
advantages of groups of answers, checked by :func:`check_group_advantages`.

Each checker runs your function on several small worlds (terminal states,
a discount close to 1, a discount of 0 or of 1, several actions), compares
the answer with the package's reference solution, and returns a
:class:`CheckResult`. Shown in a notebook, it lists every case with what went
wrong and, where a common mistake fits the numbers, a hint::

    check_policy_evaluation: 5 of 6 cases pass
      pass  two-state machine, gamma = 0.9
      FAIL  grid world with a wall, a goal and a pit, gamma = 0.9: V differs from the
            exact solution in state 5 (row 1, column 2) by 0.31 (yours -0.246, exact -0.556)
      ...

Every world a checker hands your function has a dense transition array
``mdp.P`` of shape ``(S, A, S)``, so ``mdp.P[s, a, s2]`` is the probability of
moving from ``s`` to ``s2`` with action ``a``; ``mdp.R[s, a]`` is the expected
reward, ``mdp.gamma`` the discount and ``mdp.terminal[s]`` says whether the
episode ends in ``s`` (its value is then 0).
"""

from __future__ import annotations

import copy
import inspect
import textwrap
import traceback
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import scipy.sparse as sp

from ._validate import describe
from .dp import evaluate_policy_exact, policy_iteration
from .mdp import ACTION_NAMES, FiniteMDP, gridworld, random_mdp

#: A reader's answer counts as right when it is within ``ATOL + RTOL * |exact|`` of the reference.
ATOL = 1e-6
RTOL = 1e-6


class ExerciseFailed(AssertionError):
    """Raised by :meth:`CheckResult.raise_if_failed`; its message is the whole report."""


@dataclass(frozen=True)
class CaseResult:
    """One case of a check: its name, whether it passed, and what went wrong."""

    name: str
    passed: bool
    message: str = ""
    hint: str = ""


@dataclass(frozen=True)
class CheckResult:
    """What a checker found: one :class:`CaseResult` per case. Prints as a report; true when all pass."""

    exercise: str
    cases: tuple[CaseResult, ...]

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(case for case in self.cases if not case.passed)

    def __bool__(self) -> bool:
        return self.passed

    def report(self) -> str:
        n_pass = sum(case.passed for case in self.cases)
        verdict = "all cases pass" if self.passed else f"{n_pass} of {len(self.cases)} cases pass"
        lines = [f"{self.exercise}: {verdict}"]
        for case in self.cases:
            if case.passed:
                lines.append(f"  pass  {case.name}")
                continue
            lines.append(_wrap(f"  FAIL  {case.name}: {case.message}"))
            if case.hint:
                lines.append(_wrap(f"        Hint: {case.hint}"))
        return "\n".join(lines)

    __str__ = report

    def __repr__(self) -> str:
        return self.report()

    def raise_if_failed(self) -> None:
        """Raise :class:`ExerciseFailed` with the report unless every case passed."""
        if not self.passed:
            raise ExerciseFailed(self.report())


def _wrap(line: str, width: int = 88) -> str:
    """A report line folded to ``width`` characters (notebook outputs do not wrap), continued under its text."""
    return textwrap.fill(line, width, subsequent_indent=" " * 8, break_long_words=False, break_on_hyphens=False)


@dataclass(frozen=True)
class _Case:
    name: str
    mdp: FiniteMDP
    policy: np.ndarray | None = None  # for policy evaluation


# --------------------------------------------------------------------------- the worlds


def _dense(mdp: FiniteMDP) -> FiniteMDP:
    """The same world with ``P`` as a dense ``(S, A, S)`` array."""
    if not sp.issparse(mdp.P):
        return mdp
    S, A = mdp.n_states, mdp.n_actions
    return replace(mdp, P=mdp.P.toarray().reshape(S, A, S))


def _machine() -> FiniteMDP:
    """Lecture 1's two-state machine: working earns 1 and breaks w.p. 0.1; broken is repaired w.p. 0.5."""
    P = np.array([[[0.9, 0.1]], [[0.5, 0.5]]])
    return FiniteMDP(P, np.array([[1.0], [0.0]]), gamma=0.9, name="two-state machine")


_GRID = ["...G", ".#.X", "S..."]


def _grid(gamma: float) -> FiniteMDP:
    return _dense(gridworld(_GRID, slip=0.2, gamma=gamma, step_reward=-0.04))


def _lake(size: int, gamma: float) -> FiniteMDP:
    """FrozenLake's map as a grid world with its ice (slip 2/3) and a reward of 1 for arriving."""
    maps = {4: ["S...", ".X.X", "...X", "X..G"],
            8: ["S.......", "........", "...X....", ".....X..", "...X....", ".XX...X.", ".X..X.X.", "...X...G"]}
    return _dense(gridworld(maps[size], slip=2 / 3, gamma=gamma, pit_reward=0.0))


def _all_terminal() -> FiniteMDP:
    P = np.zeros((3, 2, 3))
    P[np.arange(3), :, np.arange(3)] = 1.0
    return FiniteMDP(P, np.zeros((3, 2)), gamma=0.9, terminal=np.ones(3, dtype=bool), name="all terminal")


def _evaluation_cases() -> list[_Case]:
    lake4 = _lake(4, 0.99)
    ends = policy_iteration(lake4).policy  # optimal on the ice: every episode ends, so gamma = 1 is allowed
    grid = _grid(0.9)
    rng = np.random.default_rng(1)
    dense = random_mdp(12, 3, gamma=0.5, seed=3)
    greedy = random_mdp(6, 2, gamma=0.0, seed=4)
    lake8 = _lake(8, 0.999)
    return [
        _Case("two-state machine, gamma = 0.9", _machine(), np.zeros(2, dtype=int)),
        _Case("grid world with a wall, a goal and a pit, gamma = 0.9", grid, np.arange(grid.n_states) % 4),
        _Case("FrozenLake 4x4, gamma = 1 (every episode ends)", lake4.with_gamma(1.0), ends),
        _Case("FrozenLake 8x8, gamma = 0.999 (close to 1)", lake8, policy_iteration(lake8).policy),
        _Case("random world, 12 states, 3 actions, gamma = 0.5", dense, rng.integers(0, 3, size=12)),
        _Case("gamma = 0 (only the next reward counts)", greedy, np.array([0, 1, 1, 0, 1, 0])),
    ]


def _optimisation_cases() -> list[_Case]:
    return [
        _Case("grid world with a wall, a goal and a pit, gamma = 0.9", _grid(0.9)),
        _Case("FrozenLake 4x4, gamma = 0.99 (holes end the episode)", _lake(4, 0.99)),
        _Case("FrozenLake 4x4, gamma = 0.999 (close to 1)", _lake(4, 0.999)),
        _Case("FrozenLake 8x8, gamma = 0.99", _lake(8, 0.99)),
        _Case("random world, 12 states, 3 actions, gamma = 0.8", random_mdp(12, 3, gamma=0.8, seed=5)),
        _Case("gamma = 0 (only the next reward counts)", random_mdp(6, 2, gamma=0.0, seed=6)),
        _Case("every state terminal", _all_terminal()),
    ]


# --------------------------------------------------------------------------- running the reader's function


def _check_callable(fn, checker: str, n_args: int, call: str) -> None:
    if not callable(fn):
        raise TypeError(f"{checker}: fn must be your function (a callable such as {call}), got {describe(fn)}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: just call them
        return
    try:
        signature.bind(*range(n_args))
    except TypeError:
        name = getattr(fn, "__name__", "fn")
        raise TypeError(f"{checker}: fn must take {n_args} argument{'s' if n_args > 1 else ''}, {call}; "
                        f"{name}{signature} does not") from None


def _call(fn, args) -> tuple[object, str]:
    """Run the reader's function on copies of ``args``; return (answer, "") or (None, what it raised and where)."""
    try:
        return fn(*copy.deepcopy(args)), ""
    except Exception as err:  # the reader's bug, reported as a failed case
        code = getattr(fn, "__code__", None)
        frames = traceback.extract_tb(err.__traceback__)[1:]  # drop this function's own frame
        mine = [f for f in frames if code is not None and f.filename == code.co_filename]
        frame = (mine or frames or [None])[-1]
        where = f" (in {frame.name}, line {frame.lineno}: {frame.line})" if frame is not None and frame.line else ""
        return None, f"raised {type(err).__name__}: {err}{where}"


def _as_vector(answer, name: str, S: int) -> tuple[np.ndarray | None, str]:
    """The reader's ``answer`` as a float vector of length S, or a message saying why it is not one."""
    if answer is None:
        return None, f"returned None instead of {name}; did you forget the return statement?"
    if isinstance(answer, (str, bytes, dict)) or not hasattr(answer, "__len__") and not hasattr(answer, "__array__"):
        return None, f"returned {describe(answer)}; {name} must be an array of shape ({S},), one value per state"
    try:
        vector = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return None, f"returned {describe(answer)}; {name} must be an array of numbers of shape ({S},)"
    if vector.shape != (S,):
        hint = " (a column: flatten it with .ravel())" if vector.shape in ((S, 1), (1, S)) else ""
        return None, f"returned {name} of shape {vector.shape}{hint}; expected ({S},), one value per state"
    bad = ~np.isfinite(vector)
    if bad.any():
        s = int(np.argmax(bad))
        return None, f"{name}[{s}] = {vector[s]}: every value must be a finite number"
    return vector, ""


def _state(mdp: FiniteMDP, s: int) -> str:
    if mdp.cells is not None:
        r, c = mdp.cells[s]
        return f"state {s} (row {r}, column {c})"
    return f"state {s}"


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) <= ATOL + RTOL * np.abs(b)


def _compare_values(mine: np.ndarray, exact: np.ndarray, mdp: FiniteMDP, what: str) -> str:
    """Empty when ``mine`` matches ``exact``; otherwise where and by how much it differs."""
    wrong = ~_close(mine, exact)
    if not wrong.any():
        return ""
    gap = np.where(wrong, np.abs(mine - exact), -1.0)
    s = int(np.argmax(gap))
    where = (f"in {_state(mdp, s)}" if wrong.sum() == 1 else
             f"in {wrong.sum()} of {mdp.n_states} states; the largest difference is in {_state(mdp, s)}")
    return (f"V differs from {what} {where} by {abs(mine[s] - exact[s]):.3g} "
            f"(yours {mine[s]:.6g}, exact {exact[s]:.6g})")


def _value_hint(mine: np.ndarray, exact: np.ndarray, mdp: FiniteMDP, extra: list[tuple[np.ndarray, str]]) -> str:
    """The common mistake that explains ``mine``, if one does."""
    terminal_wrong = mdp.terminal & (np.abs(mine) > ATOL)
    if terminal_wrong.any():
        s = int(np.argmax(terminal_wrong))
        return (f"{_state(mdp, s)} is terminal, so its value is 0 by definition (the episode is over); "
                f"yours is {mine[s]:.4g}")
    if mdp.gamma > 0 and np.any(np.abs(exact) > ATOL) and _close(mine, mdp.gamma * exact).all():
        return ("your values are the exact ones multiplied by gamma: the reward of this step is not "
                "discounted, only what follows it (V = R_pi + gamma P_pi V)")
    for alternative, explanation in extra:
        if _close(mine, alternative).all():
            return explanation
    relative = np.max(np.abs(mine - exact)) / max(1.0, np.max(np.abs(exact)))
    if relative < (0.05 if mdp.gamma >= 0.99 else 1e-3):
        bound = ("is not bounded by tol at all" if mdp.gamma == 1.0 else
                 f"can be up to tol * gamma / (1 - gamma) = {mdp.gamma / (1 - mdp.gamma):.0f} * tol")
        return (f"the errors are small and gamma = {mdp.gamma:g}: did you stop iterating too early? A sweep "
                f"shrinks the error only by the factor gamma, and once a sweep changes no value by more than "
                f"tol, the error left {bound}")
    return ""


def _transposed_value(mdp: FiniteMDP, policy: np.ndarray) -> np.ndarray | None:
    """The value a reader gets by reading P as P[s', a, s] (solved directly), when it exists."""
    S = mdp.n_states
    P_pi = mdp.P[np.arange(S), policy, :].T  # the transposed chain
    R_pi = mdp.R[np.arange(S), policy]
    live = ~mdp.terminal
    A = np.eye(int(live.sum())) - mdp.gamma * P_pi[np.ix_(live, live)]
    if np.linalg.cond(A) > 1e12:
        return None
    V = np.zeros(S)
    V[live] = np.linalg.solve(A, R_pi[live])
    return V


# --------------------------------------------------------------------------- the checkers


def check_policy_evaluation(fn: Callable) -> CheckResult:
    """Check ``fn(mdp, policy) -> V``: the value of a deterministic policy, shape ``(S,)``.

    ``policy[s]`` is the action taken in state ``s``. The reference is
    :func:`rl2llm.dp.evaluate_policy_exact`. The cases include a world with no
    terminal state, terminal states with ``gamma = 1`` (the full linear system
    is singular there: terminal states must be set to 0 and left out), a
    discount of 0.999 (too close to 1 for a loose stopping rule) and a discount
    of 0.
    """
    checker = "check_policy_evaluation"
    _check_callable(fn, checker, 2, "evaluate_policy(mdp, policy)")
    results = []
    for case in _evaluation_cases():
        mdp, policy = case.mdp, case.policy
        exact = evaluate_policy_exact(mdp, policy)
        answer, error = _call(fn, (mdp, policy))
        if error:
            hint = ""
            if "LinAlg" in error or "ingular" in error:
                hint = ("with gamma = 1 the full system (I - P_pi) V = R_pi is singular, because a terminal state "
                        "loops on itself; set V = 0 in terminal states and solve for the others only")
            results.append(CaseResult(case.name, False, error, hint))
            continue
        V, problem = _as_vector(answer, "V", mdp.n_states)
        if problem:
            results.append(CaseResult(case.name, False, problem))
            continue
        message = _compare_values(V, exact, mdp, "the exact solution")
        if not message:
            results.append(CaseResult(case.name, True))
            continue
        transposed = _transposed_value(mdp, policy)
        extra = [] if transposed is None else [(transposed, "these are the values of the world with P read as "
                                                "P[s2, a, s]; P[s, a, s2] is the probability of moving from s to s2")]
        results.append(CaseResult(case.name, False, message, _value_hint(V, exact, mdp, extra)))
    return CheckResult(checker, tuple(results))


def check_value_iteration(fn: Callable) -> CheckResult:
    """Check ``fn(mdp) -> (V, policy)``: optimal values, shape ``(S,)``, and an optimal policy, ``(S,)`` actions.

    V must be within ``1e-6`` of the optimal values (so the stopping rule has
    to account for the discount: see Lecture 1, gotcha 3), and following
    ``policy`` must be worth the optimal value in every state (any optimal
    action will do when several tie). The reference is
    :func:`rl2llm.dp.policy_iteration`.
    """
    checker = "check_value_iteration"
    _check_callable(fn, checker, 1, "value_iteration(mdp)")
    results = []
    for case in _optimisation_cases():
        mdp = case.mdp
        S, A = mdp.n_states, mdp.n_actions
        best = policy_iteration(mdp).V
        answer, error = _call(fn, (mdp,))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            results.append(CaseResult(case.name, False, f"returned {describe(answer)}; expected a pair: return V, policy"))
            continue
        V, problem = _as_vector(answer[0], "V", S)
        if problem:
            results.append(CaseResult(case.name, False, problem))
            continue
        policy, problem = _as_vector(answer[1], "policy", S)
        if problem:
            results.append(CaseResult(case.name, False, problem))
            continue
        outside = (policy != np.round(policy)) | (policy < 0) | (policy >= A)
        if outside.any():
            s = int(np.argmax(outside))
            results.append(CaseResult(case.name, False, f"policy[{s}] = {policy[s]:g} is not an action; "
                                                        f"actions are the integers 0 .. {A - 1}"))
            continue
        policy = policy.astype(int)
        message = _compare_values(V, best, mdp, "the optimal values")
        if message:
            results.append(CaseResult(case.name, False, message, _value_hint(V, best, mdp, [])))
            continue
        worth = evaluate_policy_exact(mdp, policy)
        loses = ~_close(worth, best)
        if loses.any():
            s = int(np.argmax(np.where(loses, best - worth, -np.inf)))
            Q = mdp.R + mdp.gamma * mdp.P @ best
            names = ACTION_NAMES if A == 4 and mdp.cells is not None else None
            label = (lambda a: f"{a} ({names[a]})") if names else str
            message = (f"the policy is not optimal in {_state(mdp, s)}: following it from there is worth "
                       f"{worth[s]:.6g}, the best possible is {best[s]:.6g} "
                       f"(your action {label(policy[s])}, an optimal action is {label(int(np.argmax(Q[s])))})")
            hint = ("your values are right, so take in each state the action with the largest "
                    "R[s, a] + gamma * sum over s2 of P[s, a, s2] V[s2]")
            results.append(CaseResult(case.name, False, message, hint))
            continue
        results.append(CaseResult(case.name, True))
    return CheckResult(checker, tuple(results))


# =========================================================================== Lecture 3: TD targets
#
# Lecture 3 (Value functions and Q-learning) asks for
# ``td_target(method, reward, q_next, next_action, terminated, gamma, epsilon) -> float``,
# the target of SARSA, expected SARSA or Q-learning, checked by :func:`check_td_target`
# against rl2llm.td's own implementation.

#: The call the TD-target exercise makes.
_TD_CALL = "td_target(method, reward, q_next, next_action, terminated, gamma, epsilon)"


@dataclass(frozen=True)
class _TDCase:
    name: str
    method: str
    reward: float
    q_next: tuple[float, ...]
    next_action: int
    terminated: bool
    gamma: float
    epsilon: float


def _td_cases() -> list[_TDCase]:
    tie = (2.0, -1.0, 2.0, 0.5)
    return [
        _TDCase("Q-learning, an ordinary step", "q_learning", 1.0, (0.5, 2.0, -1.0), 0, False, 0.9, 0.1),
        _TDCase("Q-learning, every next value negative", "q_learning", -1.0, (-3.0, -0.5, -2.0), 0, False, 0.9, 0.1),
        _TDCase("SARSA, the next action is not the greedy one", "sarsa", 1.0, (0.5, 2.0, -1.0), 2, False, 0.9, 0.1),
        _TDCase("SARSA, the next action is the greedy one", "sarsa", 0.0, (0.5, 2.0, -1.0), 1, False, 0.5, 0.1),
        _TDCase("expected SARSA, one greedy action, epsilon = 0.1", "expected_sarsa", 1.0, (0.5, 2.0, -1.0), 0,
                False, 0.9, 0.1),
        _TDCase("expected SARSA, a tie between actions 0 and 2, epsilon = 0.2", "expected_sarsa", 0.0, tie, 1,
                False, 1.0, 0.2),
        _TDCase("expected SARSA, epsilon = 0 (greedy: the same as Q-learning)", "expected_sarsa", 1.0,
                (0.5, 2.0, -1.0), 0, False, 0.9, 0.0),
        _TDCase("expected SARSA, epsilon = 1 (uniformly random)", "expected_sarsa", 1.0, (0.5, 2.0, -1.0), 0,
                False, 0.9, 1.0),
        _TDCase("Q-learning, the next state is terminal", "q_learning", 1.0, (0.5, 2.0, -1.0), 0, True, 0.9, 0.1),
        _TDCase("SARSA, the next state is terminal", "sarsa", -1.0, (0.5, 2.0, -1.0), 1, True, 0.9, 0.1),
        _TDCase("expected SARSA, the next state is terminal", "expected_sarsa", 2.0, (0.5, 2.0, -1.0), 0, True,
                0.9, 0.1),
        _TDCase("Q-learning, gamma = 0 (only the reward counts)", "q_learning", 0.5, (0.5, 2.0, -1.0), 0, False,
                0.0, 0.1),
        _TDCase("SARSA, gamma = 1", "sarsa", -1.0, (4.0, 3.0), 1, False, 1.0, 0.1),
    ]


def _td_reference(case: _TDCase) -> float:
    """The package's own target (rl2llm.td), for one case."""
    from .td import _next_value  # imported here: rl2llm.td is not needed by Lecture 1's checkers

    if case.terminated:
        return case.reward
    Q = np.array([case.q_next], dtype=float)
    value = _next_value(case.method, Q, Q, 0, case.next_action, case.epsilon, list(range(Q.shape[1])))
    return case.reward + case.gamma * float(value)


def _td_alternatives(case: _TDCase) -> list[tuple[float, str]]:
    """Targets that the classic mistakes produce, each with the hint that explains it."""
    q = np.array(case.q_next, dtype=float)
    r, g, eps, A = case.reward, case.gamma, case.epsilon, len(q)
    greedy = np.flatnonzero(q == q.max())
    each_tied_in_full = eps / A + (1 - eps) * (q == q.max())
    all_but_greedy = np.where(np.arange(A) == greedy[0], 1 - eps, eps / max(A - 1, 1))
    explained = []
    if case.terminated:
        explained.append((r + g * q.max(), "the next state is terminal: nothing follows it, so the target is just "
                                            "the reward (do not add gamma times any value)"))
        explained.append((r + g * q[case.next_action], "the next state is terminal: nothing follows it, so the "
                                                       "target is just the reward"))
        policy = eps / A + (1 - eps) * (q == q.max()) / len(greedy)  # the epsilon-greedy probabilities
        explained.append((r + g * policy @ q, "the next state is terminal: nothing follows it, so the target is "
                                              "just the reward (no expected value of the next state is added)"))
    if case.method == "sarsa":
        explained.append((r + g * q.max(), "SARSA bootstraps from the action the agent actually takes next, "
                                           "q_next[next_action], not from the best one (that is Q-learning)"))
    if case.method == "q_learning":
        explained.append((r + g * q[case.next_action], "Q-learning bootstraps from the best next action, "
                                                       "max(q_next), whatever the agent does next (that is SARSA)"))
    if case.method == "expected_sarsa":
        explained.append((r + g * q.max(), "expected SARSA averages over the epsilon-greedy policy: each action "
                                           "has probability epsilon / A, and the greedy ones share 1 - epsilon more"))
        explained.append((r + g * q.mean(), "expected SARSA weights the actions by the epsilon-greedy "
                                            "probabilities, not equally (unless epsilon = 1)"))
        if len(greedy) > 1:
            explained.append((r + g * each_tied_in_full @ q, "with a tie, the tied greedy actions *share* 1 - "
                                                             "epsilon (the probabilities must add up to 1)"))
        explained.append((r + g * all_but_greedy @ q, "exploration picks uniformly among *all* A actions, the greedy "
                                                      "one included: each gets epsilon / A"))
    explained.append((g * (r + g * q.max()), "only what follows is discounted: the target is "
                                             "reward + gamma * (value of the next state)"))
    return explained


def check_td_target(fn: Callable) -> CheckResult:
    """Check ``fn(method, reward, q_next, next_action, terminated, gamma, epsilon) -> float``.

    ``method`` is ``"sarsa"``, ``"expected_sarsa"`` or ``"q_learning"``;
    ``q_next`` the action values of the next state (a 1-D array);
    ``next_action`` the action the agent will take there; ``terminated``
    whether the episode ended (then nothing follows). The answer must be the
    target ``reward + gamma * (value of the next state)`` that the method
    moves ``Q(s, a)`` towards, within ``1e-6``, on thirteen cases: each method,
    terminal next states, a tie between greedy actions, ``gamma`` of 0 and 1,
    ``epsilon`` of 0 and 1. The reference is :func:`rl2llm.td.td_control`'s own.
    """
    checker = "check_td_target"
    _check_callable(fn, checker, 7, _TD_CALL)
    results = []
    for case in _td_cases():
        args = (case.method, case.reward, np.array(case.q_next), case.next_action, case.terminated, case.gamma,
                case.epsilon)
        expected = _td_reference(case)
        answer, error = _call(fn, args)
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        if answer is None:
            results.append(CaseResult(case.name, False, "returned None instead of the target; did you forget the "
                                                        "return statement?"))
            continue
        try:
            value = float(np.asarray(answer, dtype=float).reshape(()))
        except (TypeError, ValueError):
            results.append(CaseResult(case.name, False, f"returned {describe(answer)}; the target is one number"))
            continue
        if not np.isfinite(value):
            results.append(CaseResult(case.name, False, f"returned {value}; the target must be a finite number"))
            continue
        if abs(value - expected) <= ATOL + RTOL * abs(expected):
            results.append(CaseResult(case.name, True))
            continue
        message = f"the target is {value:.6g}, expected {expected:.6g} (q_next = {list(case.q_next)}"
        message += f", next_action = {case.next_action}" if case.method == "sarsa" else ""
        message += f", reward = {case.reward:g}, gamma = {case.gamma:g}"
        message += f", epsilon = {case.epsilon:g})" if case.method == "expected_sarsa" else ")"
        hint = next((why for alternative, why in _td_alternatives(case) if abs(value - alternative) < 1e-9), "")
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# =========================================================================== Lecture 2: reward-to-go
#
# Lecture 2 (Policy gradients from scratch) asks for ``reward_to_go(rewards, dones, gamma) -> G``,
# the discounted reward still to come from every step of a stream of episodes, checked by
# :func:`check_reward_to_go` against rl2llm.rollouts.reward_to_go.


@dataclass(frozen=True)
class _StreamCase:
    name: str
    rewards: np.ndarray
    dones: np.ndarray
    gamma: float


def _reward_to_go_cases() -> list[_StreamCase]:
    rng = np.random.default_rng(2)
    long = np.ones(500)  # a CartPole episode that lasts the full 500 steps
    long_dones = np.zeros(500, dtype=bool)
    long_dones[-1] = True
    mixed = np.round(rng.normal(size=12), 2)
    mixed_dones = np.zeros(12, dtype=bool)
    mixed_dones[[3, 4, 11]] = True  # episodes of 4, 1 and 7 steps
    return [
        _StreamCase("one episode of three steps, gamma = 1", np.array([1.0, 1.0, 1.0]),
                    np.array([False, False, True]), 1.0),
        _StreamCase("one episode, rewards 0, 0, 1 at the end, gamma = 0.9", np.array([0.0, 0.0, 1.0]),
                    np.array([False, False, True]), 0.9),
        _StreamCase("two episodes back to back, gamma = 0.5", np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
                    np.array([False, True, False, False, True]), 0.5),
        _StreamCase("three episodes (4, 1 and 7 steps), negative rewards, gamma = 0.99", mixed, mixed_dones, 0.99),
        _StreamCase("gamma = 0 (only the step's own reward counts)", np.array([3.0, -1.0, 2.0, 5.0]),
                    np.array([False, True, False, True]), 0.0),
        _StreamCase("a stream that stops mid-episode (the last step ends nothing), gamma = 0.9",
                    np.array([1.0, 1.0, 2.0, 2.0]), np.array([False, True, False, False]), 0.9),
        _StreamCase("a full CartPole episode of 500 steps, gamma = 0.99", long, long_dones, 0.99),
    ]


def _reference_reward_to_go(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    from .rollouts import reward_to_go  # here, not at the top: Lecture 1's checkers do not need it

    return reward_to_go(rewards, dones, gamma)


def _reward_to_go_mistakes(case: _StreamCase) -> list[tuple[np.ndarray, str]]:
    """What the classic mistakes produce on ``case``, with the hint for each."""
    r, d, g = case.rewards, case.dones, case.gamma
    right = _reference_reward_to_go(r, d, g)
    no_reset = _reference_reward_to_go(r, np.zeros_like(d), g)
    starts = np.concatenate([[0], np.flatnonzero(d[:-1]) + 1])  # where each episode begins
    whole = np.concatenate([np.full(b - a, right[a]) for a, b in zip(starts, [*starts[1:], len(r)])])
    forward = np.zeros_like(r)
    running = 0.0
    for t in range(len(r)):  # the discounted sum of the rewards so far, restarted at episode starts
        running = r[t] + g * running
        forward[t] = running
        if d[t]:
            running = 0.0
    late_reset = np.zeros_like(r)  # the reset applied one step late: the done flag read at t + 1
    running = 0.0
    for t in range(len(r) - 1, -1, -1):
        after_done = t + 1 < len(r) and d[t + 1]
        running = r[t] + (0.0 if after_done else g * running)
        late_reset[t] = running
    return [
        (no_reset, "the reward-to-go runs on across episode ends: a step is credited with the rewards of the "
                   "next episode. Restart the sum (G = 0) after every step where dones is True"),
        (right - r, "the step's own reward is missing: G_t starts with r_t (the action at t earns it)"),
        (g * right, "your values are the right ones times gamma: the reward of step t itself is not "
                    "discounted, only the ones after it"),
        (whole, "every step of an episode got the whole episode's return: that is the estimate before the "
                "causality argument; the reward-to-go of step t counts only rewards from t on"),
        (forward, "you summed the rewards *before* step t (a forward running sum); the reward-to-go sums "
                  "those from step t to the end of its episode: loop backwards"),
        (late_reset, "the reset is one step off: the sum must restart after the step whose done is True, so "
                     "that step's G is its own reward and the next step starts a new episode"),
    ]


def _step_label(case: _StreamCase, t: int) -> str:
    episode = int(case.dones[:t].sum())
    start = int(np.flatnonzero(case.dones[:t])[-1]) + 1 if episode else 0
    return f"step {t} (episode {episode}, its step {t - start})"


def check_reward_to_go(fn: Callable) -> CheckResult:
    """Check ``fn(rewards, dones, gamma) -> G``: the discounted reward-to-go of every step, shape ``(T,)``.

    ``G[t] = rewards[t] + gamma * G[t + 1]``, restarted after every step where
    ``dones`` is True; a stream that stops mid-episode sums up to its last step.
    The reference is :func:`rl2llm.policy_gradient.reward_to_go`. The cases
    include several episodes back to back, an episode of one step, a discount
    of 0, a stream that stops mid-episode and a 500-step episode.
    """
    checker = "check_reward_to_go"
    _check_callable(fn, checker, 3, "reward_to_go(rewards, dones, gamma)")
    results = []
    for case in _reward_to_go_cases():
        right = _reference_reward_to_go(case.rewards, case.dones, case.gamma)
        answer, error = _call(fn, (case.rewards, case.dones, case.gamma))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        G, problem = _as_stream(answer, len(right))
        if problem:
            results.append(CaseResult(case.name, False, problem))
            continue
        wrong = ~_close(G, right)
        if not wrong.any():
            results.append(CaseResult(case.name, True))
            continue
        t = int(np.argmax(wrong))
        count = ("G is wrong at one step, " if wrong.sum() == 1 else
                 f"G is wrong at {wrong.sum()} of {len(right)} steps; the first is ")
        message = (f"{count}{_step_label(case, t)}: yours {G[t]:.6g}, the reward-to-go {right[t]:.6g} "
                   f"(off by {abs(G[t] - right[t]):.3g})")
        hint = next((text for values, text in _reward_to_go_mistakes(case) if _close(G, values).all()), "")
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


def _as_stream(answer, T: int) -> tuple[np.ndarray | None, str]:
    """The reader's ``answer`` as a float vector of length T, or a message saying why it is not one."""
    if answer is None:
        return None, "returned None instead of G; did you forget the return statement?"
    try:
        vector = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return None, f"returned {describe(answer)}; G must be an array of numbers of shape ({T},)"
    if vector.shape != (T,):
        hint = " (a column: flatten it with .ravel())" if vector.shape in ((T, 1), (1, T)) else ""
        return None, f"returned G of shape {vector.shape}{hint}; expected ({T},), one value per step"
    bad = ~np.isfinite(vector)
    if bad.any():
        t = int(np.argmax(bad))
        return None, f"G[{t}] = {vector[t]}: every value must be a finite number"
    return vector, ""


# =========================================================================== Lecture 4: GAE
#
# Lecture 4 (Actor-critic methods) asks for
# ``gae(rewards, values, next_values, terminated, truncated, gamma, lam) -> advantages``
# over a (T,) stream of steps in which episodes end by termination or by truncation,
# checked by :func:`check_gae` against rl2llm.advantages.gae.

_GAE_CALL = "gae(rewards, values, next_values, terminated, truncated, gamma, lam)"


@dataclass(frozen=True)
class _GAECase:
    name: str
    rewards: np.ndarray
    values: np.ndarray
    next_values: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    gamma: float
    lam: float


def _gae_stream(seed: int, ends: dict[int, str], T: int) -> tuple[np.ndarray, ...]:
    """A (T,) stream with episode ends at the given steps ('term' or 'trunc'); values consistent within episodes."""
    rng = np.random.default_rng(seed)
    rewards = np.round(rng.normal(size=T), 2)
    next_values = np.round(rng.normal(1.0, 1.0, size=T), 2)
    values = np.empty(T)
    values[0] = 0.5
    terminated, truncated = np.zeros(T, bool), np.zeros(T, bool)
    for t, kind in ends.items():
        (terminated if kind == "term" else truncated)[t] = True
    for t in range(1, T):  # the next step starts where this one went, unless an episode ended
        values[t] = np.round(rng.normal(1.0, 1.0), 2) if terminated[t - 1] or truncated[t - 1] else next_values[t - 1]
    return rewards, values, next_values, terminated, truncated


def _gae_cases() -> list[_GAECase]:
    cases = []
    specs = [
        ("one episode that terminates, gamma = 0.99, lam = 0.95", 0, {5: "term"}, 6, 0.99, 0.95),
        ("one episode cut by a time limit (truncated)", 1, {5: "trunc"}, 6, 0.99, 0.95),
        ("terminated, truncated, then running when the stream stops, lam = 0.8", 2, {3: "term", 7: "trunc"}, 11, 0.9, 0.8),
        ("truncated, then terminated, lam = 0 (the one-step TD error)", 3,
         {4: "trunc", 8: "term"}, 9, 0.95, 0.0),
        ("terminated, then truncated, lam = 1 (the return minus V)", 4,
         {3: "term", 8: "trunc"}, 9, 0.95, 1.0),
        ("four episodes of one step each, both kinds of end", 5,
         {0: "term", 1: "trunc", 2: "term", 3: "trunc"}, 4, 0.9, 0.9),
        ("gamma = 0 (only the step's own reward counts)", 6, {2: "trunc", 5: "term"}, 6, 0.0, 0.95),
        ("a stream that stops mid-episode, gamma = 1, lam = 0.5", 7, {}, 5, 1.0, 0.5),
    ]
    for name, seed, ends, T, gamma, lam in specs:
        cases.append(_GAECase(name, *_gae_stream(seed, ends, T), gamma, lam))
    return cases


def _reference_gae(case: _GAECase) -> np.ndarray:
    from .advantages import gae  # here, not at the top: earlier lectures' checkers do not need it

    return gae(case.rewards, case.values, case.next_values, case.terminated, case.truncated, case.gamma, case.lam)


def _plain_gae(r, v, nv, bootstrap_stop, recursion_stop, gamma, lam, carry_factor=None) -> np.ndarray:
    """GAE with the two masks given explicitly: where nothing is bootstrapped, and where the recursion stops."""
    carry = gamma * lam if carry_factor is None else carry_factor
    out, running = np.zeros(len(r)), 0.0
    for t in range(len(r) - 1, -1, -1):
        delta = r[t] + (0.0 if bootstrap_stop[t] else gamma * nv[t]) - v[t]
        running = delta + (0.0 if recursion_stop[t] else carry * running)
        out[t] = running
    return out


def _gae_mistakes(case: _GAECase) -> list[tuple[np.ndarray, str]]:
    """What the classic mistakes produce on ``case``, with the hint for each."""
    r, v, nv, term, trunc, g, lam = (case.rewards, case.values, case.next_values, case.terminated,
                                     case.truncated, case.gamma, case.lam)
    ends, never = term | trunc, np.zeros_like(term)
    right = _reference_gae(case)
    shifted = np.append(v[1:], nv[-1])   # V of the next row: the next episode's first state after an end
    return [
        (_plain_gae(r, v, nv, ends, ends, g, lam),
         "a truncated episode was treated as terminated: a time limit is not the end of the task, so the last "
         "step of a truncated episode must bootstrap, delta = r + gamma * next_values[t] - values[t]; only "
         "terminated steps drop the next value"),
        (_plain_gae(r, v, nv, never, ends, g, lam),
         "the step that terminated an episode bootstrapped from next_values: nothing follows a real end, so "
         "there delta = r - values[t] (multiply the next value by 1 - terminated)"),
        (_plain_gae(r, v, nv, term, never, g, lam),
         "the recursion runs on across episode ends: A_t picked up advantages of the next episode. Reset it "
         "(A_{t+1} = 0) after every step where terminated or truncated is True"),
        (_plain_gae(r, v, nv, term, term, g, lam),
         "the recursion stops at terminations but runs on across truncations: after a time limit the next "
         "step belongs to a new episode, so the recursion must stop there too (bootstrapping is not carrying)"),
        (_plain_gae(r, v, shifted, term, ends, g, lam),
         "you used values[t + 1] as the value of the next state: at an episode end that is the first state of "
         "the next episode. Use next_values[t], the value of the state the step really led to"),
        (_plain_gae(r, v, nv, term, ends, g, lam, carry_factor=g),
         "the recursion carries gamma * A_{t+1}, without lam: the carry factor is gamma * lam"),
        (_plain_gae(r, v, nv, term, ends, g, lam, carry_factor=lam),
         "the recursion carries lam * A_{t+1}, without gamma: the carry factor is gamma * lam"),
        (right + v, "you returned the value targets (advantages + values); return the advantages themselves"),
    ]


def _gae_step_label(case: _GAECase, t: int) -> str:
    ends = case.terminated | case.truncated
    episode = int(ends[:t].sum())
    start = int(np.flatnonzero(ends[:t])[-1]) + 1 if episode else 0
    kind = ", its last: terminated" if case.terminated[t] else ", its last: truncated" if case.truncated[t] else ""
    return f"step {t} (episode {episode}, its step {t - start}{kind})"


def check_gae(fn: Callable) -> CheckResult:
    """Check ``fn(rewards, values, next_values, terminated, truncated, gamma, lam) -> advantages``, shape ``(T,)``.

    ``values[t] = V(s_t)``; ``next_values[t] = V(s_{t+1})``, the value of the
    state step ``t`` led to (the episode's real last state when it ended
    there); ``terminated``/``truncated`` (bools) mark the steps where an
    episode ended by itself or was cut by a time limit. The answer must be the
    generalised advantage estimate ``A_t = delta_t + gamma * lam * A_{t+1}``
    with ``delta_t = r_t + gamma * (1 - terminated_t) * next_values[t] -
    values[t]``, the recursion stopping at every episode end, within
    ``1e-6``, on eight streams: terminations and truncations mixed, a stream
    that stops mid-episode, episodes of one step, ``lam`` of 0 and 1,
    ``gamma`` of 0 and 1. The reference is :func:`rl2llm.advantages.gae`.
    The hints recognise the classic mistakes: not bootstrapping at a
    truncation, bootstrapping at a termination, carrying the recursion
    across episode ends, and using the next row's value at an episode end.
    """
    checker = "check_gae"
    _check_callable(fn, checker, 7, _GAE_CALL)
    results = []
    first_error = None   # an error met again is not repeated in full
    for case in _gae_cases():
        right = _reference_gae(case)
        args = (case.rewards, case.values, case.next_values, case.terminated, case.truncated, case.gamma, case.lam)
        answer, error = _call(fn, args)
        if error:
            if error == first_error:
                error = "the same error as in the first case that raised it (shown above)"
            first_error = first_error or error
            results.append(CaseResult(case.name, False, error))
            continue
        A, problem = _as_stream(answer, len(right))
        if problem:
            results.append(CaseResult(case.name, False, problem.replace("instead of G", "instead of the advantages")
                                      .replace("G must be", "the advantages must be")
                                      .replace("returned G of", "returned advantages of")
                                      .replace("G[", "advantages[")))
            continue
        wrong = ~_close(A, right)
        if not wrong.any():
            results.append(CaseResult(case.name, True))
            continue
        t = int(np.argmax(wrong))
        count = ("the advantage is wrong at one step, " if wrong.sum() == 1 else
                 f"the advantages are wrong at {wrong.sum()} of {len(right)} steps; the first is ")
        message = (f"{count}{_gae_step_label(case, t)}: yours {A[t]:.6g}, expected {right[t]:.6g} "
                   f"(off by {abs(A[t] - right[t]):.3g})")
        hint = next((text for values, text in _gae_mistakes(case) if _close(A, values).all()), "")
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# =========================================================================== Lecture 5: conjugate gradient
#
# Lecture 5 (Trust regions and TRPO) asks for ``conjugate_gradient(Avp, b, iters) -> x``, which solves
# ``A x = b`` for a symmetric positive-definite ``A`` known only through products ``Avp(v) = A v``,
# checked by :func:`check_conjugate_gradient` against the exact solution.


@dataclass(frozen=True)
class _SolveCase:
    name: str
    A: np.ndarray
    b: np.ndarray
    iters: int


def _spd(eigenvalues, seed: int) -> np.ndarray:
    """A symmetric positive-definite matrix with the given eigenvalues and random eigenvectors."""
    eigenvalues = np.asarray(eigenvalues, dtype=float)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
    return Q @ np.diag(eigenvalues) @ Q.T


def _conjugate_gradient_cases() -> list[_SolveCase]:
    rng = np.random.default_rng(5)
    return [
        _SolveCase("a 1 x 1 system, 3 x = 6, one iteration", np.array([[3.0]]), np.array([6.0]), 1),
        _SolveCase("a 2 x 2 system, two iterations", np.array([[4.0, 1.0], [1.0, 3.0]]), np.array([1.0, 2.0]), 2),
        _SolveCase("a diagonal 4 x 4 matrix (entries 1 to 8), four iterations", np.diag([1.0, 2.0, 5.0, 8.0]),
                   np.array([1.0, -1.0, 2.0, 0.5]), 4),
        _SolveCase("a random 8 x 8 matrix, condition number 50, eight iterations",
                   _spd(np.geomspace(1, 50, 8), 1), rng.normal(size=8), 8),
        _SolveCase("30 x 30, three distinct eigenvalues (like a damped Fisher), three iterations",
                   _spd([0.1] * 20 + [2.0] * 8 + [9.0] * 2, 2),
                   rng.normal(size=30), 3),
        _SolveCase("b = 0 (the answer is 0: stop before dividing by a zero residual)", _spd([1.0, 2.0, 3.0], 3),
                   np.zeros(3), 3),
    ]


def _cg_reference(A: np.ndarray, b: np.ndarray, iters: int, conjugate: bool = True, sign: float = 1.0,
                  residual_sign: float = -1.0):
    """Conjugate gradient (or, with ``conjugate=False``, steepest descent) from x = 0, in NumPy.

    ``sign`` and ``residual_sign`` reproduce two sign errors: ``x - alpha p``,
    and the residual updated with ``r + alpha A p``.
    """
    x, r = np.zeros_like(b), b.copy()
    p, rr = r.copy(), float(r @ r)
    for _ in range(iters):
        if rr <= 1e-30:
            break
        Ap = A @ p
        alpha = rr / float(p @ Ap)
        x = x + sign * alpha * p
        r = r + residual_sign * alpha * Ap
        new_rr = float(r @ r)
        p = r + (new_rr / rr) * p if conjugate else r.copy()
        rr = new_rr
    return x


def _conjugate_gradient_mistakes(case: _SolveCase) -> list[tuple[np.ndarray, str]]:
    A, b, n = case.A, case.b, case.iters
    return [
        (b, "you returned b unchanged: start from x = 0 with the residual r = b, and move x along each "
            "direction by alpha = (r.r) / (p.A p)"),
        (A @ b, "you returned A b: the task is the opposite, x with A x = b, found by products with A alone"),
        (-np.linalg.solve(A, b), "your x has the wrong sign everywhere: the residual is r = b - A x (so "
                                 "r = b at x = 0), and x moves by +alpha p"),
        (_cg_reference(A, b, n, conjugate=False),
         "your answer is what steepest descent reaches in this many iterations: each new direction must be "
         "the residual plus beta times the previous direction, p = r + (r_new.r_new / r_old.r_old) p, "
         "so that the directions are conjugate"),
        (_cg_reference(A, b, n, residual_sign=1.0),
         "your answer is what conjugate gradient reaches with the residual updated as r + alpha A p: the "
         "residual is b - A x, so when x moves by +alpha p it changes by -alpha A p, r = r - alpha A p"),
        (_cg_reference(A, b, n - 1),
         "your answer is what conjugate gradient reaches in one iteration fewer than allowed: check the "
         "loop runs iters times (range(iters)), with one product per iteration"),
    ]


class _CountingProduct:
    """``v -> A v`` for the reader, counting its calls and refusing vectors of the wrong shape."""

    def __init__(self, A: np.ndarray):
        self.A, self.calls = A, 0

    def __call__(self, v):
        v = np.asarray(v, dtype=float)
        if v.shape != (self.A.shape[0],):
            raise ValueError(f"Avp takes a vector of shape ({self.A.shape[0]},), got shape {v.shape}")
        self.calls += 1
        return self.A @ v


def check_conjugate_gradient(fn: Callable) -> CheckResult:
    """Check ``fn(Avp, b, iters) -> x``: conjugate gradient for ``A x = b``, with ``A`` only as ``Avp(v) = A v``.

    ``A`` is symmetric positive-definite; start from ``x = 0`` and use at
    most ``iters`` iterations, one product each. Every case's ``iters`` is
    enough for conjugate gradient to be exact (up to rounding): the size of
    the matrix, or its number of distinct eigenvalues. The cases include a
    1 x 1 system, a matrix with three distinct eigenvalues solved in three
    iterations (steepest descent is not), and ``b = 0``. The answer counts
    as right within 1e-6 (relative) of ``numpy.linalg.solve``.
    """
    checker = "check_conjugate_gradient"
    _check_callable(fn, checker, 3, "conjugate_gradient(Avp, b, iters)")
    results = []
    for case in _conjugate_gradient_cases():
        right = np.linalg.solve(case.A, case.b)
        product = _CountingProduct(case.A)
        try:
            answer = fn(product, case.b.copy(), case.iters)
            error = ""
        except Exception:   # the reader's bug, reported with where it happened
            answer, error = _call(fn, (_CountingProduct(case.A), case.b.copy(), case.iters))
        if error:
            hint = ("Avp is a function, v -> A v, not the matrix: call Avp(p) wherever you need A p"
                    if "_CountingProduct" in error or "0-dimensional" in error else "")
            results.append(CaseResult(case.name, False, error, hint))
            continue
        x, problem = _as_vector(answer, "x", len(right))
        if problem:
            problem = problem.replace("one value per state", "one entry per unknown")
            hint = ("with b = 0 the first residual is 0, and alpha = (r.r) / (p.A p) is 0 / 0: stop as soon "
                    "as r.r is (near) zero" if not case.b.any() and "finite" in problem else "")
            results.append(CaseResult(case.name, False, problem, hint))
            continue
        scale = max(1.0, float(np.abs(right).max()))
        off = np.abs(x - right) > 1e-6 * scale
        if product.calls > case.iters + 1 and product.calls >= len(right):
            results.append(CaseResult(case.name, False,
                                      f"called Avp {product.calls} times in {case.iters} iterations",
                                      "you built the matrix, one product per column: conjugate gradient never "
                                      "needs it, only one product A p per iteration; in TRPO the matrix has "
                                      "one row and one column per network parameter"))
            continue
        if product.calls > case.iters + 1:
            results.append(CaseResult(case.name, False,
                                      f"called Avp {product.calls} times in {case.iters} iterations",
                                      "conjugate gradient needs one product A p per iteration: keep the "
                                      "residual up to date with r = r - alpha A p instead of recomputing b - A x; "
                                      "in TRPO every product costs a pass through the network"))
            continue
        if not off.any():
            results.append(CaseResult(case.name, True))
            continue
        i = int(np.argmax(off))
        message = (f"x is wrong in {off.sum()} of {len(right)} entries; the first is x[{i}]: yours {x[i]:.6g}, "
                   f"the solution {right[i]:.6g}")
        hint = next((text for values, text in _conjugate_gradient_mistakes(case)
                     if np.allclose(x, values, rtol=1e-6, atol=1e-9)), "")
        if not hint and np.linalg.norm(case.A @ x - case.b) < np.linalg.norm(case.b):
            hint = ("x is closer to the solution than 0 but not there in this many iterations: check "
                    "beta = (r_new.r_new) / (r_old.r_old), computed before r_old is overwritten, and "
                    "alpha = (r.r) / (p.A p)")
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# --------------------------------------------------------------------------- Lecture 6: PPO's clipped loss


@dataclass(frozen=True)
class _PPOLossCase:
    name: str
    new: np.ndarray          # log pi_new(a), float64, any shape
    old: np.ndarray          # log pi_old(a)
    advantages: np.ndarray
    clip: float


def _ppo_loss_cases() -> list[_PPOLossCase]:
    rng = np.random.default_rng(6)
    half = np.log(0.5)

    def single(ratio: float, advantage: float, clip: float = 0.2) -> tuple:
        return np.array([half + np.log(ratio)]), np.array([half]), np.array([advantage]), clip

    many_old = np.log(rng.uniform(0.05, 0.95, size=12))
    many_new = np.minimum(many_old + rng.normal(0, 0.3, size=12), -1e-3)
    tokens_old = np.log(rng.uniform(0.05, 0.95, size=(3, 4)))
    tokens_new = np.minimum(tokens_old + rng.normal(0, 0.25, size=(3, 4)), -1e-3)
    return [
        _PPOLossCase("one action, ratio 1.1, advantage +1 (inside the band)", *single(1.1, 1.0)),
        _PPOLossCase("one action, ratio 1.3, advantage +2 (a good action already likelier than 1 + clip)",
                     *single(1.3, 2.0)),
        _PPOLossCase("one action, ratio 0.7, advantage -1 (a bad action already rarer than 1 - clip)",
                     *single(0.7, -1.0)),
        _PPOLossCase("one action, ratio 0.6, advantage +1 (a good action that became rarer: pull it back)",
                     *single(0.6, 1.0)),
        _PPOLossCase("one action, ratio 1.5, advantage -0.5 (a bad action that became likelier)",
                     *single(1.5, -0.5)),
        _PPOLossCase("12 actions, random ratios and advantages, clip 0.1", many_new, many_old,
                     rng.normal(size=12), 0.1),
        _PPOLossCase("3 answers x 4 tokens (a 2-D batch), clip 0.3", tokens_new, tokens_old,
                     rng.normal(size=(3, 4)), 0.3),
    ]


def _ppo_loss_reference(new, old, adv, clip, variant: str = "right"):
    """The loss (minus the clipped objective) and known mistakes, in torch (float64)."""
    import torch

    ratio = torch.exp(new - old)
    if variant == "inverted":
        ratio = torch.exp(old - new)
    if variant == "log ratio":
        ratio = new - old
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip)
    if variant == "max":
        objective = torch.max(ratio * adv, clipped * adv)
    elif variant == "clipped only":
        objective = clipped * adv
    elif variant == "unclipped":
        objective = ratio * adv
    elif variant == "clip the advantage":
        objective = torch.min(ratio * adv, ratio * torch.clamp(adv, -clip, clip))
    else:
        objective = torch.min(ratio * adv, clipped * adv)
    if variant == "sum":
        return -objective.sum()
    if variant == "objective":
        return objective.mean()
    return -objective.mean()


_PPO_LOSS_MISTAKES = {
    "objective": "you returned the objective, not the loss: an optimiser minimises, so return minus the mean "
                 "of min(r A, clip(r) A)",
    "max": "you took the larger of the clipped and the unclipped terms: PPO takes the smaller (min), a "
           "pessimistic bound that never credits a move beyond the band",
    "clipped only": "you used the clipped term alone: then a good action that became rarer (r < 1 - clip) gets "
                    "no gradient back; the min with the unclipped term keeps that pull",
    "unclipped": "you left the clip out: that is the plain importance-weighted surrogate, which credits any "
                 "move, however far; take min(r A, clip(r, 1 - clip, 1 + clip) A)",
    "clip the advantage": "you clipped the advantage: the clip applies to the ratio r, clip(r, 1 - clip, 1 + clip)",
    "inverted": "your ratio is upside down: r = pi_new / pi_old = exp(log_probs_new - log_probs_old)",
    "log ratio": "you used the difference of the log-probabilities as the ratio: r = exp(log_probs_new - "
                 "log_probs_old)",
    "sum": "you summed over the actions: PPO averages (the mean), so the loss does not grow with the batch",
}


def check_ppo_loss(fn: Callable) -> CheckResult:
    """Check ``fn(log_probs_new, log_probs_old, advantages, clip) -> loss``: PPO's clipped policy loss.

    The arguments are float64 torch tensors of the same shape (one entry per
    action, or per token: some cases are 2-D); ``log_probs_new`` requires a
    gradient, ``log_probs_old`` and ``advantages`` are constants, ``clip`` a
    float. The loss is to be *minimised*: minus the mean over the entries of
    ``min(r A, clip(r, 1 - clip, 1 + clip) A)`` with ``r = exp(log_probs_new
    - log_probs_old)``. The checker compares the loss and its gradient with
    respect to ``log_probs_new`` with the reference (within 1e-6), and checks
    that no gradient reaches ``log_probs_old``.
    """
    import torch

    checker = "check_ppo_loss"
    _check_callable(fn, checker, 4, "ppo_loss(log_probs_new, log_probs_old, advantages, clip)")
    results = []
    for case in _ppo_loss_cases():
        new = torch.tensor(case.new, dtype=torch.float64, requires_grad=True)
        old = torch.tensor(case.old, dtype=torch.float64, requires_grad=True)   # to catch a gradient into it
        adv = torch.tensor(case.advantages, dtype=torch.float64)
        try:
            answer = fn(new, old, adv, case.clip)
            error = ""
        except Exception:   # the reader's bug: run it again on copies to say where
            answer, error = _call(fn, (new.detach().clone().requires_grad_(), old.detach().clone(), adv.clone(),
                                       case.clip))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        if not isinstance(answer, torch.Tensor) or answer.numel() != 1:
            what = f"a tensor of shape {tuple(answer.shape)}" if isinstance(answer, torch.Tensor) else describe(answer)
            results.append(CaseResult(case.name, False, f"returned {what}; expected a scalar torch tensor (the loss)",
                                      "average over the entries: .mean()" if isinstance(answer, torch.Tensor)
                                      else "return the loss as a tensor, so that .backward() can follow it"))
            continue
        if not answer.requires_grad:
            results.append(CaseResult(case.name, False, "the loss has no gradient",
                                      "compute it from log_probs_new with torch operations (no .item(), .numpy() "
                                      "or torch.no_grad() on the way)"))
            continue
        answer.backward()
        loss = float(answer.detach())
        grad = new.grad.detach().numpy().copy() if new.grad is not None else np.zeros_like(case.new)
        ref_new = torch.tensor(case.new, dtype=torch.float64, requires_grad=True)
        ref = _ppo_loss_reference(ref_new, torch.tensor(case.old), adv, case.clip)
        ref.backward()
        ref_loss, ref_grad = float(ref.detach()), ref_new.grad.numpy()
        if old.grad is not None and np.abs(old.grad.numpy()).max() > 0:
            results.append(CaseResult(case.name, False, "a gradient reaches log_probs_old",
                                      "the old policy's log-probabilities are constants (the policy that "
                                      "collected the batch): use log_probs_old.detach()"))
            continue
        right_loss = abs(loss - ref_loss) <= 1e-6 * max(1.0, abs(ref_loss))
        right_grad = np.allclose(grad, ref_grad, rtol=1e-6, atol=1e-9)
        if right_loss and right_grad:
            results.append(CaseResult(case.name, True))
            continue
        if not right_loss:
            message = f"the loss is {loss:.6g}; the reference gives {ref_loss:.6g}"
        else:
            i = np.unravel_index(int(np.argmax(np.abs(grad - ref_grad))), grad.shape)
            where = i[0] if len(i) == 1 else i
            message = (f"the loss is right ({loss:.6g}) but its gradient is not: with respect to log_probs_new"
                       f"[{where}], yours {grad[i]:.6g}, the reference {ref_grad[i]:.6g}")
        hint = ""
        for variant, text in _PPO_LOSS_MISTAKES.items():
            other_new = torch.tensor(case.new, dtype=torch.float64, requires_grad=True)
            other = _ppo_loss_reference(other_new, torch.tensor(case.old), adv, case.clip, variant)
            other.backward()
            if abs(float(other.detach()) - loss) <= 1e-6 * max(1.0, abs(loss)) and \
                    np.allclose(other_new.grad.numpy(), grad, rtol=1e-6, atol=1e-9):
                hint = text
                break
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# =========================================================================== Lecture 11: BPE encoding
#
# Lecture 11 (Tokenization) asks for ``encode_piece(piece, merges) -> ids``: the token ids of
# one pre-tokenized piece (bytes) under a list of learned merges (the i-th makes id 256 + i),
# checked by :func:`check_bpe_encode` against rl2llm.tokenizer.BPETokenizer.

_BPE_CALL = "encode_piece(piece, merges)"


@dataclass(frozen=True)
class _BPECase:
    name: str
    piece: bytes
    merges: tuple[tuple[int, int], ...]


def _bpe_cases() -> list[_BPECase]:
    from .corpora import corpus
    from .tokenizer import train_bpe

    a, b, c, d = b"abcd"
    trained = train_bpe(corpus("stories", n_chars=20_000, seed=3), 400)
    assert trained.merge_ids == list(range(256, 256 + len(trained.merges)))
    return [
        _BPECase("no merges: the piece's bytes", b"hello", ()),
        _BPECase("a merge that occurs twice: 'banana' with (a, n)", b"banana", ((97, 110),)),
        _BPECase("merges that build on earlier merges: 'lowest'", b"lowest",
                 ((108, 111), (256, 119), (101, 115), (258, 116))),
        _BPECase("overlapping occurrences: 'aaa' with (a, a)", b"aaa", ((97, 97),)),
        _BPECase("overlapping occurrences: 'aaaaa' with (a, a), then (aa, aa)", b"aaaaa", ((97, 97), (256, 256))),
        _BPECase("the earliest merge first, wherever it is: 'abc' with (b, c) before (a, b)", b"abc",
                 ((b, c), (a, b))),
        _BPECase("BPE is not the longest match: 'abcd' with (c, d), (a, b), (ab, c)", b"abcd",
                 ((c, d), (a, b), (257, c))),
        _BPECase("merges that do not apply", b"xyz", ((97, 98), (256, 99))),
        _BPECase("an empty piece", b"", ((97, 98),)),
        _BPECase("a two-byte character: 'é' twice", "éé".encode(), ((195, 169), (256, 256))),
        _BPECase(f"a word under {len(trained.merges)} merges learned from stories", b" everyone",
                 tuple(trained.merges)),
        _BPECase(f"a sentence-long piece under the same {len(trained.merges)} merges",
                 b"Onceuponatimetherewasalittlecatnamedlily", tuple(trained.merges)),
    ]


def _bpe_reference(piece: bytes, merges) -> list[int]:
    from .tokenizer import BPETokenizer

    vocab = [bytes([i]) for i in range(256)]
    for x, y in merges:
        vocab.append(vocab[x] + vocab[y])
    tokenizer = BPETokenizer(merges=list(merges), merge_ids=list(range(256, 256 + len(merges))), vocab=vocab,
                             special_tokens={})
    return tokenizer._encode_piece(piece)


def _bpe_mistakes(piece: bytes, merges) -> list[tuple[list[int], str]]:
    """What the classic mistakes produce, with the hint for each."""
    from .tokenizer import merge

    new_ids = list(range(256, 256 + len(merges)))
    vocab = [bytes([i]) for i in range(256)]
    for x, y in merges:
        vocab.append(vocab[x] + vocab[y])

    def first_only(ids, pair, new):
        for i in range(len(ids) - 1):
            if (ids[i], ids[i + 1]) == pair:
                return ids[:i] + [new] + ids[i + 2:]
        return ids

    def right_to_left(ids, pair, new):
        out = merge(ids[::-1], pair[::-1], new)
        return out[::-1]

    def apply(order, step):
        ids = list(piece)
        for k in order:
            ids = step(ids, merges[k], new_ids[k])
        return ids

    def by_position():   # merge the leftmost pair that is any learned merge, whatever its rank
        ids, rank = list(piece), {pair: k for k, pair in enumerate(merges)}
        while True:
            where = next((i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) in rank), None)
            if where is None:
                return ids
            k = rank[(ids[where], ids[where + 1])]
            ids = ids[:where] + [new_ids[k]] + ids[where + 2:]

    def longest_match():
        index = {}
        for i, token in enumerate(vocab):
            index.setdefault(token, i)
        ids, at = [], 0
        while at < len(piece):
            end = max(e for e in range(at + 1, len(piece) + 1) if piece[at:e] in index)
            ids.append(index[piece[at:end]])
            at = end
        return ids

    def one_merge():
        rank = {pair: k for k, pair in enumerate(merges)}
        ids = list(piece)
        pairs = [p for p in zip(ids, ids[1:]) if p in rank]
        if not pairs:
            return ids
        best = min(pairs, key=rank.get)
        return merge(ids, best, new_ids[rank[best]])

    order = range(len(merges))
    return [
        (apply(order, first_only), "each merge replaced only its first occurrence: replace every occurrence, "
                                   "left to right, before moving to the next merge"),
        (apply(order, right_to_left), "overlapping occurrences were merged from the right: 'aaa' with (a, a) is "
                                      "[aa, a], scanning left to right"),
        (apply(reversed(order), merge), "the merges were applied latest first: apply them in the order they were "
                                        "learned (merge 0 first), since later merges are built from earlier ones"),
        (by_position(), "you merged the leftmost learned pair, whatever its rank: merge the pair learned earliest "
                        "(the lowest index in merges) first, wherever it is"),
        (longest_match(), "this is the longest match against the vocabulary (WordPiece's way), not BPE: replay the "
                          "merges, earliest first"),
        (one_merge(), "you stopped after the first merge that applied: keep merging until no learned pair is left"),
    ]


def _bpe_text(ids, merges) -> str:
    """Ids as the text of their tokens, e.g. ['lo', 'w'] (for messages)."""
    vocab = [bytes([i]) for i in range(256)]
    for x, y in merges:
        vocab.append(vocab[x] + vocab[y])
    return "[" + ", ".join(repr(vocab[i].decode("utf-8", "replace")) if 0 <= i < len(vocab) else "?"
                           for i in ids) + "]"


def check_bpe_encode(fn: Callable) -> CheckResult:
    """Check ``fn(piece, merges) -> ids``: the BPE encoding of one pre-tokenized piece.

    ``piece`` is bytes; ``merges`` a list of pairs of ids, the ``i``-th of which
    makes token ``256 + i`` (ids ``0 .. 255`` are the bytes themselves). The
    answer is a list of ints: the merges replayed on the piece's bytes, the one
    learned earliest first, every occurrence left to right, until none
    applies. The reference is :class:`rl2llm.tokenizer.BPETokenizer`. The cases
    include no merges, overlapping occurrences ("aaa"), a merge order that
    differs from the order in the text, a case where the longest match differs
    from BPE, an empty piece, a two-byte character and merges learned from the
    book's stories.
    """
    checker = "check_bpe_encode"
    _check_callable(fn, checker, 2, _BPE_CALL)
    results = []
    for case in _bpe_cases():
        right = _bpe_reference(case.piece, case.merges)
        answer, error = _call(fn, (case.piece, [tuple(m) for m in case.merges]))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        if answer is None:
            results.append(CaseResult(case.name, False, "returned None instead of the ids; did you forget the "
                                                         "return statement?"))
            continue
        if isinstance(answer, (bytes, str)) or not hasattr(answer, "__iter__"):
            results.append(CaseResult(case.name, False, f"returned {describe(answer)}; expected a list of token "
                                                         "ids (ints)"))
            continue
        ids = list(answer)
        bad = [x for x in ids if isinstance(x, bool) or not isinstance(x, (int, np.integer))]
        if bad:
            results.append(CaseResult(case.name, False, f"returned a list holding {describe(bad[0])}; every "
                                                         "entry must be a token id (an int)"))
            continue
        ids = [int(x) for x in ids]
        if ids == right:
            results.append(CaseResult(case.name, True))
            continue
        k = next((i for i, (x, y) in enumerate(zip(ids, right)) if x != y), min(len(ids), len(right)))
        message = (f"yours {ids} = {_bpe_text(ids, case.merges)}, expected {right} = "
                   f"{_bpe_text(right, case.merges)} (they first differ at position {k})")
        hint = next((text for values, text in _bpe_mistakes(case.piece, case.merges) if values == ids), "")
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# =========================================================================== Lecture 9: attention
#
# Lecture 9 (Attention) asks for ``attention(q, k, v, causal) -> out``: scaled dot-product attention
# on float64 tensors q (H, Tq, d), k (H, Tk, d), v (H, Tk, dv), the queries being the last Tq of
# the Tk positions when causal; checked by :func:`check_attention` against PyTorch's softmax.

_ATTENTION_CALL = "attention(q, k, v, causal)"


@dataclass(frozen=True)
class _AttentionCase:
    name: str
    shape: tuple[int, int, int, int, int]   # H, Tq, Tk, d, dv
    causal: bool
    seed: int
    spread: float = 1.0                     # scale of the queries and keys


def _attention_cases() -> list[_AttentionCase]:
    return [
        _AttentionCase("one token, one head (the output is its own value)", (1, 1, 1, 4, 4), False, 0),
        _AttentionCase("one head, four tokens, no mask", (1, 4, 4, 8, 8), False, 1),
        _AttentionCase("one head, four tokens, causal", (1, 4, 4, 8, 8), True, 2),
        _AttentionCase("three heads, six tokens, causal, values of size 5", (3, 6, 6, 8, 5), True, 3),
        _AttentionCase("two heads, head size 1", (2, 5, 5, 1, 3), False, 4),
        _AttentionCase("two queries, the last of six positions (decoding with a cache), causal",
                       (2, 2, 6, 8, 8), True, 5),
        _AttentionCase("large scores: queries and keys 30 times larger, head size 64", (1, 5, 5, 64, 4),
                       True, 6, spread=30.0),
    ]


def _attention_inputs(case: _AttentionCase):
    import torch

    H, Tq, Tk, d, dv = case.shape
    g = torch.Generator().manual_seed(case.seed)
    q = case.spread * torch.randn(H, Tq, d, generator=g, dtype=torch.float64)
    k = case.spread * torch.randn(H, Tk, d, generator=g, dtype=torch.float64)
    v = torch.randn(H, Tk, dv, generator=g, dtype=torch.float64)
    return q, k, v


def _attention_reference(q, k, v, causal: bool, variant: str = "right"):
    """The right answer, and the classic mistakes named by ``variant``."""
    import torch

    d = q.shape[-1]
    scale = {"no_scale": 1.0, "by_d": 1.0 / d}.get(variant, d ** -0.5)
    scores = (q @ k.transpose(-2, -1)) * scale
    Tq, Tk = scores.shape[-2:]
    if causal and variant != "no_mask":
        diagonal = {"top_left": 1, "strict": Tk - Tq, "inverted": Tk - Tq}.get(variant, Tk - Tq + 1)
        hidden = torch.ones(Tq, Tk, dtype=torch.bool).triu(diagonal=diagonal)
        if variant == "inverted":
            hidden = ~hidden
        scores = scores.masked_fill(hidden, 0.0 if variant == "zero_fill" else float("-inf"))
    weights = torch.softmax(scores, dim=-2 if variant == "query_axis" else -1)
    return weights if variant == "weights" else weights @ v


_ATTENTION_MISTAKES = {
    "no_scale": "the scores are not divided by sqrt(d) (d = q.shape[-1], the head size): without it the "
                "softmax saturates as d grows",
    "by_d": "you divided the scores by d; the scale is 1 / sqrt(d), which keeps their spread at 1",
    "query_axis": "your softmax runs over the queries; it must run over the keys (the last axis of q @ k^T), "
                  "so that each query's weights sum to 1",
    "no_mask": "with causal=True, a query must not see the keys after its own position: set their scores "
               "to -inf before the softmax",
    "zero_fill": "the masked scores are set to 0, which still gives them weight (exp(0) = 1): set them to -inf",
    "inverted": "your mask hides the past and shows the future: hide the keys *after* each query "
                "(torch.ones(Tq, Tk).triu(diagonal=Tk - Tq + 1))",
    "strict": "your mask also hides each query's own key; a position may attend to itself: hide only the keys "
              "after it (triu with diagonal=1 when Tq == Tk)",
    "top_left": "your mask is aligned to the first keys: with fewer queries than keys, the queries are the "
                "last Tq positions, so query i sees keys 0 .. Tk - Tq + i (triu with diagonal=Tk - Tq + 1); "
                "PyTorch's is_causal=True makes the same mistake",
}


def _as_output(answer, shape: tuple[int, ...]):
    """The reader's answer as a float64 tensor of ``shape``, or a message saying why it is not one."""
    import torch

    if answer is None:
        return None, "returned None instead of the output; did you forget the return statement?"
    if isinstance(answer, tuple) and answer:
        return None, (f"returned a tuple of {len(answer)}; return only the output tensor of shape "
                      f"(H, Tq, dv) = {shape}")
    try:
        out = torch.as_tensor(answer).to(torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None, f"returned {describe(answer)}; the output must be a tensor of shape (H, Tq, dv) = {shape}"
    if tuple(out.shape) != shape:
        hint = ""
        if out.dim() == 3 and out.shape[:2] == shape[:2]:
            hint = "; it looks like the attention weights (H, Tq, Tk): multiply them by v"
        return None, f"returned shape {tuple(out.shape)}; expected (H, Tq, dv) = {shape}{hint}"
    return out, ""


def check_attention(fn: Callable) -> CheckResult:
    """Check ``fn(q, k, v, causal) -> out``: ``softmax(q k^T / sqrt(d) + mask) v`` for one sequence.

    ``q`` is ``(H, Tq, d)``, ``k`` ``(H, Tk, d)`` and ``v`` ``(H, Tk, dv)``,
    float64 tensors; ``causal`` is True or False. With ``causal``, the queries
    are the last ``Tq`` of the ``Tk`` positions, so query ``i`` may attend to
    keys ``0 .. Tk - Tq + i``. The cases include a single token, several heads,
    a head size of 1, fewer queries than keys and scores large enough to
    overflow a softmax that does not subtract the maximum. The output counts
    as right within 1e-6 (absolute and relative) of the reference; common
    mistakes (no scaling, a softmax over the queries, a mask that shows the
    future or is aligned to the first keys) are named.
    """
    import torch

    checker = "check_attention"
    _check_callable(fn, checker, 4, _ATTENTION_CALL)
    results = []
    for case in _attention_cases():
        q, k, v = _attention_inputs(case)
        right = _attention_reference(q, k, v, case.causal)
        answer, error = _call(fn, (q, k, v, case.causal))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        H, Tq, Tk, d, dv = case.shape
        out, problem = _as_output(answer, (H, Tq, dv))
        if problem:
            results.append(CaseResult(case.name, False, problem))
            continue
        if torch.allclose(out, right, rtol=1e-6, atol=1e-6):
            results.append(CaseResult(case.name, True))
            continue
        hint = next((text for variant, text in _ATTENTION_MISTAKES.items()
                     if torch.allclose(out, _attention_reference(q, k, v, case.causal, variant),
                                       rtol=1e-6, atol=1e-6, equal_nan=True)
                     and not torch.allclose(right, _attention_reference(q, k, v, case.causal, variant),
                                            rtol=1e-6, atol=1e-6)), "")
        bad = ~torch.isfinite(out)
        if bad.any():
            where = tuple(int(i) for i in bad.nonzero()[0])
            message = f"out{list(where)} = {out[where].item()}: every output must be a finite number"
            if not hint and case.spread > 1:
                hint = ("the scores are large here: exp overflows unless each row's maximum is subtracted "
                        "first (torch.softmax does it for you)")
            elif not hint:
                hint = ("a query whose every key is masked divides 0 by 0: check that each query can see "
                        "at least its own key")
        else:
            gap = (out - right).abs()
            where = tuple(int(i) for i in torch.nonzero(gap == gap.max())[0])
            message = (f"out differs from the reference in {int((gap > 1e-6).sum())} of {out.numel()} entries; "
                       f"the largest difference is at out{list(where)} (head {where[0]}, query {where[1]}): "
                       f"yours {out[where].item():.6g}, expected {right[where].item():.6g}")
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# =========================================================================== Lecture 8: CEM's refit
#
# Lecture 8 (Model-based RL) asks for ``cem_refit(candidates, scores, n_elites) -> (mean, std)``,
# the cross-entropy method's new Gaussian fitted to the best candidates, checked by
# :func:`check_cem_refit` against rl2llm.model_based's own refit.

#: The call the CEM exercise makes.
_CEM_CALL = "cem_refit(candidates, scores, n_elites)"


@dataclass(frozen=True)
class _CEMCase:
    name: str
    candidates: np.ndarray
    scores: np.ndarray
    n_elites: int


def _cem_cases() -> list[_CEMCase]:
    rng = np.random.default_rng(8)

    def case(name, n, horizon, dims, n_elites, scores=None):
        candidates = rng.normal(size=(n, horizon, dims))
        if scores is None:
            scores = rng.permutation(n).astype(float) - n / 2     # distinct scores, in no order
        return _CEMCase(name, candidates, np.asarray(scores, dtype=float), n_elites)

    tied = np.array([5.0, 1.0, 5.0, -2.0, 3.0, 0.0, 5.0, -1.0])   # three tied at the top, then 3
    return [
        case("one action dimension, horizon 3, 3 elites of 10", 10, 3, 1, 3),
        case("two action dimensions, horizon 4, 4 elites of 12", 12, 4, 2, 4),
        case("one elite (its spread is 0)", 8, 3, 2, 1),
        case("every candidate an elite", 6, 2, 1, 6),
        case("every score negative", 9, 3, 1, 3, scores=-1.0 - rng.permutation(9)),
        case("ties among the elites", 8, 2, 2, 4, scores=tied),
        case("horizon 1, three action dimensions", 10, 1, 3, 5),
        case("200 candidates, 20 elites", 200, 5, 2, 20),
    ]


def _cem_reference(candidates: np.ndarray, scores: np.ndarray, n_elites: int) -> tuple[np.ndarray, np.ndarray]:
    """The refit of rl2llm.model_based.cem, in NumPy (a test checks that the two agree; importing that
    module here would make every chapter that uses a checker depend on it)."""
    elites = candidates[np.argsort(-scores, kind="stable")[:n_elites]]
    return elites.mean(axis=0), elites.std(axis=0)


def _cem_alternatives(case: _CEMCase) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(mean, std) pairs that the classic mistakes produce, each with the hint that explains it."""
    c, s, k = case.candidates, case.scores, case.n_elites
    order = np.argsort(-s, kind="stable")
    elites, worst = c[order[:k]], c[order[::-1][:k]]
    out = [(worst.mean(0), worst.std(0), "higher scores are better: keep the n_elites *largest* scores "
                                         "(np.argsort sorts from the smallest up)")]
    if k > 1:
        out.append((elites.mean(0), elites.std(0, ddof=1),
                    "the spread is the population standard deviation of the elites: divide by n_elites "
                    "(np.std's default, ddof=0; torch.std divides by n - 1 unless correction=0)"))
    out.append((elites.mean(0), elites.var(0), "you returned the variance: the spread is its square root"))
    if k < len(s):
        out.append((c.mean(0), c.std(0), "fit the Gaussian to the elites only, not to every candidate"))
        out.append((c[order[:k + 1]].mean(0), c[order[:k + 1]].std(0), "keep exactly n_elites candidates "
                                                                       "(one too many here)"))
    if k > 1:
        out.append((c[order[:k - 1]].mean(0), c[order[:k - 1]].std(0), "keep exactly n_elites candidates "
                                                                        "(one too few here)"))
    out.append((elites.std(0), elites.mean(0), "return (mean, std) in that order"))
    return out


def _as_pair_of(answer, shape: tuple[int, ...]) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """The reader's answer as two float arrays of ``shape``, or a message saying why it is not."""
    if answer is None:
        return None, "returned None instead of (mean, std); did you forget the return statement?"
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return None, f"returned {describe(answer)}; return a pair (mean, std)"
    arrays = []
    for name, value in zip(("mean", "std"), answer):
        try:
            array = np.asarray(value.detach() if hasattr(value, "detach") else value, dtype=float)
        except (TypeError, ValueError):
            return None, f"{name} is {describe(value)}; it must be an array of numbers of shape {shape}"
        if array.shape != shape:
            hint = ""
            if array.shape == shape[1:] or array.shape == ():
                hint = " (you averaged over the time steps too: keep one value per step and action dimension)"
            elif len(array.shape) == 3:
                hint = " (average over the candidates, axis 0)"
            return None, f"{name} has shape {array.shape}; expected (horizon, action_dim) = {shape}{hint}"
        if not np.all(np.isfinite(array)):
            return None, f"{name} has a value that is not finite: every entry must be a number"
        arrays.append(array)
    return (arrays[0], arrays[1]), ""


def check_cem_refit(fn: Callable) -> CheckResult:
    """Check ``fn(candidates, scores, n_elites) -> (mean, std)``, the refit step of the cross-entropy method.

    ``candidates`` has shape ``(N, horizon, action_dim)``, ``scores`` ``(N,)`` (higher is better).
    The answer must be the mean and the population standard deviation (divided by ``n_elites``) of
    the ``n_elites`` best-scoring candidates, per step and action dimension, each of shape
    ``(horizon, action_dim)``, within ``1e-6``, on eight cases: one or several action dimensions,
    one elite, every candidate an elite, negative scores, ties among the elites, a horizon of 1,
    and a larger population. The reference is :func:`rl2llm.model_based.cem`'s refit.
    """
    checker = "check_cem_refit"
    _check_callable(fn, checker, 3, _CEM_CALL)
    results = []
    for case in _cem_cases():
        want_mean, want_std = _cem_reference(case.candidates, case.scores, case.n_elites)
        answer, error = _call(fn, (case.candidates.copy(), case.scores.copy(), case.n_elites))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        pair, problem = _as_pair_of(answer, want_mean.shape)
        if problem:
            results.append(CaseResult(case.name, False, problem))
            continue
        mean, std = pair
        ok_mean, ok_std = _close(mean, want_mean).all(), _close(std, want_std).all()
        if ok_mean and ok_std:
            results.append(CaseResult(case.name, True))
            continue
        name, mine, want = ("mean", mean, want_mean) if not ok_mean else ("std", std, want_std)
        gap = np.abs(mine - want)
        t, d = np.unravel_index(int(np.argmax(gap)), gap.shape)
        message = (f"{name} differs from the reference at step {t}, action dimension {d}: yours "
                   f"{mine[t, d]:.6g}, expected {want[t, d]:.6g}"
                   + ("" if ok_mean or ok_std else " (the std differs too)"))
        hint = next((why for alt_mean, alt_std, why in _cem_alternatives(case)
                     if np.allclose(mean, alt_mean, atol=1e-9) and np.allclose(std, alt_std, atol=1e-9)
                     and not (np.allclose(alt_mean, want_mean) and np.allclose(alt_std, want_std))), "")
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# --------------------------------------------------------------------------- Lecture 7: the tanh-squashed Gaussian
#
# ``squashed_log_prob(mean, log_std, u) -> log_prob``: the log-density of the action a = tanh(u) when
# u ~ Normal(mean, exp(log_std)) independently per dimension, summed over the last axis; checked by
# :func:`check_squashed_log_prob` against :func:`rl2llm.offpolicy.squashed_gaussian_log_prob`.

_SQUASHED_CALL = "squashed_log_prob(mean, log_std, u)"
_LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class _SquashedCase:
    name: str
    mean: np.ndarray      # (n, d)
    log_std: np.ndarray   # (n, d)
    u: np.ndarray         # (n, d), the sample before tanh


def _squashed_cases() -> list[_SquashedCase]:
    rng = np.random.default_rng(7)

    def case(name, mean, log_std, u):
        return _SquashedCase(name, *(np.array(x, dtype=float) for x in (mean, log_std, u)))

    mean3, log_std3 = rng.normal(size=(5, 3)), rng.uniform(-1.5, 0.5, size=(5, 3))
    return [
        case("one action, one dimension: a standard normal, u = 0.5", [[0.0]], [[0.0]], [[0.5]]),
        case("four actions, one dimension, mean 0.3, std 0.5", [[0.3]] * 4, [[np.log(0.5)]] * 4,
             [[-1.0], [0.0], [0.7], [2.0]]),
        case("five actions of three dimensions (sum over the dimensions)", mean3, log_std3,
             mean3 + np.exp(log_std3) * rng.normal(size=(5, 3))),
        case("a wide policy, std 3: samples far out, where tanh(u) is close to +-1", [[0.0]] * 3, [[np.log(3.0)]] * 3,
             [[-6.0], [4.5], [8.0]]),
        case("u = +-25: tanh(u) rounds to exactly +-1 in float64", [[20.0], [-20.0]], [[1.0], [1.0]],
             [[25.0], [-25.0]]),
    ]


def _squashed_reference(c: _SquashedCase) -> np.ndarray:
    from .offpolicy import squashed_gaussian_log_prob

    return squashed_gaussian_log_prob(c.mean, c.log_std, c.u).numpy()


def _squashed_mistakes(c: _SquashedCase) -> list[tuple[np.ndarray, str]]:
    std = np.exp(c.log_std)
    gaussian = -0.5 * ((c.u - c.mean) / std) ** 2 - c.log_std - 0.5 * _LOG_2PI        # (n, d)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_derivative = np.log(1.0 - np.tanh(c.u) ** 2)
        naive_u = np.log(np.abs(1.0 - c.u ** 2))
        std_as_log = -0.5 * ((c.u - c.mean) / c.log_std) ** 2 - np.log(np.abs(c.log_std)) - 0.5 * _LOG_2PI
    stable = 2.0 * (np.log(2.0) - c.u - np.logaddexp(0.0, -2.0 * c.u))
    return [
        (gaussian.sum(-1), "this is the Gaussian's log-density of u, but the action is tanh(u): subtract "
                           "log(1 - tanh(u)^2), the log of tanh's derivative, for every dimension"),
        ((gaussian + stable).sum(-1), "the tanh term has the wrong sign: squashing packs the probability into a "
                                      "smaller interval, so the density of a is higher, log p(a) = log N(u) - "
                                      "log(1 - tanh(u)^2)"),
        ((gaussian - naive_u).sum(-1), "the correction must use tanh(u), the action, not u itself: "
                                       "log(1 - tanh(u)^2)"),
        ((gaussian - stable).sum(-1) + 0.5 * _LOG_2PI * c.u.shape[1],
         "everything but the constant: the Gaussian's log-density includes -0.5 * log(2 pi) per dimension"),
        ((std_as_log - stable).sum(-1), "log_std is the logarithm of the standard deviation: use "
                                        "std = exp(log_std)"),
        ((gaussian - log_derivative).sum(-1), "right where tanh(u) is not too close to +-1: where it rounds to "
                                              "+-1, 1 - tanh(u)^2 is 0 and its log is -inf; write "
                                              "log(1 - tanh(u)^2) as 2 * (log 2 - u - softplus(-2 u)), "
                                              "softplus(x) = log(1 + exp(x)) = np.logaddexp(0, x)"),
    ]


def check_squashed_log_prob(fn: Callable) -> CheckResult:
    """Check ``fn(mean, log_std, u) -> log_prob``: SAC's log-probability of ``a = tanh(u)``.

    ``mean``, ``log_std`` and ``u`` are float64 arrays of shape ``(n, d)`` (``n`` actions of
    ``d`` dimensions; ``u ~ Normal(mean, exp(log_std))`` per dimension, before squashing);
    the answer has shape ``(n,)``: the log-density of each squashed action, summed over its
    dimensions. The cases include three dimensions, samples far from the mean, and ``u``
    so large that ``tanh(u)`` rounds to 1 (the answer must still be finite and right). It
    counts as right within 1e-6 (relative) of :func:`rl2llm.offpolicy.squashed_gaussian_log_prob`.
    """
    checker = "check_squashed_log_prob"
    _check_callable(fn, checker, 3, _SQUASHED_CALL)
    results = []
    for case in _squashed_cases():
        want = _squashed_reference(case)
        n = len(want)
        answer, error = _call(fn, (case.mean.copy(), case.log_std.copy(), case.u.copy()))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        if answer is None:
            results.append(CaseResult(case.name, False, "returned None instead of the log-probabilities; did "
                                                        "you forget the return statement?"))
            continue
        try:
            mine = np.asarray(answer.detach() if hasattr(answer, "detach") else answer, dtype=float)
        except (TypeError, ValueError):
            results.append(CaseResult(case.name, False, f"returned {describe(answer)}; expected an array of "
                                                        f"shape ({n},)"))
            continue
        if mine.shape != (n,):
            hint = ("one number per action: sum the log-densities over the last axis, .sum(axis=-1)"
                    if mine.shape == case.u.shape else "")
            results.append(CaseResult(case.name, False, f"returned shape {mine.shape}; expected ({n},), one "
                                                        "log-probability per action", hint))
            continue
        bad = ~np.isfinite(mine)
        off = ~(np.abs(mine - want) <= 1e-6 * np.maximum(1.0, np.abs(want)))
        if not off.any():
            results.append(CaseResult(case.name, True))
            continue
        i = int(np.argmax(bad | off))
        message = (f"wrong for {int(off.sum())} of {n} actions; the first is action {i} (u = "
                   f"{np.array2string(case.u[i], precision=3)}): yours {mine[i]:.6g}, expected {want[i]:.6g}")
        hint = ""
        for values, why in _squashed_mistakes(case):
            with np.errstate(invalid="ignore"):
                same = np.allclose(mine, values, rtol=1e-6, atol=1e-9, equal_nan=True)
            if same and not np.allclose(values, want, rtol=1e-6, atol=1e-9):
                hint = why
                break
        if not hint and bad.any():
            hint = ("a value is not finite: where tanh(u) rounds to +-1, log(1 - tanh(u)^2) is log(0); use "
                    "2 * (log 2 - u - softplus(-2 u)), with softplus(x) = np.logaddexp(0, x)")
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# =========================================================================== Lecture 10: parameter count
#
# Lecture 10 (Transformers) asks for ``count_parameters(config) -> int``, the number of parameters of
# ``rl2llm.transformer.GPT(config)`` from the configuration's fields, checked by
# :func:`check_parameter_count`. The checker hands the reader's function plain stand-ins with the fields of
# a ``GPTConfig`` and computes its reference here (a test ties it to ``rl2llm.transformer.n_parameters``),
# so that the chapters using other checkers do not depend on rl2llm.transformer and PyTorch.


@dataclass(frozen=True)
class _GPTShape:
    """The fields of a ``GPTConfig`` that fix the parameter count."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    mlp_hidden: int
    norm: str = "layer"
    norm_placement: str = "pre"
    mlp: str = "gelu"
    position: str = "learned"
    bias: bool = True
    tie_weights: bool = True


def _parameter_cases() -> list[tuple[str, _GPTShape]]:
    return [
        ("GPT-2 small (tied output, learned positions, LayerNorm, GELU, biases)",
         _GPTShape(50257, 1024, 12, 12, 768, 3072)),
        ("a small GPT-2 block with an untied output layer", _GPTShape(256, 32, 2, 4, 32, 128, tie_weights=False)),
        ("post-norm (no final norm)", _GPTShape(256, 64, 3, 4, 48, 192, norm_placement="post")),
        ("RMSNorm with bias=True (the linear layers have biases, the norms do not)",
         _GPTShape(100, 16, 2, 2, 16, 64, norm="rms")),
        ("SwiGLU with its default width (8 n_embd / 3, rounded up to a multiple of 8)",
         _GPTShape(256, 32, 2, 4, 32, 88, mlp="swiglu")),
        ("rotary positions (no position table)", _GPTShape(256, 128, 4, 4, 64, 256, position="rope")),
        ("no biases, LayerNorm", _GPTShape(256, 32, 2, 4, 32, 128, bias=False)),
        ("LLaMA-7B (RMSNorm, SwiGLU, rotary positions, no biases, untied output)",
         _GPTShape(32000, 2048, 32, 32, 4096, 11008, norm="rms", mlp="swiglu", position="rope", bias=False,
                   tie_weights=False)),
    ]


def _parameter_parts(c: _GPTShape) -> dict[str, int]:
    """The count of each part of ``GPT(c)``: the formula of Lecture 10, written without rl2llm.transformer."""
    d, h, L, b = c.n_embd, c.mlp_hidden, c.n_layer, int(c.bias)
    norm = d + (d * b if c.norm == "layer" else 0)
    gated = c.mlp == "swiglu"
    return {
        "token embedding": c.vocab_size * d,
        "position table": c.block_size * d if c.position == "learned" else 0,
        "attention matrices": L * 4 * d * d,
        "attention biases": L * 4 * d * b,
        "feed-forward matrices": L * (3 if gated else 2) * d * h,
        "feed-forward biases": L * ((2 if gated else 1) * h + d) * b,
        "norms in the blocks": L * 2 * norm,
        "final norm": norm if c.norm_placement == "pre" else 0,
        "output layer": 0 if c.tie_weights else c.vocab_size * d,
    }


def _parameter_mistakes(c: _GPTShape) -> list[tuple[int, str]]:
    """Counts that the classic mistakes produce, each with the hint that explains it."""
    parts = _parameter_parts(c)
    total = sum(parts.values())
    d, h, L, V, T, b = c.n_embd, c.mlp_hidden, c.n_layer, c.vocab_size, c.block_size, int(c.bias)
    n_norms = 2 * L + (c.norm_placement == "pre")
    mistakes = [
        (total + V * d if c.tie_weights else total - V * d,
         "the output layer shares the token embedding's matrix when tie_weights is True: count it once"
         if c.tie_weights else "with tie_weights=False the output layer has its own vocab_size x n_embd matrix"),
        (total - T * d if c.position == "learned" else total + T * d,
         "learned positions add a table of block_size x n_embd parameters" if c.position == "learned" else
         "rotary positions have no parameters: there is no position table"),
        (total + d if c.norm_placement == "post" else total - parts["final norm"],
         "a post-norm model has no final norm: its stream leaves every block normalised"
         if c.norm_placement == "post" else "a pre-norm model has one more norm after the last block"),
        (total - parts["attention matrices"] // 4 - parts["attention biases"] // 4,
         "attention has four n_embd x n_embd matrices: queries, keys, values and the output projection"),
        (total - parts["norms in the blocks"] - parts["final norm"],
         "every norm has a gain of n_embd parameters (and LayerNorm with bias=True a bias too)"),
        (12 * L * d * d,
         "12 L d^2 is the rule of thumb for the blocks alone: count the embeddings, the biases, the norms and "
         "(if untied) the output layer too"),
    ]
    if c.norm == "rms" and b:
        mistakes.append((total + n_norms * d, "RMSNorm has a gain and no bias, even when bias=True"))
    if c.norm == "layer" and b:
        mistakes.append((total - n_norms * d, "LayerNorm with bias=True has a bias next to its gain: "
                                              "2 x n_embd parameters per norm"))
    if b:
        mistakes.append((total - parts["attention biases"] - parts["feed-forward biases"],
                         "with bias=True every linear layer has a bias (one per output)"))
    else:
        extra = L * (4 * d + ((2 if c.mlp == "swiglu" else 1) * h + d))
        mistakes.append((total + extra, "bias=False: no linear layer has a bias"))
        if c.norm == "layer":
            mistakes.append((total + extra + n_norms * d, "bias=False: no linear layer and no LayerNorm has a "
                                                          "bias"))
    if c.mlp == "swiglu":
        mistakes.append((total - L * d * h - L * h * b, "SwiGLU has three matrices (gate, up and down), "
                                                        "n_embd x mlp_hidden each"))
    else:
        mistakes.append((total + L * d * h + L * h * b, "GELU's feed-forward layer has two matrices (up and "
                                                        "down); SwiGLU has three"))
    if h != 4 * d:
        wide = replace(c, mlp_hidden=4 * d)
        mistakes.append((sum(_parameter_parts(wide).values()),
                         "use config.mlp_hidden, not 4 x n_embd (SwiGLU's default width is smaller, and a "
                         "config may set its own)"))
    return [(count, why) for count, why in mistakes if count != total]


def check_parameter_count(fn: Callable) -> CheckResult:
    """Check ``fn(config) -> int``: the number of parameters of ``rl2llm.transformer.GPT(config)``.

    ``config`` has the fields of a ``GPTConfig``: ``vocab_size``,
    ``block_size``, ``n_layer``, ``n_head``, ``n_embd``, ``mlp_hidden``,
    ``norm`` (``"layer"`` or ``"rms"``), ``norm_placement`` (``"pre"`` or
    ``"post"``), ``mlp`` (``"gelu"`` or ``"swiglu"``), ``position``
    (``"learned"`` or ``"rope"``), ``bias`` and ``tie_weights``. Eight
    cases, from GPT-2 small to LLaMA-7B, each with one feature that changes
    the count; the answer must be exact.
    """
    checker = "check_parameter_count"
    _check_callable(fn, checker, 1, "count_parameters(config)")
    results = []
    for name, shape in _parameter_cases():
        parts = _parameter_parts(shape)
        expected = sum(parts.values())
        answer, error = _call(fn, (shape,))
        if error:
            hint = ("config is read by attribute, config.n_embd, not config['n_embd']"
                    if "not subscriptable" in error else "")
            results.append(CaseResult(name, False, error, hint))
            continue
        if answer is None:
            results.append(CaseResult(name, False, "returned None instead of the count; did you forget the return "
                                                   "statement?"))
            continue
        try:
            value = float(np.asarray(answer, dtype=float).reshape(()))
        except (TypeError, ValueError):
            results.append(CaseResult(name, False, f"returned {describe(answer)}; the count is one whole number"))
            continue
        if isinstance(answer, (bool, np.bool_)) or not np.isfinite(value) or value != round(value):
            results.append(CaseResult(name, False, f"returned {describe(answer)}; the count is a whole number"))
            continue
        if int(value) == expected:
            results.append(CaseResult(name, True))
            continue
        off = int(value) - expected
        message = (f"yours {int(value):,}, GPT(config) has {expected:,} parameters "
                   f"({abs(off):,} {'too many' if off > 0 else 'too few'})")
        hint = next((why for count, why in _parameter_mistakes(shape) if count == int(value)), "")
        if not hint:
            equal = [part for part, count in parts.items() if count == abs(off)]
            if equal:
                hint = f"the difference is exactly the {equal[0]}: check whether and how you count it"
        results.append(CaseResult(name, False, message, hint))
    return CheckResult(checker, tuple(results))


# =========================================================================== Lecture 12: nucleus (top-p) filtering
#
# Lecture 12 (Language modelling) asks for ``top_p_filter(logits, p) -> logits``: for float logits
# (batch, vocab), keep in each row the smallest set of most likely tokens whose probabilities add
# up to at least p and set the others to -inf; checked by :func:`check_top_p_filter` against
# rl2llm.lm.top_p_filter, comparing the distributions the two outputs give (softmax), so that ties
# may be broken either way and log-probabilities are as good as logits.

_TOP_P_CALL = "top_p_filter(logits, p)"


@dataclass(frozen=True)
class _TopPCase:
    name: str
    logits: np.ndarray   # (batch, vocab), float64; -inf allowed
    p: float


def _top_p_cases() -> list[_TopPCase]:
    rng = np.random.default_rng(12)
    halves = np.log([[0.5, 0.25, 0.125, 0.125]])
    shuffled = np.log([[0.05, 0.4, 0.1, 0.3, 0.15]])
    filtered = rng.normal(0, 2, size=(1, 12))
    filtered[0, np.argsort(filtered[0])[:7]] = -np.inf          # a row already cut to its top 5
    shapes = np.stack([rng.normal(0, s, size=30) for s in (0.3, 2.0, 6.0)])
    return [
        _TopPCase("one token holds 90% of the probability, p = 0.5", np.log([[0.9, 0.05, 0.03, 0.02]]), 0.5),
        _TopPCase("probabilities 1/2, 1/4, 1/8, 1/8 in vocabulary order, p = 0.8", halves, 0.8),
        _TopPCase("the same, p = 0.7 (the second token takes the total past p)", halves, 0.7),
        _TopPCase("the most likely tokens are not first in the vocabulary, p = 0.6", shuffled, 0.6),
        _TopPCase("a uniform distribution over 8 tokens (ties), p = 0.5", np.zeros((1, 8)), 0.5),
        _TopPCase("p = 1 keeps every token", rng.normal(0, 1, size=(1, 6)), 1.0),
        _TopPCase("a row already filtered by top-k (-inf logits), p = 0.9", filtered, 0.9),
        _TopPCase("a batch of three rows from flat to peaked, 30 tokens, p = 0.9", shapes, 0.9),
    ]


def _top_p_reference(logits: np.ndarray, p: float, variant: str = "right") -> np.ndarray:
    """The distribution after nucleus filtering, and the classic mistakes named by ``variant``."""
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if variant == "vocabulary order":
        order = np.tile(np.arange(probs.shape[-1]), (len(probs), 1))
    elif variant == "ascending":
        order = np.argsort(probs, axis=-1, kind="stable")
    else:
        order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    cumulative = np.cumsum(sorted_probs, axis=-1)
    if variant in ("stop before", "cumulative <= p"):
        keep_sorted = cumulative < p if variant == "stop before" else cumulative <= p + 1e-12
    else:
        keep_sorted = cumulative - sorted_probs < p - 1e-12
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    out = np.where(keep, probs, 0.0)
    sums = out.sum(axis=-1, keepdims=True)
    return np.divide(out, sums, out=np.zeros_like(out), where=sums > 0)


_TOP_P_MISTAKES = {
    "stop before": "you stopped before the token that crosses p: keep a token while the probability of the "
                   "tokens before it is still below p, so the kept set reaches p (and the most likely token "
                   "is always kept)",
    "cumulative <= p": "you kept the tokens whose running total is at most p: the token that takes the total "
                       "past p belongs to the nucleus too (keep while the mass *before* a token is below p)",
    "vocabulary order": "you added the probabilities up in vocabulary order: sort the tokens by probability, "
                        "most likely first, before taking the running total",
    "ascending": "you sorted from the least likely token up: the nucleus holds the most likely tokens "
                 "(sort in descending order)",
}


def _as_logits_answer(answer, shape) -> tuple[np.ndarray | None, str]:
    """The reader's answer as a float array of ``shape``, or a message saying why it is not one."""
    if answer is None:
        return None, "returned None instead of the filtered logits; did you forget the return statement?"
    try:
        import torch

        if isinstance(answer, torch.Tensor):
            answer = answer.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        array = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return None, f"returned {describe(answer)}; expected logits, a tensor of shape {shape}"
    if array.shape != tuple(shape):
        return None, f"returned shape {array.shape}; expected {tuple(shape)}, the shape of the logits"
    if np.isnan(array).any() or (array == np.inf).any():
        return None, "returned NaN or +inf: filtered tokens must be -inf, kept ones finite"
    if (array == -np.inf).all(axis=-1).any():
        return None, "a row is all -inf: at least the most likely token must be kept"
    return array, ""


def check_top_p_filter(fn: Callable) -> CheckResult:
    """Check ``fn(logits, p) -> logits``: nucleus (top-p) filtering of next-token logits.

    ``logits`` is a float64 torch tensor of shape ``(batch, vocab)`` (some
    entries may already be ``-inf``), ``p`` a float in ``(0, 1]``. In each row,
    the smallest set of most likely tokens whose probabilities add up to at
    least ``p`` keeps its logits; every other logit becomes ``-inf``. The
    checker compares ``softmax`` of your answer with the reference's
    distribution (:func:`rl2llm.lm.top_p_filter`), so log-probabilities are as
    good as logits and ties may be broken either way (any of the tied tokens
    may be kept); it names the row and the tokens that differ, with a hint
    when a classic mistake fits.
    """
    import torch

    checker = "check_top_p_filter"
    _check_callable(fn, checker, 2, _TOP_P_CALL)
    results = []
    for case in _top_p_cases():
        answer, error = _call(fn, (torch.tensor(case.logits, dtype=torch.float64), case.p))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        array, problem = _as_logits_answer(answer, case.logits.shape)
        if problem:
            hint = _TOP_P_MISTAKES["stop before"] if "all -inf" in problem else ""
            results.append(CaseResult(case.name, False, problem, hint))
            continue
        probs = np.exp(array - array.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        right = _top_p_reference(case.logits, case.p)
        if np.allclose(probs, right, atol=1e-6):
            results.append(CaseResult(case.name, True))
            continue
        # ties: any set of tied tokens of the right size is as good
        original = _top_p_reference(case.logits, 1.0)
        kept, should = probs > 1e-12, right > 1e-12
        same_size = (kept.sum(-1) == should.sum(-1)).all()
        rows_ok = []
        for r in range(len(probs)):
            if not same_size or not kept[r].any():
                rows_ok.append(False)
                continue
            low_kept = original[r][kept[r]].min()
            high_dropped = original[r][~kept[r]].max(initial=0.0)
            renormalised = np.allclose(probs[r][kept[r]], original[r][kept[r]] / original[r][kept[r]].sum(),
                                       atol=1e-6)
            rows_ok.append(bool(low_kept >= high_dropped - 1e-12 and renormalised))
        if all(rows_ok):
            results.append(CaseResult(case.name, True))
            continue
        r = next(i for i, ok in enumerate(rows_ok) if not ok)
        yours, nucleus = int(kept[r].sum()), int(should[r].sum())
        where = f"row {r}: " if len(probs) > 1 else ""
        if yours != nucleus:
            extra = [int(i) for i in np.nonzero(kept[r] & ~should[r])[0]]
            missing = [int(i) for i in np.nonzero(~kept[r] & should[r])[0]]
            detail = (f"; token {extra[0]} (probability {original[r][extra[0]]:.3g}) should be dropped" if extra
                      else f"; token {missing[0]} (probability {original[r][missing[0]]:.3g}) should be kept")
            message = f"{where}you keep {yours} token{'s' if yours != 1 else ''} where the nucleus has {nucleus}{detail}"
        elif not np.allclose(probs[r][kept[r]], right[r][kept[r]], atol=1e-6) and (kept[r] == should[r]).all():
            message = (f"{where}you keep the right tokens, but their probabilities change: leave the kept logits "
                       "as they were (only the dropped ones become -inf)")
        else:
            i = int(np.nonzero(kept[r] != should[r])[0][0])
            message = (f"{where}you keep the right number of tokens, but not the most likely ones: token {i} "
                       f"(probability {original[r][i]:.3g}) is {'kept' if kept[r][i] else 'dropped'}")
        hint = ""
        for variant, text in _TOP_P_MISTAKES.items():
            if np.allclose(probs, _top_p_reference(case.logits, case.p, variant), atol=1e-6):
                hint = text
                break
        if not hint and np.all(array[~np.isinf(array)] >= 0) and np.all(array <= 1 + 1e-9) and \
                np.allclose(np.where(np.isinf(array), 0, array).sum(-1), 1.0):
            hint = "you returned probabilities: return logits (the kept ones unchanged, the others -inf)"
        if not hint and (array == 0).any() and not (array == -np.inf).any():
            hint = "dropped tokens must be -inf, not 0: a logit of 0 still has probability after the softmax"
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# --------------------------------------------------------------------------- Lecture 15: the DPO loss
#
# ``dpo_losses(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> losses``: one DPO
# loss per pair, -log sigmoid(beta * [(pc - rc) - (pr - rr)]), from NumPy arrays of sequence
# log-probabilities; checked by :func:`check_dpo_losses` against :func:`rl2llm.dpo.dpo_loss`.

_DPO_CALL = "dpo_losses(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)"


@dataclass(frozen=True)
class _DPOCase:
    name: str
    logps: tuple  # (policy_chosen, policy_rejected, ref_chosen, ref_rejected), each (n,)
    beta: float


def _dpo_cases() -> list[_DPOCase]:
    rng = np.random.default_rng(15)

    def batch(n, spread):
        ref_c, ref_r = -rng.uniform(10, 60, n), -rng.uniform(10, 60, n)
        return (ref_c + rng.normal(0, spread, n), ref_r + rng.normal(0, spread, n), ref_c, ref_r)

    same = batch(5, 0.0)
    far = batch(4, 1.0)
    far = (far[0] + np.array([1000.0, -1000.0, 250.0, -800.0]), far[1], far[2], far[3])
    return [
        _DPOCase("one pair, beta = 0.1", batch(1, 3.0), 0.1),
        _DPOCase("eight pairs, beta = 0.1", batch(8, 3.0), 0.1),
        _DPOCase("the policy equal to the reference (every loss is log 2)", same, 0.5),
        _DPOCase("six pairs, beta = 1", batch(6, 5.0), 1.0),
        _DPOCase("six pairs, beta = 2.5", batch(6, 2.0), 2.5),
        _DPOCase("margins of hundreds of nats (a naive log(sigmoid) overflows)", far, 1.0),
    ]


def _dpo_reference(logps, beta: float, variant: str = "right") -> np.ndarray:
    """-log sigmoid(beta * margin) per pair, computed stably; ``variant`` reproduces a classic mistake.

    The same formula as :func:`rl2llm.dpo.dpo_loss` (``tests/test_dpo.py`` checks that they agree),
    written out here so that this module does not import the language-model stack.
    """
    pc, pr, rc, rr = (np.asarray(a, dtype=float) for a in logps)
    if variant == "no reference":
        rc, rr = np.zeros_like(rc), np.zeros_like(rr)
    elif variant == "swapped":
        pc, pr, rc, rr = pr, pc, rr, rc
    margin = (pc - rc) - (pr - rr)
    if variant == "beta outside":
        return beta * np.logaddexp(0.0, -margin)
    return np.logaddexp(0.0, -beta * margin)


_DPO_MISTAKES = {
    "no reference": "you left out the reference model: each side's term is log pi - log pi_ref, not log pi alone",
    "swapped": "chosen and rejected are swapped (or each log-ratio taken the wrong way round, which is the same): "
               "the loss must fall when the chosen answer gains on the reference",
    "beta outside": "beta belongs inside the sigmoid, -log sigmoid(beta * margin), not outside it",
}


def check_dpo_losses(fn: Callable) -> CheckResult:
    """Check ``fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> losses``, one DPO loss per pair.

    The inputs are NumPy arrays of sequence log-probabilities of shape ``(n,)``; the answer must be
    ``-log sigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))`` for
    every pair, within ``1e-6``, on six cases: one pair, several, the policy equal to the reference,
    three values of ``beta``, and margins of hundreds of nats (computed stably, with no overflow to
    ``inf`` or ``nan``). The reference is :func:`rl2llm.dpo.dpo_loss`'s formula. Used by Lecture 15.
    """
    checker = "check_dpo_losses"
    _check_callable(fn, checker, 5, _DPO_CALL)
    results = []
    for case in _dpo_cases():
        n = len(case.logps[0])
        want = _dpo_reference(case.logps, case.beta)
        answer, error = _call(fn, (*[a.copy() for a in case.logps], case.beta))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        if answer is None:
            results.append(CaseResult(case.name, False, "returned None instead of the losses; did you forget the "
                                                          "return statement?"))
            continue
        try:
            mine = np.asarray(answer, dtype=float)
        except (TypeError, ValueError):
            results.append(CaseResult(case.name, False, f"returned {describe(answer)}; expected an array of "
                                                          f"shape ({n},), one loss per pair"))
            continue
        if mine.shape != (n,):
            hint = ""
            if mine.size == 1 and n > 1 and np.isclose(float(mine.ravel()[0]), want.mean()):
                hint = "you returned the mean over the pairs: return one loss per pair (the caller averages)"
            results.append(CaseResult(case.name, False, f"returned shape {mine.shape}; expected ({n},), one loss "
                                                          "per pair", hint))
            continue
        bad = ~np.isfinite(mine)
        if bad.any():
            i = int(np.argmax(bad))
            results.append(CaseResult(case.name, False, f"the loss of pair {i} is {mine[i]}", "compute "
                                      "-log sigmoid(z) stably: np.logaddexp(0, -z), not np.log(1 / (1 + np.exp(-z)))"))
            continue
        if _close(mine, want).all():
            results.append(CaseResult(case.name, True))
            continue
        i = int(np.argmax(np.abs(mine - want)))
        message = f"the loss of pair {i} is {mine[i]:.6g}, expected {want[i]:.6g}"
        hint = next((text for variant, text in _DPO_MISTAKES.items()
                     if np.allclose(mine, _dpo_reference(case.logps, case.beta, variant), atol=1e-9)
                     and not np.allclose(want, _dpo_reference(case.logps, case.beta, variant))), "")
        if not hint and np.allclose(mine, -want, atol=1e-9):
            hint = "the sign is flipped: the loss is -log sigmoid(...), which is >= 0"
        if not hint and np.allclose(mine, np.exp(-want), atol=1e-9):
            hint = "you returned sigmoid(beta * margin), the probability of the label: take -log of it"
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# =========================================================================== Lecture 14: shaped rewards
#
# Lecture 14 (PPO for language models) asks for ``shaped_rewards(sequence_reward, logp_policy, logp_ref,
# mask, beta) -> (B, T)``: -beta * k1 on every completion token, the sequence reward added on each row's
# last completion token, 0 off the mask; checked by :func:`check_shaped_rewards` against
# :func:`rl2llm.rlhf.shaped_rewards`.


@dataclass(frozen=True)
class _ShapedCase:
    name: str
    reward: np.ndarray
    logp: np.ndarray
    ref: np.ndarray
    mask: np.ndarray
    beta: float


def _shaped_cases() -> list[_ShapedCase]:
    rng = np.random.default_rng(14)
    cases = []
    for name, spans, T, beta in (
            ("three answers after prompts of different lengths, beta = 0.1", [(2, 4), (3, 5), (1, 2)], 9, 0.1),
            ("answers of one token, beta = 0.5", [(3, 1), (5, 1)], 7, 0.5),
            ("beta = 0: the sequence reward alone", [(1, 3), (2, 5)], 8, 0.0),
            ("a long answer and a short one, beta = 2", [(2, 10), (2, 3)], 14, 2.0)):
        mask = np.zeros((len(spans), T))
        for i, (start, length) in enumerate(spans):
            mask[i, start:start + length] = 1
        logp = -rng.uniform(0.05, 3.0, mask.shape) * mask
        ref = -rng.uniform(0.05, 3.0, mask.shape) * mask
        cases.append(_ShapedCase(name, rng.normal(0, 1.5, len(spans)), logp, ref, mask, beta))
    return cases


def _shaped_reference(c: _ShapedCase, variant: str = "") -> np.ndarray:
    log_ratio = c.ref - c.logp
    kl = np.expm1(log_ratio) - log_ratio if variant == "k3" else -log_ratio
    if variant == "sign":
        kl = -kl
    beta = 1.0 if variant == "no beta" else c.beta
    out = -beta * kl * (1.0 if variant == "unmasked" else c.mask)
    cols = np.arange(c.mask.shape[1])
    for i, row in enumerate(c.mask.astype(bool)):
        if variant == "every token":
            out[i, row] += c.reward[i]
        elif variant == "first":
            out[i, cols[row][0]] += c.reward[i]
        elif variant == "last column":
            out[i, -1] += c.reward[i]
        elif variant == "no reward":
            pass
        else:
            out[i, cols[row][-1]] += c.reward[i]
    return out


_SHAPED_MISTAKES = {
    "first": "the sequence reward is on the first completion token: it belongs on the last, when the answer is done",
    "last column": "the sequence reward is on the last column, which is padding for shorter answers: put it on each "
                   "row's last token where mask is 1",
    "every token": "the sequence reward is added on every token: it is paid once per answer, on its last token",
    "sign": "the KL's sign is flipped: k1 = log p_policy - log p_ref, and the reward is -beta * k1",
    "k3": "you used k3 = (r - 1) - log r; this exercise asks for k1 = log p_policy - log p_ref",
    "unmasked": "the penalty is charged off the mask too (prompt or padding): multiply it by mask",
    "no beta": "beta is missing: the penalty is -beta * k1",
    "no reward": "the sequence reward is missing: add it on each row's last completion token",
}


def check_shaped_rewards(fn: Callable) -> CheckResult:
    """Check ``fn(sequence_reward, logp_policy, logp_ref, mask, beta) -> rewards``, a ``(B, T)`` tensor.

    The arguments are float64 torch tensors: ``sequence_reward`` ``(B,)``,
    ``logp_policy``, ``logp_ref``, ``mask`` ``(B, T)`` (1 on each answer's
    tokens, which start after a prompt and are followed by padding) and a
    float ``beta``. The answer must be ``-beta * (logp_policy - logp_ref)`` on
    the masked tokens, plus ``sequence_reward`` on each row's last masked
    token, 0 elsewhere, within ``1e-6``, on four batches (prompts of several
    lengths, one-token answers, ``beta = 0``, a large ``beta``). The reference
    is written out in numpy here (``tests/test_rlhf.py`` checks it equals
    :func:`rl2llm.rlhf.shaped_rewards` with ``estimator="k1"``; importing that
    module here would tie every chapter's cache to Part IV's code). The hints
    recognise the reward on the first token, on the last column or on every
    token, the KL's sign flipped, k3 instead of k1, the penalty off the
    mask, ``beta`` or the reward forgotten.
    """
    import torch

    checker = "check_shaped_rewards"
    call = "fn(sequence_reward, logp_policy, logp_ref, mask, beta)"
    _check_callable(fn, checker, 5, call)
    results, first_error = [], None
    for case in _shaped_cases():
        t = lambda a: torch.tensor(a, dtype=torch.float64)
        args = (t(case.reward), t(case.logp), t(case.ref), t(case.mask), case.beta)
        want = _shaped_reference(case)
        answer, error = _call(fn, args)
        if error:
            if error == first_error:
                error = "the same error as in the first case that raised it (shown above)"
            first_error = first_error or error
            results.append(CaseResult(case.name, False, error))
            continue
        if answer is None:
            results.append(CaseResult(case.name, False, "returned None", "did you forget to return the rewards?"))
            continue
        try:
            mine = np.asarray(answer.detach() if isinstance(answer, torch.Tensor) else answer, dtype=float)
        except (TypeError, ValueError):
            results.append(CaseResult(case.name, False, f"returned {describe(answer)}; expected a tensor of "
                                                          f"shape {want.shape}"))
            continue
        if mine.shape != want.shape:
            hint = ("you returned one number per answer: return the reward of every token"
                    if mine.shape == want.shape[:1] else "")
            results.append(CaseResult(case.name, False, f"returned shape {mine.shape}; expected {want.shape}, "
                                                          "one reward per token", hint))
            continue
        wrong = ~np.isclose(mine, want, atol=1e-6, rtol=0)
        if not wrong.any():
            results.append(CaseResult(case.name, True))
            continue
        i, j = (int(x) for x in np.argwhere(wrong)[0])
        where = "a completion token" if case.mask[i, j] else "off the mask (prompt or padding)"
        message = (f"wrong at {wrong.sum()} of {wrong.size} entries; the first is row {i}, column {j} ({where}): "
                   f"yours {mine[i, j]:.6g}, expected {want[i, j]:.6g}")
        hint = next((text for variant, text in _SHAPED_MISTAKES.items()
                     if np.allclose(mine, _shaped_reference(case, variant), atol=1e-6)
                     and not np.allclose(want, _shaped_reference(case, variant), atol=1e-6)), "")
        results.append(CaseResult(case.name, False, message, hint))
    return CheckResult(checker, tuple(results))


# --------------------------------------------------------------------------- Lecture 13: Plackett–Luce

_PL_CALL = "plackett_luce(scores, ranking)"


@dataclass(frozen=True)
class _PLCase:
    name: str
    scores: np.ndarray   # (B, K) float64
    ranking: np.ndarray  # (B, K) int, best first


def _pl_cases() -> list[_PLCase]:
    rng = np.random.default_rng(13)
    batch = rng.normal(size=(4, 5))
    return [
        _PLCase("two answers, the second ranked first (Bradley–Terry)", np.array([[0.3, 1.1]]), np.array([[1, 0]])),
        _PLCase("three answers, ranking 2 > 0 > 1", np.array([[0.5, -1.0, 2.0]]), np.array([[2, 0, 1]])),
        _PLCase("a batch of four rows of five answers", batch,
                np.stack([rng.permutation(5) for _ in range(4)])),
        _PLCase("four equal scores (every order equally likely: log 4! = log 24)", np.zeros((1, 4)),
                np.array([[3, 1, 0, 2]])),
        _PLCase("large scores (exp would overflow): 800, -800, 0", np.array([[800.0, -800.0, 0.0]]),
                np.array([[1, 2, 0]])),
    ]


def _pl_reference(scores: np.ndarray, ranking: np.ndarray, variant: str = "right") -> float:
    """The Plackett–Luce loss (mean over rows) and the classic mistakes named by ``variant``."""
    from scipy.special import logsumexp

    total = []
    for s, rank in zip(scores, ranking):
        if variant == "reversed":
            rank = rank[::-1]
        if variant == "ignores ranking":
            rank = np.arange(len(s))
        ordered = s[rank]
        terms = []
        for k in range(len(s) - 1 if variant != "first only" else 1):
            rest = ordered if variant == "all in the denominator" else ordered[k:]
            terms.append(ordered[k] - logsumexp(rest))
        total.append(-sum(terms))
    total = np.array(total)
    if variant == "sum over rows":
        return float(total.sum())
    if variant == "likelihood sign":
        return float(-total.mean())
    return float(total.mean())


_PL_MISTAKES = {
    "reversed": "you read the ranking from worst to best: ranking[b][0] is the index of the *best* answer",
    "ignores ranking": "you used the answers in their given order: reorder the scores by the ranking first "
                       "(scores[b][ranking[b]])",
    "all in the denominator": "each choice must be among the answers still in play: divide by the sum over "
                              "the answers ranked at or below position k, not over all of them",
    "first only": "you kept only the first choice (a softmax cross-entropy on the best answer): a ranking "
                  "also says which of the rest is best, and so on down",
    "sum over rows": "you summed over the rows of the batch: average them (the loss of a batch is a mean)",
    "likelihood sign": "you returned the log-likelihood: the loss is its negative",
}


def check_plackett_luce(fn: Callable) -> CheckResult:
    """Check ``fn(scores, ranking) -> loss``: the Plackett–Luce negative log-likelihood, averaged over rows.

    ``scores`` is a float64 torch tensor ``(B, K)`` of rewards, ``ranking`` an
    int64 tensor ``(B, K)`` of the answers' indices from best to worst. The
    answer (a number or a 0-d tensor) is compared with
    :func:`rl2llm.reward_model.plackett_luce_loss`; the report names the case,
    both values and, where a classic mistake fits (the ranking read backwards,
    a softmax over all answers at every position, only the first choice, a sum
    instead of a mean, the sign), says so. One case has scores of ±800, where
    exponentials overflow: use ``torch.logsumexp``. Used by Lecture 13.
    """
    import torch

    checker = "check_plackett_luce"
    _check_callable(fn, checker, 2, _PL_CALL)
    results = []
    for case in _pl_cases():
        answer, error = _call(fn, (torch.tensor(case.scores, dtype=torch.float64),
                                   torch.tensor(case.ranking, dtype=torch.int64)))
        if error:
            results.append(CaseResult(case.name, False, error))
            continue
        if answer is None:
            results.append(CaseResult(case.name, False, "returned None instead of the loss; did you forget "
                                                        "the return statement?"))
            continue
        if isinstance(answer, torch.Tensor):
            if answer.numel() != 1:
                hint = ("you returned one loss per row: average them" if answer.numel() == len(case.scores)
                        else "")
                results.append(CaseResult(case.name, False, f"returned a tensor of shape {tuple(answer.shape)}; "
                                                            "expected one number", hint))
                continue
            answer = answer.detach().double().item()
        try:
            mine = float(answer)
        except (TypeError, ValueError):
            results.append(CaseResult(case.name, False, f"returned {describe(answer)}; expected one number"))
            continue
        want = _pl_reference(case.scores, case.ranking)
        if not np.isfinite(mine):
            hint = ("compute log(sum(exp(...))) with torch.logsumexp, which subtracts the largest score first"
                    if np.abs(case.scores).max() > 500 else "")
            results.append(CaseResult(case.name, False, f"returned {mine} where the loss is {want:.6g}", hint))
            continue
        if abs(mine - want) <= ATOL + RTOL * abs(want):
            results.append(CaseResult(case.name, True))
            continue
        hint = next((text for variant, text in _PL_MISTAKES.items()
                     if abs(mine - _pl_reference(case.scores, case.ranking, variant)) <= 1e-6
                     and abs(want - _pl_reference(case.scores, case.ranking, variant)) > 1e-6), "")
        results.append(CaseResult(case.name, False, f"yours {mine:.6g}, expected {want:.6g}", hint))
    return CheckResult(checker, tuple(results))


# --------------------------------------------------------------------------- Lecture 16: group advantages

_GROUP_CALL = "fn(rewards, group_size, method)"


def _group_reference(r: np.ndarray, G: int, method: str, variant: str = "right") -> np.ndarray:
    """Group advantages (``rl2llm.grpo.group_advantages``) and the classic mistakes named by ``variant``."""
    g = r.reshape(-1, G)
    mean = g.mean(axis=1, keepdims=True)
    if variant == "batch":                      # normalised over the whole batch, not per group
        mean = np.full_like(mean, r.mean())
    if method == "grpo":
        if variant == "population std":
            std = g.std(axis=1, keepdims=True)
        elif variant == "batch":
            std = np.full_like(mean, r.std(ddof=1))
        else:
            std = g.std(axis=1, ddof=1, keepdims=True)
        eps = 0.0 if variant == "no eps" else 1e-4
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((g - mean) / (std + eps)).reshape(-1)
    if method == "dr_grpo" or variant == "rloo with self":
        return (g - mean).reshape(-1)
    if variant == "rloo over G":
        return (g - (g.sum(axis=1, keepdims=True) - g) / G).reshape(-1)
    return (g - (g.sum(axis=1, keepdims=True) - g) / (G - 1)).reshape(-1)


_GROUP_MISTAKES = {
    "population std": "you divided by the population standard deviation (ddof 0); GRPO, as TRL computes it, "
                      "uses the unbiased one (divide the squared deviations by G - 1): torch's .std() default",
    "no eps": "add 1e-4 to the standard deviation: a group whose rewards are all equal has spread 0, and "
              "its advantages must be 0, not NaN",
    "batch": "you normalised over the whole batch: each group is compared with itself only "
             "(reshape to (n, G) and take the mean and spread along the group)",
    "rloo with self": "your RLOO baseline includes the answer itself (that is Dr. GRPO's advantage): "
                      "leave it out, (sum - r_i) / (G - 1)",
    "rloo over G": "you divided the sum of the other rewards by G: there are G - 1 of them",
}


def _group_cases():
    rng = np.random.default_rng(16)
    binary = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0], dtype=float)
    graded = rng.random(12).round(3)
    cases = []
    for method in ("grpo", "dr_grpo", "rloo"):
        cases.append((f"{method}: two groups of 8, right or wrong (1 and 4 right)", binary, 8, method))
        cases.append((f"{method}: three groups of 4, graded rewards", graded, 4, method))
    cases.append(("grpo: groups of 2", np.array([0.0, 1.0, 0.3, 0.7]), 2, "grpo"))
    cases.append(("rloo: groups of 2 (the baseline is the other answer)", np.array([0.0, 1.0, 0.3, 0.7]), 2, "rloo"))
    cases.append(("grpo: a group whose rewards are all equal, beside one that differs",
                  np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), 4, "grpo"))
    cases.append(("grpo: one group of 6 with negative rewards", np.array([-2.0, -1.0, -1.0, 0.0, -3.0, -2.5]), 6,
                  "grpo"))
    return cases


def check_group_advantages(fn: Callable) -> CheckResult:
    """Check ``fn(rewards, group_size, method) -> advantages``: GRPO, Dr. GRPO and RLOO advantages.

    ``rewards`` is a 1-D float32 torch tensor of ``n * group_size`` rewards, the
    answers to one prompt consecutive; ``method`` is ``"grpo"``, ``"dr_grpo"``
    or ``"rloo"``. The answer (a tensor, an array or a list of one advantage
    per reward) is compared with :func:`rl2llm.grpo.group_advantages`, to 1e-4;
    the checker names the first answer that differs, with a hint when a classic
    mistake fits the numbers.
    """
    import torch

    checker = "check_group_advantages"
    _check_callable(fn, checker, 3, _GROUP_CALL)
    results = []
    for name, rewards, G, method in _group_cases():
        answer, error = _call(fn, (torch.tensor(rewards, dtype=torch.float32), G, method))
        if error:
            results.append(CaseResult(name, False, error))
            continue
        if answer is None:
            results.append(CaseResult(name, False, "returned None instead of the advantages; did you forget "
                                                   "the return statement?"))
            continue
        if isinstance(answer, torch.Tensor):
            answer = answer.detach().cpu().double().numpy()
        try:
            array = np.asarray(answer, dtype=float)
        except (TypeError, ValueError):
            results.append(CaseResult(name, False, f"returned {describe(answer)}; expected one advantage per reward"))
            continue
        if array.shape != rewards.shape:
            hint = "return one advantage per answer, flattened back to 1-D" if array.size == rewards.size else ""
            results.append(CaseResult(name, False, f"returned shape {array.shape}; expected {rewards.shape}", hint))
            continue
        right = _group_reference(rewards, G, method)
        if np.allclose(array, right, atol=1e-4, rtol=1e-4):
            results.append(CaseResult(name, True))
            continue
        if np.isnan(array).any():
            message = f"returned NaN at answer {int(np.argmax(np.isnan(array)))}"
        else:
            i = int(np.argmax(np.abs(array - right)))
            message = (f"answer {i} (group {i // G}, reward {rewards[i]:g}): advantage {array[i]:.4g}, "
                       f"expected {right[i]:.4g}")
        hint = ""
        for variant, text in _GROUP_MISTAKES.items():
            alt = _group_reference(rewards, G, method, variant)
            same = np.allclose(array, alt, atol=1e-4, rtol=1e-4, equal_nan=True)
            if same and not np.allclose(alt, right, atol=1e-4, rtol=1e-4, equal_nan=True):
                hint = text
                break
        if not hint and method == "dr_grpo" and np.allclose(array, _group_reference(rewards, G, "grpo"), atol=1e-4):
            hint = "Dr. GRPO does not divide by the standard deviation: subtract the group mean only"
        if not hint and method == "grpo" and np.allclose(array, _group_reference(rewards, G, "dr_grpo"), atol=1e-4):
            hint = "GRPO divides by the group's standard deviation (plus 1e-4)"
        results.append(CaseResult(name, False, message, hint))
    return CheckResult(checker, tuple(results))
