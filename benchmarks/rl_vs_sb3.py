"""Deep RL: rl2llm against Stable-Baselines3, same hyperparameters, same machine, same run.

Each algorithm is trained by both libraries with the RL Baselines3 Zoo's
hyperparameters for the environment (``rl-zoo3``'s ``hyperparams/<algo>.yml``),
for the Zoo's number of environment steps, on the same seeds. Per seed the two
sides run one after the other in the same process, the order alternating from
seed to seed (ours first on even seeds, Stable-Baselines3 first on odd ones), so
that a change in the machine's load hits both. Both run on the CPU with the same
number of PyTorch threads (``--threads``, 1 by default: fair on a two-core
machine, and for networks this small a second thread buys nothing). Each library
runs as it ships: our ``train_dqn`` flushes denormal floats to zero during its own
run (``rl2llm.dqn.flush_denormals``; Adam's decayed state otherwise makes its step
several times slower), and Stable-Baselines3 is left with PyTorch's default.

Rows so far (Part II adds PPO, SAC and TD3 to ``ALGORITHMS``):

* **DQN on CartPole-v1**, 50,000 steps. Zoo: lr 2.3e-3, batch 64, buffer
  100,000, learning_starts 1,000, gamma 0.99, target_update_interval 10,
  train_freq 256, gradient_steps 128, exploration_fraction 0.16,
  exploration_final_eps 0.04, net_arch [256, 256]; Stable-Baselines3's defaults
  fill in the rest (exploration_initial_eps 1.0, max_grad_norm 10, Huber loss,
  Adam). Ours gets the same numbers through ``DQNConfig`` (``train_every`` is
  train_freq, ``epsilon_fraction``/``epsilon_end`` the exploration schedule,
  ``hidden`` the net_arch, and ``max_grad_norm=10`` because Stable-Baselines3
  clips there by default) with one translation: Stable-Baselines3 counts
  ``target_update_interval`` in *environment steps* and copies the network into
  the target network every 10 steps while it collects, but the network only
  changes in the training phase (128 gradient steps after every 256
  environment steps). So its target network is the online network as it stood
  at the start of each training phase: one copy per 128 gradient steps, which
  is our ``target_update=128`` (counted in gradient steps).
* **A2C on CartPole-v1**, 500,000 steps. Zoo: n_envs 8, ent_coef 0.0, and
  Stable-Baselines3's A2C defaults (n_steps 5, lr 7e-4, gamma 0.99, gae_lambda
  1.0, vf_coef 0.5, max_grad_norm 0.5, RMSprop with alpha 0.99 and eps 1e-5,
  separate actor and critic of two 64-unit tanh layers, orthogonal
  initialisation), which are ``A2CConfig``'s defaults.
* **PPO on CartPole-v1**, 100,000 steps. Zoo: n_envs 8, n_steps 32, batch_size
  256, gae_lambda 0.8, gamma 0.98, n_epochs 20, ent_coef 0.0, learning_rate
  lin_0.001 and clip_range lin_0.2 (both fall linearly to 0 over training: our
  ``anneal_lr`` and ``anneal_clip``), and Stable-Baselines3's PPO defaults
  (vf_coef 0.5, max_grad_norm 0.5, advantages normalised per minibatch, no value
  clipping, Adam eps 1e-5, separate 64-64 tanh networks, orthogonal
  initialisation), which are ``PPOConfig``'s defaults. The speed goal is 2x.

Timed (``time.perf_counter``): training only, from building the model (our
``train_*`` call; Stable-Baselines3's constructor plus ``learn()``) to the end
of training, with no evaluation during training and no logging on either side.
Steps per second = environment steps taken (over all parallel copies) / those
seconds. The process's CPU time (``time.process_time``) over the same span is
recorded too: on a shared machine other work stretches the wall clock, much
less the CPU time, so the two ratios differing says the load distorted one. Evaluated apart, untimed, by one loop for both sides: the trained
policy acts greedily (our argmax; Stable-Baselines3's
``predict(deterministic=True)``) in 100 episodes whose starts are the same for
every model (``reset(seed=EVAL_SEED + i)``); the score is the mean return (the
Zoo's CartPole-v1 is "solved" at 475, its maximum is 500).

Writes ``benchmarks/results/<environment>.json`` (``cartpole.json``): the date,
the machine (CPU model, cores, load average before and after), the versions,
the rl2llm commit, the settings and, per algorithm, per library and per seed,
the evaluation return (mean and std over the episodes), the steps, the seconds
and the steps per second. A run of some algorithms keeps the others' results in
the file. ``book/benchmarks.md`` shows the file. ``--quick`` runs a few
thousand steps of each, one seed, ten evaluation episodes, and writes a file only
where ``--out`` says (so that it never replaces the published figures).

Run:  python benchmarks/rl_vs_sb3.py [--quick] [--algos dqn a2c] [--seeds 0 1 2] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import load_average, provenance  # noqa: E402  (a sibling module of this script)

with contextlib.redirect_stderr(io.StringIO()):  # SB3 imports the old gym if present; it prints a notice
    import stable_baselines3 as sb3
    from stable_baselines3.common.logger import Logger

from rl2llm.rollouts import play_episodes  # noqa: E402

#: SB3's logger with no output (verbose=0 prints nothing anyway; this one does not create a folder in /tmp)
QUIET = Logger(folder=None, output_formats=[])

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCHEMA = 1
#: Every model is evaluated on the episodes that start from reset(seed=EVAL_SEED + i), i < episodes.
EVAL_SEED = 1_000_000
#: CartPole-v1 counts as solved at a mean return of 475 (gymnasium's reward_threshold).
RETURN_GOAL = 475.0
#: Ours should take at least this many times Stable-Baselines3's environment steps per second.
SPEED_GOAL = 1.5

Act = Callable[[np.ndarray], np.ndarray]  # a batch of observations -> a batch of actions


@dataclass
class Trained:
    act: Act
    env_steps: int
    seconds: float  # wall-clock
    cpu_seconds: float  # this process's CPU time (all its threads): less sensitive to other work on the machine


class Clock:
    """Wall-clock and CPU seconds since it was made."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def trained(self, act: Act, env_steps: int) -> Trained:
        return Trained(act, env_steps, time.perf_counter() - self.wall, time.process_time() - self.cpu)


