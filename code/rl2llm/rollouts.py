"""Rollouts: the steps an agent took, in the one shape every learning chapter uses.

Introduced in Lecture 2 (Policy gradients from scratch), where whole episodes
feed REINFORCE; Lectures 4 to 6 (actor-critic, TRPO, PPO) collect the same
:class:`Rollout`.

A rollout is seven arrays with the same leading shape: ``(T,)`` for one
stream of ``T`` steps, or ``(T, N)`` for ``N`` environments stepped side by
side. Step ``t`` holds the observation the agent saw, the action it took, the
reward it got, whether the episode ended there (``terminated``: the task
itself ended it, e.g. the pole fell; ``truncated``: a time limit cut it off,
the task was not over), the log-probability of the action under the policy
that acted, and the observation that followed (the episode's last
observation when it ended there, not the first one of the next episode).
Episodes follow each other along the time axis; their ends are the steps
with ``terminated | truncated``.

* :func:`collect_episodes` runs a policy in a gymnasium environment (one
  environment, or a vector of them) for whole episodes.
* :func:`play_episodes` plays one evaluation episode on each of many copies of
  an environment in lockstep and returns their returns (the evaluations of
  Lectures 3 to 6 and of the benchmarks).
* :func:`reward_to_go` sums the (discounted) reward still to come from each
  step to the end of its episode.
* :func:`sample_episodes` samples whole episodes of a known
  :class:`rl2llm.mdp.FiniteMDP` under a tabular policy, all at once in NumPy:
  fast enough for the hundred thousand episodes it takes to measure the
  variance of a gradient estimate.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import scipy.sparse as sp

from . import _validate as check
from .mdp import FiniteMDP

_FIELDS = ("observations", "actions", "rewards", "terminated", "truncated", "log_probs", "next_observations")


@dataclass
class Rollout:
    """Steps in time order (see the module docstring); every array has the leading shape of ``rewards``."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    log_probs: np.ndarray
    next_observations: np.ndarray

    def __post_init__(self):
        self.rewards = check.as_finite_array("rewards", self.rewards)
        lead = self.rewards.shape
        if len(lead) not in (1, 2):
            raise ValueError(f"rewards must have shape (T,) or (T, N), got {lead}")
        for name in ("terminated", "truncated"):
            flags = np.asarray(getattr(self, name))
            if flags.dtype != bool:
                raise TypeError(f"{name} must be an array of bools, got dtype {flags.dtype}")
            if flags.shape != lead:
                raise ValueError(f"{name} must have the shape of rewards, {lead}, got {flags.shape}")
            setattr(self, name, flags)
        self.log_probs = check.as_finite_array("log_probs", self.log_probs, lead, "of rewards")
        if (self.log_probs > 1e-9).any():
            raise ValueError("log_probs must be <= 0: they are logarithms of probabilities")
        self.actions = check.numeric_array("actions", self.actions)
        for name in ("observations", "next_observations"):
            array = check.numeric_array(name, getattr(self, name))
            setattr(self, name, array)
        for name in ("actions", "observations", "next_observations"):
            shape = getattr(self, name).shape
            if shape[:len(lead)] != lead:
                raise ValueError(f"{name} must start with the shape of rewards, {lead}, got {shape}")
        if self.observations.shape != self.next_observations.shape:
            raise ValueError(f"next_observations must have the shape of observations, {self.observations.shape}, "
                             f"got {self.next_observations.shape}")

    @property
    def n_steps(self) -> int:
        """``T``, the length of the time axis."""
        return self.rewards.shape[0]

    @property
    def dones(self) -> np.ndarray:
        """Where an episode ended, for whatever reason: ``terminated | truncated``."""
        return self.terminated | self.truncated

    @property
    def n_episodes(self) -> int:
        """How many episodes end in this rollout."""
        return int(self.dones.sum())

    def episode_returns(self, gamma: float = 1.0) -> np.ndarray:
        """The (discounted) return of every episode that ends in the rollout, in order
        (column after column when there are several environments). ``gamma`` in ``[0, 1]``."""
        gamma = check.as_real("gamma", gamma, 0.0, 1.0)
        return _per_episode(self.rewards, self.dones, lambda r: float(np.sum(r * gamma ** np.arange(len(r)))))

    def episode_lengths(self) -> np.ndarray:
        """The number of steps of every episode that ends in the rollout, in order."""
        return _per_episode(self.rewards, self.dones, len).astype(int)


