"""Language modelling (Lecture 12): train a GPT on a token stream, measure it, decode from it, fit scaling laws.

The file reads in the order of the chapter:

* **Measuring a model.** :func:`token_losses` scores a token stream under
  teacher forcing (the cross-entropy of every token given the true ones
  before it, in nats), and :func:`perplexity` turns a mean cross-entropy
  into ``exp(mean)``: the number of equally likely tokens the model is, on
  average, choosing between.
* **Decoding.** The filters that turn the logits of the next token into the
  distribution a sampler draws from: :func:`apply_temperature` (``0`` is
  greedy), :func:`top_k_filter` (exactly the ``k`` most likely tokens),
  :func:`top_p_filter` (the smallest set of most likely tokens whose
  probability reaches ``p``, the nucleus), combined in that order by
  :func:`next_token_probs`; :func:`sample_next` draws from it and
  :func:`generate` writes a continuation token by token, with our
  :class:`~rl2llm.transformer.GPT` or any ``transformers`` causal LM.
* **Training.** :func:`train_lm`: AdamW on random windows of a token stream
  for a budget of tokens, the learning rate warmed up and then decayed along
  a cosine to the end of the budget, with held-out losses along the way.
  :func:`non_embedding_parameters` counts a model the way scaling laws do.
* **Scaling laws.** :func:`fit_power_law` fits ``L(x) = E + A x^-alpha``
  to measured losses; :func:`fit_scaling_law` fits the two-variable form of
  Hoffmann et al. (2022), ``L(N, D) = E + A / N^alpha + B / D^beta``, with
  their Huber loss on log-losses, from many starting points;
  :func:`scaling_law_profile` refits it with the compute-optimal exponent
  held fixed (how well do other exponents fit?), and
  :meth:`ScalingLaw.optimal_allocation` splits a compute budget ``C = 6 N D``
  between parameters and tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import _validate as check
from .dqn import torch_threads
from .progress import progress
from .transformer import GPT, GPTConfig, get_batch, n_parameters

# --------------------------------------------------------------------------- argument checks


def _check_logits(logits) -> torch.Tensor:
    """Logits: a float tensor whose last dimension is the vocabulary; -inf (a filtered token) is allowed."""
    if not isinstance(logits, torch.Tensor) or not torch.is_floating_point(logits):
        got = f"a tensor of {logits.dtype}" if isinstance(logits, torch.Tensor) else check.describe(logits)
        raise TypeError(f"logits must be a floating-point torch tensor (..., vocab_size), got {got}")
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have a last dimension of at least one token, got shape {tuple(logits.shape)}")
    if torch.isnan(logits).any():
        raise ValueError("logits must not contain NaN")
    if (logits == math.inf).any():
        raise ValueError("logits must not contain +inf (a filtered token is -inf)")
    if (logits == -math.inf).all(dim=-1).any():
        raise ValueError("logits: every token of some row is -inf, so there is nothing to choose from")
    return logits


def _check_stream(name: str, data) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or data.dim() != 1 or data.dtype != torch.long:
        got = f"a {data.dim()}-D tensor of {data.dtype}" if isinstance(data, torch.Tensor) else check.describe(data)
        raise TypeError(f"{name} must be a 1-D tensor of token ids (torch.long), got {got}")
    return data


def _check_gpt(model) -> GPT:
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a rl2llm.transformer.GPT, got {check.describe(model)}")
    return model


# --------------------------------------------------------------------------- measuring a model


def _logits(model, idx: torch.Tensor) -> torch.Tensor:
    """The logits ``(B, T, V)`` of a model: ours return ``(logits, loss)``, ``transformers``' an output object."""
    if isinstance(model, GPT):
        return model(idx)[0]
    return model(input_ids=idx).logits


