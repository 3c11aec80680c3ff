"""Direct preference optimisation (Lecture 15).

RLHF with PPO (Lecture 14) fits a reward model and then runs reinforcement
learning against it with a KL penalty to a reference model. The KL-regularised
objective has a closed-form optimum, ``pi*(y|x) ∝ pi_ref(y|x) exp(r(x, y) / beta)``
(:func:`optimal_policy`); read backwards, every policy defines the reward it is
optimal for, ``r = beta log(pi / pi_ref)`` up to a per-prompt constant
(:func:`implicit_reward`). Put that reward into the Bradley–Terry likelihood of
the preferences and the constant cancels: the policy is trained on the
preference pairs directly, with no reward model and no sampling
(:func:`dpo_loss`; Rafailov et al., 2023).

* :func:`dpo_loss` — the sigmoid (DPO), IPO and hinge (SLiC) losses on
  sequence log-probabilities, as TRL's ``DPOTrainer`` computes them (the test
  suite checks equality to 1e-5), with the implicit rewards.
* :func:`optimal_policy`, :func:`population_dpo_loss`, :func:`fit_tabular_dpo` —
  the closed form, and the check that minimising the population DPO loss over
  a table of policies finds it.
* :func:`preference_batch`, :func:`pair_log_probs` — a list of
  :class:`~rl2llm.preferences.Preference` as one batch (chosen rows, then
  rejected rows) and the log-probabilities of both halves under a model.
* :func:`train_preferences` — the offline training loop, taking any loss of
  two :class:`PairLogps` (policy, reference): Lecture 16 plugs its KTO, SimPO,
  ORPO and CPO losses into it. :func:`train_dpo` is the loop with
  :func:`dpo_loss`; ``lora_rank`` trains a LoRA adapter (``peft``) instead of
  every weight, and then the reference is the same model, adapter off.
* :func:`win_rate`, :func:`sampled_kl` — what training bought (the gold
  judge's verdict on samples of the policy against samples of the reference)
  and what it cost (the KL divergence from the reference, estimated from the
  policy's own samples).

Every public function checks its arguments and names the bad one.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import _validate as check
from .preferences import Preference, gold_reward
from .sequences import SequenceBatch, encode, sample, sequence_log_probs

#: The losses :func:`dpo_loss` knows (TRL's names).
LOSS_TYPES = ("sigmoid", "ipo", "hinge")


# --------------------------------------------------------------------------- the loss


def _as_logps(name: str, value) -> torch.Tensor:
    if isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a 1-D tensor of log-probabilities, got {check.describe(value)}")
    if value.ndim != 1 or value.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor (one entry per pair), got shape {tuple(value.shape)}")
    if not torch.is_floating_point(value):
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {value.dtype}")
    if not bool(torch.isfinite(value.detach()).all()):
        raise ValueError(f"{name} must be finite, got {value.detach().tolist()[:5]}...")
    return value


def _as_lengths(name: str, value, like: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=like.dtype)
    if value.shape != like.shape or not bool((value >= 1).all()):
        raise ValueError(f"{name} must hold one token count >= 1 per pair (shape {tuple(like.shape)}), "
                         f"got {value.tolist()[:5]}")
    return value


@dataclass
class DPOLoss:
    """The value of :func:`dpo_loss`: ``loss`` (the batch mean, differentiable), the implicit
    rewards ``chosen_rewards`` and ``rejected_rewards`` (``beta * log(pi / pi_ref)``,
    detached) and ``per_pair`` losses."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    per_pair: torch.Tensor

    @property
    def accuracy(self) -> float:
        """The fraction of pairs whose chosen answer has the larger implicit reward."""
        return float((self.chosen_rewards > self.rejected_rewards).double().mean())

    @property
    def margin(self) -> float:
        """The mean implicit-reward margin, chosen minus rejected."""
        return float((self.chosen_rewards - self.rejected_rewards).mean())


