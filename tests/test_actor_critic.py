"""A2C (Lecture 4): the networks, the loop's bookkeeping over vector environments, and CartPole learned."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl2llm import actor_critic
from rl2llm.actor_critic import A2CConfig, evaluate_policy, make_networks, train_a2c
from rl2llm.policies import CategoricalMLP, ValueMLP

TINY = A2CConfig(n_envs=4, n_steps=5, total_steps=400, hidden=(16, 16))


def test_the_defaults_are_stable_baselines3s():
    c = A2CConfig()
    assert (c.n_envs, c.n_steps, c.learning_rate, c.gamma, c.gae_lambda, c.ent_coef, c.vf_coef, c.max_grad_norm,
            c.hidden, c.shared, c.rmsprop_alpha, c.rmsprop_eps, c.normalize_advantage) == \
        (8, 5, 7e-4, 0.99, 1.0, 0.0, 0.5, 0.5, (64, 64), False, 0.99, 1e-5, False)
    assert c.bootstrap_truncated and c.max_episode_steps is None


def test_separate_networks_share_nothing_and_shared_ones_share_the_body():
    torch.manual_seed(0)
    policy, value = make_networks(4, 2, (8, 8), shared=False)
    assert isinstance(policy, CategoricalMLP) and isinstance(value, ValueMLP)
    assert not {id(p) for p in policy.parameters()} & {id(p) for p in value.parameters()}
    assert len(actor_critic.parameters(policy, value)) == 12
    policy, value = make_networks(4, 2, (8, 8), shared=True)
    assert value.net[0] is policy.net[0] and value.net[2] is policy.net[2]
    assert value.net[4] is not policy.net[4]
    assert len(actor_critic.parameters(policy, value)) == 8   # 2 hidden layers + 2 heads, each weight and bias


def test_initialisation_is_orthogonal_with_stable_baselines3s_gains():
    torch.manual_seed(0)
    policy, value = make_networks(4, 2, (64, 64))
    w = policy.net[2].weight.detach()
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(64), atol=1e-4)       # gain sqrt(2)
    head = policy.net[4].weight.detach()
    assert torch.allclose(head @ head.T, 1e-4 * torch.eye(2), atol=1e-8)  # gain 0.01: near-uniform actions
    v = value.net[4].weight.detach()
    assert torch.isclose((v @ v.T)[0, 0], torch.tensor(1.0), atol=1e-5)
    assert all((layer.bias == 0).all() for layer in (*policy.net, *value.net) if hasattr(layer, "bias"))


def test_the_numpy_actor_samples_from_the_policy():
    torch.manual_seed(1)
    policy = CategoricalMLP(4, 3, hidden=(8,))
    with torch.no_grad():
        policy.net[-1].weight.mul_(300.0)   # make the probabilities far from uniform
    obs = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    probs = torch.softmax(policy(torch.from_numpy(obs)), dim=-1).detach().numpy()
    act = actor_critic._numpy_actor(policy, np.random.default_rng(0))
    draws = np.stack([act(obs) for _ in range(20_000)])
    for row in range(2):
        freq = np.bincount(draws[:, row], minlength=3) / len(draws)
        assert np.abs(freq - probs[row]).max() < 0.015, (freq, probs[row])


def test_training_runs_and_keeps_its_books():
    result = train_a2c("CartPole-v1", TINY, seed=0, eval_every=200, eval_episodes=2)
    assert result.env_steps == 400 and result.steps_per_second > 0
    assert result.value_losses.shape == (20,) and np.isfinite(result.value_losses).all()
    assert result.entropies.shape == (20,) and (result.entropies <= np.log(2) + 1e-6).all()
    assert result.eval_steps.tolist() == [200, 400] and result.eval_returns.shape == (2, 2)
    assert len(result.episode_returns) == len(result.episode_end_steps) > 0
    assert (np.diff(result.episode_end_steps) >= 0).all()


def test_reset_steps_are_not_counted_as_steps_of_an_episode():
    """With a time limit of 7 steps, every episode pays 1 per step and lasts at most 7."""
    config = A2CConfig(n_envs=3, n_steps=4, total_steps=600, hidden=(8,), max_episode_steps=7)
    result = train_a2c("CartPole-v1", config, seed=2)
    assert (result.episode_returns <= 7).all() and (result.episode_returns == 7).any()


def test_a_reset_step_is_masked_out_of_the_update(monkeypatch):
    """Spy on the update: the reset steps that follow episode ends are marked invalid, nothing else."""
    seen = []
    original = actor_critic._a2c_update

    def spy(policy, value, params, optimizer, c, obs, actions, rewards, terminated, truncated, valid):
        seen.append((terminated | truncated).copy())
        seen.append(valid.copy())
        return original(policy, value, params, optimizer, c, obs, actions, rewards, terminated, truncated, valid)

    monkeypatch.setattr(actor_critic, "_a2c_update", spy)
    config = A2CConfig(n_envs=2, n_steps=3, total_steps=300, hidden=(8,), max_episode_steps=5)
    train_a2c("CartPole-v1", config, seed=0)
    ends = np.concatenate(seen[0::2])
    valid = np.concatenate(seen[1::2])
    assert ends.any()
    assert np.array_equal(~valid[1:], ends[:-1])   # invalid exactly on the step after an end
    assert valid[0].all()


def test_training_is_reproducible_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = train_a2c("CartPole-v1", TINY, seed=3)
    assert torch.equal(torch.rand(1), before)
    b = train_a2c("CartPole-v1", TINY, seed=3)
    c = train_a2c("CartPole-v1", TINY, seed=4)
    assert np.array_equal(a.value_losses, b.value_losses)
    assert np.array_equal(a.episode_returns, b.episode_returns)
    assert not np.array_equal(a.value_losses, c.value_losses)


@pytest.mark.parametrize("changes", [{"shared": True}, {"bootstrap_truncated": False}, {"normalize_advantage": True},
                                     {"gae_lambda": 0.95, "ent_coef": 0.01, "max_grad_norm": None}])
def test_every_switch_trains(changes):
    config = A2CConfig(**{**TINY.__dict__, **changes})
    result = train_a2c("CartPole-v1", config, seed=0)
    assert np.isfinite(result.value_losses).all() and result.env_steps == 400


def test_the_bug_switch_changes_only_truncated_episodes():
    """Without time limits reached, treating truncation as termination changes nothing."""
    short = dict(TINY.__dict__, total_steps=200)
    a = train_a2c("CartPole-v1", A2CConfig(**short), seed=5)
    b = train_a2c("CartPole-v1", A2CConfig(**{**short, "bootstrap_truncated": False}), seed=5)
    assert np.array_equal(a.value_losses, b.value_losses)
    capped = dict(short, max_episode_steps=6)
    a = train_a2c("CartPole-v1", A2CConfig(**capped), seed=5)
    b = train_a2c("CartPole-v1", A2CConfig(**{**capped, "bootstrap_truncated": False}), seed=5)
    assert not np.array_equal(a.value_losses, b.value_losses)


def test_evaluation_is_greedy_and_reproducible():
    torch.manual_seed(0)
    policy = CategoricalMLP(4, 2, hidden=(8,))
    a = evaluate_policy(policy, "CartPole-v1", 5, seed=7)
    assert a.shape == (5,) and np.array_equal(a, evaluate_policy(policy, "CartPole-v1", 5, seed=7))
    sampled = evaluate_policy(policy, "CartPole-v1", 5, seed=7, greedy=False)
    assert np.array_equal(sampled, evaluate_policy(policy, "CartPole-v1", 5, seed=7, greedy=False))
    with torch.no_grad():
        policy.net[-1].bias.copy_(torch.tensor([100.0, 0.0]))   # always push left: the pole falls soon
    assert evaluate_policy(policy, "CartPole-v1", 5, seed=7).max() < 15
    assert evaluate_policy(policy, "CartPole-v1", 5, seed=7, greedy=False).max() < 15


@pytest.mark.slow
def test_a2c_balances_cartpole():
    """A mean greedy return >= 475 over 100 evaluation episodes on CartPole-v1, for each of seeds 0, 1, 2.

    The default A2CConfig (Stable-Baselines3's A2C and the RL Zoo's CartPole budget: 500,000 steps,
    8 environments); the policy after the last update, evaluated on 100 fresh episodes.
    """
    for seed in range(3):
        result = train_a2c("CartPole-v1", A2CConfig(), seed=seed)
        returns = evaluate_policy(result.policy, "CartPole-v1", 100, seed=123)
        assert returns.mean() >= 475, (seed, returns.mean())


# --------------------------------------------------------------------------- bad input

POLICY = CategoricalMLP(4, 2, hidden=(8,))


def config(**changes):
    return lambda: A2CConfig(**changes)


BAD = [
    ("config-n_envs-0", config(n_envs=0), ValueError, r"n_envs must be a positive integer"),
    ("config-n_steps-float", config(n_steps=5.0), TypeError, r"n_steps must be an integer"),
    ("config-total_steps-0", config(total_steps=0), ValueError, r"total_steps must be a positive integer"),
    ("config-lr-0", config(learning_rate=0.0), ValueError, r"learning_rate must be a finite number > 0"),
    ("config-gamma", config(gamma=1.01), ValueError, r"gamma must lie in \[0, 1\]"),
    ("config-lambda", config(gae_lambda=-0.5), ValueError, r"gae_lambda must lie in \[0, 1\]"),
    ("config-ent_coef", config(ent_coef=-0.01), ValueError, r"ent_coef must be a finite number >= 0"),
    ("config-vf_coef-nan", config(vf_coef=float("nan")), ValueError, r"vf_coef must be a finite number"),
    ("config-clip-0", config(max_grad_norm=0.0), ValueError, r"max_grad_norm must be a finite number > 0"),
    ("config-hidden-empty", config(hidden=()), TypeError, r"hidden must be a non-empty tuple"),
    ("config-hidden-0", config(hidden=(64, 0)), ValueError, r"hidden must be a positive integer"),
    ("config-shared-int", config(shared=1), TypeError, r"shared must be True or False"),
    ("config-alpha-1", config(rmsprop_alpha=1.0), ValueError, r"rmsprop_alpha must lie in \[0, 1\)"),
    ("config-eps-0", config(rmsprop_eps=0.0), ValueError, r"rmsprop_eps must be a finite number > 0"),
    ("config-normalize-str", config(normalize_advantage="no"), TypeError, r"normalize_advantage must be True"),
    ("config-bootstrap-none", config(bootstrap_truncated=None), TypeError, r"bootstrap_truncated must be True"),
    ("config-limit-0", config(max_episode_steps=0), ValueError, r"max_episode_steps must be a positive integer"),
    ("train-env-unknown", lambda: train_a2c("NoSuchEnv-v0", TINY), ValueError, r"env_id 'NoSuchEnv-v0' is not"),
    ("train-env-continuous", lambda: train_a2c("Pendulum-v1", TINY), ValueError,
     r"env_id 'Pendulum-v1' must have a flat Box observation space and a Discrete action"),
    ("train-env-object", lambda: train_a2c(gym.make("CartPole-v1"), TINY), TypeError,
     r"env_id must be the id of a gymnasium environment"),
    ("train-config-dict", lambda: train_a2c("CartPole-v1", {"n_envs": 2}), TypeError,
     r"config must be an A2CConfig"),
    ("train-seed-negative", lambda: train_a2c("CartPole-v1", TINY, seed=-1), ValueError, r"seed must be an integer"),
    ("train-eval_every-negative", lambda: train_a2c("CartPole-v1", TINY, eval_every=-1), ValueError,
     r"eval_every must be an integer >= 0"),
    ("train-eval_episodes-0", lambda: train_a2c("CartPole-v1", TINY, eval_episodes=0), ValueError,
     r"eval_episodes must be a positive integer"),
    ("train-threads-0", lambda: train_a2c("CartPole-v1", TINY, threads=0), ValueError,
     r"threads must be a positive integer"),
    ("train-description-int", lambda: train_a2c("CartPole-v1", TINY, description=1), TypeError,
     r"description must be a string or None"),
    ("networks-shared-str", lambda: make_networks(4, 2, (8,), shared="yes"), TypeError,
     r"shared must be True or False"),
    ("networks-hidden-empty", lambda: make_networks(4, 2, ()), TypeError, r"hidden must be a non-empty tuple"),
    ("networks-obs_dim-0", lambda: make_networks(0, 2), ValueError, r"obs_dim must be a positive integer"),
    ("eval-policy-str", lambda: evaluate_policy("policy", "CartPole-v1"), TypeError,
     r"policy must be a CategoricalMLP"),
    ("eval-policy-misfit", lambda: evaluate_policy(CategoricalMLP(3, 2), "CartPole-v1"), ValueError,
     r"policy takes 3 numbers and chooses among 2 actions"),
    ("eval-episodes-0", lambda: evaluate_policy(POLICY, "CartPole-v1", 0), ValueError,
     r"n_episodes must be a positive integer"),
    ("eval-seed-negative", lambda: evaluate_policy(POLICY, "CartPole-v1", 1, seed=-2), ValueError,
     r"seed must be an integer >= 0"),
    ("eval-greedy-int", lambda: evaluate_policy(POLICY, "CartPole-v1", 1, greedy=1), TypeError,
     r"greedy must be True or False"),
]


def test_there_are_bad_input_cases_for_every_public_function():
    ids = [case[0] for case in BAD]
    assert len(set(ids)) == len(ids)
    assert {case[0].split("-")[0] for case in BAD} == {"config", "train", "networks", "eval"}


@pytest.mark.parametrize("call, error, message", [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_input_is_refused_with_the_argument_named(call, error, message):
    with pytest.raises(error, match=message):
        call()
