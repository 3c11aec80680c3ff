"""Stochastic policies with parameters: the thing a policy-gradient method adjusts.

Introduced in Lecture 2 (Policy gradients from scratch); Lectures 4 to 6
(actor-critic, TRPO, PPO) reuse the same two families.

* A **tabular softmax policy** (NumPy): one score ``theta[s, a]`` per state
  and action, ``pi(a | s) = softmax(theta[s])[a]``. Small enough that its
  exact policy gradient can be computed (:mod:`rl2llm.policy_gradient`).
* A **categorical MLP policy** (PyTorch): a small network maps an
  observation to one score (logit) per action. A language model is this
  policy with a much larger network and a vocabulary of actions.
* A **value network** (:class:`ValueMLP`, Lecture 4): the critic of an
  actor-critic method, a small network from an observation to one number,
  the value of the state.

Both act through the same method, ``act(observations) -> (actions,
log_probs)``, on a batch of observations, which is all that
:func:`rl2llm.rollouts.collect_episodes` needs from a policy.

Every public function and constructor checks its arguments and raises a
``TypeError`` or ``ValueError`` that names the bad one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import _validate as check


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Probabilities ``exp(logits) / sum(exp(logits))`` along ``axis``, computed without overflow.

    ``logits``: a non-empty array of finite numbers (lists too); ``axis`` an
    integer axis of it.
    """
    logits = check.as_finite_array("logits", logits)
    axis = _checked_axis(axis, logits.ndim)
    if logits.shape[axis] == 0:
        raise ValueError(f"logits must have at least one entry along axis {axis}, got shape {logits.shape}")
    z = logits - logits.max(axis=axis, keepdims=True)  # the largest becomes 0: exp cannot overflow
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_grad(logits, actions) -> np.ndarray:
    """The score ``d log softmax(logits)[a] / d logits = onehot(a) - softmax(logits)``, one row per sample.

    The quantity every policy-gradient estimate multiplies by how well things
    went (Lecture 1 derives it): raise the score of the action taken, lower
    every score in proportion to its probability.

    ``logits``: ``(A,)`` (one distribution for every sample) or ``(n, A)``
    (one per sample); ``actions``: ``(n,)`` whole numbers in ``0 .. A-1``.
    Returns ``(n, A)``.
    """
    logits = check.as_finite_array("logits", logits)
    if logits.ndim not in (1, 2) or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape (A,) or (n, A) with A >= 1, got {logits.shape}")
    A = logits.shape[-1]
    actions = check.as_actions("actions", actions, A)
    if actions.ndim != 1:
        raise ValueError(f"actions must have shape (n,), got {actions.shape}")
    if logits.ndim == 2 and logits.shape[0] != len(actions):
        raise ValueError(f"logits has {logits.shape[0]} rows but actions has {len(actions)} entries; "
                         "give one row of logits per action, or a single (A,) row for all of them")
    probs = softmax(logits)
    probs = np.broadcast_to(probs, (len(actions), A))
    return np.eye(A)[actions] - probs


def _checked_axis(axis, ndim: int) -> int:
    axis = check.as_int("axis", axis)
    if ndim == 0 or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be an axis of logits (which has {ndim} dimensions), got {axis}")
    return axis % ndim


# --------------------------------------------------------------------------- the tabular softmax policy


class TabularSoftmaxPolicy:
    """``pi(a | s) = softmax(theta[s])[a]`` for integer states: one score per state and action.

    ``theta``: finite ``(S, A)`` scores (copied); ``seed``: an integer >= 0
    for the policy's own random generator (the actions it samples).
    """

    def __init__(self, theta, seed: int = 0):
        self.theta = np.array(_checked_theta(theta), dtype=float)
        self.rng = np.random.default_rng(check.as_int("seed", seed, 0))

    @property
    def n_states(self) -> int:
        return self.theta.shape[0]

    @property
    def n_actions(self) -> int:
        return self.theta.shape[1]

    def probs(self) -> np.ndarray:
        """``(S, A)``: the probability of each action in each state."""
        return softmax(self.theta, axis=1)

    def act(self, observations) -> tuple[np.ndarray, np.ndarray]:
        """Sample one action per state in ``observations`` (integers ``0 .. S-1``, any shape);
        return the actions and their log-probabilities, both of that shape."""
        states = checked_states("observations", observations, self.n_states)
        probs = self.probs()[states]
        u = self.rng.random(states.shape + (1,))
        actions = np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), self.n_actions - 1)
        chosen = np.take_along_axis(probs, actions[..., None], axis=-1)[..., 0]
        return actions, np.log(chosen)


def checked_states(name: str, value, n_states: int) -> np.ndarray:
    """Whole-number states in ``0 .. n_states - 1`` (any shape), as ints; a clear error otherwise."""
    array = check.numeric_array(name, value)
    if array.dtype.kind == "f":
        check.check_finite(name, array)
        if (array != np.round(array)).any():
            raise ValueError(f"{name} must hold whole state numbers, got {check.describe(value)}")
    outside = (array < 0) | (array >= n_states)
    if outside.any():
        bad = array[outside].ravel()[0]
        raise ValueError(f"{name} holds {bad:g}, which is not a state: states are 0 .. {n_states - 1}")
    return array.astype(int)


def _checked_theta(theta) -> np.ndarray:
    theta = check.as_finite_array("theta", theta)
    if theta.ndim != 2 or 0 in theta.shape:
        raise ValueError(f"theta must have shape (S, A) with S, A >= 1: one score per state and action, "
                         f"got {theta.shape}")
    return theta


# --------------------------------------------------------------------------- the categorical MLP policy


