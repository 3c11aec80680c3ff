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

Every public function checks its arguments and raises a ``TypeError`` (wrong
kind of value) or ``ValueError`` (wrong value) that names the argument. In
particular each transition distribution ``P[s, a, :]`` must be finite,
non-negative, and sum to 1 within ``1e-9`` (absolute): ``PROB_TOL``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from . import _validate as check
from ._validate import PROB_TOL

#: Action order shared by the gridworlds and gymnasium's FrozenLake.
LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3
ACTION_NAMES = ("left", "down", "right", "up")
_MOVES = np.array([(0, -1), (1, 0), (0, 1), (-1, 0)])  # (d_row, d_col) per action


@dataclass
class FiniteMDP:
    """A finite MDP with a vectorized Bellman backup (see the module docstring).

    Accepted: ``R`` any real array of shape ``(S, A)`` with ``S, A >= 1``
    (lists too); ``P`` a dense ``(S, A, S)`` array or a SciPy sparse
    ``(S * A, S)`` matrix of finite, non-negative probabilities whose rows sum
    to 1 within ``PROB_TOL``; ``gamma`` a real number in ``[0, 1]`` (not a
    bool); ``terminal`` ``None`` or a mask of shape ``(S,)`` (bools, or 0/1);
    ``start`` ``None`` or a state index; ``entry_reward`` ``None`` or ``(S,)``
    finite numbers (see below). The grid fields are for plotting:
    ``grid_shape`` a pair of positive ints, ``cells`` an ``(S, 2)`` array of
    (row, col) inside it, ``layout`` a sequence of row strings.
    """

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
    #: The part of ``R`` paid for *landing* in a state (a grid world's goal and pits): when set,
    #: ``R[s, a]`` already averages ``entry_reward`` over where ``a`` may land. Planning needs only
    #: ``R``; a simulator that samples the landing pays the realised reward,
    #: ``R[s, a] - sum_s2 P[s, a, s2] entry_reward[s2] + entry_reward[s2_landed]``.
    entry_reward: np.ndarray | None = None

    def __post_init__(self):
        self.R = check.as_finite_array("R", self.R)
        if self.R.ndim != 2 or 0 in self.R.shape:
            raise ValueError(f"R must have shape (S, A) with S, A >= 1, got {self.R.shape}")
        S, A = self.R.shape
        self.P = check.as_transitions("P", self.P, S, A)
        self.gamma = check.as_real("gamma", self.gamma, 0.0, 1.0)
        self.terminal = np.zeros(S, bool) if self.terminal is None else check.as_mask("terminal", self.terminal, S)
        self.start = None if self.start is None else check.as_int("start", self.start, 0, S - 1)
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {check.describe(self.name)}")
        if self.entry_reward is not None:
            self.entry_reward = check.as_finite_array("entry_reward", self.entry_reward, (S,), "(S,)")
        self._check_grid_fields()

    def _check_grid_fields(self) -> None:
        """The plotting fields: a (rows, cols) pair, one (row, col) per state inside it, row strings."""
        if self.grid_shape is not None:
            if not isinstance(self.grid_shape, (tuple, list)) or len(self.grid_shape) != 2:
                raise ValueError(f"grid_shape must be a pair (rows, cols), got {check.describe(self.grid_shape)}")
            self.grid_shape = tuple(check.as_int("grid_shape", n, 1) for n in self.grid_shape)
        if self.cells is not None:
            self.cells = check.numeric_array("cells", self.cells)
            if self.cells.shape != (self.n_states, 2) or self.cells.dtype.kind not in "iu":
                raise ValueError(f"cells must be an integer array of shape (S, 2) = {(self.n_states, 2)}, "
                                 f"got {self.cells.dtype} of shape {self.cells.shape}")
            limit = self.grid_shape if self.grid_shape is not None else (np.inf, np.inf)
            if ((self.cells < 0) | (self.cells >= limit)).any():
                raise ValueError(f"cells must be (row, col) pairs inside grid_shape {self.grid_shape}")
        if self.layout is not None:
            if isinstance(self.layout, str) or not all(isinstance(row, str) for row in self.layout):
                raise TypeError(f"layout must be a sequence of row strings, got {check.describe(self.layout)}")
            self.layout = tuple(self.layout)

    @property
    def n_states(self) -> int:
        return self.R.shape[0]

    @property
    def n_actions(self) -> int:
        return self.R.shape[1]

    def expected_next(self, V: np.ndarray) -> np.ndarray:
        """``E[V(s') | s, a]`` for every pair, shape ``(S, A)``: one matrix-vector product.

        ``V``: finite state values, shape ``(S,)``.
        """
        return self._expected_next(check.as_finite_array("V", V, (self.n_states,), "(S,)"))

    def _expected_next(self, V: np.ndarray) -> np.ndarray:
        """:meth:`expected_next` without the argument check, for the solvers' inner loops."""
        S, A = self.R.shape
        if sp.issparse(self.P):
            return (self.P @ V).reshape(S, A)
        return (self.P.reshape(S * A, S) @ V).reshape(S, A)

    def policy_matrices(self, policy: np.ndarray) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
        """Transition matrix ``P_pi[s, s2]`` and reward vector ``R_pi[s]`` under ``policy``.

        ``policy`` is either deterministic (``(S,)`` integer actions in ``0 .. A-1``)
        or stochastic (``(S, A)`` rows of probabilities, each summing to 1 within
        ``PROB_TOL``).
        """
        S, A = self.R.shape
        pi = as_stochastic(policy, A, n_states=S)
        R_pi = (pi * self.R).sum(axis=1)
        if sp.issparse(self.P):
            # row s of P_pi = sum_a pi[s, a] * row (s*A + a) of P
            rows = np.repeat(np.arange(S), A)
            mix = sp.csr_matrix((pi.ravel(), (rows, np.arange(S * A))), shape=(S, S * A))
            return (mix @ self.P).tocsr(), R_pi
        return np.einsum("sa,sat->st", pi, self.P), R_pi

    def with_gamma(self, gamma: float) -> "FiniteMDP":
        """The same world with another discount factor (checked like the constructor's)."""
        return replace(self, gamma=gamma)


