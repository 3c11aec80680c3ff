"""Model-based reinforcement learning: learn a model of the world, then plan with it.

Used by Lecture 8 (Model-based RL). Lectures 3 to 7 learn values or policies
straight from experience; here the agent also learns how the world answers
its actions, and spends computation instead of experience by trying plans
in that model.

Tabular (Sutton, 1990):

* :class:`Maze` — a deterministic grid maze whose walls may change during a
  run; :func:`dyna_maze` is Sutton and Barto's maze (Figure 8.2) and
  :func:`shortcut_maze` the maze in which a shortcut opens (Figure 8.5).
* :func:`dyna_q` — Q-learning plus ``n_planning`` updates on remembered
  transitions after every real step; with ``kappa > 0``, Dyna-Q+'s bonus for
  what has not been tried for a long time. With ``n_planning=0`` it is
  exactly Lecture 3's Q-learning (:func:`rl2llm.td.td_control`).

Continuous (a neural model and model-predictive control):

* :class:`DynamicsModel` — an MLP that predicts the next observation from the
  observation and the action (by default as a change of the observation),
  with inputs and outputs normalised; :func:`fit_model` trains it.
* :func:`random_shooting` and :func:`cem` — planners: given a function that
  scores a batch of action sequences, return a good sequence (a
  :class:`Plan`). :func:`imagined_returns` scores sequences by rolling them
  out in a model, all candidates at once.
* :class:`MPC` — model-predictive control: plan from the current observation,
  act the first action, plan again.
* :class:`MBRLConfig`, :func:`train_mbrl` — the loop: random actions first,
  then fit the model on everything seen, act with MPC, refit, ...
* :func:`open_loop_predictions` — the model's predictions k steps ahead
  against the real environment's, from the same starts and actions: how
  errors compound.
* :func:`pendulum_reward` and :func:`pendulum_step` — Pendulum-v1's reward and
  its exact physics as batched torch functions (the planner is given the
  reward; the physics is the yardstick a learned model is compared with).

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from . import _validate as check
from .dqn import ReplayBuffer, flush_denormals, torch_threads
from .mdp import DOWN, LEFT, RIGHT, UP
from .progress import progress
from .td import _epsilon_greedy

__all__ = ["Maze", "dyna_maze", "shortcut_maze", "DynaResult", "dyna_q", "DynamicsModel", "fit_model",
           "Plan", "random_shooting", "cem", "imagined_returns", "MPC", "MBRLConfig", "MBRLResult",
           "train_mbrl", "open_loop_predictions", "pendulum_reward", "pendulum_step", "config_dict",
           "DYNA_MAZE", "SHORTCUT_BEFORE", "SHORTCUT_AFTER"]

# --------------------------------------------------------------------------- mazes

#: Sutton and Barto's Dyna maze (2018, Figure 8.2): 6 by 9, the start on the left, the goal top right.
DYNA_MAZE = (
    ".......#G",
    "..#....#.",
    "S.#....#.",
    "..#......",
    ".....#...",
    ".........",
)
#: The shortcut maze (Sutton and Barto, 2018, Figure 8.5): a wall with a gap on the left only ...
SHORTCUT_BEFORE = (
    "........G",
    ".........",
    ".........",
    ".########",
    ".........",
    "...S.....",
)
#: ... and the same wall once a second gap, a shortcut, has opened on the right.
SHORTCUT_AFTER = (
    "........G",
    ".........",
    ".........",
    ".#######.",
    ".........",
    "...S.....",
)
_MOVES = {LEFT: (0, -1), DOWN: (1, 0), RIGHT: (0, 1), UP: (-1, 0)}


def _checked_maze_layout(name: str, layout) -> tuple[str, ...]:
    if isinstance(layout, (str, bytes)) or not isinstance(layout, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of row strings such as ['S..', '..G'], "
                        f"got {check.describe(layout)}")
    rows = tuple(layout)
    if not rows or not all(isinstance(row, str) and row for row in rows):
        raise ValueError(f"{name} must be non-empty row strings")
    if len({len(row) for row in rows}) != 1:
        raise ValueError(f"all rows of {name} must have the same length; got {[len(r) for r in rows]}")
    letters = set("".join(rows))
    if not letters <= set(".#SG"):
        raise ValueError(f"{name} has unknown letters {sorted(letters - set('.#SG'))}; use . # S G")
    for letter in "SG":
        count = "".join(rows).count(letter)
        if count != 1:
            raise ValueError(f"{name} must have exactly one {letter!r} cell, got {count}")
    return rows


class Maze(gym.Env):
    """A deterministic grid maze: 0 per move, 1 for reaching the goal (which ends the episode).

    The state is the cell number ``row * n_cols + col`` (walls are numbered too,
    but never reached); the actions are Lecture 1's left, down, right and up.
    A move into a wall or off the grid leaves the agent where it is.

    With ``later_layout`` and ``change_at``, the walls become those of
    ``later_layout`` once ``change_at`` moves have been made, counted over all
    episodes (a changing world). Resetting with a seed, ``reset(seed=...)``,
    starts a new run: the first layout and a zero count. The start and goal
    must be the same cells in both layouts. ``env.unwrapped.P`` is the current
    layout's transition table, so :func:`rl2llm.mdp.from_gymnasium` can solve it.

    Accepted: layouts as lists or tuples of equal-length row strings of
    ``. # S G`` with one start ``S`` and one goal ``G``; ``change_at`` a
    positive integer, given exactly when ``later_layout`` is.
    """

    metadata = {"render_modes": []}

    def __init__(self, layout, later_layout=None, change_at: int | None = None):
        self.layouts = [_checked_maze_layout("layout", layout)]
        if (later_layout is None) != (change_at is None):
            raise ValueError("later_layout and change_at go together: give both (a changing maze) or neither")
        if later_layout is not None:
            later = _checked_maze_layout("later_layout", later_layout)
            if (len(later), len(later[0])) != (len(self.layouts[0]), len(self.layouts[0][0])):
                raise ValueError("later_layout must have the same size as layout")
            if [self._find(later, x) for x in "SG"] != [self._find(self.layouts[0], x) for x in "SG"]:
                raise ValueError("later_layout must keep the start and the goal where layout has them")
            self.layouts.append(later)
            change_at = check.as_int("change_at", change_at, 1)
        self.change_at = change_at
        self.n_rows, self.n_cols = len(self.layouts[0]), len(self.layouts[0][0])
        self.observation_space = gym.spaces.Discrete(self.n_rows * self.n_cols)
        self.action_space = gym.spaces.Discrete(4)
        self.start = self._find(self.layouts[0], "S")
        self.goal = self._find(self.layouts[0], "G")
        self.initial_state_distrib = np.eye(self.n_rows * self.n_cols)[self.start]
        self.moves, self.s = 0, self.start

    @staticmethod
    def _find(layout, letter: str) -> int:
        n_cols = len(layout[0])
        cell = "".join(layout).index(letter)
        return cell // n_cols * n_cols + cell % n_cols

    @property
    def layout(self) -> tuple[str, ...]:
        """The walls in force now."""
        changed = self.change_at is not None and self.moves >= self.change_at
        return self.layouts[1 if changed else 0]

    def _next(self, layout, s: int, action: int) -> int:
        row, col = divmod(s, self.n_cols)
        d_row, d_col = _MOVES[action]
        row2, col2 = row + d_row, col + d_col
        if 0 <= row2 < self.n_rows and 0 <= col2 < self.n_cols and layout[row2][col2] != "#":
            return row2 * self.n_cols + col2
        return s

    @property
    def P(self) -> dict:
        """The current layout's table ``P[s][a] = [(1.0, next_state, reward, terminated)]`` (toy-text form)."""
        layout, table = self.layout, {}
        for s in range(self.n_rows * self.n_cols):
            table[s] = {}
            for a in range(4):
                if s == self.goal:
                    table[s][a] = [(1.0, s, 0.0, True)]
                    continue
                s2 = self._next(layout, s, a)
                table[s][a] = [(1.0, s2, float(s2 == self.goal), s2 == self.goal)]
        return table

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # a new run: the first layout again
            self.moves = 0
        self.s = self.start
        return self.s, {}

    def step(self, action):
        action = int(action)
        self.s = self._next(self.layout, self.s, action)
        self.moves += 1
        arrived = self.s == self.goal
        return self.s, float(arrived), arrived, False, {}


