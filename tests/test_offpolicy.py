"""Tests for rl2llm.offpolicy: DDPG, TD3 and SAC (Lecture 7).

The three small formulas first, each against what it claims: a soft update
moves a target the stated fraction of the way (and repeated, closes the gap
geometrically); the tanh-squashed Gaussian's log-probability is the density of
``tanh(u)``, checked numerically against the derivative of its distribution
function, by integration and by sampling, and stays finite where a naive
formula overflows; the temperature update drives the policy's entropy to its
target from above and from below. Then the networks (a stack is the same
networks as its members alone), the configurations (the RL Zoo's defaults),
small runs of every algorithm and switch (bookkeeping; seeds trained side by
side are the runs trained alone), the evaluations, the value estimates against
returns computed by hand, Pendulum learned within 20,000 steps (slow), and bad
input for every public function.
"""

from __future__ import annotations

import math
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy.stats import norm

from rl2llm import offpolicy as op
from rl2llm.dqn import ReplayBuffer
from rl2llm.offpolicy import (
    DDPG, Critics, DeterministicActor, MLPStack, OffPolicyResult, SACConfig, SquashedGaussianActor, TD3Config,
    evaluate_actor, soft_update, squashed_gaussian_log_prob, temperature_loss, train_ddpg, train_sac, train_seeds,
    train_td3, value_estimates,
)

ENV = "Pendulum-v1"
#: Runs small enough for the fast tests: 300 steps, training from step 100.
TINY_SAC = SACConfig(total_steps=300, learning_starts=100, batch_size=32, buffer_size=1000, hidden=(16, 16))
TINY_TD3 = TD3Config(total_steps=300, learning_starts=100, batch_size=32, buffer_size=1000, hidden=(16, 16),
                     train_every=50, gradient_steps=50)


# --------------------------------------------------------------------------- soft updates


def _pair(seed_target=0, seed_source=1):
    return MLPStack((3, 8, 2), [seed_target]), MLPStack((3, 8, 2), [seed_source])


def test_a_soft_update_moves_the_target_the_fraction_tau_of_the_way():
    target, source = _pair()
    before = [p.detach().clone() for p in target.parameters()]
    soft_update(target, source, 0.1)
    for new, old, src in zip(target.parameters(), before, source.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * src, atol=1e-7)


def test_tau_one_copies_and_tau_zero_changes_nothing():
    target, source = _pair()
    before = [p.detach().clone() for p in target.parameters()]
    soft_update(target, source, 0.0)
    assert all(torch.equal(p, b) for p, b in zip(target.parameters(), before))
    soft_update(target, source, 1.0)
    assert all(torch.equal(p, s) for p, s in zip(target.parameters(), source.parameters()))


def test_repeated_soft_updates_close_the_gap_geometrically():
    # after n updates towards a fixed source the gap is (1 - tau)^n of what it was: ~1/tau updates to
    # forget most of it (with tau = 0.005, SAC's target averages the last few hundred critics)
    target, source = _pair()
    gap0 = [(t - s).detach().clone() for t, s in zip(target.parameters(), source.parameters())]
    tau, n = 0.005, 300
    for _ in range(n):
        soft_update(target, source, tau)
    for t, s, g in zip(target.parameters(), source.parameters(), gap0):
        assert torch.allclose(t - s, (1 - tau) ** n * g, atol=1e-5)


def test_the_source_is_not_changed_and_no_gradient_is_recorded():
    target, source = _pair()
    src = [p.detach().clone() for p in source.parameters()]
    soft_update(target, source, 0.5)
    assert all(torch.equal(p, s) for p, s in zip(source.parameters(), src))
    assert all(p.grad is None and p.grad_fn is None for p in target.parameters())


# --------------------------------------------------------------------------- the tanh-squashed Gaussian


def _log_prob_of_action(a, mean, std):
    """log p(a) by our function, for actions a in (-1, 1) of a 1-D squashed Gaussian."""
    a = np.asarray(a, dtype=np.float64)
    u = np.arctanh(a)
    return squashed_gaussian_log_prob(np.full((len(a), 1), mean), np.full((len(a), 1), math.log(std)),
                                      u[:, None]).numpy()


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.7, 0.3), (-1.5, 2.0), (2.5, 0.5)])
def test_the_density_is_the_derivative_of_the_distribution_function(mean, std):
    # P(tanh(u) <= a) = P(u <= atanh(a)) = Phi((atanh(a) - mean) / std); its numerical derivative is the density
    a = np.linspace(-0.98, 0.98, 99)
    h = 1e-5
    cdf = lambda x: norm.cdf((np.arctanh(x) - mean) / std)
    numerical = (cdf(a + h) - cdf(a - h)) / (2 * h)
    assert np.allclose(np.exp(_log_prob_of_action(a, mean, std)), numerical, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.7, 0.3), (-1.5, 2.0)])