def as_stochastic(policy: np.ndarray, n_actions: int, n_states: int | None = None) -> np.ndarray:
    """A policy as an ``(S, A)`` array of action probabilities.

    ``policy`` is ``(S,)`` whole-number actions in ``0 .. n_actions - 1`` (-1 is
    not "the last action") or ``(S, n_actions)`` rows of non-negative
    probabilities summing to 1 within ``PROB_TOL``; ``S`` must be ``n_states``
    when that is given.
    """
    n_actions = check.as_int("n_actions", n_actions, 1)
    if n_states is not None:
        n_states = check.as_int("n_states", n_states, 1)
    policy = check.as_policy("policy", policy, n_states, n_actions)
    if policy.ndim == 1:
        return np.eye(n_actions)[policy]
    return policy


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

    Accepted: positive integer sizes (NumPy integers too), ``n_successors``
    ``None`` or a positive integer, ``gamma`` in ``[0, 1]``, ``seed`` an
    integer >= 0.
    """
    _check_random_mdp_args(n_states, n_actions, gamma, n_successors, seed)

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


def _check_random_mdp_args(n_states, n_actions, gamma, n_successors, seed) -> None:
    check.as_int("n_states", n_states, 1)
    check.as_int("n_actions", n_actions, 1)
    check.as_real("gamma", gamma, 0.0, 1.0)
    if n_successors is not None:
        check.as_int("n_successors", n_successors, 1)
    check.as_int("seed", seed, 0)


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

    Accepted: ``layout`` a list or tuple of equal-length, non-empty row
    strings of those letters (one string is not a layout: split it into rows),
    with at least one cell that is not a wall and at most one ``S`` (none
    leaves ``start`` as ``None``); ``slip`` in ``[0, 1]``; ``gamma`` in
    ``[0, 1]``; finite rewards.
    """
    layout = _checked_layout(layout)
    slip, gamma, step_reward, goal_reward, pit_reward = _checked_gridworld_numbers(
        slip, gamma, step_reward, goal_reward, pit_reward)

    grid = np.array([list(row) for row in layout])
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
        entry_reward=entry_reward,
    )