def dyna_maze() -> Maze:
    """Sutton and Barto's Dyna maze (2018, Figure 8.2): the shortest route from start to goal takes 14 moves."""
    env = Maze(DYNA_MAZE)
    env.spec = gym.envs.registration.EnvSpec(id="DynaMaze", entry_point="rl2llm.model_based:dyna_maze")
    return env


def shortcut_maze(change_at: int = 3000) -> Maze:
    """The shortcut maze (Sutton and Barto, 2018, Figure 8.5): after ``change_at`` moves a shorter way opens.

    Accepted: ``change_at`` a positive integer.
    """
    env = Maze(SHORTCUT_BEFORE, SHORTCUT_AFTER, change_at=check.as_int("change_at", change_at, 1))
    env.spec = gym.envs.registration.EnvSpec(id="ShortcutMaze", entry_point="rl2llm.model_based:shortcut_maze")
    return env


# --------------------------------------------------------------------------- Dyna-Q


@dataclass
class DynaResult:
    """What :func:`dyna_q` returns."""

    Q: np.ndarray
    n_planning: int
    kappa: float
    #: The length (real moves) and undiscounted return of every episode, the last possibly cut by ``max_steps``.
    lengths: np.ndarray
    returns: np.ndarray
    #: The reward of every real move, in order (its cumulative sum is Sutton and Barto's Figure 8.5).
    rewards: np.ndarray
    #: How many planning updates were made in all (the computation spent instead of experience).
    planning_updates: int = 0


def dyna_q(env, n_planning: int, n_episodes: int | None = None, *, max_steps: int | None = None,
           gamma: float = 0.95, alpha: float = 0.1, epsilon: float = 0.1, kappa: float = 0.0, seed: int = 0,
           description: str | None = None, quiet: bool = False) -> DynaResult:
    """Dyna-Q (Sutton, 1990): Q-learning that also learns from a remembered model of the world.

    After every real move ``(s, a, r, s')`` the agent makes Lecture 3's
    Q-learning update, remembers that ``a`` in ``s`` led to ``s'`` with reward
    ``r`` (a deterministic model: the last outcome seen), and then makes
    ``n_planning`` more Q-learning updates on pairs ``(s, a)`` drawn uniformly
    from those it has tried, with the remembered outcome in place of a real one.
    The acting and learning loop is :func:`rl2llm.td.td_control`'s, random
    numbers included (planning draws its own), so ``n_planning=0`` gives exactly
    Q-learning's values, episode for episode.

    Dyna-Q+ (``kappa > 0``, Sutton and Barto, 2018, section 8.3): planning adds
    the bonus ``kappa * sqrt(tau)`` to the remembered reward of a pair last tried
    ``tau`` real moves ago, so the agent goes back to check what it has not seen
    for a long time; and the actions never tried in a visited state count as
    tried long ago, leading back to the same state with reward 0.

    The run ends after ``n_episodes`` episodes or ``max_steps`` real moves,
    whichever comes first (at least one must be given).

    Accepted: ``env`` a gymnasium environment with Discrete spaces;
    ``n_planning`` an integer >= 0; ``n_episodes`` and ``max_steps`` ``None``
    or positive integers; ``gamma`` in ``[0, 1]``; ``alpha`` in ``(0, 1]``;
    ``epsilon`` in ``[0, 1]``; ``kappa`` a number >= 0; ``seed`` an integer
    >= 0; ``description`` ``None`` or a string; ``quiet`` True or False.
    """
    S, A = check.discrete_sizes("env", env)
    n_planning = check.as_int("n_planning", n_planning, 0)
    if n_episodes is None and max_steps is None:
        raise ValueError("give n_episodes or max_steps (or both): the run needs an end")
    n_episodes = None if n_episodes is None else check.as_int("n_episodes", n_episodes, 1)
    max_steps = None if max_steps is None else check.as_int("max_steps", max_steps, 1)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    alpha = check.as_real("alpha", alpha, 0.0, 1.0, low_open=True)
    epsilon = check.as_real("epsilon", epsilon, 0.0, 1.0)
    kappa = check.as_real("kappa", kappa, 0.0)
    seed = check.as_int("seed", seed, 0)
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a string or None, got {check.describe(description)}")
    quiet = check.as_bool("quiet", quiet)
    label = description or f"Dyna-Q, {n_planning} planning steps, seed {seed}"
    return _dyna_q(env, S, A, n_planning, n_episodes, max_steps, gamma, alpha, epsilon, kappa, seed,
                   None if quiet else label)