def test_the_density_integrates_to_one_over_the_action_range(mean, std):
    # integrate over u (a = tanh u, da = (1 - a^2) du) on a fine grid: the change of variables the correction undoes
    u = np.linspace(mean - 12 * std, mean + 12 * std, 200_001)
    a = np.tanh(u)
    inside = np.abs(a) < 1   # where tanh rounds to +-1 the density's contribution is negligible anyway
    log_p = squashed_gaussian_log_prob(np.full((inside.sum(), 1), mean), np.full((inside.sum(), 1), math.log(std)),
                                       u[inside][:, None]).numpy()
    integral = np.trapezoid(np.exp(log_p) * (1 - a[inside] ** 2), u[inside])
    assert integral == pytest.approx(1.0, abs=1e-6)


def test_the_density_matches_a_histogram_of_samples():
    rng = np.random.default_rng(0)
    mean, std = 0.4, 0.8
    samples = np.tanh(rng.normal(mean, std, 400_000))
    edges = np.linspace(-0.95, 0.95, 39)
    counts, _ = np.histogram(samples, edges)
    empirical = counts / len(samples) / np.diff(edges)
    centres = (edges[:-1] + edges[1:]) / 2
    assert np.allclose(np.exp(_log_prob_of_action(centres, mean, std)), empirical, rtol=0.03)


def test_without_the_correction_the_density_is_wrong():
    # the Gaussian's log-density of u is not the log-density of a: it misses -log(1 - a^2)
    a = np.array([0.0, 0.5, 0.9, 0.99])
    u = np.arctanh(a)[:, None]
    mean, log_std = torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
    corrected = squashed_gaussian_log_prob(mean, log_std, torch.as_tensor(u)).numpy()
    gaussian = op._squashed_log_prob(mean, log_std, torch.as_tensor(u), correction=False).numpy()
    assert np.allclose(corrected - gaussian, -np.log(1 - a ** 2))


def test_several_dimensions_add_their_log_densities():
    rng = np.random.default_rng(1)
    mean, log_std, u = (torch.as_tensor(rng.normal(size=(5, 3))) for _ in range(3))
    joint = squashed_gaussian_log_prob(mean, log_std, u)
    parts = sum(squashed_gaussian_log_prob(mean[:, i:i + 1], log_std[:, i:i + 1], u[:, i:i + 1]) for i in range(3))
    assert joint.shape == (5,) and torch.allclose(joint, parts)
    batched = squashed_gaussian_log_prob(mean[None].expand(2, 5, 3), log_std[None].expand(2, 5, 3),
                                         u[None].expand(2, 5, 3))
    assert batched.shape == (2, 5) and torch.allclose(batched[1], joint)


def test_the_correction_stays_finite_where_tanh_rounds_to_one():
    # float32: tanh(10) == 1.0, so log(1 - tanh(u)^2) = log(0) = -inf; the stable form gives log 4 - 2|u|
    u = torch.tensor([[10.0], [-30.0], [60.0]])
    naive = torch.log(1 - torch.tanh(u) ** 2)
    assert torch.isinf(naive).all()
    log_p = squashed_gaussian_log_prob(torch.zeros(3, 1), torch.zeros(3, 1), u)
    expected = -0.5 * u[:, 0] ** 2 - 0.5 * math.log(2 * math.pi) - (math.log(4) - 2 * u[:, 0].abs())
    assert torch.isfinite(log_p).all() and torch.allclose(log_p, expected, rtol=1e-6)
    u.requires_grad_(True)
    squashed_gaussian_log_prob(torch.zeros(3, 1), torch.zeros(3, 1), u).sum().backward()
    assert torch.isfinite(u.grad).all()


def test_the_actors_log_prob_agrees_with_its_samples():
    actor = SquashedGaussianActor(3, 1, (16,), [-2.0], [2.0], seeds=[4])
    obs = np.random.default_rng(2).normal(size=(6, 3)).astype(np.float32)
    with torch.no_grad():
        mean, log_std = actor(torch.as_tensor(obs)[None])
    u = mean[0] + log_std[0].exp() * 0.3
    expected = squashed_gaussian_log_prob(mean[0].double(), log_std[0].double(), u.double()).numpy()
    assert np.allclose(actor.log_prob(obs, torch.tanh(u).numpy()), expected, atol=1e-5)


# --------------------------------------------------------------------------- the temperature


def test_the_temperature_gradient_is_entropy_minus_target():
    log_alpha = torch.tensor(0.3, requires_grad=True)
    log_probs = torch.tensor([-1.0, -2.0, 0.5])          # entropy estimate 5/6
    temperature_loss(log_alpha, log_probs, target_entropy=-1.0).backward()
    assert log_alpha.grad.item() == pytest.approx(5 / 6 - (-1.0))
    # a descent step then lowers the temperature: the entropy is above its target