def implicit_reward(policy_logps, ref_logps, beta: float) -> torch.Tensor:
    """``beta * (log pi(y|x) - log pi_ref(y|x))``: the reward a policy is optimal for (up to a
    per-prompt constant), read off the closed form :func:`optimal_policy`."""
    policy_logps = _as_logps("policy_logps", policy_logps)
    ref_logps = _as_logps("ref_logps", ref_logps)
    if policy_logps.shape != ref_logps.shape:
        raise ValueError(f"policy_logps and ref_logps must have the same shape, got {tuple(policy_logps.shape)} "
                         f"and {tuple(ref_logps.shape)}")
    beta = check.as_real("beta", beta, 0.0, low_open=True)
    return beta * (policy_logps - ref_logps)


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0, *, chosen_lengths=None,
             rejected_lengths=None) -> DPOLoss:
    """The DPO loss of a batch of pairs, from the sequence log-probabilities of both answers.

    With ``h = beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]``:

    * ``"sigmoid"`` (DPO): ``-log sigmoid(h)``; with ``label_smoothing = eps`` the
      conservative form ``-(1 - eps) log sigmoid(h) - eps log sigmoid(-h)`` (labels
      flipped with probability ``eps``; TRL 1.16's sigmoid loss has no smoothing,
      so compare with it at ``eps = 0``);
    * ``"hinge"`` (SLiC): ``max(0, 1 - h)``;
    * ``"ipo"``: ``(d - 1 / (2 beta))**2`` with ``d`` the log-ratio difference
      *without* beta; when ``chosen_lengths`` and ``rejected_lengths`` (completion
      tokens per answer) are given, each log-ratio is first divided by its
      answer's length, as TRL does (its authors' normalisation); without them,
      the paper's sequence-level form.

    Returns a :class:`DPOLoss` (the mean loss and the implicit rewards).
    """
    pc = _as_logps("policy_chosen_logps", policy_chosen_logps)
    pr = _as_logps("policy_rejected_logps", policy_rejected_logps)
    rc = _as_logps("ref_chosen_logps", ref_chosen_logps)
    rr = _as_logps("ref_rejected_logps", ref_rejected_logps)
    for name, t in (("policy_rejected_logps", pr), ("ref_chosen_logps", rc), ("ref_rejected_logps", rr)):
        if t.shape != pc.shape:
            raise ValueError(f"{name} must have the shape of policy_chosen_logps {tuple(pc.shape)}, "
                             f"got {tuple(t.shape)}")
    beta = check.as_real("beta", beta, 0.0, low_open=True)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    label_smoothing = check.as_real("label_smoothing", label_smoothing, 0.0, 0.5, high_open=True)
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to the sigmoid loss only, got {label_smoothing} "
                         f"with loss_type={loss_type!r}")
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("chosen_lengths and rejected_lengths must be given together (or neither)")
    if chosen_lengths is not None and loss_type != "ipo":
        raise ValueError(f"chosen_lengths and rejected_lengths normalise the ipo loss only, "
                         f"got loss_type={loss_type!r}")
    if chosen_lengths is not None:
        chosen_lengths = _as_lengths("chosen_lengths", chosen_lengths, pc)
        rejected_lengths = _as_lengths("rejected_lengths", rejected_lengths, pc)
    rc, rr = rc.to(pc.dtype), rr.to(pc.dtype)
    # The loss itself: log-ratios against the reference, then one of three shapes.
    chosen_ratio, rejected_ratio = pc - rc, pr - rr
    if loss_type == "sigmoid":
        h = beta * (chosen_ratio - rejected_ratio)
        eps = label_smoothing
        per_pair = -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h)
    elif loss_type == "hinge":
        per_pair = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    else:  # ipo: the margin regressed to 1 / (2 beta); TRL averages per token first
        if chosen_lengths is not None:
            chosen_ratio = chosen_ratio / chosen_lengths
            rejected_ratio = rejected_ratio / rejected_lengths
        per_pair = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    rewards = (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()
    return DPOLoss(per_pair.mean(), *rewards, per_pair)


# --------------------------------------------------------------------------- the closed form


def _as_probs(name: str, value) -> np.ndarray:
    probs = check.as_finite_array(name, value)
    if probs.ndim not in (1, 2) or probs.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (K,) or (n_prompts, K) with K >= 2 answers, got {probs.shape}")
    check.check_distributions(name, probs.reshape(-1, probs.shape[-1]))
    return probs


def optimal_policy(pi_ref, r, beta: float) -> np.ndarray:
    """The optimum of the KL-regularised objective ``E_pi[r] - beta KL(pi || pi_ref)``:
    ``pi_ref * exp(r / beta) / Z`` over a finite set of answers (the last axis).

    ``pi_ref``: ``(K,)`` or ``(n_prompts, K)`` probabilities; ``r`` the same shape
    (finite rewards); ``beta > 0``. Computed in log space, so a small ``beta``
    does not overflow (it tends to the argmax of ``r`` on ``pi_ref``'s support).
    """
    pi_ref = _as_probs("pi_ref", pi_ref)
    r = check.as_finite_array("r", r, pi_ref.shape, "the shape of pi_ref")
    beta = check.as_real("beta", beta, 0.0, low_open=True)
    with np.errstate(divide="ignore"):
        logits = np.log(pi_ref) + r / beta
    logits = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=-1, keepdims=True)


