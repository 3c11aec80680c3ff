"""Tests for Lecture 2's code: rl2llm.policies, rl2llm.rollouts and rl2llm.policy_gradient.

The claims the chapter makes, tested here with fixed seeds:

* the exact policy gradient (policy-gradient theorem, one linear solve) equals
  finite differences of the exact value, on a bandit and on small MDPs;
* the REINFORCE estimate is unbiased: on a bandit, on Lecture 1's grid world
  (episodes sampled from the model) and on FrozenLake (episodes played in
  gymnasium), the exact gradient lies within 4.5 standard errors of the
  Monte-Carlo average in every component;
* reward-to-go and a baseline each reduce its variance (measured);
* a group-mean baseline shrinks the expected gradient by (k - 1) / k, a
  leave-one-out baseline does not;
* REINFORCE learns CartPole-v1 (slow test: the mean return of the last 100
  episodes is at least 450 for each of seeds 0, 1 and 2);
* every public function refuses bad input with an error naming the argument.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl2llm.dp import evaluate_policy_exact
from rl2llm.mdp import FiniteMDP, from_gymnasium, gridworld, random_mdp
from rl2llm.plotting import plot_runs
from rl2llm.policies import CategoricalMLP, TabularSoftmaxPolicy, log_softmax_grad, softmax
from rl2llm.policy_gradient import (
    BanditRuns, TrainingLog, bandit_gradient, bandit_gradient_samples, bandit_reinforce, bandit_value,
    discounted_visits, exact_policy_gradient, group_baseline, policy_gradient_weights, reinforce,
    reinforce_loss, softmax_policy_value, tabular_gradient_samples,
)
from rl2llm.rollouts import (
    Rollout, collect_episodes, episode_index, reward_to_go, sample_episodes, start_distribution,
    steps_since_start,
)
from rl2llm.seeding import seed_everything

#: How many standard errors an unbiased estimate may stray from the truth in any component.
Z_MAX = 4.5
#: Lecture 1's grid world.
GRID = gridworld(["....G", ".#..X", "S#...", "....."], slip=0.1, gamma=0.9, step_reward=-0.02)
RATES = np.array([0.3, 0.5, 0.7, 0.45])  # Lecture 2's bandit: thumbs-up rates of four replies


def _stream(rewards, dones, obs=None, actions=None) -> Rollout:
    """A (T,) rollout with the given rewards and episode ends (states and actions 0 unless given)."""
    rewards = np.asarray(rewards, dtype=float)
    T = len(rewards)
    obs = np.zeros(T, dtype=int) if obs is None else np.asarray(obs)
    actions = np.zeros(T, dtype=int) if actions is None else np.asarray(actions)
    dones = np.asarray(dones, dtype=bool)
    return Rollout(obs, actions, rewards, dones, np.zeros(T, dtype=bool), np.full(T, -0.5), obs)


def _z_scores(samples: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """(mean - exact) / standard error, per component; components with no spread must match exactly."""
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    assert np.allclose(mean[se == 0], exact[se == 0], atol=1e-12), "a component with no spread is off"
    return np.where(se > 0, (mean - exact) / np.where(se > 0, se, 1.0), 0.0)


# --------------------------------------------------------------------------- policies


def test_softmax_is_a_distribution_even_for_huge_logits():
    p = softmax([1000.0, 1000.0, -1000.0])
    assert np.allclose(p, [0.5, 0.5, 0.0])
    rows = softmax(np.arange(6.0).reshape(2, 3), axis=1)
    assert np.allclose(rows.sum(axis=1), 1.0) and np.allclose(rows[0], rows[1])
    assert np.allclose(softmax(np.zeros((2, 3)), axis=0), 0.5)


def test_log_softmax_grad_is_the_derivative_of_log_softmax():
    logits = np.array([0.3, -1.0, 2.0, 0.5])
    score = log_softmax_grad(logits, [2, 0])
    log_p = lambda z: z - np.log(np.exp(z).sum())  # noqa: E731
    for row, a in zip(score, [2, 0]):
        numeric = [(log_p(logits + 1e-6 * e)[a] - log_p(logits - 1e-6 * e)[a]) / 2e-6 for e in np.eye(4)]
        assert np.allclose(row, numeric, atol=1e-8)
    assert np.allclose(score.sum(axis=1), 0.0)  # raising every score equally changes nothing
    per_row = log_softmax_grad(np.stack([logits, -logits]), [1, 1])
    assert np.allclose(per_row[0], score[0] * 0 + log_softmax_grad(logits, [1])[0])


def test_tabular_policy_samples_its_probabilities():
    theta = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    policy = TabularSoftmaxPolicy(theta, seed=3)
    states = np.repeat([0, 1], 20_000)
    actions, log_probs = policy.act(states)
    for s in (0, 1):
        freq = np.bincount(actions[states == s], minlength=3) / 20_000
        assert np.allclose(freq, softmax(theta[s]), atol=0.015)
    assert np.allclose(log_probs, np.log(policy.probs()[states, actions]))
    theta[0, 0] = 99.0
    assert policy.theta[0, 0] == 0.0, "the policy keeps its own copy of theta"


def test_categorical_mlp_acts_with_the_probabilities_it_reports():
    seed_everything(0)
    policy = CategoricalMLP(4, 3, hidden=(8, 8))
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.normal_()
    obs = np.random.default_rng(0).normal(size=(5000, 4))
    actions, log_probs = policy.act(obs)
    assert actions.shape == log_probs.shape == (5000,) and set(np.unique(actions)) <= {0, 1, 2}
    reported = policy.log_prob(obs, actions).detach().numpy()
    assert np.allclose(log_probs, reported, atol=1e-4), np.abs(log_probs - reported).max()
    probs = torch.softmax(policy(torch.as_tensor(obs, dtype=torch.float32)), dim=-1).detach().numpy()
    # sampled actions follow the probabilities: average probability of each action vs its frequency
    frequency = np.bincount(actions, minlength=3) / 5000
    assert np.allclose(frequency, probs.mean(axis=0), atol=0.025), (frequency, probs.mean(axis=0))


def test_a_fresh_categorical_mlp_is_nearly_uniform_and_seeded():
    seed_everything(7)
    a = CategoricalMLP(4, 2)
    seed_everything(7)
    b = CategoricalMLP(4, 2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    entropy = a.entropy(np.random.default_rng(1).normal(size=(100, 4)))
    assert torch.allclose(entropy, torch.full((100,), float(np.log(2))), atol=1e-3)
    linear = CategoricalMLP(3, 2, hidden=())
    assert [type(m).__name__ for m in linear.net] == ["Linear"]


# --------------------------------------------------------------------------- rollouts


def test_reward_to_go_by_hand():
    G = reward_to_go([1.0, 2.0, 3.0, 4.0, 5.0], [False, True, False, False, True], gamma=0.5)
    assert np.allclose(G, [1 + 0.5 * 2, 2, 3 + 0.5 * 4 + 0.25 * 5, 4 + 0.5 * 5, 5])
    assert np.allclose(reward_to_go([1.0, 1.0, 1.0], [False, False, True]), [3, 2, 1])
    assert np.allclose(reward_to_go([3.0, -1.0], [False, True], gamma=0.0), [3, -1])
    # a stream that stops mid-episode sums up to its last step
    assert np.allclose(reward_to_go([1.0, 1.0], [False, False], gamma=1.0), [2, 1])


def test_reward_to_go_of_several_environments_is_per_column():
    rng = np.random.default_rng(0)
    rewards, dones = rng.normal(size=(30, 3)), rng.random((30, 3)) < 0.2
    G = reward_to_go(rewards, dones, 0.9)
    for i in range(3):
        assert np.allclose(G[:, i], reward_to_go(rewards[:, i], dones[:, i], 0.9))


def test_episode_bookkeeping():
    dones = np.array([False, True, True, False, False, True])
    assert episode_index(dones).tolist() == [0, 0, 1, 2, 2, 2]
    assert steps_since_start(dones).tolist() == [0, 1, 0, 0, 1, 2]
    ro = _stream([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dones)
    assert ro.n_episodes == 3 and ro.n_steps == 6
    assert ro.episode_returns().tolist() == [3.0, 3.0, 15.0]
    assert np.allclose(ro.episode_returns(0.5), [2.0, 3.0, 4 + 2.5 + 1.5])
    assert ro.episode_lengths().tolist() == [2, 1, 3]


@pytest.mark.parametrize("mode", ["sync-same-step", "sync-next-step", "vector-entry-point", "single"])
def test_collect_episodes_returns_whole_episodes(mode):
    seed_everything(0)
    if mode == "single":
        env = gym.make("CartPole-v1")
    elif mode == "vector-entry-point":
        env = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point")
    else:
        autoreset = gym.vector.AutoresetMode.SAME_STEP if mode == "sync-same-step" else gym.vector.AutoresetMode.NEXT_STEP
        env = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync",
                           vector_kwargs={"autoreset_mode": autoreset})
    policy = CategoricalMLP(4, 2)
    ro = collect_episodes(env, policy, 7, seed=1)
    assert ro.n_episodes == 7 and ro.dones[-1] and not ro.truncated.any()
    assert ro.observations.shape == ro.next_observations.shape == (ro.n_steps, 4)
    assert np.all(ro.rewards == 1.0) and ro.episode_returns().sum() == ro.n_steps
    assert np.allclose(ro.log_probs, policy.log_prob(ro.observations, ro.actions).detach().numpy(), atol=1e-5)
    # within an episode each step starts where the previous one ended
    inside = ~ro.dones[:-1]
    assert np.allclose(ro.observations[1:][inside], ro.next_observations[:-1][inside])
    # the observation after the last step is the one where the pole fell or the cart left, not a fresh start
    final = ro.next_observations[ro.terminated]
    assert np.all((np.abs(final[:, 0]) > 2.4) | (np.abs(final[:, 2]) > 0.2095))
    # every episode starts near the upright position
    starts = ro.observations[np.concatenate([[0], np.flatnonzero(ro.dones[:-1]) + 1])]
    assert np.all(np.abs(starts) <= 0.05)


def test_collect_episodes_splits_the_episodes_evenly_and_marks_time_limits():
    env = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point", max_episode_steps=12)
    seed_everything(1)
    ro = collect_episodes(env, CategoricalMLP(4, 2), 10, seed=0)
    assert ro.n_episodes == 10 and ro.episode_lengths().max() <= 12
    assert ro.truncated.any(), "a 12-step limit cuts some episodes off"
    assert (ro.episode_lengths()[ro.truncated[ro.dones]] == 12).all()


def test_collect_episodes_with_a_tabular_policy_in_frozenlake():
    env = gym.make("FrozenLake-v1", is_slippery=True)
    ro = collect_episodes(env, TabularSoftmaxPolicy(np.zeros((16, 4)), seed=0), 50, seed=0)
    assert ro.n_episodes == 50 and ro.observations.dtype.kind == "i"
    assert np.allclose(ro.log_probs, np.log(0.25))
    lake = from_gymnasium(env)
    assert not lake.terminal[ro.observations].any() and lake.terminal[ro.next_observations[ro.terminated]].all()


def test_sample_episodes_matches_the_exact_value_and_visits():
    theta = np.random.default_rng(0).normal(scale=0.5, size=(GRID.n_states, 4))
    probs = softmax(theta, axis=1)
    ro = sample_episodes(GRID, probs, 5000, seed=2)
    assert ro.n_episodes == 5000 and not ro.truncated.any() and ro.terminated[-1]
    returns = ro.episode_returns(GRID.gamma)
    exact = softmax_policy_value(GRID, theta)
    assert abs(returns.mean() - exact) < Z_MAX * returns.std() / np.sqrt(5000)
    # visits per episode, discounted by the step at which they happen, estimate d(s)
    weights = GRID.gamma ** steps_since_start(ro.dones)
    visits = np.bincount(ro.observations, weights=weights, minlength=GRID.n_states) / 5000
    assert np.allclose(visits, discounted_visits(GRID, probs), atol=0.06)


def test_sample_episodes_pays_the_landing_that_happened():
    """A grid world pays its goal and pits on landing: a sampled step gets the step cost plus the entry
    reward of the cell it actually landed in, not the average over where it might have landed."""
    world = gridworld(["S.G", ".X."], slip=0.5, gamma=0.9, step_reward=-0.1)
    ro = sample_episodes(world, np.full((world.n_states, 4), 0.25), 2000, seed=0)
    expected = -0.1 + world.entry_reward[ro.next_observations]
    assert np.allclose(ro.rewards, expected)
    assert set(np.round(ro.rewards, 9)) == {-0.1, 0.9, -1.1}  # realised values only
    returns = ro.episode_returns(world.gamma)
    exact = softmax_policy_value(world, np.zeros((world.n_states, 4)))
    assert abs(returns.mean() - exact) < Z_MAX * returns.std() / np.sqrt(2000)


def test_sample_episodes_cuts_long_episodes_off():
    P = np.zeros((2, 1, 2))
    P[0, 0, 0] = 1.0
    P[1, 0, 1] = 1.0
    forever = FiniteMDP(P, np.ones((2, 1)), 0.9, terminal=[False, True], start=0)
    ro = sample_episodes(forever, np.ones((2, 1)), 3, max_steps=5)
    assert ro.n_steps == 15 and ro.truncated.sum() == 3 and not ro.terminated.any()
    assert ro.episode_lengths().tolist() == [5, 5, 5]


# --------------------------------------------------------------------------- weights


def test_policy_gradient_weights():
    ro = _stream([1.0, 1.0, 1.0, 2.0, 2.0], [False, False, True, False, True])
    assert np.allclose(policy_gradient_weights(ro), [3, 2, 1, 4, 2])
    assert np.allclose(policy_gradient_weights(ro, reward_to_go=False), [3, 3, 3, 4, 4])
    assert np.allclose(policy_gradient_weights(ro, 0.5, discount_steps=True), [1.75, 0.75, 0.25, 3, 1])
    centred = policy_gradient_weights(ro, baseline="mean")
    assert np.isclose(centred.mean(), 0.0) and np.allclose(centred, [3, 2, 1, 4, 2] - np.mean([3, 2, 1, 4, 2]))
    assert np.allclose(policy_gradient_weights(ro, baseline=np.arange(5.0)), [3, 1, -1, 1, -2])
    scaled = policy_gradient_weights(ro, baseline="mean", normalize=True)
    assert np.isclose(scaled.std(), 1.0)
    ten_times = _stream(10 * ro.rewards, ro.dones)
    assert np.allclose(policy_gradient_weights(ten_times, baseline="mean", normalize=True), scaled)


# --------------------------------------------------------------------------- exact gradients


def test_bandit_gradient_is_the_derivative_of_the_bandit_value():
    theta, r = np.array([0.2, -0.4, 1.0, 0.0]), RATES
    numeric = [(bandit_value(theta + 1e-6 * e, r) - bandit_value(theta - 1e-6 * e, r)) / 2e-6 for e in np.eye(4)]
    assert np.allclose(bandit_gradient(theta, r), numeric, atol=1e-9)
    assert np.isclose(bandit_gradient(theta, r).sum(), 0.0)


@pytest.mark.parametrize("world", ["grid", "dense random", "frozenlake gamma = 1"])
def test_exact_policy_gradient_matches_finite_differences(world):
    if world == "grid":
        mdp, start = GRID, None
    elif world == "dense random":
        mdp, start = random_mdp(6, 3, gamma=0.8, seed=1), np.full(6, 1 / 6)
    else:
        mdp, start = from_gymnasium(gym.make("FrozenLake-v1"), gamma=1.0), 0
    theta = np.random.default_rng(5).normal(size=(mdp.n_states, mdp.n_actions))
    grad = exact_policy_gradient(mdp, theta, start)
    numeric = np.zeros_like(theta)
    for index in np.ndindex(theta.shape):
        e = np.zeros_like(theta)
        e[index] = 1e-6
        numeric[index] = (softmax_policy_value(mdp, theta + e, start)
                          - softmax_policy_value(mdp, theta - e, start)) / 2e-6
    assert np.allclose(grad, numeric, atol=1e-8, rtol=1e-5)
    assert np.allclose(grad.sum(axis=1), 0.0, atol=1e-12), "the scores of one state can all rise without effect"


def test_discounted_visits_add_up_to_the_discounted_time():
    mdp = random_mdp(5, 2, gamma=0.9, seed=3)  # no terminal states: the time is 1 / (1 - gamma)
    d = discounted_visits(mdp, np.full((5, 2), 0.5), np.full(5, 0.2))
    assert np.isclose(d.sum(), 1 / (1 - 0.9))


# --------------------------------------------------------------------------- REINFORCE is unbiased


def test_reinforce_is_unbiased_on_a_bandit():
    rng = np.random.default_rng(0)
    theta = np.array([0.5, 0.0, -0.5, 0.2])
    n = 200_000
    arms = rng.choice(4, size=n, p=softmax(theta))
    rewards = (rng.random(n) < RATES[arms]).astype(float)
    exact = bandit_gradient(theta, RATES)
    plain = bandit_gradient_samples(theta, arms, rewards)
    centred = bandit_gradient_samples(theta, arms, rewards, baseline=bandit_value(theta, RATES))
    assert np.abs(_z_scores(plain, exact)).max() < Z_MAX
    assert np.abs(_z_scores(centred, exact)).max() < Z_MAX
    assert centred.var(axis=0).sum() < 0.7 * plain.var(axis=0).sum(), "a baseline cuts the variance"


@pytest.fixture(scope="module")
def grid_estimates():
    """10,000 episodes of Lecture 1's grid world under a random softmax policy, and the exact gradient."""
    theta = np.random.default_rng(0).normal(scale=0.5, size=(GRID.n_states, 4))
    probs = softmax(theta, axis=1)
    ro = sample_episodes(GRID, probs, 10_000, seed=1)
    V = evaluate_policy_exact(GRID, probs)
    kinds = {
        "whole return": dict(reward_to_go=False),
        "reward-to-go": dict(discount_steps=True),
        "reward-to-go minus V": dict(discount_steps=True, baseline=V[ro.observations]),
        "reward-to-go minus the mean": dict(discount_steps=True, baseline="mean"),
    }
    samples = {name: tabular_gradient_samples(theta, ro, policy_gradient_weights(ro, GRID.gamma, **kw))
               for name, kw in kinds.items()}
    no_discount = tabular_gradient_samples(theta, ro, policy_gradient_weights(ro, GRID.gamma))
    return exact_policy_gradient(GRID, theta), samples, no_discount