@torch.no_grad()
def token_losses(model, data, *, block_size: int | None = None, batch_size: int = 32,
                 max_windows: int | None = None) -> np.ndarray:
    """The cross-entropy (nats) of every token of ``data`` given the true tokens before it (teacher forcing).

    ``data`` (a 1-D stream of token ids) is cut into non-overlapping windows
    of ``block_size + 1`` tokens (the first ``max_windows`` when given); each
    window's first ``block_size`` tokens are the input and its last
    ``block_size`` the targets. ``model``: our
    :class:`~rl2llm.transformer.GPT` (``block_size`` defaults to its
    context) or a ``transformers`` causal language model (``block_size``
    required). Returns an array ``(windows, block_size)``: column ``t`` is the
    loss of a token that had ``t`` tokens of context in its window. The model
    is evaluated without dropout and left as it was.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a GPT or a transformers causal language model, got {check.describe(model)}")
    data = _check_stream("data", data)
    batch_size = check.as_int("batch_size", batch_size, 1)
    if isinstance(model, GPT):
        vocab = model.config.vocab_size
        T = check.as_int("block_size", model.config.block_size if block_size is None else block_size, 1,
                         model.config.block_size)
    else:
        if block_size is None:
            raise ValueError("block_size must be given for a transformers model (the window to score)")
        T = check.as_int("block_size", block_size, 1)
        vocab = model.get_output_embeddings().weight.shape[0]
    n = (len(data) - 1) // T
    if max_windows is not None:
        n = min(n, check.as_int("max_windows", max_windows, 1))
    if n < 1:
        raise ValueError(f"data must hold at least block_size + 1 = {T + 1} tokens, got {len(data)}")
    if int(data.max()) >= vocab or int(data.min()) < 0:
        raise ValueError(f"data holds token ids from {int(data.min())} to {int(data.max())}; the vocabulary is "
                         f"0 .. {vocab - 1}")
    starts = torch.arange(n) * T
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, n, batch_size):
            chunk = data[starts[i:i + batch_size, None] + torch.arange(T + 1)]
            logits = _logits(model, chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), chunk[:, 1:].reshape(-1),
                                   reduction="none")
            out.append(loss.view(len(chunk), T))
    finally:
        model.train(was_training)
    return torch.cat(out).double().numpy()


def perplexity(losses) -> float:
    """``exp`` of the mean cross-entropy (nats per token): the effective number of choices per token.

    ``losses``: one mean cross-entropy, or an array of per-token losses (as
    :func:`token_losses` returns), averaged first. A model that spreads its
    probability evenly over ``V`` tokens has perplexity ``V``.
    """
    values = check.as_finite_array("losses", np.atleast_1d(losses) if not isinstance(losses, torch.Tensor)
                                   else losses.detach().cpu().numpy())
    if values.size == 0:
        raise ValueError("losses must not be empty")
    if (values < 0).any():
        raise ValueError(f"losses must be >= 0 (a cross-entropy), got a minimum of {values.min()!r}")
    return float(np.exp(values.mean()))


# --------------------------------------------------------------------------- decoding


def apply_temperature(logits, temperature: float) -> torch.Tensor:
    """Logits divided by ``temperature`` (> 1 flattens the distribution, < 1 sharpens it).

    ``temperature = 0`` is the limit: only the most likely token keeps its
    logit (the first one on a tie), every other becomes -inf, so sampling
    from the result is greedy decoding.
    """
    logits = _check_logits(logits)
    temperature = check.as_real("temperature", temperature, 0.0)
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)
        return torch.full_like(logits, -math.inf).scatter(-1, best, logits.gather(-1, best))
    return logits / temperature


def top_k_filter(logits, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest logits of each row, set the others to -inf.

    Ties at the border are broken by position (the lower token id stays), so
    exactly ``k`` tokens survive even when several share the ``k``-th value;
    ``k`` may not exceed the vocabulary.
    """
    logits = _check_logits(logits)
    k = check.as_int("k", k, 1, logits.shape[-1])
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices[..., :k]
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, True)
    return logits.masked_fill(~keep, -math.inf)


