"""Proximal policy optimisation (PPO): many small steps on one batch, each kept near the policy that collected it.

Introduced in Lecture 6 (PPO). Lecture 5's TRPO bounds each update by a KL
constraint solved with conjugate gradients and a line search; PPO (Schulman
et al., 2017) gets most of that with first-order steps on a *clipped*
objective, which stops rewarding a change in an action's probability once
the ratio new/old has left ``[1 - clip, 1 + clip]``. Part IV adapts this
same code to language models, where an action is a token.

* :func:`clipped_surrogate` — the clipped objective, on per-action
  log-probabilities (per-token ones in Part IV).
* :func:`approx_kl` — the k1 and k3 estimators of ``KL(old || new)`` from
  samples of the old policy (Schulman's note "Approximating KL divergence");
  :func:`clip_fraction` — the share of samples whose ratio was clipped. The
  two numbers to watch while PPO trains.
* :class:`PPOConfig`, :func:`train_ppo` — PPO on a gymnasium environment with
  Discrete actions (a categorical policy) or continuous ones (a
  :class:`GaussianMLP`). The defaults are the RL Zoo's CartPole-v1 settings,
  :data:`PENDULUM` its Pendulum-v1 ones; each implementation detail Lecture 6
  ablates has its own switch.

The loop is Lecture 4's A2C loop (:mod:`rl2llm.actor_critic`): the same
networks and orthogonal initialisation, the same synchronous vector
environment in next-step automatic-reset mode with its reset steps masked
out, the same GAE (:mod:`rl2llm.advantages`). Only the update differs:
A2C takes one gradient step per batch, PPO ``n_epochs`` passes of
minibatch steps, which is what makes the clip necessary.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from . import _validate as check
from .actor_critic import Segments, _checked_env, _evaluate, _numpy_actor, make_networks, parameters
from .actor_critic import evaluate_policy as _evaluate_categorical
from .advantages import _gae
from .dqn import flush_denormals, torch_threads
from .policies import CategoricalMLP, ValueMLP
from .progress import progress
from .rollouts import play_episodes

__all__ = ["KLEstimates", "PPOConfig", "PPOResult", "approx_kl", "clip_fraction", "clipped_surrogate",
           "config_dict", "evaluate_policy", "train_ppo", "GaussianMLP", "PENDULUM"]

# --------------------------------------------------------------------------- the objective and its monitors


def _as_log_probs(name: str, value) -> torch.Tensor:
    """A float tensor of finite log-probabilities (arrays are converted), at least one entry."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        tensor = torch.as_tensor(check.numeric_array(name, value), dtype=torch.float64)
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must hold floats (log-probabilities), got dtype {tensor.dtype}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} must have at least one entry")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite")
    return tensor


def _checked_pair(log_probs_new, log_probs_old) -> tuple[torch.Tensor, torch.Tensor]:
    new = _as_log_probs("log_probs_new", log_probs_new)
    old = _as_log_probs("log_probs_old", log_probs_old)
    if new.shape != old.shape:
        raise ValueError(f"log_probs_new and log_probs_old must have the same shape (one entry per sampled "
                         f"action), got {tuple(new.shape)} and {tuple(old.shape)}")
    if (new > 0).any() or (old > 0).any():
        name = "log_probs_new" if (new > 0).any() else "log_probs_old"
        raise ValueError(f"{name} must be log-probabilities (<= 0), but it has a positive entry")
    return new, old.to(new.dtype)