@pytest.mark.parametrize("kind", ["whole return", "reward-to-go", "reward-to-go minus V"])
def test_reinforce_is_unbiased_on_the_grid_world(grid_estimates, kind):
    exact, samples, _ = grid_estimates
    assert np.abs(_z_scores(samples[kind], exact)).max() < Z_MAX


def test_reward_to_go_and_a_baseline_each_reduce_the_variance(grid_estimates):
    _, samples, _ = grid_estimates
    variance = {name: s.var(axis=0, ddof=1).sum() for name, s in samples.items()}
    assert variance["reward-to-go"] < 0.5 * variance["whole return"]
    assert variance["reward-to-go minus V"] < 0.5 * variance["reward-to-go"]
    assert variance["reward-to-go minus the mean"] < 0.5 * variance["reward-to-go"]


def test_dropping_the_discount_of_the_step_biases_the_estimate(grid_estimates):
    exact, _, no_discount = grid_estimates
    assert np.abs(_z_scores(no_discount, exact)).max() > 20


def test_reinforce_is_unbiased_on_frozenlake_played_in_gymnasium():
    lake = from_gymnasium(gym.make("FrozenLake-v1", is_slippery=True), gamma=0.95)
    env = gym.make_vec("FrozenLake-v1", num_envs=16, vectorization_mode="sync", is_slippery=True,
                       max_episode_steps=10_000)
    theta = np.random.default_rng(2).normal(scale=0.5, size=(16, 4))
    ro = collect_episodes(env, TabularSoftmaxPolicy(theta, seed=4), 4000, seed=0)
    weights = policy_gradient_weights(ro, 0.95, discount_steps=True)
    samples = tabular_gradient_samples(theta, ro, weights)
    assert np.abs(_z_scores(samples, exact_policy_gradient(lake, theta))).max() < Z_MAX