def top_p_filter(logits, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches ``p``.

    Tokens are sorted by probability (ties by position); a token is kept when
    the probability of the tokens before it is still below ``p``, so the most
    likely token always survives and the kept set's mass is at least ``p``.
    ``p = 1`` keeps every token. The others are set to -inf.
    """
    logits = _check_logits(logits)
    p = check.as_real("p", p, 0.0, 1.0, low_open=True)
    if p == 1.0:
        return logits.clone()
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sorted_logits.double(), dim=-1)
    before = probs.cumsum(dim=-1) - probs          # the mass of the tokens ranked above each one
    keep_sorted = before < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, -math.inf)


def next_token_probs(logits, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> torch.Tensor:
    """The distribution a sampler draws the next token from: temperature, then top-k, then top-p, then softmax.

    The order is that of ``transformers``' ``generate``: the nucleus is
    taken from the distribution the temperature has already reshaped.
    ``top_k``/``top_p`` ``None`` leave that filter out.
    """
    scaled = apply_temperature(logits, temperature)
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    if top_p is not None:
        scaled = top_p_filter(scaled, top_p)
    return torch.softmax(scaled, dim=-1)


def sample_next(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of ``logits`` ``(B, V)``, drawn from :func:`next_token_probs` (``(B,)``)."""
    logits = _check_logits(logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, vocab_size), got {tuple(logits.shape)}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {check.describe(generator)}")
    if temperature == 0 and not isinstance(temperature, bool):   # greedy: no draw, no generator used
        check.as_real("temperature", temperature, 0.0)
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs.float(), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, idx, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, generator: torch.Generator | None = None,
             stop_token: int | None = None) -> torch.Tensor:
    """Append up to ``max_new_tokens`` tokens to ``idx`` ``(B, T)``, each drawn by :func:`sample_next`.

    ``model``: our :class:`~rl2llm.transformer.GPT` (fed its last
    ``block_size`` tokens at each step) or a ``transformers`` causal language
    model such as the zoo's (fed the prompt once, then one token at a time
    with its key-value cache; the rows have no padding, so every prompt of
    the batch has the same length). ``temperature = 0`` is greedy decoding.
    ``stop_token``: a row that has drawn it draws nothing else (it is
    repeated), and generation ends early once every row has. The model runs
    in evaluation mode (no dropout) and is left as it was.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a GPT or a transformers causal language model, got {check.describe(model)}")
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() != 2 or idx.size(1) < 1:
        got = f"a tensor of {idx.dtype} and shape {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else \
            check.describe(idx)
        raise TypeError(f"idx must be a (batch, T) tensor of token ids (torch.long) with T >= 1, got {got}")
    max_new_tokens = check.as_int("max_new_tokens", max_new_tokens, 0)
    check.as_real("temperature", temperature, 0.0)
    if top_k is not None:
        check.as_int("top_k", top_k, 1)
    if top_p is not None:
        check.as_real("top_p", top_p, 0.0, 1.0, low_open=True)
    if stop_token is not None:
        stop_token = check.as_int("stop_token", stop_token, 0)
    ours = isinstance(model, GPT)
    if ours:
        model._check_ids("idx", idx[:, -model.config.block_size:])
    was_training = model.training
    model.eval()
    done = torch.zeros(len(idx), dtype=torch.bool)
    past = None
    try:
        for _ in range(max_new_tokens):
            if ours:
                logits = model(idx[:, -model.config.block_size:])[0][:, -1, :]
            else:   # the whole prompt first, then only the newest token, with the cache of the rest
                out = model(input_ids=idx if past is None else idx[:, -1:], past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[:, -1, :]
            token = sample_next(logits, temperature, top_k, top_p, generator)
            if stop_token is not None:
                token = torch.where(done, torch.full_like(token, stop_token), token)
                done |= token == stop_token
            idx = torch.cat([idx, token[:, None]], dim=1)
            if stop_token is not None and bool(done.all()):
                break
    finally:
        model.train(was_training)
    return idx


# --------------------------------------------------------------------------- training


def non_embedding_parameters(config: GPTConfig) -> int:
    """Parameters outside the vocabulary and position embeddings: the ``N`` of Kaplan et al.'s scaling laws.

    Kaplan et al. (2020) leave out every vocabulary matrix, so an untied
    output layer is left out too: what remains are the blocks and the final
    norm, about ``12 n_layer n_embd^2`` in GPT-2's shape.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {check.describe(config)}")
    embeddings = config.vocab_size * config.n_embd * (1 if config.tie_weights else 2)
    if config.position == "learned":
        embeddings += config.block_size * config.n_embd
    return n_parameters(config) - embeddings