class CategoricalMLP(nn.Module):
    """A small network from observations to action logits; actions are drawn from their softmax.

    ``obs_dim``: the length of an observation vector; ``n_actions``: how many
    discrete actions; ``hidden``: the widths of the hidden layers (tanh
    between them), ``()`` for a linear policy. The last layer starts at a
    hundredth of PyTorch's default scale, so every action starts almost
    equally likely. Parameters are initialised from PyTorch's global
    generator: call :func:`rl2llm.seeding.seed_everything` first.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (64,)):
        super().__init__()
        obs_dim = check.as_int("obs_dim", obs_dim, 1)
        n_actions = check.as_int("n_actions", n_actions, 1)
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden must be a tuple of layer widths such as (64,), got {check.describe(hidden)}")
        hidden = tuple(check.as_int(f"hidden[{i}]", width, 1) for i, width in enumerate(hidden))
        widths = (obs_dim, *hidden, n_actions)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(widths) - 2:
                layers.append(nn.Tanh())
        with torch.no_grad():
            layers[-1].weight.mul_(0.01)
            layers[-1].bias.zero_()
        self.net = nn.Sequential(*layers)
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, hidden

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(n, n_actions)``, for a float tensor of observations ``(n, obs_dim)``."""
        return self.net(observations)

    def _as_tensor(self, observations) -> torch.Tensor:
        """Observations as a float32 tensor of shape (n, obs_dim), checked (cheaply: this runs every step)."""
        if isinstance(observations, torch.Tensor):
            observations = observations.detach().cpu().numpy()
        array = np.asarray(observations)
        if array.dtype.kind not in "iuf":
            raise TypeError(f"observations must be an array of numbers, got {check.describe(observations)}")
        if array.ndim != 2 or array.shape[1] != self.obs_dim:
            raise ValueError(f"observations must have shape (n, obs_dim) = (n, {self.obs_dim}), got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError("observations must be finite")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def log_prob(self, observations, actions) -> torch.Tensor:
        """``log pi(a | s)`` for each pair, shape ``(n,)``, differentiable in the parameters.

        ``observations``: ``(n, obs_dim)`` (array or tensor); ``actions``:
        ``(n,)`` whole numbers in ``0 .. n_actions - 1``.
        """
        obs = self._as_tensor(observations)
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        actions = check.as_actions("actions", actions, self.n_actions)
        if actions.shape != (obs.shape[0],):
            raise ValueError(f"actions must have shape (n,) = ({obs.shape[0]},), one per observation, "
                             f"got {actions.shape}")
        log_probs = torch.log_softmax(self.forward(obs), dim=-1)
        return log_probs.gather(1, torch.as_tensor(actions)[:, None])[:, 0]

    def entropy(self, observations) -> torch.Tensor:
        """The entropy of the action distribution in each state, shape ``(n,)``, in nats."""
        log_probs = torch.log_softmax(self.forward(self._as_tensor(observations)), dim=-1)
        return -(log_probs.exp() * log_probs).sum(dim=-1)

    @torch.no_grad()
    def act(self, observations) -> tuple[np.ndarray, np.ndarray]:
        """Sample one action per row of ``observations`` (``(n, obs_dim)``); return the actions and
        their log-probabilities as NumPy arrays of shape ``(n,)`` (no gradient is recorded).

        Acting needs no gradient, and for a network this small PyTorch's fixed
        cost per call is several times the arithmetic, so this runs the same
        layers, with the same parameters (shared memory, not a copy), in NumPy.
        The random numbers come from PyTorch's generator.
        """
        x = self._as_tensor(observations).numpy()
        linears = [layer for layer in self.net if isinstance(layer, nn.Linear)]
        for i, layer in enumerate(linears):
            x = x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
            if i < len(linears) - 1:
                x = np.tanh(x)
        z = x - x.max(axis=1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        u = torch.rand(len(x), 1).numpy()  # inverse-CDF sampling: one uniform number per row
        actions = np.minimum((np.exp(log_probs).cumsum(axis=1) < u).sum(axis=1), self.n_actions - 1)
        return actions, log_probs[np.arange(len(x)), actions].astype(float)


# --------------------------------------------------------------------------- the value network


class ValueMLP(nn.Module):
    """A small network from observations to one number each, ``V(s)``: the critic of Lecture 4.

    ``obs_dim``: the length of an observation vector; ``hidden``: the widths
    of the hidden layers (tanh between them), ``()`` for a linear critic.
    Parameters are initialised from PyTorch's global generator (PyTorch's
    default initialisation; :mod:`rl2llm.actor_critic` re-initialises
    its networks orthogonally).
    """

    def __init__(self, obs_dim: int, hidden: tuple[int, ...] = (64,)):
        super().__init__()
        obs_dim = check.as_int("obs_dim", obs_dim, 1)
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden must be a tuple of layer widths such as (64,), got {check.describe(hidden)}")
        hidden = tuple(check.as_int(f"hidden[{i}]", width, 1) for i, width in enumerate(hidden))
        widths = (obs_dim, *hidden, 1)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(widths) - 2:
                layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.obs_dim, self.hidden = obs_dim, hidden

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Values, shape ``(n,)``, for a float tensor of observations ``(n, obs_dim)``."""
        return self.net(observations).squeeze(-1)

    _as_tensor = CategoricalMLP._as_tensor

    @torch.no_grad()
    def values(self, observations) -> np.ndarray:
        """``V(s)`` for each row of ``observations`` (``(n, obs_dim)``, array or tensor), as a NumPy
        array of shape ``(n,)`` (float64; no gradient is recorded)."""
        return self.forward(self._as_tensor(observations)).numpy().astype(np.float64)
