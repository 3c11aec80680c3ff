"""Policy gradients: make the actions that went well more likely. REINFORCE, exact gradients to test it.

Used by Lecture 2 (Policy gradients from scratch). Lectures 4 to 6 reuse
the loss of :func:`reinforce_loss`, with a learned critic in place of the
baselines here.

* **Weights.** REINFORCE moves ``log pi(a_t | s_t)`` up in proportion to a
  weight per step: the episode's return, or the reward-to-go from that step
  (:func:`rl2llm.rollouts.reward_to_go`), minus a baseline, optionally
  rescaled (:func:`policy_gradient_weights`).
* **Exact gradients**, to test the estimates against: a softmax bandit
  (:func:`bandit_gradient`) and a softmax policy on a known MDP, from the
  policy-gradient theorem and one linear solve (:func:`exact_policy_gradient`).
* **Estimates**, one sample per episode: :func:`bandit_gradient_samples`,
  :func:`tabular_gradient_samples`.
* **Training** a network policy in a gymnasium environment:
  :func:`reinforce_loss` and :func:`reinforce`.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import _validate as check
from .dp import evaluate_policy_exact
from .mdp import FiniteMDP
from .policies import CategoricalMLP, _checked_theta, checked_states, softmax
from .progress import progress
from .rollouts import Rollout, collect_episodes, episode_index, start_distribution, steps_since_start
from .rollouts import reward_to_go as _reward_to_go  # policy_gradient_weights has an argument of that name

# --------------------------------------------------------------------------- weights


def policy_gradient_weights(rollout: Rollout, gamma: float = 1.0, *,
                            reward_to_go: bool = True, baseline=None,
                            normalize: bool = False,
                            discount_steps: bool = False) -> np.ndarray:
    """The weight of each step's ``grad log pi(a_t | s_t)`` in a REINFORCE estimate, ``(T,)``.

    1. ``reward_to_go=True``: the discounted reward from step ``t`` on;
       ``False``: the discounted return of the whole episode, the same for all
       its steps (what the log-derivative trick gives before causality is used).
    2. minus ``baseline``: ``None`` (nothing), ``"mean"`` (the average weight
       of the batch, a constant) or a ``(T,)`` array with one value per step,
       which must not depend on the action taken there (``V(s_t)`` does not).
    3. ``discount_steps=True`` (with ``reward_to_go`` only): times ``gamma**k``,
       ``k`` the step's position in its episode, so that the step's rewards are
       discounted from the episode's start, as in the gradient of the
       discounted objective; most implementations leave it out (Lecture 2 says
       what that changes). A whole return is discounted from the start already.
    4. ``normalize=True``: divided by their standard deviation, so the
       weights are in units of their own spread, whatever the reward's units.

    ``rollout``: a ``(T,)`` stream of whole episodes (the last step must end
    one); ``gamma`` in ``[0, 1]``; the flags True or False.
    """
    if not isinstance(rollout, Rollout):
        raise TypeError(f"rollout must be a Rollout, got {check.describe(rollout)}")
    if rollout.rewards.ndim != 1:
        raise ValueError(f"rollout must be one (T,) stream of whole episodes, "
                         f"got shape {rollout.rewards.shape}")
    if rollout.n_steps == 0 or not rollout.dones[-1]:
        raise ValueError("rollout must hold whole episodes: its last step must end one")
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    use_rtg = check.as_bool("reward_to_go", reward_to_go)
    normalize = check.as_bool("normalize", normalize)
    discount_steps = check.as_bool("discount_steps", discount_steps)
    if discount_steps and not use_rtg:
        raise ValueError("discount_steps=True needs reward_to_go=True: the whole return "
                         "of an episode is already discounted from its start")

    G = _reward_to_go(rollout.rewards, rollout.dones, gamma)
    if not use_rtg:  # each step gets its episode's return: G at the episode's first step
        first = np.concatenate([[0], np.flatnonzero(rollout.dones[:-1]) + 1])
        G = G[first][episode_index(rollout.dones)]
    if baseline is None:
        weights = G
    elif isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be None, 'mean' or a (T,) array of values, "
                             f"got {baseline!r}")
        weights = G - G.mean()
    else:
        T = rollout.n_steps
        weights = G - check.as_finite_array("baseline", baseline, (T,), "(T,)")
    if discount_steps:
        weights = weights * gamma ** steps_since_start(rollout.dones)
    if normalize:
        spread = weights.std()
        weights = weights / spread if spread > 0 else weights
    return weights


# --------------------------------------------------------------------------- a bandit: exact and estimated


def bandit_gradient(theta, mean_rewards) -> np.ndarray:
    """The exact gradient of ``J = sum_a pi(a) r(a)`` for ``pi = softmax(theta)``: ``pi(a) (r(a) - J)``.

    ``theta`` and ``mean_rewards``: finite ``(A,)`` arrays.
    """
    theta, mean_rewards = _checked_bandit(theta, mean_rewards)
    pi = softmax(theta)
    return pi * (mean_rewards - pi @ mean_rewards)


def bandit_value(theta, mean_rewards) -> float:
    """``J = sum_a pi(a) r(a)``, the expected reward of ``pi = softmax(theta)``."""
    theta, mean_rewards = _checked_bandit(theta, mean_rewards)
    return float(softmax(theta) @ mean_rewards)


def _checked_bandit(theta, mean_rewards) -> tuple[np.ndarray, np.ndarray]:
    theta = check.as_finite_array("theta", theta)
    if theta.ndim != 1 or theta.size == 0:
        raise ValueError(f"theta must have shape (A,) with A >= 1, one score per action, got {theta.shape}")
    return theta, check.as_finite_array("mean_rewards", mean_rewards, theta.shape, "(A,)")


def bandit_gradient_samples(theta, actions, rewards, baseline=0.0) -> np.ndarray:
    """One REINFORCE estimate of the bandit gradient per pull: ``(onehot(a) - pi) * (r - b)``, shape ``(n, A)``.

    ``theta``: ``(A,)`` scores; ``actions``: ``(n,)`` arms pulled (whole
    numbers in ``0 .. A-1``); ``rewards``: ``(n,)`` rewards received;
    ``baseline``: a number, or ``(n,)`` numbers, one per pull (unbiased only if
    a pull's baseline does not depend on its own action or reward).
    """
    theta = check.as_finite_array("theta", theta)
    if theta.ndim != 1 or theta.size == 0:
        raise ValueError(f"theta must have shape (A,) with A >= 1, one score per action, got {theta.shape}")
    actions = check.as_actions("actions", actions, theta.size)
    if actions.ndim != 1:
        raise ValueError(f"actions must have shape (n,), got {actions.shape}")
    rewards = check.as_finite_array("rewards", rewards, actions.shape, "(n,) like actions")
    if np.ndim(baseline) == 0:
        baseline = check.as_real("baseline", baseline)
    else:
        baseline = check.as_finite_array("baseline", baseline, actions.shape, "(n,) like actions")
    score = np.eye(theta.size)[actions] - softmax(theta)
    return score * (rewards - baseline)[:, None]


def group_baseline(rewards, leave_one_out: bool = True) -> np.ndarray:
    """A baseline for each of ``k`` samples drawn in the same situation (one prompt, one state).

    ``leave_one_out=True``: the mean of the group's *other* rewards, which
    does not depend on the sample's own action, so the estimate stays
    unbiased (RLOO). ``False``: the mean of the whole group, the sample itself
    included, which shrinks the expected gradient by the factor ``(k - 1) / k``
    (Lecture 2, gotcha "A baseline that includes the sample itself").

    ``rewards``: finite numbers of shape ``(..., k)``, groups along the last
    axis, ``k >= 2``. Returns the same shape.
    """
    rewards = check.as_finite_array("rewards", rewards)
    leave_one_out = check.as_bool("leave_one_out", leave_one_out)
    if rewards.ndim == 0 or rewards.shape[-1] < 2:
        raise ValueError(f"rewards must have groups of k >= 2 samples along the last axis, got shape {rewards.shape}")
    k = rewards.shape[-1]
    total = rewards.sum(axis=-1, keepdims=True)
    if leave_one_out:
        return (total - rewards) / (k - 1)
    return np.broadcast_to(total / k, rewards.shape).copy()


@dataclass
class BanditRuns:
    """What :func:`bandit_reinforce` did: the policy after every step of every run."""

    #: ``probs[t, run, a]``: the probability of arm ``a`` after ``t`` updates (``t = 0``: before any).
    probs: np.ndarray
    #: ``theta[run, a]``: the scores at the end.
    theta: np.ndarray


def bandit_reinforce(success_rates, n_runs: int, n_steps: int, pulls_per_step: int, lr: float, *,
                     baseline: str | None = "leave-one-out", normalize: bool = False,
                     reward_scale: float = 1.0, reward_offset: float = 0.0, seed: int = 0) -> BanditRuns:
    """REINFORCE on a softmax bandit whose arms succeed (reward 1) or fail (0), many runs side by side.

    Every step of every run pulls ``pulls_per_step`` arms from the current
    policy, receives ``reward_offset + reward_scale * success`` for each (the
    same feedback in other units), and moves the scores by ``lr`` times the
    average of :func:`bandit_gradient_samples` over the pulls, with
    ``baseline`` ``None``, ``"mean"`` (the mean reward of the pulls) or
    ``"leave-one-out"`` (:func:`group_baseline`), the weights divided by the
    pulls' reward spread when ``normalize``. Plain gradient ascent, no
    optimiser: the step is exactly ``lr`` times the estimate.

    ``success_rates``: ``(A,)`` probabilities; ``n_runs``, ``n_steps``:
    integers >= 1; ``pulls_per_step``: an integer >= 2; ``lr`` > 0;
    ``reward_scale`` > 0; ``seed`` an integer >= 0.
    """
    rates = check.as_finite_array("success_rates", success_rates)
    if rates.ndim != 1 or rates.size == 0 or ((rates < 0) | (rates > 1)).any():
        raise ValueError(f"success_rates must be (A,) probabilities in [0, 1], got {check.describe(success_rates)}")
    n_runs, n_steps = check.as_int("n_runs", n_runs, 1), check.as_int("n_steps", n_steps, 1)
    k = check.as_int("pulls_per_step", pulls_per_step, 2)
    lr = check.as_real("lr", lr, 0.0, low_open=True)
    if baseline not in (None, "mean", "leave-one-out"):
        raise ValueError(f"baseline must be None, 'mean' or 'leave-one-out', got {baseline!r}")
    normalize = check.as_bool("normalize", normalize)
    scale = check.as_real("reward_scale", reward_scale, 0.0, low_open=True)
    offset = check.as_real("reward_offset", reward_offset)
    rng = np.random.default_rng(check.as_int("seed", seed, 0))

    A = rates.size
    theta = np.zeros((n_runs, A))
    probs = [softmax(theta, axis=1)]
    for _ in range(n_steps):
        pi = probs[-1]
        arms = np.minimum((pi.cumsum(axis=1)[:, None, :] < rng.random((n_runs, k, 1))).sum(axis=2), A - 1)
        rewards = offset + scale * (rng.random((n_runs, k)) < rates[arms])
        if baseline is None:
            weights = rewards
        else:
            weights = rewards - group_baseline(rewards, leave_one_out=(baseline == "leave-one-out"))
        if normalize:
            spread = rewards.std(axis=1, keepdims=True)
            weights = weights / np.where(spread > 0, spread, 1.0)
        score = np.eye(A)[arms] - pi[:, None, :]  # (runs, k, A)
        theta = theta + lr * (score * weights[..., None]).mean(axis=1)
        probs.append(softmax(theta, axis=1))
    return BanditRuns(probs=np.array(probs), theta=theta)


# --------------------------------------------------------------------------- a softmax policy on a known MDP


def softmax_policy_value(mdp: FiniteMDP, theta, start=None) -> float:
    """``J(theta)``: the expected discounted return of ``softmax(theta[s])`` from ``start``, exactly
    (Lecture 1's linear solve). ``theta``: ``(S, A)``; ``start``: as :func:`exact_policy_gradient`."""
    _check_mdp(mdp)
    probs = softmax(_checked_mdp_theta(mdp, theta), axis=1)
    mu = start_distribution(mdp, start)
    return float(mu @ evaluate_policy_exact(mdp, probs))


def exact_policy_gradient(mdp: FiniteMDP, theta, start=None) -> np.ndarray:
    """The exact gradient of ``J(theta)`` for the tabular softmax policy, shape ``(S, A)``.

    The policy-gradient theorem in its state form:
    ``dJ / d theta[s, a] = d(s) * pi(a | s) * A(s, a)``, where ``A = Q - V`` is
    the policy's advantage and ``d(s) = sum_t gamma^t Pr(s_t = s)`` its
    discounted count of visits to ``s``, the solution of
    ``d = mu + gamma * P_pi^T d`` on the live states. Two linear solves, no sampling.

    ``theta``: finite ``(S, A)`` scores; ``start``: ``None`` (the MDP's start
    state), a state, or an ``(S,)`` distribution over live states. With
    ``gamma = 1`` every episode must end (otherwise the values are infinite,
    and :func:`rl2llm.dp.evaluate_policy_exact` says so).
    """
    _check_mdp(mdp)
    theta = _checked_mdp_theta(mdp, theta)
    mu = start_distribution(mdp, start)
    probs = softmax(theta, axis=1)
    V = evaluate_policy_exact(mdp, probs)
    Q = mdp.R + mdp.gamma * mdp.expected_next(V)
    Q[mdp.terminal] = 0.0
    d = discounted_visits(mdp, probs, mu)
    return d[:, None] * probs * (Q - V[:, None])


def discounted_visits(mdp: FiniteMDP, probs, start=None) -> np.ndarray:
    """``d(s) = sum_t gamma^t Pr(s_t = s)`` from ``start`` under ``probs``.

    Zero in terminal states. With ``gamma = 1`` it is the expected number of
    visits to each state in an episode. ``probs``: ``(S, A)`` probabilities.
    """
    _check_mdp(mdp)
    probs = check.as_policy("probs", probs, mdp.n_states, mdp.n_actions)
    mu = start_distribution(mdp, start)
    P_pi, _ = mdp.policy_matrices(probs)
    P_pi = P_pi.toarray() if hasattr(P_pi, "toarray") else P_pi
    live = ~mdp.terminal
    A = np.eye(int(live.sum())) - mdp.gamma * P_pi[np.ix_(live, live)].T
    if np.linalg.cond(A) > 1e12:
        raise np.linalg.LinAlgError(
            "the policy can go on forever without reaching a terminal state, "
            "so with gamma = 1 it visits some state infinitely often")
    d = np.zeros(mdp.n_states)
    d[live] = np.linalg.solve(A, mu[live])
    return d


def tabular_gradient_samples(theta, rollout: Rollout, weights) -> np.ndarray:
    """One REINFORCE estimate per episode for the tabular softmax policy, shape ``(n_episodes, S, A)``:
    ``sum_t weights[t] * grad log pi(a_t | s_t)``, summed over each episode's steps.

    Their average is the REINFORCE estimate of the gradient; their spread is
    what makes it noisy. ``theta``: ``(S, A)`` scores; ``rollout``: a ``(T,)``
    stream of whole episodes with integer states; ``weights``: ``(T,)``
    (from :func:`policy_gradient_weights`).
    """
    theta = _checked_theta(theta)
    if not isinstance(rollout, Rollout):
        raise TypeError(f"rollout must be a Rollout, got {check.describe(rollout)}")
    if rollout.rewards.ndim != 1 or rollout.n_steps == 0 or not rollout.dones[-1]:
        raise ValueError("rollout must be one (T,) stream of whole episodes (its last step ends one)")
    S, A = theta.shape
    states = checked_states("rollout.observations", rollout.observations, S)
    actions = check.as_actions("rollout.actions", rollout.actions, A)
    weights = check.as_finite_array("weights", weights, (rollout.n_steps,), "(T,)")
    score = np.eye(A)[actions] - softmax(theta, axis=1)[states]  # (T, A): grad of log pi(a_t|s_t) in row s_t
    out = np.zeros((rollout.n_episodes, S, A))
    np.add.at(out, (episode_index(rollout.dones), states), score * weights[:, None])
    return out


def _check_mdp(mdp) -> None:
    if not isinstance(mdp, FiniteMDP):
        raise TypeError(f"mdp must be a FiniteMDP, got {check.describe(mdp)}")


def _checked_mdp_theta(mdp: FiniteMDP, theta) -> np.ndarray:
    theta = check.as_finite_array("theta", theta)
    if theta.shape != (mdp.n_states, mdp.n_actions):
        raise ValueError(f"theta must have shape (S, A) = {(mdp.n_states, mdp.n_actions)}, got {theta.shape}")
    return theta


# --------------------------------------------------------------------------- REINFORCE with a network


def reinforce_loss(policy: CategoricalMLP, rollout: Rollout, weights) -> torch.Tensor:
    """The loss whose gradient is minus the REINFORCE estimate:
    ``-(1/n) sum_t log pi(a_t | s_t) weights[t]``.

    ``n`` is the number of episodes, so the gradient is the average over
    episodes of each episode's estimate. The weights are constants (no
    gradient flows through them). ``rollout``: a ``(T,)`` stream of whole
    episodes; ``weights``: ``(T,)`` finite numbers.
    """
    if not isinstance(policy, CategoricalMLP):
        raise TypeError(f"policy must be a CategoricalMLP, got {check.describe(policy)}")
    if not isinstance(rollout, Rollout):
        raise TypeError(f"rollout must be a Rollout, got {check.describe(rollout)}")
    if rollout.rewards.ndim != 1 or rollout.n_episodes == 0:
        raise ValueError("rollout must be one (T,) stream holding at least one whole episode")
    weights = check.as_finite_array("weights", weights, (rollout.n_steps,), "(T,)")
    log_probs = policy.log_prob(rollout.observations, rollout.actions)
    weights = torch.as_tensor(weights, dtype=log_probs.dtype)
    return -(log_probs * weights).sum() / rollout.n_episodes


@dataclass
class TrainingLog:
    """What :func:`reinforce` did, one entry per update (``episode_returns``: one per episode played)."""

    #: Undiscounted return of every episode played, in order.
    episode_returns: list[float] = field(default_factory=list)
    #: Average undiscounted return of the episodes behind each update.
    mean_returns: list[float] = field(default_factory=list)
    #: Average entropy of the policy (nats) over the states of each update's episodes.
    entropies: list[float] = field(default_factory=list)
    #: Environment steps used so far, after each update.
    steps: list[int] = field(default_factory=list)
    #: Size (Euclidean norm) of each update's gradient.
    grad_norms: list[float] = field(default_factory=list)


_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def reinforce(env, policy: CategoricalMLP, n_updates: int,
              episodes_per_update: int, lr: float, gamma: float = 0.99, *,
              reward_to_go: bool = True, baseline="mean",
              normalize: bool = True, optimizer: str = "adam", seed: int = 0,
              label: str = "REINFORCE") -> TrainingLog:
    """Train ``policy`` with REINFORCE: play episodes, weight the steps, update.

    Each of the ``n_updates`` updates plays ``episodes_per_update`` episodes
    with the current policy (:func:`rl2llm.rollouts.collect_episodes`),
    weights their steps (:func:`policy_gradient_weights` with
    ``reward_to_go``, ``baseline`` and ``normalize``: by default the
    reward-to-go minus the batch's mean, divided by its spread) and takes one
    step of ``optimizer`` (``"adam"`` or ``"sgd"``) with step size ``lr`` on
    :func:`reinforce_loss`. The environment is seeded once, with ``seed``;
    seed PyTorch first (:func:`rl2llm.seeding.seed_everything`), since the
    policy samples its actions from PyTorch's generator. Progress goes to the
    build log under ``label``.
    """
    if not isinstance(policy, CategoricalMLP):
        raise TypeError(f"policy must be a CategoricalMLP, "
                        f"got {check.describe(policy)}")
    n_updates = check.as_int("n_updates", n_updates, 1)
    episodes_per_update = check.as_int("episodes_per_update",
                                       episodes_per_update, 1)
    lr = check.as_real("lr", lr, 0.0, low_open=True)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    check.as_bool("reward_to_go", reward_to_go)
    check.as_bool("normalize", normalize)
    if not (baseline is None or baseline == "mean"):
        raise ValueError(f"baseline must be None or 'mean', "
                         f"got {check.describe(baseline)}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, "
                         f"got {optimizer!r}")
    seed = check.as_int("seed", seed, 0)
    if not isinstance(label, str) or not label:
        raise ValueError(f"label must be a non-empty string, got {label!r}")

    opt = _OPTIMIZERS[optimizer](policy.parameters(), lr=lr)
    log = TrainingLog()
    for update in progress(range(n_updates), label):
        batch = collect_episodes(env, policy, episodes_per_update,
                                 seed=seed if update == 0 else None)
        weights = policy_gradient_weights(batch, gamma, baseline=baseline,
                                          reward_to_go=reward_to_go,
                                          normalize=normalize)
        loss = reinforce_loss(policy, batch, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        grads = [p.grad.flatten() for p in policy.parameters()
                 if p.grad is not None]
        log.grad_norms.append(float(torch.cat(grads).norm()))
        returns = batch.episode_returns()
        log.episode_returns.extend(returns.tolist())
        log.mean_returns.append(float(returns.mean()))
        with torch.no_grad():
            entropy = policy.entropy(batch.observations).mean()
        log.entropies.append(float(entropy))
        log.steps.append((log.steps[-1] if log.steps else 0) + batch.n_steps)
    return log