def _checked_gridworld_numbers(slip, gamma, step_reward, goal_reward, pit_reward) -> tuple[float, ...]:
    return (check.as_real("slip", slip, 0.0, 1.0), check.as_real("gamma", gamma, 0.0, 1.0),
            check.as_real("step_reward", step_reward), check.as_real("goal_reward", goal_reward),
            check.as_real("pit_reward", pit_reward))


def _checked_layout(layout) -> tuple[str, ...]:
    """The layout as a tuple of rows, or a clear error saying what is wrong with it."""
    if isinstance(layout, (str, bytes)):
        raise TypeError(f"layout must be a list of row strings such as ['S..', '..G'], got one "
                        f"{type(layout).__name__} {layout!r}; split it into rows")
    if not isinstance(layout, (list, tuple, np.ndarray)):
        raise TypeError(f"layout must be a list of row strings, got {check.describe(layout)}")
    rows = tuple(layout)
    if not rows:
        raise ValueError("layout must have at least one row")
    for i, row in enumerate(rows):
        if not isinstance(row, str):
            raise TypeError(f"layout[{i}] must be a str, got {check.describe(row)}")
    if len({len(row) for row in rows}) != 1:
        raise ValueError(f"all rows of the layout must have the same length; got lengths {[len(r) for r in rows]}")
    if not rows[0]:
        raise ValueError("layout rows must not be empty")
    for i, row in enumerate(rows):
        for j, letter in enumerate(row):
            if letter not in ".S#GX":
                unknown = sorted(set("".join(rows)) - set(".S#GX"))
                raise ValueError(f"unknown layout letters {unknown}; use . S # G X (layout[{i}][{j}] is {letter!r})")
    n_starts = sum(row.count("S") for row in rows)
    if n_starts > 1:
        raise ValueError(f"layout has {n_starts} start cells 'S'; use at most one")
    if all(letter == "#" for row in rows for letter in row):
        raise ValueError("layout has no states: every cell is a wall '#'")
    return rows


def from_gymnasium(env, gamma: float = 1.0) -> FiniteMDP:
    """Convert a gymnasium toy-text environment (FrozenLake, CliffWalking, Taxi)
    into a :class:`FiniteMDP` by reading its transition table ``env.unwrapped.P``.

    The table lists ``(probability, next_state, reward, done)`` for each
    ``(state, action)``. A state entered with ``done=True`` is terminal: we make
    it absorbing with zero reward, which is what "the episode ends" means.

    Accepted: an environment with Discrete observation and action spaces and
    that table (not CartPole: its observations are continuous and it has no
    table); ``gamma`` in ``[0, 1]``.
    """
    S, A = check.discrete_sizes("env", env, need_table=True)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    table = check.transition_table("env.unwrapped.P", env.unwrapped.P, S, A)

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
    if desc is not None and np.size(desc) == S:  # a map with one cell per state (FrozenLake; not Taxi's map)
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

    Accepted: an environment with Discrete observation and action spaces;
    whole-number actions in ``0 .. A-1``; ``n_episodes`` a positive integer;
    ``seed`` an integer >= 0.
    """
    S, A = check.discrete_sizes("env", env)
    policy = check.as_plan("policy", policy, S, A)
    n_episodes, seed = check.as_int("n_episodes", n_episodes, 1), check.as_int("seed", seed, 0)

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