def population_dpo_loss(policy_logits: torch.Tensor, pi_ref, r, beta: float, pair_weights=None) -> torch.Tensor:
    """The DPO loss in expectation over every pair of a finite answer set, labelled by Bradley–Terry on ``r``.

    ``policy_logits``: ``(n_prompts, K)`` (a softmax gives the policy). For each
    prompt, pair ``(i, j)`` is drawn with weight ``pair_weights[x, i, j]``
    (default: uniform over ``i != j``) and labelled ``i`` over ``j`` with
    probability ``sigmoid(r_i - r_j)``. The minimiser over policies is
    :func:`optimal_policy` (``tests/test_dpo.py`` checks it to 1e-3).
    """
    if not isinstance(policy_logits, torch.Tensor) or policy_logits.ndim != 2:
        raise TypeError(f"policy_logits must be a (n_prompts, K) tensor, got {check.describe(policy_logits)}")
    pi_ref = _as_probs("pi_ref", pi_ref)
    pi_ref = pi_ref.reshape(-1, pi_ref.shape[-1])
    if tuple(policy_logits.shape) != pi_ref.shape:
        raise ValueError(f"policy_logits must have the shape of pi_ref {pi_ref.shape}, got {tuple(policy_logits.shape)}")
    r = check.as_finite_array("r", r).reshape(pi_ref.shape) if np.size(r) == pi_ref.size else None
    if r is None:
        raise ValueError(f"r must have the shape of pi_ref {pi_ref.shape}")
    beta = check.as_real("beta", beta, 0.0, low_open=True)
    n, K = pi_ref.shape
    if pair_weights is None:
        w = np.ones((n, K, K)) - np.eye(K)[None]
    else:
        w = check.as_finite_array("pair_weights", pair_weights, (n, K, K), "(n_prompts, K, K)")
        if (w < 0).any():
            raise ValueError("pair_weights must be >= 0")
    w = w / w.sum(axis=(1, 2), keepdims=True) / n
    dtype = policy_logits.dtype
    logp = torch.log_softmax(policy_logits, dim=-1)
    h = logp - torch.as_tensor(np.log(pi_ref), dtype=dtype)                       # log pi - log pi_ref
    margin = beta * (h[:, :, None] - h[:, None, :])                                # (n, K, K): i over j
    p_i = torch.sigmoid(torch.as_tensor(r[:, :, None] - r[:, None, :], dtype=dtype))
    loss = -(p_i * F.logsigmoid(margin) + (1 - p_i) * F.logsigmoid(-margin))
    return (torch.as_tensor(w, dtype=dtype) * loss).sum()