def test_a_group_mean_baseline_shrinks_the_gradient_and_leave_one_out_does_not():
    rng = np.random.default_rng(3)
    theta, k, groups = np.array([0.3, 0.0, -0.2, 0.1]), 4, 100_000
    arms = rng.choice(4, size=(groups, k), p=softmax(theta))
    rewards = (rng.random((groups, k)) < RATES[arms]).astype(float)
    exact = bandit_gradient(theta, RATES)

    def per_group(leave_one_out):
        baseline = group_baseline(rewards, leave_one_out=leave_one_out)
        g = bandit_gradient_samples(theta, arms.ravel(), rewards.ravel(), baseline.ravel())
        return g.reshape(groups, k, 4).mean(axis=1)  # one estimate per group: groups are independent

    assert np.abs(_z_scores(per_group(True), exact)).max() < Z_MAX
    assert np.abs(_z_scores(per_group(False), (k - 1) / k * exact)).max() < Z_MAX
    assert np.abs(_z_scores(per_group(False), exact)).max() > Z_MAX


def test_group_baseline_values():
    r = np.array([[1.0, 0.0, 0.0, 1.0]])
    assert np.allclose(group_baseline(r), [[1 / 3, 2 / 3, 2 / 3, 1 / 3]])
    assert np.allclose(group_baseline(r, leave_one_out=False), 0.5)


