"""Off-policy actor-critic for continuous actions: DDPG, TD3 and SAC, one loop.

Introduced in Lecture 7 (Off-policy learning); Lecture 8 (model-based RL)
compares its agent with :func:`train_sac` at equal environment steps.

DQN (Lecture 3, :mod:`rl2llm.dqn`) needs ``max_a Q(s, a)``, which is a lookup
for two actions and an optimisation problem for a continuous one. The methods
here learn a second network, the *actor*, to do that maximisation, and train
both from a replay buffer (:class:`rl2llm.dqn.ReplayBuffer`, which stores
float actions of any shape), so every transition is reused many times.

* :func:`soft_update` — ``target <- tau * source + (1 - tau) * target``, the
  slowly following target networks of DDPG, TD3 and SAC.
* :func:`squashed_gaussian_log_prob` — the log-density of ``tanh(u)`` for a
  Gaussian ``u``: the Gaussian's, minus the log-derivative of the squashing
  (the *tanh correction*), computed without overflow.
* :func:`temperature_loss` — SAC's loss for its entropy temperature, whose
  gradient step raises the temperature when the policy's entropy is below its
  target and lowers it when above.
* :class:`SACConfig`, :class:`TD3Config` (defaults: the RL Zoo's Pendulum-v1
  settings), :data:`DDPG` (TD3 with its three fixes switched off), each fix
  with its own switch; :func:`train_sac`, :func:`train_td3`,
  :func:`train_ddpg`, and :func:`train_seeds`, which trains several seeds side
  by side and returns the same runs, faster.
* :func:`evaluate_actor` — the deterministic policy's returns, through
  :func:`rl2llm.rollouts.play_episodes`; :func:`value_estimates` — what the
  critics predict against the discounted return actually obtained from the
  same states (the overestimation Lecture 7 measures).

The networks are :class:`MLPStack`\\ s: ``m`` multilayer perceptrons of the same
shape whose weights are stacked along a first axis and evaluated in one batched
matrix multiply. The twin critics of TD3 and SAC are one stack of two, and
:func:`train_seeds` trains several agents (seeds) as one stack of each network:
for networks this small a CPU spends most of a gradient step on the fixed cost
of each PyTorch call, which the agents then share. Every agent has its own
environment, buffer and random numbers, so a seed's run is the same alone or in
a group, to rounding (tested; PyTorch may compute the same arithmetic with other
vector instructions for a tensor of another size, and a long run can amplify such
last-bit differences, as it would those between two machines).

Lecture 6's :class:`rl2llm.ppo.GaussianMLP` has one learned standard deviation
for all states and feeds clipped samples to the environment; SAC's policy needs a
standard deviation per state and squashes its samples with ``tanh``, so its actor
(:class:`SquashedGaussianActor`) is its own class, whose log-density uses the same Gaussian formula.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from . import _validate as check
from .dqn import ReplayBuffer, flush_denormals, torch_threads
from .ppo import _checked_ppo_env, _gaussian_log_prob
from .progress import progress
from .rollouts import collect_episodes, play_episodes, reward_to_go, steps_since_start

__all__ = [
    "soft_update", "squashed_gaussian_log_prob", "temperature_loss", "MLPStack", "Critics", "DeterministicActor",
    "SquashedGaussianActor", "SACConfig", "TD3Config", "DDPG", "OffPolicyResult", "Checkpoint", "train_sac",
    "train_td3", "train_ddpg", "train_seeds", "evaluate_actor", "value_estimates", "ValueEstimates", "config_dict",
    "PER_RUN",
]

_LOG2 = math.log(2.0)

# --------------------------------------------------------------------------- the three small formulas


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Move every parameter of ``target`` a fraction ``tau`` of the way to ``source``'s, in place:
    ``target <- tau * source + (1 - tau) * target`` (Polyak averaging).

    With ``tau = 1`` the target becomes a copy (DQN's periodic copy); with a small
    ``tau`` it follows the source slowly, averaging its last ``~1 / tau`` versions.

    Accepted: ``target`` and ``source`` PyTorch modules whose parameters have the
    same shapes, in the same order; ``tau`` in ``[0, 1]``.
    """
    for name, module in (("target", target), ("source", source)):
        if not isinstance(module, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {check.describe(module)}")
    tau = check.as_real("tau", tau, 0.0, 1.0)
    targets, sources = list(target.parameters()), list(source.parameters())
    if [p.shape for p in targets] != [p.shape for p in sources]:
        raise ValueError(f"target and source must have parameters of the same shapes; target has "
                         f"{[tuple(p.shape) for p in targets]}, source {[tuple(p.shape) for p in sources]}")
    _soft_update(targets, sources, tau)


def _soft_update(targets: list[torch.Tensor], sources: list[torch.Tensor],
                 tau: float) -> None:
    with torch.no_grad():   # target + tau * (source - target), all tensors in one call
        torch._foreach_lerp_(targets, sources, tau)


def squashed_gaussian_log_prob(mean, log_std, pre_tanh) -> torch.Tensor:
    """``log p(a)`` for ``a = tanh(u)``, ``u ~ Normal(mean, exp(log_std))`` independently per dimension,
    summed over the last axis (the action's dimensions).

    Squashing changes the density by the derivative of ``tanh``:
    ``log p(a) = log N(u) - sum_i log(1 - tanh(u_i)^2)``. The correction is computed as
    ``2 * (log 2 - u - softplus(-2 u))``, which equals ``log(1 - tanh(u)^2)`` but stays
    finite where ``tanh(u)`` rounds to 1 (``|u|`` above about 9 in float32).

    Accepted: ``mean``, ``log_std`` and ``pre_tanh`` (the sample ``u`` before squashing)
    tensors or arrays of finite numbers with the same shape ``(..., act_dim)``; arrays
    are read as float64. Returns a tensor of shape ``(...)``, differentiable in any
    argument that requires a gradient.
    """
    mean, log_std, pre_tanh = (_as_tensor(name, value) for name, value in
                               (("mean", mean), ("log_std", log_std), ("pre_tanh", pre_tanh)))
    if mean.ndim == 0:
        raise ValueError("mean must have at least one axis (the action's dimensions)")
    for name, value in (("log_std", log_std), ("pre_tanh", pre_tanh)):
        if value.shape != mean.shape:
            raise ValueError(f"{name} must have the shape of mean, {tuple(mean.shape)}, got {tuple(value.shape)}")
    return _squashed_log_prob(mean, log_std, pre_tanh)


def _squashed_log_prob(mean, log_std, pre_tanh, correction=True) -> torch.Tensor:
    """``correction``: True, False, or a ``(k, 1)`` tensor of ones and zeros
    (per agent, for agents side by side)."""
    # Lecture 6's Gaussian log-density of the sample before tanh, summed over dimensions
    log_prob = _gaussian_log_prob(mean, log_std, pre_tanh)
    if correction is False:
        return log_prob
    # log(1 - tanh(u)^2), in a form that stays finite where tanh(u) rounds to +-1
    log_derivative = 2.0 * (_LOG2 - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))
    log_derivative = log_derivative.sum(dim=-1)
    if correction is True:
        return log_prob - log_derivative
    return log_prob - correction * log_derivative