def fit_tabular_dpo(pi_ref, r, beta: float, *, pair_weights=None, max_iter: int = 500) -> np.ndarray:
    """Minimise :func:`population_dpo_loss` over a table of policies (L-BFGS, float64); return the policy."""
    pi_ref = _as_probs("pi_ref", pi_ref)
    max_iter = check.as_int("max_iter", max_iter, 1)
    shape = pi_ref.shape
    logits = torch.tensor(np.log(pi_ref).reshape(-1, shape[-1]), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([logits], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = population_dpo_loss(logits, pi_ref, r, beta, pair_weights)
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(logits.detach(), dim=-1).numpy().reshape(shape)


# --------------------------------------------------------------------------- preference batches


def _check_prefs(prefs) -> list[Preference]:
    if isinstance(prefs, Preference):
        raise TypeError("prefs must be a list of Preferences, not one (wrap it: [pref])")
    try:
        prefs = list(prefs)
    except TypeError:
        raise TypeError(f"prefs must be a list of Preferences, got {check.describe(prefs)}") from None
    for i, p in enumerate(prefs):
        if not isinstance(p, Preference):
            raise TypeError(f"prefs[{i}] must be a rl2llm.preferences.Preference, got {check.describe(p)}")
    if not prefs:
        raise ValueError("prefs must hold at least one comparison")
    return prefs


def preference_batch(tokenizer, prefs: Sequence[Preference]) -> SequenceBatch:
    """The pairs as one batch: rows ``0 .. n-1`` are the chosen answers, rows ``n .. 2n-1`` the
    rejected ones (TRL's layout), each ending with the end-of-text token."""
    prefs = _check_prefs(prefs)
    prompts = [p.prompt for p in prefs] * 2
    completions = [p.chosen for p in prefs] + [p.rejected for p in prefs]
    return encode(tokenizer, prompts, completions)


@dataclass
class PairLogps:
    """Sequence log-probabilities of the chosen and rejected answers of a batch of pairs under one
    model, with their lengths in tokens (``chosen_lengths``, ``rejected_lengths``: float tensors)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor

    def select(self, index) -> "PairLogps":
        """The pairs ``index`` (a list or tensor of pair numbers)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return PairLogps(self.chosen[index], self.rejected[index], self.chosen_lengths[index],
                         self.rejected_lengths[index])


def pair_log_probs(model, batch: SequenceBatch) -> PairLogps:
    """Split :func:`~rl2llm.sequences.sequence_log_probs` of a :func:`preference_batch` into its two halves
    (gradients flow when the caller has them on)."""
    if not isinstance(batch, SequenceBatch):
        raise TypeError(f"batch must be a SequenceBatch from preference_batch, got {check.describe(batch)}")
    if len(batch) % 2:
        raise ValueError(f"batch must hold chosen rows then rejected rows (an even number), got {len(batch)} rows")
    logps = sequence_log_probs(model, batch)
    lengths = batch.completion_mask.sum(-1).to(logps.dtype)
    n = len(batch) // 2
    return PairLogps(logps[:n], logps[n:], lengths[:n], lengths[n:])


def _chunked_pair_log_probs(model, batch: SequenceBatch, chunk: int = 32) -> PairLogps:
    """:func:`pair_log_probs` of every pair, ``chunk`` pairs at a time, each chunk padded only to its own
    longest row (one pass over all pairs at once would pad every row to the longest of all)."""
    n = len(batch) // 2
    parts = [pair_log_probs(model, _pair_rows(batch, list(range(i, min(i + chunk, n)))))
             for i in range(0, n, chunk)]
    return PairLogps(*(torch.cat([getattr(p, f) for p in parts])
                       for f in ("chosen", "rejected", "chosen_lengths", "rejected_lengths")))


def _pair_rows(batch: SequenceBatch, index: Sequence[int]) -> SequenceBatch:
    n = len(batch) // 2
    return batch.select(list(index) + [n + i for i in index])


# --------------------------------------------------------------------------- training


@dataclass
class PreferenceHistory:
    """What :func:`train_preferences` recorded, one entry per step: ``loss``; the policy's mean
    sequence log-probability of the batch's chosen and rejected answers (``chosen_logps``,
    ``rejected_logps``); ``accuracy`` and ``margin`` of the implicit reward (DPO's; with
    ``beta = 1`` for other losses); ``evals``: ``(step, callback result)`` pairs; ``seconds``:
    wall time of the training steps; ``trainable``: the number of trained parameters."""

    loss: list = field(default_factory=list)
    chosen_logps: list = field(default_factory=list)
    rejected_logps: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    margin: list = field(default_factory=list)
    evals: list = field(default_factory=list)
    seconds: float = 0.0
    trainable: int = 0


LossFn = Callable[[PairLogps, PairLogps], torch.Tensor]


def _with_lora(model, rank: int, alpha: float, seed: int):
    from peft import LoraConfig, get_peft_model

    import warnings

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    with warnings.catch_warnings():   # transformers' renamed checkpointing switch, asked for by peft
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, config)


def train_preferences(zoo_model, prefs: Sequence[Preference], loss_fn: LossFn, *, steps: int, lr: float,
                      batch_size: int = 32, seed: int = 0, lora_rank: int | None = None, lora_alpha: float = 16.0,
                      weight_decay: float = 0.0, max_grad_norm: float | None = 1.0, callback=None,
                      eval_every: int | None = None, needs_reference: bool = True):
    """Train a copy of ``zoo_model.model`` offline on ``prefs`` with ``loss_fn(policy, reference)``.

    ``loss_fn`` receives two :class:`PairLogps` of the sampled pairs: the
    policy's (with gradients) and the frozen reference's (computed once, before
    training, as TRL's ``precompute_ref_log_probs``; ``None`` when
    ``needs_reference`` is False), and returns the scalar loss. Each step draws
    ``batch_size`` pairs at random (without replacement within an epoch, seeded
    by ``seed``) and takes one AdamW step at ``lr`` (gradients clipped to
    ``max_grad_norm``; PyTorch's fused AdamW). ``lora_rank``: train a LoRA adapter of that rank on
    every linear layer (``peft``) instead of every weight; the reference is the
    model with its adapter off, so no second copy is kept. ``callback(step,
    policy)`` runs before the first step and every ``eval_every`` steps (and
    after the last); its results go to ``history.evals``.

    Returns ``(policy, history)``: the trained model (in eval mode) and a
    :class:`PreferenceHistory`. The zoo model itself is left untouched.
    """
    if not hasattr(zoo_model, "model") or not hasattr(zoo_model, "tokenizer"):
        raise TypeError(f"zoo_model must be a loaded zoo model (zoo.load), got {check.describe(zoo_model)}")
    prefs = _check_prefs(prefs)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function of (policy, reference) PairLogps, got {check.describe(loss_fn)}")
    steps = check.as_int("steps", steps, 1)
    lr = check.as_real("lr", lr, 0.0, low_open=True)
    batch_size = check.as_int("batch_size", batch_size, 1)
    seed = check.as_int("seed", seed, 0)
    if lora_rank is not None:
        lora_rank = check.as_int("lora_rank", lora_rank, 1)
    lora_alpha = check.as_real("lora_alpha", lora_alpha, 0.0, low_open=True)
    weight_decay = check.as_real("weight_decay", weight_decay, 0.0)
    if max_grad_norm is not None:
        max_grad_norm = check.as_real("max_grad_norm", max_grad_norm, 0.0, low_open=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of (step, policy), got {check.describe(callback)}")
    if eval_every is not None:
        eval_every = check.as_int("eval_every", eval_every, 1)
    needs_reference = check.as_bool("needs_reference", needs_reference)

    torch.manual_seed(seed)
    policy = copy.deepcopy(zoo_model.model)
    if lora_rank is not None:
        policy = _with_lora(policy, lora_rank, lora_alpha, seed)
    batch = preference_batch(zoo_model.tokenizer, prefs)
    n = len(prefs)
    reference = None
    if needs_reference:
        policy.eval()
        with torch.no_grad():
            if lora_rank is not None:
                with policy.disable_adapter():
                    reference = _chunked_pair_log_probs(policy, batch)
            else:
                reference = _chunked_pair_log_probs(zoo_model.model, batch)
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad]
    history = PreferenceHistory(trainable=int(sum(p.numel() for p in params)))
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)   # one kernel per update
    rng = np.random.default_rng(seed)
    order: list[int] = []

    def evaluate(step):
        if callback is not None:
            policy.eval()
            history.evals.append((step, callback(step, policy)))
            policy.train()

    evaluate(0)
    for step in range(1, steps + 1):
        start = time.perf_counter()
        if len(order) < min(batch_size, n):
            order = list(rng.permutation(n))
        index, order = order[:min(batch_size, n)], order[min(batch_size, n):]
        logps = pair_log_probs(policy, _pair_rows(batch, index))
        ref = reference.select(index) if reference is not None else None
        loss = loss_fn(logps, ref)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError(f"loss_fn must return a scalar tensor, got {check.describe(loss)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        history.seconds += time.perf_counter() - start
        with torch.no_grad():
            history.loss.append(float(loss))
            history.chosen_logps.append(float(logps.chosen.mean()))
            history.rejected_logps.append(float(logps.rejected.mean()))
            if ref is not None:
                diff = (logps.chosen - ref.chosen) - (logps.rejected - ref.rejected)
                history.accuracy.append(float((diff > 0).float().mean()))
                history.margin.append(float(diff.mean()))
        if eval_every is not None and (step % eval_every == 0 or step == steps) or (
                eval_every is None and step == steps):
            evaluate(step)
    policy.eval()
    return policy, history


def train_dpo(zoo_model, prefs: Sequence[Preference], *, beta: float, steps: int, lr: float, seed: int = 0,
              loss_type: str = "sigmoid", label_smoothing: float = 0.0, **options):
    """DPO: :func:`train_preferences` with :func:`dpo_loss` (``loss_type`` ``"sigmoid"``, ``"ipo"``
    with TRL's per-token normalisation, or ``"hinge"``). ``options`` go to :func:`train_preferences`
    (``batch_size``, ``lora_rank``, ``callback``, ``eval_every``, ...). Returns ``(policy, history)``."""
    beta = check.as_real("beta", beta, 0.0, low_open=True)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    label_smoothing = check.as_real("label_smoothing", label_smoothing, 0.0, 0.5, high_open=True)

    def loss_fn(policy: PairLogps, reference: PairLogps) -> torch.Tensor:
        lengths = {}
        if loss_type == "ipo":
            lengths = dict(chosen_lengths=policy.chosen_lengths, rejected_lengths=policy.rejected_lengths)
        return dpo_loss(policy.chosen, policy.rejected, reference.chosen, reference.rejected, beta, loss_type,
                        label_smoothing, **lengths).loss

    return train_preferences(zoo_model, prefs, loss_fn, steps=steps, lr=lr, seed=seed, **options)


# --------------------------------------------------------------------------- evaluation


def _check_items(items) -> list:
    if isinstance(items, str):
        raise TypeError("items must be a list of stories or tasks, not a string")
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"items must be a list of stories or tasks (zoo.eval_items), got {check.describe(items)}") from None
    if not items:
        raise ValueError("items must hold at least one story or task")
    for i, item in enumerate(items):
        if not hasattr(item, "prompt"):
            raise TypeError(f"items[{i}] must be a corpora.Story or Task, got {check.describe(item)}")
    return items