def clipped_surrogate(log_probs_new, log_probs_old, advantages, clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped objective, to be *maximised*: the mean of ``min(r A, clip(r, 1 - clip, 1 + clip) A)``.

    Each entry ``i`` is one sampled action: ``log_probs_new[i]`` is
    ``log pi_theta(a_i | s_i)`` under the policy being trained (with its
    gradient), ``log_probs_old[i]`` the same action's log-probability under
    the policy that collected it (a constant), ``advantages[i]`` how much
    better than expected the action turned out, and ``r_i = exp(new - old)``
    the probability ratio. With a positive advantage the objective stops
    growing once ``r > 1 + clip`` (no reward for making the action *more*
    likely still), with a negative one once ``r < 1 - clip``; there its
    gradient is zero, so a minibatch step cannot push further in that
    direction. Moving back toward ``r = 1`` is never blocked.

    **From action to token.** Nothing here knows what an action is. In
    Part IV the policy is a language model and each entry is one *token* of
    a generated answer: ``log_probs_new[i] = log pi_theta(token_i | prompt,
    tokens before i)``, the old one the same token's log-probability under
    the model that wrote the answer, and ``advantages[i]`` the answer's
    advantage given to each of its tokens (or a per-token one). Flatten the
    (answers, tokens) arrays, keep the real tokens (drop padding), and call
    this function unchanged.

    Accepted: ``log_probs_new`` a float tensor of log-probabilities (``<= 0``,
    any shape; arrays are accepted, without gradient); ``log_probs_old`` and
    ``advantages`` finite numbers of the same shape (tensors or arrays);
    ``clip`` a number in ``[0, 1)``. Returns a scalar tensor.
    """
    new, old = _checked_pair(log_probs_new, log_probs_old)
    adv = _as_log_probs("advantages", advantages) if isinstance(advantages, torch.Tensor) else \
        torch.as_tensor(check.as_finite_array("advantages", advantages))
    if not adv.is_floating_point() or not torch.isfinite(adv).all():
        raise ValueError("advantages must be finite floats")
    if adv.shape != new.shape:
        raise ValueError(f"advantages must have the shape of log_probs_new, {tuple(new.shape)}, "
                         f"got {tuple(adv.shape)}")
    clip = check.as_real("clip", clip, 0.0, 1.0, high_open=True)
    return _clipped_surrogate(new, old.detach(), adv.to(new.dtype).detach(), clip)


def _clipped_surrogate(new, old, adv, clip):
    """:func:`clipped_surrogate` without the checks, for the training loop."""
    ratio = torch.exp(new - old)
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return torch.min(ratio * adv, clipped * adv).mean()


class KLEstimates(NamedTuple):
    """Two estimates of ``KL(old || new)`` from actions sampled by the old policy (floats, in nats)."""

    #: ``mean(log old - log new)``: unbiased, but single samples can be negative, so it is noisy.
    k1: float
    #: ``mean((r - 1) - log r)`` with ``r = new / old``: unbiased too, and every sample is >= 0.
    k3: float


def approx_kl(log_probs_new, log_probs_old) -> KLEstimates:
    """How far the policy has moved, estimated from the actions in the batch: ``KL(old || new)``.

    The actions were sampled by the old policy, so for each one
    ``log r = log pi_new(a | s) - log pi_old(a | s)`` is known, and (Schulman,
    "Approximating KL divergence", 2020) both ``k1 = -log r`` and
    ``k3 = (r - 1) - log r`` have expectation ``KL(old || new)`` under the old
    policy. ``k3`` is never negative (``log r <= r - 1``) and has a much
    smaller variance when the policies are close, which is why PPO
    implementations log it (and stop early on it, ``target_kl``). Per-token
    log-probabilities in Part IV give the KL per token.

    Accepted: ``log_probs_new``, ``log_probs_old`` log-probabilities (``<= 0``)
    of the same sampled actions, same shape, tensors or arrays. No gradient is
    recorded.
    """
    new, old = _checked_pair(log_probs_new, log_probs_old)
    return _approx_kl(new.detach(), old.detach())


def _approx_kl(new, old) -> KLEstimates:
    with torch.no_grad():
        log_ratio = new - old
        k1 = (-log_ratio).mean().item()
        k3 = (torch.expm1(log_ratio) - log_ratio).mean().item()
    return KLEstimates(k1, k3)


def clip_fraction(log_probs_new, log_probs_old, clip: float = 0.2) -> float:
    """The share of sampled actions whose ratio ``r = new / old`` lies outside ``[1 - clip, 1 + clip]``.

    Near 0: the policy barely moved, the clip did nothing. Around 0.1 to 0.2:
    typical. Much higher: the steps are large and most of the batch no
    longer contributes a gradient. Arguments as :func:`approx_kl`; ``clip``
    in ``[0, 1)``.
    """
    new, old = _checked_pair(log_probs_new, log_probs_old)
    clip = check.as_real("clip", clip, 0.0, 1.0, high_open=True)
    with torch.no_grad():
        return ((torch.exp(new - old) - 1.0).abs() > clip).double().mean().item()


# --------------------------------------------------------------------------- configuration and result


@dataclass(frozen=True)
class PPOConfig:
    """The knobs of :func:`train_ppo`. The defaults are the RL Zoo's for CartPole-v1 (PPO, 100k steps).

    Each update collects ``n_envs * n_steps`` transitions, then makes
    ``n_epochs`` passes over them in shuffled minibatches of ``batch_size``.
    The loss is ``-clipped_surrogate + vf_coef * value_loss - ent_coef *
    entropy``; the optimiser is Adam (``adam_eps``).

    The switches Lecture 6 ablates, each on or off independently:

    * ``normalize_advantage`` — standardise the advantages of each minibatch;
    * ``clip_range_vf`` — ``None``: plain squared error for the critic; a
      number: the value prediction may move at most this far from the old
      one per update (the larger of the clipped and unclipped errors counts,
      as in OpenAI's baselines); in the value's own units;
    * ``orthogonal_init`` — :func:`rl2llm.actor_critic.make_networks`'s
      orthogonal initialisation, or PyTorch's default;
    * ``anneal_lr`` — ``learning_rate`` falls linearly to 0 over training;
      ``anneal_clip`` — so does ``clip_range``;
    * ``max_grad_norm`` — rescale gradients whose norm exceeds it; ``None``
      switches this off;
    * ``clip_range`` — ``None`` switches the clip itself off: the policy loss
      is then the plain importance-weighted surrogate ``-mean(r A)``, Lecture
      5's surrogate with no trust region (the clip fractions are then NaN);
    * ``ent_coef`` — the entropy bonus (0 switches it off);
    * ``target_kl`` — ``None``: always run every epoch; a number: stop the
      update's epochs as soon as a minibatch's k3 estimate of the KL exceeds
      ``1.5 * target_kl`` (Stable-Baselines3's rule).
    """

    n_envs: int = 8
    n_steps: int = 32
    total_steps: int = 100_000
    batch_size: int = 256
    n_epochs: int = 20
    learning_rate: float = 1e-3
    anneal_lr: bool = True
    clip_range: float | None = 0.2
    anneal_clip: bool = True
    gamma: float = 0.98
    gae_lambda: float = 0.8
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float | None = 0.5
    normalize_advantage: bool = True
    clip_range_vf: float | None = None
    orthogonal_init: bool = True
    target_kl: float | None = None
    adam_eps: float = 1e-5
    hidden: tuple[int, ...] = (64, 64)

    def __post_init__(self):
        for name in ("n_envs", "n_steps", "total_steps", "batch_size", "n_epochs"):
            check.as_int(name, getattr(self, name), 1)
        check.as_real("learning_rate", self.learning_rate, 0.0, low_open=True)
        if self.clip_range is not None:
            check.as_real("clip_range", self.clip_range, 0.0, 1.0, low_open=True, high_open=True)
        check.as_real("gamma", self.gamma, 0.0, 1.0)
        check.as_real("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check.as_real("ent_coef", self.ent_coef, 0.0)
        check.as_real("vf_coef", self.vf_coef, 0.0)
        for name in ("max_grad_norm", "clip_range_vf", "target_kl"):
            if getattr(self, name) is not None:
                check.as_real(name, getattr(self, name), 0.0, low_open=True)
        check.as_real("adam_eps", self.adam_eps, 0.0, low_open=True)
        for name in ("anneal_lr", "anneal_clip", "normalize_advantage", "orthogonal_init"):
            check.as_bool(name, getattr(self, name))
        if not isinstance(self.hidden, (tuple, list)) or len(self.hidden) == 0:
            raise TypeError(f"hidden must be a non-empty tuple of layer widths such as (64, 64), "
                            f"got {check.describe(self.hidden)}")
        object.__setattr__(self, "hidden", tuple(check.as_int("hidden", n, 1) for n in self.hidden))
        if self.batch_size > self.n_envs * self.n_steps:
            raise ValueError(f"batch_size must be at most n_envs * n_steps = {self.n_envs * self.n_steps} "
                             f"(the transitions of one update), got {self.batch_size}")


@dataclass
class PPOResult:
    """What :func:`train_ppo` returns. The per-update arrays have one entry per update."""

    policy: CategoricalMLP | GaussianMLP
    value: ValueMLP
    config: PPOConfig
    seed: int
    #: The return of every finished training episode, and the environment step at which it ended.
    episode_returns: np.ndarray
    episode_end_steps: np.ndarray
    #: Per update: the k1 and k3 KL estimates between the collecting policy and the updated one
    #: (measured on the whole batch after the update), the share of clipped samples (mean over the
    #: minibatches), the mean entropy, the policy loss (minus the clipped surrogate) and the value
    #: loss (means over the minibatches), the epochs run (fewer than n_epochs when target_kl stopped
    #: them), the learning rate and the clip range used, and the environment steps at its end.
    approx_kl_k1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    approx_kl: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clip_fractions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    entropies: np.ndarray = field(default_factory=lambda: np.zeros(0))
    policy_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    value_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    learning_rates: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clip_ranges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    update_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    #: Greedy evaluations during training: the steps, and the returns (one row per evaluation).
    eval_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    eval_returns: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    seconds: float = 0.0
    #: Environment steps taken, over all copies (reset steps included, as Stable-Baselines3 counts).
    env_steps: int = 0

    @property
    def steps_per_second(self) -> float:
        """Environment steps per second of training (evaluations included)."""
        return self.env_steps / self.seconds if self.seconds > 0 else float("nan")


def config_dict(config: PPOConfig) -> dict:
    """The fields of a :class:`PPOConfig` as a plain dict (for a results file)."""
    if not isinstance(config, PPOConfig):
        raise TypeError(f"config must be a PPOConfig, got {check.describe(config)}")
    return asdict(config)


# --------------------------------------------------------------------------- continuous actions


class GaussianMLP(nn.Module):
    """A policy for continuous actions: a network gives the mean of a Gaussian, one learned log standard
    deviation per action dimension (independent of the state) gives its width.

    ``obs_dim``: the length of an observation; ``act_dim``: of an action;
    ``hidden``: the widths of the hidden layers (tanh between them);
    ``log_std``: the initial log standard deviation. Initialised as
    :func:`rl2llm.actor_critic.make_networks` initialises the categorical
    policy (orthogonal, gain 0.01 on the last layer) when ``orthogonal``.
    The sample is what the log-probability is of; the environment receives it
    clipped to its bounds (as Stable-Baselines3 does).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64), log_std: float = 0.0,
                 orthogonal: bool = True):
        super().__init__()
        obs_dim = check.as_int("obs_dim", obs_dim, 1)
        act_dim = check.as_int("act_dim", act_dim, 1)
        body = CategoricalMLP(obs_dim, act_dim, hidden)   # the same tanh MLP, act_dim outputs
        self.mean_net = body.net
        if check.as_bool("orthogonal", orthogonal):
            linears = [layer for layer in self.mean_net if isinstance(layer, nn.Linear)]
            for i, layer in enumerate(linears):
                nn.init.orthogonal_(layer.weight, gain=0.01 if i == len(linears) - 1 else math.sqrt(2))
                nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((act_dim,), check.as_real("log_std", log_std)))
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, body.hidden

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """The means, shape ``(n, act_dim)``, for a float tensor of observations ``(n, obs_dim)``."""
        return self.mean_net(observations)

    def log_prob(self, observations, actions) -> torch.Tensor:
        """``log pi(a | s)`` (the density, summed over action dimensions), shape ``(n,)``."""
        obs = CategoricalMLP._as_tensor(self, observations)
        actions = torch.as_tensor(check.as_finite_array("actions", actions.detach().numpy() if isinstance(
            actions, torch.Tensor) else actions, (obs.shape[0], self.act_dim), "(n, act_dim)"), dtype=torch.float32)
        return _gaussian_log_prob(self.forward(obs), self.log_std, actions)


