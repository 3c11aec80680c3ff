"""RLHF with PPO: a language model trained on a reward, kept near its starting point by a per-token KL penalty.

Introduced in Lecture 14 (PPO for language models). The language model is
the policy of a token-level MDP: the state is the prompt plus the tokens
written so far, an action is the next token, an episode is one completion,
and the reward arrives once, at the end, from a reward function (a unit
test, a checker, or a learned reward model). A penalty of ``beta`` times the
log-ratio between the policy and a frozen *reference* copy is paid at every
token, so the policy only drifts as far as the reward is worth.

* :func:`kl_estimators` — the per-token estimators k1, k2, k3 of
  ``KL(policy || reference)`` from sampled tokens (Schulman's note
  "Approximating KL divergence", 2020); :func:`exact_kl` — the exact
  per-token KL from two sets of logits, for tests and figures.
* :func:`shaped_rewards` — the per-token reward PPO sees: ``-beta * kl_t``
  at every completion token, plus the sequence reward on the last one.
* :class:`ValueHead` — a linear value head on the policy's last hidden
  state (one forward pass gives log-probabilities and values).
* :func:`token_advantages` — GAE over the completion tokens, computed by
  Lecture 4's :func:`rl2llm.advantages.gae` on the (tokens, sequences) grid.
* :class:`AdaptiveKLController` — Ziegler et al. (2019): ``beta`` moves
  toward the value that keeps the KL near a target.
* :class:`RLHFConfig`, :func:`train_rlhf` — the loop: sample, score, shape,
  advantages, then Lecture 6's clipped objective
  (:func:`rl2llm.ppo.clipped_surrogate`) on the tokens, several epochs.
* :func:`gold_rewards`, :func:`proxy_story_reward` — the gold reward of the
  zoo's tasks and Lecture 13's proxy reward model, in the batch form
  :func:`train_rlhf` calls.

Sampling, encoding and log-probabilities come from :mod:`rl2llm.sequences`.
Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from . import _validate as check
from . import preferences, sequences
from .advantages import gae
from .dqn import flush_denormals, torch_threads
from .ppo import clip_fraction, clipped_surrogate

__all__ = ["KLEstimates", "kl_estimators", "exact_kl", "shaped_rewards", "ValueHead", "token_advantages",
           "AdaptiveKLController", "RLHFConfig", "RLHFHistory", "train_rlhf", "gold_rewards",
           "proxy_story_reward", "evaluate", "TASKS", "train_on_task"]

ESTIMATORS = ("k1", "k2", "k3")

# --------------------------------------------------------------------------- the KL, per token


def _log_probs(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(check.numeric_array(name, value), dtype=torch.float64)
    if not value.is_floating_point():
        raise TypeError(f"{name} must hold floats (log-probabilities), got dtype {value.dtype}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} must be finite")
    if (value > 1e-6).any():
        raise ValueError(f"{name} must be log-probabilities (<= 0), but it has a positive entry")
    return value


class KLEstimates(NamedTuple):
    """Three per-token estimates of ``KL(policy || reference)``, each with the shape of the inputs."""

    #: ``log p - log q``: unbiased, can be negative.
    k1: torch.Tensor
    #: ``(log p - log q)**2 / 2``: biased, never negative, low variance when p and q are close.
    k2: torch.Tensor
    #: ``(r - 1) - log r`` with ``r = q / p``: unbiased and never negative.
    k3: torch.Tensor


def kl_estimators(logp_policy, logp_ref) -> KLEstimates:
    """The estimators k1, k2, k3 of ``KL(p || q)`` at tokens sampled from ``p`` (the policy).

    ``logp_policy[i] = log p(x_i)`` and ``logp_ref[i] = log q(x_i)`` for
    tokens ``x_i ~ p``. With ``r = q(x) / p(x)``: ``k1 = -log r``,
    ``k2 = (log r)**2 / 2``, ``k3 = (r - 1) - log r``. k1 and k3 have
    expectation ``KL(p || q)`` under ``p``; k3 is never negative because
    ``log r <= r - 1``; k2's expectation is ``KL`` only to second order. The
    gradient flows through whichever input has one.

    Accepted: two tensors (or arrays) of log-probabilities (``<= 0``) of the
    same shape. Returns a :class:`KLEstimates` of tensors of that shape.
    """
    p = _log_probs("logp_policy", logp_policy)
    q = _log_probs("logp_ref", logp_ref)
    if p.shape != q.shape:
        raise ValueError(f"logp_policy and logp_ref must have the same shape, got {tuple(p.shape)} "
                         f"and {tuple(q.shape)}")
    log_ratio = q.to(p.dtype) - p          # log r
    return KLEstimates(-log_ratio, 0.5 * log_ratio ** 2, torch.expm1(log_ratio) - log_ratio)


def exact_kl(logits_policy, logits_ref) -> torch.Tensor:
    """``KL(softmax(logits_policy) || softmax(logits_ref))`` over the last axis (the vocabulary).

    Accepted: two float tensors (or arrays) of the same shape ``(..., V)``.
    Returns a tensor of shape ``(...)``, in nats.
    """
    tensors = []
    for name, value in (("logits_policy", logits_policy), ("logits_ref", logits_ref)):
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(check.numeric_array(name, value), dtype=torch.float64)
        if not value.is_floating_point() or value.ndim == 0 or not torch.isfinite(value).all():
            raise ValueError(f"{name} must be finite float logits with a vocabulary axis, got "
                             f"{check.describe(value)}")
        tensors.append(value)
    a, b = tensors
    if a.shape != b.shape:
        raise ValueError(f"logits_policy and logits_ref must have the same shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    log_p, log_q = torch.log_softmax(a, -1), torch.log_softmax(b.to(a.dtype), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _mask(name: str, value, shape) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(check.numeric_array(name, value))
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have the shape of logp_policy, {tuple(shape)}, got {tuple(value.shape)}")
    if not ((value == 0) | (value == 1)).all():
        raise ValueError(f"{name} must hold 0 and 1 only (1 on the completion's tokens)")
    return value.bool()


def shaped_rewards(sequence_reward, logp_policy, logp_ref, mask, beta: float,
                   estimator: str = "k1") -> torch.Tensor:
    """The per-token rewards of RLHF: ``-beta * kl_t`` on every completion token, plus the sequence reward
    on its last one.

    ``sequence_reward``: one number per sequence, shape ``(B,)``;
    ``logp_policy``, ``logp_ref``: ``(B, T)`` log-probabilities of the sampled
    tokens under the policy that wrote them and under the reference model;
    ``mask``: ``(B, T)`` of 0/1, 1 on completion tokens (each row needs one at
    least); ``beta`` >= 0; ``estimator`` one of ``"k1"``, ``"k2"``, ``"k3"``.
    Summed over a row, the result is ``sequence_reward - beta * sum_t kl_t``:
    the sequence reward minus ``beta`` times the estimated KL of the whole
    completion. Returns a float tensor ``(B, T)``, 0 off the mask, without
    gradient.
    """
    p = _log_probs("logp_policy", logp_policy)
    q = _log_probs("logp_ref", logp_ref)
    if p.ndim != 2 or p.shape != q.shape:
        raise ValueError(f"logp_policy and logp_ref must both have shape (B, T), got {tuple(p.shape)} "
                         f"and {tuple(q.shape)}")
    m = _mask("mask", mask, p.shape)
    if not m.any(-1).all():
        raise ValueError(f"mask must mark one token at least in every row; row {int((~m.any(-1)).nonzero()[0])} "
                         "has none")
    if not isinstance(sequence_reward, torch.Tensor):
        sequence_reward = torch.as_tensor(check.as_finite_array("sequence_reward", sequence_reward))
    if tuple(sequence_reward.shape) != (p.shape[0],) or not torch.isfinite(sequence_reward).all():
        raise ValueError(f"sequence_reward must hold one finite number per sequence, shape ({p.shape[0]},), "
                         f"got shape {tuple(sequence_reward.shape)}")
    beta = check.as_real("beta", beta, 0.0)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {check.describe(estimator)}")
    with torch.no_grad():
        return _shaped(sequence_reward.to(p.dtype), p, q.to(p.dtype), m, beta, estimator)


def _shaped(sequence_reward, p, q, m, beta, estimator):
    kl = getattr(kl_estimators(p, q), estimator)
    rewards = torch.where(m, -beta * kl, torch.zeros_like(kl))
    last = _last_index(m)
    rewards[torch.arange(len(last)), last] += sequence_reward
    return rewards


def _last_index(m: torch.Tensor) -> torch.Tensor:
    """The column of the last True entry of each row of a (B, T) bool mask."""
    columns = torch.arange(m.shape[1]).expand_as(m)
    return torch.where(m, columns, torch.full_like(columns, -1)).max(-1).values


# --------------------------------------------------------------------------- value head and advantages


class ValueHead(nn.Module):
    """A linear value head on the language model's last hidden state: ``V(prompt + tokens before t)``.

    It shares the policy's body: one forward pass gives the next-token
    distribution and the value of the state. The output weight starts at
    zero, so every state is worth 0 until the head has learned.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        hidden_size = check.as_int("hidden_size", hidden_size, 1)
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden).squeeze(-1)