def _tune(target_entropy: float, log_std0: float, steps: int = 1000) -> tuple[np.ndarray, float]:
    """A one-dimensional squashed Gaussian policy (a learned mean and log std) in a bandit whose reward
    peaks at a = 0.3, trained as SAC's actor with the temperature learned. The policy learns ten times
    faster than the temperature (two time scales: the policy settles for the current temperature, the
    temperature follows). Returns the entropy estimated on each step's batch, and the final temperature."""
    torch.manual_seed(0)
    mean = torch.tensor([0.0], requires_grad=True)
    log_std = torch.tensor([log_std0], requires_grad=True)
    log_alpha = torch.tensor(0.0, requires_grad=True)
    opt = torch.optim.Adam([{"params": [mean, log_std], "lr": 5e-2}, {"params": [log_alpha], "lr": 5e-3}])
    entropies = []
    for _ in range(steps):
        u = mean + log_std.exp() * torch.randn(128, 1)
        log_p = squashed_gaussian_log_prob(mean.expand(128, 1), log_std.expand(128, 1), u)
        reward = -100.0 * (torch.tanh(u[:, 0]) - 0.3) ** 2
        alpha = log_alpha.exp().detach()
        loss = (alpha * log_p - reward).mean() + temperature_loss(log_alpha, log_p, target_entropy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        entropies.append(-log_p.mean().item())
    return np.array(entropies), log_alpha.exp().item()


@pytest.mark.parametrize("target, log_std0", [(-1.0, 1.0), (-1.0, -4.0), (-2.0, 0.0)])
def test_the_temperature_update_drives_the_entropy_to_its_target(target, log_std0):
    # from a policy with too much entropy (log std 0; with log std 1 tanh piles the samples up near the
    # bounds, less entropy but still too much) or too little (log std -4), the learned temperature brings
    # the entropy to its target, and keeps it there
    entropies, alpha = _tune(target, log_std0)
    assert abs(entropies[:10].mean() - target) > 0.5
    assert entropies[-100:].mean() == pytest.approx(target, abs=0.1)
    assert alpha > 0


def test_the_temperature_it_finds_does_not_depend_on_where_the_policy_starts():
    (_, from_above), (_, from_below) = _tune(-1.0, 1.0), _tune(-1.0, -4.0)
    assert from_above == pytest.approx(from_below, rel=0.05)


# --------------------------------------------------------------------------- networks


def test_a_stack_computes_its_networks_side_by_side_and_each_is_seed_determined():
    stack = MLPStack((3, 16, 16, 2), seeds=[5, 6, 7])
    alone = MLPStack((3, 16, 16, 2), seeds=[6])
    x = torch.randn(3, 10, 3)
    out = stack(x)
    assert out.shape == (3, 10, 2)
    assert torch.equal(alone(x[1:2]), out[1:2])            # member 1 is the seed-6 network, alone or stacked
    assert torch.equal(stack.select([1])(x[1:2]), out[1:2])
    # PyTorch's nn.Linear initialisation: uniform within +-1/sqrt(fan_in)
    assert stack.weights[0].abs().max() <= 1 / math.sqrt(3) and stack.weights[1].abs().max() <= 0.25


def test_a_stack_agrees_with_the_same_layers_written_out():
    stack = MLPStack((4, 8, 1), seeds=[0])
    x = torch.randn(1, 5, 4)
    w1, w2, b1, b2 = stack.weights[0][0], stack.weights[1][0], stack.biases[0][0], stack.biases[1][0]
    assert torch.allclose(stack(x)[0], torch.relu(x[0] @ w1 + b1) @ w2 + b2, atol=1e-6)
    assert np.allclose(op._numpy_forward(stack._numpy(), x.numpy()), stack(x).detach().numpy(), atol=1e-6)


def test_critics_give_each_critic_of_each_agent():
    critics = Critics(3, 1, (16,), n_critics=2, seeds=[0, 1])
    q = critics(torch.randn(2, 7, 3), torch.rand(2, 7, 1))
    assert q.shape == (2, 2, 7)
    one = critics.select(1)
    obs, act = np.random.default_rng(0).normal(size=(7, 3)), np.zeros((7, 1))
    assert np.allclose(one.q_values(obs, act),
                       critics(torch.as_tensor(obs, dtype=torch.float32)[None].expand(2, 7, 3),
                               torch.zeros(2, 7, 1))[1].detach().numpy(), atol=1e-6)


def test_actors_act_within_the_bounds_and_agree_with_their_forward_pass():
    obs = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32) * 10
    for cls in (DeterministicActor, SquashedGaussianActor):
        actor = cls(3, 2, (16,), [-2.0, 0.0], [2.0, 1.0], seeds=[0])
        actions = actor.act(obs)
        assert actions.shape == (50, 2)
        assert np.all(actions >= [-2.0, 0.0]) and np.all(actions <= [2.0, 1.0])
        with torch.no_grad():
            out = actor(torch.as_tensor(obs)[None])
        mean = out if cls is DeterministicActor else torch.tanh(out[0])
        assert np.allclose(actor.to_env(mean[0].numpy()), actions, atol=1e-5)