# --------------------------------------------------------------------------- DQN

#: rl-zoo3 hyperparams/dqn.yml, CartPole-v1 (n_timesteps 5e4, policy MlpPolicy).
ZOO_DQN = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1_000, gamma=0.99,
               target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
               exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]))


def ours_dqn_config(total_steps: int):
    from rl2llm.dqn import DQNConfig

    z = ZOO_DQN
    assert z["target_update_interval"] < z["train_freq"], "the target translation below assumes it"
    return DQNConfig(
        total_steps=total_steps, learning_rate=z["learning_rate"], batch_size=z["batch_size"],
        buffer_size=z["buffer_size"], learning_starts=z["learning_starts"], gamma=z["gamma"],
        train_every=z["train_freq"], gradient_steps=z["gradient_steps"],
        target_update=z["gradient_steps"],  # one copy per training phase: see the docstring
        epsilon_start=1.0, epsilon_end=z["exploration_final_eps"], epsilon_fraction=z["exploration_fraction"],
        hidden=tuple(z["policy_kwargs"]["net_arch"]), max_grad_norm=10.0,  # SB3's default clipping
    )


def ours_dqn(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    from rl2llm.dqn import train_dqn

    config = ours_dqn_config(total_steps)
    clock = Clock()
    result = train_dqn(env_id, config, seed=seed, eval_every=0, threads=threads,
                       description=f"rl2llm DQN, seed {seed}")
    q = result.q_network
    return clock.trained(lambda obs: q.greedy_actions(obs), config.total_steps)


def sb3_dqn(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    clock = Clock()
    model = sb3.DQN("MlpPolicy", env_id, seed=seed, device="cpu", verbose=0, **ZOO_DQN)
    model.set_logger(QUIET)
    model.learn(total_timesteps=total_steps)
    return clock.trained(lambda obs: model.predict(obs, deterministic=True)[0], int(model.num_timesteps))


# --------------------------------------------------------------------------- A2C

def greedy(policy) -> Act:
    """Our categorical policy's most likely action for each observation (A2C's and PPO's evaluation)."""
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return policy(torch.as_tensor(obs, dtype=torch.float32)).argmax(dim=-1).numpy()

    return act


#: rl-zoo3 hyperparams/a2c.yml, CartPole-v1 (n_timesteps 5e5, policy MlpPolicy); the rest are SB3's defaults.
ZOO_A2C = dict(n_envs=8, ent_coef=0.0)


def ours_a2c_config(total_steps: int):
    from rl2llm.actor_critic import A2CConfig

    return A2CConfig(total_steps=total_steps, n_envs=ZOO_A2C["n_envs"], ent_coef=ZOO_A2C["ent_coef"])


def ours_a2c(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    from rl2llm.actor_critic import train_a2c

    clock = Clock()
    result = train_a2c(env_id, ours_a2c_config(total_steps), seed=seed, eval_every=0, threads=threads)
    return clock.trained(greedy(result.policy), int(result.env_steps))


def sb3_a2c(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    from stable_baselines3.common.env_util import make_vec_env

    clock = Clock()
    env = make_vec_env(env_id, n_envs=ZOO_A2C["n_envs"], seed=seed)
    model = sb3.A2C("MlpPolicy", env, ent_coef=ZOO_A2C["ent_coef"], seed=seed, device="cpu", verbose=0)
    model.set_logger(QUIET)
    model.learn(total_timesteps=total_steps)
    return clock.trained(lambda obs: model.predict(obs, deterministic=True)[0], int(model.num_timesteps))


# --------------------------------------------------------------------------- PPO

#: rl-zoo3 hyperparams/ppo.yml, CartPole-v1 (n_timesteps 1e5, policy MlpPolicy): "lin_x" is a schedule falling
#: linearly from x to 0 over training; the rest are SB3's PPO defaults (vf_coef 0.5, max_grad_norm 0.5, advantages
#: normalised per minibatch, no value clipping, Adam eps 1e-5, separate 64-64 tanh networks, orthogonal init).
ZOO_PPO = dict(n_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
               learning_rate="lin_0.001", clip_range="lin_0.2")


def _zoo_linear(value: str) -> float:
    assert value.startswith("lin_"), value
    return float(value[4:])


def ours_ppo_config(total_steps: int):
    from rl2llm.ppo import PPOConfig

    z = ZOO_PPO
    return PPOConfig(total_steps=total_steps, n_envs=z["n_envs"], n_steps=z["n_steps"], batch_size=z["batch_size"],
                     gae_lambda=z["gae_lambda"], gamma=z["gamma"], n_epochs=z["n_epochs"], ent_coef=z["ent_coef"],
                     learning_rate=_zoo_linear(z["learning_rate"]), anneal_lr=True,
                     clip_range=_zoo_linear(z["clip_range"]), anneal_clip=True)


def ours_ppo(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    from rl2llm.ppo import train_ppo

    clock = Clock()
    result = train_ppo(env_id, ours_ppo_config(total_steps), seed=seed, eval_every=0, threads=threads)
    return clock.trained(greedy(result.policy), int(result.env_steps))


def sb3_ppo(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    from stable_baselines3.common.env_util import make_vec_env

    z = ZOO_PPO
    lr, clip = _zoo_linear(z["learning_rate"]), _zoo_linear(z["clip_range"])
    clock = Clock()
    env = make_vec_env(env_id, n_envs=z["n_envs"], seed=seed)
    model = sb3.PPO("MlpPolicy", env, n_steps=z["n_steps"], batch_size=z["batch_size"], gae_lambda=z["gae_lambda"],
                    gamma=z["gamma"], n_epochs=z["n_epochs"], ent_coef=z["ent_coef"],
                    learning_rate=lambda progress: lr * progress, clip_range=lambda progress: clip * progress,
                    seed=seed, device="cpu", verbose=0)
    model.set_logger(QUIET)
    model.learn(total_timesteps=total_steps)
    return clock.trained(lambda obs: model.predict(obs, deterministic=True)[0], int(model.num_timesteps))


# --------------------------------------------------------------------------- SAC and TD3 (Pendulum-v1)

#: rl-zoo3 hyperparams/sac.yml, Pendulum-v1 (n_timesteps 2e4, policy MlpPolicy): only the learning rate; the rest
#: are SB3's SAC defaults (buffer 1e6, learning_starts 100, batch 256, tau 0.005, gamma 0.99, one gradient step per
#: environment step, ent_coef "auto" from 1.0 with target entropy -dim(A), net_arch [256, 256]), which are
#: SACConfig's defaults.
ZOO_SAC = dict(learning_rate=1e-3)

#: rl-zoo3 hyperparams/td3.yml, Pendulum-v1 (n_timesteps 2e4, policy MlpPolicy, noise_type normal); the rest are
#: SB3's TD3 defaults (batch 256, tau 0.005, policy_delay 2, target_policy_noise 0.2, target_noise_clip 0.5),
#: which with these are TD3Config's defaults.
ZOO_TD3 = dict(gamma=0.98, buffer_size=200_000, learning_starts=10_000, noise_std=0.1, gradient_steps=-1,
               train_freq=[1, "episode"], learning_rate=1e-3, policy_kwargs=dict(net_arch=[400, 300]))


def _sac_td3_actions(actions: np.ndarray) -> np.ndarray:
    """Continuous actions for ``evaluate``, which reshapes what ``act`` returns to one entry per observation (the
    discrete algorithms' shape): an array of objects, each entry one observation's action vector."""
    actions = np.asarray(actions, dtype=np.float32)
    rows = np.empty(len(actions), dtype=object)
    rows[:] = list(actions)
    return rows


def ours_sac(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    from rl2llm.offpolicy import SACConfig, train_sac

    clock = Clock()
    result = train_sac(env_id, SACConfig(total_steps=total_steps, learning_rate=ZOO_SAC["learning_rate"]),
                       seed=seed, eval_every=0, threads=threads)
    actor = result.actor
    return clock.trained(lambda obs: _sac_td3_actions(actor.act(obs)), result.env_steps)


def sb3_sac(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    clock = Clock()
    model = sb3.SAC("MlpPolicy", env_id, seed=seed, device="cpu", verbose=0, **ZOO_SAC)
    model.set_logger(QUIET)
    model.learn(total_timesteps=total_steps)
    return clock.trained(lambda obs: _sac_td3_actions(model.predict(obs, deterministic=True)[0]),
                         int(model.num_timesteps))


def _td3_starts(total_steps: int) -> int:
    """The Zoo's 10,000 random steps first, but never more than half the run: a quick run of a few thousand
    steps then still trains both sides (the full 20,000-step run is unchanged)."""
    return min(ZOO_TD3["learning_starts"], total_steps // 2)


def ours_td3(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    from rl2llm.offpolicy import TD3Config, train_td3

    z = ZOO_TD3
    episode = 200  # Pendulum-v1's episodes are always 200 steps (it never terminates): [1, "episode"] = 200 steps
    config = TD3Config(total_steps=total_steps, gamma=z["gamma"], buffer_size=z["buffer_size"],
                       learning_starts=_td3_starts(total_steps), action_noise=z["noise_std"], train_every=episode,
                       gradient_steps=episode, learning_rate=z["learning_rate"],
                       hidden=tuple(z["policy_kwargs"]["net_arch"]))
    clock = Clock()
    result = train_td3(env_id, config, seed=seed, eval_every=0, threads=threads)
    actor = result.actor
    return clock.trained(lambda obs: _sac_td3_actions(actor.act(obs)), result.env_steps)


def sb3_td3(env_id: str, total_steps: int, seed: int, threads: int) -> Trained:
    from stable_baselines3.common.noise import NormalActionNoise

    z = ZOO_TD3
    clock = Clock()
    noise = NormalActionNoise(mean=np.zeros(1), sigma=z["noise_std"] * np.ones(1))
    model = sb3.TD3("MlpPolicy", env_id, gamma=z["gamma"], buffer_size=z["buffer_size"],
                    learning_starts=_td3_starts(total_steps), action_noise=noise, gradient_steps=z["gradient_steps"],
                    train_freq=tuple(z["train_freq"]), learning_rate=z["learning_rate"],
                    policy_kwargs=z["policy_kwargs"], seed=seed, device="cpu", verbose=0)
    model.set_logger(QUIET)
    model.learn(total_timesteps=total_steps)
    return clock.trained(lambda obs: _sac_td3_actions(model.predict(obs, deterministic=True)[0]),
                         int(model.num_timesteps))


# --------------------------------------------------------------------------- the table of algorithms


@dataclass(frozen=True)
class Algorithm:
    name: str
    env_id: str
    steps: int  # the Zoo's n_timesteps
    quick_steps: int
    ours: Callable[..., Trained]
    theirs: Callable[..., Trained]
    hyperparameters: dict
    #: where the two sides' settings differ in form, and how they were matched (goes into the results)
    note: str = ""
    #: the goals: our mean evaluation return at least ``return_goal``, our steps/s at least
    #: ``speed_goal`` times Stable-Baselines3's
    return_goal: float = RETURN_GOAL
    speed_goal: float = SPEED_GOAL


ALGORITHMS = {
    "dqn": Algorithm("DQN", "CartPole-v1", 50_000, 2_048, ours_dqn, sb3_dqn, ZOO_DQN,
                     "SB3's target_update_interval=10 environment steps is one copy per training phase "
                     "(train_freq 256 > 10), i.e. our target_update=128 gradient steps; max_grad_norm 10 "
                     "(SB3's default) on both sides"),
    "a2c": Algorithm("A2C", "CartPole-v1", 500_000, 2_000, ours_a2c, sb3_a2c, ZOO_A2C,
                     "the rest are SB3's A2C defaults, which are A2CConfig's defaults"),
    "ppo": Algorithm("PPO", "CartPole-v1", 100_000, 2_048, ours_ppo, sb3_ppo, ZOO_PPO,
                     "lin_0.001 and lin_0.2: learning rate and clip range fall linearly to 0 (our anneal_lr and "
                     "anneal_clip); the rest are SB3's PPO defaults, which are PPOConfig's defaults",
                     speed_goal=2.0),
    "sac": Algorithm("SAC", "Pendulum-v1", 20_000, 1_000, ours_sac, sb3_sac, ZOO_SAC,
                     "the rest are SB3's SAC defaults, which are SACConfig's defaults; both sides use the "
                     "deterministic action (tanh of the mean) for evaluation",
                     return_goal=-157.0, speed_goal=1.0),
    "td3": Algorithm("TD3", "Pendulum-v1", 20_000, 1_000, ours_td3, sb3_td3, ZOO_TD3,
                     "train_freq [1, 'episode'] with gradient_steps -1 is train_every=200, gradient_steps=200 "
                     "(Pendulum's episodes are always 200 steps); noise_std 0.1 is Gaussian noise in the [-1, 1] "
                     "action scale on both sides; the rest are SB3's TD3 defaults",
                     return_goal=-152.0, speed_goal=1.0),
}


# --------------------------------------------------------------------------- evaluation


def evaluate(act: Act, env_id: str, n_episodes: int, seed: int = EVAL_SEED) -> np.ndarray:
    """Each episode's return when ``act`` plays ``n_episodes`` episodes in lockstep (episode i: reset(seed + i))."""
    return play_episodes(lambda obs: np.asarray(act(obs)).reshape(len(obs)), env_id, n_episodes, seed)


# --------------------------------------------------------------------------- running


def run_algorithm(key: str, seeds: list[int], threads: int, episodes: int, quick: bool) -> dict:
    algo = ALGORITHMS[key]
    steps = algo.quick_steps if quick else algo.steps
    load_before = load_average()
    runs = []
    for n, seed in enumerate(seeds):
        sides = [("rl2llm", algo.ours), ("stable-baselines3", algo.theirs)]
        for library, train in sides if n % 2 == 0 else sides[::-1]:
            print(f"[bench] {algo.name} {algo.env_id}, {library}, seed {seed}: training {steps:,} steps",
                  flush=True)
            torch.set_num_threads(threads)
            trained = train(algo.env_id, steps, seed, threads)
            returns = evaluate(trained.act, algo.env_id, episodes)
            run = {"library": library, "seed": seed, "return_mean": float(returns.mean()),
                   "return_std": float(returns.std()), "return_min": float(returns.min()),
                   "episodes": episodes, "env_steps": trained.env_steps, "seconds": round(trained.seconds, 6),
                   "steps_per_second": trained.env_steps / trained.seconds,
                   "cpu_seconds": round(trained.cpu_seconds, 6),
                   "steps_per_cpu_second": trained.env_steps / trained.cpu_seconds}
            print(f"[bench]   {trained.seconds:.1f} s ({trained.cpu_seconds:.1f} s CPU), "
                  f"{run['steps_per_second']:,.0f} steps/s, "
                  f"return {run['return_mean']:.1f} +- {run['return_std']:.1f}", flush=True)
            runs.append(run)
    return {
        "algorithm": algo.name, "env_id": algo.env_id,
        **provenance(("rl2llm", "torch", "gymnasium", "numpy", "stable-baselines3")),
        "load_average": {"before": load_before, "after": load_average()},
        "settings": {"quick": quick, "env_steps": steps, "seeds": seeds, "threads": threads,
                     "eval_episodes": episodes, "eval_seed": EVAL_SEED, "device": "cpu",
                     "order": "per seed, one side after the other; ours first on even seeds"},
        "hyperparameters": algo.hyperparameters, "note": algo.note,
        "goals": {"return": algo.return_goal, "speed_ratio": algo.speed_goal},
        "summary": summarise(runs, algo.return_goal, algo.speed_goal),
        "runs": runs,
    }


def summarise(runs: list[dict], return_goal: float = RETURN_GOAL, speed_goal: float = SPEED_GOAL) -> dict:
    """Per library: mean return over seeds, seeds at the goal, steps/s over all seeds; and the ratio."""
    out = {}
    for library in ("rl2llm", "stable-baselines3"):
        mine = [r for r in runs if r["library"] == library]
        out[library] = {
            "return_mean": float(np.mean([r["return_mean"] for r in mine])),
            "return_min_seed": float(min(r["return_mean"] for r in mine)),
            "seeds_at_goal": sum(r["return_mean"] >= return_goal for r in mine), "seeds": len(mine),
            "steps_per_second": sum(r["env_steps"] for r in mine) / sum(r["seconds"] for r in mine),
            "steps_per_cpu_second": sum(r["env_steps"] for r in mine) / sum(r["cpu_seconds"] for r in mine),
        }
    ours, theirs = out["rl2llm"], out["stable-baselines3"]
    out["speed_ratio"] = ours["steps_per_second"] / theirs["steps_per_second"]
    #: the same ratio by CPU time: when it differs much from the wall-clock one, the machine's load distorted that
    out["cpu_speed_ratio"] = ours["steps_per_cpu_second"] / theirs["steps_per_cpu_second"]
    out["return_goal_met"] = ours["return_mean"] >= return_goal
    out["speed_goal_met"] = out["speed_ratio"] >= speed_goal
    return out


def print_table(block: dict) -> None:
    s, goals = block["summary"], block["goals"]
    print(f"\n{block['algorithm']} on {block['env_id']}, {block['settings']['env_steps']:,} steps, "
          f"{len(block['settings']['seeds'])} seed(s), {block['settings']['threads']} thread(s); "
          f"return: mean of {block['settings']['eval_episodes']} greedy episodes")
    head = f"{'library':<18}{'seed':>5}{'return':>9}{'std':>7}{'seconds':>9}{'steps/s':>9}{'CPU s':>8}"
    print(head + "\n" + "-" * len(head))
    for r in block["runs"]:
        print(f"{r['library']:<18}{r['seed']:>5}{r['return_mean']:>9.1f}{r['return_std']:>7.1f}"
              f"{r['seconds']:>9.1f}{r['steps_per_second']:>9,.0f}{r['cpu_seconds']:>8.1f}")
    for library in ("rl2llm", "stable-baselines3"):
        x = s[library]
        print(f"{library:<18}{'all':>5}{x['return_mean']:>9.1f}{'':>7}{'':>9}{x['steps_per_second']:>9,.0f}"
              f"   ({x['seeds_at_goal']}/{x['seeds']} seeds >= {goals['return']:g})")
    print(f"speed: ours / SB3 = {s['speed_ratio']:.2f}x by wall clock, {s['cpu_speed_ratio']:.2f}x by CPU time "
          f"(goal {goals['speed_ratio']:g}x: "
          f"{'met' if s['speed_goal_met'] else 'NOT met'}); return goal {goals['return']:g}: "
          f"{'met' if s['return_goal_met'] else 'NOT met'}")


def write_results(path: Path, blocks: dict[str, dict]) -> None:
    """Merge ``blocks`` (algorithm key -> block) into the results file at ``path``."""
    data = {"benchmark": "rl2llm vs stable-baselines3", "schema": SCHEMA, "algorithms": {}}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if old.get("schema") == SCHEMA:
                data["algorithms"].update(old.get("algorithms", {}))
        except json.JSONDecodeError:
            pass
    data["algorithms"].update(blocks)
    data["algorithms"] = {k: data["algorithms"][k] for k in ALGORITHMS if k in data["algorithms"]} | \
        {k: v for k, v in data["algorithms"].items() if k not in ALGORITHMS}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    print(f"[bench] wrote {path}")


def results_path(key: str, out: Path | None, quick: bool) -> Path | None:
    """Where an algorithm's results go: ``out`` if given, else none for a quick run, else one file per
    environment (``CartPole-v1`` -> ``benchmarks/results/cartpole.json``)."""
    if out is not None:
        return out
    return None if quick else RESULTS / f"{ALGORITHMS[key].env_id.split('-v')[0].lower()}.json"


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few thousand steps, one seed, 10 evaluation episodes; no file unless --out")
    parser.add_argument("--algos", nargs="+", choices=sorted(ALGORITHMS), default=list(ALGORITHMS))
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads, the same for both sides")
    parser.add_argument("--episodes", type=int, help="evaluation episodes per model (default 100; quick 10)")
    parser.add_argument("--out", type=Path, help="results file (default: benchmarks/results/<environment>.json, cartpole.json)")
    args = parser.parse_args(argv)
    # The first optimiser a process builds imports torch._dynamo (seconds): pay it before any side is timed.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    episodes = args.episodes or (10 if args.quick else 100)
    blocks = {}
    for key in args.algos:
        blocks[key] = run_algorithm(key, seeds, args.threads, episodes, args.quick)
        print_table(blocks[key])
        out = results_path(key, args.out, args.quick)
        if out is not None:  # after each algorithm: a stopped run keeps what it finished
            write_results(out, {key: blocks[key]})
    return blocks


if __name__ == "__main__":
    main()