# --------------------------------------------------------------------------- the network's loss and training


def test_the_network_loss_gives_the_tabular_estimate():
    """A linear network on one-hot states is the tabular softmax: its loss gradient is minus the estimate."""
    theta = np.random.default_rng(1).normal(scale=0.5, size=(GRID.n_states, 4))
    ro = sample_episodes(GRID, softmax(theta, axis=1), 50, seed=3)
    weights = policy_gradient_weights(ro, GRID.gamma, discount_steps=True, baseline="mean")
    policy = CategoricalMLP(GRID.n_states, 4, hidden=())
    layer = policy.net[0]
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(theta.T))
        layer.bias.zero_()
    one_hot = Rollout(np.eye(GRID.n_states)[ro.observations], ro.actions, ro.rewards, ro.terminated,
                      ro.truncated, ro.log_probs, np.eye(GRID.n_states)[ro.next_observations])
    reinforce_loss(policy, one_hot, weights).backward()
    estimate = tabular_gradient_samples(theta, ro, weights).mean(axis=0)
    assert np.allclose(-layer.weight.grad.numpy().T, estimate, atol=1e-5)


def test_bandit_reinforce_learns_and_the_reward_units_are_a_step_size():
    runs = bandit_reinforce(RATES, 200, 200, 8, 2.0, seed=1)
    assert isinstance(runs, BanditRuns) and runs.probs.shape == (201, 200, 4)
    assert runs.probs[-1, :, 2].mean() > 0.95
    ten_times = bandit_reinforce(RATES, 50, 30, 8, 2.0, reward_scale=10.0, seed=2)
    bigger_step = bandit_reinforce(RATES, 50, 30, 8, 20.0, seed=2)
    assert np.allclose(ten_times.probs, bigger_step.probs)
    normalized = [bandit_reinforce(RATES, 50, 30, 8, 2.0, normalize=True, reward_scale=s, reward_offset=o, seed=2)
                  for s, o in [(1.0, 0.0), (10.0, 0.0), (4.0, 1.0)]]
    assert all(np.allclose(n.probs, normalized[0].probs) for n in normalized[1:])


