"""Deep Q-learning: a replay buffer, a Q-network, DQN and its fixes.

Introduced in Lecture 3 (Value functions and Q-learning), where tabular
Q-learning (:mod:`rl2llm.td`) meets a state space too large for a table.
Lecture 7 (off-policy learning: TD3, SAC) reuses the replay buffers.

* :class:`ReplayBuffer` — a fixed-size ring of transitions, sampled
  uniformly. Observations of any shape; discrete actions (integers) or
  continuous ones (``action_shape=(d,)``, ``action_dtype=np.float32``).
* :class:`PrioritizedReplayBuffer` — samples a transition with probability
  proportional to ``(|TD error| + eps) ** alpha`` and returns the importance
  weights that correct for it (Schaul et al., 2016), on a :class:`SumTree`.
* :class:`QNetwork` — an MLP from an observation to one value per action,
  optionally with a dueling head (Wang et al., 2016).
* :func:`train_dqn` — DQN (Mnih et al., 2015) with a target network, and the
  switches for Double DQN, dueling heads, prioritised replay, and for
  *removing* the target network (the gotcha of Lecture 3).
* :func:`evaluate_q_network` — the greedy policy's returns, many episodes in
  lockstep.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one. The network is small, so the cost of
a training step is PyTorch's per-call overhead, not arithmetic: one CPU
thread is as fast as two (:func:`train_dqn` uses ``threads=1`` by default).
"""

from __future__ import annotations

import contextlib
import numbers
import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from . import _validate as check
from .progress import progress
from .rollouts import play_episodes
from .td import linear_schedule

# --------------------------------------------------------------------------- replay


