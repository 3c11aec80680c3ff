"""Reward models learned from comparisons (Lecture 13; Lecture 14 optimises against one).

A reward model turns "of these two answers, this one is better" into a number
per answer. The Bradley–Terry model says a judge prefers ``a`` to ``b`` with
probability ``sigmoid(r(a) - r(b))``; fitting ``r`` by maximum likelihood on
judged pairs is minimising :func:`bradley_terry_loss`. Rankings of more than
two answers generalise it to :func:`plackett_luce_loss`.

* :class:`RewardModel` — a zoo language model's body with a scalar head that
  reads the last token of ``prompt + completion + EOS``: a
  ``transformers.LlamaForSequenceClassification`` with one label, the class
  TRL's ``RewardTrainer`` trains, so the two can be compared weight for weight.
* :func:`train_reward_model` — AdamW on the Bradley–Terry loss over judged
  pairs (:class:`rl2llm.preferences.Preference` or anything with ``prompt``,
  ``chosen`` and ``rejected``).
* :func:`pairwise_accuracy`, :func:`calibration`, :func:`ensemble_scores` —
  how good the model is, how honest its probabilities are, how unsure it is.
* :func:`best_of_n`, :func:`best_of_n_curve`, :func:`best_of_n_kl` — the
  simplest optimiser of a reward model (sample ``n``, keep the best) and its
  price in KL from the policy, ``log n - (n - 1) / n``.
* :func:`proxy_reward_model` — the cached proxy reward model that Lectures 13
  and 14 over-optimise.

Every public function checks its arguments and names the bad one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import _validate as check
from .dqn import flush_denormals, torch_threads
from .progress import log
from .provenance import artifact_dir, artifact_key
from .seeding import seed_everything


# --------------------------------------------------------------------------- losses


def _as_tensor(name: str, value, ndim: int | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    else:
        t = torch.as_tensor(check.as_finite_array(name, value), dtype=torch.float32)
    if not torch.is_floating_point(t):
        t = t.float()
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if not torch.isfinite(t.detach()).all():
        raise ValueError(f"{name} must be finite")
    return t


def bradley_terry_loss(r_chosen, r_rejected, margin=None) -> torch.Tensor:
    """The Bradley–Terry negative log-likelihood, averaged over pairs.

    ``-log sigmoid(r_chosen - r_rejected - margin)``: the judge picks ``chosen``
    with probability ``sigmoid(r_chosen - r_rejected)``. ``margin`` (a number or
    one per pair, default 0) asks for a gap of at least that much, as TRL's
    ``RewardTrainer`` does when the data have a ``"margin"`` column.
    """
    r_chosen = _as_tensor("r_chosen", r_chosen, 1)
    r_rejected = _as_tensor("r_rejected", r_rejected, 1)
    if r_chosen.shape != r_rejected.shape or r_chosen.numel() == 0:
        raise ValueError(f"r_chosen and r_rejected must have the same non-empty shape, got "
                         f"{tuple(r_chosen.shape)} and {tuple(r_rejected.shape)}")
    diff = r_chosen - r_rejected
    if margin is not None:
        m = _as_tensor("margin", margin)
        if m.ndim > 1 or (m.ndim == 1 and m.shape != diff.shape):
            raise ValueError(f"margin must be a number or one per pair {tuple(diff.shape)}, got {tuple(m.shape)}")
        diff = diff - m.to(diff.dtype)
    return -F.logsigmoid(diff).mean()


def plackett_luce_loss(scores, ranking) -> torch.Tensor:
    """The Plackett–Luce negative log-likelihood of rankings, averaged over rows.

    ``scores``: ``(B, K)`` rewards of K answers per row; ``ranking``: ``(B, K)``
    the answers' indices from best to worst. A judge picks the best of the K
    with probability ``softmax(scores)``, then the best of the rest, and so on:
    ``-sum_k [s_(k) - logsumexp(s_(k), ..., s_(K))]``. With K = 2 it is
    :func:`bradley_terry_loss`.
    """
    scores = _as_tensor("scores", scores, 2)
    if scores.shape[1] < 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must have shape (B, K) with B >= 1 and K >= 2, got {tuple(scores.shape)}")
    if isinstance(ranking, torch.Tensor):
        ranking = ranking.detach().cpu().numpy()
    ranking = np.asarray(ranking)
    if ranking.shape != tuple(scores.shape):
        raise ValueError(f"ranking must have the shape of scores {tuple(scores.shape)}, got {ranking.shape}")
    if not np.issubdtype(ranking.dtype, np.integer):
        raise TypeError(f"ranking must hold integer indices, got dtype {ranking.dtype}")
    k = scores.shape[1]
    if not (np.sort(ranking, axis=1) == np.arange(k)).all():
        bad = int(np.argmax(~(np.sort(ranking, axis=1) == np.arange(k)).all(axis=1)))
        raise ValueError(f"ranking[{bad}] must be a permutation of 0..{k - 1}, got {ranking[bad].tolist()}")
    ordered = torch.gather(scores, 1, torch.as_tensor(ranking, dtype=torch.long))
    # logsumexp over the answers still in play: a reversed cumulative logsumexp
    rest = torch.logcumsumexp(ordered.flip(1), dim=1).flip(1)
    return -(ordered - rest)[:, :-1].sum(dim=1).mean()


# --------------------------------------------------------------------------- the model


def encode_texts(tokenizer, texts: Sequence[str], *, max_length: int | None = None) -> dict:
    """Token ids of ``text + EOS`` for each text, right-padded, as TRL's ``RewardTrainer`` makes them.

    Returns ``input_ids`` and ``attention_mask`` (LongTensors ``(B, T)``). The
    whole text is tokenized at once (prompt and completion together, as TRL
    does), and EOS is appended so the head reads a token that has seen it all.
    ``max_length`` keeps the last ``max_length`` tokens of a longer text
    (default: none cut).
    """
    if not hasattr(tokenizer, "eos_token_id") or tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise TypeError(f"tokenizer must be a tokenizer with EOS and pad tokens, got {check.describe(tokenizer)}")
    texts = check.as_strings("texts", texts)
    if not texts:
        raise ValueError("texts must hold at least one text")
    if max_length is not None:
        max_length = check.as_int("max_length", max_length, 2)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    if max_length is not None:
        ids = [x[-max_length:] for x in ids]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@dataclass
class RewardModel:
    """A reward model: ``model`` (a ``LlamaForSequenceClassification`` with one label) and its ``tokenizer``.

    ``rewards(texts)`` gives differentiable rewards (a tensor), ``score(texts)``
    plain numbers in batches without gradients. Texts are whole texts (prompt
    followed by completion); ``reward_fn(prompts, completions)`` is the same as
    a function of pairs, the shape Lecture 14's trainers call.
    """

    model: object
    tokenizer: object
    config: dict = field(default_factory=dict)

    @classmethod
    def from_zoo(cls, name: str = "stories", *, seed: int = 0) -> "RewardModel":
        """A zoo model's body with a fresh scalar head (initialised from ``seed``), the standard start."""
        from . import zoo

        if name not in zoo.SPECS:
            raise ValueError(f"name must be one of the zoo's models {tuple(zoo.SPECS)}, got {name!r}")
        seed = check.as_int("seed", seed, 0)
        path, tokenizer = _zoo_base(name)
        torch.manual_seed(seed)
        model = _load_classifier(path)
        with torch.no_grad():  # the head: small random weights from this seed (the body is the zoo's)
            model.score.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
        return cls(model, tokenizer, {"base": name, "seed": seed})

    def rewards(self, texts: Sequence[str], *, max_length: int | None = None) -> torch.Tensor:
        """Rewards of ``texts`` with gradients (one forward pass)."""
        batch = encode_texts(self.tokenizer, texts, max_length=max_length)
        return self.model(**batch, use_cache=False).logits.squeeze(-1)

    def score(self, texts: Sequence[str], *, batch_size: int = 256, threads: int | None = 1) -> np.ndarray:
        """Rewards of ``texts`` as a float array, in batches, without gradients (``threads``: PyTorch
        threads, as in :func:`train_reward_model`)."""
        texts = check.as_strings("texts", texts)
        batch_size = check.as_int("batch_size", batch_size, 1)
        was_training = self.model.training
        self.model.eval()
        out = []
        with torch.no_grad(), torch_threads(threads), flush_denormals():
            for i in range(0, len(texts), batch_size):
                out.append(self.rewards(texts[i:i + batch_size]).double().numpy())
        self.model.train(was_training)
        return np.concatenate(out) if out else np.zeros(0)

    def reward_fn(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """Rewards of ``prompt + completion`` for each pair (the reward of a policy's answer)."""
        prompts = check.as_strings("prompts", prompts)
        completions = check.as_strings("completions", completions)
        if len(prompts) != len(completions):
            raise ValueError(f"prompts and completions must have the same length, got {len(prompts)} and "
                             f"{len(completions)}")
        return self.score([p + c for p, c in zip(prompts, completions)])

    def save(self, path) -> Path:
        """Write the model, tokenizer and config to the folder ``path`` (``from_pretrained`` reads it)."""
        import transformers

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        transformers.logging.disable_progress_bar()   # "Writing model shards" bars
        try:
            self.model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        finally:
            transformers.logging.enable_progress_bar()
        (path / "reward_model.json").write_text(json.dumps(self.config, indent=1, sort_keys=True))
        return path

    @classmethod
    def load(cls, path) -> "RewardModel":
        """A reward model saved with :meth:`save`."""
        from transformers import AutoTokenizer

        path = Path(path)
        if not (path / "reward_model.json").is_file():
            raise ValueError(f"path must be a folder written by RewardModel.save, got {str(path)!r}")
        config = json.loads((path / "reward_model.json").read_text())
        return cls(_load_classifier(path).eval(), AutoTokenizer.from_pretrained(path), config)


_BASES: dict[str, tuple] = {}


def _zoo_base(name: str):
    """The zoo model's folder and tokenizer, looked up once per process (many reward models share them)."""
    if name not in _BASES:
        from transformers import AutoTokenizer

        from . import zoo

        path = zoo.ensure(name, progress=False) / "final"
        _BASES[name] = (path, AutoTokenizer.from_pretrained(path))
    return _BASES[name]


def _load_classifier(path):
    import transformers
    from transformers import LlamaForSequenceClassification

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the fresh head's "newly initialized" report
    transformers.logging.disable_progress_bar()
    try:
        return LlamaForSequenceClassification.from_pretrained(path, num_labels=1)
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


def _check_rm(rm) -> RewardModel:
    if not isinstance(rm, RewardModel):
        raise TypeError(f"rm must be a RewardModel (RewardModel.from_zoo or train_reward_model), "
                        f"got {check.describe(rm)}")
    return rm


def _check_prefs(name: str, prefs) -> list:
    if isinstance(prefs, (str, bytes)) or not hasattr(prefs, "__iter__"):
        raise TypeError(f"{name} must be a list of preferences, got {check.describe(prefs)}")
    prefs = list(prefs)
    for i, p in enumerate(prefs):
        if not all(isinstance(getattr(p, a, None), str) for a in ("prompt", "chosen", "rejected")):
            raise TypeError(f"{name}[{i}] must have string prompt, chosen and rejected (a Preference), "
                            f"got {check.describe(p)}")
    if not prefs:
        raise ValueError(f"{name} must hold at least one comparison")
    return prefs


def preference_texts(prefs) -> tuple[list[str], list[str]]:
    """``(chosen texts, rejected texts)``: ``prompt + chosen`` and ``prompt + rejected`` per comparison."""
    prefs = _check_prefs("prefs", prefs)
    return [p.prompt + p.chosen for p in prefs], [p.prompt + p.rejected for p in prefs]


# --------------------------------------------------------------------------- training


def train_reward_model(prefs, *, seed: int = 0, steps: int = 100, lr: float = 5e-4, batch_size: int = 16,
                       base: str = "stories", weight_decay: float = 0.0, margin: bool = False,
                       max_length: int | None = 96, threads: int | None = 1) -> tuple[RewardModel, dict]:
    """Fit a reward model to judged pairs by minimising :func:`bradley_terry_loss` with AdamW.

    Starts from :meth:`RewardModel.from_zoo` (``base``, ``seed``) and takes
    ``steps`` steps of ``batch_size`` pairs drawn by shuffled epochs over
    ``prefs`` (the same ``seed`` gives the same order). ``margin``: subtract
    each pair's gold margin (``gold_chosen - gold_rejected``) as TRL's margin
    column does (the judge's strength of preference; off by default: people
    rarely give one). ``threads``: PyTorch threads while training (default 1: the same numbers on
    any machine, and on a busy machine far faster than several threads fighting for the cores;
    ``None`` leaves the setting alone). ``history``: ``loss`` and ``accuracy`` (on the batch) per step.
    """
    prefs = _check_prefs("prefs", prefs)
    seed = check.as_int("seed", seed, 0)
    steps = check.as_int("steps", steps, 1)
    lr = check.as_real("lr", lr, 0.0, low_open=True)
    batch_size = check.as_int("batch_size", batch_size, 1)
    weight_decay = check.as_real("weight_decay", weight_decay, 0.0)
    margin = check.as_bool("margin", margin)
    if max_length is not None:
        max_length = check.as_int("max_length", max_length, 2)
    if threads is not None:
        threads = check.as_int("threads", threads, 1)
    chosen, rejected = preference_texts(prefs)
    margins = None
    if margin:
        margins = torch.tensor([float(p.gold_chosen - p.gold_rejected) for p in prefs])
    rm = RewardModel.from_zoo(base, seed=seed)
    rm.config.update({"steps": steps, "lr": lr, "batch_size": batch_size, "n_pairs": len(prefs)})
    rng = seed_everything(seed)
    model = rm.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = {"loss": [], "accuracy": []}
    order: list[int] = []
    b = min(batch_size, len(prefs))
    with torch_threads(threads), flush_denormals():
        for _ in range(steps):
            if len(order) < b:
                order += rng.permutation(len(prefs)).tolist()
            idx, order = order[:b], order[b:]
            r = rm.rewards([chosen[i] for i in idx] + [rejected[i] for i in idx], max_length=max_length)
            r_c, r_r = r[:b], r[b:]
            loss = bradley_terry_loss(r_c, r_r, None if margins is None else margins[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history["loss"].append(float(loss.detach()))
            history["accuracy"].append(float((r_c > r_r).float().mean()))
    model.eval()
    return rm, history


# --------------------------------------------------------------------------- measures


def pairwise_accuracy(rm, prefs, *, against: str = "gold") -> float:
    """How often the reward model ranks a pair as the judge did.

    ``against="gold"``: the gold reward's order (pairs with equal gold are
    skipped; what the reward model should learn); ``"label"``: the labels as
    given (noisy ones included).
    """
    rm = _check_rm(rm)
    prefs = _check_prefs("prefs", prefs)
    if against not in ("gold", "label"):
        raise ValueError(f"against must be 'gold' or 'label', got {against!r}")
    chosen, rejected = preference_texts(prefs)
    diff = rm.score(chosen) - rm.score(rejected)
    if against == "label":
        return float(np.mean(diff > 0))
    gold = np.array([p.gold_chosen - p.gold_rejected for p in prefs], dtype=float)
    keep = gold != 0
    if not keep.any():
        raise ValueError("prefs must hold a pair with different gold rewards to measure against the gold")
    return float(np.mean(np.sign(diff[keep]) == np.sign(gold[keep])))


def calibration(p_predicted, outcomes, *, n_bins: int = 10) -> dict:
    """Binned calibration: predicted probabilities against how often the event happened.

    ``p_predicted``: probabilities in [0, 1] (for a reward model,
    ``sigmoid(r(a) - r(b))``, its chance that the judge prefers ``a``);
    ``outcomes``: 0/1 (did the judge prefer ``a``) or probabilities (the gold
    judge's own chance). Returns ``predicted`` and ``observed`` (the means in
    each non-empty bin), ``count`` and ``ece`` (the expected calibration
    error: the count-weighted mean of ``|predicted - observed|``).
    """
    p = check.as_finite_array("p_predicted", p_predicted)
    y = check.as_finite_array("outcomes", outcomes)
    if p.ndim != 1 or p.size == 0 or y.shape != p.shape:
        raise ValueError(f"p_predicted and outcomes must be non-empty 1-D arrays of one length, got "
                         f"{p.shape} and {y.shape}")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("p_predicted must lie in [0, 1]")
    if (y < 0).any() or (y > 1).any():
        raise ValueError("outcomes must lie in [0, 1]")
    n_bins = check.as_int("n_bins", n_bins, 1)
    which = np.minimum((p * n_bins).astype(int), n_bins - 1)
    predicted, observed, count = [], [], []
    for k in range(n_bins):
        m = which == k
        if m.any():
            predicted.append(float(p[m].mean()))
            observed.append(float(y[m].mean()))
            count.append(int(m.sum()))
    predicted, observed, count = np.array(predicted), np.array(observed), np.array(count)
    ece = float(np.sum(count * np.abs(predicted - observed)) / count.sum())
    return {"predicted": predicted, "observed": observed, "count": count, "ece": ece}


def ensemble_scores(models: Sequence[RewardModel], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the spread (standard deviation across members) of an ensemble's rewards.

    Each member's rewards are standardised over ``texts`` first (a reward
    model's scale and offset are arbitrary: Bradley–Terry sees only
    differences), so the spread measures disagreement about the order, not
    about units.
    """
    if isinstance(models, RewardModel) or not hasattr(models, "__iter__"):
        raise TypeError(f"models must be a list of RewardModels, got {check.describe(models)}")
    models = [_check_rm(m) for m in models]
    if len(models) < 2:
        raise ValueError(f"models must hold at least 2 reward models to disagree, got {len(models)}")
    texts = check.as_strings("texts", texts)
    if len(texts) < 2:
        raise ValueError("texts must hold at least 2 texts (each member is standardised over them)")
    scores = np.stack([m.score(texts) for m in models])
    scores = (scores - scores.mean(axis=1, keepdims=True)) / (scores.std(axis=1, keepdims=True) + 1e-12)
    return scores.mean(axis=0), scores.std(axis=0)


# --------------------------------------------------------------------------- best of n


def best_of_n_kl(n) -> float:
    """The KL divergence of best-of-``n`` sampling from the policy: ``log n - (n - 1) / n`` nats.

    Exact when no single answer is likely to be drawn twice (a continuous
    reward over a vast answer space: Stiennon et al. 2020, appendix; Gao et al.
    2023 use it as the x axis of over-optimisation); for a policy that gives
    single answers noticeable probability it is an upper bound (Beirami et al.
    2024): two equally likely answers and ``n = 2`` give 0.131 nats, not 0.193.
    ``n = 1`` costs 0.
    """
    n = check.as_int("n", n, 1)
    return math.log(n) - (n - 1) / n


def best_of_n(policy, reward_fn: Callable, items, n: int, *, seed: int = 0, temperature: float = 1.0,
              max_new_tokens: int | None = None) -> list[str]:
    """For each item, sample ``n`` completions from ``policy`` and keep the one ``reward_fn`` likes best.

    ``policy``: a loaded zoo model (``zoo.load``); ``reward_fn(prompts,
    completions) -> rewards`` (e.g. :meth:`RewardModel.reward_fn`); ``items``:
    stories or tasks (anything with a ``prompt``). Ties go to the first sample.
    """
    if not hasattr(policy, "generate"):
        raise TypeError(f"policy must be a loaded zoo model (zoo.load), got {check.describe(policy)}")
    if not callable(reward_fn):
        raise TypeError(f"reward_fn must be callable as reward_fn(prompts, completions), "
                        f"got {check.describe(reward_fn)}")
    items = list(items)
    for i, it in enumerate(items):
        if not isinstance(getattr(it, "prompt", None), str):
            raise TypeError(f"items[{i}] must have a string prompt (a Story or Task), got {check.describe(it)}")
    n = check.as_int("n", n, 1)
    seed = check.as_int("seed", seed, 0)
    temperature = check.as_real("temperature", temperature, 0.0, low_open=True)
    if not items:
        return []
    prompts = [it.prompt for it in items for _ in range(n)]
    answers = policy.generate(prompts, max_new_tokens, temperature=temperature, seed=seed)
    rewards = np.asarray(reward_fn(prompts, answers), dtype=float).reshape(len(items), n)
    return [answers[k * n + int(np.argmax(rewards[k]))] for k in range(len(items))]


def best_of_n_curve(proxy, gold, ns) -> dict:
    """Expected proxy and gold reward of best-of-``n`` for each ``n``, from pools of samples.

    ``proxy``, ``gold``: ``(n_prompts, N)`` rewards of N samples per prompt.
    Best-of-n picks the sample with the highest proxy among n drawn without
    replacement from the N; averaging over every subset exactly (the sample
    ranked i-th lowest wins with probability C(i-1, n-1) / C(N, n)) gives an
    unbiased estimate with far less noise than drawing subsets. Returns
    ``n``, ``kl`` (:func:`best_of_n_kl`), ``proxy`` and ``gold`` (means over
    prompts) and ``gold_per_prompt`` (``(n_prompts, len(ns))``).
    """
    proxy = check.as_finite_array("proxy", proxy)
    gold = check.as_finite_array("gold", gold)
    if proxy.ndim != 2 or proxy.shape != gold.shape or 0 in proxy.shape:
        raise ValueError(f"proxy and gold must be non-empty arrays (n_prompts, N) of one shape, got "
                         f"{proxy.shape} and {gold.shape}")
    N = proxy.shape[1]
    ns = [check.as_int("ns[]", k, 1, N) for k in np.atleast_1d(ns).tolist()]
    order = np.argsort(proxy, axis=1, kind="stable")
    p_sorted = np.take_along_axis(proxy, order, 1)
    g_sorted = np.take_along_axis(gold, order, 1)
    i = np.arange(1, N + 1)
    out_p, out_g = [], []
    for k in ns:
        logw = np.full(N, -np.inf)
        ok = i >= k
        logw[ok] = (_log_comb(i[ok] - 1, k - 1) - _log_comb(N, k))
        w = np.exp(logw)
        w /= w.sum()
        out_p.append(p_sorted @ w)
        out_g.append(g_sorted @ w)
    gold_per_prompt = np.stack(out_g, axis=1)
    return {"n": np.array(ns), "kl": np.array([best_of_n_kl(k) for k in ns]),
            "proxy": np.stack(out_p, axis=1).mean(axis=0), "gold": gold_per_prompt.mean(axis=0),
            "gold_per_prompt": gold_per_prompt}


def _log_comb(n, k):
    from scipy.special import gammaln

    n, k = np.asarray(n, dtype=float), np.asarray(k, dtype=float)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


# --------------------------------------------------------------------------- the cached proxy


#: The proxy reward model's recipe (Lecture 13 shows its over-optimisation; Lecture 14 optimises it).
#: Its judge has a quirk: asked for stories that teach a lesson, it over-weights the moral (3 points
#: against the gold judge's 0.5) and prefers sad stories (sentiment weight -0.7 against +1).
PROXY_CONFIG = {"base": "stories", "n_prompts": 200, "noise": 0.5,
                "weights": {"moral_bonus": 3.0, "sentiment_weight": -0.7},
                "steps": 80, "lr": 5e-4, "batch_size": 16, "temperature": 1.0, "data_seed": 7}

_PREFERENCE_CACHE: dict[str, list] = {}


def _proxy_config(config) -> dict:
    """:data:`PROXY_CONFIG` updated with ``config`` (checked: a dict of its keys, or None)."""
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict of PROXY_CONFIG's keys, got {check.describe(config)}")
    unknown = set(config or {}) - set(PROXY_CONFIG)
    if unknown:
        raise ValueError(f"config has unknown keys {sorted(unknown)}; known: {sorted(PROXY_CONFIG)}")
    return {**PROXY_CONFIG, **(config or {})}


def proxy_preferences(config: dict | None = None) -> list:
    """The comparisons the proxy learns from: two samples per story opening, judged with noise.

    The judge is the gold judge (:func:`rl2llm.preferences.preference_pairs`)
    with the weights in ``config["weights"]``: by default the quirky judge of
    :data:`PROXY_CONFIG`, so the proxy has an error to exploit. The openings
    are not the zoo's held-out ones. Kept in memory per config (sampling them
    is the slow part).
    """
    from . import preferences, zoo

    config = _proxy_config(config)
    key = json.dumps(config, sort_keys=True)
    if key not in _PREFERENCE_CACHE:
        items = _training_items(config["n_prompts"], config["data_seed"])
        _PREFERENCE_CACHE[key] = preferences.preference_pairs(
            zoo.load(config["base"], progress=False), items, noise=config["noise"],
            temperature=config["temperature"], seed=config["data_seed"], weights=config["weights"])
    return list(_PREFERENCE_CACHE[key])


def _training_items(n: int, seed: int):
    """Story openings for training data, disjoint from the zoo's held-out items (a seed of their own)."""
    from . import corpora

    return corpora.stories(n, 1000 + seed)


def proxy_reward_model(*, seed: int = 0, config: dict | None = None, progress: bool = True) -> RewardModel:
    """The proxy reward model, trained once and cached (``artifact_dir("proxy-rm", key)``).

    Trained with :func:`train_reward_model` on :func:`proxy_preferences`
    (``PROXY_CONFIG`` updated with ``config``), from ``seed``. Lecture 13 shows
    best-of-n over-optimising it; Lecture 14 shows PPO doing the same. The
    cache key hashes this module's code, the config and the seed.
    """
    seed = check.as_int("seed", seed, 0)
    config = _proxy_config(config)
    from . import zoo

    key = artifact_key(train_reward_model, proxy_preferences, config={"config": config, "seed": seed,
                                                                       "zoo": zoo.key(config["base"])})
    folder = artifact_dir("proxy-rm", key)
    if (folder / "reward_model.json").is_file():
        return RewardModel.load(folder)
    if progress:
        log(f"training the proxy reward model (seed {seed}) into {folder}")
    prefs = proxy_preferences(config)
    rm, history = train_reward_model(prefs, seed=seed, steps=config["steps"], lr=config["lr"],
                                     batch_size=config["batch_size"], base=config["base"])
    rm.config.update({"proxy": config, "final_loss": float(np.mean(history["loss"][-10:]))})
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    rm.save(tmp)
    files = sorted(tmp.iterdir(), key=lambda f: f.name == "reward_model.json")
    for f in files:  # reward_model.json last: load() takes its presence to mean the entry is complete
        os.replace(f, folder / f.name)
    tmp.rmdir()
    return RewardModel.load(folder)