_LOG_2PI = math.log(2 * math.pi)


def _gaussian_log_prob(mean, log_std, actions):
    return (-0.5 * ((actions - mean) / log_std.exp()) ** 2 - log_std - 0.5 * _LOG_2PI).sum(dim=-1)


def _gaussian_entropy(log_std, n):
    return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum().expand(n)


#: The RL Zoo's PPO settings for Pendulum-v1, without its state-dependent exploration (gSDE), which
#: is not implemented here: 4 copies, 1024 steps each, minibatches of 64, 10 epochs, no annealing.
PENDULUM = PPOConfig(n_envs=4, n_steps=1024, batch_size=64, n_epochs=10, gamma=0.9, gae_lambda=0.95,
                     learning_rate=1e-3, anneal_lr=False, clip_range=0.2, anneal_clip=False, ent_coef=0.0,
                     total_steps=100_000)


def _gaussian_actor(policy: GaussianMLP, rng: np.random.Generator):
    """``act(obs) -> actions`` sampled from ``policy`` in NumPy (views of the live parameters)."""
    layers = [(layer.weight.detach().numpy().T, layer.bias.detach().numpy())
              for layer in policy.mean_net if isinstance(layer, nn.Linear)]
    hidden, (w_out, b_out) = layers[:-1], layers[-1]
    log_std = policy.log_std.detach().numpy()

    def act(obs: np.ndarray) -> np.ndarray:
        x = obs
        for w, b in hidden:
            x = np.tanh(x @ w + b)
        mean = x @ w_out + b_out
        return (mean + np.exp(log_std) * rng.standard_normal(mean.shape)).astype(np.float32)

    return act