class Batch(NamedTuple):
    """A sample of transitions, as float32 tensors (actions keep the buffer's dtype)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    #: 1.0 where the episode *ended* after the transition (terminated, not truncated by a time limit).
    terminated: torch.Tensor
    #: Importance weights (all ones for uniform replay).
    weights: torch.Tensor
    #: Where the transitions sit in the buffer (to update their priorities).
    indices: np.ndarray


def _shape(name: str, value) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of positive integers such as (4,), got {check.describe(value)}")
    return tuple(check.as_int(name, n, 1) for n in value)


class ReplayBuffer:
    """The last ``capacity`` transitions ``(obs, action, reward, next_obs, terminated)``, sampled uniformly.

    A transition stores ``terminated``, not ``done``: an episode cut by a time
    limit (``truncated``) did not end, so its last state still has a future,
    and the learner must bootstrap from it (Lecture 4 shows what goes wrong
    otherwise). When full, the oldest transition is overwritten.

    Accepted: ``capacity`` a positive integer; ``obs_shape`` and
    ``action_shape`` tuples of positive integers (``()`` for one integer
    action); ``action_dtype`` an integer or float NumPy dtype; ``seed`` an
    integer >= 0 (the sampling generator's).
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...] = (),
                 action_dtype=np.int64, seed: int = 0):
        self.capacity = check.as_int("capacity", capacity, 1)
        self.obs_shape = _shape("obs_shape", obs_shape)
        self.action_shape = () if action_shape == () else _shape("action_shape", action_shape)
        try:
            self.action_dtype = np.dtype(action_dtype)
        except TypeError:
            raise TypeError(f"action_dtype must be a NumPy dtype such as np.int64 or np.float32, "
                            f"got {check.describe(action_dtype)}") from None
        if self.action_dtype.kind not in "iuf":
            raise TypeError(f"action_dtype must be an integer or float dtype, got {self.action_dtype}")
        self.rng = np.random.default_rng(check.as_int("seed", seed, 0))
        self.obs = np.zeros((self.capacity, *self.obs_shape), np.float32)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros((self.capacity, *self.action_shape), self.action_dtype)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.terminated = np.zeros(self.capacity, np.float32)
        self.position = 0  # where the next transition goes
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> int:
        """Store one transition (overwriting the oldest when full); return where it went.

        ``obs`` and ``next_obs`` finite, of shape ``obs_shape``; ``action`` of
        shape ``action_shape`` (an integer action >= 0 for integer dtypes);
        ``reward`` a finite number; ``terminated`` True or False.
        """
        obs = check.as_finite_array("obs", obs, self.obs_shape)
        next_obs = check.as_finite_array("next_obs", next_obs, self.obs_shape)
        action = check.numeric_array("action", action)
        if action.shape != self.action_shape:
            raise ValueError(f"action must have shape {self.action_shape}, got {action.shape}")
        check.check_finite("action", action)
        if self.action_dtype.kind in "iu" and (np.any(action != np.round(action)) or np.any(action < 0)):
            raise ValueError(f"action must be a whole number >= 0 for a buffer of {self.action_dtype} actions, "
                             f"got {action}")
        reward = check.as_real("reward", reward)
        terminated = check.as_bool("terminated", terminated)
        return self._add(obs, action, reward, next_obs, terminated)

    def _add(self, obs, action, reward, next_obs, terminated) -> int:
        """:meth:`add` without the checks, for the training loops."""
        i = self.position
        self.obs[i] = obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = terminated
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return i

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions, drawn uniformly (weights all 1)."""
        batch_size = self._checked_batch_size(batch_size)
        indices = self.rng.integers(0, self.size, size=batch_size)
        return self._batch(indices, np.ones(batch_size, np.float32))

    def _checked_batch_size(self, batch_size) -> int:
        batch_size = check.as_int("batch_size", batch_size, 1)
        if self.size == 0:
            raise ValueError("the buffer is empty: add transitions before sampling")
        return batch_size

    def _batch(self, indices: np.ndarray, weights: np.ndarray) -> Batch:
        return Batch(
            torch.from_numpy(self.obs[indices]),
            torch.from_numpy(self.actions[indices]),
            torch.from_numpy(self.rewards[indices]),
            torch.from_numpy(self.next_obs[indices]),
            torch.from_numpy(self.terminated[indices]),
            torch.from_numpy(weights),
            indices,
        )


class SumTree:
    """A binary tree whose every node holds the sum of its two children: the leaves are priorities.

    Finding the leaf where a running sum crosses a value takes one step per
    level (``log2(capacity)``), and so does changing a priority. That is what
    makes prioritised sampling from a million transitions cheap. The methods
    work on whole arrays of indices or values at once.

    Accepted: ``capacity`` a positive integer (rounded up to a power of two inside).
    """

    def __init__(self, capacity: int):
        self.capacity = check.as_int("capacity", capacity, 1)
        self._depth = max(0, (self.capacity - 1).bit_length())
        self._leaves = 1 << self._depth  # a power of two >= capacity
        self._tree = np.zeros(2 * self._leaves)  # node 1 is the root; node i has children 2i, 2i+1

    @property
    def total(self) -> float:
        """The sum of all priorities."""
        return float(self._tree[1])

    @property
    def priorities(self) -> np.ndarray:
        """The leaves: one priority per slot (a copy)."""
        return self._tree[self._leaves:self._leaves + self.capacity].copy()

    def update(self, indices, priorities) -> None:
        """Set ``priorities`` (finite, >= 0) at ``indices`` (integers in ``0 .. capacity - 1``)."""
        indices = check.as_actions("indices", np.atleast_1d(indices), self.capacity)
        priorities = check.as_finite_array("priorities", np.atleast_1d(priorities))
        if priorities.shape != indices.shape:
            raise ValueError(f"priorities must have one entry per index: shape {indices.shape}, "
                             f"got {priorities.shape}")
        if (priorities < 0).any():
            raise ValueError(f"priorities must be >= 0, got {priorities[priorities < 0][0]}")
        self._update(indices, priorities)

    def _update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        nodes = indices + self._leaves
        self._tree[nodes] = priorities  # with repeated indices, the last one wins
        for _ in range(self._depth):  # recompute each parent from its children: no drift from adding differences
            nodes = nodes // 2
            self._tree[nodes] = self._tree[2 * nodes] + self._tree[2 * nodes + 1]

    def _update_one(self, index: int, priority: float) -> None:
        """:meth:`_update` for a single leaf, in plain Python (one call per step of the agent)."""
        tree, node = self._tree, index + self._leaves
        tree[node] = priority
        for _ in range(self._depth):
            node //= 2
            tree[node] = tree[2 * node] + tree[2 * node + 1]

    def find(self, values) -> np.ndarray:
        """For each value ``v`` in ``[0, total)``, the leaf ``i`` with ``sum(p[:i]) <= v < sum(p[:i + 1])``."""
        values = check.as_finite_array("values", np.atleast_1d(values))
        if self.total <= 0:
            raise ValueError("the tree is empty (every priority is 0): there is nothing to find")
        if (values < 0).any() or (values >= self.total).any():
            raise ValueError(f"values must lie in [0, total) = [0, {self.total:g})")
        return self._find(values)

    def _find(self, values: np.ndarray) -> np.ndarray:
        nodes = np.ones(len(values), dtype=np.int64)
        values = values.copy()
        for _ in range(self._depth):  # from the root down, one level per step
            left = 2 * nodes
            go_right = values >= self._tree[left]
            values -= np.where(go_right, self._tree[left], 0.0)
            nodes = left + go_right
        return nodes - self._leaves


class PrioritizedReplayBuffer(ReplayBuffer):
    """A replay buffer that samples surprising transitions more often (Schaul et al., 2016).

    Transition ``i`` is drawn with probability ``P(i) = p_i / sum_k p_k``,
    where ``p_i = (|delta_i| + eps) ** alpha`` and ``delta_i`` is its last TD
    error; a new transition gets the largest priority so far, so it is
    replayed at least once soon. Sampling this way changes the distribution the
    loss averages over, so each sample carries the importance weight
    ``w_i = (N P(i)) ** -beta``, divided by the largest possible weight
    (so weights are at most 1); ``beta = 1`` corrects the bias fully.

    Accepted: as :class:`ReplayBuffer`, plus ``alpha`` in ``[0, 1]`` (0 is
    uniform sampling) and ``eps`` a finite number > 0.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...] = (),
                 action_dtype=np.int64, alpha: float = 0.6, eps: float = 1e-6, seed: int = 0):
        super().__init__(capacity, obs_shape, action_shape, action_dtype, seed)
        self.alpha = check.as_real("alpha", alpha, 0.0, 1.0)
        self.eps = check.as_real("eps", eps, 0.0, low_open=True)
        self.tree = SumTree(self.capacity)
        self.max_priority = 1.0  # the largest |delta| + eps seen so far (before the power alpha)

    def _add(self, obs, action, reward, next_obs, terminated) -> int:
        i = super()._add(obs, action, reward, next_obs, terminated)
        self.tree._update_one(i, self.max_priority ** self.alpha)
        return i

    def probabilities(self) -> np.ndarray:
        """``P(i)`` for every stored transition, shape ``(len(self),)``."""
        p = self.tree.priorities[:self.size]
        return p / p.sum()

    def sample(self, batch_size: int, beta: float = 0.4) -> Batch:
        """``batch_size`` transitions drawn with probabilities ``P(i)``, and weights.

        The range ``[0, total)`` is cut into ``batch_size`` equal slices and one
        value is drawn in each (stratified, as in the paper), so a batch
        spreads over the buffer. ``beta`` in ``[0, 1]``.
        """
        batch_size = self._checked_batch_size(batch_size)
        beta = check.as_real("beta", beta, 0.0, 1.0)
        total = self.tree.total
        slices = (np.arange(batch_size) + self.rng.random(batch_size)) / batch_size
        values = np.minimum(slices * total, np.nextafter(total, 0.0))
        indices = np.minimum(self.tree._find(values), self.size - 1)
        leaves = self.tree._tree[self.tree._leaves:self.tree._leaves + self.size]
        probs = leaves[indices] / total
        lowest = leaves.min() / total  # the rarest transition has the largest weight
        weights = (probs / lowest) ** -beta  # = (N P(i))^-beta / (N P_min)^-beta
        return self._batch(indices, weights.astype(np.float32))

    def update_priorities(self, indices, td_errors) -> None:
        """Give the transitions at ``indices`` the priority ``(|td_error| + eps) ** alpha``.

        ``indices``: integers in ``0 .. len(self) - 1`` (as returned in ``Batch.indices``);
        ``td_errors``: finite numbers, one per index.
        """
        indices = check.as_actions("indices", np.atleast_1d(indices), max(self.size, 1))
        td_errors = check.as_finite_array("td_errors", np.atleast_1d(td_errors))
        if td_errors.shape != indices.shape:
            raise ValueError(f"td_errors must have one entry per index: shape {indices.shape}, "
                             f"got {td_errors.shape}")
        self._update_priorities(indices, td_errors)

    def _update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        p = np.abs(td_errors) + self.eps
        self.max_priority = max(self.max_priority, float(p.max()))
        self.tree._update(indices, p ** self.alpha)


