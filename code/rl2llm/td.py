"""Learning values from experience: Monte Carlo, TD(0), SARSA, expected SARSA, Q-learning, Double Q-learning.

Used by Lecture 3 (Value functions and Q-learning). Lecture 1 computed values
from a known model; here an agent only *plays*, and estimates the same values
from what happens to it. Everything is tabular: one number per state, or per
state and action.

* :func:`mc_prediction` and :func:`td0_prediction` estimate the value of a
  given policy (first-visit or every-visit Monte Carlo; TD(0)).
* :func:`td_control` learns to act: SARSA, expected SARSA, Q-learning or
  Double Q-learning, with epsilon-greedy exploration.
* :func:`epsilon_greedy` and :func:`epsilon_greedy_policy` are the
  exploration rule, one action or the whole table of probabilities.
* :func:`linear_schedule` decays epsilon (also used by :mod:`rl2llm.dqn`).
* Small worlds with known answers: :func:`random_walk` (a chain whose exact
  values Lecture 1's solvers compute) and :func:`maximisation_bias_env`
  (the example that fools Q-learning).

The learners play any gymnasium environment with Discrete observation and
action spaces numbered from 0 (FrozenLake, CliffWalking, Taxi, and the two
above). An episode ends when the environment says ``terminated`` (then the
last state has no future) or ``truncated`` (a time limit: the last state
still has a future, so the learners bootstrap from it).

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from . import _validate as check
from .progress import progress

#: The control methods of :func:`td_control`.
METHODS = ("sarsa", "expected_sarsa", "q_learning", "double_q")


# --------------------------------------------------------------------------- exploration


def linear_schedule(start: float, end: float, n: int, fraction: float = 1.0) -> np.ndarray:
    """``n`` values falling linearly from ``start`` to ``end`` over the first ``fraction`` of them, then flat.

    Accepted: finite ``start`` and ``end``; ``n`` a positive integer;
    ``fraction`` in ``(0, 1]``.
    """
    start, end = check.as_real("start", start), check.as_real("end", end)
    n = check.as_int("n", n, 1)
    fraction = check.as_real("fraction", fraction, 0.0, 1.0, low_open=True)
    ramp = max(1, int(round(fraction * n)))
    t = np.minimum(np.arange(n) / ramp, 1.0)
    return start + (end - start) * t


def epsilon_greedy(q, epsilon: float, rng: np.random.Generator, allowed=None) -> int:
    """One action: with probability ``epsilon`` a uniformly random one, otherwise a greedy one.

    Ties between greedy actions are broken at random. That matters more than
    it looks: a table starts at all zeros, and "the first of the best" would
    always pick action 0, so an agent with a small epsilon would barely
    explore at all.

    Accepted: ``q`` a 1-D array of action values (no NaN); ``epsilon`` in
    ``[0, 1]``; ``rng`` a NumPy Generator; ``allowed`` ``None`` (every action)
    or the list of actions allowed here.
    """
    q = check.numeric_array("q", q)
    if q.ndim != 1 or q.size == 0:
        raise ValueError(f"q must be a non-empty 1-D array of action values, got shape {q.shape}")
    check.no_nan("q", q)
    epsilon = check.as_real("epsilon", epsilon, 0.0, 1.0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {check.describe(rng)}")
    if allowed is None:
        allowed = np.arange(q.size)
    else:
        allowed = check.as_actions("allowed", allowed, q.size)
        if allowed.ndim != 1 or allowed.size == 0:
            raise ValueError(f"allowed must be a non-empty list of actions, got shape {allowed.shape}")
    return _epsilon_greedy(q.astype(float).tolist(), epsilon, rng, allowed.tolist())


def _epsilon_greedy(q: list[float], epsilon: float, rng: np.random.Generator,
                    allowed: list[int]) -> int:
    """:func:`epsilon_greedy` without the checks, for the learning loops.

    It works on Python lists: for a handful of actions they are several times
    faster than NumPy, whose every call costs a microsecond or two.
    """
    if epsilon > 0.0 and rng.random() < epsilon:
        return allowed[int(rng.integers(len(allowed)))]
    best = max(q[a] for a in allowed)
    ties = [a for a in allowed if q[a] == best]
    return ties[0] if len(ties) == 1 else ties[int(rng.integers(len(ties)))]


def epsilon_greedy_policy(Q, epsilon: float, action_mask=None) -> np.ndarray:
    """The epsilon-greedy policy of ``Q`` as an ``(S, A)`` table of action probabilities.

    Each allowed action gets ``epsilon / n_allowed``; the greedy actions share
    the remaining ``1 - epsilon`` equally (ties split evenly, as
    :func:`epsilon_greedy` breaks them at random). The result can be
    evaluated exactly with :func:`rl2llm.dp.evaluate_policy_exact`.

    Accepted: ``Q`` an ``(S, A)`` array without NaN; ``epsilon`` in ``[0, 1]``;
    ``action_mask`` ``None`` or an ``(S, A)`` boolean array with at least one
    allowed action per state.
    """
    Q = check.numeric_array("Q", Q)
    if Q.ndim != 2 or 0 in Q.shape:
        raise ValueError(f"Q must have shape (S, A) with S, A >= 1, got {Q.shape}")
    check.no_nan("Q", Q)
    epsilon = check.as_real("epsilon", epsilon, 0.0, 1.0)
    mask = _checked_mask(action_mask, *Q.shape)
    return _epsilon_greedy_policy(Q.astype(float), epsilon, mask)


def _epsilon_greedy_policy(Q: np.ndarray, epsilon: float, mask: np.ndarray) -> np.ndarray:
    masked = np.where(mask, Q, -np.inf)
    greedy = mask & (masked == masked.max(axis=1, keepdims=True))
    n_allowed = mask.sum(axis=1, keepdims=True)
    return epsilon * mask / n_allowed + (1.0 - epsilon) * greedy / greedy.sum(axis=1, keepdims=True)


def _checked_mask(action_mask, S: int, A: int) -> np.ndarray:
    if action_mask is None:
        return np.ones((S, A), dtype=bool)
    mask = np.asarray(action_mask)
    if mask.dtype != bool:
        raise TypeError(f"action_mask must be a boolean array (True where an action is allowed), "
                        f"got {check.describe(action_mask)}")
    if mask.shape != (S, A):
        raise ValueError(f"action_mask must have shape (S, A) = {(S, A)}, got {mask.shape}")
    if not mask.any(axis=1).all():
        raise ValueError(f"action_mask allows no action in state {int(np.argmin(mask.any(axis=1)))}; "
                         "every state needs at least one")
    return mask


# --------------------------------------------------------------------------- results


@dataclass
class PredictionResult:
    """What :func:`mc_prediction` and :func:`td0_prediction` return."""

    V: np.ndarray
    #: How many times each state's estimate was updated.
    visits: np.ndarray
    #: ``V`` after every ``record_every`` episodes (row ``k`` after ``(k + 1) * record_every``), when asked for.
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


@dataclass
class ControlResult:
    """What :func:`td_control` returns."""

    #: The learned action values (Double Q-learning: the mean of its two tables).
    Q: np.ndarray
    method: str
    #: The undiscounted return and the length of every training episode (exploration included).
    returns: np.ndarray
    lengths: np.ndarray
    #: The first action of every episode.
    first_actions: np.ndarray
    #: Double Q-learning's two tables (``None`` for the other methods).
    Q_pair: tuple[np.ndarray, np.ndarray] | None = None
    #: ``Q`` after every ``record_every`` episodes (row ``k`` after ``(k + 1) * record_every``), when asked for.
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))


# --------------------------------------------------------------------------- prediction


def mc_prediction(env, policy, n_episodes: int, gamma: float = 1.0, first_visit: bool = True,
                  alpha: float | None = None, seed: int = 0, V0=None,
                  record_every: int | None = None) -> PredictionResult:
    """Monte-Carlo estimate of the value of ``policy``: average the returns that followed each state.

    After each episode, walk it backwards accumulating the return
    ``G = r + gamma * G``; each visit to a state (only the first, with
    ``first_visit``) moves its estimate towards ``G``: by ``1 / n`` for the
    ``n``-th return seen there (``alpha=None``: the plain average) or by a
    constant ``alpha``. No bootstrapping: an estimate is updated only once its
    episode is over.

    Accepted: ``env`` a gymnasium environment with Discrete spaces; ``policy``
    ``(S,)`` actions or ``(S, A)`` probabilities; ``n_episodes`` a positive
    integer; ``gamma`` in ``[0, 1]``; ``first_visit`` True or False; ``alpha``
    ``None`` or in ``(0, 1]``; ``seed`` an integer >= 0; ``V0`` ``None``
    (zeros) or finite initial values of shape ``(S,)`` (with ``alpha=None``
    the first return replaces them); ``record_every`` ``None`` or a positive integer.
    """
    S, A = check.discrete_sizes("env", env)
    policy = _checked_policy(policy, S, A)
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    first_visit = check.as_bool("first_visit", first_visit)
    alpha = None if alpha is None else check.as_real("alpha", alpha, 0.0, 1.0, low_open=True)
    seed = check.as_int("seed", seed, 0)
    V = np.zeros(S) if V0 is None else check.as_finite_array("V0", V0, (S,), "(S,)").copy()
    record_every = _checked_record_every(record_every)

    rng = np.random.default_rng(seed)
    visits, history = np.zeros(S, dtype=int), []
    env.reset(seed=seed)
    for episode in range(n_episodes):
        states, rewards = _play_episode(env, policy, rng)
        G = 0.0
        for t in range(len(states) - 1, -1, -1):
            G = rewards[t] + gamma * G
            s = states[t]
            if first_visit and s in states[:t]:
                continue  # a later visit: the first one, earlier, takes this return
            visits[s] += 1
            V[s] += (1.0 / visits[s] if alpha is None else alpha) * (G - V[s])
        if record_every and (episode + 1) % record_every == 0:
            history.append(V.copy())
    return PredictionResult(V, visits, np.array(history).reshape(len(history), S))


def td0_prediction(env, policy, n_episodes: int, gamma: float = 1.0, alpha: float = 0.1, seed: int = 0,
                   V0=None, record_every: int | None = None) -> PredictionResult:
    """TD(0) estimate of the value of ``policy``: after every step, move ``V(s)`` towards ``r + gamma V(s')``.

    The target uses the current estimate of the next state (bootstrapping),
    so learning happens during the episode. A terminal next state is worth 0;
    a time limit (``truncated``) is not an end, so its state keeps its value.

    Accepted: as :func:`mc_prediction`, with ``alpha`` in ``(0, 1]`` and
    ``V0`` ``None`` (zeros) or finite initial values of shape ``(S,)``.
    """
    S, A = check.discrete_sizes("env", env)
    policy = _checked_policy(policy, S, A)
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    alpha = check.as_real("alpha", alpha, 0.0, 1.0, low_open=True)
    seed = check.as_int("seed", seed, 0)
    V = np.zeros(S) if V0 is None else check.as_finite_array("V0", V0, (S,), "(S,)").copy()
    record_every = _checked_record_every(record_every)

    rng = np.random.default_rng(seed)
    visits, history = np.zeros(S, dtype=int), []
    env.reset(seed=seed)
    for episode in range(n_episodes):
        s, _ = env.reset()
        done = False
        while not done:
            a = _sample_action(policy, s, rng)
            s_next, r, terminated, truncated, _ = env.step(a)
            target = r + (0.0 if terminated else gamma * V[s_next])
            V[s] += alpha * (target - V[s])
            visits[s] += 1
            s, done = s_next, terminated or truncated
        if record_every and (episode + 1) % record_every == 0:
            history.append(V.copy())
    return PredictionResult(V, visits, np.array(history).reshape(len(history), S))


def _play_episode(env, policy: np.ndarray, rng) -> tuple[list[int], list[float]]:
    """The states visited and the rewards received in one episode of ``policy``."""
    s, _ = env.reset()
    states, rewards, done = [], [], False
    while not done:
        a = _sample_action(policy, s, rng)
        s_next, r, terminated, truncated, _ = env.step(a)
        states.append(int(s))
        rewards.append(float(r))
        s, done = s_next, terminated or truncated
    return states, rewards


def _sample_action(policy: np.ndarray, s: int, rng) -> int:
    if policy.ndim == 1:
        return int(policy[s])
    return int(rng.choice(policy.shape[1], p=policy[s]))


def _checked_policy(policy, S: int, A: int) -> np.ndarray:
    return check.as_policy("policy", policy, S, A)


def _checked_record_every(record_every) -> int | None:
    return None if record_every is None else check.as_int("record_every", record_every, 1)


# --------------------------------------------------------------------------- control


def td_control(env, method: str, n_episodes: int, gamma: float = 0.99, alpha: float = 0.1, epsilon=0.1,
               seed: int = 0, Q0=None, action_mask=None, record_every: int | None = None,
               description: str | None = None, quiet: bool = False) -> ControlResult:
    """Learn action values by playing ``env`` epsilon-greedily, with one of four TD targets.

    After every step ``(s, a, r, s')`` the estimate ``Q(s, a)`` moves a step
    ``alpha`` towards a target ``r + gamma * (value of s')``, where the value
    of ``s'`` is, by ``method``:

    * ``"sarsa"``: ``Q(s', a')`` for the action ``a'`` the agent takes next (on-policy);
    * ``"expected_sarsa"``: the average of ``Q(s', .)`` under the epsilon-greedy policy;
    * ``"q_learning"``: ``max Q(s', .)``, the greedy policy's value (off-policy);
    * ``"double_q"``: two tables, one choosing the best action and the other valuing it,
      which removes Q-learning's maximisation bias (van Hasselt, 2010).

    A terminal ``s'`` is worth 0. ``alpha`` and ``epsilon`` are numbers, or one
    number per episode (see :func:`linear_schedule`): Q-learning's guarantee
    of convergence asks for step sizes that shrink. Progress goes to the build log.

    Accepted: ``env`` a gymnasium environment with Discrete spaces; ``method``
    one of :data:`METHODS`; ``n_episodes`` a positive integer; ``gamma`` in
    ``[0, 1]``; ``alpha`` in ``(0, 1]`` and ``epsilon`` in ``[0, 1]``, each a
    number or an array of one per episode; ``seed`` an integer >= 0; ``Q0`` ``None``
    (zeros) or finite ``(S, A)`` initial values; ``action_mask`` ``None`` or an
    ``(S, A)`` boolean array (the agent never takes a masked action);
    ``record_every`` ``None`` or a positive integer; ``description`` ``None``
    or a string (what the progress lines say); ``quiet`` True or False (no
    progress lines, for many short runs).
    """
    S, A = check.discrete_sizes("env", env)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    alphas = _checked_schedule("alpha", alpha, n_episodes, low_open=True)
    epsilons = _checked_schedule("epsilon", epsilon, n_episodes)
    seed = check.as_int("seed", seed, 0)
    Q = np.zeros((S, A)) if Q0 is None else check.as_finite_array("Q0", Q0, (S, A), "(S, A)").copy()
    mask = _checked_mask(action_mask, S, A)
    record_every = _checked_record_every(record_every)
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a string or None, got {check.describe(description)}")
    quiet = check.as_bool("quiet", quiet)
    episodes = range(n_episodes)
    if not quiet:
        label = description or f"{method} on {getattr(env.spec, 'id', type(env).__name__)}, seed {seed}"
        episodes = progress(episodes, label)
    return _td_control(env, method, episodes, gamma, alphas, epsilons, seed, Q, mask, record_every)


def _td_control(env, method, episodes, gamma, alphas, epsilons, seed, Q, mask, record_every):
    rng = np.random.default_rng(seed)
    Q[~mask] = -np.inf  # a masked action is never the greedy one, nor the max
    tables = [Q, Q.copy()] if method == "double_q" else [Q]
    allowed = [np.flatnonzero(row).tolist() for row in mask]
    n_episodes = len(alphas)
    returns, lengths, first_actions = np.zeros(n_episodes), np.zeros(n_episodes, int), np.zeros(n_episodes, int)
    history = []
    env.reset(seed=seed)
    for episode in episodes:
        alpha, epsilon = alphas[episode], epsilons[episode]
        s, _ = env.reset()
        a = _epsilon_greedy(_acting_row(tables, s), epsilon, rng, allowed[s])
        first_actions[episode] = a
        done, total, t = False, 0.0, 0
        while not done:
            s_next, r, terminated, truncated, _ = env.step(a)
            total, t = total + r, t + 1
            done = terminated or truncated
            # the next action: SARSA's target needs it (after a time limit it is never taken)
            a_next = 0 if terminated else _epsilon_greedy(_acting_row(tables, s_next), epsilon, rng,
                                                          allowed[s_next])
            # Double Q-learning updates one of its two tables, chosen by a coin flip
            update, other = tables[0], tables[-1]
            if len(tables) == 2 and rng.random() >= 0.5:
                update, other = tables[1], tables[0]
            next_value = 0.0  # nothing follows the end of an episode
            if not terminated:
                next_value = _next_value(method, update, other, s_next, a_next,
                                         epsilon, allowed[s_next])
            update[s, a] += alpha * (r + gamma * next_value - update[s, a])
            s, a = s_next, a_next
        returns[episode], lengths[episode] = total, t
        if record_every and (episode + 1) % record_every == 0:
            history.append(_learned(tables, mask))
    S, A = Q.shape
    return ControlResult(_learned(tables, mask), method, returns, lengths, first_actions,
                         (tables[0], tables[1]) if len(tables) == 2 else None,
                         np.array(history).reshape(len(history), S, A))


def _learned(tables: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """The learned values: the table, or the mean of Double Q-learning's two; -inf where masked."""
    return np.where(mask, sum(tables) / len(tables), -np.inf)


def _acting_row(tables: list[np.ndarray], s: int) -> list[float]:
    """The action values the agent acts on in ``s``: Double Q-learning acts on the sum of its two tables."""
    return tables[0][s].tolist() if len(tables) == 1 else (tables[0][s] + tables[1][s]).tolist()


def _next_value(method: str, Q: np.ndarray, other: np.ndarray, s_next: int,
                a_next: int, epsilon: float, allowed_next: list[int]) -> float:
    """The value of the next state in the target ``r + gamma * value``.

    The only part that differs between the methods. ``Q`` is the table being
    updated; ``other`` is Double Q-learning's second table.
    """
    row = Q[s_next].tolist()
    if method == "sarsa":           # the action the agent takes next (on-policy)
        return row[a_next]
    best = max(row[a] for a in allowed_next)
    if method == "q_learning":      # the best action, whatever comes next (off-policy)
        return best
    if method == "expected_sarsa":  # the average under the epsilon-greedy policy
        greedy = [a for a in allowed_next if row[a] == best]
        explore, exploit = epsilon / len(allowed_next), (1.0 - epsilon) / len(greedy)
        return sum((explore + exploit * (row[a] == best)) * row[a]
                   for a in allowed_next)
    # double_q: this table picks the best action, the other one says what it is worth
    choice = next(a for a in allowed_next if row[a] == best)
    return float(other[s_next, choice])


def _checked_schedule(name: str, value, n_episodes: int, low_open: bool = False) -> np.ndarray:
    """A number in [0, 1] (``(0, 1]`` with ``low_open``), or one such number per episode, as an array."""
    interval = "(0, 1]" if low_open else "[0, 1]"
    if isinstance(value, (numbers.Real, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return np.full(n_episodes, check.as_real(name, value, 0.0, 1.0, low_open=low_open))
    if isinstance(value, (bool, np.bool_, str)) or value is None:
        raise TypeError(f"{name} must be a number in {interval} or an array of one per episode, "
                        f"got {check.describe(value)}")
    array = check.as_finite_array(name, value)
    if array.shape != (n_episodes,):
        raise ValueError(f"{name} must be a number or one number per episode, shape ({n_episodes},); "
                         f"got shape {array.shape}")
    bad = (array <= 0 if low_open else array < 0) | (array > 1)
    if bad.any():
        raise ValueError(f"{name} must lie in {interval}, got {array[bad][0]}")
    return array


# --------------------------------------------------------------------------- small worlds


class _TableEnv(gym.Env):
    """A gymnasium environment from a toy-text transition table ``P[s][a] = [(prob, next, reward, terminated)]``.

    Gymnasium's own FrozenLake and CliffWalking are built the same way, so
    :func:`rl2llm.mdp.from_gymnasium` reads these worlds exactly.
    """

    metadata = {"render_modes": []}

    def __init__(self, table, start: int, n_states: int, n_actions: int):
        self.P = table
        # cumulative probabilities of each (s, a)'s outcomes: one uniform draw picks the outcome
        self._cumulative = {(s, a): np.cumsum([o[0] for o in outcomes])
                            for s, row in table.items() for a, outcomes in row.items()}
        self.observation_space = gym.spaces.Discrete(n_states)
        self.action_space = gym.spaces.Discrete(n_actions)
        self.initial_state_distrib = np.eye(n_states)[start]
        self._start, self.s = start, start

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = self._start
        return self.s, {}

    def step(self, action):
        action = int(action)
        outcomes = self.P[self.s][action]
        i = 0
        if len(outcomes) > 1:
            i = min(int(np.searchsorted(self._cumulative[self.s, action], self.np_random.random(), side="right")),
                    len(outcomes) - 1)
        _, self.s, reward, terminated = outcomes[i]
        return self.s, float(reward), bool(terminated), False, {}


def random_walk(n_states: int = 5) -> gym.Env:
    """The random walk of Sutton (1988): a chain of ``n_states`` cells between two exits.

    States are numbered ``0 .. n_states + 1``; 0 and ``n_states + 1`` are the
    exits (terminal), and the walk starts in the middle cell. There is one
    action, "step", which moves left or right with probability 1/2 each.
    Leaving on the right pays 1, everything else 0, so with ``gamma = 1`` the
    value of cell ``i`` is the probability of leaving on the right,
    ``i / (n_states + 1)``. :func:`rl2llm.mdp.from_gymnasium` reads the exact model.

    Accepted: ``n_states`` an odd integer >= 1 (so there is a middle cell).
    """
    n = check.as_int("n_states", n_states, 1)
    if n % 2 == 0:
        raise ValueError(f"n_states must be odd, so that the walk starts in the middle cell; got {n}")
    exit_right = n + 1
    table = {0: {0: [(1.0, 0, 0.0, True)]}, exit_right: {0: [(1.0, exit_right, 0.0, True)]}}
    for s in range(1, n + 1):
        table[s] = {0: [(0.5, s - 1, 0.0, s - 1 == 0), (0.5, s + 1, 1.0 if s + 1 == exit_right else 0.0,
                                                        s + 1 == exit_right)]}
    env = _TableEnv(table, start=(n + 1) // 2, n_states=n + 2, n_actions=1)
    env.spec = gym.envs.registration.EnvSpec(id=f"RandomWalk{n}", entry_point="rl2llm.td:random_walk")
    return env


class _MaximisationBiasEnv(gym.Env):
    metadata = {"render_modes": []}
    LEFT, RIGHT = 0, 1

    def __init__(self, n_actions: int, mean: float, std: float):
        self.observation_space = gym.spaces.Discrete(3)  # A = 0, B = 1, the end = 2
        self.action_space = gym.spaces.Discrete(n_actions)
        self.action_mask = np.zeros((3, n_actions), dtype=bool)
        self.action_mask[0, :2] = True      # in A: left (to B) or right (the end)
        self.action_mask[1, :] = True       # in B: every action ends the episode with a noisy reward
        self.action_mask[2, 0] = True       # the end: nothing to choose
        self.mean, self.std, self.s = mean, std, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return self.s, {}

    def step(self, action):
        action = int(action)
        if not self.action_mask[self.s, action]:
            raise ValueError(f"action {action} is not allowed in state {self.s}; see env.unwrapped.action_mask")
        if self.s == 0 and action == self.LEFT:
            self.s = 1
            return self.s, 0.0, False, False, {}
        reward = 0.0 if self.s == 0 else float(self.np_random.normal(self.mean, self.std))
        self.s = 2
        return self.s, reward, True, False, {}


def maximisation_bias_env(n_actions: int = 10, mean: float = -0.1, std: float = 1.0) -> gym.Env:
    """The example of Sutton and Barto (2018, Example 6.7) that fools Q-learning.

    From state A (0), "right" (action 1) ends the episode with reward 0 and
    "left" (action 0) leads to state B (1), with reward 0. In B each of
    ``n_actions`` actions ends the episode with a reward drawn from a normal
    distribution of the given ``mean`` (below 0) and ``std``. Going left is
    worth ``mean`` < 0, so the best policy always goes right; but the largest
    of B's noisy estimates is usually above 0, and Q-learning believes it.
    Only two actions exist in A: pass ``env.unwrapped.action_mask`` to
    :func:`td_control`.

    Accepted: ``n_actions`` an integer >= 2; finite ``mean``; ``std`` >= 0.
    """
    n_actions = check.as_int("n_actions", n_actions, 2)
    mean = check.as_real("mean", mean)
    std = check.as_real("std", std, 0.0)
    env = _MaximisationBiasEnv(n_actions, mean, std)
    env.spec = gym.envs.registration.EnvSpec(id="MaximisationBias", entry_point="rl2llm.td:maximisation_bias_env")
    return env