def _dyna_q(env, S, A, n_planning, n_episodes, max_steps, gamma, alpha, epsilon, kappa, seed, label):
    rng = np.random.default_rng(seed)                 # acting: the same draws as td_control's
    planning_rng = np.random.default_rng([seed, 1])   # planning: its own
    Q = np.zeros((S, A))
    allowed = list(range(A))
    model = _TableModel(S, A, kappa)
    lengths, returns, rewards = [], [], []
    steps = 0
    episodes = range(n_episodes) if n_episodes is not None else _count()
    if label is not None:
        episodes = progress(episodes, label, total=n_episodes, every=max(1, (n_episodes or 100) // 10))
    env.reset(seed=seed)
    for _ in episodes:
        s, _ = env.reset()
        a = _epsilon_greedy(Q[s].tolist(), epsilon, rng, allowed)
        done, total, t = False, 0.0, 0
        while not done:
            s_next, r, terminated, truncated, _ = env.step(a)
            total, t, steps = total + r, t + 1, steps + 1
            rewards.append(r)
            done = terminated or truncated or steps == max_steps
            a_next = 0 if terminated else _epsilon_greedy(
                Q[s_next].tolist(), epsilon, rng, allowed)
            # direct reinforcement learning: Lecture 3's Q-learning update
            next_value = 0.0 if terminated else max(Q[s_next].tolist())
            Q[s, a] += alpha * (r + gamma * next_value - Q[s, a])
            # model learning: remember what the move led to
            model.remember(s, a, r, s_next, terminated, steps)
            # planning: n_planning more updates, on remembered moves
            if n_planning:
                model.plan(Q, planning_rng.random(n_planning), steps, gamma, alpha)
            s, a = s_next, a_next
        lengths.append(t)
        returns.append(total)
        if steps == max_steps:
            break
    return DynaResult(Q, n_planning, kappa, np.array(lengths), np.array(returns), np.array(rewards),
                      n_planning * steps)


def _count():
    episode = 0
    while True:
        yield episode
        episode += 1


class _TableModel:
    """Dyna-Q's model: the last outcome of every (state, action) tried, and when it was tried."""

    def __init__(self, S: int, A: int, kappa: float):
        self.next = np.zeros((S, A), dtype=int)
        self.reward = np.zeros((S, A))
        self.end = np.zeros((S, A), dtype=bool)
        self.known = np.zeros((S, A), dtype=bool)
        self.last_tried = np.zeros((S, A))
        self.pairs: list[int] = []            # the known pairs, as s * A + a
        self.A, self.kappa = A, kappa

    def remember(self, s, a, r, s_next, terminated, now) -> None:
        if self.kappa > 0 and not self.known[s].any():
            # Dyna-Q+: a new state's untried moves lead back to it, reward 0
            for b in range(self.A):
                self.next[s, b] = s
                self._add(s, b)
        self._add(s, a)
        self.next[s, a], self.reward[s, a], self.end[s, a] = s_next, r, terminated
        self.last_tried[s, a] = now

    def _add(self, s: int, a: int) -> None:
        if not self.known[s, a]:
            self.known[s, a] = True
            self.pairs.append(s * self.A + a)

    def plan(self, Q, draws, now, gamma, alpha) -> None:
        """One Q-learning update on a remembered move per uniform draw in ``draws``."""
        pairs, n, kappa = self.pairs, len(self.pairs), self.kappa
        for u in draws.tolist():
            s, a = divmod(pairs[int(u * n)], self.A)
            r = self.reward[s, a]
            if kappa > 0:        # Dyna-Q+: the longer untried, the more worth a look
                r += kappa * math.sqrt(now - self.last_tried[s, a])
            s2 = self.next[s, a]
            next_value = 0.0 if self.end[s, a] else max(Q[s2].tolist())
            Q[s, a] += alpha * (r + gamma * next_value - Q[s, a])


# --------------------------------------------------------------------------- a learned dynamics model


def _as_tensor(name: str, value, ndim: int | None = None) -> torch.Tensor:
    """A float32 tensor of finite numbers (arrays and lists are converted)."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must hold floats, got a tensor of dtype {value.dtype}")
        tensor = value.detach().float()
    else:
        tensor = torch.as_tensor(check.numeric_array(name, value), dtype=torch.float32)
    if ndim is not None and tensor.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' if ndim > 1 else ''}, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite")
    return tensor


def _checked_hidden(hidden) -> tuple[int, ...]:
    if not isinstance(hidden, (tuple, list)) or len(hidden) == 0:
        raise TypeError(f"hidden must be a non-empty tuple of layer widths such as (64, 64), "
                        f"got {check.describe(hidden)}")
    return tuple(check.as_int("hidden", n, 1) for n in hidden)


class DynamicsModel(nn.Module):
    """A learned model of the world: ``next_obs = obs + f(obs, action)``, with ``f`` an MLP.

    Predicting the *change* of the observation (``predict_delta=True``, Nagabandi
    et al., 2018) makes "nothing moves" the network's easiest output; with
    ``predict_delta=False`` the network predicts the next observation itself
    (Lecture 8's gotcha compares the two). Inputs and targets are normalised
    by the statistics of the data the model was last fitted on (:func:`fit_model`
    sets them), so every input and output of the network is of order 1.

    Accepted: ``obs_dim`` and ``action_dim`` positive integers; ``hidden`` a
    non-empty tuple of positive layer widths; ``predict_delta`` True or False.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...] = (64, 64),
                 predict_delta: bool = True):
        super().__init__()
        self.obs_dim = check.as_int("obs_dim", obs_dim, 1)
        self.action_dim = check.as_int("action_dim", action_dim, 1)
        self.hidden = _checked_hidden(hidden)
        self.predict_delta = check.as_bool("predict_delta", predict_delta)
        layers, width = [], obs_dim + action_dim
        for n in self.hidden:
            layers += [nn.Linear(width, n), nn.SiLU()]
            width = n
        layers.append(nn.Linear(width, obs_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("in_mean", torch.zeros(obs_dim + action_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + action_dim))
        self.register_buffer("out_mean", torch.zeros(obs_dim))
        self.register_buffer("out_std", torch.ones(obs_dim))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The predicted next observations ``(N, obs_dim)``, from the observations
        ``(N, obs_dim)`` and the actions ``(N, action_dim)``."""
        x = (torch.cat([obs, actions], dim=-1) - self.in_mean) / self.in_std
        out = self.out_mean + self.out_std * self.net(x)
        return obs + out if self.predict_delta else out

    def as_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The model as it is now, as a plain function of batches for a planner's inner loop.

        The normalisation is folded into the first and last layers' weights and
        the calls bypass ``nn.Module``'s machinery: the same predictions (to
        float rounding), about twice as fast on the small batches planning
        makes. Refit the model, and take a new function.
        """
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        weights = [layer.weight.detach().clone() for layer in linears]
        biases = [layer.bias.detach().clone() for layer in linears]
        # first layer: W (x - m) / s + b  =  (W / s) x + (b - W (m / s))
        biases[0] = biases[0] - weights[0] @ (self.in_mean / self.in_std)
        weights[0] = weights[0] / self.in_std
        # last layer: om + os (W h + b)  =  (os W) h + (om + os b)
        biases[-1] = self.out_mean + self.out_std * biases[-1]
        weights[-1] = self.out_std[:, None] * weights[-1]
        layers = list(zip(weights, biases))
        hidden_layers, (w_out, b_out) = layers[:-1], layers[-1]
        silu, linear, delta = nn.functional.silu, nn.functional.linear, self.predict_delta

        def step(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            x = torch.cat([obs, actions], dim=-1)
            for w, b in hidden_layers:
                x = silu(linear(x, w, b))
            out = linear(x, w_out, b_out)
            return obs + out if delta else out

        return step

    def predict(self, obs, actions) -> torch.Tensor:
        """:meth:`forward` with its arguments checked and no gradient: ``(N, obs_dim)`` and ``(N, action_dim)``."""
        obs, actions = _checked_pairs(self, obs, actions)
        with torch.no_grad():
            return self(obs, actions)

    def targets(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output before de-normalisation: the change, or the next observation."""
        return next_obs - obs if self.predict_delta else next_obs


def _checked_pairs(model: DynamicsModel, obs, actions) -> tuple[torch.Tensor, torch.Tensor]:
    obs, actions = _as_tensor("obs", obs, 2), _as_tensor("actions", actions, 2)
    if obs.shape[1] != model.obs_dim or actions.shape[1] != model.action_dim:
        raise ValueError(f"obs and actions must have shapes (N, {model.obs_dim}) and (N, {model.action_dim}), "
                         f"got {tuple(obs.shape)} and {tuple(actions.shape)}")
    if len(obs) != len(actions):
        raise ValueError(f"obs and actions must have the same number of rows, got {len(obs)} and {len(actions)}")
    return obs, actions


def fit_model(model: DynamicsModel, obs, actions, next_obs, n_steps: int = 500, batch_size: int = 256,
              learning_rate: float = 1e-3, seed: int = 0) -> np.ndarray:
    """Train ``model`` on transitions by ``n_steps`` Adam steps on the mean squared (normalised) error.

    The normalisation statistics are first set from all the data given (a
    standard deviation below 1e-6 counts as 1e-6), then each step draws a
    minibatch of ``batch_size`` transitions uniformly. Training continues from
    the model's current weights. Returns the loss of every step.

    Accepted: ``model`` a :class:`DynamicsModel`; ``obs`` and ``next_obs``
    ``(N, obs_dim)`` and ``actions`` ``(N, action_dim)`` finite numbers (arrays
    or tensors), ``N >= 2``; ``n_steps`` and ``batch_size`` positive integers;
    ``learning_rate`` > 0; ``seed`` an integer >= 0 (the minibatches').
    """
    if not isinstance(model, DynamicsModel):
        raise TypeError(f"model must be a DynamicsModel, got {check.describe(model)}")
    obs, actions = _checked_pairs(model, obs, actions)
    next_obs = _as_tensor("next_obs", next_obs, 2)
    if next_obs.shape != obs.shape:
        raise ValueError(f"next_obs must have the shape of obs, {tuple(obs.shape)}, got {tuple(next_obs.shape)}")
    if len(obs) < 2:
        raise ValueError(f"fit_model needs at least 2 transitions to normalise by, got {len(obs)}")
    n_steps = check.as_int("n_steps", n_steps, 1)
    batch_size = check.as_int("batch_size", batch_size, 1)
    learning_rate = check.as_real("learning_rate", learning_rate, 0.0, low_open=True)
    seed = check.as_int("seed", seed, 0)
    return _fit_model(model, obs, actions, next_obs, n_steps, batch_size, learning_rate, seed)


def _fit_model(model, obs, actions, next_obs, n_steps, batch_size, learning_rate, seed) -> np.ndarray:
    inputs = torch.cat([obs, actions], dim=1)
    targets = model.targets(obs, next_obs)
    with torch.no_grad():
        model.in_mean.copy_(inputs.mean(0))
        model.in_std.copy_(inputs.std(0).clamp_min(1e-6))
        model.out_mean.copy_(targets.mean(0))
        model.out_std.copy_(targets.std(0).clamp_min(1e-6))
    x = (inputs - model.in_mean) / model.in_std
    y = (targets - model.out_mean) / model.out_std
    optimizer = torch.optim.Adam(model.net.parameters(), learning_rate, fused=True)
    generator = torch.Generator().manual_seed(seed)
    n = len(x)
    losses = np.zeros(n_steps)
    for step in range(n_steps):
        batch = torch.randint(n, (min(batch_size, n),), generator=generator)
        loss = ((model.net(x[batch]) - y[batch]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses[step] = loss.item()
    return losses


# --------------------------------------------------------------------------- planners


@dataclass
class Plan:
    """What a planner returns."""

    #: The planned action sequence, shape ``(horizon, action_dim)``: what to do now, and after.
    actions: torch.Tensor
    #: What the plan is expected to earn by the scoring function: random shooting, the best candidate's
    #: score; CEM, the mean score of the last iteration's elites.
    value: float
    #: CEM: the mean standard deviation of the sampling distribution before each iteration and after
    #: the last (``iterations + 1`` numbers: it narrows as CEM homes in). Random shooting: empty.
    stds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: The best candidate's score in each iteration (random shooting: one iteration).
    best_values: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _checked_bounds(low, high) -> tuple[torch.Tensor, torch.Tensor]:
    low, high = _as_tensor("low", low, 1), _as_tensor("high", high, 1)
    if low.shape != high.shape or len(low) == 0:
        raise ValueError(f"low and high must be 1-D with one bound per action dimension, "
                         f"got shapes {tuple(low.shape)} and {tuple(high.shape)}")
    if (low >= high).any():
        i = int(torch.nonzero(low >= high)[0])
        raise ValueError(f"low must be below high in every action dimension, but low[{i}] = {low[i]:g} "
                         f">= high[{i}] = {high[i]:g}")
    return low, high


def _checked_generator(generator) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (torch.Generator().manual_seed(seed)) or None, "
                        f"got {check.describe(generator)}")
    return generator


def _scores(evaluate: Callable, candidates: torch.Tensor) -> torch.Tensor:
    """``evaluate(candidates)``, checked: one finite score per candidate."""
    scores = evaluate(candidates)
    if not isinstance(scores, torch.Tensor) or scores.shape != (len(candidates),):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else check.describe(scores)
        raise ValueError(f"evaluate must return a tensor of shape ({len(candidates)},), one score per "
                         f"candidate sequence; it returned {shape}")
    if not torch.isfinite(scores).all():
        raise ValueError("evaluate returned a score that is not finite (NaN or infinite)")
    return scores


def _checked_planner_args(evaluate, horizon, low, high, generator):
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a function from action sequences (N, horizon, action_dim) to "
                        f"scores (N,), got {check.describe(evaluate)}")
    horizon = check.as_int("horizon", horizon, 1)
    low, high = _checked_bounds(low, high)
    return horizon, low, high, _checked_generator(generator)


def random_shooting(evaluate: Callable, horizon: int, low, high, n_candidates: int = 300,
                    generator: torch.Generator | None = None) -> Plan:
    """Draw ``n_candidates`` action sequences uniformly within the bounds; keep the best-scoring one.

    ``evaluate`` maps a tensor of candidate sequences, shape
    ``(n_candidates, horizon, action_dim)``, to their scores (higher is
    better), shape ``(n_candidates,)``: for model-predictive control, the
    return each sequence earns in the model (:func:`imagined_returns`).

    Accepted: ``evaluate`` a callable; ``horizon`` and ``n_candidates``
    positive integers; ``low`` and ``high`` 1-D bounds per action dimension
    with ``low < high``; ``generator`` ``None`` (seed 0) or a torch.Generator.
    """
    horizon, low, high, generator = _checked_planner_args(evaluate, horizon, low, high, generator)
    n_candidates = check.as_int("n_candidates", n_candidates, 1)
    return _random_shooting(evaluate, horizon, low, high, n_candidates, generator)


def _random_shooting(evaluate, horizon, low, high, n_candidates, generator) -> Plan:
    u = torch.rand(n_candidates, horizon, len(low), generator=generator)
    candidates = low + (high - low) * u
    scores = _scores(evaluate, candidates)
    best = int(scores.argmax())
    return Plan(candidates[best], float(scores[best]), np.zeros(0), np.array([float(scores[best])]))


def cem(evaluate: Callable, horizon: int, low, high, n_candidates: int = 100, n_elites: int = 10,
        iterations: int = 3, init_mean=None, init_std=None, generator: torch.Generator | None = None) -> Plan:
    """The cross-entropy method: sample sequences from a Gaussian, refit it to the best ones, repeat.

    Each of ``iterations`` rounds draws ``n_candidates`` sequences from a
    Gaussian with a mean and a standard deviation per time step and action
    dimension (clipped to the bounds), scores them with ``evaluate`` (as in
    :func:`random_shooting`), and refits the mean and the standard deviation
    (the population one: divided by ``n_elites``) to the ``n_elites``
    best-scoring ones. The distribution narrows onto a good region; the plan
    is its final mean (Rubinstein, 1999; Chua et al., 2018).

    ``init_mean`` defaults to the middle of the bounds and ``init_std`` to a
    quarter of their width; model-predictive control passes the previous
    plan, shifted by one step, as ``init_mean`` (a warm start).

    Accepted: as :func:`random_shooting`, and ``n_elites`` in
    ``1 .. n_candidates``; ``iterations`` a positive integer; ``init_mean``
    and ``init_std`` ``None`` or finite ``(horizon, action_dim)`` arrays, the
    standard deviations > 0.
    """
    horizon, low, high, generator = _checked_planner_args(evaluate, horizon, low, high, generator)
    n_candidates = check.as_int("n_candidates", n_candidates, 1)
    n_elites = check.as_int("n_elites", n_elites, 1, n_candidates)
    iterations = check.as_int("iterations", iterations, 1)
    shape = (horizon, len(low))
    mean = ((low + high) / 2).expand(shape).clone() if init_mean is None else _as_tensor("init_mean", init_mean)
    std = ((high - low) / 4).expand(shape).clone() if init_std is None else _as_tensor("init_std", init_std)
    for name, value in (("init_mean", mean), ("init_std", std)):
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape (horizon, action_dim) = {shape}, got {tuple(value.shape)}")
    if (std <= 0).any():
        raise ValueError("init_std must be > 0 everywhere")
    return _cem(evaluate, low, high, n_candidates, n_elites, iterations, mean, std, generator)


def _cem(evaluate, low, high, n_candidates, n_elites, iterations, mean, std,
         generator) -> Plan:
    stds, best_values = [float(std.mean())], []
    for _ in range(iterations):
        noise = torch.randn(n_candidates, *mean.shape, generator=generator)
        candidates = torch.maximum(torch.minimum(mean + std * noise, high), low)
        scores = _scores(evaluate, candidates)
        top = scores.topk(n_elites)
        mean, std = _refit(candidates[top.indices])
        stds.append(float(std.mean()))
        best_values.append(float(top.values[0]))
    value = float(top.values.mean())   # what the last elites earn on average
    return Plan(mean, value, np.array(stds), np.array(best_values))


def _refit(elites: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CEM's new Gaussian: the mean and the population standard deviation (divided by the number of
    elites) of the elite sequences, per step and action dimension."""
    return elites.mean(dim=0), elites.std(dim=0, correction=0)


def imagined_returns(model: Callable, reward_fn: Callable, obs, action_seqs) -> torch.Tensor:
    """The return each action sequence earns in the model, from ``obs``: all sequences at once.

    Every candidate starts from the same observation; at each step the
    reward is ``reward_fn(observations, actions)`` and the next observations
    are ``model(observations, actions)``, one batched call for all candidates
    (no discount over the short planning horizon).

    Accepted: ``model`` and ``reward_fn`` callables on batches (a
    :class:`DynamicsModel`, :func:`pendulum_step`; :func:`pendulum_reward`);
    ``obs`` one observation, shape ``(obs_dim,)``; ``action_seqs`` shape
    ``(N, horizon, action_dim)``.
    """
    for name, fn in (("model", model), ("reward_fn", reward_fn)):
        if not callable(fn):
            raise TypeError(f"{name} must be a function of (observations, actions), got {check.describe(fn)}")
    obs = _as_tensor("obs", obs, 1)
    action_seqs = _as_tensor("action_seqs", action_seqs, 3)
    with torch.no_grad():
        return _imagined_returns(model, reward_fn, obs, action_seqs)


def _imagined_returns(model, reward_fn, obs, action_seqs) -> torch.Tensor:
    n, horizon, _ = action_seqs.shape
    states = [obs.expand(n, -1)]
    for t in range(horizon - 1):   # where the last action leads earns nothing more
        states.append(model(states[-1], action_seqs[:, t]))
    # the rewards of every step of every candidate in one call: (horizon * n) rows
    states = torch.stack(states, dim=1).reshape(n * horizon, -1)
    rewards = reward_fn(states, action_seqs.reshape(n * horizon, -1))
    return rewards.reshape(n, horizon).sum(dim=1)


# --------------------------------------------------------------------------- Pendulum


def pendulum_reward(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Pendulum-v1's reward for a batch: ``-(angle^2 + 0.1 speed^2 + 0.001 torque^2)``.

    ``obs`` rows are ``(cos angle, sin angle, angular speed)`` with the angle 0
    upright; ``actions`` rows are the torque, clipped to ``[-2, 2]`` as the
    environment does. As in gymnasium, the reward depends on the state the
    action is taken in, not on the one it leads to.
    """
    obs, actions = _checked_batch("obs", obs, 3), _checked_batch("actions", actions, 1)
    angle = torch.atan2(obs[:, 1], obs[:, 0])
    torque = actions[:, 0].clamp(-2.0, 2.0)
    return -(angle ** 2 + 0.1 * obs[:, 2] ** 2 + 0.001 * torque ** 2)


def pendulum_step(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Pendulum-v1's exact physics for a batch: the next observations (gymnasium's equations, g = 10).

    The same arithmetic as ``gymnasium.envs.classic_control.PendulumEnv.step``
    (a test checks it against the environment), usable wherever a
    :class:`DynamicsModel` is: the perfect model a learned one is measured against.
    """
    obs, actions = _checked_batch("obs", obs, 3), _checked_batch("actions", actions, 1)
    angle = torch.atan2(obs[:, 1], obs[:, 0])
    torque = actions[:, 0].clamp(-2.0, 2.0)
    speed = (obs[:, 2] + (3 * 10.0 / 2 * torch.sin(angle) + 3.0 * torque) * 0.05).clamp(-8.0, 8.0)
    angle = angle + speed * 0.05
    return torch.stack([torch.cos(angle), torch.sin(angle), speed], dim=1)


def _checked_batch(name: str, value, width: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[1] != width:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else check.describe(value)
        raise ValueError(f"{name} must be a tensor of shape (N, {width}), got {shape}")
    return value


#: The reward functions the planner is given, by environment id (the model learns only the dynamics).
REWARD_FUNCTIONS = {"Pendulum-v1": pendulum_reward}


# --------------------------------------------------------------------------- model-predictive control


@dataclass(frozen=True)
class MBRLConfig:
    """The knobs of :class:`MPC` and :func:`train_mbrl`. The defaults suit Pendulum-v1 on a CPU.

    The loop takes ``random_steps`` uniformly random actions, then fits the
    model (``fit_steps`` Adam steps of ``batch_size`` at ``learning_rate``)
    and acts with model-predictive control, refitting every ``refit_every``
    steps on everything collected, until ``total_steps``.

    The planner (``"cem"`` or ``"random_shooting"``) looks ``horizon`` steps
    ahead. CEM runs ``iterations`` rounds of ``n_candidates`` sequences and
    refits to the ``n_elites`` best; random shooting draws ``n_candidates``
    once. MPC acts on ``replan_every`` actions of each plan before planning
    again (1: replan at every step, the standard).
    """

    total_steps: int = 1000
    random_steps: int = 200
    refit_every: int = 200
    planner: str = "cem"
    horizon: int = 20
    n_candidates: int = 100
    n_elites: int = 10
    iterations: int = 3
    replan_every: int = 1
    hidden: tuple[int, ...] = (64, 64)
    predict_delta: bool = True
    fit_steps: int = 500
    batch_size: int = 256
    learning_rate: float = 1e-3

    def __post_init__(self):
        for name in ("total_steps", "random_steps", "refit_every", "horizon", "n_candidates", "n_elites",
                     "iterations", "replan_every", "fit_steps", "batch_size"):
            check.as_int(name, getattr(self, name), 1)
        if self.planner not in ("cem", "random_shooting"):
            raise ValueError(f"planner must be 'cem' or 'random_shooting', got {self.planner!r}")
        if self.n_elites > self.n_candidates:
            raise ValueError(f"n_elites must be at most n_candidates = {self.n_candidates}, got {self.n_elites}")
        if self.replan_every > self.horizon:
            raise ValueError(f"replan_every must be at most the horizon, {self.horizon} (a plan has no more "
                             f"actions), got {self.replan_every}")
        if self.random_steps < 2:
            raise ValueError(f"random_steps must be at least 2 (the first fit needs data), got {self.random_steps}")
        object.__setattr__(self, "hidden", _checked_hidden(self.hidden))
        check.as_bool("predict_delta", self.predict_delta)
        check.as_real("learning_rate", self.learning_rate, 0.0, low_open=True)


def config_dict(config: MBRLConfig) -> dict:
    """The fields of an :class:`MBRLConfig` as a plain dict."""
    if not isinstance(config, MBRLConfig):
        raise TypeError(f"config must be an MBRLConfig, got {check.describe(config)}")
    return asdict(config)


class MPC:
    """Model-predictive control: plan ``horizon`` steps ahead in the model, act, and plan again.

    :meth:`act` returns the next action for an observation. Every
    ``replan_every`` steps it plans afresh from the current observation (CEM
    warm-started with the rest of its previous plan); in between it acts the
    next actions of the current plan, open loop. :attr:`predicted` keeps the
    predicted return of every plan made.

    Accepted: ``model`` a callable ``(observations, actions) -> next
    observations`` on batches (a :class:`DynamicsModel`, :func:`pendulum_step`);
    ``reward_fn`` a callable ``(observations, actions) -> rewards``; ``low`` and
    ``high`` the action bounds; ``config`` an :class:`MBRLConfig` (its planner
    settings); ``seed`` an integer >= 0.
    """

    def __init__(self, model: Callable, reward_fn: Callable, low, high, config: MBRLConfig = MBRLConfig(),
                 seed: int = 0):
        for name, fn in (("model", model), ("reward_fn", reward_fn)):
            if not callable(fn):
                raise TypeError(f"{name} must be a function of (observations, actions), got {check.describe(fn)}")
        if not isinstance(config, MBRLConfig):
            raise TypeError(f"config must be an MBRLConfig, got {check.describe(config)}")
        self.model, self.reward_fn, self.config = model, reward_fn, config
        self.low, self.high = _checked_bounds(low, high)
        self.generator = torch.Generator().manual_seed(check.as_int("seed", seed, 0))
        self.predicted: list[float] = []
        self.reset()

    def reset(self) -> None:
        """Forget the current plan (call it at the start of an episode)."""
        self._plan: torch.Tensor | None = None
        self._next = 0

    def act(self, obs) -> np.ndarray:
        """The action to take in ``obs`` (one observation, shape ``(obs_dim,)``), as a float32 array."""
        obs = _as_tensor("obs", obs, 1)
        c = self.config
        if self._plan is None or self._next >= c.replan_every:
            self._replan(obs)
        action = self._plan[self._next]
        self._next += 1
        return action.numpy().astype(np.float32)

    def _replan(self, obs: torch.Tensor) -> None:
        c = self.config

        def evaluate(candidates):
            return _imagined_returns(self.model, self.reward_fn, obs, candidates)

        low, high, shape = self.low, self.high, (c.horizon, len(self.low))
        with torch.no_grad():
            if c.planner == "random_shooting":
                plan = _random_shooting(evaluate, c.horizon, low, high, c.n_candidates,
                                        self.generator)
            else:
                mean = ((low + high) / 2).expand(shape).clone()
                if self._plan is not None:   # warm start: the rest of the last plan
                    rest = self._plan[self._next:]
                    mean[:len(rest)] = rest
                std = ((high - low) / 4).expand(shape).clone()
                plan = _cem(evaluate, low, high, c.n_candidates, c.n_elites,
                            c.iterations, mean, std, self.generator)
        self._plan, self._next = plan.actions, 0
        self.predicted.append(plan.value)


@dataclass
class MBRLResult:
    """What :func:`train_mbrl` returns."""

    model: DynamicsModel
    config: MBRLConfig
    seed: int
    #: The return of every episode (the first ones with random actions), and the step at which it ended.
    episode_returns: np.ndarray
    episode_end_steps: np.ndarray
    #: The model's training loss at the end of every fit, and the number of transitions it was fitted on.
    fit_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fit_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    seconds: float = 0.0
    #: Of which planning (imagined rollouts).
    planning_seconds: float = 0.0
    env_steps: int = 0
    #: All transitions seen: observations, actions, next observations (for analysis).
    observations: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    next_observations: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def _checked_continuous_env(env_id) -> gym.Env:
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be the id of a gymnasium environment such as 'Pendulum-v1', "
                        f"got {check.describe(env_id)}")
    try:
        env = gym.make(env_id)
    except gym.error.Error as err:
        raise ValueError(f"env_id {env_id!r} is not a gymnasium environment ({err})") from None
    obs_space, action_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1 \
            or not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        env.close()
        raise ValueError(f"env_id {env_id!r} must have flat Box observation and action spaces (a dynamics "
                         f"model of vectors, continuous actions); it has {obs_space} and {action_space}")
    return env


def train_mbrl(env_id: str, config: MBRLConfig = MBRLConfig(), seed: int = 0, reward_fn: Callable | None = None,
               threads: int | None = 1, description: str | None = None) -> MBRLResult:
    """Model-based RL with model-predictive control (Nagabandi et al., 2018): learn the dynamics, plan with them.

    Take ``config.random_steps`` random actions; then repeat: fit a
    :class:`DynamicsModel` on every transition seen so far, and act for
    ``config.refit_every`` steps with :class:`MPC` planning in that model,
    until ``config.total_steps``. The reward function is given, not learned:
    ``reward_fn``, or for a known ``env_id`` (Pendulum-v1) the one in
    :data:`REWARD_FUNCTIONS`. The return of every episode is recorded: after
    the random ones, each is the planner's performance with the model fitted
    on the steps before it. Progress goes to the build log.

    Accepted: ``env_id`` a registered id with flat Box observations and
    actions; ``config`` an :class:`MBRLConfig`; ``seed`` an integer >= 0;
    ``reward_fn`` ``None`` (for a known environment) or a callable
    ``(observations, actions) -> rewards`` on torch batches; ``threads``
    ``None`` or a positive integer; ``description`` ``None`` or a string.
    """
    if not isinstance(config, MBRLConfig):
        raise TypeError(f"config must be an MBRLConfig, got {check.describe(config)}")
    seed = check.as_int("seed", seed, 0, 2**31 - 1)
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a string or None, got {check.describe(description)}")
    if reward_fn is None:
        if env_id not in REWARD_FUNCTIONS:
            known = ", ".join(REWARD_FUNCTIONS)
            raise ValueError(f"reward_fn is needed for {env_id!r}: the planner must be told the reward "
                             f"(known: {known})")
        reward_fn = REWARD_FUNCTIONS[env_id]
    elif not callable(reward_fn):
        raise TypeError(f"reward_fn must be a function of (observations, actions), got {check.describe(reward_fn)}")
    env = _checked_continuous_env(env_id)
    with torch_threads(threads), flush_denormals():
        return _train_mbrl(env, config, seed, reward_fn, description or f"MBRL ({config.planner}) on {env_id}, "
                                                                       f"seed {seed}")


def _train_mbrl(env, c: MBRLConfig, seed: int, reward_fn, description: str) -> MBRLResult:
    start_time = time.perf_counter()
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    with torch.random.fork_rng(devices=[]):  # the same initial weights for the same seed
        torch.manual_seed(seed)
        model = DynamicsModel(obs_dim, action_dim, c.hidden, c.predict_delta)
    mpc = MPC(model, reward_fn, low, high, c, seed=seed)
    data = ReplayBuffer(c.total_steps, (obs_dim,), (action_dim,), np.float32, seed=seed)
    rng = np.random.default_rng(seed)
    returns, end_steps, fit_losses, fit_sizes = [], [], [], []
    planning_seconds, episode_return = 0.0, 0.0
    obs, _ = env.reset(seed=seed)
    for step in progress(range(c.total_steps), description, every=max(1, c.total_steps // 10)):
        if step >= c.random_steps and (step - c.random_steps) % c.refit_every == 0:
            n = len(data)
            losses = _fit_model(model, *(torch.from_numpy(x[:n]) for x in (data.obs, data.actions, data.next_obs)),
                                c.fit_steps, c.batch_size, c.learning_rate, seed + step)
            fit_losses.append(float(losses[-20:].mean()))
            fit_sizes.append(n)
            mpc.model = model.as_function()  # the refitted model, in its fast form
        if step < c.random_steps:
            action = rng.uniform(low, high).astype(np.float32)
        else:
            tic = time.perf_counter()
            action = mpc.act(obs)
            planning_seconds += time.perf_counter() - tic
        next_obs, reward, terminated, truncated, _ = env.step(action)
        data._add(obs, action, reward, next_obs, terminated)
        episode_return += reward
        obs = next_obs
        if terminated or truncated:
            returns.append(episode_return)
            end_steps.append(step + 1)
            episode_return = 0.0
            obs, _ = env.reset()
            mpc.reset()
    env.close()
    n = len(data)
    return MBRLResult(model, c, seed, np.array(returns), np.array(end_steps, dtype=int), np.array(fit_losses),
                      np.array(fit_sizes, dtype=int), time.perf_counter() - start_time, planning_seconds,
                      c.total_steps, data.obs[:n].copy(), data.actions[:n].copy(), data.next_obs[:n].copy())


# --------------------------------------------------------------------------- compounding errors


def open_loop_predictions(model: Callable, env_id: str, actions, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The real and the predicted observations along the same action sequences, from the same starts.

    Copy ``i`` of the environment is reset with ``seed + i`` and plays
    ``actions[i]``; the model starts from the same first observation and
    predicts each next one from its own previous prediction (open loop, as a
    planner uses it). Returns ``(real, predicted)``, each of shape
    ``(N, horizon + 1, obs_dim)``, the first step equal. An episode that ends
    early repeats its last observation.

    Accepted: ``model`` a callable on batches (a :class:`DynamicsModel`);
    ``env_id`` a registered id with flat Box observations and actions;
    ``actions`` ``(N, horizon, action_dim)`` finite numbers; ``seed`` an integer >= 0.
    """
    if not callable(model):
        raise TypeError(f"model must be a function of (observations, actions), got {check.describe(model)}")
    env = _checked_continuous_env(env_id)
    env.close()
    actions = _as_tensor("actions", actions, 3)
    seed = check.as_int("seed", seed, 0)
    n, horizon, _ = actions.shape
    real = np.zeros((n, horizon + 1, env.observation_space.shape[0]), np.float32)
    for i in range(n):
        env_i = gym.make(env_id)
        obs, _ = env_i.reset(seed=seed + i)
        real[i, 0] = obs
        done = False
        for t in range(horizon):
            if not done:
                obs, _, terminated, truncated, _ = env_i.step(actions[i, t].numpy())
                done = terminated or truncated
            real[i, t + 1] = obs
        env_i.close()
    predicted = np.zeros_like(real)
    state = torch.from_numpy(real[:, 0])
    predicted[:, 0] = real[:, 0]
    with torch.no_grad():
        for t in range(horizon):
            state = model(state, actions[:, t])
            predicted[:, t + 1] = state.numpy()
    return real, predicted