# --------------------------------------------------------------------------- configurations


def test_the_defaults_are_the_rl_zoos_pendulum_settings():
    s = SACConfig()
    assert (s.total_steps, s.learning_rate, s.buffer_size, s.learning_starts, s.batch_size, s.tau, s.gamma,
            s.train_every, s.gradient_steps, s.hidden, s.ent_coef, s.init_ent_coef, s.target_entropy) == \
        (20_000, 1e-3, 1_000_000, 100, 256, 0.005, 0.99, 1, 1, (256, 256), None, 1.0, None)
    t = TD3Config()
    assert (t.total_steps, t.learning_rate, t.buffer_size, t.learning_starts, t.batch_size, t.tau, t.gamma,
            t.train_every, t.gradient_steps, t.hidden, t.action_noise, t.target_noise, t.target_noise_clip,
            t.policy_delay) == \
        (20_000, 1e-3, 200_000, 10_000, 256, 0.005, 0.98, 200, 200, (400, 300), 0.1, 0.2, 0.5, 2)
    assert t.clipped_double_q and t.fixes == ("clipped double Q", "target policy smoothing", "delayed policy updates")
    assert DDPG.fixes == () and replace(DDPG, hidden=(400, 300)) == DDPG
    assert s.log_prob_correction and not s.truncation_as_termination and not t.truncation_as_termination


# --------------------------------------------------------------------------- training runs


def test_a_sac_run_keeps_its_books():
    r = train_sac(ENV, TINY_SAC, seed=0, eval_every=150, eval_episodes=2, checkpoints=True)
    assert isinstance(r, OffPolicyResult) and r.seed == 0 and r.config is TINY_SAC
    assert r.env_steps == 300 and r.steps_per_second > 0
    assert r.episode_end_steps.tolist() == [200] and len(r.episode_returns) == 1   # Pendulum: 200-step episodes
    n_updates = 300 - 100
    assert r.critic_losses.shape == r.q_means.shape == r.alphas.shape == r.entropies.shape == (n_updates,)
    assert r.alphas[0] == 1.0 and np.all(np.isfinite(r.entropies))            # the temperature starts at 1
    assert r.eval_steps.tolist() == [150, 300] and r.eval_returns.shape == (2, 2)
    assert [c.step for c in r.checkpoints] == [150, 300]
    assert isinstance(r.actor, SquashedGaussianActor) and r.critics.n_critics == 2
    assert r.actor.n_agents == 1 and r.critics.n_agents == 1


