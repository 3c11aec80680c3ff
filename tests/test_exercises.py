"""Tests for rl2llm.exercises: the reference solutions pass, wrong ones fail with a precise message.

Each wrong solution below is a mistake a reader is likely to make; the test
checks that the checker names the case, the state and the size of the error,
or the kind of mistake, rather than just saying "wrong".
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from rl2llm import exercises
from rl2llm.dp import evaluate_policy_exact, policy_iteration
from rl2llm.exercises import CheckResult, ExerciseFailed, check_policy_evaluation, check_value_iteration

# --------------------------------------------------------------------------- reference solutions


def evaluate_policy(mdp, policy):
    """A correct reader's solution: solve the linear system on the live states."""
    states = np.arange(mdp.n_states)
    P_pi, R_pi = mdp.P[states, policy], mdp.R[states, policy]
    live = ~mdp.terminal
    V = np.zeros(mdp.n_states)
    V[live] = np.linalg.solve(np.eye(live.sum()) - mdp.gamma * P_pi[np.ix_(live, live)], R_pi[live])
    return V


def iterate_evaluation(mdp, policy, tol=1e-12):
    """Another correct one: repeated backups with a tight tolerance."""
    states = np.arange(mdp.n_states)
    P_pi, R_pi = mdp.P[states, policy], mdp.R[states, policy]
    V = np.zeros(mdp.n_states)
    while True:
        new = R_pi + mdp.gamma * P_pi @ V
        new[mdp.terminal] = 0.0
        if np.abs(new - V).max() < tol:
            return new
        V = new


def value_iteration(mdp, accuracy=1e-9):
    V = np.zeros(mdp.n_states)
    tol = accuracy * (1 - mdp.gamma) / mdp.gamma if mdp.gamma > 0 else np.inf
    while True:
        Q = mdp.R + mdp.gamma * (mdp.P @ V)
        Q[mdp.terminal] = 0.0
        new = Q.max(axis=1)
        done = np.abs(new - V).max() <= tol
        V = new
        if done:
            return V, Q.argmax(axis=1)


def library_value_iteration(mdp):
    """The package's own solver passes its own checker."""
    result = policy_iteration(mdp)
    return result.V, result.policy


@pytest.mark.parametrize("solution", [evaluate_policy, iterate_evaluation, evaluate_policy_exact])
def test_correct_policy_evaluations_pass(solution):
    result = check_policy_evaluation(solution)
    assert isinstance(result, CheckResult)
    assert result.passed and bool(result) and not result.failures
    assert len(result.cases) == 6
    report = str(result)
    assert report.startswith("check_policy_evaluation: all cases pass")
    assert repr(result) == report and report.count("  pass  ") == 6
    result.raise_if_failed()  # nothing to raise


@pytest.mark.parametrize("solution", [value_iteration, library_value_iteration])
def test_correct_value_iterations_pass(solution):
    result = check_value_iteration(solution)
    assert result.passed, result.report()
    assert len(result.cases) == 7


def test_the_cases_cover_the_edge_cases():
    names = [case.name for case in exercises._evaluation_cases()]
    assert any("gamma = 1 " in n for n in names) and any("0.999" in n for n in names)
    assert any("gamma = 0 " in n for n in names)
    assert any(case.mdp.terminal.any() for case in exercises._evaluation_cases())
    assert any(not case.mdp.terminal.any() for case in exercises._evaluation_cases())
    assert any(case.mdp.n_actions == 3 for case in exercises._optimisation_cases())
    assert any(case.mdp.terminal.all() for case in exercises._optimisation_cases())
    for case in exercises._evaluation_cases() + exercises._optimisation_cases():
        assert case.mdp.P.shape == (case.mdp.n_states, case.mdp.n_actions, case.mdp.n_states)  # dense, as promised


# --------------------------------------------------------------------------- wrong policy evaluations


def failure(result: CheckResult, case_fragment: str):
    (case,) = [c for c in result.cases if case_fragment in c.name]
    assert not case.passed
    return case


def test_a_wrong_value_in_one_state_is_located_and_measured():
    def off_in_state_5(mdp, policy):
        V = evaluate_policy(mdp, policy)
        if mdp.n_states > 5:
            V[5] += 0.31
        return V

    result = check_policy_evaluation(off_in_state_5)
    assert not result.passed
    case = failure(result, "grid world")
    assert case.message.startswith("V differs from the exact solution in state 5 (row 1, column 2) by 0.31 ")
    assert "(yours " in case.message and "exact " in case.message
    case = failure(result, "random world")
    assert "in state 5 by 0.31" in case.message
    assert failure(result, "FrozenLake 4x4").hint.startswith("state 5 (row 1, column 1) is terminal")
    assert result.cases[0].passed  # the two-state machine has no state 5
    assert "1 of 6 cases pass" in str(result)
    with pytest.raises(ExerciseFailed, match="FAIL  grid world"):
        result.raise_if_failed()


