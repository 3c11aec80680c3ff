"""rl2llm.vector (Lecture 6, "RL past one process"): timing the ways gymnasium steps many copies of an environment."""

import numpy as np
import pytest

from rl2llm.vector import MODES, VectorTiming, time_vector_env


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_steps_every_copy_once_per_call(mode):
    t = time_vector_env("CartPole-v1", 3, mode, n_steps=20)
    assert isinstance(t, VectorTiming) and t.mode == mode and t.n_envs == 3
    assert t.env_steps == 60 and t.seconds > 0 and t.startup_seconds > 0
    assert t.steps_per_second == pytest.approx(60 / t.seconds)


def test_the_actions_come_from_act_given_a_batch_of_observations():
    seen = []

    def act(obs):
        seen.append(obs.shape)
        return np.zeros(len(obs), dtype=np.int64)

    time_vector_env("CartPole-v1", 4, "sync", n_steps=10, act=act)
    assert seen == [(4, 4)] * 15          # 5 warm-up calls, then the 10 timed ones


def test_continuous_actions_are_drawn_within_the_bounds():
    assert time_vector_env("Pendulum-v1", 2, "sync", n_steps=5).env_steps == 10


def test_a_delay_slows_every_copy_and_async_copies_wait_together():
    sync = time_vector_env("CartPole-v1", 4, "sync", n_steps=10, delay=0.01)
    assert sync.seconds >= 4 * 10 * 0.01            # one copy after the other
    parallel = time_vector_env("CartPole-v1", 4, "async", n_steps=10, delay=0.01)
    assert parallel.seconds >= 10 * 0.01 and parallel.steps_per_second > 1.5 * sync.steps_per_second


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="env_id"):
        time_vector_env(None, 2)
    with pytest.raises(ValueError, match="env_id"):
        time_vector_env("NoSuchEnv-v0", 2)
    with pytest.raises(ValueError, match="n_envs"):
        time_vector_env("CartPole-v1", 0)
    with pytest.raises(ValueError, match="n_steps"):
        time_vector_env("CartPole-v1", 2, n_steps=0)
    with pytest.raises(ValueError, match="mode"):
        time_vector_env("CartPole-v1", 2, mode="threads")
    with pytest.raises(TypeError, match="act"):
        time_vector_env("CartPole-v1", 2, act="greedy")
    with pytest.raises(ValueError, match="delay"):
        time_vector_env("CartPole-v1", 2, delay=-1)
    with pytest.raises(ValueError, match="delay"):
        time_vector_env("CartPole-v1", 2, mode="vector_entry_point", delay=0.01)
    with pytest.raises(ValueError, match="seed"):
        time_vector_env("CartPole-v1", 2, seed=-3)
    with pytest.raises(ValueError, match="vector_entry_point"):
        time_vector_env("Pendulum-v1", 2, mode="vector_entry_point")


@pytest.mark.slow
def test_runs_in_worker_processes_give_the_same_results_in_order():
    """Slow only because the workers import torch: tens of seconds on a loaded two-core machine."""
    from rl2llm.ppo import PPOConfig, train_ppo
    from rl2llm.vector import run_in_processes

    tiny = PPOConfig(n_envs=4, n_steps=16, batch_size=32, n_epochs=2, total_steps=128, hidden=(8,))
    jobs = [dict(env_id="CartPole-v1", config=tiny, seed=seed) for seed in (0, 1, 2)]
    here = run_in_processes(train_ppo, jobs, processes=1)
    there = run_in_processes(train_ppo, jobs, processes=2)
    assert [r.seed for r in there] == [0, 1, 2]
    for a, b in zip(here, there):
        assert np.array_equal(a.episode_returns, b.episode_returns) and np.array_equal(a.value_losses, b.value_losses)


def test_run_in_processes_names_its_bad_arguments():
    from rl2llm.vector import run_in_processes

    with pytest.raises(TypeError, match="fn"):
        run_in_processes("train", [{}])
    with pytest.raises(TypeError, match="jobs"):
        run_in_processes(print, [1, 2])
    with pytest.raises(ValueError, match="processes"):
        run_in_processes(print, [{}], processes=0)