def _per_episode(rewards: np.ndarray, dones: np.ndarray, summary) -> np.ndarray:
    """``summary(rewards of one episode)`` for each complete episode, column by column."""
    columns = [(rewards, dones)] if rewards.ndim == 1 else [(rewards[:, i], dones[:, i])
                                                           for i in range(rewards.shape[1])]
    out = []
    for r, d in columns:
        ends = np.flatnonzero(d)
        starts = np.concatenate([[0], ends[:-1] + 1])
        out.extend(summary(r[a:b + 1]) for a, b in zip(starts, ends))
    return np.array(out, dtype=float)


def reward_to_go(rewards, dones, gamma: float = 1.0) -> np.ndarray:
    """``G_t = r_t + gamma * G_{t+1}``, restarted at the end of every episode: the
    (discounted) reward still to come from each step on, nothing from before it.

    ``rewards``: ``(T,)`` or ``(T, N)`` finite numbers, time along axis 0;
    ``dones``: bools of the same shape, True at the last step of each episode;
    ``gamma`` in ``[0, 1]``. A stream that stops mid-episode is summed up to
    its last step (nothing is added for what would have followed).
    """
    rewards = check.as_finite_array("rewards", rewards)
    if rewards.ndim not in (1, 2):
        raise ValueError(f"rewards must have shape (T,) or (T, N), got {rewards.shape}")
    dones = _checked_dones(dones, rewards.shape)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    out = np.empty_like(rewards)
    if rewards.ndim == 1:  # a loop over plain floats: faster than over NumPy scalars
        running = 0.0
        r, d = rewards.tolist(), dones.tolist()
        for t in range(len(r) - 1, -1, -1):
            running = r[t] + (0.0 if d[t] else gamma * running)
            out[t] = running
        return out
    running = np.zeros(rewards.shape[1])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running * ~dones[t]
        out[t] = running
    return out


def _checked_dones(dones, shape) -> np.ndarray:
    dones = np.asarray(dones)
    if dones.dtype != bool:
        raise TypeError(f"dones must be an array of bools (True where an episode ends), got {check.describe(dones)}")
    if dones.shape != shape:
        raise ValueError(f"dones must have the shape of rewards, {shape}, got {dones.shape}")
    return dones


def episode_index(dones) -> np.ndarray:
    """For a ``(T,)`` stream of steps: the number of the episode each step belongs to (0, 1, ...).

    ``dones``: ``(T,)`` bools marking the last step of each episode.
    """
    dones = np.asarray(dones)
    if dones.dtype != bool or dones.ndim != 1:
        raise ValueError(f"dones must be a (T,) array of bools, got {check.describe(dones)}")
    return np.concatenate([[0], np.cumsum(dones[:-1])]).astype(int) if len(dones) else np.zeros(0, int)


def steps_since_start(dones) -> np.ndarray:
    """For a ``(T,)`` stream of steps: each step's position in its episode (0 at the first step)."""
    episode = episode_index(dones)
    if not len(episode):
        return episode
    first = np.concatenate([[0], np.flatnonzero(np.diff(episode)) + 1])
    return np.arange(len(episode)) - first[episode]


# --------------------------------------------------------------------------- gymnasium


