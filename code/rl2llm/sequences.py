"""Completions as token sequences: encode, sample, score (Part IV).

Every method of Part IV (reward models, PPO for language models, DPO and its
relatives, GRPO) needs the same three things from a causal language model:

* :func:`encode` — prompts and completions as one right-padded batch, with a
  mask that marks the completion's tokens (the only ones a method learns from);
* :func:`sample` — completions drawn from the model, *with the token ids that
  were drawn*. Re-tokenising the decoded text is not the same thing: byte-level
  BPE can split a string differently from the way it was generated, and then
  the log-probabilities belong to a sequence the model never produced;
* :func:`token_log_probs` / :func:`sequence_log_probs` — log-probabilities of
  the completion's tokens under a model (the policy, or the frozen reference).

The batch layout: row ``i`` is the prompt's tokens, then the completion's, then
padding. ``token_log_probs(model, batch)[i, t]`` is
``log p(input_ids[i, t] | input_ids[i, :t])`` for a completion token and 0
elsewhere, so a sum over ``t`` is the log-probability of the completion given
its prompt.

Every public function checks its arguments and names the bad one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from . import _validate as check
from .lm import sample_next


@dataclass(frozen=True)
class SequenceBatch:
    """Prompts and completions as one right-padded batch.

    ``input_ids``, ``attention_mask``, ``position_ids`` and ``completion_mask``
    are ``(B, T)`` long tensors; ``completion_mask`` is 1 on the completion's
    tokens (its end-of-text token included when it has one) and 0 on the prompt
    and the padding. ``prompt_lengths`` and ``completion_lengths`` count tokens
    per row; ``ended[i]`` says whether completion ``i`` ended with the
    end-of-text token (False: it was cut at the length limit).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompt_lengths: tuple[int, ...]
    completion_lengths: tuple[int, ...]
    ended: tuple[bool, ...]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, index) -> "SequenceBatch":
        """The rows ``index`` (a list of row numbers), trimmed of columns that are padding in every row."""
        index = [check.as_int("index", i, 0, len(self) - 1) for i in index]
        if not index:
            raise ValueError("index must name at least one row")
        width = max(self.prompt_lengths[i] + self.completion_lengths[i] for i in index)
        rows = torch.tensor(index, dtype=torch.long)
        return SequenceBatch(self.input_ids[rows, :width], self.attention_mask[rows, :width],
                             self.position_ids[rows, :width], self.completion_mask[rows, :width],
                             tuple(self.prompt_lengths[i] for i in index),
                             tuple(self.completion_lengths[i] for i in index), tuple(self.ended[i] for i in index))


def _check_tokenizer(tokenizer):
    for attribute in ("pad_token_id", "eos_token_id"):
        if getattr(tokenizer, attribute, None) is None:
            raise ValueError(f"tokenizer must have a {attribute} (the zoo's tokenizers do), got {check.describe(tokenizer)}")
    return tokenizer


def from_ids(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int,
             ended: Sequence[bool] | None = None) -> SequenceBatch:
    """A :class:`SequenceBatch` from token ids: row ``i`` is ``prompt_ids[i] + completion_ids[i]``, right-padded.

    ``completion_ids[i]`` must already hold the end-of-text token when the
    completion has one; ``ended`` (default all True) only records it.
    """
    pad_id = check.as_int("pad_id", pad_id, 0)
    prompt_ids = [list(p) for p in prompt_ids]
    completion_ids = [list(c) for c in completion_ids]
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"prompt_ids and completion_ids must have the same length, got {len(prompt_ids)} "
                         f"and {len(completion_ids)}")
    if not prompt_ids:
        raise ValueError("prompt_ids must hold at least one prompt")
    for i, p in enumerate(prompt_ids):
        if not p:
            raise ValueError(f"prompt_ids[{i}] is empty: a completion is scored given one prompt token at least")
    ended = [True] * len(prompt_ids) if ended is None else [check.as_bool("ended", e) for e in ended]
    if len(ended) != len(prompt_ids):
        raise ValueError(f"ended must have one entry per row ({len(prompt_ids)}), got {len(ended)}")
    width = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
    B = len(prompt_ids)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attention = torch.zeros((B, width), dtype=torch.long)
    completion = torch.zeros((B, width), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        row = p + c
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, :len(row)] = 1
        completion[i, len(p):len(row)] = 1
    positions = torch.arange(width).expand(B, width).clone()
    return SequenceBatch(ids, attention, positions, completion, tuple(len(p) for p in prompt_ids),
                         tuple(len(c) for c in completion_ids), tuple(ended))


