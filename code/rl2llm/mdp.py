"""Finite Markov decision processes: the data structure and the worlds we build.

Used by Lecture 1 (MDPs and Bellman equations) and by every later lecture
that needs a small world whose answer is known exactly.

An MDP here is three arrays and a number:

* ``P`` — transition probabilities. Dense ``(S, A, S)`` array with
  ``P[s, a, s2] = Pr(s2 | s, a)``, or, for large worlds, a SciPy sparse matrix
  of shape ``(S * A, S)`` whose row ``s * A + a`` is that same distribution.
* ``R`` — expected immediate reward ``R[s, a]``, shape ``(S, A)``.
* ``gamma`` — the discount factor.
* ``terminal`` — boolean mask of states where the episode ends. A terminal
  state is absorbing and pays nothing, so its value is 0 by definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

#: Action order shared by the gridworlds and gymnasium's FrozenLake.
LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3
ACTION_NAMES = ("left", "down", "right", "up")
_MOVES = np.array([(0, -1), (1, 0), (0, 1), (-1, 0)])  # (d_row, d_col) per action


@dataclass
class FiniteMDP:
    """A finite MDP with a vectorized Bellman backup (see the module docstring)."""

    P: np.ndarray | sp.csr_matrix
    R: np.ndarray
    gamma: float
    terminal: np.ndarray | None = None
    #: For grid worlds: the grid's (rows, cols) and each state's (row, col).
    grid_shape: tuple[int, int] | None = None
    cells: np.ndarray | None = None
    #: For grid worlds: the layout letters, row by row (for plotting).
    layout: tuple[str, ...] | None = None
    start: int | None = None
    name: str = field(default="mdp")

    def __post_init__(self):
        self.R = np.asarray(self.R, dtype=float)
        if self.R.ndim != 2:
            raise ValueError(f"R must have shape (S, A), got {self.R.shape}")
        S, A = self.R.shape
        if sp.issparse(self.P):
            self.P = sp.csr_matrix(self.P)
            if self.P.shape != (S * A, S):
                raise ValueError(f"sparse P must have shape (S*A, S) = {(S * A, S)}, got {self.P.shape}")
            if (self.P.data < 0).any():
                raise ValueError("P has negative probabilities")
            row_sums = np.asarray(self.P.sum(axis=1)).ravel()
        else:
            self.P = np.asarray(self.P, dtype=float)
            if self.P.shape != (S, A, S):
                raise ValueError(f"P must have shape (S, A, S) = {(S, A, S)}, got {self.P.shape}")
            if (self.P < 0).any():
                raise ValueError("P has negative probabilities")
            row_sums = self.P.sum(axis=2).ravel()
        if not np.allclose(row_sums, 1.0, atol=1e-9):
            bad = int(np.argmax(np.abs(row_sums - 1.0)))
            raise ValueError(
                f"each P[s, a, :] must sum to 1; state {bad // A}, action {bad % A} sums to {row_sums[bad]:.6f}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        self.terminal = np.zeros(S, dtype=bool) if self.terminal is None else np.asarray(self.terminal, bool)
        if self.terminal.shape != (S,):
            raise ValueError(f"terminal must be a boolean mask of shape (S,) = {(S,)}, got {self.terminal.shape}")

    @property
    def n_states(self) -> int:
        return self.R.shape[0]

    @property
    def n_actions(self) -> int:
        return self.R.shape[1]

    def expected_next(self, V: np.ndarray) -> np.ndarray:
        """``E[V(s') | s, a]`` for every pair, shape ``(S, A)``: one matrix-vector product."""
        S, A = self.R.shape
        if sp.issparse(self.P):
            return (self.P @ V).reshape(S, A)
        return (self.P.reshape(S * A, S) @ V).reshape(S, A)

    def policy_matrices(self, policy: np.ndarray) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
        """Transition matrix ``P_pi[s, s2]`` and reward vector ``R_pi[s]`` under ``policy``.

        ``policy`` is either deterministic (``(S,)`` integer actions) or stochastic
        (``(S, A)`` rows of probabilities).
        """
        S, A = self.R.shape
        pi = as_stochastic(policy, A)
        R_pi = (pi * self.R).sum(axis=1)
        if sp.issparse(self.P):
            # row s of P_pi = sum_a pi[s, a] * row (s*A + a) of P
            rows = np.repeat(np.arange(S), A)
            mix = sp.csr_matrix((pi.ravel(), (rows, np.arange(S * A))), shape=(S, S * A))
            return (mix @ self.P).tocsr(), R_pi
        return np.einsum("sa,sat->st", pi, self.P), R_pi

    def with_gamma(self, gamma: float) -> "FiniteMDP":
        """The same world with another discount factor."""
        return replace(self, gamma=gamma)


def as_stochastic(policy: np.ndarray, n_actions: int) -> np.ndarray:
    """A policy as an ``(S, A)`` array of action probabilities."""
    policy = np.asarray(policy)
    if policy.ndim == 1:
        return np.eye(n_actions)[policy.astype(int)]
    if policy.ndim == 2 and policy.shape[1] == n_actions:
        return policy.astype(float)
    raise ValueError(f"a policy is (S,) actions or (S, {n_actions}) probabilities; got shape {policy.shape}")


def random_mdp(
    n_states: int,
    n_actions: int,
    gamma: float = 0.9,
    n_successors: int | None = None,
    seed: int = 0,
) -> FiniteMDP:
    """A random MDP: rewards uniform on [0, 1), transitions random.

    With ``n_successors=None`` every transition row is a dense Dirichlet(1)
    draw; otherwise each (s, a) reaches ``n_successors`` random states, stored
    sparse (the only way a 10,000-state world fits in memory).
    """
    rng = np.random.default_rng(seed)
    R = rng.random((n_states, n_actions))
    if n_successors is None:
        P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
        return FiniteMDP(P, R, gamma, name=f"random-{n_states}x{n_actions}")
    k = n_successors
    rows = np.repeat(np.arange(n_states * n_actions), k)
    cols = rng.integers(0, n_states, size=n_states * n_actions * k)
    probs = rng.dirichlet(np.ones(k), size=n_states * n_actions).ravel()
    P = sp.csr_matrix((probs, (rows, cols)), shape=(n_states * n_actions, n_states))  # duplicates are summed
    return FiniteMDP(P, R, gamma, name=f"random-{n_states}x{n_actions}-sparse")


def gridworld(
    layout: list[str] | tuple[str, ...],
    slip: float = 0.0,
    gamma: float = 0.9,
    step_reward: float = 0.0,
    goal_reward: float = 1.0,
    pit_reward: float = -1.0,
) -> FiniteMDP:
    """Build a grid world from a picture.

    Letters: ``.`` free cell, ``S`` start, ``#`` wall (not a state), ``G`` goal
    (terminal, pays ``goal_reward`` on entry), ``X`` pit (terminal, pays
    ``pit_reward`` on entry). Actions are left, down, right, up. With
    probability ``1 - slip`` the agent moves as asked; otherwise it slides to one
    of the two perpendicular directions, each with probability ``slip / 2``
    (FrozenLake's ice is ``slip = 2/3``). Bumping into a wall or the edge means
    staying put. Every move costs ``step_reward``.

    Built as a sparse matrix, so a 100x100 grid is as easy as a 4x4 one.
    """
    if len({len(row) for row in layout}) != 1:
        raise ValueError("all rows of the layout must have the same length")
    grid = np.array([list(row) for row in layout])
    unknown = set(grid.ravel()) - set(".S#GX")
    if unknown:
        raise ValueError(f"unknown layout letters {sorted(unknown)}; use . S # G X")
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip must lie in [0, 1], got {slip}")
    n_rows, n_cols = grid.shape
    is_state = grid != "#"
    cells = np.argwhere(is_state)  # row-major order
    S, A = len(cells), 4
    index = -np.ones(grid.shape, dtype=int)
    index[is_state] = np.arange(S)
    letter = grid[is_state]
    terminal = np.isin(letter, ["G", "X"])
    entry_reward = np.where(letter == "G", goal_reward, np.where(letter == "X", pit_reward, 0.0))

    def landing(action: np.ndarray) -> np.ndarray:
        """State reached from every state when moving in direction ``action`` (one per state)."""
        target = cells + _MOVES[action]
        inside = (target[:, 0] >= 0) & (target[:, 0] < n_rows) & (target[:, 1] >= 0) & (target[:, 1] < n_cols)
        target = np.where(inside[:, None], target, cells)
        nxt = index[target[:, 0], target[:, 1]]
        return np.where(nxt >= 0, nxt, np.arange(S))  # a wall: stay put

    rows, cols, probs = [], [], []
    for a in range(A):
        outcomes = [(a, 1.0 - slip), ((a - 1) % 4, slip / 2), ((a + 1) % 4, slip / 2)]
        for direction, p in outcomes:
            if p == 0.0:
                continue
            nxt = landing(np.full(S, direction))
            nxt = np.where(terminal, np.arange(S), nxt)  # terminal states absorb
            rows.append(np.arange(S) * A + a)
            cols.append(nxt)
            probs.append(np.full(S, p))
    rows, cols, probs = map(np.concatenate, (rows, cols, probs))
    P = sp.csr_matrix((probs, (rows, cols)), shape=(S * A, S))
    # Expected reward of (s, a): step cost plus the entry reward of where we land.
    R = (P @ entry_reward).reshape(S, A) + step_reward
    R[terminal] = 0.0
    starts = np.flatnonzero(letter == "S")
    return FiniteMDP(
        P, R, gamma, terminal=terminal, grid_shape=(n_rows, n_cols), cells=cells,
        layout=tuple(layout), start=int(starts[0]) if len(starts) else None, name="gridworld",
    )


def from_gymnasium(env, gamma: float = 1.0) -> FiniteMDP:
    """Convert a gymnasium toy-text environment (FrozenLake, CliffWalking, Taxi)
    into a :class:`FiniteMDP` by reading its transition table ``env.unwrapped.P``.

    The table lists ``(probability, next_state, reward, done)`` for each
    ``(state, action)``. A state entered with ``done=True`` is terminal: we make
    it absorbing with zero reward, which is what "the episode ends" means.
    """
    table = env.unwrapped.P
    S, A = env.observation_space.n, env.action_space.n
    P = np.zeros((S, A, S))
    R = np.zeros((S, A))
    terminal = np.zeros(S, dtype=bool)
    for s in range(S):
        for a in range(A):
            for prob, nxt, reward, done in table[s][a]:
                P[s, a, nxt] += prob
                R[s, a] += prob * reward
                terminal[nxt] |= bool(done)
    P[terminal] = np.eye(S)[terminal][:, None, :]
    R[terminal] = 0.0
    desc = getattr(env.unwrapped, "desc", None)
    kw = {}
    if desc is not None:
        layout = tuple(b"".join(row).decode() for row in desc)
        n_rows, n_cols = len(layout), len(layout[0])
        kw = dict(
            grid_shape=(n_rows, n_cols),
            cells=np.array([divmod(s, n_cols) for s in range(S)]),
            layout=tuple(row.replace("F", ".").replace("H", "X") for row in layout),
        )
    start = int(np.argmax(env.unwrapped.initial_state_distrib)) if hasattr(env.unwrapped, "initial_state_distrib") else None
    return FiniteMDP(P, R, gamma, terminal=terminal, start=start, name=env.spec.id if env.spec else "gym", **kw)


def simulate_policy(env, policy: np.ndarray, n_episodes: int, seed: int = 0) -> np.ndarray:
    """Run ``policy`` in the real gymnasium environment and return each episode's return.

    ``policy`` is ``(S,)`` (the same action at every step) or ``(H, S)`` (action
    at step ``t`` is ``policy[t, s]``: what finite-horizon planning produces).
    The environment's own time limit ends long episodes, exactly as it would
    for any agent.
    """
    policy = np.asarray(policy, dtype=int)
    returns = np.zeros(n_episodes)
    state, _ = env.reset(seed=seed)
    for episode in range(n_episodes):
        if episode:
            state, _ = env.reset()
        t, done = 0, False
        while not done:
            action = policy[state] if policy.ndim == 1 else policy[min(t, len(policy) - 1), state]
            state, reward, terminated, truncated, _ = env.step(int(action))
            returns[episode] += reward
            done = terminated or truncated
            t += 1
    return returns