# --------------------------------------------------------------------------- the network


class QNetwork(nn.Module):
    """An MLP from an observation to one value per action, ``Q(s, .)``.

    With ``dueling=True`` the last hidden layer splits into two streams, one
    estimating the state's value ``V(s)`` and one the advantages ``A(s, a)``,
    recombined as ``Q = V + A - mean_a A`` (Wang et al., 2016): subtracting
    the mean pins down which part is the value.

    Accepted: ``obs_dim`` and ``n_actions`` positive integers; ``hidden`` a
    non-empty tuple of positive integers (layer widths); ``dueling`` True or False.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (64, 64), dueling: bool = False):
        super().__init__()
        self.obs_dim = check.as_int("obs_dim", obs_dim, 1)
        self.n_actions = check.as_int("n_actions", n_actions, 1)
        self.hidden = _hidden(hidden)
        self.dueling = check.as_bool("dueling", dueling)
        widths = (self.obs_dim, *self.hidden)
        # a dueling network gives its streams the last hidden layer, one copy each
        shared = widths if not self.dueling else widths[:-1]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(shared[:-1], shared[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        if self.dueling:
            width, last = shared[-1], widths[-1]
            self.value = nn.Sequential(nn.Linear(width, last), nn.ReLU(), nn.Linear(last, 1))
            self.advantage = nn.Sequential(nn.Linear(width, last), nn.ReLU(), nn.Linear(last, self.n_actions))
        else:
            self.head = nn.Linear(widths[-1], self.n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = self.body(obs)
        if not self.dueling:
            return self.head(h)
        advantage = self.advantage(h)
        return self.value(h) + advantage - advantage.mean(dim=-1, keepdim=True)

    def _act(self, obs: np.ndarray) -> int:
        """The greedy action for one observation, computed in NumPy (no argument checks).

        The same arithmetic as :meth:`forward`, in float32, on views of the
        parameters (so it always sees the current weights). For a network this
        small, PyTorch's overhead per call costs more than the arithmetic, and
        the training loop acts once per step.
        """
        h = _numpy_layers(self.body, np.asarray(obs, dtype=np.float32))
        if not self.dueling:
            return int(np.argmax(_numpy_layers([self.head], h)))
        advantage = _numpy_layers(self.advantage, h)
        return int(np.argmax(_numpy_layers(self.value, h) + advantage - advantage.mean()))

    def greedy_actions(self, obs) -> np.ndarray:
        """The action with the highest value for each observation in ``obs`` (``(n, obs_dim)`` or ``(obs_dim,)``)."""
        array = check.as_finite_array("obs", obs)
        if array.shape[-1:] != (self.obs_dim,) or array.ndim > 2:
            raise ValueError(f"obs must have shape (obs_dim,) or (n, obs_dim) with obs_dim = {self.obs_dim}, "
                             f"got {array.shape}")
        with torch.no_grad():
            return self(torch.as_tensor(array, dtype=torch.float32)).argmax(dim=-1).numpy()


def _numpy_layers(layers, h: np.ndarray) -> np.ndarray:
    """Apply a sequence of Linear and ReLU layers to one input, in NumPy."""
    for layer in layers:
        if isinstance(layer, nn.Linear):
            h = layer.weight.detach().numpy() @ h + layer.bias.detach().numpy()
        else:
            h = np.maximum(h, 0.0)
    return h


def _hidden(hidden) -> tuple[int, ...]:
    if not isinstance(hidden, (tuple, list)) or len(hidden) == 0:
        raise TypeError(f"hidden must be a non-empty tuple of layer widths such as (64, 64), "
                        f"got {check.describe(hidden)}")
    return tuple(check.as_int("hidden", n, 1) for n in hidden)


# --------------------------------------------------------------------------- DQN


@dataclass(frozen=True)
class DQNConfig:
    """The knobs of :func:`train_dqn`. The defaults learn CartPole-v1 to a return of 500.

    Exploration is epsilon-greedy, epsilon falling linearly from
    ``epsilon_start`` to ``epsilon_end`` over the first ``epsilon_fraction``
    of the steps. After ``learning_starts`` steps, every ``train_every`` steps
    the network takes ``gradient_steps`` gradient steps on batches from the
    buffer. ``target_update`` is the number of gradient steps between copies
    of the network into the target network; ``None`` removes the target
    network (the targets then come from the network being trained).
    """

    total_steps: int = 50_000
    learning_rate: float = 2.3e-3
    #: When set, the learning rate falls linearly to this value over the run (a steadier end).
    learning_rate_end: float | None = None
    batch_size: int = 64
    buffer_size: int = 100_000
    learning_starts: int = 1_000
    train_every: int = 256
    gradient_steps: int = 128
    gamma: float = 0.99
    target_update: int | None = 128
    epsilon_start: float = 1.0
    epsilon_end: float = 0.04
    epsilon_fraction: float = 0.16
    hidden: tuple[int, ...] = (256, 256)
    double: bool = False
    dueling: bool = False
    prioritized: bool = False
    #: Prioritised replay: how strongly priorities shape sampling, and the importance-weight
    #: exponent, annealed linearly from beta_start to 1 over the run.
    alpha: float = 0.6
    beta_start: float = 0.4
    #: Gradients are rescaled when their norm exceeds this (None: never; the Huber loss
    #: already bounds each sample's gradient, as Mnih et al. clipped the TD error).
    max_grad_norm: float | None = None

    def __post_init__(self):
        ints = ("total_steps", "batch_size", "buffer_size", "train_every", "gradient_steps")
        for name in ints:
            check.as_int(name, getattr(self, name), 1)
        check.as_int("learning_starts", self.learning_starts, 0)
        if self.target_update is not None:
            check.as_int("target_update", self.target_update, 1)
        check.as_real("learning_rate", self.learning_rate, 0.0, low_open=True)
        if self.learning_rate_end is not None:
            check.as_real("learning_rate_end", self.learning_rate_end, 0.0)
        check.as_real("gamma", self.gamma, 0.0, 1.0)
        for name in ("epsilon_start", "epsilon_end", "alpha", "beta_start"):
            check.as_real(name, getattr(self, name), 0.0, 1.0)
        check.as_real("epsilon_fraction", self.epsilon_fraction, 0.0, 1.0, low_open=True)
        object.__setattr__(self, "hidden", _hidden(self.hidden))
        for name in ("double", "dueling", "prioritized"):
            check.as_bool(name, getattr(self, name))
        if self.max_grad_norm is not None:
            check.as_real("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)


@dataclass
class DQNResult:
    """What :func:`train_dqn` returns."""

    q_network: QNetwork
    config: DQNConfig
    seed: int
    #: The return of every finished training episode, and the step at which it ended.
    episode_returns: np.ndarray
    episode_end_steps: np.ndarray
    #: The loss and the mean predicted Q(s, a) of the batch at every gradient step.
    losses: np.ndarray
    q_means: np.ndarray
    #: Greedy evaluations during training: the steps, and the returns (one row per evaluation).
    eval_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    eval_returns: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    seconds: float = 0.0
    #: The step after which the returned network was saved (``total_steps`` unless ``keep_best``).
    network_step: int = 0


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` PyTorch threads (``None``: leave the setting alone), then restore it."""
    if n is None:
        yield
        return
    n = check.as_int("threads", n, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def flush_denormals():
    """Run the block with CPU denormal floats flushed to zero, then switch flushing off again
    (PyTorch offers no way to read the setting, and off is its default).

    Adam's running averages of squared gradients decay towards numbers so small
    (below 1e-38) that the CPU handles them in slow microcode: on CartPole they
    made the optimiser step several times slower than on a fresh network.
    Flushing them to zero changes nothing that matters to learning.
    """
    before = torch.set_flush_denormal(True)  # returns False where the CPU cannot flush
    try:
        yield
    finally:
        if before:
            torch.set_flush_denormal(False)


def _checked_env_id(env_id, why: str = "a Q-network outputs one value per action") -> gym.Env:
    """A fresh environment made from ``env_id``: a registered id with a flat Box observation and Discrete actions
    numbered from 0. ``why`` ends the error message: what needs that shape."""
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be the id of a gymnasium environment such as 'CartPole-v1', "
                        f"got {check.describe(env_id)}")
    try:
        env = gym.make(env_id)
    except gym.error.Error as err:
        raise ValueError(f"env_id {env_id!r} is not a gymnasium environment ({err})") from None
    obs_space, action_space = env.observation_space, env.action_space
    if not isinstance(action_space, gym.spaces.Discrete) or not isinstance(obs_space, gym.spaces.Box) \
            or len(obs_space.shape) != 1:
        env.close()
        raise ValueError(f"env_id {env_id!r} must have a flat Box observation space and a Discrete action "
                         f"space ({why}); it has {obs_space} and {action_space}")
    if int(action_space.start) != 0:
        env.close()
        raise ValueError(f"env_id {env_id!r} must number its actions from 0, got {action_space}")
    return env


