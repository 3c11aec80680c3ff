"""Many copies of an environment at once: how fast each way of stepping them goes.

Introduced in Lecture 6 (PPO), in "RL past one process". PPO, like A2C
(Lecture 4), learns from ``N`` copies of an environment stepped side by side
(:class:`rl2llm.actor_critic.Segments`). Gymnasium offers three ways to step
them, all behind the same ``gym.make_vec`` call:

* ``"sync"`` — one process steps the copies one after the other
  (``SyncVectorEnv``): no parallelism, no overhead beyond a Python loop;
* ``"async"`` — one worker process per copy (``AsyncVectorEnv``): the copies
  step at the same time, on as many cores as there are, but every step
  crosses process boundaries (actions sent through pipes, observations
  through shared memory);
* ``"vector_entry_point"`` — the environment's own vectorised code, where it
  has one (CartPole does: all copies in a few NumPy operations).

:func:`time_vector_env` measures one of them: environment steps per second,
with random actions or with a policy's forward pass choosing them, and
optionally with every copy waiting ``delay`` seconds per step, a stand-in for
a slow simulator (a physics engine, a game server, a robot).

:func:`run_in_processes` is the other way past one process: independent
training runs (seeds, settings) side by side in worker processes, one per
core.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, NamedTuple

import gymnasium as gym
import numpy as np

from . import _validate as check

__all__ = ["MODES", "VectorTiming", "run_in_processes", "time_vector_env"]

#: The ``vectorization_mode`` values of ``gym.make_vec``.
MODES = ("sync", "async", "vector_entry_point")


class VectorTiming(NamedTuple):
    """What :func:`time_vector_env` measured."""

    mode: str
    n_envs: int
    #: environment steps taken in the timed stretch: ``n_envs`` per call of ``step``
    env_steps: int
    #: seconds of the timed stretch (choosing actions and stepping), wall clock
    seconds: float
    #: seconds to make and reset the vector environment (for ``"async"``: starting its processes)
    startup_seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.env_steps / self.seconds if self.seconds > 0 else float("nan")


class _Delayed(gym.Wrapper):
    """Every step and every reset waits ``delay`` seconds: a simulator slower than CartPole's few lines.

    Resets wait too, because a vector environment resets a finished copy in
    place of a step; a copy that only slowed its steps would run faster
    whenever an episode ended.
    """

    def __init__(self, env: gym.Env, delay: float):
        super().__init__(env)
        self.delay = delay

    def step(self, action):
        time.sleep(self.delay)
        return self.env.step(action)

    def reset(self, **kwargs):
        time.sleep(self.delay)
        return self.env.reset(**kwargs)


class _Delay:
    """A picklable ``wrapper(env)`` for ``gym.make_vec`` (the async workers receive it in another process)."""

    def __init__(self, delay: float):
        self.delay = delay

    def __call__(self, env: gym.Env) -> gym.Env:
        return _Delayed(env, self.delay)


def _random_actions(space: gym.Space, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """``act(obs)``: uniform random actions for a batch, drawn with NumPy (cheaper than ``space.sample()``)."""
    if isinstance(space, gym.spaces.MultiDiscrete):
        return lambda obs: rng.integers(space.start, space.start + space.nvec)
    if isinstance(space, gym.spaces.Box) and space.is_bounded():
        return lambda obs: rng.uniform(space.low, space.high).astype(space.dtype)
    raise ValueError(f"env_id must have Discrete or bounded Box actions for random play, got {space}")


def time_vector_env(env_id: str, n_envs: int, mode: str = "sync", n_steps: int = 100,
                    act: Callable[[np.ndarray], np.ndarray] | None = None, delay: float = 0.0,
                    seed: int = 0) -> VectorTiming:
    """Step ``gym.make_vec(env_id, n_envs, mode)`` ``n_steps`` times and time it.

    Each call of ``step`` advances every copy once, so ``n_envs * n_steps``
    environment steps are timed, after five untimed warm-up calls. The actions
    come from ``act(observations) -> actions`` (a batch in, a batch out: a
    policy's forward pass) or, with ``act=None``, uniformly at random.
    ``delay > 0`` makes every copy wait that many seconds per step (in
    ``"sync"`` and ``"async"`` modes; CartPole's own vectorised code has no
    per-copy step to slow down). Making and resetting the environment is
    timed apart (``startup_seconds``): for ``"async"`` it starts a process per
    copy. Copies whose episode ends restart on their own (gymnasium's
    automatic reset), so the timed stretch includes resets, as training does.

    Accepted: ``env_id`` a registered id; ``n_envs`` and ``n_steps`` positive
    integers; ``mode`` one of :data:`MODES`; ``act`` ``None`` or a callable;
    ``delay`` a number ``>= 0`` (0 for ``"vector_entry_point"``); ``seed`` an
    integer ``>= 0``.
    """
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be the id of a gymnasium environment such as 'CartPole-v1', "
                        f"got {check.describe(env_id)}")
    if env_id not in gym.registry:
        raise ValueError(f"env_id {env_id!r} is not a registered gymnasium environment")
    n_envs = check.as_int("n_envs", n_envs, 1)
    n_steps = check.as_int("n_steps", n_steps, 1)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if act is not None and not callable(act):
        raise TypeError(f"act must be None or a function from observations to actions, got {check.describe(act)}")
    delay = check.as_real("delay", delay, 0.0)
    if delay > 0 and mode == "vector_entry_point":
        raise ValueError("delay must be 0 for mode 'vector_entry_point' (its copies have no step of their own)")
    seed = check.as_int("seed", seed, 0)

    start = time.perf_counter()
    kwargs = {"wrappers": [_Delay(delay)]} if delay > 0 else {}
    try:
        envs = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode=mode, **kwargs)
    except gym.error.Error as err:
        raise ValueError(f"mode {mode!r} is not available for {env_id!r} ({err})") from None
    try:
        obs, _ = envs.reset(seed=seed)
        startup = time.perf_counter() - start
        if act is None:
            act = _random_actions(envs.action_space, np.random.default_rng(seed))
        for _ in range(5):                       # warm-up: first calls pay for lazy set-up
            obs = envs.step(act(obs))[0]
        start = time.perf_counter()
        for _ in range(n_steps):
            obs = envs.step(act(obs))[0]
        seconds = time.perf_counter() - start
    finally:
        envs.close()
    return VectorTiming(mode, n_envs, n_envs * n_steps, seconds, startup)


def run_in_processes(fn: Callable, jobs: list[dict], processes: int = 2) -> list:
    """``[fn(**job) for job in jobs]``, computed by ``processes`` worker processes side by side.

    The results come back in the order of ``jobs``. The workers share
    nothing with this process: they are forked from a fresh server process
    (``forkserver``) that imported ``fn``'s module once, so ``fn`` must be
    importable by name (a function of a module, such as
    :func:`rl2llm.ppo.train_ppo`) and its arguments and result picklable. A run seeded by its arguments gives the
    same result in a worker as here. ``processes=1`` runs the jobs here, one
    after the other.

    Accepted: ``fn`` a callable; ``jobs`` a list of dicts of keyword
    arguments; ``processes`` a positive integer.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {check.describe(fn)}")
    if not isinstance(jobs, (list, tuple)) or not all(isinstance(job, dict) for job in jobs):
        raise TypeError(f"jobs must be a list of dicts of keyword arguments, got {check.describe(jobs)}")
    processes = check.as_int("processes", processes, 1)
    if processes == 1 or len(jobs) <= 1:
        return [fn(**job) for job in jobs]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([fn.__module__])   # imported once, by the server the workers fork from
    with ProcessPoolExecutor(max_workers=min(processes, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(fn, **job) for job in jobs]
        return [future.result() for future in futures]