@dataclass
class WinRate:
    """:func:`win_rate`'s verdict: ``win_rate`` (ties count half), the gold rewards of the
    policy's and the reference's samples (``gold_policy``, ``gold_reference``: per sample), the
    samples' texts (``policy_texts``, ``reference_texts``), and ``kl``: ``KL(policy || reference)``
    estimated from the same policy samples (see :func:`sampled_kl`)."""

    win_rate: float
    gold_policy: np.ndarray
    gold_reference: np.ndarray
    policy_texts: list
    reference_texts: list
    kl: float


def win_rate(policy, reference, tokenizer, items, *, n_samples: int = 1, max_new_tokens: int = 120,
             seed: int = 0, weights: dict | None = None, reference_texts: list | None = None) -> WinRate:
    """How often the gold judge prefers the policy's answer to the reference model's, and at what KL.

    For each item, ``n_samples`` answers are sampled from each model
    (temperature 1, same seed) and compared pairwise by
    :func:`~rl2llm.preferences.gold_reward` (with ``weights``); a tie counts
    half. ``reference_texts`` (from an earlier call's result) skips sampling
    the reference again. The policy's samples also give the KL estimate of
    :func:`sampled_kl`, at no extra sampling.
    """
    if not isinstance(policy, torch.nn.Module) or not isinstance(reference, torch.nn.Module):
        raise TypeError(f"policy and reference must be language models, got {check.describe(policy)} and "
                        f"{check.describe(reference)}")
    items = _check_items(items)
    n_samples = check.as_int("n_samples", n_samples, 1)
    max_new_tokens = check.as_int("max_new_tokens", max_new_tokens, 1)
    seed = check.as_int("seed", seed, 0)
    weights = dict(weights or {})
    prompts = [item.prompt for item in items for _ in range(n_samples)]
    owners = [item for item in items for _ in range(n_samples)]
    texts, kl_terms = _samples_and_kl(policy, reference, tokenizer, prompts, max_new_tokens, seed)
    if reference_texts is None:
        reference_texts, _ = sample(reference, tokenizer, prompts, max_new_tokens, seed=seed)
    elif len(reference_texts) != len(prompts):
        raise ValueError(f"reference_texts must hold {len(prompts)} answers, got {len(reference_texts)}")
    g_pol = np.array([gold_reward(item, t, **weights) for item, t in zip(owners, texts)])
    g_ref = np.array([gold_reward(item, t, **weights) for item, t in zip(owners, reference_texts)])
    wins = np.where(g_pol > g_ref, 1.0, np.where(g_pol == g_ref, 0.5, 0.0))
    return WinRate(float(wins.mean()), g_pol, g_ref, texts, list(reference_texts), float(kl_terms.mean()))


