"""Advantage actor-critic (A2C): a policy (the actor) and a value network (the critic), trained together.

Introduced in Lecture 4 (Actor-critic methods). The actor is a
:class:`rl2llm.policies.CategoricalMLP`, the critic a
:class:`rl2llm.policies.ValueMLP`; the advantages come from
:func:`rl2llm.advantages.gae`. Lecture 6 (PPO) keeps the same loop and
changes the update.

* :class:`A2CConfig` — the knobs, with Stable-Baselines3's A2C defaults
  (the RL Zoo's settings for CartPole): 8 environments, 5 steps each per
  update, RMSprop, separate 64-64 tanh networks initialised orthogonally.
* :func:`train_a2c` — the synchronous loop of Mnih et al. (2016): step ``N``
  copies of the environment ``n_steps`` times with the current policy,
  estimate advantages, take one gradient step on the policy loss, the value
  loss and the entropy bonus together, repeat.
* :func:`evaluate_policy` — the returns of a policy, many episodes in lockstep.

The environments are a gymnasium vector environment in its default
*next-step* automatic-reset mode: when a copy's episode ends at step ``t``,
step ``t`` returns the episode's real last observation, and the step after
it is a *reset step* (the action is ignored, the copy returns its first
observation, reward 0). Reset steps are not transitions of any episode; the
loop masks them out of the loss, and the advantage recursion stops at the
end of the episode before them.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one. The networks are small, so the
cost of a step is Python and PyTorch overhead, not arithmetic: the actor
acts in NumPy, and one CPU thread is as fast as two.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from . import _validate as check
from .advantages import _gae
from .dqn import _checked_env_id, torch_threads
from .policies import CategoricalMLP, ValueMLP
from .progress import progress
from .rollouts import play_episodes


@dataclass(frozen=True)
class A2CConfig:
    """The knobs of :func:`train_a2c`. The defaults are Stable-Baselines3's, which learn CartPole-v1.

    Every update uses ``n_envs * n_steps`` transitions. The loss is
    ``policy_loss + vf_coef * value_loss - ent_coef * entropy``; gradients are
    rescaled when their norm over all parameters exceeds ``max_grad_norm``;
    the optimiser is RMSprop (``rmsprop_alpha``, ``rmsprop_eps``).
    ``shared=True`` gives the actor and the critic one body (the hidden
    layers) and two heads. ``normalize_advantage`` standardises the
    advantages of each batch. Two switches exist for Lecture 4's gotchas:
    ``bootstrap_truncated=False`` treats a time limit like a real end (no
    bootstrapping: the classic bug); ``max_episode_steps`` changes the
    environment's time limit (``None`` keeps its own).
    """

    n_envs: int = 8
    n_steps: int = 5
    total_steps: int = 500_000
    learning_rate: float = 7e-4
    gamma: float = 0.99
    gae_lambda: float = 1.0
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float | None = 0.5
    hidden: tuple[int, ...] = (64, 64)
    shared: bool = False
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 1e-5
    normalize_advantage: bool = False
    bootstrap_truncated: bool = True
    max_episode_steps: int | None = None

    def __post_init__(self):
        for name in ("n_envs", "n_steps", "total_steps"):
            check.as_int(name, getattr(self, name), 1)
        check.as_real("learning_rate", self.learning_rate, 0.0, low_open=True)
        check.as_real("gamma", self.gamma, 0.0, 1.0)
        check.as_real("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check.as_real("ent_coef", self.ent_coef, 0.0)
        check.as_real("vf_coef", self.vf_coef, 0.0)
        if self.max_grad_norm is not None:
            check.as_real("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        if not isinstance(self.hidden, (tuple, list)) or len(self.hidden) == 0:
            raise TypeError(f"hidden must be a non-empty tuple of layer widths such as (64, 64), "
                            f"got {check.describe(self.hidden)}")
        object.__setattr__(self, "hidden", tuple(check.as_int("hidden", n, 1) for n in self.hidden))
        check.as_real("rmsprop_alpha", self.rmsprop_alpha, 0.0, 1.0, high_open=True)
        check.as_real("rmsprop_eps", self.rmsprop_eps, 0.0, low_open=True)
        for name in ("shared", "normalize_advantage", "bootstrap_truncated"):
            check.as_bool(name, getattr(self, name))
        if self.max_episode_steps is not None:
            check.as_int("max_episode_steps", self.max_episode_steps, 1)


@dataclass
class A2CResult:
    """What :func:`train_a2c` returns."""

    policy: CategoricalMLP
    value: ValueMLP
    config: A2CConfig
    seed: int
    #: The return of every finished training episode, and the environment step at which it ended
    #: (steps counted over all copies, as ``env_steps``).
    episode_returns: np.ndarray
    episode_end_steps: np.ndarray
    #: Per update: the value loss (mean squared error against the targets) and the policy's mean entropy.
    value_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    entropies: np.ndarray = field(default_factory=lambda: np.zeros(0))
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


def _checked_env(env_id) -> tuple[int, int]:
    """``(obs_dim, n_actions)`` of ``env_id``: a registered id with a flat Box observation and Discrete actions."""
    env = _checked_env_id(env_id, why="a categorical policy gives each numbered action a probability")
    env.close()
    return env.observation_space.shape[0], int(env.action_space.n)


def make_networks(obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (64, 64),
                  shared: bool = False) -> tuple[CategoricalMLP, ValueMLP]:
    """The actor and the critic, initialised as Stable-Baselines3 does.

    Orthogonal weights (gain ``sqrt(2)`` in the hidden layers, ``0.01`` in the
    policy's last layer, so every action starts equally likely, and ``1`` in
    the value's), zero biases. With ``shared=True`` the critic's hidden layers
    *are* the actor's (the same ``nn.Linear`` objects): one body, two heads.
    Draws from PyTorch's global generator. ``obs_dim``, ``n_actions``
    positive integers; ``hidden`` a non-empty tuple of positive integers;
    ``shared`` True or False.
    """
    shared = check.as_bool("shared", shared)
    policy = CategoricalMLP(obs_dim, n_actions, hidden)
    value = ValueMLP(obs_dim, hidden)
    if not policy.hidden:
        raise TypeError("hidden must be a non-empty tuple of layer widths such as (64, 64)")
    for net, last_gain in ((policy.net, 0.01), (value.net, 1.0)):
        linears = [layer for layer in net if isinstance(layer, nn.Linear)]
        for i, layer in enumerate(linears):
            nn.init.orthogonal_(layer.weight, gain=last_gain if i == len(linears) - 1 else math.sqrt(2))
            nn.init.zeros_(layer.bias)
    if shared:
        for i, layer in enumerate(policy.net[:-1]):
            value.net[i] = layer
    return policy, value


def parameters(policy: nn.Module, value: nn.Module) -> list[nn.Parameter]:
    """The parameters of the actor and the critic, each once (shared layers are not counted twice)."""
    seen, out = set(), []
    for p in (*policy.parameters(), *value.parameters()):
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def train_a2c(env_id: str, config: A2CConfig = A2CConfig(), seed: int = 0, eval_every: int = 0,
              eval_episodes: int = 10, threads: int | None = 1, description: str | None = None) -> A2CResult:
    """Train an actor and a critic with A2C on the gymnasium environment ``env_id``; see :class:`A2CConfig`.

    The environments are ``gym.make_vec(env_id, config.n_envs, "sync")``,
    reset with ``seed`` (copy ``i`` gets ``seed + i``); the networks are
    drawn from PyTorch's generator seeded with ``seed`` (and restored to its
    state before the call afterwards), the actions from a NumPy generator
    seeded with ``seed``, so a seed gives the same run. With
    ``eval_every > 0`` the greedy policy plays ``eval_episodes`` episodes each
    time another ``eval_every`` environment steps have passed. Progress goes
    to the build log.

    Accepted: ``env_id`` a registered id with a flat Box observation space
    and Discrete actions; ``config`` an :class:`A2CConfig`; ``seed`` an
    integer >= 0; ``eval_every`` an integer >= 0; ``eval_episodes`` a
    positive integer; ``threads`` ``None`` or a positive integer;
    ``description`` ``None`` or a string.
    """
    if not isinstance(config, A2CConfig):
        raise TypeError(f"config must be an A2CConfig, got {check.describe(config)}")
    seed = check.as_int("seed", seed, 0, 2**31 - 1)
    eval_every = check.as_int("eval_every", eval_every, 0)
    eval_episodes = check.as_int("eval_episodes", eval_episodes, 1)
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a string or None, got {check.describe(description)}")
    obs_dim, n_actions = _checked_env(env_id)
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train_a2c(env_id, obs_dim, n_actions, config, seed, eval_every, eval_episodes,
                          description or f"A2C on {env_id}, seed {seed}")


def _train_a2c(env_id, obs_dim, n_actions, c: A2CConfig, seed, eval_every,
               eval_episodes, description) -> A2CResult:
    start_time = time.perf_counter()
    N, T = c.n_envs, c.n_steps
    policy, value = make_networks(obs_dim, n_actions, c.hidden, c.shared)
    params = parameters(policy, value)
    optimizer = torch.optim.RMSprop(  # foreach: one call for all the tensors
        params, lr=c.learning_rate, alpha=c.rmsprop_alpha, eps=c.rmsprop_eps,
        foreach=True)
    act = _numpy_actor(policy, np.random.default_rng(seed))
    extra = {} if c.max_episode_steps is None else {
        "max_episode_steps": c.max_episode_steps}
    envs = gym.make_vec(env_id, num_envs=N, vectorization_mode="sync", **extra)

    segments = Segments(envs, seed, T, obs_dim)

    value_losses, entropies = [], []
    eval_steps, eval_returns = [], []
    n_updates = -(-c.total_steps // (N * T))
    for _ in progress(range(n_updates), description):
        segments.collect(act)
        env_steps = segments.env_steps
        value_loss, entropy = _a2c_update(policy, value, params, optimizer, c,
                                          *segments.batch)
        value_losses.append(value_loss)
        entropies.append(entropy)
        if eval_every and env_steps // eval_every > len(eval_steps):
            eval_steps.append(env_steps)
            eval_seed = 10_000 + 1_000 * seed + len(eval_steps)
            eval_returns.append(_evaluate(policy, env_id, eval_episodes,
                                          eval_seed, greedy=True))
    envs.close()
    return A2CResult(
        policy, value, c, seed, np.array(segments.returns, dtype=float),
        np.array(segments.end_steps, dtype=int), np.array(value_losses),
        np.array(entropies), np.array(eval_steps, dtype=int),
        np.array(eval_returns, dtype=float).reshape(len(eval_steps), eval_episodes),
        time.perf_counter() - start_time, segments.env_steps,
    )


class Segments:
    """Fixed-length segments of ``N`` copies of an environment stepped side by side: what A2C and PPO learn from.

    ``envs`` is a gymnasium vector environment in next-step autoreset mode: the step after an
    episode ends only resets that copy, pays 0 and is no transition, so it is marked invalid
    (``valid`` False) for the losses. Each :meth:`collect` fills ``T`` steps per copy:
    ``obs`` ``(T + 1, N, obs_dim)`` (row ``T`` is the observation after the last step),
    ``actions``, ``rewards``, ``terminated``, ``truncated`` and ``valid``, all ``(T, N, ...)``;
    finished episodes' returns and the step counts at their ends accumulate in ``returns`` and
    ``end_steps``. ``to_env`` maps the policy's actions to what the environment accepts (PPO's
    Gaussian actions are clipped to the bounds; the buffer keeps the unclipped sample).
    """

    def __init__(self, envs, seed: int, T: int, obs_dim: int, action_shape: tuple = (),
                 action_dtype=np.int64, to_env=None):
        N = envs.num_envs
        self.envs, self.T, self.to_env = envs, T, to_env
        self.obs = np.zeros((T + 1, N, obs_dim), np.float32)
        self.actions = np.zeros((T, N, *action_shape), action_dtype)
        self.rewards = np.zeros((T, N))
        self.terminated = np.zeros((T, N), bool)
        self.truncated = np.zeros((T, N), bool)
        self.valid = np.ones((T, N), bool)   # False on reset steps
        self.returns, self.end_steps = [], []
        self.env_steps = 0
        self._obs, _ = envs.reset(seed=seed)
        self._resetting = np.zeros(N, bool)   # copies whose next step is a reset step
        self._running_return = np.zeros(N)

    @property
    def batch(self) -> tuple:
        return self.obs, self.actions, self.rewards, self.terminated, self.truncated, self.valid

    def collect(self, act) -> None:
        """Step every copy ``T`` times with ``act(observations) -> actions`` and fill the buffers."""
        N = len(self._running_return)
        for t in range(self.T):
            self.obs[t] = self._obs
            actions = act(self._obs)
            self._obs, rewards, terminated, truncated, _ = self.envs.step(
                actions if self.to_env is None else self.to_env(actions))
            self.env_steps += N
            self.actions[t], self.rewards[t] = actions, rewards
            self.terminated[t], self.truncated[t] = terminated, truncated
            self.valid[t] = ~self._resetting
            self._running_return += rewards  # a reset step pays 0
            self._resetting = terminated | truncated
            for i in np.flatnonzero(self._resetting):
                self.returns.append(self._running_return[i])
                self.end_steps.append(self.env_steps)
                self._running_return[i] = 0.0
        self.obs[self.T] = self._obs


def _numpy_actor(policy: CategoricalMLP, rng: np.random.Generator):
    """``act(obs) -> actions`` sampled from ``policy``, in NumPy, without checks (one call per step).

    :meth:`CategoricalMLP.act` does the same arithmetic, but it checks its
    argument and looks the weights up on every call. Here the NumPy views of
    the weights are taken once: they share memory with the parameters, which
    the optimiser updates in place, so they always show the current weights.
    """
    layers = [(layer.weight.detach().numpy().T, layer.bias.detach().numpy())
              for layer in policy.net if isinstance(layer, nn.Linear)]
    hidden, (w_out, b_out) = layers[:-1], layers[-1]
    n_actions = policy.n_actions

    def act(obs: np.ndarray) -> np.ndarray:
        x = obs
        for w, b in hidden:
            x = np.tanh(x @ w + b)
        logits = x @ w_out + b_out
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = probs.cumsum(axis=1)
        u = rng.random((len(x), 1)) * cdf[:, -1:]   # inverse-CDF sampling, unnormalised
        return np.minimum((cdf < u).sum(axis=1), n_actions - 1)

    return act


def _a2c_update(policy, value, params, optimizer, c: A2CConfig, obs_buf,
                actions_buf, rewards_buf, terminated_buf, truncated_buf,
                valid_buf) -> tuple[float, float]:
    """One gradient step on the batch just collected.

    Returns the value loss and the policy's mean entropy.
    """
    T, N = rewards_buf.shape
    obs = torch.from_numpy(obs_buf.reshape((T + 1) * N, -1))
    v_all = value(obs).view(T + 1, N)        # V(s_0) .. V(s_T), one forward pass
    v_np = v_all.detach().numpy().astype(np.float64)
    # Lecture 4's gotcha, the bug: a time limit treated like a real end
    ends = terminated_buf if c.bootstrap_truncated else terminated_buf | truncated_buf
    advantages = _gae(rewards_buf, v_np[:-1], v_np[1:], ends, truncated_buf,
                      c.gamma, c.gae_lambda)
    targets = advantages + v_np[:-1]         # the lambda-returns

    obs_now, v = obs[:T * N], v_all[:-1].reshape(-1)
    actions = torch.from_numpy(actions_buf.ravel())
    adv = torch.from_numpy(advantages.ravel().astype(np.float32))
    targets_t = torch.from_numpy(targets.ravel().astype(np.float32))
    mask = valid_buf.ravel()
    if not mask.all():                        # leave the reset steps out
        keep = torch.from_numpy(mask)
        obs_now, v, actions = obs_now[keep], v[keep], actions[keep]
        adv, targets_t = adv[keep], targets_t[keep]
    if c.normalize_advantage and len(adv) > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_probs_all = torch.log_softmax(policy(obs_now), dim=-1)
    log_probs = log_probs_all.gather(1, actions[:, None])[:, 0]
    entropy = -(log_probs_all.exp() * log_probs_all).sum(dim=-1).mean()
    policy_loss = -(adv * log_probs).mean()
    value_loss = nn.functional.mse_loss(v, targets_t)
    loss = policy_loss + c.vf_coef * value_loss - c.ent_coef * entropy
    optimizer.zero_grad()
    loss.backward()
    if c.max_grad_norm is not None:
        nn.utils.clip_grad_norm_(params, c.max_grad_norm, foreach=True)
    optimizer.step()
    return value_loss.item(), entropy.item()


def evaluate_policy(policy: CategoricalMLP, env_id: str, n_episodes: int = 100, seed: int = 0,
                    greedy: bool = True) -> np.ndarray:
    """Play ``n_episodes`` episodes with ``policy``; return each episode's return.

    ``greedy=True`` takes the action with the largest logit (how a trained
    policy is usually judged); ``greedy=False`` samples from the policy, with
    a generator seeded by ``seed``. The episodes run in lockstep, one batched
    forward pass per step; episode ``i`` starts from ``env.reset(seed=seed + i)``.

    Accepted: ``policy`` a :class:`rl2llm.policies.CategoricalMLP` that fits
    the environment; ``env_id`` as :func:`train_a2c`; ``n_episodes`` a
    positive integer; ``seed`` an integer >= 0; ``greedy`` True or False.
    """
    if not isinstance(policy, CategoricalMLP):
        raise TypeError(f"policy must be a CategoricalMLP, got {check.describe(policy)}")
    obs_dim, n_actions = _checked_env(env_id)
    if (obs_dim, n_actions) != (policy.obs_dim, policy.n_actions):
        raise ValueError(f"policy takes {policy.obs_dim} numbers and chooses among {policy.n_actions} actions; "
                         f"{env_id} has observations of length {obs_dim} and {n_actions} actions")
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    seed = check.as_int("seed", seed, 0)
    greedy = check.as_bool("greedy", greedy)
    return _evaluate(policy, env_id, n_episodes, seed, greedy)


def _evaluate(policy, env_id, n_episodes, seed, greedy) -> np.ndarray:
    rng = np.random.default_rng(seed)

    def act(obs):
        with torch.no_grad():
            logits = policy(torch.from_numpy(obs)).numpy()
        if greedy:
            return logits.argmax(axis=1)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        u = rng.random((len(obs), 1))
        return np.minimum((np.cumsum(z / z.sum(axis=1, keepdims=True), axis=1) < u).sum(axis=1),
                          policy.n_actions - 1)

    return play_episodes(act, env_id, n_episodes, seed)