def test_ignoring_terminal_states_fails_with_gamma_one():
    def full_system(mdp, policy):
        states = np.arange(mdp.n_states)
        P_pi, R_pi = mdp.P[states, policy], mdp.R[states, policy]
        return np.linalg.solve(np.eye(mdp.n_states) - mdp.gamma * P_pi, R_pi)

    result = check_policy_evaluation(full_system)
    assert [c.passed for c in result.cases].count(False) == 1
    case = failure(result, "gamma = 1")
    assert case.message.startswith("raised LinAlgError: Singular matrix (in full_system, line")
    assert "set V = 0 in terminal states" in case.hint


def test_discounting_the_first_reward_is_diagnosed():
    result = check_policy_evaluation(lambda mdp, policy: mdp.gamma * evaluate_policy(mdp, policy))
    case = failure(result, "two-state machine")
    assert "differs from the exact solution in 2 of 2 states" in case.message
    assert case.hint.startswith("your values are the exact ones multiplied by gamma")


def test_stopping_too_early_is_diagnosed():
    result = check_policy_evaluation(lambda mdp, policy: iterate_evaluation(mdp, policy, tol=1e-5))
    case = failure(result, "0.999")
    assert "did you stop iterating too early" in case.hint and "999 * tol" in case.hint


def test_a_transposed_transition_array_is_diagnosed():
    def transposed(mdp, policy):
        states = np.arange(mdp.n_states)
        P_pi, R_pi = mdp.P[states, policy].T, mdp.R[states, policy]
        live = ~mdp.terminal
        V = np.zeros(mdp.n_states)
        V[live] = np.linalg.solve(np.eye(live.sum()) - mdp.gamma * P_pi[np.ix_(live, live)], R_pi[live])
        return V

    result = check_policy_evaluation(transposed)
    case = failure(result, "two-state machine")
    assert "P read as P[s2, a, s]" in case.hint


@pytest.mark.parametrize("solution, message", [
    (lambda mdp, policy: None, "returned None instead of V; did you forget the return statement?"),
    (lambda mdp, policy: evaluate_policy(mdp, policy)[:, None], "returned V of shape (2, 1) (a column"),
    (lambda mdp, policy: evaluate_policy(mdp, policy)[:-1], "returned V of shape (1,); expected (2,)"),
    (lambda mdp, policy: "V", "returned str 'V'; V must be an array of shape (2,)"),
    (lambda mdp, policy: 3.0, "returned float 3.0; V must be an array of shape (2,)"),
    (lambda mdp, policy: np.full(mdp.n_states, np.nan), "V[0] = nan: every value must be a finite number"),
    (lambda mdp, policy: 1 / 0, "raised ZeroDivisionError: division by zero (in <lambda>, line"),
])
def test_malformed_answers_are_described(solution, message):
    result = check_policy_evaluation(solution)
    assert not any(c.passed for c in result.cases)
    assert message in result.cases[0].message, result.cases[0].message


def test_the_reader_cannot_corrupt_the_reference():
    def vandal(mdp, policy):
        mdp.P[...] = 0.0  # works on a copy: later cases and the reference are unharmed
        policy[...] = 0
        return evaluate_policy_exact(mdp.with_gamma(mdp.gamma), np.zeros(mdp.n_states, dtype=int))

    check_policy_evaluation(vandal)
    assert check_policy_evaluation(evaluate_policy).passed


# --------------------------------------------------------------------------- wrong value iterations


def test_a_loose_stopping_rule_fails_near_gamma_one():
    def loose(mdp):
        V = np.zeros(mdp.n_states)
        while True:
            Q = mdp.R + mdp.gamma * (mdp.P @ V)
            Q[mdp.terminal] = 0.0
            new = Q.max(axis=1)
            if np.abs(new - V).max() < 1e-6:
                return new, Q.argmax(axis=1)
            V = new

    result = check_value_iteration(loose)
    case = failure(result, "0.999")
    assert case.message.startswith("V differs from the optimal values in ")
    assert "999 * tol" in case.hint