def collect_episodes(env, policy, n_episodes: int, seed: int | None = None,
                     max_steps: int = 10_000_000) -> Rollout:
    """Run ``policy`` in ``env`` for ``n_episodes`` episodes, as one stream.

    ``env`` is a gymnasium environment or a gymnasium vector environment. The
    ``N`` copies of a vector environment run side by side, and each contributes
    ``n_episodes / N`` episodes, rounded, decided before any episode is played:
    keeping the first episodes to *finish* would favour short ones and bias
    every average. Both of gymnasium's automatic-reset modes, next-step and
    same-step, are handled; the steps a copy spends resetting are not recorded.
    ``policy`` needs ``act(observations) -> (actions, log_probs)`` on a batch.

    ``seed`` (``None`` or an integer >= 0) seeds the environment's first reset;
    the policy's own randomness is seeded separately
    (:func:`rl2llm.seeding.seed_everything`). ``max_steps`` bounds the number of
    environment steps: an environment with no time limit and a policy that
    never ends an episode raise a ``RuntimeError`` instead of running forever.
    """
    vector = isinstance(env, gym.vector.VectorEnv)
    if not vector and not isinstance(env, gym.Env):
        raise TypeError(f"env must be a gymnasium Env or VectorEnv, "
                        f"got {check.describe(env)}")
    check_policy("policy", policy)
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    if seed is not None:
        seed = check.as_int("seed", seed, 0)
    max_steps = check.as_int("max_steps", max_steps, 1)
    n_envs = env.num_envs if vector else 1
    mode = _autoreset_mode(env) if vector else "same-step"
    quota = np.array([n_episodes // n_envs + (i < n_episodes % n_envs)
                      for i in range(n_envs)])

    obs, _ = env.reset(seed=seed)
    obs = np.asarray(obs) if vector else np.asarray(obs)[None]
    finished = np.zeros(n_envs, dtype=int)
    resetting = np.zeros(n_envs, dtype=bool)  # next-step mode: a reset step
    steps: dict[str, list] = {name: [] for name in (*_FIELDS, "keep")}
    n_steps = 0
    while (finished < quota).any():
        if n_steps >= max_steps:
            raise RuntimeError(
                f"collect_episodes: max_steps={max_steps} environment steps, "
                f"and only {finished.sum()} of {n_episodes} episodes have "
                "ended; does the environment have a time limit?")
        actions, log_probs = _act(policy, obs, n_envs)
        if vector:
            next_obs, rewards, terminated, truncated, info = env.step(actions)
            next_obs = np.asarray(next_obs)
            final_obs = next_obs.copy()
            done = np.asarray(terminated) | np.asarray(truncated)
            if mode == "same-step" and done.any():  # next_obs starts anew
                for i in np.flatnonzero(done):
                    final_obs[i] = info["final_obs"][i]
        else:
            o, r, term, trunc, _ = env.step(actions[0].item())
            next_obs = final_obs = np.asarray(o)[None]
            rewards = np.array([r], dtype=float)
            terminated, truncated = np.array([term]), np.array([trunc])
            if term or trunc:
                next_obs = np.asarray(env.reset()[0])[None]
        keep = ~resetting & (finished < quota)
        values = (obs, actions, rewards, terminated, truncated, log_probs,
                  final_obs, keep)
        for name, value in zip((*_FIELDS, "keep"), values):
            steps[name].append(np.asarray(value))
        ended = (np.asarray(terminated) | np.asarray(truncated)) & ~resetting
        finished += ended & keep
        resetting = ended if mode == "next-step" else np.zeros(n_envs, bool)
        obs = next_obs
        n_steps += 1

    stacked = {name: np.stack(v) for name, v in steps.items()}  # (T, N, ...)
    order = [(t, i) for i in range(n_envs)   # copy by copy, each in time order
             for t in np.flatnonzero(stacked["keep"][:, i])]
    rows, cols = (np.array(x, dtype=int) for x in zip(*order))
    data = {name: stacked[name][rows, cols] for name in _FIELDS}
    data["rewards"] = data["rewards"].astype(float)
    data["log_probs"] = data["log_probs"].astype(float)
    data["terminated"] = data["terminated"].astype(bool)
    data["truncated"] = data["truncated"].astype(bool)
    return Rollout(**data)


