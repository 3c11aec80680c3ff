"""Advantage estimates: how much better an action turned out than the critic expected.

Introduced in Lecture 4 (Actor-critic methods); Lectures 5 and 6 (TRPO, PPO)
use :func:`gae` unchanged.

Every function takes a stream of steps in time order, ``(T,)`` for one
environment or ``(T, N)`` for ``N`` environments side by side (time first),
with the critic's values on both sides of each step:

* ``values[t] = V(s_t)``, the value of the state the step started in;
* ``next_values[t] = V(s_{t+1})``, the value of the state it led to: for a
  step that ended an episode, the episode's real last observation (the
  ``next_observations`` of a :class:`rl2llm.rollouts.Rollout`), never the
  first observation of the next episode.

Episode ends come in two kinds, and they must be told apart:

* ``terminated[t]``: the task ended (the pole fell, the goal was reached).
  Nothing follows, so nothing is bootstrapped: ``V(s_{t+1})`` counts as 0.
* ``truncated[t]``: a time limit cut the episode off. The task was not over:
  ``s_{t+1}`` still has a future worth ``V(s_{t+1})``, so the estimate
  bootstraps from it.

Either way, the next step belongs to another episode, and no estimate may
reach across. The last step of the stream bootstraps through ``next_values``.

* :func:`td_errors` — the one-step errors ``delta_t``.
* :func:`gae` — generalised advantage estimation (Schulman et al., 2016), an
  exponentially weighted mix of n-step advantages: ``lam = 0`` is the
  one-step TD advantage, ``lam = 1`` the Monte-Carlo return minus ``V``.
* :func:`n_step_returns` — ``n`` rewards, then the critic's value.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

import numpy as np

from . import _validate as check


def _checked_stream(rewards, values, next_values, terminated, truncated):
    """The five arrays of a stream, checked: ``(T,)`` or ``(T, N)`` finite floats and bools of one shape."""
    rewards = check.as_finite_array("rewards", rewards)
    if rewards.ndim not in (1, 2) or rewards.shape[0] == 0:
        raise ValueError(f"rewards must have shape (T,) or (T, N) with T >= 1 (time first), got {rewards.shape}")
    shape = rewards.shape
    values = check.as_finite_array("values", values, shape, "of rewards")
    next_values = check.as_finite_array("next_values", next_values, shape, "of rewards")
    flags = []
    for name, value in (("terminated", terminated), ("truncated", truncated)):
        array = np.asarray(value)
        if array.dtype != bool:
            raise TypeError(f"{name} must be an array of bools (True where an episode ended), "
                            f"got {check.describe(value)}")
        if array.shape != shape:
            raise ValueError(f"{name} must have the shape of rewards, {shape}, got {array.shape}")
        flags.append(array)
    return rewards, values, next_values, flags[0], flags[1]


def td_errors(rewards, values, next_values, terminated, gamma: float = 0.99) -> np.ndarray:
    """``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)``, one per step.

    The one-step advantage: the reward plus what the critic thinks comes
    next, minus what it expected. Only a *terminated* step drops the value
    of what follows; a truncated one keeps it (see the module docstring).
    ``gamma`` in ``[0, 1]``; the arrays as :func:`gae` takes them.
    """
    rewards, values, next_values, terminated, _ = _checked_stream(
        rewards, values, next_values, terminated, np.zeros(np.shape(terminated), bool))
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    return rewards + gamma * np.where(terminated, 0.0, next_values) - values


def gae(rewards, values, next_values, terminated, truncated, gamma: float = 0.99,
        lam: float = 0.95) -> np.ndarray:
    """Generalised advantage estimates, ``A_t = delta_t + gamma * lam * A_{t+1}`` within an episode.

    ``delta_t = r_t + gamma * (1 - terminated_t) * next_values[t] - values[t]``
    (:func:`td_errors`), and the recursion stops at every episode end,
    terminated or truncated: ``A_t = delta_t`` there. The last step of the
    stream has no ``A_{T}`` to add, so it bootstraps through
    ``next_values`` alone. ``lam = 0`` gives the one-step TD advantage,
    ``lam = 1`` the (discounted) return to the end of the episode minus
    ``values``, bootstrapped with ``V`` where a time limit or the stream
    cut the episode short. The value targets are ``advantages + values``.

    ``rewards``, ``values``, ``next_values``: finite, shape ``(T,)`` or
    ``(T, N)``; ``terminated``, ``truncated``: bools of that shape;
    ``gamma`` and ``lam`` in ``[0, 1]``. Returns float64 advantages of that shape.
    """
    rewards, values, next_values, terminated, truncated = _checked_stream(
        rewards, values, next_values, terminated, truncated)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    lam = check.as_real("lam", lam, 0.0, 1.0)
    return _gae(rewards, values, next_values, terminated, truncated, gamma, lam)


def _gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """:func:`gae` without the checks, for the training loops."""
    # only a real end drops the value of what follows; a time limit does not
    deltas = rewards + gamma * np.where(terminated, 0.0, next_values) - values
    # at every episode end, of either kind, the recursion stops
    carry = gamma * lam * ~(terminated | truncated)
    if deltas.ndim == 1:  # plain floats: several times faster than NumPy scalars
        d, c, running = deltas.tolist(), carry.tolist(), 0.0
        out_list = [0.0] * len(d)
        for t in range(len(d) - 1, -1, -1):
            running = d[t] + c[t] * running
            out_list[t] = running
        return np.array(out_list, dtype=np.float64)
    out = np.empty(deltas.shape, dtype=np.float64)
    running = np.zeros(deltas.shape[1:])
    for t in range(len(deltas) - 1, -1, -1):   # all N columns at once
        running = deltas[t] + carry[t] * running
        out[t] = running
    return out


def n_step_returns(rewards, values, next_values, terminated, truncated, n: int,
                   gamma: float = 0.99) -> np.ndarray:
    """``G_t^(n)``: up to ``n`` rewards from step ``t`` on, then the critic's value of the state reached.

    ``G_t^(n) = r_t + gamma r_{t+1} + ... + gamma^(k-1) r_{t+k-1} + gamma^k V(s_{t+k})``
    with ``k = n``, or fewer steps when the episode or the stream ends first:
    a terminated episode adds no value after its last reward; a truncated
    one, or the end of the stream, adds ``gamma^k * next_values`` of its last
    step. ``n = 1`` is the TD target; ``n`` at least the episode length is the
    Monte-Carlo return (bootstrapped at a truncation). ``n - values`` is the
    n-step advantage. Arrays as :func:`gae`; ``n`` a positive integer;
    ``gamma`` in ``[0, 1]``.
    """
    rewards, values, next_values, terminated, truncated = _checked_stream(
        rewards, values, next_values, terminated, truncated)
    n = check.as_int("n", n, 1)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    T = len(rewards)
    out = np.zeros(rewards.shape)
    # For every start t at once: walk k = 0 .. n-1 steps ahead while the episode lasts.
    alive = np.ones(rewards.shape, dtype=bool)      # the episode started at t is still running at t + k
    discount = np.ones(rewards.shape)
    for k in range(n):
        idx = np.arange(T) + k
        inside = idx < T
        here = alive & inside.reshape((T,) + (1,) * (rewards.ndim - 1))
        j = np.minimum(idx, T - 1)
        out += np.where(here, discount * rewards[j], 0.0)
        ended = terminated[j] | truncated[j]
        last = here & (ended | (k == n - 1) | (idx == T - 1).reshape(here.shape[:1] + (1,) * (rewards.ndim - 1)))
        bootstrap = ~terminated[j]
        out += np.where(last & bootstrap, discount * gamma * next_values[j], 0.0)
        alive = here & ~last
        discount = discount * gamma
    return out