def temperature_loss(log_alpha, log_probs, target_entropy: float) -> torch.Tensor:
    """SAC's loss for its temperature: ``-mean(log_alpha * (log_probs + target_entropy))``, the bracket
    held constant (no gradient flows into the policy through it).

    ``-mean(log_probs)`` estimates the policy's entropy, so the gradient with respect to
    ``log_alpha`` is ``entropy - target_entropy``: a descent step lowers the temperature
    when the entropy is above its target and raises it when below. It is optimised in
    ``log_alpha`` so the temperature stays positive.

    Accepted: ``log_alpha`` a float tensor of shape ``()`` (or ``(k,)`` for ``k`` agents,
    then ``log_probs`` is ``(k, n)``); ``log_probs`` finite numbers, at least one;
    ``target_entropy`` a finite number. Returns a scalar tensor (summed over agents).
    """
    if not isinstance(log_alpha, torch.Tensor) or not log_alpha.is_floating_point():
        raise TypeError(f"log_alpha must be a float tensor (the temperature's logarithm), "
                        f"got {check.describe(log_alpha)}")
    if log_alpha.ndim > 1:
        raise ValueError(f"log_alpha must have shape () or (k,), got {tuple(log_alpha.shape)}")
    log_probs = _as_tensor("log_probs", log_probs)
    if log_probs.ndim != log_alpha.ndim + 1 or log_probs.shape[:-1] != log_alpha.shape or log_probs.shape[-1] == 0:
        raise ValueError(f"log_probs must have shape {(*log_alpha.shape, 'n')} with n >= 1 for a log_alpha of "
                         f"shape {tuple(log_alpha.shape)}, got {tuple(log_probs.shape)}")
    target_entropy = check.as_real("target_entropy", target_entropy)
    return _temperature_loss(log_alpha, log_probs.to(log_alpha.dtype), target_entropy)


def _temperature_loss(log_alpha, log_probs, target_entropy: float) -> torch.Tensor:
    bracket = (log_probs + target_entropy).detach()   # no gradient into the policy
    return -(log_alpha[..., None] * bracket).mean(dim=-1).sum()


def _as_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got dtype {value.dtype}")
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} must be finite")
        return value
    return torch.as_tensor(check.as_finite_array(name, value), dtype=torch.float64)


# --------------------------------------------------------------------------- the networks