@torch.no_grad()
def _samples_and_kl(policy, reference, tokenizer, prompts, max_new_tokens, seed):
    texts, batch = sample(policy, tokenizer, prompts, max_new_tokens, seed=seed)
    was = (policy.training, reference.training)
    policy.eval(), reference.eval()
    try:
        terms = (sequence_log_probs(policy, batch) - sequence_log_probs(reference, batch)).numpy()
    finally:
        policy.train(was[0]), reference.train(was[1])
    return texts, terms


def sampled_kl(policy, reference, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 120,
               seed: int = 0, return_samples: bool = False):
    """``KL(policy || reference)`` per answer, estimated from the policy's own samples:
    the mean of ``log pi(y|x) - log pi_ref(y|x)`` over ``y ~ pi`` (temperature 1), in nats.

    Unbiased for the sequence-level KL; a single sample's term can be negative.
    With ``return_samples``, also return the texts and the per-sample terms.
    """
    if not isinstance(policy, torch.nn.Module) or not isinstance(reference, torch.nn.Module):
        raise TypeError(f"policy and reference must be language models, got {check.describe(policy)} and "
                        f"{check.describe(reference)}")
    max_new_tokens = check.as_int("max_new_tokens", max_new_tokens, 1)
    seed = check.as_int("seed", seed, 0)
    return_samples = check.as_bool("return_samples", return_samples)
    texts, terms = _samples_and_kl(policy, reference, tokenizer, prompts, max_new_tokens, seed)
    kl = float(terms.mean())
    return (kl, texts, terms) if return_samples else kl