def test_a_policy_that_is_not_greedy_is_located():
    def shifted_policy(mdp):
        V, policy = value_iteration(mdp)
        return V, (policy + 1) % mdp.n_actions

    result = check_value_iteration(shifted_policy)
    case = failure(result, "grid world")
    assert case.message.startswith("the policy is not optimal in state ")
    assert re.search(r"\(row \d, column \d\): following it from there is worth -?[\d.]+, the best possible is "
                     r"-?[\d.]+ \(your action \d \((left|down|right|up)\), an optimal action is \d \((left|down|right|up)\)\)",
                     case.message), case.message
    assert case.hint.startswith("your values are right")
    assert result.cases[-1].passed  # every state terminal: any policy is optimal


def test_off_by_gamma_values_fail_in_value_iteration():
    def off_by_gamma(mdp):
        V, policy = value_iteration(mdp)
        return mdp.gamma * V, policy

    case = failure(check_value_iteration(off_by_gamma), "random world")
    assert "multiplied by gamma" in case.hint


@pytest.mark.parametrize("solution, message", [
    (lambda mdp: value_iteration(mdp)[0], "expected a pair: return V, policy"),
    (lambda mdp: (value_iteration(mdp)[0], None), "returned None instead of policy"),
    (lambda mdp: (value_iteration(mdp)[0], np.full(mdp.n_states, -1)), "policy[0] = -1 is not an action"),
    (lambda mdp: (value_iteration(mdp)[0], np.full(mdp.n_states, 0.5)), "policy[0] = 0.5 is not an action"),
    (lambda mdp: (np.zeros(3), np.zeros(3, int)), "returned V of shape (3,); expected ("),
])
def test_malformed_pairs_are_described(solution, message):
    result = check_value_iteration(solution)
    assert message in result.cases[0].message, result.cases[0].message


# --------------------------------------------------------------------------- the checkers' own arguments


@pytest.mark.parametrize("checker", [check_policy_evaluation, check_value_iteration])
def test_a_checker_refuses_what_is_not_a_function(checker):
    with pytest.raises(TypeError, match=rf"{checker.__name__}: fn must be your function .* got int 3"):
        checker(3)
    with pytest.raises(TypeError, match="got NoneType None"):
        checker(None)


def test_a_checker_names_the_arguments_it_calls_with():
    with pytest.raises(TypeError, match=r"fn must take 2 arguments, evaluate_policy\(mdp, policy\); "
                                        r"one\(mdp\) does not"):
        def one(mdp):
            return None
        check_policy_evaluation(one)
    with pytest.raises(TypeError, match=r"fn must take 1 argument, value_iteration\(mdp\)"):
        check_value_iteration(lambda mdp, tol: None)
    assert check_value_iteration(lambda mdp, tol=1e-10: value_iteration(mdp)).passed  # defaults are fine


# =========================================================================== Lecture 3: the TD-target checker

from rl2llm.exercises import check_td_target  # noqa: E402


def td_target(method, reward, q_next, next_action, terminated, gamma, epsilon):
    """A correct reader's solution."""
    if terminated:
        return reward
    if method == "sarsa":
        return reward + gamma * q_next[next_action]
    if method == "q_learning":
        return reward + gamma * q_next.max()
    greedy = q_next == q_next.max()
    probs = epsilon / len(q_next) + (1 - epsilon) * greedy / greedy.sum()
    return reward + gamma * probs @ q_next


def test_the_correct_td_target_passes():
    result = check_td_target(td_target)
    assert result.passed, result.report()
    assert len(result.cases) == 13
    methods = " ".join(case.name for case in result.cases)
    for needed in ("Q-learning", "SARSA", "expected SARSA", "terminal", "tie", "gamma = 0", "gamma = 1",
                   "epsilon = 0", "epsilon = 1"):
        assert needed in methods


def _except(method, replacement):
    """td_target, but ``method`` computed by ``replacement``."""
    def solution(m, reward, q_next, next_action, terminated, gamma, epsilon):
        if m == method:
            return replacement(reward, q_next, next_action, terminated, gamma, epsilon)
        return td_target(m, reward, q_next, next_action, terminated, gamma, epsilon)
    return solution