class MLPStack(nn.Module):
    """``m`` multilayer perceptrons of the same shape, evaluated together in one batched multiply.

    Layer ``l`` holds weights of shape ``(m, n_in, n_out)`` and biases ``(m, 1, n_out)``;
    an input of shape ``(m, n, sizes[0])`` gives ``(m, n, sizes[-1])``: row block ``i``
    goes through network ``i``. ReLU between layers, nothing after the last.
    Network ``i`` is initialised as PyTorch initialises ``nn.Linear`` (uniform in
    ``+-1/sqrt(n_in)``), from a generator seeded with ``seeds[i]``, so it is the same
    network whatever else is stacked with it.

    Accepted: ``sizes`` a tuple of at least two positive integers (input, hidden...,
    output); ``seeds`` a non-empty sequence of integers >= 0, one per network.
    """

    def __init__(self, sizes: tuple[int, ...], seeds: Sequence[int]):
        super().__init__()
        if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
            raise TypeError(f"sizes must be a tuple of at least two layer widths such as (3, 64, 1), "
                            f"got {check.describe(sizes)}")
        self.sizes = tuple(check.as_int("sizes", n, 1) for n in sizes)
        seeds = _checked_seeds(seeds)
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            bound = 1.0 / math.sqrt(n_in)
            w = torch.stack([(2 * torch.rand(n_out, n_in, generator=g) - 1) * bound for g in generators])
            b = torch.stack([(2 * torch.rand(n_out, generator=g) - 1) * bound for g in generators])
            self.weights.append(nn.Parameter(w.transpose(1, 2).contiguous()))
            self.biases.append(nn.Parameter(b[:, None, :]))

    @property
    def m(self) -> int:
        """How many networks are stacked."""
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _stack_forward(list(self.weights), list(self.biases), x)

    def select(self, members: Sequence[int]) -> MLPStack:
        """A new stack holding copies of networks ``members`` (indices in ``0 .. m - 1``), in that order."""
        members = [check.as_int("members", i, 0, self.m - 1) for i in members]
        new = copy.deepcopy(self)
        with torch.no_grad():
            for p_new, p in zip(new.parameters(), self.parameters()):
                p_new.data = p.data[members].clone()
        return new

    def _numpy(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """NumPy views of the live parameters, layer by layer (for acting without PyTorch's overhead)."""
        return [(w.detach().numpy(), b.detach().numpy()) for w, b in zip(self.weights, self.biases)]


def _stack_forward(weights, biases, x: torch.Tensor) -> torch.Tensor:
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = torch.baddbmm(b, x, w)
        if i < last:
            x = torch.relu(x)
    return x


def _numpy_forward(layers, x: np.ndarray) -> np.ndarray:
    """:func:`_stack_forward` in NumPy: ``x`` of shape ``(m, n, n_in)``."""
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        x = np.matmul(x, w) + b
        if i < last:
            x = np.maximum(x, 0.0)
    return x


def _checked_seeds(seeds) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or len(seeds) == 0:
        raise TypeError(f"seeds must be a non-empty sequence of integers, got {check.describe(seeds)}")
    return [check.as_int("seeds", s, 0, 2**63 - 1) for s in seeds]


def _member_seeds(seeds: Sequence[int], role: int, count: int) -> list[int]:
    """Independent initialisation seeds for ``count`` networks of each agent, for one role (actor, critic)."""
    return [int(np.random.SeedSequence([seed, role, i]).generate_state(1, np.uint64)[0] >> 1)
            for seed in seeds for i in range(count)]


class Critics(nn.Module):
    """``n_critics`` Q-networks ``Q_j(s, a)`` for each of ``n_agents`` agents, in one :class:`MLPStack`.

    ``forward(obs, actions)`` takes ``(n_agents, n, obs_dim)`` and ``(n_agents, n, act_dim)``
    (actions in ``[-1, 1]``) and returns ``(n_agents, n_critics, n)``. :meth:`q_values`
    is the checked form for one agent and NumPy arrays.

    Accepted: ``obs_dim``, ``act_dim`` positive integers; ``hidden`` a non-empty tuple of
    positive integers; ``n_critics`` a positive integer; ``seeds`` one integer >= 0 per agent.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256), n_critics: int = 2,
                 seeds: Sequence[int] = (0,)):
        super().__init__()
        self.obs_dim, self.act_dim = check.as_int("obs_dim", obs_dim, 1), check.as_int("act_dim", act_dim, 1)
        self.hidden, self.n_critics = _hidden(hidden), check.as_int("n_critics", n_critics, 1)
        seeds = _checked_seeds(seeds)
        self.n_agents = len(seeds)
        self.net = MLPStack((self.obs_dim + self.act_dim, *self.hidden, 1),
                            _member_seeds(seeds, 1, self.n_critics))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, params=None) -> torch.Tensor:
        """``Q`` of every critic, ``(n_agents, n_critics, n)``. ``params``: the (weights, biases) to
        use instead of the module's own (detached copies, so that a loss reaches only the actions)."""
        x = torch.cat([obs, actions], dim=-1)
        k, n, d = x.shape
        x = x[:, None].expand(k, self.n_critics, n, d).reshape(k * self.n_critics, n, d)
        weights, biases = params if params is not None else (list(self.net.weights), list(self.net.biases))
        return _stack_forward(weights, biases, x).view(k, self.n_critics, n)

    def _detached(self):
        return [w.detach() for w in self.net.weights], [b.detach() for b in self.net.biases]

    @torch.no_grad()
    def q_values(self, obs, actions) -> np.ndarray:
        """Every critic's ``Q(s, a)`` for one agent: ``obs`` ``(n, obs_dim)``, ``actions`` ``(n, act_dim)``
        in ``[-1, 1]``; returns ``(n_critics, n)`` (float64)."""
        if self.n_agents != 1:
            raise ValueError(f"q_values is for one agent; these critics hold {self.n_agents} (use select)")
        obs = check.as_finite_array("obs", obs)
        actions = check.as_finite_array("actions", actions)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape (n, {self.obs_dim}), got {obs.shape}")
        if actions.shape != (len(obs), self.act_dim):
            raise ValueError(f"actions must have shape ({len(obs)}, {self.act_dim}), got {actions.shape}")
        q = self(torch.as_tensor(obs, dtype=torch.float32)[None], torch.as_tensor(actions, dtype=torch.float32)[None])
        return q[0].numpy().astype(np.float64)

    def select(self, agent: int, n_critics: int | None = None) -> Critics:
        """The critics of agent ``agent`` alone (copies): its first ``n_critics`` (default: all)."""
        agent = check.as_int("agent", agent, 0, self.n_agents - 1)
        n_critics = self.n_critics if n_critics is None else check.as_int("n_critics", n_critics, 1, self.n_critics)
        new = copy.copy(self)
        nn.Module.__init__(new)
        new.obs_dim, new.act_dim, new.hidden, new.n_critics, new.n_agents = \
            self.obs_dim, self.act_dim, self.hidden, n_critics, 1
        new.net = self.net.select(range(agent * self.n_critics, agent * self.n_critics + n_critics))
        return new


class _Actor(nn.Module):
    """What the two actors share: the network, the action bounds, acting in NumPy, selecting an agent."""

    out_per_dim = 1

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256), low=(-1.0,), high=(1.0,),
                 seeds: Sequence[int] = (0,)):
        super().__init__()
        self.obs_dim, self.act_dim = check.as_int("obs_dim", obs_dim, 1), check.as_int("act_dim", act_dim, 1)
        self.hidden = _hidden(hidden)
        self.low = check.as_finite_array("low", low, (self.act_dim,), "(act_dim,)").astype(np.float32)
        self.high = check.as_finite_array("high", high, (self.act_dim,), "(act_dim,)").astype(np.float32)
        if np.any(self.high <= self.low):
            raise ValueError(f"high must be above low in every dimension, got low {self.low}, high {self.high}")
        seeds = _checked_seeds(seeds)
        self.n_agents = len(seeds)
        self.net = MLPStack((self.obs_dim, *self.hidden, self.out_per_dim * self.act_dim), _member_seeds(seeds, 0, 1))

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Actions in ``[-1, 1]`` mapped linearly onto the environment's bounds ``[low, high]``."""
        return self.low + (np.asarray(actions, dtype=np.float32) + 1.0) * (0.5 * (self.high - self.low))

    def _mean_numpy(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action in ``[-1, 1]``, ``(n_agents, n, act_dim)``, for ``obs`` ``(n_agents, n, obs_dim)``."""
        raise NotImplementedError

    def act(self, obs) -> np.ndarray:
        """The deterministic action for each row of ``obs`` (``(n, obs_dim)``), in the environment's
        bounds: what an evaluation plays. For one agent."""
        if self.n_agents != 1:
            raise ValueError(f"act is for one agent; this actor holds {self.n_agents} (use select)")
        obs = check.as_finite_array("obs", obs)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape (n, {self.obs_dim}), got {obs.shape}")
        return self.to_env(self._mean_numpy(obs.astype(np.float32)[None])[0])

    def select(self, agent: int):
        """The actor of agent ``agent`` alone (a copy)."""
        agent = check.as_int("agent", agent, 0, self.n_agents - 1)
        new = copy.copy(self)
        nn.Module.__init__(new)
        for name in ("obs_dim", "act_dim", "hidden", "low", "high"):
            setattr(new, name, getattr(self, name))
        new.n_agents = 1
        new.net = self.net.select([agent])
        return new


class DeterministicActor(_Actor):
    """DDPG's and TD3's policy: ``mu(s) = tanh(MLP(s))`` in ``[-1, 1]``, mapped onto the action bounds.

    ``forward(obs)``: ``(n_agents, n, obs_dim)`` -> actions in ``[-1, 1]``, ``(n_agents, n, act_dim)``.

    Accepted: ``obs_dim``, ``act_dim`` positive integers; ``hidden`` a non-empty tuple of
    positive integers; ``low``, ``high`` the action bounds, ``(act_dim,)`` finite numbers
    with ``high > low``; ``seeds`` one integer >= 0 per agent.
    """

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def _mean_numpy(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(_numpy_forward(self.net._numpy(), obs))


LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0   # Stable-Baselines3's bounds on SAC's log standard deviation


class SquashedGaussianActor(_Actor):
    """SAC's policy: ``a = tanh(u)``, ``u ~ Normal(mean(s), std(s))``, both from one network.

    The network outputs ``2 * act_dim`` numbers: the mean and the log standard deviation
    (clamped to ``[LOG_STD_MIN, LOG_STD_MAX]``) of each dimension. ``forward(obs)``:
    ``(n_agents, n, obs_dim)`` -> ``(mean, log_std)``, each ``(n_agents, n, act_dim)``.
    The deterministic action (evaluation) is ``tanh(mean)``.

    Accepted: as :class:`DeterministicActor`.
    """

    out_per_dim = 2

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def _mean_numpy(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(_numpy_forward(self.net._numpy(), obs)[..., :self.act_dim])

    def _sample_numpy(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        out = _numpy_forward(self.net._numpy(), obs)
        mean, log_std = out[..., :self.act_dim], np.clip(out[..., self.act_dim:], LOG_STD_MIN, LOG_STD_MAX)
        return np.tanh(mean + np.exp(log_std) * noise)

    @torch.no_grad()
    def log_prob(self, obs, actions) -> np.ndarray:
        """``log pi(a | s)`` (float64, ``(n,)``) of actions strictly inside ``(-1, 1)`` (``(n, act_dim)``). For one agent."""
        if self.n_agents != 1:
            raise ValueError(f"log_prob is for one agent; this actor holds {self.n_agents} (use select)")
        obs = check.as_finite_array("obs", obs)
        actions = check.as_finite_array("actions", actions)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape (n, {self.obs_dim}), got {obs.shape}")
        if actions.shape != (len(obs), self.act_dim):
            raise ValueError(f"actions must have shape ({len(obs)}, {self.act_dim}), got {actions.shape}")
        if np.any(np.abs(actions) >= 1):
            raise ValueError("actions must lie strictly inside (-1, 1): tanh never reaches the bounds")
        mean, log_std = self(torch.as_tensor(obs, dtype=torch.float32)[None])
        u = torch.atanh(torch.as_tensor(actions, dtype=torch.float64))
        return _squashed_log_prob(mean[0].double(), log_std[0].double(), u).numpy()


def _hidden(hidden) -> tuple[int, ...]:
    if not isinstance(hidden, (tuple, list)) or len(hidden) == 0:
        raise TypeError(f"hidden must be a non-empty tuple of layer widths such as (256, 256), "
                        f"got {check.describe(hidden)}")
    return tuple(check.as_int("hidden", n, 1) for n in hidden)


# --------------------------------------------------------------------------- configuration


def _check_common(c) -> None:
    for name in ("total_steps", "batch_size", "buffer_size", "train_every", "gradient_steps"):
        check.as_int(name, getattr(c, name), 1)
    check.as_int("learning_starts", c.learning_starts, 0)
    if c.batch_size > c.buffer_size:
        raise ValueError(f"batch_size must be at most buffer_size = {c.buffer_size}, got {c.batch_size}")
    check.as_real("learning_rate", c.learning_rate, 0.0, low_open=True)
    check.as_real("tau", c.tau, 0.0, 1.0, low_open=True)
    check.as_real("gamma", c.gamma, 0.0, 1.0, high_open=True)
    object.__setattr__(c, "hidden", _hidden(c.hidden))
    check.as_bool("truncation_as_termination", c.truncation_as_termination)


@dataclass(frozen=True)
class SACConfig:
    """The knobs of :func:`train_sac`. The defaults are the RL Zoo's for Pendulum-v1 (SAC, 20,000 steps:
    learning rate 1e-3, everything else Stable-Baselines3's SAC defaults).

    For the first ``learning_starts`` steps the agent acts uniformly at random; after
    that, every ``train_every`` steps it takes ``gradient_steps`` gradient steps on
    batches of ``batch_size`` from a buffer of the last ``buffer_size`` transitions.
    ``tau``: the soft-update rate of the target critics (every gradient step).
    ``ent_coef``: a fixed temperature ``alpha``, or ``None`` to learn it (starting
    from ``init_ent_coef``) so the policy's entropy tracks ``target_entropy``
    (``None``: minus the number of action dimensions).

    Two switches reproduce Lecture 7's gotchas: ``log_prob_correction=False`` drops
    the tanh correction from the log-probability; ``truncation_as_termination=True``
    treats an episode cut by a time limit as ended (no bootstrapping from its last
    state).
    """

    total_steps: int = 20_000
    learning_rate: float = 1e-3
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 256
    tau: float = 0.005
    gamma: float = 0.99
    train_every: int = 1
    gradient_steps: int = 1
    hidden: tuple[int, ...] = (256, 256)
    ent_coef: float | None = None
    init_ent_coef: float = 1.0
    target_entropy: float | None = None
    log_prob_correction: bool = True
    truncation_as_termination: bool = False

    def __post_init__(self):
        _check_common(self)
        if self.ent_coef is not None:
            check.as_real("ent_coef", self.ent_coef, 0.0)
        check.as_real("init_ent_coef", self.init_ent_coef, 0.0, low_open=True)
        if self.target_entropy is not None:
            check.as_real("target_entropy", self.target_entropy)
        check.as_bool("log_prob_correction", self.log_prob_correction)


@dataclass(frozen=True)
class TD3Config:
    """The knobs of :func:`train_td3`. The defaults are the RL Zoo's for Pendulum-v1 (TD3, 20,000 steps):
    gamma 0.98, buffer 200,000, 10,000 random steps first, Gaussian exploration noise of
    standard deviation 0.1 (in the ``[-1, 1]`` action scale), a 400-300 network, learning
    rate 1e-3, and after every episode (200 steps on Pendulum) as many gradient steps as
    steps collected; Stable-Baselines3's TD3 defaults fill in the rest (batch 256, tau 0.005).

    TD3's three fixes to DDPG, each with its own switch:

    * ``clipped_double_q`` — two critics, and the target takes the smaller of their
      estimates (False: one critic, DDPG's target);
    * ``target_noise`` — target policy smoothing: the target action is the target
      actor's plus Gaussian noise of this standard deviation, clipped to
      ``+-target_noise_clip`` (0: no smoothing);
    * ``policy_delay`` — the actor and the target networks are updated once every
      this many critic updates (1: every time).

    ``truncation_as_termination`` as in :class:`SACConfig`.
    """

    total_steps: int = 20_000
    learning_rate: float = 1e-3
    buffer_size: int = 200_000
    learning_starts: int = 10_000
    batch_size: int = 256
    tau: float = 0.005
    gamma: float = 0.98
    train_every: int = 200
    gradient_steps: int = 200
    hidden: tuple[int, ...] = (400, 300)
    action_noise: float = 0.1
    clipped_double_q: bool = True
    target_noise: float = 0.2
    target_noise_clip: float = 0.5
    policy_delay: int = 2
    truncation_as_termination: bool = False

    def __post_init__(self):
        _check_common(self)
        check.as_real("action_noise", self.action_noise, 0.0)
        check.as_bool("clipped_double_q", self.clipped_double_q)
        check.as_real("target_noise", self.target_noise, 0.0)
        check.as_real("target_noise_clip", self.target_noise_clip, 0.0)
        check.as_int("policy_delay", self.policy_delay, 1)

    @property
    def fixes(self) -> tuple[str, ...]:
        """The names of the TD3 fixes switched on."""
        return tuple(name for name, on in (("clipped double Q", self.clipped_double_q),
                                           ("target policy smoothing", self.target_noise > 0),
                                           ("delayed policy updates", self.policy_delay > 1)) if on)


#: DDPG (Lillicrap et al., 2016) in this loop: TD3's settings with its three fixes switched off.
DDPG = TD3Config(clipped_double_q=False, target_noise=0.0, policy_delay=1)


def config_dict(config) -> dict:
    """The fields of a :class:`SACConfig` or :class:`TD3Config` as a plain dict."""
    if not isinstance(config, (SACConfig, TD3Config)):
        raise TypeError(f"config must be a SACConfig or a TD3Config, got {check.describe(config)}")
    return asdict(config)


# --------------------------------------------------------------------------- results


class Checkpoint(NamedTuple):
    """The networks as they were after ``step`` environment steps (kept at every evaluation)."""

    step: int
    actor: DeterministicActor | SquashedGaussianActor
    critics: Critics


@dataclass
class OffPolicyResult:
    """What :func:`train_sac`, :func:`train_td3` and :func:`train_ddpg` return (one per seed from
    :func:`train_seeds`). Per-gradient-step arrays have one entry per gradient step."""

    actor: DeterministicActor | SquashedGaussianActor
    critics: Critics
    config: SACConfig | TD3Config
    seed: int
    #: The return of every finished training episode, and the environment step at which it ended.
    episode_returns: np.ndarray
    episode_end_steps: np.ndarray
    #: Per gradient step: the critic loss, and the first critic's mean Q(s, a) over the batch.
    critic_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    q_means: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: SAC, per gradient step: the temperature used, and the policy's entropy estimated on the
    #: batch (minus the mean log-probability of its sampled actions).
    alphas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    entropies: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Deterministic evaluations during training: the steps, and the returns (one row per evaluation).
    eval_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    eval_returns: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    #: The networks at every evaluation (``checkpoints=True``).
    checkpoints: list[Checkpoint] = field(default_factory=list)
    #: Seconds of training (evaluations included). For seeds trained side by side, the group's
    #: seconds divided by the number of seeds.
    seconds: float = 0.0
    env_steps: int = 0

    @property
    def steps_per_second(self) -> float:
        """Environment steps per second of training."""
        return self.env_steps / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------- training


def _checked_env_id(env_id):
    """The spaces of ``env_id`` (Lecture 6's check: a flat Box observation), which must have flat, bounded Box actions."""
    spaces = _checked_ppo_env(env_id)
    if spaces.discrete:
        raise ValueError(f"env_id {env_id!r} has Discrete actions; DDPG, TD3 and SAC need flat, bounded Box actions "
                         f"(an actor outputs a vector of real numbers): use DQN (rl2llm.dqn) or PPO")
    return spaces


def _checked_run_args(eval_every, eval_episodes, description):
    eval_every = check.as_int("eval_every", eval_every, 0)
    eval_episodes = check.as_int("eval_episodes", eval_episodes, 1)
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a string or None, got {check.describe(description)}")
    return eval_every, eval_episodes


def train_sac(env_id: str, config: SACConfig = SACConfig(), seed: int = 0, eval_every: int = 0,
              eval_episodes: int = 10, threads: int | None = 1, description: str | None = None,
              checkpoints: bool = False) -> OffPolicyResult:
    """Train a squashed-Gaussian actor and twin critics with SAC (Haarnoja et al., 2018) on ``env_id``.

    The loop is :func:`train_seeds`'s (see there for evaluation, checkpoints and seeding);
    one gradient step is :func:`_sac_update`.

    Accepted: ``env_id`` a registered id with a flat Box observation space and flat,
    bounded Box actions; ``config`` a :class:`SACConfig`; ``seed`` an integer >= 0;
    ``eval_every`` an integer >= 0; ``eval_episodes`` a positive integer; ``threads``
    ``None`` or a positive integer; ``description`` ``None`` or a string;
    ``checkpoints`` True or False.
    """
    if not isinstance(config, SACConfig):
        raise TypeError(f"config must be a SACConfig, got {check.describe(config)}")
    return train_seeds(env_id, config, [check.as_int("seed", seed, 0, 2**31 - 1)], eval_every, eval_episodes,
                       threads, description, checkpoints)[0]


def train_td3(env_id: str, config: TD3Config = TD3Config(), seed: int = 0, eval_every: int = 0,
              eval_episodes: int = 10, threads: int | None = 1, description: str | None = None,
              checkpoints: bool = False) -> OffPolicyResult:
    """Train a deterministic actor and its critics with TD3 (Fujimoto et al., 2018) on ``env_id``;
    with the fixes switched off in ``config`` it is DDPG (see :func:`train_ddpg`).

    Accepted: as :func:`train_sac`, with ``config`` a :class:`TD3Config`.
    """
    if not isinstance(config, TD3Config):
        raise TypeError(f"config must be a TD3Config, got {check.describe(config)}")
    return train_seeds(env_id, config, [check.as_int("seed", seed, 0, 2**31 - 1)], eval_every, eval_episodes,
                       threads, description, checkpoints)[0]


def train_ddpg(env_id: str, config: TD3Config = DDPG, seed: int = 0, eval_every: int = 0,
               eval_episodes: int = 10, threads: int | None = 1, description: str | None = None,
               checkpoints: bool = False) -> OffPolicyResult:
    """Train with DDPG (Lillicrap et al., 2016): :func:`train_td3` with one critic, no target policy
    smoothing and no delay. ``config`` must have those three fixes switched off (as :data:`DDPG`,
    whose other settings are TD3's); otherwise call :func:`train_td3`.
    """
    if not isinstance(config, TD3Config):
        raise TypeError(f"config must be a TD3Config with the fixes switched off, such as DDPG, "
                        f"got {check.describe(config)}")
    if config.fixes:
        raise ValueError(f"config has TD3's fixes switched on ({', '.join(config.fixes)}): DDPG has none; "
                         f"use train_td3, or a config such as replace(DDPG, ...)")
    return train_td3(env_id, config, seed, eval_every, eval_episodes, threads,
                     description or f"DDPG on {env_id}, seed {seed}", checkpoints)


#: The settings in which runs trained side by side (:func:`train_seeds` with a list of configs) may differ.
PER_RUN = ("clipped_double_q", "target_noise", "target_noise_clip", "log_prob_correction")


def train_seeds(env_id: str, config: SACConfig | TD3Config | Sequence[SACConfig | TD3Config],
                seeds: Sequence[int] = (0, 1, 2), eval_every: int = 0, eval_episodes: int = 10,
                threads: int | None = 1, description: str | None = None,
                checkpoints: bool = False) -> list[OffPolicyResult]:
    """Train one agent per seed, side by side, with SAC (a :class:`SACConfig`) or TD3/DDPG (a
    :class:`TD3Config`); return their results in the order of ``seeds``.

    The loop: for ``learning_starts`` steps, act uniformly at random; then act with the
    policy (SAC: a sample of it; TD3: its action plus Gaussian noise), store the transition
    ``(s, a, r, s', terminated)`` (actions in ``[-1, 1]``), and every ``train_every`` steps
    take ``gradient_steps`` gradient steps. The agents step their own environments and
    buffers in turn, and their networks are stacks (:class:`MLPStack`) updated together:
    for small networks almost as fast as one agent. Seed ``s`` seeds its environment's
    first reset, its networks' initialisation, its buffer and its noise, so it gives the
    same run alone (:func:`train_sac`, :func:`train_td3`) or with others, to rounding (see the
    module's docstring); the same group always gives the same runs.

    ``config`` may also be a list with one config per seed, to train variants side by side:
    they must be of one kind and differ only in the settings named in :data:`PER_RUN` (a TD3
    fix switched on or off, SAC's tanh correction), and each (config, seed) pair must be new.

    With ``eval_every > 0`` every agent's deterministic policy plays ``eval_episodes``
    episodes each time another ``eval_every`` steps have passed (starts apart from
    training's); with ``checkpoints`` a copy of its networks is kept at each evaluation.
    Progress goes to the build log.

    Accepted: ``seeds`` a non-empty sequence of integers in ``0 .. 2**31 - 1``; the rest
    as :func:`train_sac`.
    """
    seeds = _checked_seeds(seeds)
    configs = _checked_configs(config, len(seeds))
    if any(s > 2**31 - 1 for s in seeds):
        raise ValueError(f"seeds must lie in 0 .. 2**31 - 1, got {seeds}")
    runs = list(zip(configs, seeds))
    if len({(repr(c), s) for c, s in runs}) != len(runs):
        raise ValueError(f"seeds must be distinct for each config (two agents with one config and one seed would "
                         f"be the same run), got {seeds}")
    eval_every, eval_episodes = _checked_run_args(eval_every, eval_episodes, description)
    checkpoints = check.as_bool("checkpoints", checkpoints)
    spaces = _checked_env_id(env_id)
    if description is None:
        what = " and ".join(sorted({_name(c) for c in configs}))
        if len({repr(c) for c in configs}) > 1:
            what += " variants"
        description = f"{what} on {env_id}, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    with torch_threads(threads), flush_denormals():
        return _train(env_id, spaces, configs, seeds, eval_every, eval_episodes, checkpoints, description)


def _name(c) -> str:
    return "SAC" if isinstance(c, SACConfig) else ("TD3" if c.fixes else "DDPG")


def _checked_configs(config, n: int) -> list:
    if isinstance(config, (SACConfig, TD3Config)):
        return [config] * n
    if isinstance(config, (str, bytes)) or not hasattr(config, "__len__"):
        raise TypeError(f"config must be a SACConfig or a TD3Config, or a list of them, got {check.describe(config)}")
    configs = list(config)
    if not configs or not all(isinstance(c, (SACConfig, TD3Config)) for c in configs):
        raise TypeError(f"config must be a SACConfig or a TD3Config, or a list of them, got {check.describe(config)}")
    if len(configs) != n:
        raise ValueError(f"config must have one entry per seed ({n}), got {len(configs)}")
    if len({type(c) for c in configs}) > 1:
        raise ValueError("config must be all SACConfigs or all TD3Configs: SAC and TD3 cannot train side by side")
    shared = [{k: v for k, v in asdict(c).items() if k not in PER_RUN} for c in configs]
    for c, fields in zip(configs, shared):
        if fields != shared[0]:
            differ = sorted(k for k in fields if fields[k] != shared[0][k])
            raise ValueError(f"config: runs side by side may differ only in {', '.join(PER_RUN)}; these differ "
                             f"in {', '.join(differ)}")
    return configs


class _Variation(NamedTuple):
    """The per-run settings of a group, as one value when all runs agree and as a tensor per agent otherwise."""

    clipped: bool | torch.Tensor       # TD3: target from the smaller of two critics; (k,) bools
    target_noise: float | torch.Tensor  # TD3: standard deviation of the target smoothing; (k, 1, 1)
    noise_clip: float | torch.Tensor    # (k, 1, 1)
    smoothed: list[bool]                # which agents draw smoothing noise
    correction: bool | torch.Tensor     # SAC: the tanh correction; (k, 1) ones and zeros


def _variation(configs) -> _Variation:
    def per_agent(values, shape, dtype=torch.float32):
        return values[0] if len(set(values)) == 1 else torch.tensor(values, dtype=dtype).reshape(shape)

    if isinstance(configs[0], SACConfig):
        return _Variation(True, 0.0, 0.0, [False] * len(configs),
                          per_agent([c.log_prob_correction for c in configs], (-1, 1)))
    clipped = [c.clipped_double_q for c in configs]
    return _Variation(per_agent(clipped, (-1,), torch.bool), per_agent([c.target_noise for c in configs], (-1, 1, 1)),
                      per_agent([c.target_noise_clip for c in configs], (-1, 1, 1)),
                      [c.target_noise > 0 for c in configs], True)


def _train(env_id, spaces, configs, seeds, eval_every, eval_episodes, keep_checkpoints,
           description) -> list[OffPolicyResult]:
    start_time = time.perf_counter()
    c = configs[0]                  # the settings all runs share (see PER_RUN)
    v = _variation(configs)         # and those they may not
    sac = isinstance(c, SACConfig)
    K, A = len(seeds), spaces.act_dim
    rngs = [np.random.default_rng(seed) for seed in seeds]
    buffers = [ReplayBuffer(c.buffer_size, (spaces.obs_dim,), (A,), np.float32, seed=int(rng.integers(2**31)))
               for rng in rngs]
    envs = [gym.make(env_id) for _ in seeds]
    obs = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]).astype(np.float32)

    own_critics = [2 if sac or config.clipped_double_q else 1 for config in configs]
    actor = (SquashedGaussianActor if sac else DeterministicActor)(spaces.obs_dim, A, c.hidden, spaces.low,
                                                                   spaces.high, seeds)
    critics = Critics(spaces.obs_dim, A, c.hidden, max(own_critics), seeds)
    target_critics = copy.deepcopy(critics)
    target_actor = None if sac else copy.deepcopy(actor)
    critic_opt = torch.optim.Adam(critics.parameters(), lr=c.learning_rate, fused=True)
    actor_params = list(actor.parameters())
    log_alpha = None
    if sac and c.ent_coef is None:   # the temperature is learned, by the actor's optimiser (same rate)
        log_alpha = torch.full((K,), math.log(c.init_ent_coef), requires_grad=True)
        actor_params.append(log_alpha)
    actor_opt = torch.optim.Adam(actor_params, lr=c.learning_rate, fused=True)
    target_entropy = (-float(A) if c.target_entropy is None else c.target_entropy) if sac else 0.0
    used = torch.tensor([[1.0] * n + [0.0] * (critics.n_critics - n) for n in own_critics])  # (k, critics)

    returns = [[] for _ in seeds]
    end_steps = [[] for _ in seeds]
    episode_return = np.zeros(K)
    stats, eval_steps = [], []
    eval_returns = [[] for _ in seeds]
    saved = [[] for _ in seeds]
    updates = 0
    for step in progress(range(c.total_steps), description):
        if step < c.learning_starts:
            actions = np.stack([rng.uniform(-1.0, 1.0, A) for rng in rngs]).astype(np.float32)
        else:
            noise = np.stack([rng.standard_normal((1, A)) for rng in rngs]).astype(np.float32)
            if sac:
                actions = actor._sample_numpy(obs[:, None], noise)[:, 0]
            else:
                actions = np.clip(actor._mean_numpy(obs[:, None])[:, 0] + c.action_noise * noise[:, 0], -1.0, 1.0)
        env_actions = actor.to_env(actions)
        for k, env in enumerate(envs):
            next_obs, reward, terminated, truncated, _ = env.step(env_actions[k])
            ended = terminated or (truncated and c.truncation_as_termination)
            buffers[k]._add(obs[k], actions[k], reward, next_obs, ended)
            episode_return[k] += reward
            if terminated or truncated:
                returns[k].append(episode_return[k])
                end_steps[k].append(step + 1)
                episode_return[k] = 0.0
                next_obs, _ = env.reset()
            obs[k] = next_obs

        if step + 1 > c.learning_starts and (step + 1) % c.train_every == 0:
            for _ in range(c.gradient_steps):
                updates += 1
                batch = _sample(buffers, c.batch_size)
                if sac:
                    noise = torch.from_numpy(np.stack([rng.standard_normal((2 * c.batch_size, A))
                                                       for rng in rngs]).astype(np.float32))
                    stats.append(_sac_update(batch, actor, critics, target_critics, log_alpha, actor_opt,
                                             critic_opt, c, noise, target_entropy, v.correction))
                else:
                    noise = None
                    if any(v.smoothed):   # drawn only by the agents that smooth: each agent's own random numbers
                        zeros = np.zeros((c.batch_size, A))
                        noise = torch.from_numpy(np.stack([rng.standard_normal((c.batch_size, A)) if on else zeros
                                                           for rng, on in zip(rngs, v.smoothed)]).astype(np.float32))
                    stats.append(_td3_update(batch, actor, target_actor, critics, target_critics, actor_opt,
                                             critic_opt, c, noise, updates % c.policy_delay == 0, v, used))
        if eval_every and (step + 1) % eval_every == 0:
            eval_steps.append(step + 1)
            for k, seed in enumerate(seeds):
                single = actor.select(k)
                eval_returns[k].append(_evaluate(single, env_id, eval_episodes,
                                                 10_000 + 1_000 * seed + len(eval_steps)))
                if keep_checkpoints:
                    saved[k].append(Checkpoint(step + 1, single, critics.select(k, own_critics[k])))
    for env in envs:
        env.close()

    seconds = (time.perf_counter() - start_time) / K
    columns = [np.array(col, dtype=float) for col in zip(*stats)] if stats else [np.zeros((0, K))] * 4
    critic_loss, q_mean, alpha, entropy = (col.reshape(len(stats), K) for col in columns)
    return [OffPolicyResult(
        actor.select(k), critics.select(k, own_critics[k]), configs[k], seed, np.array(returns[k], dtype=float),
        np.array(end_steps[k], dtype=int), critic_losses=critic_loss[:, k].copy(), q_means=q_mean[:, k].copy(),
        alphas=alpha[:, k].copy() if sac else np.zeros(0), entropies=entropy[:, k].copy() if sac else np.zeros(0),
        eval_steps=np.array(eval_steps, dtype=int),
        eval_returns=np.array(eval_returns[k], dtype=float).reshape(len(eval_steps), eval_episodes),
        checkpoints=saved[k], seconds=seconds, env_steps=c.total_steps,
    ) for k, seed in enumerate(seeds)]


class _Batch(NamedTuple):
    obs: torch.Tensor          # (agents, batch, obs_dim)
    actions: torch.Tensor      # (agents, batch, act_dim), in [-1, 1]
    rewards: torch.Tensor      # (agents, batch)
    next_obs: torch.Tensor
    terminated: torch.Tensor   # 1.0 where the episode ended after the transition


def _sample(buffers: list[ReplayBuffer], batch_size: int) -> _Batch:
    """One batch from each agent's buffer, stacked along a first axis."""
    batches = [buffer.sample(batch_size) for buffer in buffers]
    return _Batch(*(torch.stack([getattr(b, name) for b in batches]) for name in _Batch._fields))


def _sac_sample(actor, obs, noise, correction=True):
    """A reparameterised sample of the squashed Gaussian policy,
    ``tanh(mean + std * noise)``, and its log-probability."""
    mean, log_std = actor(obs)
    pre_tanh = mean + log_std.exp() * noise
    return torch.tanh(pre_tanh), _squashed_log_prob(mean, log_std, pre_tanh, correction)


def _sac_update(batch: _Batch, actor, critics, target_critics, log_alpha, actor_opt,
                critic_opt, c: SACConfig, noise, target_entropy: float, correction=True):
    """One gradient step of SAC for every agent; returns per-agent statistics
    (critic loss, mean Q, temperature, entropy estimate)."""
    n = batch.obs.shape[1]
    if log_alpha is not None:
        alpha = log_alpha.detach().exp()
    else:
        alpha = torch.full((len(batch.obs),), c.ent_coef)

    # Critics: regress on r + gamma * (min target critic - alpha * log pi) at s'
    with torch.no_grad():
        next_action, next_log_prob = _sac_sample(
            actor, batch.next_obs, noise[:, n:].contiguous(), correction)
        next_q = target_critics(batch.next_obs, next_action).min(dim=1).values
        soft_value = next_q - alpha[:, None] * next_log_prob
        target = batch.rewards + c.gamma * (1.0 - batch.terminated) * soft_value
    q = critics(batch.obs, batch.actions)                 # (agents, critics, n)
    critic_loss = 0.5 * ((q - target[:, None]) ** 2).mean(dim=2).sum(dim=1)
    critic_opt.zero_grad()
    critic_loss.sum().backward()
    critic_opt.step()

    # Actor: minimise alpha * log pi - min Q, the critics' weights held fixed
    action, log_prob = _sac_sample(actor, batch.obs, noise[:, :n].contiguous(),
                                   correction)
    q_pi = critics(batch.obs, action, critics._detached()).min(dim=1).values
    actor_loss = (alpha[:, None] * log_prob - q_pi).mean(dim=1).sum()
    if log_alpha is not None:   # and the temperature, by the same optimiser
        actor_loss = actor_loss + _temperature_loss(log_alpha, log_prob,
                                                    target_entropy)
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()

    _soft_update(list(target_critics.parameters()), list(critics.parameters()), c.tau)
    with torch.no_grad():
        return (critic_loss.tolist(), q[:, 0].mean(dim=1).tolist(), alpha.tolist(),
                (-log_prob.mean(dim=1)).tolist())


def _td3_update(batch: _Batch, actor, target_actor, critics, target_critics, actor_opt,
                critic_opt, c: TD3Config, noise, update_actor: bool, v: _Variation,
                used: torch.Tensor):
    """One gradient step of TD3 (or DDPG) for every agent; returns per-agent
    statistics (critic loss, mean Q).

    ``v`` holds the fixes each agent uses (:class:`_Variation`); ``used`` marks
    which of the stacked critics are each agent's own (a DDPG agent beside TD3
    agents ignores its second)."""
    with torch.no_grad():
        next_action = target_actor(batch.next_obs)
        if noise is not None:                    # fix 2: target policy smoothing
            smoothing = (v.target_noise * noise).clamp(-v.noise_clip, v.noise_clip)
            next_action = (next_action + smoothing).clamp(-1.0, 1.0)
        next_q = target_critics(batch.next_obs, next_action)   # (agents, critics, n)
        if v.clipped is True:                    # fix 1: clipped double Q
            next_q = next_q.min(dim=1).values
        elif v.clipped is False:
            next_q = next_q[:, 0]
        else:                                    # some agents clip, some do not
            next_q = torch.where(v.clipped[:, None], next_q.min(dim=1).values,
                                 next_q[:, 0])
        target = batch.rewards + c.gamma * (1.0 - batch.terminated) * next_q
    q = critics(batch.obs, batch.actions)
    critic_loss = ((q - target[:, None]) ** 2).mean(dim=2)      # (agents, critics)
    critic_opt.zero_grad()
    critic_loss.sum().backward()
    critic_opt.step()

    if update_actor:                             # fix 3: delayed policy updates
        q_pi = critics(batch.obs, actor(batch.obs), critics._detached())[:, 0]
        actor_opt.zero_grad()
        (-q_pi.mean(dim=1).sum()).backward()
        actor_opt.step()
        _soft_update(list(target_critics.parameters()), list(critics.parameters()),
                     c.tau)
        _soft_update(list(target_actor.parameters()), list(actor.parameters()), c.tau)
    with torch.no_grad():
        agents = len(q)
        return ((critic_loss * used).sum(dim=1).tolist(), q[:, 0].mean(dim=1).tolist(),
                [0.0] * agents, [0.0] * agents)


# --------------------------------------------------------------------------- evaluation


def _checked_actor(actor, env_id) -> None:
    if not isinstance(actor, _Actor):
        raise TypeError(f"actor must be a DeterministicActor or a SquashedGaussianActor, got {check.describe(actor)}")
    if actor.n_agents != 1:
        raise ValueError(f"actor holds {actor.n_agents} agents; evaluate one (actor.select(i))")
    spaces = _checked_env_id(env_id)
    if (spaces.obs_dim, spaces.act_dim) != (actor.obs_dim, actor.act_dim):
        raise ValueError(f"actor takes {actor.obs_dim} numbers and returns {actor.act_dim}; {env_id} has "
                         f"observations of length {spaces.obs_dim} and actions of length {spaces.act_dim}")


def evaluate_actor(actor, env_id: str, n_episodes: int = 100, seed: int = 0) -> np.ndarray:
    """The returns of ``n_episodes`` episodes on ``env_id`` played with the actor's deterministic action
    (TD3: ``mu(s)``; SAC: ``tanh(mean(s))``), in lockstep (:func:`rl2llm.rollouts.play_episodes`);
    episode ``i`` starts from ``reset(seed=seed + i)``.

    Accepted: ``actor`` a :class:`DeterministicActor` or :class:`SquashedGaussianActor` of one
    agent that fits ``env_id``; ``n_episodes`` a positive integer; ``seed`` an integer >= 0.
    """
    _checked_actor(actor, env_id)
    return _evaluate(actor, env_id, check.as_int("n_episodes", n_episodes, 1), check.as_int("seed", seed, 0))


def _evaluate(actor, env_id, n_episodes, seed) -> np.ndarray:
    return play_episodes(lambda obs: actor.to_env(actor._mean_numpy(obs[None])[0]), env_id, n_episodes, seed)


class ValueEstimates(NamedTuple):
    """What :func:`value_estimates` returns, one entry per state visited."""

    #: Each critic's ``Q(s, mu(s))``, shape ``(n_critics, n_states)``.
    predicted: np.ndarray
    #: The discounted return that followed each state, shape ``(n_states,)``.
    actual: np.ndarray


class _Deterministic:
    """``act(obs) -> (actions, log_probs)`` for :func:`rl2llm.rollouts.collect_episodes`: the actor's
    deterministic action (log-probability 0: it is certain)."""

    def __init__(self, actor):
        self.actor = actor

    def act(self, obs):
        return self.actor.to_env(self.actor._mean_numpy(np.asarray(obs, np.float32)[None])[0]), np.zeros(len(obs))


def value_estimates(actor, critics, env_id: str, gamma: float, n_episodes: int = 10, seed: int = 0,
                    n_states: int = 200, tail: int = 400) -> ValueEstimates:
    """What the critics believe the deterministic policy's states are worth, against what it then earns.

    The policy plays ``n_episodes`` episodes (episode ``i`` from ``reset(seed=seed + i)``)
    of ``n_states + tail`` steps (the time limit is extended); for each of the first
    ``n_states`` states of each episode we record every critic's ``Q(s, mu(s))`` and the
    discounted return that actually followed, ``sum_k gamma^k r_{t+k}`` to the episode's
    end. The ``tail`` steps make that sum nearly complete: what is cut off is weighted by
    at most ``gamma ** tail``. Episodes are collected by
    :func:`rl2llm.rollouts.collect_episodes`, returns by :func:`rl2llm.rollouts.reward_to_go`.

    Accepted: ``actor`` and ``critics`` of one agent (``result.actor``, ``result.critics``,
    or a :class:`Checkpoint`'s) that fit ``env_id``; ``gamma`` in ``[0, 1)``; ``n_episodes``,
    ``n_states`` positive integers; ``seed``, ``tail`` integers >= 0.
    """
    _checked_actor(actor, env_id)
    if not isinstance(critics, Critics):
        raise TypeError(f"critics must be a Critics, got {check.describe(critics)}")
    if critics.n_agents != 1 or (critics.obs_dim, critics.act_dim) != (actor.obs_dim, actor.act_dim):
        raise ValueError("critics must be one agent's critics for the actor's observations and actions")
    gamma = check.as_real("gamma", gamma, 0.0, 1.0, high_open=True)
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    seed = check.as_int("seed", seed, 0)
    n_states = check.as_int("n_states", n_states, 1)
    tail = check.as_int("tail", tail, 0)
    envs = gym.make_vec(env_id, num_envs=n_episodes, vectorization_mode="sync", max_episode_steps=n_states + tail)
    try:
        rollout = collect_episodes(envs, _Deterministic(actor), n_episodes, seed=seed)  # copy i: seed + i
    finally:
        envs.close()
    actual = reward_to_go(rollout.rewards, rollout.dones, gamma)
    keep = steps_since_start(rollout.dones) < n_states
    obs = rollout.observations[keep].astype(np.float32)
    mu = actor._mean_numpy(obs[None])[0]
    return ValueEstimates(critics.q_values(obs, mu), actual[keep])