def train_dqn(env_id: str, config: DQNConfig = DQNConfig(), seed: int = 0, eval_every: int = 0,
              eval_episodes: int = 10, keep_best: bool = False, threads: int | None = 1,
              description: str | None = None) -> DQNResult:
    """Train a Q-network with DQN on the gymnasium environment ``env_id``; see :class:`DQNConfig`.

    The loop: act epsilon-greedily, store the transition, and now and then take
    gradient steps on the squared-then-linear (Huber) TD error of a batch from
    the buffer, the targets computed by the target network. With
    ``eval_every > 0`` the greedy policy plays ``eval_episodes`` episodes every
    ``eval_every`` steps (seeds apart from training's); with ``keep_best`` the
    network returned is the one with the best mean evaluation return (the
    latest among equals), not the last one: DQN's return can collapse after it
    has solved a task, and this is how practitioners keep what they had.
    Progress goes to the build log.

    Accepted: ``env_id`` a registered id with a flat Box observation space and
    Discrete actions; ``config`` a :class:`DQNConfig`; ``seed`` an integer >= 0;
    ``eval_every`` an integer >= 0; ``eval_episodes`` a positive integer;
    ``keep_best`` True or False (True needs ``eval_every > 0``); ``threads``
    ``None`` or a positive integer; ``description`` ``None`` or a string.
    """
    if not isinstance(config, DQNConfig):
        raise TypeError(f"config must be a DQNConfig, got {check.describe(config)}")
    seed = check.as_int("seed", seed, 0, 2**31 - 1)
    eval_every = check.as_int("eval_every", eval_every, 0)
    eval_episodes = check.as_int("eval_episodes", eval_episodes, 1)
    keep_best = check.as_bool("keep_best", keep_best)
    if keep_best and not eval_every:
        raise ValueError("keep_best=True needs evaluations to choose from: set eval_every > 0")
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a string or None, got {check.describe(description)}")
    env = _checked_env_id(env_id)
    with torch_threads(threads), flush_denormals():
        return _train_dqn(env, env_id, config, seed, eval_every, eval_episodes, keep_best,
                          description or f"DQN on {env_id}, seed {seed}")