def test_reinforce_smoke():
    seed_everything(0)
    env = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point")
    log = reinforce(env, CategoricalMLP(4, 2), n_updates=2, episodes_per_update=4, lr=0.01, seed=0)
    assert isinstance(log, TrainingLog)
    assert len(log.mean_returns) == len(log.entropies) == len(log.grad_norms) == 2
    assert len(log.episode_returns) == 8 and log.steps[-1] == sum(log.episode_returns)


def test_reinforce_is_deterministic():
    def run():
        seed_everything(3)
        env = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point")
        return reinforce(env, CategoricalMLP(4, 2), 3, 4, 0.01, seed=3).episode_returns

    assert run() == run()


@pytest.mark.slow
def test_reinforce_learns_cartpole():
    """The chapter's setting: 40 updates of 32 episodes, Adam with step 0.02, reward-to-go minus the batch mean,
    normalised; the mean return of the last 100 episodes is at least 450 (of 500) for each of seeds 0, 1, 2."""
    torch.set_num_threads(1)
    for seed in (0, 1, 2):
        seed_everything(seed)
        env = gym.make_vec("CartPole-v1", num_envs=32, vectorization_mode="vector_entry_point")
        policy = CategoricalMLP(4, 2, hidden=(32,))
        log = reinforce(env, policy, 40, 32, 0.02, seed=seed)
        assert np.mean(log.episode_returns[-100:]) >= 450, f"seed {seed}: {np.mean(log.episode_returns[-100:])}"