def _evaluate_gaussian(policy: GaussianMLP, env_id, n_episodes, seed, low, high) -> np.ndarray:
    """Returns of ``n_episodes`` episodes played with the mean action, in lockstep."""
    def act(obs):
        with torch.no_grad():
            return np.clip(policy(torch.from_numpy(obs)).numpy(), low, high)

    return play_episodes(act, env_id, n_episodes, seed)


def evaluate_policy(policy, env_id: str, n_episodes: int = 100, seed: int = 0, greedy: bool = True) -> np.ndarray:
    """The returns of ``n_episodes`` episodes of ``policy`` on ``env_id``.

    A :class:`rl2llm.policies.CategoricalMLP` is evaluated by
    :func:`rl2llm.actor_critic.evaluate_policy` (``greedy`` as there); a
    :class:`GaussianMLP` plays its mean action, clipped to the bounds
    (``greedy`` must be True). Episode ``i`` starts from
    ``env.reset(seed=seed + i)``. ``n_episodes`` a positive integer, ``seed``
    an integer >= 0.
    """
    if isinstance(policy, CategoricalMLP):
        return _evaluate_categorical(policy, env_id, n_episodes, seed, greedy)
    if not isinstance(policy, GaussianMLP):
        raise TypeError(f"policy must be a CategoricalMLP or a GaussianMLP, got {check.describe(policy)}")
    if not check.as_bool("greedy", greedy):
        raise ValueError("greedy must be True for a GaussianMLP: it is evaluated with its mean action")
    space = _checked_ppo_env(env_id)
    if space.discrete or (space.obs_dim, space.act_dim) != (policy.obs_dim, policy.act_dim):
        raise ValueError(f"policy takes {policy.obs_dim} numbers and returns {policy.act_dim}; {env_id} does not fit")
    return _evaluate_gaussian(policy, env_id, check.as_int("n_episodes", n_episodes, 1),
                              check.as_int("seed", seed, 0), space.low, space.high)