def encode(tokenizer, prompts: Sequence[str], completions: Sequence[str], *, eos: bool = True) -> SequenceBatch:
    """Prompts and completions as one batch (each text tokenized on its own, as generation produces them).

    ``eos``: append the end-of-text token to every completion (a finished
    answer; the model is then also scored on stopping).
    """
    tokenizer = _check_tokenizer(tokenizer)
    prompts = check.as_strings("prompts", prompts)
    completions = check.as_strings("completions", completions)
    eos = check.as_bool("eos", eos)
    if len(prompts) != len(completions):
        raise ValueError(f"prompts and completions must have the same length, got {len(prompts)} and {len(completions)}")
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompts[{i}] is empty")
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"] if any(completions) else [[] for _ in completions]
    c_ids = [list(c) + ([tokenizer.eos_token_id] if eos else []) for c in c_ids]
    return from_ids(p_ids, c_ids, tokenizer.pad_token_id, [eos] * len(prompts))


def _check_model_batch(model, batch) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a causal language model (a torch.nn.Module), got {check.describe(model)}")
    if not isinstance(batch, SequenceBatch):
        raise TypeError(f"batch must be a SequenceBatch (from encode, from_ids or sample), got {check.describe(batch)}")


def logits(model, batch: SequenceBatch) -> torch.Tensor:
    """``(B, T, V)`` logits aligned with the tokens: row ``[i, t]`` is the model's distribution *for token t*.

    (The model's own output at ``t - 1``; position 0, which no token predicts,
    holds zeros.) Gradients flow when the caller has them on.
    """
    _check_model_batch(model, batch)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, use_cache=False).logits
    return torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)


def token_log_probs(model, batch: SequenceBatch) -> torch.Tensor:
    """``(B, T)``: ``log p(token t | tokens before t)`` on the completion's tokens, 0 elsewhere."""
    aligned = logits(model, batch).float()
    logp = torch.log_softmax(aligned, dim=-1).gather(-1, batch.input_ids[..., None]).squeeze(-1)
    return logp * batch.completion_mask


def sequence_log_probs(model, batch: SequenceBatch) -> torch.Tensor:
    """``(B,)``: the log-probability of each completion given its prompt (the sum over its tokens)."""
    return token_log_probs(model, batch).sum(-1)


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, *, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0) -> tuple[list[str], SequenceBatch]:
    """Draw one completion per prompt; return the texts and the batch of the ids actually drawn.

    Left-padded generation with a key-value cache and position ids counted from
    each row's first real token (as the zoo's ``generate``), then the result is
    laid out right-padded by :func:`from_ids`. A completion ends at the
    end-of-text token (kept in the batch: stopping is an action too) or after
    ``max_new_tokens``. ``temperature`` other than 1, or ``top_k``, samples from
    a different distribution than the model's: an on-policy method then
    learns from another policy's actions (keep the defaults for RL). The
    generator is seeded with ``seed``: the same call gives the same tokens.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a causal language model (a torch.nn.Module), got {check.describe(model)}")
    tokenizer = _check_tokenizer(tokenizer)
    prompts = check.as_strings("prompts", prompts)
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompts[{i}] is empty")
    max_new_tokens = check.as_int("max_new_tokens", max_new_tokens, 1)
    temperature = check.as_real("temperature", temperature, 0.0)
    if top_k is not None:
        top_k = check.as_int("top_k", top_k, 1)
    seed = check.as_int("seed", seed, 0)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    generator = torch.Generator().manual_seed(seed)
    width = max(len(e) for e in encoded)
    B = len(encoded)
    ids = torch.full((B, width), pad, dtype=torch.long)
    attention = torch.zeros((B, width), dtype=torch.long)
    for j, e in enumerate(encoded):
        ids[j, width - len(e):] = torch.tensor(e)
        attention[j, width - len(e):] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    was_training = model.training
    model.eval()
    try:
        result = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True)
        past, last = result.past_key_values, result.logits[:, -1, :]
        next_position = positions[:, -1:] + 1
        finished = torch.zeros(B, dtype=torch.bool)
        drawn = []
        for t in range(max_new_tokens):
            token = sample_next(last, temperature, top_k, None, generator)
            token = torch.where(finished, torch.full_like(token, pad), token)
            drawn.append(token)
            finished |= token == eos
            if bool(finished.all()) or t == max_new_tokens - 1:
                break
            attention = torch.cat([attention, torch.ones((B, 1), dtype=torch.long)], dim=1)
            result = model(input_ids=token[:, None], attention_mask=attention, position_ids=next_position,
                           past_key_values=past, use_cache=True)
            past, last = result.past_key_values, result.logits[:, -1, :]
            next_position = next_position + 1
    finally:
        model.train(was_training)
    rows = torch.stack(drawn, dim=1).tolist()
    completions, ended = [], []
    for row in rows:
        stop = row.index(eos) + 1 if eos in row else len(row)   # pads come only after the end
        completions.append(row[:stop])
        ended.append(eos in row)
    texts = [tokenizer.decode([t for t in c if t != eos], skip_special_tokens=True) for c in completions]
    return texts, from_ids(encoded, completions, pad, ended)