def test_plot_runs_draws_the_mean_the_band_and_every_run():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    runs = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [1.0, 2.0, 3.0]])
    plot_runs(runs, [10, 20, 30], ax=ax, label="mean", band_label="range")
    lines = ax.get_lines()
    assert len(lines) == 4 and np.allclose(lines[0].get_ydata(), [1.0, 2.0, 3.0])
    assert np.allclose(lines[0].get_xdata(), [10, 20, 30])
    assert all(line.get_color() == lines[0].get_color() for line in lines)
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["mean", "range"]
    plt.close(fig)


# --------------------------------------------------------------------------- bad input


CARTPOLE = gym.make("CartPole-v1")


class _NoAct:
    pass


class _BadAct:
    def __init__(self, out):
        self.out = out

    def act(self, observations):
        return self.out


BAD_INPUT = [
    # policies
    (lambda: softmax("abc"), TypeError, "logits"),
    (lambda: softmax([1.0, np.nan]), ValueError, "logits"),
    (lambda: softmax(np.zeros((2, 0)), axis=1), ValueError, "logits"),
    (lambda: softmax([1.0, 2.0], axis=3), ValueError, "axis"),
    (lambda: softmax([1.0, 2.0], axis=1.0), TypeError, "axis"),
    (lambda: log_softmax_grad([[[1.0]]], [0]), ValueError, "logits"),
    (lambda: log_softmax_grad([1.0, 2.0], [2]), ValueError, "actions"),
    (lambda: log_softmax_grad([1.0, 2.0], [[0]]), ValueError, "actions"),
    (lambda: log_softmax_grad(np.zeros((3, 2)), [0, 1]), ValueError, "rows"),
    (lambda: TabularSoftmaxPolicy(np.zeros(3)), ValueError, "theta"),
    (lambda: TabularSoftmaxPolicy(np.zeros((2, 2)), seed=-1), ValueError, "seed"),
    (lambda: TabularSoftmaxPolicy(np.zeros((2, 2))).act([2]), ValueError, "observations"),
    (lambda: TabularSoftmaxPolicy(np.zeros((2, 2))).act([0.5]), ValueError, "observations"),
    (lambda: CategoricalMLP(0, 2), ValueError, "obs_dim"),
    (lambda: CategoricalMLP(4, 2.0), TypeError, "n_actions"),
    (lambda: CategoricalMLP(4, 2, hidden=64), TypeError, "hidden"),
    (lambda: CategoricalMLP(4, 2, hidden=(0,)), ValueError, "hidden[0]"),
    (lambda: CategoricalMLP(4, 2).act(np.zeros((3, 5))), ValueError, "observations"),
    (lambda: CategoricalMLP(4, 2).act(np.array([["a"] * 4])), TypeError, "observations"),
    (lambda: CategoricalMLP(4, 2).act(np.full((1, 4), np.inf)), ValueError, "observations"),
    (lambda: CategoricalMLP(4, 2).log_prob(np.zeros((3, 4)), [0, 1]), ValueError, "actions"),
    (lambda: CategoricalMLP(4, 2).log_prob(np.zeros((2, 4)), [0, 2]), ValueError, "actions"),
    # rollouts
    (lambda: reward_to_go([1.0, 2.0], [True], 0.9), ValueError, "dones"),
    (lambda: reward_to_go([1.0, 2.0], [0, 1], 0.9), TypeError, "dones"),
    (lambda: reward_to_go([1.0, 2.0], [False, True], 1.5), ValueError, "gamma"),
    (lambda: reward_to_go(np.zeros((2, 2, 2)), np.zeros((2, 2, 2), bool)), ValueError, "rewards"),
    (lambda: reward_to_go([1.0, np.inf], [False, True]), ValueError, "rewards"),
    (lambda: episode_index([0, 1]), ValueError, "dones"),
    (lambda: Rollout(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2, bool), np.zeros(2),
                     np.zeros(2)), TypeError, "terminated"),
    (lambda: Rollout(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(3, bool), np.zeros(2, bool), np.zeros(2),
                     np.zeros(2)), ValueError, "terminated"),
    (lambda: Rollout(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), np.ones(2),
                     np.zeros(2)), ValueError, "log_probs"),
    (lambda: Rollout(np.zeros(3), np.zeros(2), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), np.zeros(2),
                     np.zeros(3)), ValueError, "observations"),
    (lambda: Rollout(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), np.zeros(2),
                     np.zeros((2, 1))), ValueError, "next_observations"),
    (lambda: _stream([1.0], [True]).episode_returns(2.0), ValueError, "gamma"),
    (lambda: collect_episodes("CartPole-v1", CategoricalMLP(4, 2), 1), TypeError, "env"),
    (lambda: collect_episodes(CARTPOLE, _NoAct(), 1), TypeError, "policy"),
    (lambda: collect_episodes(CARTPOLE, CategoricalMLP(4, 2), 0), ValueError, "n_episodes"),
    (lambda: collect_episodes(CARTPOLE, CategoricalMLP(4, 2), 1, seed=-3), ValueError, "seed"),
    (lambda: collect_episodes(CARTPOLE, CategoricalMLP(4, 2), 1, max_steps=3), RuntimeError, "max_steps"),
    (lambda: collect_episodes(CARTPOLE, _BadAct(np.zeros(1)), 1), TypeError, "policy.act"),
    (lambda: collect_episodes(CARTPOLE, _BadAct((np.zeros(2), np.zeros(2))), 1), ValueError, "policy.act"),
    (lambda: collect_episodes(gym.make_vec("FrozenLake-v1", num_envs=2, vectorization_mode="sync",
                                           vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.DISABLED}),
                              TabularSoftmaxPolicy(np.zeros((16, 4))), 1), ValueError, "env"),
    (lambda: sample_episodes("grid", np.full((18, 4), 0.25), 1), TypeError, "mdp"),
    (lambda: sample_episodes(GRID, np.zeros(GRID.n_states, dtype=int), 1), ValueError, "policy"),
    (lambda: sample_episodes(GRID, np.full((GRID.n_states, 4), 0.3), 1), ValueError, "policy"),
    (lambda: sample_episodes(GRID, np.full((GRID.n_states, 4), 0.25), 0), ValueError, "n_episodes"),
    (lambda: sample_episodes(GRID, np.full((GRID.n_states, 4), 0.25), 1, max_steps=0), ValueError, "max_steps"),
    (lambda: sample_episodes(GRID, np.full((GRID.n_states, 4), 0.25), 1, seed=1.5), TypeError, "seed"),
    (lambda: start_distribution(GRID, 99), ValueError, "start"),
    (lambda: start_distribution(GRID, int(np.flatnonzero(GRID.terminal)[0])), ValueError, "terminal"),
    (lambda: start_distribution(GRID, np.full(GRID.n_states, 0.5)), ValueError, "start"),
    (lambda: start_distribution(random_mdp(3, 2), None), ValueError, "start"),
    (lambda: start_distribution(None), TypeError, "mdp"),
    # policy_gradient
    (lambda: policy_gradient_weights([1.0]), TypeError, "rollout"),
    (lambda: policy_gradient_weights(_stream([1.0, 1.0], [True, False])), ValueError, "whole episodes"),
    (lambda: policy_gradient_weights(_stream([1.0], [True]), baseline="median"), ValueError, "baseline"),
    (lambda: policy_gradient_weights(_stream([1.0], [True]), baseline=[1.0, 2.0]), ValueError, "baseline"),
    (lambda: policy_gradient_weights(_stream([1.0], [True]), reward_to_go=1), TypeError, "reward_to_go"),
    (lambda: policy_gradient_weights(_stream([1.0], [True]), 0.9, reward_to_go=False, discount_steps=True),
     ValueError, "discount_steps"),
    (lambda: policy_gradient_weights(_stream([1.0], [True]), gamma=-0.1), ValueError, "gamma"),
    (lambda: bandit_gradient([0.0, 0.0], [1.0]), ValueError, "mean_rewards"),
    (lambda: bandit_gradient([[0.0]], [1.0]), ValueError, "theta"),
    (lambda: bandit_value([0.0, np.nan], [1.0, 0.0]), ValueError, "theta"),
    (lambda: bandit_gradient_samples([0.0, 0.0], [0, 2], [1.0, 0.0]), ValueError, "actions"),
    (lambda: bandit_gradient_samples([0.0, 0.0], [0, 1], [1.0]), ValueError, "rewards"),
    (lambda: bandit_gradient_samples([0.0, 0.0], [0, 1], [1.0, 0.0], baseline="mean"), TypeError, "baseline"),
    (lambda: bandit_gradient_samples([0.0, 0.0], [0, 1], [1.0, 0.0], baseline=[1.0]), ValueError, "baseline"),
    (lambda: group_baseline([[1.0]]), ValueError, "rewards"),
    (lambda: group_baseline([1.0, 2.0], leave_one_out="yes"), TypeError, "leave_one_out"),
    (lambda: bandit_reinforce([0.5, 1.5], 1, 1, 2, 1.0), ValueError, "success_rates"),
    (lambda: bandit_reinforce(RATES, 0, 1, 2, 1.0), ValueError, "n_runs"),
    (lambda: bandit_reinforce(RATES, 1, 1, 1, 1.0), ValueError, "pulls_per_step"),
    (lambda: bandit_reinforce(RATES, 1, 1, 2, 0.0), ValueError, "lr"),
    (lambda: bandit_reinforce(RATES, 1, 1, 2, 1.0, baseline="median"), ValueError, "baseline"),
    (lambda: bandit_reinforce(RATES, 1, 1, 2, 1.0, reward_scale=-1.0), ValueError, "reward_scale"),
    (lambda: bandit_reinforce(RATES, 1, 1, 2, 1.0, normalize=None), TypeError, "normalize"),
    (lambda: softmax_policy_value("grid", np.zeros((18, 4))), TypeError, "mdp"),
    (lambda: softmax_policy_value(GRID, np.zeros((3, 4))), ValueError, "theta"),
    (lambda: exact_policy_gradient(GRID, np.zeros((GRID.n_states, 4)), start=-1), ValueError, "start"),
    (lambda: exact_policy_gradient(GRID, np.full((GRID.n_states, 4), np.nan)), ValueError, "theta"),
    (lambda: discounted_visits(GRID, np.full((GRID.n_states, 4), 0.5)), ValueError, "probs"),
    (lambda: tabular_gradient_samples(np.zeros((GRID.n_states, 4)), "rollout", np.zeros(1)), TypeError, "rollout"),
    (lambda: tabular_gradient_samples(np.zeros((2, 2)), _stream([1.0], [True], obs=[5]), [1.0]), ValueError,
     "rollout.observations"),
    (lambda: tabular_gradient_samples(np.zeros((2, 2)), _stream([1.0], [True]), [1.0, 2.0]), ValueError, "weights"),
    (lambda: tabular_gradient_samples(np.zeros((2, 2)), _stream([1.0], [False]), [1.0]), ValueError, "whole"),
    (lambda: reinforce_loss("policy", _stream([1.0], [True]), [1.0]), TypeError, "policy"),
    (lambda: reinforce_loss(CategoricalMLP(1, 2), "rollout", [1.0]), TypeError, "rollout"),
    (lambda: reinforce_loss(CategoricalMLP(1, 2), _stream([1.0], [True], obs=np.zeros((1, 1))), [np.nan]),
     ValueError, "weights"),
    (lambda: reinforce(CARTPOLE, "policy", 1, 1, 0.01), TypeError, "policy"),
    (lambda: reinforce(CARTPOLE, CategoricalMLP(4, 2), 0, 1, 0.01), ValueError, "n_updates"),
    (lambda: reinforce(CARTPOLE, CategoricalMLP(4, 2), 1, 0, 0.01), ValueError, "episodes_per_update"),
    (lambda: reinforce(CARTPOLE, CategoricalMLP(4, 2), 1, 1, -0.01), ValueError, "lr"),
    (lambda: reinforce(CARTPOLE, CategoricalMLP(4, 2), 1, 1, 0.01, gamma=2.0), ValueError, "gamma"),
    (lambda: reinforce(CARTPOLE, CategoricalMLP(4, 2), 1, 1, 0.01, baseline="V"), ValueError, "baseline"),
    (lambda: reinforce(CARTPOLE, CategoricalMLP(4, 2), 1, 1, 0.01, optimizer="rmsprop"), ValueError, "optimizer"),
    (lambda: reinforce(CARTPOLE, CategoricalMLP(4, 2), 1, 1, 0.01, normalize="yes"), TypeError, "normalize"),
    (lambda: reinforce(CARTPOLE, CategoricalMLP(4, 2), 1, 1, 0.01, label=""), ValueError, "label"),
    # plotting
    (lambda: plot_runs([1.0, 2.0]), ValueError, "runs"),
    (lambda: plot_runs([[1.0, np.nan]]), ValueError, "runs"),
    (lambda: plot_runs([[1.0, 2.0]], x=[1.0]), ValueError, "x"),
    (lambda: plot_runs([[1.0, 2.0]], ax="axes"), TypeError, "ax"),
    (lambda: plot_runs([[1.0, 2.0]], label=3), TypeError, "label"),
    (lambda: plot_runs([[1.0, 2.0]], color="not a colour"), ValueError, "color"),
    (lambda: plot_runs([[1.0, 2.0]], show_runs="yes"), TypeError, "show_runs"),
]