# --------------------------------------------------------------------------- training


class _Spaces(NamedTuple):
    obs_dim: int
    act_dim: int          # the number of actions (Discrete) or the length of an action (Box)
    discrete: bool
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def _checked_ppo_env(env_id) -> _Spaces:
    """The spaces of ``env_id``: a flat Box observation, and Discrete actions or flat, bounded Box ones."""
    if isinstance(env_id, str):
        try:
            env = gym.make(env_id)
        except gym.error.Error as err:
            raise ValueError(f"env_id {env_id!r} is not a gymnasium environment ({err})") from None
        obs_space, action_space = env.observation_space, env.action_space
        env.close()
        if isinstance(action_space, gym.spaces.Box):
            if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1 \
                    or len(action_space.shape) != 1 or not action_space.is_bounded():
                raise ValueError(f"env_id {env_id!r} must have a flat Box observation space and flat, bounded "
                                 f"Box actions; it has {obs_space} and {action_space}")
            return _Spaces(obs_space.shape[0], action_space.shape[0], False,
                           action_space.low.astype(np.float32), action_space.high.astype(np.float32))
    return _Spaces(*_checked_env(env_id), True)


def train_ppo(env_id: str, config: PPOConfig = PPOConfig(), seed: int = 0, eval_every: int = 0,
              eval_episodes: int = 10, threads: int | None = 1, description: str | None = None,
              vectorization: str = "sync") -> PPOResult:
    """Train an actor and a critic with PPO on the gymnasium environment ``env_id``; see :class:`PPOConfig`.

    The environments are ``gym.make_vec(env_id, config.n_envs, "sync")``,
    reset with ``seed`` (copy ``i`` gets ``seed + i``); the networks are drawn
    from PyTorch's generator seeded with ``seed`` (restored afterwards), the
    actions and the minibatch shuffles from NumPy generators seeded with
    ``seed``, so a seed gives the same run. With ``eval_every > 0`` the greedy
    policy plays ``eval_episodes`` episodes each time another ``eval_every``
    environment steps have passed. Progress goes to the build log.
    ``vectorization="vector_entry_point"`` steps the copies with the
    environment's own vectorised implementation where gymnasium has one
    (CartPole-v1: all copies in one NumPy call, the same next-step
    automatic reset, several times fewer seconds per step; its random
    initial states differ from the sync copies', so the runs do too).

    Discrete actions get a categorical policy (:class:`rl2llm.policies.CategoricalMLP`),
    flat bounded Box actions a :class:`GaussianMLP`, whose samples reach the
    environment clipped to its bounds.

    Accepted: ``env_id`` a registered id with a flat Box observation space and
    Discrete or flat bounded Box actions;
    ``config`` a :class:`PPOConfig`; ``seed`` an integer >= 0; ``eval_every``
    an integer >= 0; ``eval_episodes`` a positive integer; ``threads``
    ``None`` or a positive integer; ``description`` ``None`` or a string;
    ``vectorization`` ``"sync"`` or ``"vector_entry_point"``.
    """
    if not isinstance(config, PPOConfig):
        raise TypeError(f"config must be a PPOConfig, got {check.describe(config)}")
    seed = check.as_int("seed", seed, 0, 2**31 - 1)
    eval_every = check.as_int("eval_every", eval_every, 0)
    eval_episodes = check.as_int("eval_episodes", eval_episodes, 1)
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a string or None, got {check.describe(description)}")
    if vectorization not in ("sync", "vector_entry_point"):
        raise ValueError(f"vectorization must be 'sync' or 'vector_entry_point', got {vectorization!r}")
    spaces = _checked_ppo_env(env_id)
    with torch_threads(threads), flush_denormals(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train_ppo(env_id, spaces, config, seed, eval_every, eval_episodes,
                          description or f"PPO on {env_id}, seed {seed}", vectorization)


def _networks(spaces: _Spaces, c: PPOConfig):
    obs_dim, n_actions = spaces.obs_dim, spaces.act_dim
    if not spaces.discrete:
        value = ValueMLP(obs_dim, c.hidden)
        if c.orthogonal_init:
            value = make_networks(obs_dim, 1, c.hidden)[1]
        return GaussianMLP(obs_dim, n_actions, c.hidden, orthogonal=c.orthogonal_init), value
    if c.orthogonal_init:
        return make_networks(obs_dim, n_actions, c.hidden)
    return CategoricalMLP(obs_dim, n_actions, c.hidden), ValueMLP(obs_dim, c.hidden)


def _train_ppo(env_id, spaces: _Spaces, c: PPOConfig, seed, eval_every, eval_episodes,
               description, vectorization="sync") -> PPOResult:
    start_time = time.perf_counter()
    N, T = c.n_envs, c.n_steps
    obs_dim = spaces.obs_dim
    policy, value = _networks(spaces, c)
    params = parameters(policy, value)
    # fused: one kernel for all the tensors (a sixth faster per step than foreach on CartPole's networks)
    optimizer = torch.optim.Adam(params, lr=c.learning_rate, eps=c.adam_eps, fused=True)
    act = (_numpy_actor if spaces.discrete else _gaussian_actor)(policy, np.random.default_rng(seed))
    shuffle_rng = np.random.default_rng([seed, 1])
    try:
        envs = gym.make_vec(env_id, num_envs=N, vectorization_mode=vectorization)
    except gym.error.Error as err:
        raise ValueError(f"vectorization={vectorization!r} is not available for {env_id!r} ({err})") from None

    segments = Segments(envs, seed, T, obs_dim,
                        *(((), np.int64, None) if spaces.discrete else
                          ((spaces.act_dim,), np.float32, lambda a: np.clip(a, spaces.low, spaces.high))))

    stats, eval_steps, eval_returns = [], [], []
    n_updates = -(-c.total_steps // (N * T))
    for update in progress(range(n_updates), description):
        segments.collect(act)
        env_steps = segments.env_steps
        frac = 1.0 - update / n_updates  # 1 on the first update, 1/n_updates on the last
        lr = c.learning_rate * (frac if c.anneal_lr else 1.0)
        clip = None if c.clip_range is None else c.clip_range * (frac if c.anneal_clip else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        stats.append((*_ppo_update(policy, value, params, optimizer, c, clip, shuffle_rng, *segments.batch),
                      lr, clip, env_steps))
        if eval_every and env_steps // eval_every > len(eval_steps):
            eval_steps.append(env_steps)
            eval_seed = 10_000 + 1_000 * seed + len(eval_steps)
            eval_returns.append(
                _evaluate(policy, env_id, eval_episodes, eval_seed, greedy=True) if spaces.discrete else
                _evaluate_gaussian(policy, env_id, eval_episodes, eval_seed, spaces.low, spaces.high))
    envs.close()
    columns = list(zip(*stats)) if stats else [()] * 11
    k1, k3, clipped, entropy, policy_loss, value_loss, epochs, lrs, clips, steps = (
        np.array(col) for col in columns[:10])
    return PPOResult(
        policy, value, c, seed, np.array(segments.returns, dtype=float), np.array(segments.end_steps, dtype=int),
        approx_kl_k1=k1.astype(float), approx_kl=k3.astype(float), clip_fractions=clipped.astype(float),
        entropies=entropy.astype(float), policy_losses=policy_loss.astype(float),
        value_losses=value_loss.astype(float), epochs=epochs.astype(int), learning_rates=lrs.astype(float),
        clip_ranges=np.array(clips, dtype=float), update_steps=steps.astype(int),
        eval_steps=np.array(eval_steps, dtype=int),
        eval_returns=np.array(eval_returns, dtype=float).reshape(len(eval_steps), eval_episodes),
        seconds=time.perf_counter() - start_time, env_steps=segments.env_steps,
    )


def _functional(net: nn.Sequential):
    """``net``'s forward pass as a plain function of its (live) parameters, without the module-call
    overhead, which for networks this small is a good part of a minibatch step."""
    layers = [(layer.weight, layer.bias) for layer in net if isinstance(layer, nn.Linear)]
    hidden, (w_out, b_out) = layers[:-1], layers[-1]
    linear = nn.functional.linear

    def forward(x):
        for w, b in hidden:
            x = torch.tanh(linear(x, w, b))
        return linear(x, w_out, b_out)

    return forward


def _clip_grad_norm(params, max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_``: rescale all the gradients together when their joint norm exceeds
    ``max_norm``, without its argument handling, which costs more than the arithmetic here."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)


def _log_prob_entropy(policy):
    """``f(obs, actions) -> (log pi(a | s) per row, mean entropy as a function)``.

    The only place the update looks inside the policy: a categorical one
    (a softmax over actions, over a vocabulary in Part IV) or a Gaussian one.
    """
    if isinstance(policy, GaussianMLP):
        mean_of, log_std = _functional(policy.mean_net), policy.log_std

        def gaussian(obs, actions):
            return (_gaussian_log_prob(mean_of(obs), log_std, actions),
                    lambda: _gaussian_entropy(log_std, len(obs)).mean())
        return gaussian
    logits_of = _functional(policy.net)

    def categorical(obs, actions):
        log_probs_all = torch.log_softmax(logits_of(obs), dim=-1)
        return (log_probs_all.gather(1, actions[:, None])[:, 0],
                lambda: -(log_probs_all.exp() * log_probs_all).sum(dim=-1).mean())
    return categorical


def _ppo_update(policy, value, params, optimizer, c: PPOConfig, clip, rng, obs_buf,
                actions_buf, rewards_buf, terminated_buf, truncated_buf, valid_buf):
    """``n_epochs`` passes of minibatch steps on the batch just collected.

    Returns ``(k1, k3, clip fraction, entropy, policy loss, value loss, epochs run)``.
    """
    T, N = rewards_buf.shape
    obs_all = torch.from_numpy(obs_buf.reshape((T + 1) * N, -1))
    with torch.no_grad():
        v_np = value(obs_all).view(T + 1, N).numpy().astype(np.float64)
    advantages = _gae(rewards_buf, v_np[:-1], v_np[1:], terminated_buf, truncated_buf,
                      c.gamma, c.gae_lambda)
    targets = advantages + v_np[:-1]         # the lambda-returns

    keep = valid_buf.ravel()                 # leave the reset steps out
    obs = obs_all[:T * N][torch.from_numpy(keep)]
    actions = torch.from_numpy(actions_buf.reshape(T * N, *actions_buf.shape[2:])[keep])

    def flat(x):                             # (T, N) floats -> kept rows, float32
        return torch.from_numpy(x.ravel()[keep].astype(np.float32))

    adv, targets_t, old_values = flat(advantages), flat(targets), flat(v_np[:-1])
    log_prob_entropy = _log_prob_entropy(policy)
    with torch.no_grad():                    # the collecting policy's: constants
        old_log_probs = log_prob_entropy(obs, actions)[0]

    value_net = _functional(value.net)
    n, size = len(actions), c.batch_size
    whole = size >= n                        # one minibatch: no shuffling, no indexing
    if whole and c.normalize_advantage and n > 1:   # normalise the batch once
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    clipped, entropies, policy_losses, value_losses = [], [], [], []
    epochs_run = 0
    stop = False
    for _ in range(c.n_epochs):
        epochs_run += 1
        order = None if whole else torch.from_numpy(rng.permutation(n))
        for start in range(0, n, size):
            if whole:
                mb_obs, mb_actions, old, mb_adv = obs, actions, old_log_probs, adv
                mb_targets, mb_old_values = targets_t, old_values
            else:
                idx = order[start:start + size]
                if len(idx) < 2:             # a lone leftover sample: no statistics
                    continue
                mb_obs, mb_actions, old = obs[idx], actions[idx], old_log_probs[idx]
                mb_adv, mb_targets = adv[idx], targets_t[idx]
                mb_old_values = old_values[idx]
            new, entropy_of = log_prob_entropy(mb_obs, mb_actions)
            if c.normalize_advantage and not whole and len(mb_adv) > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            if clip is None:                 # no clip: the plain surrogate
                policy_loss = -(torch.exp(new - old) * mb_adv).mean()
            else:
                policy_loss = -_clipped_surrogate(new, old, mb_adv, clip)
            v = value_net(mb_obs)[:, 0]
            if c.clip_range_vf is None:
                value_loss = nn.functional.mse_loss(v, mb_targets)
            else:                            # moves at most clip_range_vf from the old
                step = torch.clamp(v - mb_old_values, -c.clip_range_vf, c.clip_range_vf)
                v_clipped = mb_old_values + step
                value_loss = torch.max((v - mb_targets) ** 2,
                                       (v_clipped - mb_targets) ** 2).mean()
            loss = policy_loss + c.vf_coef * value_loss
            if c.ent_coef:
                entropy = entropy_of()
                loss = loss - c.ent_coef * entropy
            else:                            # measured, not trained on
                with torch.no_grad():
                    entropy = entropy_of()
            with torch.no_grad():
                log_ratio = new - old
                if clip is not None:
                    outside = (log_ratio.exp() - 1.0).abs() > clip
                    clipped.append(outside.float().mean())
                if c.target_kl is not None:  # k3 on this minibatch, before the step
                    k3 = (torch.expm1(log_ratio) - log_ratio).mean().item()
                    if k3 > 1.5 * c.target_kl:
                        stop = True
                        break
            for p in params:                 # optimizer.zero_grad(), without wrappers
                p.grad = None
            loss.backward()
            if c.max_grad_norm is not None:
                _clip_grad_norm(params, c.max_grad_norm)
            optimizer.step()
            entropies.append(entropy.detach())
            policy_losses.append(policy_loss.detach())
            value_losses.append(value_loss.detach())
        if stop:
            break
    # how far the update moved the policy: the whole batch, after the update
    kl = _approx_kl(log_prob_entropy(obs, actions)[0].detach(), old_log_probs)

    def mean(xs):
        return torch.stack(xs).mean().item() if xs else math.nan

    return (kl.k1, kl.k3, mean(clipped), mean(entropies), mean(policy_losses),
            mean(value_losses), epochs_run)