def _train_dqn(env, env_id, c: DQNConfig, seed, eval_every, eval_episodes, keep_best, description) -> DQNResult:
    start_time = time.perf_counter()
    rng = np.random.default_rng(seed)
    obs_dim, n_actions = env.observation_space.shape[0], int(env.action_space.n)
    with torch.random.fork_rng(devices=[]):  # the same initial weights for the same seed
        torch.manual_seed(seed)
        q_net = QNetwork(obs_dim, n_actions, c.hidden, c.dueling)
    target_net = QNetwork(obs_dim, n_actions, c.hidden, c.dueling) if c.target_update else q_net
    target_net.load_state_dict(q_net.state_dict())
    # the fused implementation does the same arithmetic in one call per step instead of several per tensor
    optimizer = torch.optim.Adam(q_net.parameters(), lr=c.learning_rate, fused=True)
    buffer_seed = int(rng.integers(2**31))
    if c.prioritized:
        buffer = PrioritizedReplayBuffer(c.buffer_size, (obs_dim,), alpha=c.alpha, seed=buffer_seed)
    else:
        buffer = ReplayBuffer(c.buffer_size, (obs_dim,), seed=buffer_seed)
    epsilons = linear_schedule(c.epsilon_start, c.epsilon_end, c.total_steps, c.epsilon_fraction)
    n_updates = _n_updates(c)
    betas = linear_schedule(c.beta_start, 1.0, max(n_updates, 1), 1.0)
    rates = linear_schedule(c.learning_rate, c.learning_rate if c.learning_rate_end is None else c.learning_rate_end,
                            max(n_updates, 1), 1.0)

    returns, end_steps, losses, q_means, eval_steps, eval_returns = [], [], [], [], [], []
    best_score, best_weights, best_step = -np.inf, None, 0
    obs, _ = env.reset(seed=seed)
    episode_return, updates = 0.0, 0
    for step in progress(range(c.total_steps), description):
        if rng.random() < epsilons[step]:
            action = int(rng.integers(n_actions))
        else:
            action = q_net._act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer._add(obs, action, reward, next_obs, terminated)
        episode_return += reward
        obs = next_obs
        if terminated or truncated:
            returns.append(episode_return)
            end_steps.append(step + 1)
            episode_return = 0.0
            obs, _ = env.reset()

        if step + 1 > c.learning_starts and (step + 1) % c.train_every == 0:
            for _ in range(c.gradient_steps):
                optimizer.param_groups[0]["lr"] = rates[min(updates, len(rates) - 1)]
                loss, q_mean = _dqn_update(q_net, target_net, optimizer, buffer, c, betas[min(updates, len(betas) - 1)])
                losses.append(loss)
                q_means.append(q_mean)
                updates += 1
                if c.target_update and updates % c.target_update == 0:
                    target_net.load_state_dict(q_net.state_dict())
        if eval_every and (step + 1) % eval_every == 0:
            eval_steps.append(step + 1)
            eval_returns.append(_evaluate(q_net, env_id, eval_episodes, seed=10_000 + 1_000 * seed + len(eval_steps),
                                          epsilon=0.0))
            if keep_best and eval_returns[-1].mean() >= best_score:
                best_score, best_step = eval_returns[-1].mean(), step + 1
                best_weights = {k: v.clone() for k, v in q_net.state_dict().items()}
    env.close()
    if keep_best:
        q_net.load_state_dict(best_weights)
    return DQNResult(
        q_net, c, seed, np.array(returns), np.array(end_steps, dtype=int), np.array(losses), np.array(q_means),
        np.array(eval_steps, dtype=int), np.array(eval_returns).reshape(len(eval_steps), eval_episodes),
        time.perf_counter() - start_time, best_step if keep_best else c.total_steps,
    )