@pytest.mark.parametrize("solution, case, hint", [
    (_except("sarsa", lambda r, q, a, t, g, e: r if t else r + g * q.max()),
     "SARSA, the next action is not the greedy one", "not from the best one (that is Q-learning)"),
    (_except("q_learning", lambda r, q, a, t, g, e: r if t else r + g * q[a]),
     "Q-learning, an ordinary step", "max(q_next), whatever the agent does next (that is SARSA)"),
    (_except("q_learning", lambda r, q, a, t, g, e: r + g * q.max()),
     "Q-learning, the next state is terminal", "the target is just the reward"),
    (_except("expected_sarsa", lambda r, q, a, t, g, e: r if t else r + g * q.max()),
     "expected SARSA, one greedy action, epsilon = 0.1", "each action has probability epsilon / A"),
    (_except("expected_sarsa", lambda r, q, a, t, g, e: r if t else r + g * (e / len(q) + (1 - e) * (q == q.max())) @ q),
     "expected SARSA, a tie between actions 0 and 2", "*share* 1 - epsilon"),
    (_except("expected_sarsa", lambda r, q, a, t, g, e: r if t else r + g * np.where(
        np.arange(len(q)) == q.argmax(), 1 - e, e / (len(q) - 1)) @ q),
     "expected SARSA, one greedy action, epsilon = 0.1", "the greedy one included: each gets epsilon / A"),
    (_except("sarsa", lambda r, q, a, t, g, e: r if t else g * (r + g * q[a])),
     "SARSA, the next action is not the greedy one", ""),
    # expected SARSA that forgets the terminal case: told about the terminal state, not about ties
    (_except("expected_sarsa", lambda r, q, a, t, g, e: r + g * (
        e / len(q) + (1 - e) * (q == q.max()) / (q == q.max()).sum()) @ q),
     "expected SARSA, the next state is terminal", "no expected value of the next state is added"),
])
def test_classic_td_target_mistakes_are_diagnosed(solution, case, hint):
    result = check_td_target(solution)
    assert not result.passed
    failed = {c.name: c for c in result.failures}
    name = next(n for n in failed if n.startswith(case))
    assert "expected" in failed[name].message and hint in failed[name].hint
    assert str(result).count("FAIL") == len(result.failures)


def test_td_target_malformed_answers_and_exceptions_are_described():
    def no_return(method, reward, q_next, next_action, terminated, gamma, epsilon):
        reward + gamma * q_next.max()
    assert "returned None instead of the target" in check_td_target(no_return).cases[0].message

    def an_array(method, reward, q_next, next_action, terminated, gamma, epsilon):
        return reward + gamma * q_next
    assert "the target is one number" in check_td_target(an_array).cases[0].message

    def raises(method, reward, q_next, next_action, terminated, gamma, epsilon):
        return q_next[7]
    message = check_td_target(raises).cases[0].message
    assert "raised IndexError" in message and "line" in message

    def the_discount_twice(method, reward, q_next, next_action, terminated, gamma, epsilon):
        return gamma * td_target(method, reward, q_next, next_action, terminated, gamma, epsilon)
    first = check_td_target(the_discount_twice).cases[0]
    assert not first.passed and "only what follows is discounted" in first.hint


def test_td_target_checker_refuses_what_is_not_a_function_and_the_wrong_arity():
    with pytest.raises(TypeError, match=r"check_td_target: fn must be your function"):
        check_td_target("q_learning")
    with pytest.raises(TypeError, match=r"fn must take 7 arguments, td_target\(method, reward, q_next"):
        check_td_target(lambda method, reward: 0.0)


def test_the_reader_cannot_change_the_cases():
    def vandal(method, reward, q_next, next_action, terminated, gamma, epsilon):
        q_next[:] = 0.0
        return td_target(method, reward, q_next, next_action, terminated, gamma, epsilon)
    assert not check_td_target(vandal).passed
    assert check_td_target(td_target).passed


# =========================================================================== Lecture 2: reward-to-go


def _reader_reward_to_go(rewards, dones, gamma):
    """A correct reader's solution: loop backwards, restart after every episode end."""
    G, running = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + (0.0 if dones[t] else gamma * running)
        G[t] = running
    return G


def test_reward_to_go_solutions_pass():
    from rl2llm.exercises import check_reward_to_go
    from rl2llm.rollouts import reward_to_go

    for solution in (_reader_reward_to_go, reward_to_go):
        result = check_reward_to_go(solution)
        assert result.passed, result.report()
        assert len(result.cases) == 7 and str(result).startswith("check_reward_to_go: all cases pass")


def test_reward_to_go_cases_cover_the_edge_cases():
    cases = exercises._reward_to_go_cases()
    assert any(c.gamma == 0.0 for c in cases) and any(c.gamma == 1.0 for c in cases)
    assert any(not c.dones[-1] for c in cases), "a stream that stops mid-episode"
    assert any(c.dones.sum() >= 3 for c in cases), "several episodes back to back"
    assert any(len(c.rewards) == 500 for c in cases) and any((c.rewards < 0).any() for c in cases)
    one_step = [c for c in cases if any(c.dones[i] and c.dones[i - 1] for i in range(1, len(c.dones)))]
    assert one_step, "an episode of a single step"


