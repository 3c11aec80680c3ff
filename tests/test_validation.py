"""Bad input gets a clear error (design principle 9), package-wide: rl2llm.mdp, rl2llm.dp, rl2llm.seeding.

Every bad-input case checks the exception type *and* that the message names
the argument (and, where it matters, the problem). Then the valid edge cases
that the checks must not refuse: NumPy scalars, lists, gamma = 1 with
terminal states, sparse P, whole-number float actions.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import scipy.sparse as sp

import rl2llm.mdp
from rl2llm._validate import PROB_TOL
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
from rl2llm.mdp import RIGHT, FiniteMDP, as_stochastic, from_gymnasium, gridworld, random_mdp, simulate_policy
from rl2llm.seeding import seed_everything

NAN, INF = float("nan"), float("inf")

#: A small dense world: 3 states, 2 actions, uniform transitions.
U = np.full((3, 2, 3), 1 / 3)
R0 = np.zeros((3, 2))
MDP = FiniteMDP(U, R0, 0.9)
GRID = gridworld(["S.G", "..X"], slip=0.1, gamma=0.9)  # sparse P, 6 states
LAKE_ENV = gym.make("FrozenLake-v1", is_slippery=False)
CARTPOLE = gym.make("CartPole-v1")
GOOD_LAKE_POLICY = np.zeros(16, dtype=int)


def with_entry(array: np.ndarray, index, value) -> np.ndarray:
    """A copy of ``array`` with one entry changed."""
    out = np.array(array, dtype=float)
    out[index] = value
    return out


class FakeTabularEnv:
    """The smallest object that looks like a gymnasium toy-text environment, with a table we can break."""

    def __init__(self, table, n_states=2, n_actions=1):
        self.observation_space = gym.spaces.Discrete(n_states)
        self.action_space = gym.spaces.Discrete(n_actions)
        self.unwrapped = self
        self.spec = None
        self.P = table


def offset_env() -> FakeTabularEnv:
    """States numbered 1 and 2 instead of 0 and 1 (gymnasium's Discrete(n, start=1))."""
    env = FakeTabularEnv(GOOD_TABLE)
    env.observation_space = gym.spaces.Discrete(2, start=1)
    return env


GOOD_TABLE = {0: {0: [(1.0, 1, 0.0, True)]}, 1: {0: [(1.0, 1, 0.0, True)]}}


def broken_table(prob=1.0, nxt=1, reward=0.0) -> dict:
    """GOOD_TABLE with the one outcome of state 0 changed."""
    return {0: {0: [(prob, nxt, reward, True)]}, 1: {0: [(1.0, 1, 0.0, True)]}}


# --------------------------------------------------------------------------- the bad inputs
#
# (id, call, exception, regex the message must match). The regex always contains the
# argument's name; most also say what is wrong with it.

BAD = [
    # ---- FiniteMDP: R
    ("R-nan", lambda: FiniteMDP(U, with_entry(R0, (1, 0), NAN), 0.9), ValueError, r"R must be finite.*R\[1, 0\] = nan"),
    ("R-inf", lambda: FiniteMDP(U, with_entry(R0, (0, 1), INF), 0.9), ValueError, r"R must be finite.*R\[0, 1\] = inf"),
    ("R-1d", lambda: FiniteMDP(U, np.zeros(3), 0.9), ValueError, r"R must have shape \(S, A\)"),
    ("entry-shape", lambda: FiniteMDP(U, R0, 0.9, entry_reward=np.zeros(2)), ValueError, r"entry_reward"),
    ("entry-nan", lambda: FiniteMDP(U, R0, 0.9, entry_reward=[0, NAN, 0]), ValueError, r"entry_reward"),
    ("R-empty", lambda: FiniteMDP(np.zeros((0, 2, 0)), np.zeros((0, 2)), 0.9),
     ValueError, r"R must have shape .*S, A >= 1"),
    ("R-strings", lambda: FiniteMDP(U, [["a", "b"]] * 3, 0.9), TypeError, r"R must be an array of numbers"),
    ("R-ragged", lambda: FiniteMDP(U, [[0, 0], [0]], 0.9), ValueError, r"R must be a rectangular array"),
    ("R-bools", lambda: FiniteMDP(U, np.zeros((3, 2), bool), 0.9), TypeError, r"R must be an array of numbers.*bools"),
    ("R-None", lambda: FiniteMDP(U, None, 0.9), TypeError, r"R must be an array of numbers, got NoneType"),
    # ---- FiniteMDP: P
    ("P-nan", lambda: FiniteMDP(with_entry(U, (2, 1, 0), NAN), R0, 0.9),
     ValueError, r"P must be finite: P\[2, 1, 0\] = nan"),
    ("P-inf", lambda: FiniteMDP(with_entry(U, (0, 0, 0), INF), R0, 0.9), ValueError, r"P must be finite"),
    ("P-sparse-nan", lambda: FiniteMDP(sp.csr_matrix(with_entry(U, (1, 1, 2), NAN).reshape(6, 3)), R0, 0.9),
     ValueError, r"P must be finite: P\[1, 1, 2\] = nan"),
    ("P-negative", lambda: FiniteMDP(with_entry(U, (0, 0), [1.5, -0.5, 0.0]), R0, 0.9), ValueError,
     r"P has negative probabilities: P\[0, 0, 1\] = -0\.5"),
    ("P-sparse-negative", lambda: FiniteMDP(sp.csr_matrix(with_entry(U, (2, 0, 1), -1.0).reshape(6, 3)), R0, 0.9),
     ValueError, r"P has negative probabilities: P\[2, 0, 1\] = -1"),
    ("P-row-1+1e-5", lambda: FiniteMDP(with_entry(U, (1, 1, 1), 1 / 3 + 1e-5), R0, 0.9),
     ValueError, r"P\[s, a, :\] must sum to 1; state 1, action 1 sums to 1\.00001"),
    ("P-sparse-row-1-1e-5",
     lambda: FiniteMDP(sp.csr_matrix(with_entry(U, (2, 1, 0), 1 / 3 - 1e-5).reshape(6, 3)), R0, 0.9),
     ValueError, r"P\[s, a, :\] must sum to 1; state 2, action 1 sums to 0\.99999"),
    ("P-row-1+2e-9", lambda: FiniteMDP(with_entry(U, (0, 0, 0), 1 / 3 + 2e-9), R0, 0.9),
     ValueError, r"P\[s, a, :\] must sum to 1.*tolerance is 1e-09"),
    ("P-shape", lambda: FiniteMDP(np.full((3, 2, 2), 0.5), R0, 0.9), ValueError, r"P must have shape \(S, A, S\)"),
    ("P-strings", lambda: FiniteMDP(np.full((3, 2, 3), "x"), R0, 0.9), TypeError, r"P must be an array of numbers"),
    ("P-sparse-bool", lambda: FiniteMDP(sp.csr_matrix(np.eye(6, 3, dtype=bool)), R0, 0.9),
     TypeError, r"P must hold numbers"),
    # ---- FiniteMDP: gamma and the other fields
    ("gamma-True", lambda: FiniteMDP(U, R0, True), TypeError, r"gamma must be a real number, got bool"),
    ("gamma-str", lambda: FiniteMDP(U, R0, "0.9"), TypeError, r"gamma must be a real number, got str"),
    ("gamma-None", lambda: FiniteMDP(U, R0, None), TypeError, r"gamma must be a real number"),
    ("gamma-complex", lambda: FiniteMDP(U, R0, 0.5 + 0j), TypeError, r"gamma must be a real number"),
    ("gamma-nan", lambda: FiniteMDP(U, R0, NAN), ValueError, r"gamma must lie in \[0, 1\], got nan"),
    ("gamma-inf", lambda: FiniteMDP(U, R0, INF), ValueError, r"gamma must lie in \[0, 1\], got inf"),
    ("gamma-1.5", lambda: FiniteMDP(U, R0, 1.5), ValueError, r"gamma must lie in \[0, 1\], got 1\.5"),
    ("gamma-huge-int", lambda: FiniteMDP(U, R0, 10**400), ValueError, r"gamma must lie in \[0, 1\], got inf"),
    ("terminal-shape", lambda: FiniteMDP(U, R0, 0.9, terminal=[True, False]),
     ValueError, r"terminal must be .*shape \(S,\)"),
    ("terminal-2", lambda: FiniteMDP(U, R0, 0.9, terminal=[0, 2, 0]), ValueError, r"terminal must be a boolean mask"),
    ("terminal-str", lambda: FiniteMDP(U, R0, 0.9, terminal=["yes", "no", "no"]),
     ValueError, r"terminal must be a boolean"),
    ("start-5", lambda: FiniteMDP(U, R0, 0.9, start=5), ValueError, r"start must be an integer in 0 \.\. 2, got 5"),
    ("start--1", lambda: FiniteMDP(U, R0, 0.9, start=-1), ValueError, r"start must be an integer in 0 \.\. 2"),
    ("start-float", lambda: FiniteMDP(U, R0, 0.9, start=1.0), TypeError, r"start must be an integer, got float"),
    ("name-int", lambda: FiniteMDP(U, R0, 0.9, name=3), TypeError, r"name must be a str"),
    ("grid_shape-0", lambda: FiniteMDP(U, R0, 0.9, grid_shape=(0, 3)),
     ValueError, r"grid_shape must be a positive integer"),
    ("grid_shape-1", lambda: FiniteMDP(U, R0, 0.9, grid_shape=(3,)), ValueError, r"grid_shape must be a pair"),
    ("cells-shape", lambda: FiniteMDP(U, R0, 0.9, grid_shape=(1, 3), cells=[[0, 0], [0, 1]]),
     ValueError, r"cells must be .*\(S, 2\)"),
    ("cells-outside", lambda: FiniteMDP(U, R0, 0.9, grid_shape=(1, 3), cells=[[0, 0], [0, 1], [0, 3]]), ValueError,
     r"cells must be .*inside grid_shape"),
    ("layout-str", lambda: FiniteMDP(U, R0, 0.9, layout="S.G"), TypeError, r"layout must be a sequence of row strings"),
    ("with_gamma-nan", lambda: MDP.with_gamma(NAN), ValueError, r"gamma must lie in \[0, 1\]"),
    ("with_gamma-True", lambda: MDP.with_gamma(True), TypeError, r"gamma must be a real number"),
    # ---- FiniteMDP.expected_next
    ("expected_next-V-length", lambda: MDP.expected_next(np.zeros(4)),
     ValueError, r"V must have shape \(S,\) = \(3,\), got \(4,\)"),
    ("expected_next-V-nan", lambda: MDP.expected_next([0.0, NAN, 0.0]), ValueError, r"V must be finite.*V\[1\] = nan"),
    ("expected_next-V-2d", lambda: MDP.expected_next(np.zeros((3, 1))), ValueError, r"V must have shape \(S,\)"),
    ("expected_next-V-str", lambda: MDP.expected_next(["a", "b", "c"]), TypeError, r"V must be an array of numbers"),
    # ---- policies: FiniteMDP.policy_matrices and as_stochastic
    ("policy--1", lambda: MDP.policy_matrices([0, -1, 1]),
     ValueError, r"policy\[1\] = -1 is not an action: actions are 0 \.\. 1"),
    ("policy-A", lambda: MDP.policy_matrices([0, 2, 1]), ValueError, r"policy\[1\] = 2 is not an action"),
    ("policy-1.5", lambda: MDP.policy_matrices([0, 1.5, 1]),
     ValueError, r"policy must hold whole action numbers.*policy\[1\] = 1\.5"),
    ("policy-nan", lambda: MDP.policy_matrices([0, NAN, 1]), ValueError, r"policy must be finite"),
    ("policy-length", lambda: MDP.policy_matrices([0, 1]),
     ValueError, r"policy must be \(S = 3,\) actions .*got shape \(2,\)"),
    ("policy-3d", lambda: MDP.policy_matrices(np.zeros((3, 2, 1))),
     ValueError, r"policy must be .*got shape \(3, 2, 1\)"),
    ("policy-bools", lambda: MDP.policy_matrices([True, False, True]),
     TypeError, r"policy must be an array of numbers.*bools"),
    ("policy-str", lambda: MDP.policy_matrices(["left", "up", "up"]), TypeError, r"policy must be an array of numbers"),
    ("policy-rows-2.7", lambda: MDP.policy_matrices(np.full((3, 2), 1.35)), ValueError,
     r"each row of policy must sum to 1 \(within 1e-09\), but policy\[0, :\] sums to 2\.7"),
    ("policy-negative", lambda: MDP.policy_matrices([[1.5, -0.5]] * 3),
     ValueError, r"policy has a negative probability: policy\[0, 1\]"),
    ("policy-rows-nan", lambda: MDP.policy_matrices([[0.5, 0.5], [NAN, 1.0], [1.0, 0.0]]),
     ValueError, r"policy must be finite"),
    ("as_stochastic-n_actions-0", lambda: as_stochastic([0, 0], 0),
     ValueError, r"n_actions must be a positive integer"),
    ("as_stochastic-n_actions-float", lambda: as_stochastic([0, 0], 2.0), TypeError, r"n_actions must be an integer"),
    ("as_stochastic-n_states", lambda: as_stochastic([0, 0], 2, n_states=3), ValueError, r"policy must be \(S = 3,\)"),
    ("as_stochastic-wrong-A", lambda: as_stochastic(np.full((3, 3), 1 / 3), 2), ValueError, r"policy must be .*A = 2"),
    # ---- random_mdp
    ("random-n_states-0", lambda: random_mdp(0, 2), ValueError, r"n_states must be a positive integer, got 0"),
    ("random-n_states-float", lambda: random_mdp(2.5, 2), TypeError, r"n_states must be an integer, got float"),
    ("random-n_actions-bool", lambda: random_mdp(3, True), TypeError, r"n_actions must be an integer, got bool"),
    ("random-gamma", lambda: random_mdp(3, 2, gamma=2.0), ValueError, r"gamma must lie in \[0, 1\]"),
    ("random-n_successors-0", lambda: random_mdp(3, 2, n_successors=0),
     ValueError, r"n_successors must be a positive integer"),
    ("random-n_successors-float", lambda: random_mdp(3, 2, n_successors=1.5),
     TypeError, r"n_successors must be an integer"),
    ("random-seed--1", lambda: random_mdp(3, 2, seed=-1), ValueError, r"seed must be an integer >= 0"),
    ("random-seed-str", lambda: random_mdp(3, 2, seed="a"), TypeError, r"seed must be an integer"),
    # ---- gridworld
    ("grid-layout-str", lambda: gridworld("S.G"),
     TypeError, r"layout must be a list of row strings.*split it into rows"),
    ("grid-layout-bytes", lambda: gridworld(b"S.G"), TypeError, r"layout must be a list of row strings"),
    ("grid-layout-None", lambda: gridworld(None), TypeError, r"layout must be a list of row strings, got NoneType"),
    ("grid-layout-empty", lambda: gridworld([]), ValueError, r"layout must have at least one row"),
    ("grid-layout-row-int", lambda: gridworld(["S.G", 7]), TypeError, r"layout\[1\] must be a str, got int"),
    ("grid-layout-ragged", lambda: gridworld(["S..", ".."]),
     ValueError, r"rows of the layout must have the same length.*\[3, 2\]"),
    ("grid-layout-empty-rows", lambda: gridworld(["", ""]), ValueError, r"layout rows must not be empty"),
    ("grid-layout-letter", lambda: gridworld(["S.Z"]), ValueError, r"unknown layout letters \['Z'\].*layout\[0\]\[2\]"),
    ("grid-layout-lowercase", lambda: gridworld(["s.g"]), ValueError, r"unknown layout letters"),
    ("grid-layout-two-starts", lambda: gridworld(["S.S", "..G"]), ValueError, r"layout has 2 start cells"),
    ("grid-layout-all-walls", lambda: gridworld(["##", "##"]), ValueError, r"layout has no states"),
    ("grid-slip-negative", lambda: gridworld(["S.G"], slip=-0.1), ValueError, r"slip must lie in \[0, 1\]"),
    ("grid-slip-1.5", lambda: gridworld(["S.G"], slip=1.5), ValueError, r"slip must lie in \[0, 1\]"),
    ("grid-slip-nan", lambda: gridworld(["S.G"], slip=NAN), ValueError, r"slip must lie in \[0, 1\], got nan"),
    ("grid-slip-str", lambda: gridworld(["S.G"], slip="0.1"), TypeError, r"slip must be a real number"),
    ("grid-slip-True", lambda: gridworld(["S.G"], slip=True), TypeError, r"slip must be a real number, got bool"),
    ("grid-gamma", lambda: gridworld(["S.G"], gamma=1.5), ValueError, r"gamma must lie in \[0, 1\]"),
    ("grid-step_reward-nan", lambda: gridworld(["S.G"], step_reward=NAN),
     ValueError, r"step_reward must be a finite number"),
    ("grid-goal_reward-inf", lambda: gridworld(["S.G"], goal_reward=INF),
     ValueError, r"goal_reward must be a finite number"),
    ("grid-pit_reward-str", lambda: gridworld(["S.G"], pit_reward="-1"),
     TypeError, r"pit_reward must be a real number"),
    # ---- from_gymnasium
    ("gym-cartpole", lambda: from_gymnasium(CARTPOLE), TypeError,
     r"env must be a tabular gymnasium environment.*CartPole-v1 has observation_space Box.*no transition table"),
    ("gym-not-an-env", lambda: from_gymnasium(42), TypeError, r"env must be a tabular gymnasium environment"),
    ("gym-space-offset", lambda: from_gymnasium(offset_env()), ValueError, r"env must number its observation_space from 0"),
    ("gym-gamma-1.5", lambda: from_gymnasium(LAKE_ENV, gamma=1.5), ValueError, r"gamma must lie in \[0, 1\]"),
    ("gym-gamma-True", lambda: from_gymnasium(LAKE_ENV, gamma=True), TypeError, r"gamma must be a real number"),
    ("gym-table-next-state", lambda: from_gymnasium(FakeTabularEnv(broken_table(nxt=5))), ValueError,
     r"the next state in env\.unwrapped\.P\[0\]\[0\] must be an integer in 0 \.\. 1, got 5"),
    ("gym-table-prob-nan", lambda: from_gymnasium(FakeTabularEnv(broken_table(prob=NAN))), ValueError,
     r"the probability in env\.unwrapped\.P\[0\]\[0\] must lie in \[0, 1\]"),
    ("gym-table-reward-inf", lambda: from_gymnasium(FakeTabularEnv(broken_table(reward=INF))), ValueError,
     r"the reward in env\.unwrapped\.P\[0\]\[0\] must be a finite number"),
    ("gym-table-missing", lambda: from_gymnasium(FakeTabularEnv({0: {0: []}})), ValueError,
     r"env\.unwrapped\.P has no list of outcomes for state 1, action 0"),
    ("gym-table-rows-sum", lambda: from_gymnasium(FakeTabularEnv(broken_table(prob=0.5))), ValueError,
     r"P\[s, a, :\] must sum to 1; state 0, action 0 sums to 0\.5"),
    # ---- simulate_policy
    ("sim-n_episodes-0", lambda: simulate_policy(LAKE_ENV, GOOD_LAKE_POLICY, 0),
     ValueError, r"n_episodes must be a positive integer, got 0"),
    ("sim-n_episodes-negative", lambda: simulate_policy(LAKE_ENV, GOOD_LAKE_POLICY, -5),
     ValueError, r"n_episodes must be a positive"),
    ("sim-n_episodes-float", lambda: simulate_policy(LAKE_ENV, GOOD_LAKE_POLICY, 2.0),
     TypeError, r"n_episodes must be an integer"),
    ("sim-seed--1", lambda: simulate_policy(LAKE_ENV, GOOD_LAKE_POLICY, 1, seed=-1),
     ValueError, r"seed must be an integer >= 0"),
    ("sim-seed-float", lambda: simulate_policy(LAKE_ENV, GOOD_LAKE_POLICY, 1, seed=0.5),
     TypeError, r"seed must be an integer"),
    ("sim-policy--1", lambda: simulate_policy(LAKE_ENV, with_entry(GOOD_LAKE_POLICY, 3, -1), 1), ValueError,
     r"policy\[3\] = -1 is not an action: actions are 0 \.\. 3"),
    ("sim-policy-1.5", lambda: simulate_policy(LAKE_ENV, with_entry(GOOD_LAKE_POLICY, 0, 1.5), 1), ValueError,
     r"policy must hold whole action numbers"),
    ("sim-policy-length", lambda: simulate_policy(LAKE_ENV, np.zeros(15, int), 1),
     ValueError, r"policy must be \(S,\) = \(16,\)"),
    ("sim-policy-empty-plan", lambda: simulate_policy(LAKE_ENV, np.zeros((0, 16), int), 1),
     ValueError, r"policy must be \(S,\)"),
    ("sim-env-None", lambda: simulate_policy(None, [0], 1), TypeError, r"env must be a tabular gymnasium environment"),
    ("sim-env-cartpole", lambda: simulate_policy(CARTPOLE, [0], 1),
     TypeError, r"env must be a tabular gymnasium environment"),
    # ---- dp: the mdp argument
    ("q_from_v-mdp-dict", lambda: q_from_v({"P": U}, np.zeros(3)), TypeError, r"mdp must be a FiniteMDP, got dict"),
    ("value_iteration-mdp-None", lambda: value_iteration(None), TypeError, r"mdp must be a FiniteMDP, got NoneType"),
    ("policy_iteration-mdp-env", lambda: policy_iteration(LAKE_ENV), TypeError, r"mdp must be a FiniteMDP"),
    ("evaluate_exact-mdp-str", lambda: evaluate_policy_exact("lake", [0, 0, 0]), TypeError, r"mdp must be a FiniteMDP"),
    ("finite_horizon-mdp-None", lambda: finite_horizon(None, 3), TypeError, r"mdp must be a FiniteMDP"),
    # ---- dp: values and Q
    ("q_from_v-V-length", lambda: q_from_v(MDP, np.zeros(2)), ValueError, r"V must have shape \(S,\) = \(3,\)"),
    ("q_from_v-V-nan", lambda: q_from_v(MDP, [0.0, 0.0, NAN]), ValueError, r"V must be finite"),
    ("optimality_backup-V-inf", lambda: bellman_optimality_backup(MDP, [INF, 0.0, 0.0]),
     ValueError, r"V must be finite"),
    ("optimality_backup-V-sparse-world", lambda: bellman_optimality_backup(GRID, np.zeros(5)),
     ValueError, r"V must have shape"),
    ("expectation_backup-V-nan", lambda: bellman_expectation_backup(MDP, [NAN, 0, 0], [0, 0, 0]),
     ValueError, r"V must be finite"),
    ("expectation_backup-policy--1", lambda: bellman_expectation_backup(MDP, np.zeros(3), [0, -1, 0]), ValueError,
     r"policy\[1\] = -1 is not an action"),
    ("greedy-Q-1d", lambda: greedy_policy([1.0, 2.0]), ValueError, r"Q must have shape \(S, A\)"),
    ("greedy-Q-no-actions", lambda: greedy_policy(np.zeros((3, 0))),
     ValueError, r"Q must have shape \(S, A\) with A >= 1"),
    ("greedy-Q-nan", lambda: greedy_policy([[1.0, NAN]]), ValueError, r"Q must not contain NaN.*Q\[0, 1\]"),
    ("greedy-Q-str", lambda: greedy_policy([["a", "b"]]), TypeError, r"Q must be an array of numbers"),
    # ---- dp: policies
    ("evaluate_exact-policy-1.5", lambda: evaluate_policy_exact(MDP, [0, 1.5, 0]),
     ValueError, r"policy must hold whole action"),
    ("evaluate_exact-policy-rows", lambda: evaluate_policy_exact(MDP, np.full((3, 2), 1.35)),
     ValueError, r"each row of policy must sum to 1"),
    ("evaluate_exact-policy-sparse-world", lambda: evaluate_policy_exact(GRID, [0] * 5),
     ValueError, r"policy must be \(S = 6,\)"),
    ("policy_iteration-policy0--1", lambda: policy_iteration(MDP, policy0=[0, 0, -1]),
     ValueError, r"policy0\[2\] = -1 is not an action"),
    ("policy_iteration-policy0-stochastic", lambda: policy_iteration(MDP, policy0=np.full((3, 2), 0.5)), ValueError,
     r"policy0 must be \(S,\) = \(3,\) actions"),
    ("policy_iteration-policy0-length", lambda: policy_iteration(MDP, policy0=[0, 0]),
     ValueError, r"policy0 must be \(S,\)"),
    # ---- dp: iteration controls
    ("vi-tol-0", lambda: value_iteration(MDP, tol=0.0), ValueError, r"tol must be a finite number > 0, got 0\.0"),
    ("vi-tol-negative", lambda: value_iteration(MDP, tol=-1e-3), ValueError, r"tol must be a finite number > 0"),
    ("vi-tol-nan", lambda: value_iteration(MDP, tol=NAN), ValueError, r"tol must be a finite number > 0, got nan"),
    ("vi-tol-True", lambda: value_iteration(MDP, tol=True), TypeError, r"tol must be a real number, got bool"),
    ("vi-max_iter-0", lambda: value_iteration(MDP, max_iter=0),
     ValueError, r"max_iter must be a positive integer, got 0"),
    ("vi-max_iter-float", lambda: value_iteration(MDP, max_iter=100.0),
     TypeError, r"max_iter must be an integer, got float"),
    ("vi-max_iter-None", lambda: value_iteration(MDP, max_iter=None), TypeError, r"max_iter must be an integer"),
    ("vi-V0-length", lambda: value_iteration(MDP, V0=np.zeros(4)),
     ValueError, r"V0 must have shape \(S,\) = \(3,\), got \(4,\)"),
    ("vi-V0-nan", lambda: value_iteration(MDP, V0=[0, NAN, 0]), ValueError, r"V0 must be finite.*V0\[1\] = nan"),
    ("vi-record-str", lambda: value_iteration(MDP, record="yes"), TypeError, r"record must be True or False"),
    ("ipe-tol-0", lambda: evaluate_policy_iterative(MDP, [0, 0, 0], tol=0),
     ValueError, r"tol must be a finite number > 0"),
    ("ipe-max_iter-0", lambda: evaluate_policy_iterative(MDP, [0, 0, 0], max_iter=0),
     ValueError, r"max_iter must be a positive"),
    ("ipe-max_iter-negative", lambda: evaluate_policy_iterative(MDP, [0, 0, 0], max_iter=-3),
     ValueError, r"max_iter must be a positive"),
    ("ipe-V0-inf", lambda: evaluate_policy_iterative(MDP, [0, 0, 0], V0=[INF, 0, 0]), ValueError, r"V0 must be finite"),
    ("ipe-record-int", lambda: evaluate_policy_iterative(MDP, [0, 0, 0], record=1),
     TypeError, r"record must be True or False"),
    ("ipe-policy-rows", lambda: evaluate_policy_iterative(MDP, [[0.5, 0.6]] * 3),
     ValueError, r"each row of policy must sum to 1"),
    ("pi-max_iter-0", lambda: policy_iteration(MDP, max_iter=0), ValueError, r"max_iter must be a positive integer"),
    ("pi-max_iter-float", lambda: policy_iteration(MDP, max_iter=2.5), TypeError, r"max_iter must be an integer"),
    ("pi-record-None", lambda: policy_iteration(MDP, record=None), TypeError, r"record must be True or False"),
    # ---- dp: finite horizon
    ("fh-horizon-0", lambda: finite_horizon(MDP, 0), ValueError, r"horizon must be a positive integer, got 0"),
    ("fh-horizon-negative", lambda: finite_horizon(MDP, -2), ValueError, r"horizon must be a positive integer"),
    ("fh-horizon-float", lambda: finite_horizon(MDP, 3.0), TypeError, r"horizon must be an integer, got float"),
    ("fh-horizon-bool", lambda: finite_horizon(MDP, True), TypeError, r"horizon must be an integer, got bool"),
    ("fh-horizon-str", lambda: finite_horizon(MDP, "3"), TypeError, r"horizon must be an integer"),
    ("fh-gamma-1.5", lambda: finite_horizon(MDP, 3, gamma=1.5), ValueError, r"gamma must lie in \[0, 1\], got 1\.5"),
    ("fh-gamma-nan", lambda: finite_horizon(MDP, 3, gamma=NAN), ValueError, r"gamma must lie in \[0, 1\], got nan"),
    ("fh-gamma-True", lambda: finite_horizon(MDP, 3, gamma=True), TypeError, r"gamma must be a real number, got bool"),
    ("efh-gamma-1.5", lambda: evaluate_finite_horizon(MDP, [0, 0, 0], 3, gamma=1.5),
     ValueError, r"gamma must lie in \[0, 1\]"),
    ("efh-gamma-nan", lambda: evaluate_finite_horizon(MDP, [0, 0, 0], 3, gamma=NAN),
     ValueError, r"gamma must lie in \[0, 1\]"),
    ("efh-gamma-negative", lambda: evaluate_finite_horizon(MDP, [0, 0, 0], 3, gamma=-0.5),
     ValueError, r"gamma must lie in"),
    ("efh-horizon-0", lambda: evaluate_finite_horizon(MDP, [0, 0, 0], 0),
     ValueError, r"horizon must be a positive integer"),
    ("efh-horizon-float", lambda: evaluate_finite_horizon(MDP, [0, 0, 0], 2.5),
     TypeError, r"horizon must be an integer"),
    ("efh-policy-steps", lambda: evaluate_finite_horizon(MDP, np.zeros((2, 3), int), 3), ValueError,
     r"policy must be \(S,\) = \(3,\) actions, or \(H, S\) = \(3, 3\).*got shape \(2, 3\)"),
    ("efh-policy--1", lambda: evaluate_finite_horizon(MDP, [0, -1, 0], 3),
     ValueError, r"policy\[1\] = -1 is not an action"),
    ("efh-policy-1.5", lambda: evaluate_finite_horizon(MDP, [0, 1.5, 0], 3),
     ValueError, r"policy must hold whole action numbers"),
    ("efh-policy-stochastic", lambda: evaluate_finite_horizon(MDP, np.full((3, 2), 0.5), 3),
     ValueError, r"policy must be \(S,\)"),
    # ---- seeding
    ("seed-negative", lambda: seed_everything(-1), ValueError, r"seed must be an integer in 0 \.\. 4294967295, got -1"),
    ("seed-2**32", lambda: seed_everything(2**32), ValueError, r"seed must be an integer in 0 \.\. 4294967295"),
    ("seed-float", lambda: seed_everything(1.5), TypeError, r"seed must be an integer, got float"),
    ("seed-whole-float", lambda: seed_everything(1.0), TypeError, r"seed must be an integer, got float"),
    ("seed-bool", lambda: seed_everything(True), TypeError, r"seed must be an integer, got bool"),
    ("seed-str", lambda: seed_everything("42"), TypeError, r"seed must be an integer, got str"),
    ("seed-None", lambda: seed_everything(None), TypeError, r"seed must be an integer, got NoneType"),
]


def test_there_are_many_bad_input_cases_and_their_ids_are_unique():
    ids = [case[0] for case in BAD]
    assert len(set(ids)) == len(ids)
    assert len(BAD) >= 80


@pytest.mark.parametrize("call, error, message", [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_input_is_refused_with_the_argument_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------- the tolerance on P


def test_transition_tolerance_is_the_documented_one():
    assert PROB_TOL == 1e-9
    assert "1e-9" in rl2llm.mdp.__doc__ and "PROB_TOL" in FiniteMDP.__doc__
    just_inside = with_entry(U, (0, 0, 0), 1 / 3 + 0.5e-9)  # sums to 1 + 5e-10
    FiniteMDP(just_inside, R0, 0.9)
    FiniteMDP(sp.csr_matrix(just_inside.reshape(6, 3)), R0, 0.9)
    for off in (2e-9, 1e-5, -2e-9):
        with pytest.raises(ValueError, match=r"P\[s, a, :\] must sum to 1"):
            FiniteMDP(with_entry(U, (0, 0, 0), 1 / 3 + off), R0, 0.9)
        with pytest.raises(ValueError, match=r"P\[s, a, :\] must sum to 1"):
            FiniteMDP(sp.csr_matrix(with_entry(U, (0, 0, 0), 1 / 3 + off).reshape(6, 3)), R0, 0.9)


def test_stochastic_policy_tolerance_is_the_same():
    as_stochastic([[0.5 + 0.5e-9, 0.5]], 2)
    with pytest.raises(ValueError, match="each row of policy must sum to 1"):
        as_stochastic([[0.5 + 2e-9, 0.5]], 2)


# --------------------------------------------------------------------------- running to max_iter is never silent


def endless_loop() -> FiniteMDP:
    """Lecture 1's gotcha 2: two states handing you back and forth, reward 1, gamma 1, no terminal state."""
    P = np.zeros((2, 1, 2))
    P[0, 0, 1] = P[1, 0, 0] = 1.0
    return FiniteMDP(P, np.ones((2, 1)), 1.0)


def test_convergence_warning_is_a_runtime_warning():
    assert issubclass(ConvergenceWarning, RuntimeWarning)


def test_value_iteration_with_gamma_one_and_no_end_warns_and_says_so():
    with pytest.warns(ConvergenceWarning, match=r"value_iteration stopped at max_iter=50 .*changed a value by 1, "
                                                r"not below tol=1e-10.*gamma = 1") as caught:
        result = value_iteration(endless_loop(), max_iter=50)
    assert len(caught) == 1 and caught[0].filename == __file__  # points at the caller's line
    assert not result.converged and result.iterations == 50
    np.testing.assert_allclose(result.V, 50.0)


def test_iterative_evaluation_at_max_iter_warns():
    with pytest.warns(ConvergenceWarning, match=r"evaluate_policy_iterative stopped at max_iter=1000 .*tol=1e-10"):
        result = evaluate_policy_iterative(endless_loop(), [0, 0], max_iter=1000)
    assert not result.converged and result.iterations == 1000
    np.testing.assert_allclose(result.V, 1000.0)  # Lecture 1's number, unchanged


def test_policy_iteration_at_max_iter_warns():
    mdp = gridworld(["S....G"], gamma=0.9, step_reward=-0.1)  # needs several rounds from "always left"
    with pytest.warns(ConvergenceWarning, match=r"policy_iteration stopped at max_iter=1 .*changed action"):
        result = policy_iteration(mdp, max_iter=1)
    assert not result.converged and result.iterations == 1
    assert policy_iteration(mdp).converged


def test_converged_runs_do_not_warn():
    P = np.zeros((3, 1, 3))
    P[0, 0, 1] = P[1, 0, 2] = P[2, 0, 2] = 1.0
    chain = FiniteMDP(P, np.array([[-1.0], [-1.0], [0.0]]), 1.0, terminal=[False, False, True])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for result in (value_iteration(chain), evaluate_policy_iterative(chain, [0, 0, 0]), policy_iteration(chain),
                       value_iteration(MDP), value_iteration(GRID, max_iter=1000)):
            assert result.converged
        assert value_iteration(chain).iterations == 3
        # Converging on the very last allowed sweep is converging.
        assert value_iteration(chain, max_iter=3).converged


# --------------------------------------------------------------------------- valid edge cases still work


def test_numpy_scalars_are_accepted_everywhere():
    mdp = FiniteMDP(U, R0, np.float32(0.5), start=np.int64(1))
    assert mdp.gamma == 0.5 and mdp.start == 1
    small = random_mdp(np.int64(4), np.int32(2), gamma=np.float64(0.9), n_successors=np.int16(2), seed=np.uint8(3))
    assert small.n_states == 4
    world = gridworld(["S.G"], slip=np.float64(0.2), gamma=np.float32(0.9), step_reward=np.float16(-1),
                      goal_reward=np.int64(5))
    assert world.R[1, 2] == pytest.approx(0.8 * 5 - 1)
    vi = value_iteration(world, tol=np.float64(1e-9), max_iter=np.int64(1000), record=np.bool_(False))
    assert vi.converged
    assert policy_iteration(world, max_iter=np.int32(10)).converged
    V, plan = finite_horizon(world, np.int64(4), gamma=np.float64(1.0))
    np.testing.assert_allclose(evaluate_finite_horizon(world, plan, np.int32(4), gamma=np.float32(1.0)), V[0])
    assert simulate_policy(LAKE_ENV, GOOD_LAKE_POLICY, np.int64(2), seed=np.int64(1)).shape == (2,)
    assert seed_everything(np.int64(5)).integers(1000) == seed_everything(5).integers(1000)
    seed_everything(2**32 - 1)


def test_lists_are_accepted_where_arrays_were():
    mdp = FiniteMDP(U.tolist(), R0.tolist(), 0.9, terminal=[False, False, True])
    assert mdp.terminal.tolist() == [False, False, True]
    np.testing.assert_array_equal(mdp.expected_next([1.0, 2.0, 3.0]), np.full((3, 2), 2.0))
    np.testing.assert_array_equal(q_from_v(mdp, [0, 0, 0]), 0.0)  # integer values are fine too
    np.testing.assert_array_equal(bellman_optimality_backup(mdp, [1, 1, 1]), [0.9, 0.9, 0.0])
    np.testing.assert_array_equal(bellman_expectation_backup(mdp, [1, 1, 1], [[0.5, 0.5]] * 3), [0.9, 0.9, 0.0])
    assert greedy_policy([[0, 1], [3, 2]]).tolist() == [1, 0]
    assert value_iteration(mdp, V0=[1, 2, 3]).converged
    assert evaluate_policy_iterative(mdp, [1, 0, 1], V0=[0.0, 0.0, 0.0]).converged
    assert policy_iteration(mdp, policy0=[1, 1, 1]).converged
    assert simulate_policy(LAKE_ENV, [0] * 16, 1).shape == (1,)
    assert as_stochastic([1, 0], 2).tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_results_do_not_depend_on_how_the_input_was_spelled():
    mdp = random_mdp(6, 3, gamma=0.9, seed=1)
    policy = np.array([0, 2, 1, 1, 0, 2])
    exact = evaluate_policy_exact(mdp, policy)
    for spelling in (policy.tolist(), policy.astype(np.int8), policy.astype(float), np.eye(3)[policy],
                     np.eye(3)[policy].astype(int)):
        np.testing.assert_array_equal(evaluate_policy_exact(mdp, spelling), exact)
    as_lists = FiniteMDP(mdp.P.tolist(), mdp.R.tolist(), 0.9)
    np.testing.assert_array_equal(value_iteration(as_lists).V, value_iteration(mdp).V)


def test_gamma_one_with_terminal_states_is_fine():
    world = gridworld(["S..G"], gamma=1.0, step_reward=-1.0, goal_reward=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vi = value_iteration(world)
        pi = policy_iteration(world, policy0=[RIGHT] * 4)  # (from "always left" the first policy never ends)
    assert vi.converged and pi.converged
    np.testing.assert_allclose(vi.V, [-3.0, -2.0, -1.0, 0.0])
    np.testing.assert_allclose(evaluate_policy_exact(world, pi.policy), vi.V)
    assert FiniteMDP(U, R0, 1).gamma == 1.0 and FiniteMDP(U, R0, 0).gamma == 0.0  # int bounds are numbers


def test_sparse_and_integer_transition_tables_are_accepted():
    P = np.zeros((2, 1, 2), dtype=int)
    P[0, 0, 1] = P[1, 0, 1] = 1
    for table in (P, sp.csr_matrix(P.reshape(2, 2)), sp.csr_array(P.reshape(2, 2).astype(float))):
        mdp = FiniteMDP(table, [[1.0], [0.0]], 0.5, terminal=[0, 1])
        assert mdp.terminal.tolist() == [False, True]
        np.testing.assert_allclose(evaluate_policy_exact(mdp, [0, 0]), [1.0, 0.0])
    assert sp.issparse(GRID.P) and value_iteration(GRID).converged


def test_gridworld_accepts_tuples_arrays_and_no_start():
    by_list = gridworld(["S.G", "..X"], slip=0.1)
    for layout in (("S.G", "..X"), np.array(["S.G", "..X"])):
        other = gridworld(layout, slip=0.1)
        assert (other.P != by_list.P).nnz == 0 and other.layout == ("S.G", "..X")
    assert gridworld(["..G"]).start is None
    assert gridworld(["S.G"], slip=0.0).n_states == 3 and gridworld(["S.G"], slip=1.0).n_states == 3


def test_greedy_policy_accepts_minus_infinity_for_forbidden_actions():
    assert greedy_policy([[-np.inf, 0.0], [1.0, -np.inf]]).tolist() == [1, 0]


def test_from_gymnasium_still_reads_every_toy_text_table():
    cliff = from_gymnasium(gym.make("CliffWalking-v1"), gamma=0.9)
    assert (cliff.n_states, cliff.n_actions) == (48, 4) and cliff.terminal.sum() == 1
    taxi = from_gymnasium(gym.make("Taxi-v4"), gamma=0.9)
    assert (taxi.n_states, taxi.n_actions) == (500, 6)
    # Taxi's map is not its state space (500 states on a 5x5 grid): no grid fields, rather than wrong ones.
    assert taxi.grid_shape is None and taxi.cells is None
    lake = from_gymnasium(FakeTabularEnv(GOOD_TABLE))
    assert lake.terminal.tolist() == [False, True] and lake.name == "gym"