def _n_updates(c: DQNConfig) -> int:
    phases = max(0, c.total_steps // c.train_every - c.learning_starts // c.train_every)
    return phases * c.gradient_steps


def _targets(batch: Batch, q_net: QNetwork, target_net: QNetwork, gamma: float,
             double: bool) -> torch.Tensor:
    """``r + gamma * Q_target(s', a*)`` per transition (just ``r`` after an end).

    DQN takes ``a*``, the best action by the target network (the max); Double
    DQN lets the online network choose ``a*`` and the target network value it.
    """
    with torch.no_grad():
        next_q = target_net(batch.next_obs)
        if double:
            best = q_net(batch.next_obs).argmax(dim=1, keepdim=True)
            next_value = next_q.gather(1, best).squeeze(1)
        else:
            next_value = next_q.max(dim=1).values
        return batch.rewards + gamma * (1.0 - batch.terminated) * next_value


def _dqn_update(q_net, target_net, optimizer, buffer, c: DQNConfig,
                beta: float) -> tuple[float, float]:
    """One gradient step on a batch from the buffer; returns the loss and mean Q."""
    if c.prioritized:
        batch = buffer.sample(c.batch_size, beta)
    else:
        batch = buffer.sample(c.batch_size)
    target = _targets(batch, q_net, target_net, c.gamma, c.double)
    q = q_net(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
    td_error = target - q
    huber = nn.functional.smooth_l1_loss(q, target, reduction="none")
    loss = (batch.weights * huber).mean()  # the weights are all 1 without priorities
    optimizer.zero_grad()
    loss.backward()
    if c.max_grad_norm is not None:
        nn.utils.clip_grad_norm_(q_net.parameters(), c.max_grad_norm)
    optimizer.step()
    if c.prioritized:
        buffer._update_priorities(batch.indices, td_error.detach().numpy())
    return loss.item(), q.detach().mean().item()


def evaluate_q_network(q_network: QNetwork, env_id: str, n_episodes: int = 100, seed: int = 0,
                       epsilon: float = 0.0) -> np.ndarray:
    """Play ``n_episodes`` episodes with the (epsilon-)greedy policy of ``q_network``; return each return.

    The episodes run in lockstep, one batched forward pass per step; episode
    ``i`` starts from ``env.reset(seed=seed + i)``, so the same seed gives the
    same episodes.

    Accepted: ``q_network`` a :class:`QNetwork` that fits the environment;
    ``env_id`` as :func:`train_dqn`; ``n_episodes`` a positive integer; ``seed``
    an integer >= 0; ``epsilon`` in ``[0, 1]``.
    """
    if not isinstance(q_network, QNetwork):
        raise TypeError(f"q_network must be a QNetwork, got {check.describe(q_network)}")
    env = _checked_env_id(env_id)
    if (env.observation_space.shape[0], env.action_space.n) != (q_network.obs_dim, q_network.n_actions):
        raise ValueError(f"q_network takes {q_network.obs_dim} numbers and scores {q_network.n_actions} actions; "
                         f"{env_id} has observations of shape {env.observation_space.shape} and "
                         f"{env.action_space.n} actions")
    env.close()
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    seed = check.as_int("seed", seed, 0)
    epsilon = check.as_real("epsilon", epsilon, 0.0, 1.0)
    return _evaluate(q_network, env_id, n_episodes, seed, epsilon)


def _evaluate(q_network, env_id, n_episodes, seed, epsilon) -> np.ndarray:
    rng = np.random.default_rng(seed)

    def act(obs):
        with torch.no_grad():
            actions = q_network(torch.from_numpy(obs)).argmax(dim=1).numpy()
        explore = rng.random(len(obs)) < epsilon
        return np.where(explore, rng.integers(q_network.n_actions, size=len(obs)), actions)

    return play_episodes(act, env_id, n_episodes, seed)


def config_dict(config: DQNConfig) -> dict:
    """The config as a plain dict (for printing, and for the key of a cached artifact)."""
    if not isinstance(config, DQNConfig):
        raise TypeError(f"config must be a DQNConfig, got {check.describe(config)}")
    return asdict(config)


__all__ = [
    "Batch", "ReplayBuffer", "SumTree", "PrioritizedReplayBuffer", "QNetwork", "DQNConfig", "DQNResult",
    "train_dqn", "evaluate_q_network", "torch_threads", "config_dict",
]