def _rtg_failure(fn, fragment):
    from rl2llm.exercises import check_reward_to_go

    result = check_reward_to_go(fn)
    assert not result.passed
    (case,) = [c for c in result.cases if fragment in c.name]
    assert not case.passed
    return case


def test_reward_to_go_running_on_across_episodes_is_located_and_explained():
    def no_reset(rewards, dones, gamma):
        G, running = np.zeros(len(rewards)), 0.0
        for t in reversed(range(len(rewards))):
            running = rewards[t] + gamma * running
            G[t] = running
        return G

    case = _rtg_failure(no_reset, "two episodes back to back")
    assert case.message == ("G is wrong at 2 of 5 steps; the first is step 0 (episode 0, its step 0): "
                            "yours 3.5625, the reward-to-go 2 (off by 1.56)")
    assert case.hint.startswith("the reward-to-go runs on across episode ends")


@pytest.mark.parametrize("mistake, fragment, hint", [
    ("own reward missing", "one episode of three steps", "the step's own reward is missing"),
    ("discounted twice", "rewards 0, 0, 1", "the right ones times gamma"),
    ("whole return", "two episodes back to back", "every step of an episode got the whole episode's return"),
    ("forward sum", "rewards 0, 0, 1", "a forward running sum"),
    ("reset one step late", "two episodes back to back", "the reset is one step off"),
])
def test_reward_to_go_classic_mistakes_get_their_hint(mistake, fragment, hint):
    def wrong(rewards, dones, gamma):
        right = _reader_reward_to_go(rewards, dones, gamma)
        if mistake == "own reward missing":
            return right - rewards
        if mistake == "discounted twice":
            return gamma * right
        if mistake == "whole return":
            starts = np.concatenate([[0], np.flatnonzero(dones[:-1]) + 1])
            return right[starts][np.concatenate([[0], np.cumsum(dones[:-1])])]
        if mistake == "forward sum":
            G, running = np.zeros(len(rewards)), 0.0
            for t in range(len(rewards)):
                running = rewards[t] + gamma * running
                G[t] = running
                if dones[t]:
                    running = 0.0
            return G
        G, running = np.zeros(len(rewards)), 0.0  # the reset one step off: after the episode's last step
        for t in reversed(range(len(rewards))):
            running = rewards[t] + gamma * running
            G[t] = running
            if dones[t]:
                running = 0.0
        return G

    assert hint in _rtg_failure(wrong, fragment).hint


def test_reward_to_go_malformed_answers_and_exceptions_are_described():
    from rl2llm.exercises import check_reward_to_go

    def no_return(rewards, dones, gamma):
        _reader_reward_to_go(rewards, dones, gamma)
    assert "returned None instead of G" in check_reward_to_go(no_return).cases[0].message

    def a_column(rewards, dones, gamma):
        return _reader_reward_to_go(rewards, dones, gamma)[:, None]
    assert "flatten it with .ravel()" in check_reward_to_go(a_column).cases[0].message

    def one_short(rewards, dones, gamma):
        return _reader_reward_to_go(rewards, dones, gamma)[1:]
    assert "expected (3,), one value per step" in check_reward_to_go(one_short).cases[0].message

    def raises(rewards, dones, gamma):
        return rewards[len(rewards)]
    message = check_reward_to_go(raises).cases[0].message
    assert "raised IndexError" in message and "line" in message

    def nan(rewards, dones, gamma):
        return np.full(len(rewards), np.nan)
    assert "must be a finite number" in check_reward_to_go(nan).cases[0].message


def test_reward_to_go_checker_refuses_what_is_not_a_function_and_the_wrong_arity():
    from rl2llm.exercises import check_reward_to_go

    with pytest.raises(TypeError, match=r"check_reward_to_go: fn must be your function"):
        check_reward_to_go([1.0, 2.0])
    with pytest.raises(TypeError, match=r"fn must take 3 arguments, reward_to_go\(rewards, dones, gamma\)"):
        check_reward_to_go(lambda rewards, dones: rewards)


def test_reward_to_go_reader_cannot_change_the_cases():
    from rl2llm.exercises import check_reward_to_go

    def vandal(rewards, dones, gamma):
        rewards[:] = 0.0
        dones[:] = True
        return np.zeros(len(rewards))
    assert not check_reward_to_go(vandal).passed
    assert check_reward_to_go(_reader_reward_to_go).passed
