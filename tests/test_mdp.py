"""Tests for rl2llm.mdp: the FiniteMDP data structure, grid worlds, gymnasium conversion."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import scipy.sparse as sp

from rl2llm.mdp import (
    DOWN,
    LEFT,
    RIGHT,
    UP,
    FiniteMDP,
    as_stochastic,
    from_gymnasium,
    gridworld,
    random_mdp,
    simulate_policy,
)


def dense_P(mdp: FiniteMDP) -> np.ndarray:
    """The transition tensor as a dense (S, A, S) array, whatever the storage."""
    S, A = mdp.n_states, mdp.n_actions
    return mdp.P.toarray().reshape(S, A, S) if sp.issparse(mdp.P) else np.asarray(mdp.P)


def uniform_P(S: int, A: int) -> np.ndarray:
    return np.full((S, A, S), 1.0 / S)


# --------------------------------------------------------------------------- validation


class TestValidation:
    def test_valid_mdp_is_accepted(self):
        mdp = FiniteMDP(uniform_P(3, 2), np.zeros((3, 2)), 0.9)
        assert (mdp.n_states, mdp.n_actions) == (3, 2)
        assert mdp.terminal.dtype == bool and not mdp.terminal.any()

    def test_dense_P_with_wrong_shape(self):
        with pytest.raises(ValueError, match=r"P must have shape \(S, A, S\) = \(3, 2, 3\)"):
            FiniteMDP(np.full((3, 2, 4), 0.25), np.zeros((3, 2)), 0.9)

    def test_sparse_P_with_wrong_shape(self):
        P = sp.csr_matrix(np.full((3 * 2, 4), 0.25))
        with pytest.raises(ValueError, match=r"sparse P must have shape \(S\*A, S\) = \(6, 3\)"):
            FiniteMDP(P, np.zeros((3, 2)), 0.9)

    def test_R_must_be_two_dimensional(self):
        with pytest.raises(ValueError, match=r"R must have shape \(S, A\)"):
            FiniteMDP(uniform_P(3, 1), np.zeros(3), 0.9)

    def test_rows_not_summing_to_one_name_the_culprit(self):
        P = uniform_P(3, 2)
        P[1, 0, 0] += 0.1  # state 1, action 0 now sums to 1.1
        with pytest.raises(ValueError, match=r"must sum to 1; state 1, action 0 sums to 1\.1"):
            FiniteMDP(P, np.zeros((3, 2)), 0.9)

    def test_sparse_rows_not_summing_to_one(self):
        P = uniform_P(3, 2).reshape(6, 3)
        P[5] = [0.5, 0.2, 0.2]  # row 5 = state 2, action 1
        with pytest.raises(ValueError, match=r"state 2, action 1 sums to 0\.9"):
            FiniteMDP(sp.csr_matrix(P), np.zeros((3, 2)), 0.9)

    def test_negative_probabilities(self):
        P = np.zeros((2, 1, 2))
        P[0, 0] = [1.5, -0.5]  # sums to 1 but is not a distribution
        P[1, 0] = [0.0, 1.0]
        with pytest.raises(ValueError, match="negative"):
            FiniteMDP(P, np.zeros((2, 1)), 0.9)
        with pytest.raises(ValueError, match="negative"):
            FiniteMDP(sp.csr_matrix(P.reshape(2, 2)), np.zeros((2, 1)), 0.9)

    @pytest.mark.parametrize("gamma", [-0.1, 1.0001, 2.0, float("nan")])
    def test_gamma_out_of_range(self, gamma):
        with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\]"):
            FiniteMDP(uniform_P(2, 2), np.zeros((2, 2)), gamma)

    @pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
    def test_gamma_bounds_are_inclusive(self, gamma):
        assert FiniteMDP(uniform_P(2, 2), np.zeros((2, 2)), gamma).gamma == gamma

    def test_terminal_mask_with_wrong_shape(self):
        with pytest.raises(ValueError, match="terminal"):
            FiniteMDP(uniform_P(2, 2), np.zeros((2, 2)), 0.9, terminal=[True, False, False])

    def test_with_gamma_keeps_the_world(self):
        mdp = gridworld(["S.G"], gamma=0.9)
        other = mdp.with_gamma(0.5)
        assert other.gamma == 0.5 and mdp.gamma == 0.9
        assert (other.P != mdp.P).nnz == 0
        np.testing.assert_array_equal(other.R, mdp.R)
        np.testing.assert_array_equal(other.terminal, mdp.terminal)
        assert other.grid_shape == mdp.grid_shape and other.start == mdp.start
        with pytest.raises(ValueError, match="gamma"):
            mdp.with_gamma(1.5)


class TestPolicies:
    def test_deterministic_policy_becomes_one_hot(self):
        pi = as_stochastic(np.array([2, 0, 1]), 3)
        np.testing.assert_array_equal(pi, np.eye(3)[[2, 0, 1]])

    def test_stochastic_policy_passes_through(self):
        pi = np.array([[0.2, 0.8], [1.0, 0.0]])
        np.testing.assert_array_equal(as_stochastic(pi, 2), pi)

    @pytest.mark.parametrize("shape", [(3, 3), (3, 2, 1)])
    def test_bad_policy_shape(self, shape):
        with pytest.raises(ValueError, match="policy"):
            as_stochastic(np.zeros(shape), 2)


# --------------------------------------------------------------------------- dense vs sparse


def to_sparse(mdp: FiniteMDP) -> FiniteMDP:
    S, A = mdp.n_states, mdp.n_actions
    return FiniteMDP(sp.csr_matrix(mdp.P.reshape(S * A, S)), mdp.R, mdp.gamma, terminal=mdp.terminal)


def to_dense(mdp: FiniteMDP) -> FiniteMDP:
    return FiniteMDP(dense_P(mdp), mdp.R, mdp.gamma, terminal=mdp.terminal)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_and_sparse_storage_agree(seed):
    rng = np.random.default_rng(100 + seed)
    dense = random_mdp(7, 3, gamma=0.8, seed=seed)
    assert not sp.issparse(dense.P)
    sparse = to_sparse(dense)
    assert sp.issparse(sparse.P)
    V = rng.normal(size=7)
    np.testing.assert_allclose(sparse.expected_next(V), dense.expected_next(V), rtol=0, atol=1e-13)
    # ... and both equal the definition E[V(s') | s, a] = sum_s' P[s, a, s'] V(s').
    np.testing.assert_allclose(dense.expected_next(V), np.einsum("sat,t->sa", dense.P, V), atol=1e-13)

    deterministic = rng.integers(0, 3, size=7)
    stochastic = rng.dirichlet(np.ones(3), size=7)
    for policy in (deterministic, stochastic):
        P_d, R_d = dense.policy_matrices(policy)
        P_s, R_s = sparse.policy_matrices(policy)
        assert sp.issparse(P_s)
        np.testing.assert_allclose(P_s.toarray(), P_d, atol=1e-14)
        np.testing.assert_allclose(R_s, R_d, atol=1e-14)
        np.testing.assert_allclose(P_d.sum(axis=1), 1.0)
    # A deterministic policy picks rows of P and entries of R.
    P_d, R_d = dense.policy_matrices(deterministic)
    np.testing.assert_array_equal(P_d, dense.P[np.arange(7), deterministic])
    np.testing.assert_array_equal(R_d, dense.R[np.arange(7), deterministic])


def test_sparse_random_mdp_matches_its_dense_copy():
    sparse = random_mdp(30, 4, gamma=0.9, n_successors=3, seed=5)
    assert sp.issparse(sparse.P)
    assert np.diff(sparse.P.indptr).max() <= 3  # at most 3 successors per (s, a)
    dense = to_dense(sparse)
    V = np.random.default_rng(0).normal(size=30)
    np.testing.assert_allclose(sparse.expected_next(V), dense.expected_next(V), atol=1e-13)
    policy = np.arange(30) % 4
    np.testing.assert_allclose(sparse.policy_matrices(policy)[0].toarray(), dense.policy_matrices(policy)[0],
                               atol=1e-14)


def test_random_mdp_is_reproducible_and_seed_dependent():
    a, b, c = random_mdp(5, 2, seed=3), random_mdp(5, 2, seed=3), random_mdp(5, 2, seed=4)
    np.testing.assert_array_equal(a.P, b.P)
    np.testing.assert_array_equal(a.R, b.R)
    assert not np.array_equal(a.R, c.R)
    assert ((0 <= a.R) & (a.R < 1)).all()


# --------------------------------------------------------------------------- grid worlds

#: A tiny world: row 0 is "S . G", row 1 is ". # X". States in row-major order,
#: walls skipped: 0=(0,0) start, 1=(0,1), 2=(0,2) goal, 3=(1,0), 4=(1,2) pit.
TINY = ["S.G", ".#X"]
GOAL, PIT, STEP = 10.0, -5.0, -0.5


@pytest.fixture
def tiny():
    return gridworld(TINY, slip=0.2, gamma=0.9, step_reward=STEP, goal_reward=GOAL, pit_reward=PIT)


def test_walls_are_not_states(tiny):
    assert tiny.n_states == 5 and tiny.n_actions == 4
    assert tiny.grid_shape == (2, 3)
    np.testing.assert_array_equal(tiny.cells, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2)])
    assert (1, 1) not in {tuple(c) for c in tiny.cells}
    assert tiny.start == 0
    np.testing.assert_array_equal(tiny.terminal, [False, False, True, False, True])
    assert tiny.layout == tuple(TINY)


def test_gridworld_transitions_exactly(tiny):
    P = dense_P(tiny)
    expected = {
        # from state 1 = (0,1): right enters the goal; slipping up hits the edge, down hits the wall
        (1, RIGHT): {2: 0.8, 1: 0.2},
        # down hits the wall (stay); slips go left to 0 or right into the goal
        (1, DOWN): {1: 0.8, 0: 0.1, 2: 0.1},
        (1, LEFT): {0: 0.8, 1: 0.2},
        (1, UP): {1: 0.8, 0: 0.1, 2: 0.1},
        # from state 3 = (1,0): right is the wall; slip up to 0, slip down off the edge
        (3, RIGHT): {3: 0.9, 0: 0.1},
        (3, UP): {0: 0.8, 3: 0.2},
        # down is the edge and both slips (left edge, right wall) are blocked too
        (3, DOWN): {3: 1.0},
        (3, LEFT): {3: 0.9, 0: 0.1},
        # from the corner (0,0): up and left are both the edge
        (0, UP): {0: 0.9, 1: 0.1},
        (0, LEFT): {0: 0.9, 3: 0.1},
        (0, RIGHT): {1: 0.8, 0: 0.1, 3: 0.1},
    }
    for (s, a), dist in expected.items():
        row = np.zeros(5)
        for s2, p in dist.items():
            row[s2] = p
        np.testing.assert_allclose(P[s, a], row, atol=1e-15, err_msg=f"state {s}, action {a}")
    np.testing.assert_allclose(P.sum(axis=2), 1.0)


def test_gridworld_entry_rewards(tiny):
    R = tiny.R
    assert R[1, RIGHT] == pytest.approx(0.8 * GOAL + STEP)
    assert R[1, DOWN] == pytest.approx(0.1 * GOAL + STEP)
    assert R[1, LEFT] == pytest.approx(STEP)
    assert R[3, RIGHT] == pytest.approx(STEP)
    assert R[0, RIGHT] == pytest.approx(STEP)


def test_pit_entry_reward():
    # 0=(0,0), 1=(0,1) pit; from state 0, right enters the pit w.p. 1 - slip.
    world = gridworld(["SX"], slip=0.4, step_reward=-1.0, pit_reward=-7.0)
    assert world.R[0, RIGHT] == pytest.approx(0.6 * -7.0 - 1.0)
    assert world.R[0, UP] == pytest.approx(0.2 * -7.0 - 1.0)  # slipping right from "up"
    assert world.R[0, LEFT] == pytest.approx(-1.0)


def test_terminal_states_absorb_and_pay_nothing(tiny):
    P = dense_P(tiny)
    for s in np.flatnonzero(tiny.terminal):
        np.testing.assert_array_equal(P[s], np.tile(np.eye(5)[s], (4, 1)))
        np.testing.assert_array_equal(tiny.R[s], 0.0)


def test_deterministic_gridworld_bumps_stay_put():
    world = gridworld(["..", "#."], slip=0.0)  # states 0=(0,0), 1=(0,1), 2=(1,1)
    P = dense_P(world)
    assert world.n_states == 3
    assert P[0, DOWN, 0] == 1.0  # into the wall
    assert P[0, UP, 0] == 1.0 and P[0, LEFT, 0] == 1.0  # off the edge
    assert P[0, RIGHT, 1] == 1.0
    assert P[1, DOWN, 2] == 1.0 and P[2, LEFT, 2] == 1.0 and P[2, UP, 1] == 1.0
    assert set(np.unique(P)) == {0.0, 1.0}


def test_full_slip_moves_only_sideways():
    world = gridworld(["...", "...", "..."], slip=1.0)  # centre is state 4
    P = dense_P(world)
    np.testing.assert_allclose(P[4, UP], np.eye(9)[3] * 0.5 + np.eye(9)[5] * 0.5)
    np.testing.assert_allclose(P[4, RIGHT], np.eye(9)[1] * 0.5 + np.eye(9)[7] * 0.5)


def test_frozenlake_slip_matches_gymnasium():
    """gridworld(slip=2/3) on FrozenLake's map is exactly gymnasium's FrozenLake."""
    env = gym.make("FrozenLake-v1", is_slippery=True)
    lake = from_gymnasium(env, gamma=0.9)
    world = gridworld(list(lake.layout), slip=2 / 3, gamma=0.9, pit_reward=0.0)
    np.testing.assert_allclose(dense_P(world), lake.P, atol=1e-12)
    np.testing.assert_allclose(world.R, lake.R, atol=1e-12)
    np.testing.assert_array_equal(world.terminal, lake.terminal)


def test_big_gridworld_is_sparse():
    world = gridworld(["." * 100] * 100, slip=0.1)
    assert world.n_states == 10_000 and sp.issparse(world.P)
    assert world.P.nnz <= 10_000 * 4 * 3
    np.testing.assert_allclose(np.asarray(world.P.sum(axis=1)).ravel(), 1.0)


@pytest.mark.parametrize(
    "layout, kwargs, message",
    [
        (["S..", ".."], {}, "same length"),
        (["S.Z"], {}, "unknown layout letters"),
        (["S.G"], {"slip": 1.5}, "slip"),
        (["S.G"], {"slip": -0.1}, "slip"),
    ],
)
def test_gridworld_rejects_bad_input(layout, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gridworld(layout, **kwargs)


# --------------------------------------------------------------------------- gymnasium


@pytest.mark.parametrize("slippery", [True, False])
def test_from_gymnasium_frozenlake(slippery):
    env = gym.make("FrozenLake-v1", is_slippery=slippery)
    mdp = from_gymnasium(env)
    assert (mdp.n_states, mdp.n_actions) == (16, 4)
    assert mdp.gamma == 1.0
    assert mdp.grid_shape == (4, 4)
    assert mdp.start == 0
    assert mdp.layout == ("S...", ".X.X", "...X", "X..G")
    np.testing.assert_array_equal(mdp.cells, [divmod(s, 4) for s in range(16)])
    np.testing.assert_allclose(mdp.P.sum(axis=2), 1.0, atol=1e-12)
    holes, goal = [5, 7, 11, 12], 15
    np.testing.assert_array_equal(np.flatnonzero(mdp.terminal), sorted(holes + [goal]))
    for s in holes + [goal]:
        np.testing.assert_array_equal(mdp.P[s], np.tile(np.eye(16)[s], (4, 1)))
        np.testing.assert_array_equal(mdp.R[s], 0.0)
    # Reward 1 only for entering the goal: R[s, a] is the probability of landing on it.
    np.testing.assert_allclose(mdp.R, mdp.P[:, :, goal] * (~mdp.terminal)[:, None], atol=1e-15)
    nonzero = {tuple(x) for x in np.argwhere(mdp.R > 0)}
    if slippery:
        assert nonzero == {(14, DOWN), (14, RIGHT), (14, UP)}
        np.testing.assert_allclose(mdp.R[14, [DOWN, RIGHT, UP]], 1 / 3)
        np.testing.assert_allclose(mdp.P[0, LEFT], np.eye(16)[0] * 2 / 3 + np.eye(16)[4] / 3)
    else:
        assert nonzero == {(14, RIGHT)}
        assert mdp.R[14, RIGHT] == 1.0
        assert set(np.unique(mdp.P)) == {0.0, 1.0}


def test_from_gymnasium_frozenlake_8x8():
    env = gym.make("FrozenLake8x8-v1")
    mdp = from_gymnasium(env, gamma=0.99)
    assert mdp.gamma == 0.99
    assert mdp.grid_shape == (8, 8) and mdp.n_states == 64 and mdp.start == 0
    assert mdp.terminal.sum() == 11  # 10 holes and the goal
    assert mdp.terminal[63]
    assert mdp.name == "FrozenLake8x8-v1"


#: Shortest path on the 4x4 lake: down, down, right, down, right, right.
SHORTEST = {0: DOWN, 4: DOWN, 8: RIGHT, 9: DOWN, 13: RIGHT, 14: RIGHT}


def test_simulate_shortest_path_on_deterministic_lake():
    env = gym.make("FrozenLake-v1", is_slippery=False)
    policy = np.full(16, LEFT)
    for s, a in SHORTEST.items():
        policy[s] = a
    returns = simulate_policy(env, policy, 50, seed=0)
    assert returns.shape == (50,)
    np.testing.assert_array_equal(returns, 1.0)
    # A time-dependent (H, S) policy that is the same at every step does the same.
    np.testing.assert_array_equal(simulate_policy(env, np.tile(policy, (6, 1)), 5, seed=0), 1.0)


def test_simulate_policy_that_never_arrives_is_cut_off_by_the_time_limit():
    env = gym.make("FrozenLake-v1", is_slippery=False)
    returns = simulate_policy(env, np.full(16, LEFT), 3, seed=0)  # walks into the left edge forever
    np.testing.assert_array_equal(returns, 0.0)


def test_simulate_slippery_returns_are_zero_or_one_and_seeded():
    env = gym.make("FrozenLake-v1", is_slippery=True)
    policy = np.random.default_rng(0).integers(0, 4, size=16)
    returns = simulate_policy(env, policy, 300, seed=7)
    assert set(np.unique(returns)) <= {0.0, 1.0}
    again = simulate_policy(env, policy, 300, seed=7)
    np.testing.assert_array_equal(returns, again)