def play_episodes(act, env_id: str, n_episodes: int, seed: int = 0) -> np.ndarray:
    """Each episode's return when ``act`` plays one episode on each of ``n_episodes`` copies of ``env_id``.

    The copies run in lockstep: copy ``i`` is reset with ``seed + i``, and at every step
    ``act(observations)`` receives the float32 observations of the copies still running,
    shape ``(n_live, obs_dim)``, and returns one action per row (whole numbers for discrete
    actions, rows of numbers for continuous ones). Asking the network once per step for all
    copies is what makes a 100-episode evaluation cheap.
    """
    if not callable(act):
        raise TypeError(f"act must be a function from observations to actions, got {check.describe(act)}")
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be the id of a gymnasium environment, got {check.describe(env_id)}")
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    seed = check.as_int("seed", seed, 0)
    envs = [gym.make(env_id) for _ in range(n_episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    returns = np.zeros(n_episodes)
    running = np.ones(n_episodes, dtype=bool)
    while running.any():
        live = np.flatnonzero(running)
        actions = np.asarray(act(obs[live]))
        if len(actions) != len(live):
            raise ValueError(f"act returned {len(actions)} actions for {len(live)} observations")
        for i, action in zip(live, actions):
            o, reward, terminated, truncated, _ = envs[i].step(action.item() if action.ndim == 0 else action)
            returns[i] += reward
            obs[i] = o
            running[i] = not (terminated or truncated)
    for env in envs:
        env.close()
    return returns


def check_policy(name: str, policy) -> None:
    """Refuse an object that cannot act: a policy needs ``act(observations) -> (actions, log_probs)``."""
    if not callable(getattr(policy, "act", None)):
        raise TypeError(f"{name} must have a method act(observations) -> (actions, log_probs), such as a "
                        f"TabularSoftmaxPolicy or a CategoricalMLP; got {check.describe(policy)}")


def _autoreset_mode(env) -> str:
    mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    if mode == gym.vector.AutoresetMode.NEXT_STEP:
        return "next-step"
    if mode == gym.vector.AutoresetMode.SAME_STEP:
        return "same-step"
    raise ValueError(f"env resets its copies with {mode}; collect_episodes needs automatic resets "
                     "(gymnasium's next-step or same-step mode)")


def _act(policy, obs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The policy's actions and log-probabilities for a batch of ``n`` observations, checked."""
    out = policy.act(obs)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"policy.act must return a pair (actions, log_probs), got {check.describe(out)}")
    actions, log_probs = np.asarray(out[0]), np.asarray(out[1], dtype=float)
    if actions.shape[:1] != (n,) or log_probs.shape != (n,):
        raise ValueError(f"policy.act must return {n} actions and {n} log-probabilities for {n} observations, "
                         f"got shapes {actions.shape} and {log_probs.shape}")
    return actions, log_probs


# --------------------------------------------------------------------------- a known model


def sample_episodes(mdp: FiniteMDP, policy, n_episodes: int, start=None, max_steps: int = 1000,
                    seed: int = 0) -> Rollout:
    """Sample ``n_episodes`` whole episodes of ``mdp`` under a stochastic ``policy``, as one ``(T,)`` stream.

    All episodes advance together, one vectorised NumPy step at a time. The
    reward of a step is what a player would be paid: where the MDP says which
    part of its reward is paid on landing (``mdp.entry_reward``, as a grid
    world's goal and pits), the landing actually sampled decides that part;
    otherwise the step pays the model's expected reward ``R[s, a]``.

    ``policy``: ``(S, A)`` action probabilities (rows summing to 1) or a
    :class:`rl2llm.policies.TabularSoftmaxPolicy`; ``start``: ``None`` (the
    MDP's own start state), a state, or an ``(S,)`` distribution over live
    states; ``max_steps``: an episode still running after that many steps is
    cut off and marked ``truncated`` (an integer >= 1); ``seed``: an integer >= 0.
    The log-probabilities recorded are those of ``policy``.
    """
    if not isinstance(mdp, FiniteMDP):
        raise TypeError(f"mdp must be a FiniteMDP, got {check.describe(mdp)}")
    S, A = mdp.n_states, mdp.n_actions
    probs = policy.probs() if hasattr(policy, "probs") and hasattr(policy, "theta") else policy
    probs = check.as_policy("policy", probs, S, A)
    if probs.ndim == 1:
        raise ValueError("policy must be (S, A) action probabilities (a stochastic policy), got (S,) actions")
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    mu = start_distribution(mdp, start)
    max_steps = check.as_int("max_steps", max_steps, 1)
    rng = np.random.default_rng(check.as_int("seed", seed, 0))

    P = mdp.P.toarray().reshape(S, A, S) if sp.issparse(mdp.P) else mdp.P
    cum_P, cum_pi = P.cumsum(axis=2), probs.cumsum(axis=1)
    state = np.minimum(np.searchsorted(mu.cumsum(), rng.random(n_episodes), side="right"), S - 1)
    episode = np.arange(n_episodes)  # the episodes still running, and where each one is
    record = {name: [] for name in ("episode", "t", "s", "a", "s2", "term", "trunc")}
    for t in range(max_steps):
        n = len(episode)
        a = np.minimum((cum_pi[state] < rng.random(n)[:, None]).sum(axis=1), A - 1)
        nxt = np.minimum((cum_P[state, a] < rng.random(n)[:, None]).sum(axis=1), S - 1)
        term = mdp.terminal[nxt]
        trunc = ~term & (t == max_steps - 1)
        for name, value in zip(record, (episode, np.full(n, t), state, a, nxt, term, trunc)):
            record[name].append(value)
        episode, state = episode[~term], nxt[~term]
        if not len(episode):
            break
    data = {name: np.concatenate(values) for name, values in record.items()}
    order = np.lexsort((data["t"], data["episode"]))  # episode by episode, each in time order
    s, a, s2, term, trunc = (data[k][order] for k in ("s", "a", "s2", "term", "trunc"))
    rewards = mdp.R[s, a]
    if mdp.entry_reward is not None:  # pay the landing that happened, not its average
        expected_entry = np.asarray(mdp.P @ mdp.entry_reward).reshape(S, A) if sp.issparse(mdp.P) \
            else mdp.P @ mdp.entry_reward
        rewards = rewards - expected_entry[s, a] + mdp.entry_reward[s2]
    return Rollout(observations=s, actions=a, rewards=rewards, terminated=term, truncated=trunc,
                   log_probs=np.log(probs[s, a]), next_observations=s2)


def start_distribution(mdp: FiniteMDP, start=None) -> np.ndarray:
    """``start`` as an ``(S,)`` distribution over live states: ``None`` (the MDP's start state), a state
    index, or a distribution (which must put no probability on terminal states)."""
    if not isinstance(mdp, FiniteMDP):
        raise TypeError(f"mdp must be a FiniteMDP, got {check.describe(mdp)}")
    S = mdp.n_states
    if start is None:
        if mdp.start is None:
            raise ValueError("start is None and the MDP has no start state of its own; pass a state or an "
                             "(S,) distribution")
        start = mdp.start
    if np.ndim(start) == 0:
        s = check.as_int("start", start, 0, S - 1)
        mu = np.zeros(S)
        mu[s] = 1.0
    else:
        mu = check.as_finite_array("start", start, (S,), "(S,)")
        check.check_distributions("start", mu[None])
    if (mu[mdp.terminal] > 0).any():
        s = int(np.flatnonzero(mdp.terminal & (mu > 0))[0])
        raise ValueError(f"start puts probability on state {s}, which is terminal: an episode starting there "
                         "has no steps")
    return mu