def training_memory(policy, *, reference_copy: bool) -> dict:
    """The bytes a training run keeps for its model state: ``weights`` (every parameter of
    ``policy``), ``gradients`` and ``optimizer`` (AdamW's two running averages) of the trainable
    parameters, and ``reference`` (a frozen copy of the weights, when ``reference_copy``; LoRA
    needs none: its reference is the same model with the adapter off), with their ``total``.

    An accounting from the parameters' sizes, not a measurement: activations come on top, and
    they are the same for both ways of training.
    """
    if not isinstance(policy, torch.nn.Module):
        raise TypeError(f"policy must be a torch.nn.Module, got {check.describe(policy)}")
    reference_copy = check.as_bool("reference_copy", reference_copy)
    params = list(policy.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    frozen_base = sum(p.numel() * p.element_size() for n, p in policy.named_parameters() if "lora_" not in n)
    out = {"weights": weights, "gradients": trainable, "optimizer": 2 * trainable,
           "reference": frozen_base if reference_copy else 0}
    out["total"] = sum(out.values())
    return out


# --------------------------------------------------------------------------- the chapter's experiment


#: Lecture 15's default experiment (:func:`dpo_run`); ``RL2LLM_SCALE=large`` multiplies prompts and steps.
DPO_RUN_DEFAULTS = dict(data="on-policy", beta=1.0, lr=2e-4, steps=40, batch_size=8, seed=0, lora_rank=None,
                        n_prompts=256, n_test=48, max_new_tokens=80, eval_every=20, off_policy_temperature=1.5,
                        weights=None)

_PREFS_CACHE: dict = {}
_REFERENCE_CACHE: dict = {}


def dpo_prefs(zoo_model, data: str = "on-policy", *, n_prompts: int = 256, max_new_tokens: int = 80,
              off_policy_temperature: float = 1.5, weights: dict | None = None) -> list[Preference]:
    """Lecture 15's preference data on the stories model, judged by the gold reward with no noise.

    ``"on-policy"``: two samples of the reference model itself (temperature 1)
    per training prompt (stories drawn with seed 7, apart from the held-out
    ones); ``"off-policy"``: the same prompts, answered by the same model
    sampled at ``off_policy_temperature``, a different distribution from the
    policy's. Cached per process.
    """
    from .preferences import preference_pairs
    from .corpora import stories

    if data not in ("on-policy", "off-policy"):
        raise ValueError(f"data must be 'on-policy' or 'off-policy', got {data!r}")
    n_prompts = check.as_int("n_prompts", n_prompts, 1)
    off_policy_temperature = check.as_real("off_policy_temperature", off_policy_temperature, 0.0, low_open=True)
    key = (id(zoo_model), data, n_prompts, max_new_tokens, off_policy_temperature, repr(sorted((weights or {}).items())))
    if key not in _PREFS_CACHE:
        temperature = 1.0 if data == "on-policy" else off_policy_temperature
        _PREFS_CACHE[key] = preference_pairs(zoo_model, stories(n_prompts, 7), temperature=temperature,
                                             max_new_tokens=max_new_tokens, seed=0, weights=weights)
    return _PREFS_CACHE[key]


def dpo_run(config: dict | None = None, **overrides) -> dict:
    """One run of Lecture 15's experiment: DPO on the stories model, measured as it trains.

    ``config`` (and ``overrides``) change :data:`DPO_RUN_DEFAULTS`: the data
    (:func:`dpo_prefs`), ``beta``, ``lr``, ``steps``, ``batch_size``, ``seed``,
    ``lora_rank``, ``n_test`` held-out prompts, ``eval_every`` (``None``: at
    the start and the end only). At each evaluation the policy's samples on the
    test prompts are judged against the reference's (the step-0 evaluation is
    the reference itself): ``evals`` holds the ``step``, the gold
    ``win_rate``, the mean ``gold`` reward, the sampled ``kl``, the samples'
    mean number of ``sentences``, the share ``over_target`` (more sentences
    than the judge's target) and the mean ``tokens``, the mean log-probability
    of the chosen and rejected answers of 64 fixed training pairs
    (``chosen_logp``, ``rejected_logp``) and three ``samples``. Also returned:
    the training history's lists, ``trainable``, ``memory``
    (:func:`training_memory`), ``seconds`` (training steps only), ``n_pairs``,
    ``reference`` and ``final`` (the first and last evaluations), and the
    data's length statistics (mean sentences of the chosen and rejected
    answers, the shares of pairs whose chosen answer is the longer or the
    shorter, and the shares of each side over the target). Runs in one PyTorch
    thread; a top-level function, so a process pool can run several at once.
    """
    from .corpora import story_attributes
    from .dqn import torch_threads
    from .zoo import eval_items, load

    cfg = dict(DPO_RUN_DEFAULTS)
    for name, value in {**(config or {}), **overrides}.items():
        if name not in cfg:
            raise ValueError(f"config: unknown setting {name!r} (known: {sorted(cfg)})")
        cfg[name] = value
    import warnings

    with torch_threads(1), warnings.catch_warnings():
        # peft reads a checkpointing switch that transformers renamed: a FutureWarning per adapter
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        zm = load("stories", progress=False)
        prefs = dpo_prefs(zm, cfg["data"], n_prompts=cfg["n_prompts"], max_new_tokens=cfg["max_new_tokens"],
                          off_policy_temperature=cfg["off_policy_temperature"], weights=cfg["weights"])
        test = eval_items("stories", cfg["n_test"])
        prompts = [s.prompt for s in test]
        weights = cfg["weights"] or {}
        ref_texts: dict = {}

        target = (weights or {}).get("target_sentences", 6)
        probe = preference_batch(zm.tokenizer, prefs[:64])   # a fixed set of training pairs

        def counts(texts):
            return np.array([story_attributes(p + t)["n_sentences"] for p, t in zip(prompts, texts)])

        def sentences(texts):
            return float(counts(texts).mean())

        def measures(policy, texts):
            with torch.no_grad():
                pair = pair_log_probs(policy, probe)
            n = counts(texts)
            tokens = float(np.mean([len(zm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]))
            return {"sentences": float(n.mean()), "over_target": float(np.mean(n > target)), "tokens": tokens,
                    "chosen_logp": float(pair.chosen.mean()), "rejected_logp": float(pair.rejected.mean()),
                    "samples": texts[:3]}

        def callback(step, policy):
            if step == 0:   # the policy is the reference: its samples, once per process and seed
                key = (cfg["n_test"], cfg["max_new_tokens"], cfg["seed"], repr(sorted(weights.items())))
                if key not in _REFERENCE_CACHE:
                    texts, _ = sample(zm.model, zm.tokenizer, prompts, cfg["max_new_tokens"], seed=1000 + cfg["seed"])
                    gold = np.array([gold_reward(s, t, **weights) for s, t in zip(test, texts)])
                    _REFERENCE_CACHE[key] = (texts, float(gold.mean()))
                texts, gold_mean = _REFERENCE_CACHE[key]
                ref_texts.update(texts=texts, gold=gold_mean)
                return {"step": 0, "win_rate": 0.5, "gold": gold_mean, "kl": 0.0,
                        **measures(policy, texts)}
            verdict = win_rate(policy, zm.model, zm.tokenizer, test, max_new_tokens=cfg["max_new_tokens"],
                               seed=1000 + cfg["seed"], weights=weights, reference_texts=ref_texts["texts"])
            return {"step": step, "win_rate": verdict.win_rate, "gold": float(verdict.gold_policy.mean()),
                    "kl": verdict.kl, **measures(policy, verdict.policy_texts)}

        policy, history = train_dpo(zm, prefs, beta=cfg["beta"], steps=cfg["steps"], lr=cfg["lr"],
                                    batch_size=cfg["batch_size"], seed=cfg["seed"], lora_rank=cfg["lora_rank"],
                                    callback=callback, eval_every=cfg["eval_every"])
    evals = [e for _, e in history.evals]
    return {"config": cfg, "evals": evals, "loss": history.loss, "chosen_logps": history.chosen_logps,
            "rejected_logps": history.rejected_logps, "accuracy": history.accuracy, "margin": history.margin,
            "trainable": history.trainable, "seconds": history.seconds, "n_pairs": len(prefs),
            "memory": training_memory(policy, reference_copy=cfg["lora_rank"] is None),
            "gold_reference": ref_texts["gold"], "reference": evals[0], "final": evals[-1],
            **_length_stats(prefs, target)}


def _length_stats(prefs, target: int) -> dict:
    """How the chosen and rejected answers of ``prefs`` compare in sentences (Lecture 15's length gotcha)."""
    from .corpora import story_attributes

    chosen = np.array([story_attributes(p.prompt + p.chosen)["n_sentences"] for p in prefs])
    rejected = np.array([story_attributes(p.prompt + p.rejected)["n_sentences"] for p in prefs])
    return {"chosen_sentences": float(chosen.mean()), "rejected_sentences": float(rejected.mean()),
            "chosen_longer": float(np.mean(chosen > rejected)), "chosen_shorter": float(np.mean(chosen < rejected)),
            "chosen_over_target": float(np.mean(chosen > target)),
            "rejected_over_target": float(np.mean(rejected > target))}
