"""Group-relative policy optimisation: GRPO, Dr. GRPO and RLOO (Lecture 16).

PPO for language models (Lecture 14) needs a value network to say how good an
answer was *expected* to be. The methods here drop it: sample a **group** of
``G`` answers to the same prompt, score them, and use the group itself as the
baseline.

* :func:`group_advantages` turns a group's rewards into advantages:
  ``"grpo"`` (Shao et al. 2024): ``(r - mean) / (std + eps)`` per group;
  ``"dr_grpo"`` (Liu et al. 2025): ``r - mean``, no division by the standard
  deviation (which up-weights groups that are nearly all right or all wrong);
  ``"rloo"`` (Ahmadian et al. 2024): ``r`` minus the mean of the *other*
  ``G - 1`` rewards, an unbiased baseline (it does not depend on the answer it
  judges). ``"grpo"`` matches TRL ``GRPOTrainer``'s computation exactly
  (unbiased standard deviation, ``eps = 1e-4``; tested).
* :func:`grpo_loss`: PPO's clipped ratio per token, an optional KL penalty to
  the reference (the ``k3`` estimator ``exp(q - p) - (q - p) - 1``), and one of
  three ways to average over tokens (``aggregation``): ``"sequence"`` (mean over
  each answer's tokens, then over answers: the GRPO paper; a long answer's
  tokens each get a smaller push), ``"token"`` (every token of the batch
  weighs the same: DAPO, TRL's ``"bnpo"``), ``"constant"`` (the sum divided by
  a constant, answers times the length limit: Dr. GRPO; no length bias).
* :func:`train_grpo`: sample, score, update, for a zoo model and any reward
  function of ``(item, completion)``; returns a :class:`GRPOHistory`.
* Lecture 16's experiments: :func:`arithmetic_run` (one method, one seed, on
  the half-trained arithmetic model: GRPO, Dr. GRPO, RLOO, PPO from
  :mod:`rl2llm.rlhf`, and the offline methods of :mod:`rl2llm.offline` on
  pairs of the model's own answers), :func:`code_run` (GRPO on the code model
  with the sandboxed unit-test reward of :mod:`rl2llm.sandbox`) and
  :class:`Jobs` / :func:`run_jobs` (many runs in two background processes, each cached as an artifact).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from rl2llm import _validate as check
from rl2llm.dqn import flush_denormals, torch_threads
from rl2llm.sequences import sample, sequence_log_probs, token_log_probs

__all__ = ["ADVANTAGES", "AGGREGATIONS", "group_advantages", "k3_kl", "grpo_loss", "GRPOConfig",
           "GRPOHistory", "train_grpo", "arithmetic_run", "code_run", "Jobs", "run_jobs"]

ADVANTAGES = ("grpo", "dr_grpo", "rloo")
AGGREGATIONS = ("sequence", "token", "constant")


def _as_tensor(name: str, value, ndim: int | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
        if not t.is_floating_point():
            t = t.double()
    else:
        t = torch.as_tensor(check.as_finite_array(name, value))
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t


def group_advantages(rewards, group_size: int, method: str = "grpo", *, eps: float = 1e-4) -> torch.Tensor:
    """Advantages from rewards laid out group after group (``G = group_size`` answers per prompt).

    ``rewards``: a 1-D tensor or array of length ``n * G`` (answers to the same
    prompt are consecutive, as TRL lays them out). ``method``: one of
    :data:`ADVANTAGES` (see the module's docstring). ``eps`` is added to the
    standard deviation for ``"grpo"`` (a group whose rewards are all equal gets
    advantage 0, not a division by zero). Returns a float tensor of the same length.
    """
    r = _as_tensor("rewards", rewards, ndim=1)
    G = check.as_int("group_size", group_size, 2)
    if method not in ADVANTAGES:
        raise ValueError(f"method must be one of {ADVANTAGES}, got {check.describe(method)}")
    eps = check.as_real("eps", eps, 0.0)
    if r.numel() == 0 or r.numel() % G:
        raise ValueError(f"rewards must hold whole groups: {r.numel()} rewards is not a multiple of group_size {G}")
    grouped = r.view(-1, G)
    mean = grouped.mean(dim=1, keepdim=True)
    if method == "grpo":
        std = grouped.std(dim=1, keepdim=True)   # unbiased (G - 1), as TRL's nanstd
        adv = (grouped - mean) / (std + eps)
    elif method == "dr_grpo":
        adv = grouped - mean
    else:   # leave one out: r_i - (sum - r_i) / (G - 1) = G / (G - 1) * (r_i - mean)
        adv = grouped - (grouped.sum(dim=1, keepdim=True) - grouped) / (G - 1)
    return adv.reshape(-1)


def k3_kl(log_probs, ref_log_probs) -> torch.Tensor:
    """Per-token ``k3`` estimate of KL(policy || reference): ``exp(q - p) - (q - p) - 1`` (>= 0).

    ``log_probs`` (``p``, the policy's, with gradient) and ``ref_log_probs``
    (``q``) are log-probabilities of the *sampled* tokens, same shape. Unbiased
    for the KL when the tokens come from the policy, and never negative
    (Schulman 2020); TRL uses the same estimator.
    """
    p = _as_tensor("log_probs", log_probs)
    q = _as_tensor("ref_log_probs", ref_log_probs).to(p.dtype)
    if p.shape != q.shape:
        raise ValueError(f"ref_log_probs must have the shape of log_probs, {tuple(p.shape)}, got {tuple(q.shape)}")
    d = q.detach() - p
    return torch.exp(d) - d - 1


def grpo_loss(log_probs, old_log_probs, advantages, mask, *, ref_log_probs=None, clip: float = 0.2,
              beta: float = 0.0, aggregation: str = "sequence", max_length: int | None = None):
    """The loss to *minimise* and its statistics: ``(loss, {"kl": ..., "clipped": ...})``.

    ``log_probs`` ``(B, T)``: the policy's log-probabilities of the sampled
    tokens (with gradient); ``old_log_probs``: the same under the policy that
    sampled them (constant); ``advantages`` ``(B,)``: one per answer, given to
    each of its tokens; ``mask`` ``(B, T)``: 1 on the answer's tokens.
    ``ref_log_probs`` (needed when ``beta > 0``): the reference's. Per token:
    ``-min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A) + beta * k3``, then
    averaged as ``aggregation`` says; ``"constant"`` divides the sum by
    ``B * max_length`` (``max_length`` defaults to ``T``).
    """
    logp = _as_tensor("log_probs", log_probs, ndim=2)
    old = _as_tensor("old_log_probs", old_log_probs, ndim=2).to(logp.dtype)
    m = _as_tensor("mask", mask, ndim=2).to(logp.dtype)
    adv = _as_tensor("advantages", advantages, ndim=1).to(logp.dtype)
    if old.shape != logp.shape or m.shape != logp.shape:
        raise ValueError(f"old_log_probs and mask must have the shape of log_probs, {tuple(logp.shape)}, "
                         f"got {tuple(old.shape)} and {tuple(m.shape)}")
    if adv.shape[0] != logp.shape[0]:
        raise ValueError(f"advantages must hold one value per answer ({logp.shape[0]}), got {adv.shape[0]}")
    if not ((m == 0) | (m == 1)).all():
        raise ValueError("mask must hold only 0 and 1")
    clip = check.as_real("clip", clip, 0.0, 1.0, high_open=True)
    beta = check.as_real("beta", beta, 0.0)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {check.describe(aggregation)}")
    B, T = logp.shape
    max_length = T if max_length is None else check.as_int("max_length", max_length, max(T, 1))
    ratio = torch.exp(logp - old.detach())
    a = adv.detach()[:, None]
    per_token = -torch.min(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
    kl = torch.zeros_like(logp)
    if ref_log_probs is not None:
        kl = k3_kl(logp, ref_log_probs)
        if kl.shape != logp.shape:
            raise ValueError("ref_log_probs must have the shape of log_probs")
    elif beta > 0:
        raise ValueError("ref_log_probs must be given when beta > 0 (the KL penalty needs the reference)")
    if beta > 0:
        per_token = per_token + beta * kl
    if aggregation == "sequence":
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    elif aggregation == "token":
        loss = (per_token * m).sum() / m.sum().clamp(min=1.0)
    else:
        loss = (per_token * m).sum() / (B * max_length)
    with torch.no_grad():
        n = m.sum().clamp(min=1.0)
        clipped = (((ratio < 1 - clip) & (a < 0)) | ((ratio > 1 + clip) & (a > 0))).to(m.dtype)
        stats = {"kl": float((kl * m).sum() / n), "clipped": float((clipped * m).sum() / n)}
    return loss, stats


@dataclass(frozen=True)
class GRPOConfig:
    """Settings of :func:`train_grpo` (defaults: the arithmetic model's stable recipe of Lecture 16).

    ``steps`` updates; each samples ``group_size`` answers to each of
    ``prompts_per_step`` prompts (drawn without replacement, reshuffled each
    pass), at ``temperature``, at most ``max_new_tokens`` tokens (``None``: the
    zoo spec's). ``advantage`` in :data:`ADVANTAGES`, ``aggregation`` in
    :data:`AGGREGATIONS` (``"constant"`` divides by ``max_new_tokens``);
    ``iterations`` gradient steps per batch (1: the ratio is 1 and clipping
    never acts). Adam with ``lr``, gradient norm clipped at ``grad_clip``;
    ``beta`` weighs the KL penalty (TRL's default is 0). ``eval_every`` steps,
    ``eval_fn(model, tokenizer) -> float`` is recorded (and at 0 and the end).
    ``threads``: PyTorch threads (``None``: leave the setting alone).
    """

    steps: int = 40
    group_size: int = 8
    prompts_per_step: int = 8
    lr: float = 1e-4
    clip: float = 0.2
    beta: float = 0.0
    advantage: str = "grpo"
    aggregation: str = "sequence"
    iterations: int = 1
    temperature: float = 1.0
    max_new_tokens: int | None = None
    grad_clip: float = 1.0
    eval_every: int = 10
    threads: int | None = 1

    def __post_init__(self):
        check.as_int("steps", self.steps, 1)
        check.as_int("group_size", self.group_size, 2)
        check.as_int("prompts_per_step", self.prompts_per_step, 1)
        check.as_real("lr", self.lr, 0.0, low_open=True)
        check.as_real("clip", self.clip, 0.0, 1.0, high_open=True)
        check.as_real("beta", self.beta, 0.0)
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {ADVANTAGES}, got {check.describe(self.advantage)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {check.describe(self.aggregation)}")
        check.as_int("iterations", self.iterations, 1)
        check.as_real("temperature", self.temperature, 0.0, low_open=True)
        if self.max_new_tokens is not None:
            check.as_int("max_new_tokens", self.max_new_tokens, 1)
        check.as_real("grad_clip", self.grad_clip, 0.0, low_open=True)
        check.as_int("eval_every", self.eval_every, 0)
        if self.threads is not None:
            check.as_int("threads", self.threads, 1)


@dataclass
class GRPOHistory:
    """What :func:`train_grpo` measured, step by step, and the trained ``model``.

    ``reward``: mean reward of the step's samples; ``kl``: mean per-token k3 KL
    to the reference on them; ``length``: mean answer length in tokens;
    ``clipped``: share of tokens whose ratio was clipped; ``all_same``: share of
    groups whose rewards were all equal (no learning signal); ``eval_steps`` /
    ``eval``: the ``eval_fn`` readings; ``seconds``: wall time of training
    (evaluations excluded).
    """

    config: dict
    seed: int
    reward: list = field(default_factory=list)
    kl: list = field(default_factory=list)
    length: list = field(default_factory=list)
    clipped: list = field(default_factory=list)
    all_same: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    eval: list = field(default_factory=list)
    seconds: float = 0.0
    model: object = None


def _check_zoo_model(zoo_model):
    if not all(hasattr(zoo_model, a) for a in ("model", "tokenizer", "spec")) or \
            not isinstance(zoo_model.model, torch.nn.Module):
        raise TypeError(f"zoo_model must be a ZooModel (from rl2llm.zoo.load), got {check.describe(zoo_model)}")
    return zoo_model


def train_grpo(zoo_model, reward_fn: Callable, items: Sequence, config: GRPOConfig | None = None, seed: int = 0,
               *, eval_fn: Callable | None = None) -> GRPOHistory:
    """Train a copy of ``zoo_model.model`` with group-relative policy optimisation.

    ``reward_fn(item, completion) -> float`` scores a sampled completion of
    ``item.prompt`` (``items``: anything with a ``prompt``, such as the zoo's
    tasks). The zoo model itself is left untouched and serves as the reference
    for the KL. The same ``seed`` gives the same run.
    """
    zoo_model = _check_zoo_model(zoo_model)
    if not callable(reward_fn):
        raise TypeError(f"reward_fn must be callable as reward_fn(item, completion), got {check.describe(reward_fn)}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable as eval_fn(model, tokenizer) or None, got {check.describe(eval_fn)}")
    items = list(items) if not isinstance(items, str) else None
    if items is None or not items:
        raise ValueError("items must be a non-empty list of items with a prompt")
    for i, it in enumerate(items):
        if not isinstance(getattr(it, "prompt", None), str) or not it.prompt:
            raise TypeError(f"items[{i}] must have a non-empty prompt string, got {check.describe(it)}")
    config = GRPOConfig() if config is None else config
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"config must be a GRPOConfig, got {check.describe(config)}")
    seed = check.as_int("seed", seed, 0, 2**31 - 1)
    c = config
    with torch_threads(c.threads), flush_denormals():
        return _train(zoo_model, reward_fn, items, c, seed, eval_fn)


def _train(zoo_model, reward_fn, items, c: GRPOConfig, seed: int, eval_fn) -> GRPOHistory:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    reference, tokenizer = zoo_model.model, zoo_model.tokenizer
    policy = copy.deepcopy(reference)
    policy.train()
    reference.eval()
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=c.lr)
    max_new = c.max_new_tokens or zoo_model.spec.max_new_tokens
    history = GRPOHistory(config=asdict(c), seed=seed)

    def evaluate(step):
        if eval_fn is not None:
            policy.eval()
            history.eval_steps.append(step)
            history.eval.append(float(eval_fn(policy, tokenizer)))
            policy.train()

    evaluate(0)
    order, cursor, spent = rng.permutation(len(items)), 0, 0.0
    for step in range(1, c.steps + 1):
        start = time.perf_counter()
        chosen = []
        for _ in range(c.prompts_per_step):
            if cursor == len(order):
                order, cursor = rng.permutation(len(items)), 0
            chosen.append(items[order[cursor]])
            cursor += 1
        prompts = [it.prompt for it in chosen for _ in range(c.group_size)]
        texts, batch = sample(policy, tokenizer, prompts, max_new, temperature=c.temperature,
                              seed=int(rng.integers(2**31 - 1)))
        rewards = torch.tensor([float(reward_fn(it, t)) for it, t in
                                zip((it for it in chosen for _ in range(c.group_size)), texts)], dtype=torch.float32)
        adv = group_advantages(rewards, c.group_size, c.advantage)
        mask = batch.completion_mask.float()
        with torch.no_grad():
            ref_logp = token_log_probs(reference, batch)
            old_logp = token_log_probs(policy, batch) if c.iterations > 1 else None
        for _ in range(c.iterations):
            logp = token_log_probs(policy, batch)
            loss, stats = grpo_loss(logp, logp.detach() if old_logp is None else old_logp, adv, mask,
                                    ref_log_probs=ref_logp, clip=c.clip, beta=c.beta,
                                    aggregation=c.aggregation, max_length=max(max_new, mask.shape[1]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
            optimizer.step()
        spent += time.perf_counter() - start
        grouped = rewards.view(-1, c.group_size)
        history.reward.append(float(rewards.mean()))
        history.kl.append(stats["kl"])
        history.clipped.append(stats["clipped"])
        history.length.append(float(mask.sum(-1).mean()))
        history.all_same.append(float((grouped.max(1).values == grouped.min(1).values).float().mean()))
        if c.eval_every and (step % c.eval_every == 0) and step != c.steps:
            evaluate(step)
    evaluate(c.steps)
    policy.eval()
    history.seconds = spent
    history.model = policy
    return history


# --------------------------------------------------------------------------- Lecture 16's comparison

#: The methods :func:`arithmetic_run` compares, online (sampling from the model being trained) and offline
#: (learning from pairs of the starting model's answers, judged by exact match).
ONLINE = ("ppo", "grpo", "dr_grpo", "rloo")
OFFLINE = ("dpo", "ipo", "kto", "simpo", "orpo", "cpo")

#: The recipe of Lecture 16 on the half-trained arithmetic model (``"large"``: the same, longer).
ARITHMETIC = {
    "small": {"steps": 20, "group_size": 8, "prompts_per_step": 4, "n_train": 400, "n_eval": 200},
    "large": {"steps": 100, "group_size": 8, "prompts_per_step": 8, "n_train": 2000, "n_eval": 1000},
}
#: Learning rate and settings per method: the best of 1e-5, 3e-5 and 1e-4 on seeds 0 and 1 of the small scale
#: (GRPO: of 3e-5, 5e-5, 1e-4; PPO: Lecture 14's recipe with two epochs per batch, at GRPO's rate, not swept),
#: scored on the same held-out problems that :func:`arithmetic_run` reports (there is no separate validation split).
METHOD_SETTINGS = {
    "grpo": {"lr": 3e-5}, "dr_grpo": {"lr": 3e-5}, "rloo": {"lr": 3e-5}, "ppo": {"lr": 3e-5, "ppo_epochs": 2},
    "dpo": {"lr": 1e-5, "beta": 0.1}, "ipo": {"lr": 1e-5, "beta": 0.1}, "kto": {"lr": 1e-5, "beta": 0.1},
    "simpo": {"lr": 1e-5, "beta": 2.0, "gamma": 1.0}, "orpo": {"lr": 1e-4, "lam": 0.1},
    "cpo": {"lr": 1e-5, "beta": 0.1, "alpha": 1.0},
}


_SETTINGS: dict = {}


def _setting(name: str, n_train: int, n_eval: int):
    """The zoo model, training items and held-out items of an experiment, loaded once per process (the
    runs copy the model before training it, so they can share it)."""
    from rl2llm import corpora, zoo

    key = (name, n_train, n_eval)
    if key not in _SETTINGS:
        if name == "arithmetic":
            m = zoo.load("arithmetic", "half-trained", progress=False)
            items = corpora.arithmetic_problems(n_train, 123, **m.spec.options)
        else:
            m = zoo.load("code", progress=False)
            items = corpora.code_tasks(n_train, 77, **m.spec.options)
        _SETTINGS[key] = (m, items, zoo.eval_items(name, n_eval))
    return _SETTINGS[key]


@torch.no_grad()
def _sampled_kl(policy, reference, tokenizer, prompts, max_new_tokens, seed) -> float:
    """KL(policy || reference) in nats per answer: the mean of log pi - log pi_ref over the policy's samples."""
    _, batch = sample(policy, tokenizer, prompts, max_new_tokens, seed=seed)
    return float((sequence_log_probs(policy, batch) - sequence_log_probs(reference, batch)).mean())


def arithmetic_run(method: str, seed: int = 0, *, scale: str = "small", lr: float | None = None,
                   beta: float = 0.0, threads: int | None = 1, curve: bool = False) -> dict:
    """One run of Lecture 16's comparison on the zoo's half-trained arithmetic model (exact-match reward).

    Every method gets the same budget of model answers: ``steps * prompts_per_step * group_size``
    samples (online: drawn from the policy as it learns; offline: two answers of the *starting* model
    per prompt, pairs with one right and one wrong answer kept, labelled by exact match) and the same
    number of optimiser steps on as many answers per step (offline: half as many pairs). ``lr`` overrides :data:`METHOD_SETTINGS`. Returns a dict: ``method``,
    ``seed``, ``em_before`` / ``em_after`` (greedy exact match on held-out problems), ``kl`` (KL of the
    trained model from the starting one, nats per answer, on its own samples of the held-out prompts),
    ``seconds`` (training wall time), and with ``curve`` the per-step ``reward`` and the evaluations.
    """
    from rl2llm import corpora, zoo

    if method not in ONLINE + OFFLINE:
        raise ValueError(f"method must be one of {ONLINE + OFFLINE}, got {check.describe(method)}")
    if scale not in ARITHMETIC:
        raise ValueError(f"scale must be one of {tuple(ARITHMETIC)}, got {check.describe(scale)}")
    seed = check.as_int("seed", seed, 0, 2**31 - 1)
    beta = check.as_real("beta", beta, 0.0)
    if beta and method not in ("grpo", "dr_grpo", "rloo"):
        raise ValueError(f"beta applies to grpo, dr_grpo and rloo only, got beta={beta} with method={method!r}")
    s = ARITHMETIC[scale]
    settings = dict(METHOD_SETTINGS[method])
    if lr is not None:
        settings["lr"] = check.as_real("lr", lr, 0.0, low_open=True)
    m, items, held_out = _setting("arithmetic", s["n_train"], s["n_eval"])
    samples = s["steps"] * s["prompts_per_step"] * s["group_size"]
    out = {"method": method, "seed": seed, "scale": scale, "lr": settings["lr"], "samples": samples}
    with torch_threads(threads), flush_denormals():
        out["em_before"] = zoo.exact_match(m.model, m.tokenizer, held_out)
        em = lambda model, tok: zoo.exact_match(model, tok, held_out)
        if method in ("grpo", "dr_grpo", "rloo"):
            config = GRPOConfig(steps=s["steps"], group_size=s["group_size"], prompts_per_step=s["prompts_per_step"],
                                lr=settings["lr"], advantage=method, beta=beta,
                                aggregation="constant" if method == "dr_grpo" else "sequence",
                                eval_every=5 if curve else 0, threads=None)
            h = train_grpo(m, lambda item, c: float(item.check(c)), items, config, seed,
                           eval_fn=em if curve else None)
            policy, out["seconds"], out["reward"] = h.model, h.seconds, h.reward
            out["eval_steps"], out["eval"] = h.eval_steps, h.eval
            out["no_signal"] = float(np.mean(h.all_same))   # share of groups all right or all wrong
        elif method == "ppo":
            from rl2llm.rlhf import RLHFConfig, gold_rewards, train_rlhf
            config = RLHFConfig(steps=s["steps"], batch_size=s["prompts_per_step"] * s["group_size"],
                                max_new_tokens=m.spec.max_new_tokens, lr=settings["lr"], eval_every=s["steps"],
                                ppo_epochs=settings.get("ppo_epochs", 4), threads=threads or 1)
            h = train_rlhf(m, gold_rewards, items, config, seed)
            policy = copy.deepcopy(m.model)
            policy.load_state_dict(h.policy_state)
            policy.eval()
            out["seconds"], out["reward"] = h.seconds, h.proxy
        else:
            from rl2llm import offline
            from rl2llm.preferences import preference_pairs
            rng = np.random.default_rng(seed)
            chosen = [items[i] for i in rng.choice(len(items), samples // 2, replace=len(items) < samples // 2)]
            prefs = preference_pairs(m, chosen, seed=seed)
            out["pairs"] = len(prefs)
            lr_ = settings.pop("lr")
            policy, h = offline.train_offline(m, prefs, method, steps=s["steps"], lr=lr_, seed=seed,
                                              settings=settings,
                                              batch_size=s["prompts_per_step"] * s["group_size"] // 2)
            out["seconds"], out["reward"] = h.seconds, h.loss
        out["em_after"] = zoo.exact_match(policy, m.tokenizer, held_out)
        out["kl"] = _sampled_kl(policy, m.model, m.tokenizer, [t.prompt for t in held_out],
                                m.spec.max_new_tokens, seed)
    if not curve:
        out.pop("reward", None)
        out.pop("eval_steps", None)
        out.pop("eval", None)
    return out


#: GRPO on the code model with the sandboxed unit-test reward (Lecture 16): a small budget.
CODE = {"small": {"steps": 10, "group_size": 4, "prompts_per_step": 4, "max_new_tokens": 64, "n_eval": 16,
                  "lr": 1e-4},
        "large": {"steps": 100, "group_size": 8, "prompts_per_step": 8, "max_new_tokens": 96, "n_eval": 100,
                  "lr": 1e-4}}


def code_run(seed: int = 0, *, scale: str = "small", threads: int | None = 1, timeout: float = 2.0) -> dict:
    """GRPO on the zoo's code model, rewarded by the fraction of unit tests passed in :func:`rl2llm.sandbox.run`.

    Returns ``seed``, the per-step ``reward`` and ``length`` (tokens), ``tests_before`` / ``tests_after``
    (the share of held-out tasks' unit tests passed by greedy completions, in the sandbox), ``seconds``
    (training) and ``sandbox_seconds`` (the part of it spent running tests).
    """
    from rl2llm import corpora, sandbox, zoo

    if scale not in CODE:
        raise ValueError(f"scale must be one of {tuple(CODE)}, got {check.describe(scale)}")
    seed = check.as_int("seed", seed, 0, 2**31 - 1)
    s = CODE[scale]
    m, items, held_out = _setting("code", 400, s["n_eval"])
    spent: list[float] = []

    def reward(item, completion):
        start = time.perf_counter()
        try:
            return sandbox.reward(item, completion, timeout=timeout)
        finally:
            spent.append(time.perf_counter() - start)

    def tests_passed(model):
        completions = zoo.generate(model, m.tokenizer, [t.prompt for t in held_out], s["max_new_tokens"])
        results = [sandbox.run(t, t.prompt + c, timeout=timeout) for t, c in zip(held_out, completions)]
        return sum(p for p, _ in results) / sum(n for _, n in results)

    with torch_threads(threads), flush_denormals():
        before = tests_passed(m.model)
        config = GRPOConfig(steps=s["steps"], group_size=s["group_size"], prompts_per_step=s["prompts_per_step"],
                            lr=s["lr"], max_new_tokens=s["max_new_tokens"], eval_every=0, threads=None)
        h = train_grpo(m, reward, items, config, seed)
        after = tests_passed(h.model)
    return {"seed": seed, "scale": scale, "reward": h.reward, "length": h.length, "tests_before": before,
            "tests_after": after, "seconds": h.seconds, "sandbox_seconds": float(sum(spent)),
            "sandbox_calls": len(spent)}


def _job(job: dict, path: str | None = None) -> dict:
    """Run one job; with ``path``, save its result there (in the worker, so a result survives its caller)."""
    job = dict(job)
    kind = job.pop("kind")
    result = {"job": {"kind": kind, **job}, **(code_run(**job) if kind == "code" else arithmetic_run(**job))}
    if path is not None:
        from pathlib import Path

        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
    return result


class Jobs:
    """:func:`arithmetic_run` / :func:`code_run` jobs running in ``workers`` background processes, each result
    cached as an artifact as soon as it is done.

    Each job is a dict: ``{"kind": "arithmetic", "method": ..., "seed": ..., ...}`` (the keyword arguments
    of :func:`arithmetic_run`) or ``{"kind": "code", "seed": ..., ...}``. Creating a ``Jobs`` starts the
    jobs whose results are not cached and returns at once; :meth:`result` waits for one job, :meth:`results`
    for several. A result lives in ``artifact_dir("lecture16-run", key)``, the key hashing the code that
    produces it and the job, so another build (or a build stopped half-way) loads what was already done.
    """

    def __init__(self, jobs: Sequence[dict], *, workers: int = 2, cache: bool = True):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.jobs = [dict(j) for j in jobs]
        for i, j in enumerate(self.jobs):
            if not isinstance(j, dict) or j.get("kind") not in ("arithmetic", "code"):
                raise ValueError(f"jobs[{i}] must be a dict with kind 'arithmetic' or 'code', got {check.describe(j)}")
        workers = check.as_int("workers", workers, 1)
        cache = check.as_bool("cache", cache)
        code_key = self._code_key() if cache else None   # the code's hash, once (hashing takes a while)
        self._paths = [self._path(code_key, j) if cache else None for j in self.jobs]
        self._done: dict[int, dict] = {}
        for i, path in enumerate(self._paths):
            if path is not None and path.exists():
                self._done[i] = json.loads(path.read_text())
        todo = [i for i in range(len(self.jobs)) if i not in self._done]
        self._pool = None
        self._futures = {}
        if todo and workers > 1:
            self._pool = ProcessPoolExecutor(min(workers, len(todo)),
                                             mp_context=multiprocessing.get_context("spawn"))
            self._futures = {i: self._pool.submit(_job, self.jobs[i], self._str(i)) for i in todo}
        elif todo:
            self._futures = {i: None for i in todo}

    def _str(self, i: int) -> str | None:
        return None if self._paths[i] is None else str(self._paths[i])

    @staticmethod
    def _code_key() -> str:
        import rl2llm.offline
        import rl2llm.rlhf
        import rl2llm.sandbox
        from rl2llm.provenance import artifact_key

        return artifact_key(sys.modules[__name__], rl2llm.offline, rl2llm.rlhf, rl2llm.sandbox)

    @staticmethod
    def _path(code_key: str, job: dict):
        import hashlib

        from rl2llm.provenance import artifact_dir

        text = json.dumps({"code": code_key, "job": job}, sort_keys=True)
        return artifact_dir("lecture16-run", hashlib.sha256(text.encode()).hexdigest()[:16]) / "run.json"

    def result(self, i: int) -> dict:
        """The result of job ``i`` (waits for it)."""
        i = check.as_int("i", i, 0, len(self.jobs) - 1)
        if i not in self._done:
            future = self._futures[i]
            self._done[i] = _job(self.jobs[i], self._str(i)) if future is None else future.result()
            if len(self._done) == len(self.jobs) and self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        return self._done[i]

    def results(self, indices: Sequence[int] | None = None) -> list[dict]:
        """The results of jobs ``indices`` (default: all), in that order (waits for them)."""
        return [self.result(i) for i in (range(len(self.jobs)) if indices is None else indices)]

    def close(self) -> None:
        """Stop the workers (jobs not yet finished are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def run_jobs(jobs: Sequence[dict], *, workers: int = 2, cache: bool = True) -> list[dict]:
    """Run jobs (see :class:`Jobs`) in ``workers`` processes and return their results in order."""
    return Jobs(jobs, workers=workers, cache=cache).results()