def test_td3_and_ddpg_runs_keep_their_books():
    r = train_td3(ENV, TINY_TD3, seed=1, eval_every=300, eval_episodes=2)
    assert isinstance(r.actor, DeterministicActor) and r.critics.n_critics == 2
    assert r.critic_losses.shape == (200,) and r.alphas.shape == (0,)          # 4 phases of 50 steps from step 100
    d = train_ddpg(ENV, replace(DDPG, **{k: getattr(TINY_TD3, k) for k in
                                        ("total_steps", "learning_starts", "batch_size", "buffer_size", "hidden",
                                         "train_every", "gradient_steps")}), seed=1)
    assert d.critics.n_critics == 1 and d.critic_losses.shape == (200,)


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    a, b, c = (train_sac(ENV, TINY_SAC, seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.q_means, b.q_means) and np.array_equal(a.episode_returns, b.episode_returns)
    assert not np.array_equal(a.q_means, c.q_means)


@pytest.mark.parametrize("config", [TINY_SAC, TINY_TD3], ids=["sac", "td3"])
def test_seeds_trained_side_by_side_are_the_runs_trained_alone(config):
    group = train_seeds(ENV, config, [7, 2], eval_every=150, eval_episodes=2)
    for r in group:
        alone = (train_sac if isinstance(config, SACConfig) else train_td3)(ENV, config, seed=r.seed, eval_every=150,
                                                                            eval_episodes=2)
        # the same arithmetic, to rounding: PyTorch may use other vector instructions on a tensor of another size
        assert np.allclose(r.episode_returns, alone.episode_returns, rtol=1e-6)
        assert np.allclose(r.q_means, alone.q_means, rtol=1e-5, atol=1e-5)
        assert np.allclose(r.eval_returns, alone.eval_returns, rtol=1e-5)


def test_variants_trained_side_by_side_are_the_variants_trained_alone():
    variants = [TINY_TD3, replace(TINY_TD3, clipped_double_q=False), replace(TINY_TD3, target_noise=0.0),
                replace(TINY_TD3, clipped_double_q=False, target_noise=0.0)]
    group = train_seeds(ENV, variants, [0, 0, 0, 1], checkpoints=True, eval_every=300, eval_episodes=1)
    for config, r in zip(variants, group):
        alone = train_td3(ENV, config, seed=r.seed)
        assert r.config is config and r.critics.n_critics == alone.critics.n_critics
        assert r.checkpoints[-1].critics.n_critics == alone.critics.n_critics
        assert np.allclose(r.episode_returns, alone.episode_returns, rtol=1e-6)
        assert np.allclose(r.q_means, alone.q_means, rtol=1e-5, atol=1e-5)
        assert np.allclose(r.critic_losses, alone.critic_losses, rtol=1e-4, atol=1e-5)
    sac = train_seeds(ENV, [TINY_SAC, replace(TINY_SAC, log_prob_correction=False)], [5, 5])
    alone = train_sac(ENV, replace(TINY_SAC, log_prob_correction=False), seed=5)
    assert np.allclose(sac[1].entropies, alone.entropies, rtol=1e-4, atol=1e-5)


def test_the_switches_change_what_they_say():
    base = replace(TINY_SAC, total_steps=200)
    fixed = train_sac(ENV, replace(base, ent_coef=0.05), seed=0)
    assert np.all(fixed.alphas == np.float32(0.05))
    target = train_sac(ENV, replace(base, target_entropy=-3.0), seed=0)
    learned = train_sac(ENV, base, seed=0)
    assert not np.array_equal(target.alphas, learned.alphas)
    no_fix = train_sac(ENV, replace(base, log_prob_correction=False), seed=0)
    assert not np.allclose(no_fix.entropies, learned.entropies)
    td3_one = train_td3(ENV, replace(TINY_TD3, clipped_double_q=False), seed=0)
    assert td3_one.critics.n_critics == 1


def test_a_time_limit_is_not_an_end_unless_the_switch_says_so(monkeypatch):
    stored = []
    original = ReplayBuffer._add

    def spy(self, obs, action, reward, next_obs, terminated):
        stored.append(terminated)
        return original(self, obs, action, reward, next_obs, terminated)

    monkeypatch.setattr(ReplayBuffer, "_add", spy)
    train_sac(ENV, replace(TINY_SAC, total_steps=250), seed=0)
    assert not any(stored)                       # Pendulum never terminates: it is truncated at 200 steps
    stored.clear()
    train_sac(ENV, replace(TINY_SAC, total_steps=250, truncation_as_termination=True), seed=0)
    assert [i for i, t in enumerate(stored) if t] == [199]


# --------------------------------------------------------------------------- evaluation


def test_evaluate_actor_plays_the_deterministic_action():
    actor = DeterministicActor(3, 1, (16,), [-2.0], [2.0], seeds=[0])
    returns = evaluate_actor(actor, ENV, n_episodes=3, seed=5)
    env = gym.make(ENV)
    for i in range(3):
        obs, _ = env.reset(seed=5 + i)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(actor.act(np.asarray(obs, np.float32)[None])[0])
            total += r
            done = term or trunc
        assert returns[i] == pytest.approx(total, rel=1e-5)


def test_value_estimates_compare_the_critics_with_the_discounted_return_that_followed():
    r = train_td3(ENV, TINY_TD3, seed=0)
    est = value_estimates(r.actor, r.critics, ENV, gamma=0.9, n_episodes=2, seed=3, n_states=5, tail=50)
    assert est.predicted.shape == (2, 10) and est.actual.shape == (10,)
    env = gym.make(ENV, max_episode_steps=55)
    obs, _ = env.reset(seed=4)                      # the second episode
    rewards, states = [], []
    for _ in range(55):
        states.append(obs)
        obs, reward, *_ = env.step(r.actor.act(np.asarray(obs, np.float32)[None])[0])
        rewards.append(reward)
    returns = [sum(0.9 ** k * x for k, x in enumerate(rewards[t:])) for t in range(5)]
    assert np.allclose(est.actual[5:], returns, rtol=1e-5)
    mu = r.actor._mean_numpy(np.array(states[:5], np.float32)[None])[0]
    assert np.allclose(est.predicted[:, 5:], r.critics.q_values(np.array(states[:5]), mu), rtol=1e-5)


# --------------------------------------------------------------------------- Pendulum learned (slow)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_sac_learns_pendulum_within_20k_steps(seed):
    """SAC with the default (RL Zoo) settings: >= -200 mean return over 100 deterministic episodes after
    20,000 environment steps (random play scores about -1,200; the Zoo reports about -157).

    Measured when written: seed 0 trained this way scored -147.7 over the benchmark's 100 episodes
    (benchmarks/rl_vs_sb3.py; Stable-Baselines3's SAC -147.8), about 4-5 minutes of CPU time on one thread.
    """
    r = train_sac(ENV, SACConfig(), seed=seed)
    returns = evaluate_actor(r.actor, ENV, n_episodes=100, seed=1000)
    assert returns.mean() >= -200, f"seed {seed}: mean evaluation return {returns.mean():.1f} < -200"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_td3_learns_pendulum_within_20k_steps(seed):
    """TD3 with the default (RL Zoo) settings: >= -200 mean return over 100 deterministic episodes after
    20,000 environment steps, the first 10,000 of them random (the Zoo reports about -152).

    Measured when written: seeds 0 and 1 trained this way scored -152.6 and -151.8 over the benchmark's 100
    episodes (Stable-Baselines3's TD3 -150.3 and -151.2), about 2.5 minutes of CPU time each on one thread.
    """
    r = train_td3(ENV, TD3Config(), seed=seed)
    returns = evaluate_actor(r.actor, ENV, n_episodes=100, seed=1000)
    assert returns.mean() >= -200, f"seed {seed}: mean evaluation return {returns.mean():.1f} < -200"


# --------------------------------------------------------------------------- bad input

ACTOR = DeterministicActor(3, 1, (8,), [-2.0], [2.0], seeds=[0])
SAC_ACTOR = SquashedGaussianActor(3, 1, (8,), [-2.0], [2.0], seeds=[0])
CRITICS = Critics(3, 1, (8,), seeds=[0])
TWO_CRITICS = Critics(3, 1, (8,), seeds=[0, 1])
NAN = float("nan")


def sac(**changes):
    return lambda: SACConfig(**changes)


def td3(**changes):
    return lambda: TD3Config(**changes)


BAD = [
    ("soft-target", lambda: soft_update("net", CRITICS, 0.1), TypeError, r"target must be a torch.nn.Module"),
    ("soft-tau", lambda: soft_update(CRITICS, CRITICS, 1.5), ValueError, r"tau must lie in \[0, 1\]"),
    ("soft-shapes", lambda: soft_update(CRITICS, ACTOR, 0.1), ValueError,
     r"target and source must have parameters of the same shapes"),
    ("logp-shape", lambda: squashed_gaussian_log_prob(np.zeros((2, 1)), np.zeros((2, 2)), np.zeros((2, 1))),
     ValueError, r"log_std must have the shape of mean"),
    ("logp-nan", lambda: squashed_gaussian_log_prob(np.zeros(1), np.zeros(1), [NAN]), ValueError,
     r"pre_tanh must be finite"),
    ("logp-scalar", lambda: squashed_gaussian_log_prob(0.0, 0.0, 0.0), ValueError, r"mean must have at least one axis"),
    ("logp-str", lambda: squashed_gaussian_log_prob("a", [0.0], [0.0]), TypeError, r"mean must be an array of numbers"),
    ("logp-int-tensor", lambda: squashed_gaussian_log_prob(torch.zeros(1, dtype=torch.int64), [0.0], [0.0]),
     TypeError, r"mean must be a float tensor"),
    ("temp-alpha", lambda: temperature_loss(0.0, [-1.0], -1.0), TypeError, r"log_alpha must be a float tensor"),
    ("temp-shape", lambda: temperature_loss(torch.zeros(2), [-1.0, 0.0], -1.0), ValueError,
     r"log_probs must have shape"),
    ("temp-empty", lambda: temperature_loss(torch.zeros(()), [], -1.0), ValueError, r"log_probs must have shape"),
    ("temp-target", lambda: temperature_loss(torch.zeros(()), [-1.0], NAN), ValueError,
     r"target_entropy must be a finite number"),
    ("stack-sizes", lambda: MLPStack((3,), [0]), TypeError, r"sizes must be a tuple of at least two"),
    ("stack-seeds", lambda: MLPStack((3, 1), []), TypeError, r"seeds must be a non-empty sequence"),
    ("stack-seed-neg", lambda: MLPStack((3, 1), [-1]), ValueError, r"seeds must be an integer in 0 \.\. "),
    ("stack-select", lambda: MLPStack((3, 1), [0]).select([1]), ValueError, r"members must be an integer in 0 .. 0"),
    ("critics-hidden", lambda: Critics(3, 1, hidden=()), TypeError, r"hidden must be a non-empty tuple"),
    ("critics-n", lambda: Critics(3, 1, n_critics=0), ValueError, r"n_critics must be a positive integer"),
    ("critics-q-agents", lambda: TWO_CRITICS.q_values(np.zeros((1, 3)), np.zeros((1, 1))), ValueError,
     r"q_values is for one agent"),
    ("critics-q-shape", lambda: CRITICS.q_values(np.zeros((2, 3)), np.zeros((3, 1))), ValueError,
     r"actions must have shape \(2, 1\)"),
    ("actor-bounds", lambda: DeterministicActor(3, 1, (8,), [2.0], [-2.0]), ValueError, r"high must be above low"),
    ("actor-low-shape", lambda: DeterministicActor(3, 2, (8,), [0.0], [1.0, 1.0]), ValueError,
     r"low must have shape \(act_dim,\)"),
    ("actor-obs", lambda: ACTOR.act(np.zeros((2, 4))), ValueError, r"obs must have shape \(n, 3\)"),
    ("actor-logp-bound", lambda: SAC_ACTOR.log_prob(np.zeros((1, 3)), [[1.0]]), ValueError,
     r"actions must lie strictly inside"),
    ("config-steps", sac(total_steps=0), ValueError, r"total_steps must be a positive integer"),
    ("config-batch", sac(batch_size=10, buffer_size=5), ValueError, r"batch_size must be at most buffer_size"),
    ("config-gamma", sac(gamma=1.0), ValueError, r"gamma must lie in \[0, 1\)"),
    ("config-tau", sac(tau=0.0), ValueError, r"tau must lie in \(0, 1\]"),
    ("config-lr", sac(learning_rate=-1.0), ValueError, r"learning_rate must be a finite number > 0"),
    ("config-hidden", sac(hidden=64), TypeError, r"hidden must be a non-empty tuple"),
    ("config-ent", sac(ent_coef=-0.1), ValueError, r"ent_coef must be a finite number >= 0"),
    ("config-init-ent", sac(init_ent_coef=0.0), ValueError, r"init_ent_coef must be a finite number > 0"),
    ("config-correction", sac(log_prob_correction=1), TypeError, r"log_prob_correction must be True or False"),
    ("config-trunc", sac(truncation_as_termination="no"), TypeError, r"truncation_as_termination must be True"),
    ("config-starts", td3(learning_starts=-1), ValueError, r"learning_starts must be an integer >= 0"),
    ("config-noise", td3(action_noise=-0.1), ValueError, r"action_noise must be a finite number >= 0"),
    ("config-delay", td3(policy_delay=0), ValueError, r"policy_delay must be a positive integer"),
    ("config-cdq", td3(clipped_double_q=None), TypeError, r"clipped_double_q must be True or False"),
    ("config_dict", lambda: op.config_dict({}), TypeError, r"config must be a SACConfig or a TD3Config"),
    ("train-config", lambda: train_sac(ENV, TD3Config()), TypeError, r"config must be a SACConfig"),
    ("train-config-td3", lambda: train_td3(ENV, SACConfig()), TypeError, r"config must be a TD3Config"),
    ("train-ddpg-fixes", lambda: train_ddpg(ENV, TD3Config()), ValueError, r"config has TD3's fixes switched on"),
    ("train-env", lambda: train_sac("CartPole-v1", TINY_SAC), ValueError, r"flat, bounded Box actions"),
    ("train-env-id", lambda: train_sac("NoSuchEnv-v0", TINY_SAC), ValueError, r"is not a gymnasium environment"),
    ("train-env-type", lambda: train_sac(3, TINY_SAC), TypeError, r"env_id must be the id"),
    ("train-seed", lambda: train_sac(ENV, TINY_SAC, seed=-1), ValueError, r"seed must be an integer in 0"),
    ("train-eval", lambda: train_sac(ENV, TINY_SAC, eval_every=-1), ValueError, r"eval_every must be an integer >= 0"),
    ("train-episodes", lambda: train_sac(ENV, TINY_SAC, eval_episodes=0), ValueError,
     r"eval_episodes must be a positive integer"),
    ("train-description", lambda: train_sac(ENV, TINY_SAC, description=3), TypeError, r"description must be a string"),
    ("train-threads", lambda: train_sac(ENV, TINY_SAC, threads=0), ValueError, r"threads must be a positive integer"),
    ("train-checkpoints", lambda: train_sac(ENV, TINY_SAC, checkpoints="yes"), TypeError,
     r"checkpoints must be True or False"),
    ("train-seeds-repeat", lambda: train_seeds(ENV, TINY_SAC, [1, 1]), ValueError, r"seeds must be distinct"),
    ("train-seeds-config", lambda: train_seeds(ENV, {}, [1]), TypeError, r"config must be a SACConfig or a TD3Config"),
    ("train-seeds-mixed", lambda: train_seeds(ENV, [TINY_SAC, TINY_TD3], [1, 2]), ValueError,
     r"config must be all SACConfigs or all TD3Configs"),
    ("train-seeds-differ", lambda: train_seeds(ENV, [TINY_TD3, replace(TINY_TD3, policy_delay=1)], [1, 2]),
     ValueError, r"may differ only in .*; these differ in policy_delay"),
    ("train-seeds-length", lambda: train_seeds(ENV, [TINY_TD3], [1, 2]), ValueError,
     r"config must have one entry per seed \(2\), got 1"),
    ("eval-actor", lambda: evaluate_actor(CRITICS, ENV), TypeError, r"actor must be a DeterministicActor"),
    ("eval-env", lambda: evaluate_actor(DeterministicActor(4, 1, (8,), [-1.0], [1.0]), ENV), ValueError,
     r"actor takes 4 numbers and returns 1"),
    ("eval-episodes", lambda: evaluate_actor(ACTOR, ENV, n_episodes=0), ValueError,
     r"n_episodes must be a positive integer"),
    ("values-critics", lambda: value_estimates(ACTOR, ACTOR, ENV, 0.9), TypeError, r"critics must be a Critics"),
    ("values-agents", lambda: value_estimates(ACTOR, TWO_CRITICS, ENV, 0.9), ValueError,
     r"critics must be one agent's critics"),
    ("values-gamma", lambda: value_estimates(ACTOR, CRITICS, ENV, 1.0), ValueError, r"gamma must lie in \[0, 1\)"),
    ("values-tail", lambda: value_estimates(ACTOR, CRITICS, ENV, 0.9, tail=-1), ValueError,
     r"tail must be an integer >= 0"),
]


def test_every_public_function_has_bad_input_cases():
    ids = [case[0] for case in BAD]
    assert len(set(ids)) == len(ids)
    covered = {case[0].split("-")[0] for case in BAD}
    assert covered == {"soft", "logp", "temp", "stack", "critics", "actor", "config", "config_dict", "train", "eval",
                       "values"}


@pytest.mark.parametrize("call, error, message", [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_input_is_refused_with_the_argument_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------- the exercise's checker


def _reader_gaussian(mean, log_std, u):
    return -0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)


def test_the_checker_passes_the_reference_and_a_stable_numpy_solution():
    from rl2llm.exercises import check_squashed_log_prob

    def solution(mean, log_std, u):
        return (_reader_gaussian(mean, log_std, u) - 2 * (np.log(2) - u - np.logaddexp(0, -2 * u))).sum(-1)

    assert check_squashed_log_prob(solution).passed
    assert check_squashed_log_prob(squashed_gaussian_log_prob).passed       # tensors are accepted too


@pytest.mark.parametrize("wrong, failing, hint", [
    (lambda m, l, u: _reader_gaussian(m, l, u).sum(-1), 5, "subtract log(1 - tanh(u)^2)"),
    (lambda m, l, u: (_reader_gaussian(m, l, u) + 2 * (np.log(2) - u - np.logaddexp(0, -2 * u))).sum(-1), 5,
     "wrong sign"),
    (lambda m, l, u: (_reader_gaussian(m, l, u) - np.log(np.abs(1 - u ** 2))).sum(-1), 5, "not u itself"),
    (lambda m, l, u: (_reader_gaussian(m, l, u) - np.log(1 - np.tanh(u) ** 2)).sum(-1), 1, "softplus"),
    (lambda m, l, u: (_reader_gaussian(m, l, u) - 2 * (np.log(2) - u - np.logaddexp(0, -2 * u))), 5, "sum"),
    (lambda m, l, u: (-0.5 * ((u - m) / np.exp(l)) ** 2 - l - 2 * (np.log(2) - u - np.logaddexp(0, -2 * u))).sum(-1),
     5, "log(2 pi)"),
    (lambda m, l, u: (-0.5 * ((u - m) / l) ** 2 - np.log(np.abs(l)) - 0.5 * np.log(2 * np.pi)
                      - 2 * (np.log(2) - u - np.logaddexp(0, -2 * u))).sum(-1), 5, "std = exp(log_std)"),
])
def test_the_checker_names_the_classic_mistakes(wrong, failing, hint):
    from rl2llm.exercises import check_squashed_log_prob

    with np.errstate(all="ignore"):
        result = check_squashed_log_prob(wrong)
    assert not result.passed and len(result.failures) == failing
    assert all(hint in case.hint for case in result.failures), result.report()


def test_the_checker_reports_a_crash_a_none_and_a_wrong_signature():
    from rl2llm.exercises import check_squashed_log_prob

    def crash(mean, log_std, u):
        raise ValueError("not yet")

    assert "raised ValueError: not yet" in check_squashed_log_prob(crash).cases[0].message
    assert "forget the return" in check_squashed_log_prob(lambda m, l, u: None).cases[0].message
    with pytest.raises(TypeError, match="fn must take 3 arguments"):
        check_squashed_log_prob(lambda m, l: None)
    with pytest.raises(TypeError, match="fn must be your function"):
        check_squashed_log_prob("solution")