@dataclass
class LMRun:
    """What :func:`train_lm` returns.

    ``model`` (in evaluation mode); ``losses``: the training loss of every
    step; ``eval_tokens`` / ``eval_losses``: the held-out loss (nats per token)
    after that many training tokens (empty without ``eval_data``);
    ``tokens``: the tokens trained on (``steps * batch_size * block_size``);
    ``parameters`` / ``non_embedding``: the model's size; ``lrs``: the
    learning rate of every step; ``seconds`` and ``cpu_seconds``: the wall
    and CPU time of training (the process's, so one thread's when it trains
    on one).
    """

    model: GPT
    losses: np.ndarray
    eval_tokens: np.ndarray
    eval_losses: np.ndarray
    tokens: int
    parameters: int
    non_embedding: int
    lrs: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        """The last held-out loss (the training loss of the last step without ``eval_data``)."""
        return float(self.eval_losses[-1] if len(self.eval_losses) else self.losses[-1])

    @property
    def compute(self) -> float:
        """Training compute in floating-point operations, ``6 N D`` (N non-embedding, D tokens)."""
        return 6.0 * self.non_embedding * self.tokens


def lr_schedule(step: int, steps: int, lr: float, warmup: int, final_lr_fraction: float) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``lr`` down to ``lr * final_lr_fraction``
    at the last of ``steps`` steps (``step`` counts from 0)."""
    steps = check.as_int("steps", steps, 1)
    step = check.as_int("step", step, 0, steps - 1)
    lr = check.as_real("lr", lr, 0.0, low_open=True)
    warmup = check.as_int("warmup", warmup, 0)
    final_lr_fraction = check.as_real("final_lr_fraction", final_lr_fraction, 0.0, 1.0)
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, steps - 1 - warmup)
    progress_ = min(1.0, (step - warmup) / span)
    return lr * (final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress_)))


def train_lm(config: GPTConfig, data, tokens: int, *, eval_data=None, batch_size: int = 16, lr: float = 3e-3,
             warmup: int = 20, final_lr_fraction: float = 0.1, weight_decay: float = 0.0,
             grad_clip: float | None = 1.0, eval_every: int | None = None, eval_windows: int = 64,
             seed: int = 0, threads: int | None = None, label: str | None = None) -> LMRun:
    """Train a fresh ``GPT(config)`` on ``tokens`` tokens of random windows of ``data`` (next-token prediction).

    ``steps = tokens // (batch_size * block_size)`` AdamW steps (betas 0.9,
    0.95; PyTorch's fused implementation), the learning rate warmed up over ``warmup`` steps and decayed
    along a cosine to ``lr * final_lr_fraction`` at the last step: the
    schedule fits the budget, as Hoffmann et al. (2022) found it must.
    Gradients are clipped at norm ``grad_clip`` (``None``: never). With
    ``eval_data``, the loss on its first ``eval_windows`` windows is measured
    every ``eval_every`` steps (default: 10 times per run) and at the end.
    ``seed`` fixes the initial weights and the batches; ``label`` names the
    run in the build's progress log; ``threads`` sets PyTorch's thread count
    while it trains (``None``: as it is; one thread suits these small models,
    and runs side by side in worker processes, see
    :func:`rl2llm.vector.run_in_processes`).
    """
    with torch_threads(threads):
        return _train_lm(config, data, tokens, eval_data, batch_size, lr, warmup, final_lr_fraction, weight_decay,
                         grad_clip, eval_every, eval_windows, seed, label)


def _train_lm(config, data, tokens, eval_data, batch_size, lr, warmup, final_lr_fraction, weight_decay, grad_clip,
              eval_every, eval_windows, seed, label) -> LMRun:
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {check.describe(config)}")
    data = _check_stream("data", data)
    if len(data) <= config.block_size:
        raise ValueError(f"data must be longer than block_size = {config.block_size}, got {len(data)} tokens")
    if int(data.max()) >= config.vocab_size or int(data.min()) < 0:
        raise ValueError(f"data holds token ids from {int(data.min())} to {int(data.max())}; the vocabulary is "
                         f"0 .. {config.vocab_size - 1}")
    tokens = check.as_int("tokens", tokens, 1)
    batch_size = check.as_int("batch_size", batch_size, 1)
    per_step = batch_size * config.block_size
    if tokens < per_step:
        raise ValueError(f"tokens must cover at least one batch of batch_size * block_size = {per_step}, got {tokens}")
    steps = tokens // per_step
    lr = check.as_real("lr", lr, 0.0, low_open=True)
    warmup = check.as_int("warmup", warmup, 0)
    final_lr_fraction = check.as_real("final_lr_fraction", final_lr_fraction, 0.0, 1.0)
    weight_decay = check.as_real("weight_decay", weight_decay, 0.0)
    if grad_clip is not None:
        grad_clip = check.as_real("grad_clip", grad_clip, 0.0, low_open=True)
    if eval_data is not None:
        eval_data = _check_stream("eval_data", eval_data)
        if len(eval_data) <= config.block_size:
            raise ValueError(f"eval_data must hold at least block_size + 1 = {config.block_size + 1} tokens, "
                             f"got {len(eval_data)}")
    eval_every = max(1, steps // 10) if eval_every is None else check.as_int("eval_every", eval_every, 1)
    eval_windows = check.as_int("eval_windows", eval_windows, 1)
    seed = check.as_int("seed", seed, 0, 2**63 - 1)
    if label is not None and not isinstance(label, str):
        raise TypeError(f"label must be a string or None, got {check.describe(label)}")

    start, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    model = GPT(config)
    batches = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95),
                                  fused=True)   # one kernel for the whole update: a third of the step saved
    losses, lrs, eval_tokens, eval_losses = np.zeros(steps), np.zeros(steps), [], []

    def evaluate(step_done: int) -> None:
        if eval_data is not None:
            eval_tokens.append(step_done * per_step)
            eval_losses.append(float(token_losses(model, eval_data, max_windows=eval_windows).mean()))
            model.train()

    model.train()
    steps_iter = range(steps) if label is None else progress(range(steps), label)
    for step in steps_iter:
        lrs[step] = lr_schedule(step, steps, lr, warmup, final_lr_fraction)
        for group in optimizer.param_groups:
            group["lr"] = lrs[step]
        x, y = get_batch(data, batch_size, config.block_size, batches)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses[step] = loss.item()
        if not math.isfinite(losses[step]):
            raise FloatingPointError(f"the training loss became {losses[step]} at step {step}; lower lr = {lr}")
        if (step + 1) % eval_every == 0 and step + 1 < steps:
            evaluate(step + 1)
    evaluate(steps)
    model.eval()
    return LMRun(model, losses, np.array(eval_tokens, dtype=float), np.array(eval_losses), steps * per_step,
                 n_parameters(config), non_embedding_parameters(config), lrs, time.perf_counter() - start,
                 time.process_time() - cpu)


# --------------------------------------------------------------------------- scaling laws


def _positive_vector(name: str, value) -> np.ndarray:
    array = check.as_finite_array(name, value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if (array <= 0).any():
        i = int(np.argmax(array <= 0))
        raise ValueError(f"{name} must be positive, but {name}[{i}] = {array[i]!r}")
    return array


@dataclass(frozen=True)
class PowerLaw:
    """``y(x) = offset + scale * x ** -exponent``, fitted by :func:`fit_power_law`."""

    scale: float
    exponent: float
    offset: float = 0.0

    def __call__(self, x):
        x = np.asarray(x, dtype=float)
        return self.offset + self.scale * x ** -self.exponent


def fit_power_law(x, y, *, offset: bool = True) -> PowerLaw:
    """Fit ``y = E + A x^-alpha`` (``offset=False``: ``E = 0``, a straight line on log-log axes).

    Least squares on ``log y``, so every point counts by its relative error,
    as on the log-log plots that show such laws. With the offset ``E`` (the
    loss no model can beat), ``0 <= E < min(y)``; the fit starts from a grid
    of offsets and keeps the best. Needs at least 2 points (3 with the offset)
    and ``x``, ``y`` positive.
    """
    x = _positive_vector("x", x)
    y = _positive_vector("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    offset = check.as_bool("offset", offset)
    need = 3 if offset else 2
    if len(np.unique(x)) < need:
        raise ValueError(f"x must hold at least {need} different values to fit {'three' if offset else 'two'} "
                         f"numbers, got {len(np.unique(x))}")
    lx, ly = np.log(x), np.log(y)
    if not offset:
        slope, intercept = np.polyfit(lx, ly, 1)
        return PowerLaw(float(np.exp(intercept)), float(-slope), 0.0)
    from scipy.optimize import least_squares

    def residuals(theta):
        log_a, alpha, e = theta
        return np.log(e + np.exp(log_a - alpha * lx)) - ly

    best = None
    for fraction in (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99):
        e0 = fraction * y.min()
        slope, intercept = np.polyfit(lx, np.log(np.maximum(y - e0, 1e-12 * y.min())), 1)
        start = np.array([intercept, max(-slope, 1e-3), e0])
        fit = least_squares(residuals, start, bounds=([-np.inf, 0.0, 0.0], [np.inf, np.inf, y.min() * (1 - 1e-9)]))
        if best is None or fit.cost < best.cost:
            best = fit
    log_a, alpha, e = best.x
    return PowerLaw(float(np.exp(log_a)), float(alpha), float(e))


@dataclass(frozen=True)
class ScalingLaw:
    """``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al., 2022), fitted by :func:`fit_scaling_law`.

    ``E``: the loss of an infinite model trained forever (the entropy of the
    text); the other terms: what a finite model (``N`` parameters) and a
    finite amount of data (``D`` tokens) add to it.
    """

    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def __call__(self, N, D):
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    def huber_loss(self, N, D, loss, *, huber_delta: float = 1e-3) -> float:
        """The objective :func:`fit_scaling_law` minimises: the summed Huber loss between log predictions and ``log(loss)``."""
        N, D, L, huber_delta = _scaling_inputs(N, D, loss, huber_delta)
        r = np.log(self(N, D)) - np.log(L)
        return float(np.where(np.abs(r) <= huber_delta, 0.5 * r ** 2, huber_delta * (np.abs(r) - 0.5 * huber_delta)).sum())

    @property
    def parameter_exponent(self) -> float:
        """``a = beta / (alpha + beta)``: the compute-optimal model grows as ``C^a``."""
        return self.beta / (self.alpha + self.beta)

    @property
    def data_exponent(self) -> float:
        """``b = alpha / (alpha + beta)``: the compute-optimal token count grows as ``C^b`` (``a + b = 1``)."""
        return self.alpha / (self.alpha + self.beta)

    def optimal_allocation(self, compute) -> tuple[np.ndarray, np.ndarray]:
        """The ``(N, D)`` that minimise the loss for ``compute = 6 N D`` floating-point operations.

        Setting the derivative along ``N D = C / 6`` to zero gives ``N = G
        (C/6)^a`` and ``D = (C/6)^b / G`` with ``G = (alpha A / (beta B))^(1 /
        (alpha + beta))``.
        """
        compute = _positive_vector("compute", np.atleast_1d(compute))
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        ND = compute / 6.0
        return G * ND ** self.parameter_exponent, ND ** self.data_exponent / G


def _scaling_inputs(N, D, loss, huber_delta):
    N, D, L = _positive_vector("N", N), _positive_vector("D", D), _positive_vector("loss", loss)
    if not len(N) == len(D) == len(L):
        raise ValueError(f"N, D and loss must have the same length, got {len(N)}, {len(D)} and {len(L)}")
    if len(L) < 5 or len(np.unique(N)) < 2 or len(np.unique(D)) < 2:
        raise ValueError(f"need at least 5 runs with 2 different N and 2 different D to fit 5 numbers, got "
                         f"{len(L)} runs, {len(np.unique(N))} N and {len(np.unique(D))} D")
    huber_delta = check.as_real("huber_delta", huber_delta, 0.0, low_open=True)
    return N, D, L, huber_delta


def _scaling_objective(N, D, L, huber_delta):
    """The Huber loss of Hoffmann et al. on log-losses, and its gradient, in ``theta = (log A, log B, log E, alpha, beta)``."""
    from scipy.special import logsumexp

    lN, lD, lL = np.log(N), np.log(D), np.log(L)

    def objective(theta):
        a, b, e, alpha, beta = theta
        terms = np.stack([a - alpha * lN, b - beta * lD, np.full_like(lN, e)])
        pred = logsumexp(terms, axis=0)
        r = pred - lL
        small = np.abs(r) <= huber_delta
        huber = np.where(small, 0.5 * r ** 2, huber_delta * (np.abs(r) - 0.5 * huber_delta))
        w = np.exp(terms - pred)                       # d pred / d term
        dr = np.where(small, r, huber_delta * np.sign(r))
        grad = np.array([np.sum(dr * w[0]), np.sum(dr * w[1]), np.sum(dr * w[2]),
                         np.sum(dr * w[0] * -lN), np.sum(dr * w[1] * -lD)])
        return float(huber.sum()), grad

    return objective


_EXPONENT_BOUNDS = (1e-3, 4.0)


def _scaling_fit(N, D, L, huber_delta, ratio=None, *, n_best=10, n_random=5):
    """Multi-start L-BFGS on the Huber objective; with ``ratio``, ``beta = ratio * alpha`` is held fixed.

    Starting points: for fixed exponents the law is linear in ``(E, A, B)``,
    so a grid of exponents, each with a non-negative least-squares fit
    weighted by ``1/L`` (relative errors), gives a starting point per cell;
    the ``n_best`` best cells and ``n_random`` random ones (a fixed seed: the
    fit is deterministic) are refined, and the best result is kept. The
    objective is flat along a ridge of the exponents and, being almost an
    absolute error, has kinks: with L-BFGS's default tolerances a run stops
    on the ridge short of the minimum, so the tolerances are tight.
    """
    from scipy.optimize import minimize, nnls

    full = _scaling_objective(N, D, L, huber_delta)
    lo, hi = _EXPONENT_BOUNDS
    grid = np.linspace(0.05, 2.0, 40)
    if ratio is None:
        pairs = [(al, be) for al in grid for be in grid]
        objective = full
        alpha_bounds = [(lo, hi), (lo, hi)]
    else:
        alpha_max = min(hi, hi / ratio)
        pairs = [(al, ratio * al) for al in np.linspace(lo, alpha_max, 80)[1:]]

        def objective(theta):
            f, g = full(np.append(theta, ratio * theta[3]))
            return f, np.append(g[:3], g[3] + ratio * g[4])

        alpha_bounds = [(lo, alpha_max)]
    starts = []
    for alpha, beta in pairs:
        X = np.stack([np.ones_like(N), N ** -alpha, D ** -beta], axis=1) / L[:, None]
        coef, residual = nnls(X, np.ones_like(L))
        starts.append((residual, alpha, beta, coef))
    starts.sort(key=lambda s: s[0])
    chosen = starts[:n_best]
    rest = starts[n_best:]
    if rest and n_random:
        pick = np.random.default_rng(0).choice(len(rest), size=min(n_random, len(rest)), replace=False)
        chosen += [rest[i] for i in pick]
    e_max = math.log(L.min())
    floor = 1e-6 * L.min()
    bounds = [(None, None), (None, None), (None, e_max)] + alpha_bounds
    best = None
    for _, alpha, beta, (E0, A0, B0) in chosen:
        theta = [math.log(max(A0, floor)), math.log(max(B0, floor)), min(math.log(max(E0, floor)), e_max), alpha]
        if ratio is None:
            theta.append(beta)
        fit = minimize(objective, np.array(theta), jac=True, method="L-BFGS-B", bounds=bounds,
                       options=dict(ftol=1e-12, gtol=1e-9, maxiter=1000))
        if best is None or fit.fun < best.fun:
            best = fit
    x = best.x if ratio is None else np.append(best.x, ratio * best.x[3])
    a, b, e, alpha, beta = x
    return ScalingLaw(float(np.exp(e)), float(np.exp(a)), float(alpha), float(np.exp(b)), float(beta)), float(best.fun)


def fit_scaling_law(N, D, loss, *, huber_delta: float = 1e-3) -> ScalingLaw:
    """Fit ``L(N, D) = E + A / N^alpha + B / D^beta`` to losses measured at model sizes ``N`` and token counts ``D``.

    The method of Hoffmann et al. (2022, approach 3): with ``A = e^a``,
    ``B = e^b``, ``E = e^e``, minimise the Huber loss (``huber_delta``) between
    ``logsumexp(a - alpha log N, b - beta log D, e)`` and ``log L`` with
    L-BFGS from many starting points (the 10 best cells of a grid of
    exponents and 5 random ones), run to tight tolerances, and keep the best. The objective has
    several local minima along a flat ridge of the exponents; use
    :func:`scaling_law_profile` to see how well other exponents fit. Needs at
    least 5 runs with at least 2 different sizes and 2 different token counts.
    """
    N, D, L, huber_delta = _scaling_inputs(N, D, loss, huber_delta)
    return _scaling_fit(N, D, L, huber_delta)[0]


def scaling_law_profile(N, D, loss, exponents, *, huber_delta: float = 1e-3) -> tuple[list[ScalingLaw], np.ndarray]:
    """The best fit of :func:`fit_scaling_law` with the compute-optimal exponent ``a = beta / (alpha + beta)`` held at each of ``exponents``.

    Returns the fitted laws and their Huber objectives (the quantity
    :func:`fit_scaling_law` minimises, see :meth:`ScalingLaw.huber_loss`).
    The exponents whose objective is close to the minimum are the ones the
    data cannot tell apart: a profile of the fit, the honest error bar on
    ``a`` when the grid of runs is small.
    """
    N, D, L, huber_delta = _scaling_inputs(N, D, loss, huber_delta)
    exponents = np.atleast_1d(check.as_finite_array("exponents", exponents))
    if exponents.ndim != 1 or exponents.size == 0 or not np.all((exponents > 0) & (exponents < 1)):
        raise ValueError(f"exponents must be a non-empty list of numbers strictly between 0 and 1, got {exponents}")
    laws, objectives = [], []
    for a in exponents:
        law, value = _scaling_fit(N, D, L, huber_delta, ratio=a / (1 - a), n_best=2, n_random=1)
        laws.append(law)
        objectives.append(value)
    return laws, np.array(objectives)