@pytest.mark.parametrize("call, error, name", BAD_INPUT, ids=[f"{i:02d}-{case[2]}" for i, case in enumerate(BAD_INPUT)])
def test_bad_input_gets_a_clear_error(call, error, name):
    with pytest.raises(error, match=name.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        call()


def test_play_episodes_returns_one_return_per_copy_and_follows_the_actions():
    from rl2llm.rollouts import play_episodes
    left = play_episodes(lambda obs: np.zeros(len(obs), dtype=int), "CartPole-v1", 5, seed=3)
    assert left.shape == (5,) and np.all((left >= 8) & (left < 30))  # always pushing left falls fast
    assert np.array_equal(left, play_episodes(lambda obs: np.zeros(len(obs), dtype=int), "CartPole-v1", 5, seed=3))
    # a policy that balances (push towards the pole's lean) lasts far longer than pushing one way
    lean = play_episodes(lambda obs: (obs[:, 2] + obs[:, 3] > 0).astype(int), "CartPole-v1", 5, seed=3)
    assert lean.mean() > 5 * left.mean()
    # continuous actions pass through as rows
    pendulum = play_episodes(lambda obs: np.zeros((len(obs), 1), dtype=np.float32), "Pendulum-v1", 2, seed=0)
    assert pendulum.shape == (2,) and np.all(pendulum < 0)


@pytest.mark.parametrize("call, error, match", [
    (lambda f: f(None, "CartPole-v1", 2), TypeError, "act"),
    (lambda f: f(lambda o: o[:, 0].astype(int), 3, 2), TypeError, "env_id"),
    (lambda f: f(lambda o: o[:, 0].astype(int), "CartPole-v1", 0), ValueError, "n_episodes"),
    (lambda f: f(lambda o: np.zeros(1, int), "CartPole-v1", 3), ValueError, "act returned 1 actions"),
])
def test_play_episodes_names_bad_arguments(call, error, match):
    from rl2llm.rollouts import play_episodes
    with pytest.raises(error, match=match):
        call(play_episodes)