def _forward(model, head, batch):
    """Per-token log-probabilities of the batch's tokens and the values of the states they were chosen in.

    Entry ``t`` of both belongs to token ``t``: ``log p(x_t | x_<t)`` and
    ``V(x_<t)``, read from the hidden state at position ``t - 1``. Zero off
    the completion mask.
    """
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, output_hidden_states=head is not None)
    logp = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    mask = batch.completion_mask.to(logp.dtype)
    logp = torch.nn.functional.pad(logp, (1, 0)) * mask
    values = None
    if head is not None:
        values = torch.nn.functional.pad(head(out.hidden_states[-1][:, :-1]), (1, 0)) * mask
    return logp, values


def token_advantages(rewards, values, mask, gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over each completion's tokens: ``(advantages, returns)``, both ``(B, T)``, 0 off the mask.

    One completion is one episode: it ends at its last masked token (the
    value after it is 0, the reward is in), and nothing flows across rows.
    ``rewards`` (e.g. from :func:`shaped_rewards`), ``values``: finite
    ``(B, T)``; ``mask``: ``(B, T)`` of 0/1, the completion tokens of each
    row contiguous; ``gamma``, ``lam`` in ``[0, 1]``. The recursion is
    Lecture 4's :func:`rl2llm.advantages.gae`, run on the transposed
    (tokens, sequences) grid with each row's last token as terminal.
    """
    r = torch.as_tensor(rewards) if not isinstance(rewards, torch.Tensor) else rewards
    v = torch.as_tensor(values) if not isinstance(values, torch.Tensor) else values
    if r.ndim != 2 or r.shape != v.shape:
        raise ValueError(f"rewards and values must both have shape (B, T), got {tuple(r.shape)} and "
                         f"{tuple(v.shape)}")
    m = _mask("mask", mask, r.shape)
    gamma = check.as_real("gamma", gamma, 0.0, 1.0)
    lam = check.as_real("lam", lam, 0.0, 1.0)
    return _token_advantages(r.detach(), v.detach(), m, gamma, lam)


def _token_advantages(r, v, m, gamma, lam):
    r = (r * m).double().numpy()
    v = (v * m).double().numpy()
    mask = m.numpy()
    next_values = np.zeros_like(v)
    next_values[:, :-1] = v[:, 1:] * mask[:, 1:]
    # terminal: each row's last completion token, the prompt and the padding
    terminated = (mask & ~np.pad(mask[:, 1:], ((0, 0), (0, 1)))) | ~mask
    truncated = np.zeros_like(terminated)
    adv = gae(r.T, v.T, next_values.T, terminated.T, truncated.T, gamma, lam).T * mask
    adv = torch.as_tensor(adv, dtype=torch.float32)
    return adv, adv + torch.as_tensor(v, dtype=torch.float32)


# --------------------------------------------------------------------------- adaptive KL


class AdaptiveKLController:
    """Ziegler et al. (2019)'s controller: ``beta`` grows when the KL is above ``target``, shrinks below.

    After each batch with measured KL ``kl`` (per completion, in nats),
    ``error = clip(kl / target - 1, -0.2, 0.2)`` and
    ``beta <- beta * (1 + error * n_steps / horizon)``. The clip limits how
    fast ``beta`` can move in one update; ``horizon`` (in samples) sets the
    time constant.
    """

    def __init__(self, init_beta: float, target: float, horizon: int = 10000):
        self.beta = check.as_real("init_beta", init_beta, 0.0, low_open=True)
        self.target = check.as_real("target", target, 0.0, low_open=True)
        self.horizon = check.as_int("horizon", horizon, 1)

    def update(self, kl: float, n_steps: int) -> float:
        """Move ``beta`` after ``n_steps`` samples of mean KL ``kl``; return it."""
        kl = check.as_real("kl", kl)
        n_steps = check.as_int("n_steps", n_steps, 1)
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


# --------------------------------------------------------------------------- rewards


def gold_rewards(items, completions) -> list[float]:
    """:func:`rl2llm.preferences.gold_reward` of each (item, completion) pair, in the batch form
    :func:`train_rlhf` calls: 1/0 for arithmetic, the share of unit tests passed for code, the gold
    judge's score for a story."""
    if isinstance(completions, str):
        raise TypeError("completions must be a list of strings, not one string")
    items, completions = list(items), list(completions)
    if len(items) != len(completions):
        raise ValueError(f"items and completions must have the same length, got {len(items)} and {len(completions)}")
    return [preferences.gold_reward(item, c) for item, c in zip(items, completions)]


def proxy_story_reward(items, completions) -> np.ndarray:
    """Lecture 13's proxy reward model (:func:`rl2llm.reward_model.proxy_reward_model`, seed 0) on
    ``prompt + completion``, in the batch form :func:`train_rlhf` calls. Loaded once per process."""
    global _PROXY
    from . import reward_model

    if _PROXY is None:
        _PROXY = reward_model.proxy_reward_model(progress=False)
    if isinstance(completions, str):
        raise TypeError("completions must be a list of strings, not one string")
    return _PROXY.reward_fn([getattr(i, "prompt", i) for i in items], list(completions))


_PROXY = None


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class RLHFConfig:
    """The knobs of :func:`train_rlhf`.

    Each step samples ``batch_size`` prompts (cycling through the items in a
    seeded order) and one completion of at most ``max_new_tokens`` tokens
    each, at ``temperature``; scores them; then makes ``ppo_epochs`` passes
    over the batch in ``minibatches`` shuffled minibatches, each an Adam step
    (``lr``) on ``-clipped_surrogate + vf_coef * value_loss``, gradients
    clipped to norm ``max_grad_norm``. The per-token reward is
    :func:`shaped_rewards` with ``beta`` and ``kl_estimator``; with
    ``kl_target`` set, ``beta`` follows an :class:`AdaptiveKLController`
    (``kl_horizon``). Advantages: :func:`token_advantages` with ``gamma``,
    ``lam``, standardised over the batch's tokens when ``whiten``.
    ``steps`` updates, or fewer when ``max_seconds`` runs out. Every
    ``eval_every`` steps (and at the start and end) the policy's greedy
    completions of the evaluation items are scored.
    """

    steps: int = 40
    batch_size: int = 32
    max_new_tokens: int = 4
    temperature: float = 1.0
    lr: float = 3e-4
    ppo_epochs: int = 4
    minibatches: int = 2
    clip: float = 0.2
    vf_coef: float = 0.1
    max_grad_norm: float = 1.0
    beta: float = 0.05
    kl_estimator: str = "k1"
    kl_target: float | None = None
    kl_horizon: int = 1000
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True
    eval_every: int = 10
    eval_temperature: float = 0.0
    max_seconds: float | None = None
    threads: int = 1
    n_samples: int = 4

    def __post_init__(self):
        for name, low in (("steps", 1), ("batch_size", 2), ("max_new_tokens", 1), ("ppo_epochs", 1),
                          ("minibatches", 1), ("kl_horizon", 1), ("eval_every", 1), ("threads", 1),
                          ("n_samples", 0)):
            check.as_int(name, getattr(self, name), low)
        if self.minibatches > self.batch_size:
            raise ValueError(f"minibatches must be at most batch_size = {self.batch_size}, got {self.minibatches}")
        check.as_real("temperature", self.temperature, 0.0, low_open=True)
        check.as_real("eval_temperature", self.eval_temperature, 0.0)
        check.as_real("lr", self.lr, 0.0, low_open=True)
        check.as_real("clip", self.clip, 0.0, 1.0, high_open=True)
        check.as_real("vf_coef", self.vf_coef, 0.0)
        check.as_real("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        check.as_real("beta", self.beta, 0.0)
        check.as_real("gamma", self.gamma, 0.0, 1.0)
        check.as_real("lam", self.lam, 0.0, 1.0)
        check.as_bool("whiten", self.whiten)
        if self.kl_estimator not in ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {ESTIMATORS}, got {check.describe(self.kl_estimator)}")
        if self.kl_target is not None:
            check.as_real("kl_target", self.kl_target, 0.0, low_open=True)
            if self.beta <= 0:
                raise ValueError("beta must be > 0 when kl_target is set (the controller multiplies it)")
        if self.max_seconds is not None:
            check.as_real("max_seconds", self.max_seconds, 0.0, low_open=True)


@dataclass
class RLHFHistory:
    """What :func:`train_rlhf` logs, one entry per step (``proxy``, ``gold``, ``kl``, ``beta``) or per
    evaluation (``eval_steps``, ``eval_proxy``, ``eval_gold``).

    ``proxy``: the mean reward of the step's samples (the reward PPO
    optimises); ``gold``: the mean gold reward of the same samples; ``kl``:
    the mean over samples of the summed per-token k1 estimate of
    ``KL(policy || reference)`` (nats per completion), ``kl_k3`` the same with
    k3; ``beta``: the coefficient used; ``clip_fraction``: of the last epoch.
    ``samples``: ``(step, prompt, completion, proxy, gold)`` tuples, the
    first ``n_samples`` of the step, at the first and last step.
    ``policy_state``: the trained weights (``model.load_state_dict``).
    """

    config: dict
    seed: int
    proxy: list = field(default_factory=list)
    gold: list = field(default_factory=list)
    kl: list = field(default_factory=list)
    kl_k3: list = field(default_factory=list)
    beta: list = field(default_factory=list)
    clip_fraction: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    eval_proxy: list = field(default_factory=list)
    eval_gold: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    seconds: float = 0.0
    policy_state: dict | None = None


def evaluate(model, tokenizer, items, reward_fn: Callable, max_new_tokens: int, *, temperature: float = 0.0,
             seed: int = 0) -> float:
    """The mean of ``reward_fn(items, completions)`` over the model's completions of ``items``' prompts
    (greedy when ``temperature`` is 0)."""
    from .zoo import generate

    if not callable(reward_fn):
        raise TypeError(f"reward_fn must be callable, got {check.describe(reward_fn)}")
    items = list(items)
    if not items:
        raise ValueError("items must not be empty")
    completions = generate(model, tokenizer, [i.prompt for i in items], max_new_tokens,
                           temperature=temperature, seed=seed)
    return float(np.mean(reward_fn(items, completions)))


def train_rlhf(zoo_model, reward_fn: Callable, items, config: RLHFConfig = RLHFConfig(), seed: int = 0, *,
               gold_fn: Callable | None = None, eval_items=None) -> RLHFHistory:
    """PPO on a zoo language model: maximise ``reward_fn`` minus ``beta`` times the KL to the starting model.

    ``zoo_model``: a :class:`rl2llm.zoo.ZooModel` (its model is copied: the
    copy is trained, the original is the frozen reference). ``reward_fn``,
    ``gold_fn``: called as ``fn(items, completions)`` with lists, returning
    one number per completion; ``reward_fn`` is the *proxy* PPO maximises,
    ``gold_fn`` (default: ``reward_fn``) the true preference, only logged.
    ``items``: the training prompts (objects with a ``.prompt``: zoo Tasks
    or Stories); ``eval_items``: held-out ones for the evaluations (default:
    none). ``config``: an :class:`RLHFConfig`; ``seed``: the sampling order,
    the samples and the minibatches (the same seed and thread count give
    the same run). Returns an :class:`RLHFHistory`.
    """
    if not hasattr(zoo_model, "model") or not hasattr(zoo_model, "tokenizer"):
        raise TypeError(f"zoo_model must be a rl2llm.zoo.ZooModel, got {check.describe(zoo_model)}")
    if not callable(reward_fn):
        raise TypeError(f"reward_fn must be callable as reward_fn(items, completions), got {check.describe(reward_fn)}")
    if gold_fn is not None and not callable(gold_fn):
        raise TypeError(f"gold_fn must be callable or None, got {check.describe(gold_fn)}")
    items = list(items)
    if len(items) < 1 or not all(isinstance(getattr(i, "prompt", None), str) for i in items):
        raise ValueError("items must be a non-empty list of zoo Tasks or Stories (objects with a .prompt)")
    eval_items = list(eval_items) if eval_items is not None else []
    if not isinstance(config, RLHFConfig):
        raise TypeError(f"config must be an RLHFConfig, got {check.describe(config)}")
    seed = check.as_int("seed", seed, 0, 2**31 - 1)
    with torch_threads(config.threads), flush_denormals():
        return _train(zoo_model, reward_fn, gold_fn or reward_fn, items, eval_items, config, seed)


def _train(zoo_model, reward_fn, gold_fn, items, eval_items, c: RLHFConfig, seed: int) -> RLHFHistory:
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tokenizer, reference = zoo_model.tokenizer, zoo_model.model
    reference.eval()
    policy = copy.deepcopy(reference)
    policy.eval()                      # no dropout: the log-probs of sampling and of training agree
    head = ValueHead(policy.config.hidden_size)
    params = list(policy.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=c.lr, eps=1e-5)
    controller = AdaptiveKLController(c.beta, c.kl_target, c.kl_horizon) if c.kl_target else None
    history = RLHFHistory(config=asdict(c), seed=seed)
    order = np.array([], dtype=int)

    def run_eval(step):
        if eval_items:
            completions = _generate(policy, tokenizer, eval_items, c, seed)
            history.eval_steps.append(step)
            history.eval_proxy.append(float(np.mean(reward_fn(eval_items, completions))))
            history.eval_gold.append(float(np.mean(gold_fn(eval_items, completions))))

    run_eval(0)
    for step in range(c.steps):
        if len(order) < c.batch_size:
            order = np.concatenate([order, rng.permutation(len(items))])
        batch_items, order = [items[i] for i in order[:c.batch_size]], order[c.batch_size:]
        beta = controller.beta if controller else c.beta
        texts, batch = sequences.sample(policy, tokenizer, [i.prompt for i in batch_items], c.max_new_tokens,
                                        temperature=c.temperature, seed=seed * 100003 + step)
        proxy = np.asarray(reward_fn(batch_items, texts), dtype=float)
        gold = np.asarray(gold_fn(batch_items, texts), dtype=float)
        mask = batch.completion_mask.bool()
        with torch.no_grad():
            logp_old, values = _forward(policy, head, batch)
            logp_ref = sequences.token_log_probs(reference, batch).float() * mask
        kl = kl_estimators(logp_old, logp_ref)
        rewards = _shaped(torch.as_tensor(proxy, dtype=torch.float32), logp_old, logp_ref, mask, beta,
                          c.kl_estimator)
        adv, returns = _token_advantages(rewards, values, mask, c.gamma, c.lam)
        if c.whiten:
            real = adv[mask]
            adv = torch.where(mask, (adv - real.mean()) / (real.std() + 1e-8), adv)
        history.proxy.append(float(proxy.mean()))
        history.gold.append(float(gold.mean()))
        history.kl.append(float((kl.k1 * mask).sum(-1).mean()))
        history.kl_k3.append(float((kl.k3 * mask).sum(-1).mean()))
        history.beta.append(float(beta))
        if step in (0, c.steps - 1):
            history.samples += [(step, i.prompt, t, float(p), float(g))
                                for i, t, p, g in list(zip(batch_items, texts, proxy, gold))[:c.n_samples]]
        clipped = _ppo_epochs(policy, head, optimizer, params, batch, mask, logp_old, adv, returns, c, rng)
        history.clip_fraction.append(clipped)
        if controller:
            controller.update(history.kl[-1], c.batch_size)
        done = c.max_seconds is not None and time.perf_counter() - start > c.max_seconds
        if (step + 1) % c.eval_every == 0 or step == c.steps - 1 or done:
            run_eval(step + 1)
        if done:
            break
    history.seconds = time.perf_counter() - start
    history.policy_state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    return history


def _generate(policy, tokenizer, items, c, seed):
    from .zoo import generate
    return generate(policy, tokenizer, [i.prompt for i in items], c.max_new_tokens,
                    temperature=c.eval_temperature, seed=seed)


def _ppo_epochs(policy, head, optimizer, params, batch, mask, logp_old, adv, returns,
                c, rng) -> float:
    """``ppo_epochs`` passes of minibatch steps; returns the clip fraction."""
    n = batch.input_ids.shape[0]
    clipped = []
    for _ in range(c.ppo_epochs):
        clipped = []
        for index in np.array_split(rng.permutation(n), c.minibatches):
            mb = batch.select(index.tolist())
            width = mb.input_ids.shape[1]
            index = torch.as_tensor(index)
            m = mask[index, :width]
            old = logp_old[index, :width][m]
            a, ret = adv[index, :width][m], returns[index, :width][m]
            logp, values = _forward(policy, head, mb)
            policy_loss = -clipped_surrogate(logp[m], old, a, c.clip)
            value_loss = 0.5 * ((values[m] - ret) ** 2).mean()
            loss = policy_loss + c.vf_coef * value_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, c.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                clipped.append(clip_fraction(logp[m].detach(), old, c.clip))
    return float(np.mean(clipped))


# --------------------------------------------------------------------------- the chapter's two tasks

#: The two tasks of Lecture 14: the zoo model and checkpoint PPO starts from, the reward it maximises
#: (``"gold"``: the task's own checker; ``"proxy"``: Lecture 13's proxy reward model) and the prompts.
TASKS = {
    "arithmetic": {"model": "arithmetic", "checkpoint": "half-trained", "reward": "gold", "n_train": 300,
                   "n_eval": 200},
    "stories": {"model": "stories", "checkpoint": "final", "reward": "proxy", "n_train": 200, "n_eval": 0},
}


def train_on_task(task: str, config: RLHFConfig = RLHFConfig(), seed: int = 0, *,
                  keep_policy: bool = False) -> RLHFHistory:
    """:func:`train_rlhf` on one of the chapter's :data:`TASKS`, loading everything it needs by name.

    ``"arithmetic"``: the zoo's half-trained arithmetic model, rewarded 1 for
    a right answer (the gold reward: verifiable), trained on the first
    ``n_train`` held-out problems and evaluated (greedy exact match) on the
    next ``n_eval``. ``"stories"``: the zoo's story model, rewarded by
    Lecture 13's proxy reward model, with the gold judge logged; its prompts
    are the zoo's held-out story openings. Made to run in a worker process
    (:func:`rl2llm.vector.run_in_processes`): the arguments are names and
    numbers. ``keep_policy``: keep the trained weights in the history
    (dropped by default: they are large to send between processes).
    """
    from . import zoo

    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {check.describe(task)}")
    check.as_bool("keep_policy", keep_policy)
    spec = TASKS[task]
    model = zoo.load(spec["model"], spec["checkpoint"], progress=False)
    items = list(zoo.eval_items(spec["model"], spec["n_train"] + spec["n_eval"]))
    reward = gold_rewards if spec["reward"] == "gold" else proxy_story_reward
    history = train_rlhf(model, reward, items[:spec["n_train"]], config, seed, gold_fn=gold_rewards,
                         eval_items=items[spec["n_train"]:] or None)
    if not keep_policy:
        history.policy_state = None
    return history
