"""The book's model zoo: small pretrained language models, trained from scratch and cached.

Part IV aligns language models (reward models, RLHF with PPO, DPO, GRPO), and
an alignment method needs a model to start from. Nothing is downloaded, so the
book trains its own, on the generated corpora of :mod:`rl2llm.corpora`, and
keeps them: :func:`load` returns a model and its tokenizer by name,

    zm = load("arithmetic")                 # the fully trained model
    zm = load("arithmetic", "half-trained") # the same run, stopped at about half right
    generate(zm.model, zm.tokenizer, ["07+35="], max_new_tokens=4)   # ['042']

training it on first use (deterministically: a fixed seed and a fixed number
of PyTorch threads) and loading it from the cache afterwards. The zoo:

* ``"stories"``: continues the opening sentence of a story from the story
  grammar (byte-level BPE); its stories parse, and their sentiment, length,
  characters and moral vary, so a hidden gold score has room to be improved.
* ``"arithmetic"``: answers two-digit additions in the fixed-width format
  (``"07+35="`` -> ``"042"``), one token per character. Its ``"half-trained"``
  checkpoint, from the same run, answers 30 to 60 % of held-out problems: a
  start with room for reinforcement learning to show an effect.
* ``"code"``: writes the body of a small Python function from its signature
  and docstring (byte-level BPE); it passes some of the unit tests.

Every model is a ``transformers.LlamaForCausalLM`` (rotary position
embeddings, RMSNorm, SwiGLU): TRL's online trainers left-pad prompts and score
them without position ids, which shifts an absolute-position model (GPT-2)
but not a rotary one, whose attention depends only on distances. Each is
saved in Hugging Face format with a ``PreTrainedTokenizerFast`` that has a pad
token and a plain chat template, so ``AutoModelForCausalLM.from_pretrained``
and TRL's trainers load it with no network. No special token is added when
text is tokenized (there is no BOS): a prompt is its characters' tokens
whatever tokenizer call a library makes; rows end with the EOS token.

The cache: a model lives in ``artifact_dir("zoo-<name>", key)``, the key
hashing the code that trains it (this module and what it imports) and its
:class:`ZooSpec`. An entry is built in a temporary folder and renamed into
place under a file lock; a manifest with every file's hash is written last,
and an entry whose manifest is missing or disagrees with its files is
retrained, never loaded. The build trains the zoo before it executes the
chapters (``python -m rl2llm.zoo``), so no chapter pays for it.

Used by the model-card page (the book's back matter) and by Part IV.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import _validate as check
from . import corpora
from .progress import log, progress
from .provenance import artifact_key

#: Special tokens of every zoo tokenizer: padding and end of text (no BOS: nothing is ever added).
PAD, EOS = "<|pad|>", "<|eos|>"
#: The characters of the digit-level tokenizer (a closed vocabulary: one token per character).
CHARS = "0123456789+-*= \n"
#: A plain chat template: the messages' contents one after another (a prompt is the user's text).
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['content'] }}"
                 "{% if message['role'] == 'assistant' %}" + EOS + "{% endif %}{% endfor %}")
_FORMAT = 1  # the layout of a cache entry (bump when it changes)


# --------------------------------------------------------------------------- the specs


@dataclass(frozen=True)
class ZooSpec:
    """Everything that decides a zoo model: its data, tokenizer, size and training.

    ``corpus``: ``"stories"``, ``"arithmetic"`` or ``"code"``, with
    ``corpus_options`` for its generator (a dict, or ``(name, value)`` pairs;
    kept sorted). ``n_train`` training items are drawn with ``data_seed``;
    ``n_eval`` held-out items, drawn with ``eval_seed`` (arithmetic problems
    that also occur in training are dropped from them), measure quality.

    ``tokenizer``: ``"chars"`` (one token per character of :data:`CHARS`) or
    ``"bpe"`` (byte-level BPE with ``vocab_size`` tokens, trained on the
    training text). ``packed``: False puts one item per row (the prompt, the
    completion, EOS; padded); True concatenates the items as plain text and
    cuts it into rows of ``context`` tokens (the usual pretraining layout, and
    a gotcha for small arithmetic models). ``loss_on``: ``"completion"`` (the
    answer and EOS only) or ``"all"`` tokens (always all when packed).

    The model: ``architecture`` ``"llama"`` (rotary positions, RMSNorm, SwiGLU)
    or ``"gpt2"`` (learned absolute positions, LayerNorm, GELU: the contrast of
    the model-card page), ``n_layers`` layers of width ``hidden_size`` with
    ``n_heads`` heads, a feed-forward block of ``intermediate_size`` and
    ``context`` positions; tied input and output embeddings. Training:
    ``steps`` AdamW steps of ``batch_size`` rows, learning rate ``lr`` with
    ``warmup`` linear steps then cosine decay to ``lr * final_lr_fraction``,
    ``weight_decay``, seed ``seed``, ``threads`` PyTorch threads (the same seed
    gives different models with another thread count). Every ``eval_every``
    steps the model is evaluated on ``n_eval_during`` held-out items;
    ``checkpoints`` keeps extra snapshots by ``(name, rule)``: ``("step", n)``
    or ``("exact_match", low, high)``, the first evaluation whose exact match
    lies in ``[low, high]`` (arithmetic). ``max_new_tokens``: the generation
    length for the card's measures.
    """

    name: str
    corpus: str
    corpus_options: tuple = ()
    n_train: int = 20000
    n_eval: int = 500
    data_seed: int = 0
    eval_seed: int = 1
    tokenizer: str = "chars"
    vocab_size: int = 512
    packed: bool = False
    loss_on: str = "completion"
    architecture: str = "llama"
    hidden_size: int = 96
    n_layers: int = 4
    n_heads: int = 4
    intermediate_size: int = 256
    context: int = 64
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 30
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 1
    eval_every: int = 50
    n_eval_during: int = 256
    checkpoints: tuple = ()
    max_new_tokens: int = 8

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"name must be a non-empty string of letters, digits, '-' and '_', got {self.name!r}")
        if self.corpus not in corpora.CORPORA:
            raise ValueError(f"corpus must be one of {corpora.CORPORA}, got {check.describe(self.corpus)}")
        options = self.corpus_options
        if isinstance(options, dict):
            options = options.items()
        try:
            options = tuple(sorted((str(k), v) for k, v in options))
        except (TypeError, ValueError):
            raise TypeError(f"corpus_options must be a dict or (name, value) pairs, "
                            f"got {check.describe(self.corpus_options)}") from None
        object.__setattr__(self, "corpus_options", options)
        if self.tokenizer not in ("chars", "bpe"):
            raise ValueError(f"tokenizer must be 'chars' or 'bpe', got {check.describe(self.tokenizer)}")
        if self.architecture not in ("llama", "gpt2"):
            raise ValueError(f"architecture must be 'llama' or 'gpt2', got {check.describe(self.architecture)}")
        if self.loss_on not in ("completion", "all"):
            raise ValueError(f"loss_on must be 'completion' or 'all', got {check.describe(self.loss_on)}")
        check.as_bool("packed", self.packed)
        for field_name, low in (("n_train", 1), ("n_eval", 1), ("data_seed", 0), ("eval_seed", 0),
                                ("vocab_size", 64), ("hidden_size", 4), ("n_layers", 1), ("n_heads", 1),
                                ("intermediate_size", 1), ("context", 8), ("steps", 1), ("batch_size", 1),
                                ("warmup", 0), ("seed", 0), ("threads", 1), ("eval_every", 1),
                                ("n_eval_during", 1), ("max_new_tokens", 1)):
            check.as_int(field_name, getattr(self, field_name), low)
        if self.hidden_size % self.n_heads or (self.hidden_size // self.n_heads) % 2:
            raise ValueError(f"hidden_size must be a multiple of n_heads = {self.n_heads} with an even head "
                             f"width (rotary embeddings rotate pairs), got {self.hidden_size}")
        if self.data_seed == self.eval_seed:
            raise ValueError(f"eval_seed must differ from data_seed = {self.data_seed} (held-out data)")
        check.as_real("lr", self.lr, 0.0, low_open=True)
        check.as_real("final_lr_fraction", self.final_lr_fraction, 0.0, 1.0)
        check.as_real("weight_decay", self.weight_decay, 0.0)
        if not isinstance(self.checkpoints, tuple):
            raise TypeError(f"checkpoints must be a tuple of (name, rule...) tuples, got {check.describe(self.checkpoints)}")
        names = set()
        for entry in self.checkpoints:
            if not isinstance(entry, tuple) or len(entry) < 2 or not isinstance(entry[0], str):
                raise ValueError(f"checkpoints must hold (name, rule...) tuples, got {entry!r}")
            ckpt, rule = entry[0], entry[1]
            if ckpt == "final" or ckpt in names or not ckpt.replace("-", "").isalnum():
                raise ValueError(f"checkpoints: {ckpt!r} must be a new name of letters, digits and '-', "
                                 "not 'final'")
            names.add(ckpt)
            if rule == "step" and len(entry) == 3:
                check.as_int(f"checkpoints[{ckpt!r}] step", entry[2], 1, self.steps)
            elif rule == "exact_match" and len(entry) == 4:
                low = check.as_real(f"checkpoints[{ckpt!r}] low", entry[2], 0.0, 1.0)
                high = check.as_real(f"checkpoints[{ckpt!r}] high", entry[3], low, 1.0)
                if self.corpus != "arithmetic":
                    raise ValueError(f"checkpoints: the exact_match rule of {ckpt!r} needs the arithmetic corpus")
            else:
                raise ValueError(f"checkpoints: the rule of {ckpt!r} must be ('step', n) or "
                                 f"('exact_match', low, high), got {entry[1:]!r}")

    @property
    def options(self) -> dict:
        """``corpus_options`` as a dict (the generator's keyword arguments)."""
        return dict(self.corpus_options)

    def as_dict(self) -> dict:
        """The spec as plain JSON data (the cache key hashes it)."""
        data = dataclasses.asdict(self)
        data["corpus_options"] = [list(pair) for pair in self.corpus_options]
        data["checkpoints"] = [list(c) for c in self.checkpoints]
        return data


#: The zoo. Sizes and steps are chosen so each trains in well under 100 s on two cores.
SPECS: dict[str, ZooSpec] = {
    "stories": ZooSpec(
        name="stories", corpus="stories", n_train=20000, n_eval=200, tokenizer="bpe", vocab_size=1024,
        loss_on="all", hidden_size=96, n_layers=3, n_heads=4, intermediate_size=256, context=160,
        steps=500, batch_size=32, lr=2e-3, warmup=30, eval_every=100, n_eval_during=64, max_new_tokens=120),
    "arithmetic": ZooSpec(
        name="arithmetic", corpus="arithmetic", corpus_options={"digits": 2, "ops": "+"}, n_train=9000,
        n_eval=500, tokenizer="chars", loss_on="completion", hidden_size=96, n_layers=4, n_heads=4,
        intermediate_size=256, context=32, steps=1200, batch_size=64, lr=1e-3, warmup=30, eval_every=25,
        n_eval_during=256, checkpoints=(("half-trained", "exact_match", 0.3, 0.6),), max_new_tokens=4),
    "code": ZooSpec(
        name="code", corpus="code", n_train=10000, n_eval=100, tokenizer="bpe", vocab_size=1024,
        loss_on="all", hidden_size=96, n_layers=3, n_heads=4, intermediate_size=256, context=192,
        steps=400, batch_size=32, lr=2e-3, warmup=30, eval_every=100, n_eval_during=32, max_new_tokens=96),
}


#: Models trained only to be contrasted with the zoo's (the model-card page's gotchas); the build
#: trains them with the zoo. ``"arithmetic-gpt2"``: the arithmetic model's data and size as a GPT-2
#: (the feed-forward block widened to match SwiGLU's three matrices), trained for a quarter of the steps.
CONTRASTS: dict[str, ZooSpec] = {
    "arithmetic-gpt2": dataclasses.replace(
        SPECS["arithmetic"], name="arithmetic-gpt2", architecture="gpt2", intermediate_size=384, steps=300,
        checkpoints=(), n_eval=100),
}


def _spec(name_or_spec) -> ZooSpec:
    if isinstance(name_or_spec, ZooSpec):
        return name_or_spec
    if isinstance(name_or_spec, str):
        if name_or_spec not in SPECS and name_or_spec not in CONTRASTS:
            raise ValueError(f"name_or_spec must be one of {tuple(SPECS) + tuple(CONTRASTS)} or a ZooSpec, "
                             f"got {name_or_spec!r}")
        return SPECS.get(name_or_spec) or CONTRASTS[name_or_spec]
    raise TypeError(f"name_or_spec must be a zoo model's name or a ZooSpec, got {check.describe(name_or_spec)}")


def checkpoints(name_or_spec) -> list[str]:
    """The checkpoints a zoo model keeps: ``"final"`` first, then the spec's extra ones."""
    spec = _spec(name_or_spec)
    return ["final"] + [c[0] for c in spec.checkpoints]


# --------------------------------------------------------------------------- data


def _items(spec: ZooSpec, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (prompt, completion) pairs of the spec's corpus."""
    options = spec.options
    if spec.corpus == "stories":
        return [(s.prompt, s.reference) for s in corpora.stories(n, seed, **options)]
    if spec.corpus == "arithmetic":
        return [(t.prompt, t.reference) for t in corpora.arithmetic_problems(n, seed, **options)]
    return [(t.prompt, t.reference) for t in corpora.code_tasks(n, seed, **options)]


def eval_items(name_or_spec, n: int | None = None):
    """The held-out items of a zoo model: stories or tasks drawn with its ``eval_seed``.

    For arithmetic, problems that also occur in the training data are dropped,
    so ``n`` (default: the spec's ``n_eval``) are drawn from a longer list.
    These are the items its card measures quality on; Part IV can use them as
    test prompts.
    """
    spec = _spec(name_or_spec)
    n = spec.n_eval if n is None else check.as_int("n", n, 1)
    options = spec.options
    if spec.corpus == "stories":
        return corpora.stories(n, spec.eval_seed, **options)
    if spec.corpus == "code":
        return corpora.code_tasks(n, spec.eval_seed, **options)
    seen = {p for p, _ in _items(spec, spec.n_train, spec.data_seed)}
    out, m = [], 2 * n
    while len(out) < n:
        candidates = corpora.arithmetic_problems(m, spec.eval_seed, **options)
        out = [t for t in candidates if t.prompt not in seen][:n]
        if m > 64 * n + 10**6:
            raise ValueError(f"n: only {len(out)} held-out problems exist for these options, asked for {n}")
        m *= 4
    return out


# --------------------------------------------------------------------------- tokenizers


def build_tokenizer(spec: ZooSpec, text: str):
    """The spec's tokenizer as a ``PreTrainedTokenizerFast`` (``text``: what a BPE tokenizer learns from).

    ``"bpe"``: the book's byte-level BPE (:func:`rl2llm.tokenizer.train_bpe`,
    GPT-2's pre-tokenizer) with ``spec.vocab_size`` tokens, through
    :func:`rl2llm.tokenizer.to_hf`. ``"chars"``: one token per character of
    :data:`CHARS` (a closed vocabulary; any other character is an error).
    Both have the pad and EOS tokens, pad on the left and carry
    :data:`CHAT_TEMPLATE`; neither adds a token when text is encoded.
    """
    from . import tokenizer as bpe

    if spec.tokenizer == "bpe":
        hf = bpe.to_hf(bpe.train_bpe(text, spec.vocab_size, special_tokens=(PAD, EOS)), eos=EOS, pad=PAD,
                       chat_template=CHAT_TEMPLATE)
    else:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        bad = sorted(set(text) - set(CHARS))
        if bad:
            raise ValueError(f"tokenizer: the 'chars' tokenizer covers {CHARS!r} only; the corpus has {bad[:5]}")
        tok = Tokenizer(models.WordLevel({PAD: 0, EOS: 1, **{c: i + 2 for i, c in enumerate(CHARS)}}, unk_token=PAD))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        tok.add_special_tokens([PAD, EOS])
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                     chat_template=CHAT_TEMPLATE)
    for attribute, value in (("padding_side", "left"), ("clean_up_tokenization_spaces", False)):
        setattr(hf, attribute, value)
        hf.init_kwargs[attribute] = value  # what save_pretrained writes
    return hf


# --------------------------------------------------------------------------- the model


def build_model(spec: ZooSpec, vocab_size: int, pad_id: int, eos_id: int):
    """A fresh model of the spec's architecture and size (initialised from the current torch seed):
    a ``LlamaForCausalLM``, or a ``GPT2LMHeadModel`` for ``architecture="gpt2"``."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if spec.architecture == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size, n_embd=spec.hidden_size, n_inner=spec.intermediate_size, n_layer=spec.n_layers,
            n_head=spec.n_heads, n_positions=spec.context, tie_word_embeddings=True, pad_token_id=pad_id,
            eos_token_id=eos_id, bos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads, num_key_value_heads=spec.n_heads,
            max_position_embeddings=spec.context, rms_norm_eps=1e-5, tie_word_embeddings=True,
            pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=None, initializer_range=0.02)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.bos_token_id = None
    return model


def _rows(spec: ZooSpec, tokenizer, pairs: list[tuple[str, str]]):
    """Token rows and loss masks: one item per row, or the items packed into rows of ``context`` tokens."""
    eos = tokenizer.eos_token_id
    if spec.packed:
        text = "".join(p + c + "\n" for p, c in pairs)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        n = len(ids) // spec.context
        rows = [ids[i * spec.context:(i + 1) * spec.context] for i in range(n)]
        return rows, [[1] * len(r) for r in rows]
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    rows, masks = [], []
    for p, c in zip(prompts, completions):
        row = (p + c + [eos])[:spec.context]
        mask = ([1] * len(p) if spec.loss_on == "all" else [0] * len(p)) + [1] * (len(c) + 1)
        rows.append(row)
        masks.append(mask[:len(row)])
    return rows, masks


def _batch(rows, masks, index, pad_id):
    import torch

    width = max(len(rows[i]) for i in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(index), width), dtype=torch.long)
    labels = torch.full((len(index), width), -100, dtype=torch.long)
    for j, i in enumerate(index):
        row = torch.tensor(rows[i])
        ids[j, :len(row)] = row
        attention[j, :len(row)] = 1
        labels[j, :len(row)] = torch.where(torch.tensor(masks[i]) > 0, row, torch.tensor(-100))
    return ids, attention, labels


def _epoch(rng: np.random.Generator, lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """One pass over the rows in batches: shuffled, then sorted by length within chunks of 32 batches
    (rows of a batch have similar lengths, so little is padding), the batches in random order."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), 32 * batch_size):
        chunk = order[start:start + 32 * batch_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# The zoo imports only what its models are made of (the corpora and the BPE tokenizer), not
# dqn.torch_threads, lm.lr_schedule or lm.sample_next, which do what the few lines below do: its cache
# key hashes every module it imports, and an edit to, say, Lecture 10's GPT must not retrain the zoo.
# (tests/test_zoo.py checks that the two samplers agree.)


def _lr_factor(spec: ZooSpec, step: int) -> float:
    """Linear warm-up over ``spec.warmup`` steps, then a cosine down to ``spec.final_lr_fraction``."""
    if step < spec.warmup:
        return (step + 1) / spec.warmup
    t = min(1.0, (step - spec.warmup) / max(1, spec.steps - 1 - spec.warmup))
    return spec.final_lr_fraction + (1 - spec.final_lr_fraction) * 0.5 * (1 + np.cos(np.pi * t))


def _sample(logits, temperature: float, top_k: int | None, top_p: float | None, generator):
    """One token per row: greedy at temperature 0, else a draw after temperature, top-k and top-p
    (in ``transformers``' order, as Lecture 12's ``lm.sample_next``)."""
    import torch

    if temperature == 0.0:
        return logits.argmax(-1)
    scaled = logits.float() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(scaled, dim=-1, descending=True, stable=True)
        probs = torch.softmax(ordered.double(), dim=-1)
        keep = torch.zeros_like(scaled, dtype=torch.bool).scatter(-1, order, probs.cumsum(-1) - probs < top_p)
        scaled = scaled.masked_fill(~keep, float("-inf"))
    return torch.multinomial(torch.softmax(scaled, -1), 1, generator=generator).squeeze(-1)


def train(spec: ZooSpec, out_dir, *, show_progress: bool = True) -> dict:
    """Train ``spec``'s model and write its checkpoints and card into ``out_dir`` (a new folder).

    Returns the card. ``out_dir/<checkpoint>/`` holds each checkpoint in
    Hugging Face format (model and tokenizer); ``out_dir/card.json`` the card.
    Deterministic: the same spec, code and library versions give the same
    weights (the seed and the thread count are the spec's).
    """
    import torch

    spec = _spec(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        pairs = _items(spec, spec.n_train, spec.data_seed)
        tokenizer = build_tokenizer(spec, "".join(p + c + "\n" for p, c in pairs))
        rows, masks = _rows(spec, tokenizer, pairs)
        if not rows:
            raise ValueError("n_train: too few items to fill one packed row of context tokens")
        during = eval_items(spec, min(spec.n_eval, spec.n_eval_during))
        torch.manual_seed(spec.seed)
        model = build_model(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=spec.lr, betas=(0.9, 0.95))
        rng = np.random.default_rng(spec.seed)
        lengths = np.array([len(r) for r in rows])
        batches: list = []
        history, saved = [], {}
        pending = {c[0]: c for c in spec.checkpoints}
        steps = range(spec.steps)
        if show_progress:
            steps = progress(steps, f"zoo: training {spec.name}", every=max(1, spec.steps // 10))
        for step in steps:
            model.train()
            if not batches:
                batches = _epoch(rng, lengths, spec.batch_size)
            ids, attention, labels = _batch(rows, masks, batches.pop(), tokenizer.pad_token_id)
            for group in optimizer.param_groups:
                group["lr"] = spec.lr * _lr_factor(spec, step)
            loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            done = step + 1
            if done % spec.eval_every == 0 or done == spec.steps:
                model.eval()
                point = {"step": done, "loss": float(loss.item())}
                if spec.corpus == "arithmetic":
                    point["exact_match"] = exact_match(model, tokenizer, during)
                history.append(point)
                for name, entry in list(pending.items()):
                    hit = (entry[1] == "step" and done >= entry[2]) or (
                        entry[1] == "exact_match" and entry[2] <= point.get("exact_match", -1) <= entry[3])
                    if hit:
                        _save(model, tokenizer, out_dir / name)
                        saved[name] = dict(point)
                        del pending[name]
        model.eval()
        _save(model, tokenizer, out_dir / "final")
        saved["final"] = history[-1]
        if pending:
            raise RuntimeError(f"checkpoints {sorted(pending)} of {spec.name!r}: their rule was never met "
                               f"(evaluations: {history}); change the rule or the training")
        seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
        card = {"name": spec.name, "spec": spec.as_dict(), "parameters": int(sum(p.numel() for p in model.parameters())),
                "vocab_size": len(tokenizer), "train_seconds": round(seconds, 2),
                "train_cpu_seconds": round(cpu_seconds, 2), "threads": spec.threads,
                "data": {"corpus": spec.corpus, "options": spec.options, "items": spec.n_train,
                         "rows": len(rows), "tokens": int(sum(len(r) for r in rows)),
                         "tokenizer": spec.tokenizer, "held_out": spec.n_eval},
                "history": history, "checkpoints": {}}
        for name in checkpoints(spec):
            card["checkpoints"][name] = {"step": saved[name]["step"],
                                         **measure(spec, _load_model(out_dir / name), tokenizer)}
    finally:
        torch.set_num_threads(threads_before)
    (out_dir / "card.json").write_text(json.dumps(card, indent=1))
    return card


@contextlib.contextmanager
def _quiet():
    """No progress bars from ``transformers`` while saving and loading (they would fill the build log)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _save(model, tokenizer, path: Path) -> None:
    with _quiet():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)


def _load_model(path: Path):
    from transformers import AutoModelForCausalLM

    with _quiet():
        return AutoModelForCausalLM.from_pretrained(path).eval()


# --------------------------------------------------------------------------- generation and measures


def _check_model_tokenizer(model, tokenizer) -> None:
    import torch

    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model must be a transformers causal language model, got {check.describe(model)}")
    if not callable(tokenizer) or getattr(tokenizer, "pad_token_id", None) is None:
        raise TypeError(f"tokenizer must be a transformers tokenizer with a pad token, got {check.describe(tokenizer)}")


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string (wrap it: [prompt])")
    try:
        prompts = list(prompts)
    except TypeError:
        raise TypeError(f"prompts must be a list of strings, got {check.describe(prompts)}") from None
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{i}] must be a string, got {check.describe(p)}")
        if not p:
            raise ValueError(f"prompts[{i}] is empty: a zoo model continues a prompt of one token at least")
    return prompts


def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             batch_size: int = 256) -> list[str]:
    """The completions of ``prompts`` (the new text only, cut at the end-of-text token).

    Batched with left padding and position ids counted from each row's first
    real token, with a key-value cache. ``temperature=0`` is greedy decoding;
    otherwise each token is drawn after temperature, then ``top_k``, then
    nucleus ``top_p`` when given (as Lecture 12's ``lm.sample_next``), from a
    generator seeded with ``seed`` (the same call gives the same text). Works
    for any causal model of ``transformers`` whose tokenizer has a pad token.
    """
    import torch

    _check_model_tokenizer(model, tokenizer)
    prompts = _check_prompts(prompts)
    max_new_tokens = check.as_int("max_new_tokens", max_new_tokens, 1)
    temperature = check.as_real("temperature", temperature, 0.0)
    if top_k is not None:
        top_k = check.as_int("top_k", top_k, 1)
    if top_p is not None:
        top_p = check.as_real("top_p", top_p, 0.0, 1.0, low_open=True)
    seed = check.as_int("seed", seed, 0)
    batch_size = check.as_int("batch_size", batch_size, 1)
    if not prompts:
        return []
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    generator = torch.Generator().manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths pad less
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                new = _generate_batch(model, [encoded[i] for i in index], max_new_tokens, temperature, top_k,
                                      top_p, generator, eos, pad)
                for i, ids in zip(index, new):
                    out[i] = tokenizer.decode(ids, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out


def _generate_batch(model, encoded, max_new_tokens, temperature, top_k, top_p, generator, eos, pad):
    import torch

    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for j, e in enumerate(encoded):
        ids[j, width - len(e):] = torch.tensor(e)
        attention[j, width - len(e):] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    result = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True)
    past, logits = result.past_key_values, result.logits[:, -1, :]
    next_position = positions[:, -1:] + 1
    finished = torch.zeros(len(encoded), dtype=torch.bool)
    new = []
    for t in range(max_new_tokens):
        token = _sample(logits, temperature, top_k, top_p, generator)
        token = torch.where(finished, torch.full_like(token, pad), token)
        new.append(token)
        finished |= token == eos
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        attention = torch.cat([attention, torch.ones((len(encoded), 1), dtype=torch.long)], dim=1)
        result = model(input_ids=token[:, None], attention_mask=attention, position_ids=next_position,
                       past_key_values=past, use_cache=True)
        past, logits = result.past_key_values, result.logits[:, -1, :]
        next_position = next_position + 1
    tokens = torch.stack(new, dim=1).tolist()
    cut = []
    for row in tokens:
        row = row[:row.index(eos)] if eos in row else row
        cut.append([t for t in row if t != pad])
    return cut


def _check_tasks(tasks, kind: str):
    if isinstance(tasks, corpora.Task):
        raise TypeError("tasks must be a list of Tasks, not one Task (wrap it: [task])")
    try:
        tasks = list(tasks)
    except TypeError:
        raise TypeError(f"tasks must be a list of {kind} Tasks, got {check.describe(tasks)}") from None
    for i, t in enumerate(tasks):
        if not isinstance(t, corpora.Task) or t.kind != kind:
            raise TypeError(f"tasks[{i}] must be a {kind} Task (from corpora), got {check.describe(t)}")
    if not tasks:
        raise ValueError("tasks must not be empty")
    return tasks


def exact_match(model, tokenizer, tasks, *, max_new_tokens: int | None = None) -> float:
    """The fraction of arithmetic ``tasks`` the model answers right with greedy decoding."""
    tasks = _check_tasks(tasks, "arithmetic")
    if max_new_tokens is None:
        max_new_tokens = max(len(t.reference) for t in tasks) + 1
    completions = generate(model, tokenizer, [t.prompt for t in tasks], max_new_tokens)
    return float(np.mean([corpora.check_arithmetic(t.prompt, c) for t, c in zip(tasks, completions)]))


def pass_rate(model, tokenizer, tasks, *, max_new_tokens: int = 96, temperature: float = 0.0,
              seed: int = 0, timeout: float = 5.0) -> dict:
    """Unit tests of code ``tasks`` passed by the model's completions (greedy unless ``temperature``).

    Returns ``tests_passed`` (the fraction of all unit tests), ``solved`` (the
    fraction of tasks whose tests all pass) and ``runs`` (the fraction of
    completions that pass at least one test).
    """
    tasks = _check_tasks(tasks, "code")
    completions = generate(model, tokenizer, [t.prompt for t in tasks], max_new_tokens,
                           temperature=temperature, seed=seed)
    results = [corpora.run_tests(t, t.prompt + c, timeout) for t, c in zip(tasks, completions)]
    passed = np.array([p for p, _ in results], dtype=float)
    total = np.array([n for _, n in results], dtype=float)
    return {"tests_passed": float(passed.sum() / total.sum()), "solved": float(np.mean(passed == total)),
            "runs": float(np.mean(passed > 0))}


def story_stats(texts: Iterable[str]) -> dict:
    """What a set of generated stories looks like, read with ``corpora.story_attributes``.

    ``parse``: the fraction of stories whose every sentence the grammar
    produces; ``grammatical``: the mean fraction of grammatical sentences;
    ``sentiment``: the share of each sentiment; ``sentences`` (mean, std);
    ``moral``: the fraction stating a moral; ``gold`` (mean, std, min, max) of
    ``corpora.gold_score``; ``distinct``: the fraction of distinct stories.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of stories, not one string (wrap it: [text])")
    texts = list(texts)
    if not texts:
        raise ValueError("texts must not be empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a string, got {check.describe(t)}")
    attributes = [corpora.story_attributes(t) for t in texts]
    gold = np.array([corpora.gold_score(t) for t in texts])
    lengths = np.array([a["n_sentences"] for a in attributes], dtype=float)
    moods = [a["sentiment"] for a in attributes]
    return {"parse": float(np.mean([a["grammatical"] == 1.0 for a in attributes])),
            "grammatical": float(np.mean([a["grammatical"] for a in attributes])),
            "sentiment": {m: float(np.mean([x == m for x in moods]))
                          for m in ("positive", "negative", "neutral", "mixed")},
            "sentences": {"mean": float(lengths.mean()), "std": float(lengths.std())},
            "moral": float(np.mean([a["has_moral"] for a in attributes])),
            "gold": {"mean": float(gold.mean()), "std": float(gold.std()), "min": float(gold.min()),
                     "max": float(gold.max())},
            "distinct": len(set(texts)) / len(texts)}


def measure(name_or_spec, model, tokenizer, *, n: int | None = None, seeds: Sequence[int] = (0, 1, 2)) -> dict:
    """The card's quality measures of a zoo model on its held-out items (``n`` of them; default all).

    Arithmetic: ``exact_match`` with greedy decoding, and ``sampled_exact_match``
    at temperature 1 (one value per seed). Stories: :func:`story_stats` of
    greedy completions and of completions sampled at temperature 1 (all seeds
    pooled), with the fraction that parses per seed. Code: :func:`pass_rate`,
    greedy, and sampled at temperature 1 with the first seed.
    """
    spec = _spec(name_or_spec)
    seeds = [check.as_int("seeds (each seed)", s, 0) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name one seed at least")
    items = eval_items(spec, n)
    if spec.corpus == "arithmetic":
        sampled = []
        for seed in seeds:
            completions = generate(model, tokenizer, [t.prompt for t in items], spec.max_new_tokens,
                                   temperature=1.0, seed=seed)
            sampled.append(float(np.mean([t.check(c) for t, c in zip(items, completions)])))
        return {"exact_match": exact_match(model, tokenizer, items), "sampled_exact_match": sampled,
                "n_eval": len(items)}
    if spec.corpus == "code":
        # a generous time limit: a busy machine must not turn a slow start into failed tests
        return {**pass_rate(model, tokenizer, items, max_new_tokens=spec.max_new_tokens, timeout=30.0),
                "sampled": pass_rate(model, tokenizer, items, max_new_tokens=spec.max_new_tokens,
                                     temperature=1.0, seed=seeds[0], timeout=30.0), "n_eval": len(items)}
    prompts = [s.prompt for s in items]
    sampled = [[p + c for p, c in zip(prompts, generate(model, tokenizer, prompts, spec.max_new_tokens,
                                                          temperature=1.0, seed=seed))] for seed in seeds]
    greedy = generate(model, tokenizer, prompts, spec.max_new_tokens)
    return {"sampled": story_stats([t for texts in sampled for t in texts]),
            "sampled_parse": [story_stats(texts)["parse"] for texts in sampled],
            "greedy": story_stats([p + c for p, c in zip(prompts, greedy)]), "n_eval": len(items)}


# --------------------------------------------------------------------------- the cache


@dataclass
class ZooModel:
    """A loaded zoo model: ``model`` (a ``LlamaForCausalLM`` in eval mode; GPT-2 for such a spec), ``tokenizer``
    (a ``PreTrainedTokenizerFast`` with a pad token), ``path`` (the folder for
    ``from_pretrained``), ``spec``, ``checkpoint`` and ``card`` (size, training
    time, data, quality measured when it was trained)."""

    model: object
    tokenizer: object
    path: Path
    spec: ZooSpec
    checkpoint: str
    card: dict

    def generate(self, prompts: Sequence[str], max_new_tokens: int | None = None, **options) -> list[str]:
        """:func:`generate` with this model (``max_new_tokens`` defaults to the spec's)."""
        return generate(self.model, self.tokenizer, prompts, max_new_tokens or self.spec.max_new_tokens, **options)


def key(name_or_spec) -> str:
    """The cache key of a zoo model: the code that trains it and its spec."""
    spec = _spec(name_or_spec)
    return artifact_key(sys.modules[__name__], config={"format": _FORMAT, "spec": spec.as_dict()})


def entry_dir(name_or_spec, cache_dir=None) -> Path:
    """The cache folder of a zoo model (it may not exist yet, or be incomplete).

    ``cache_dir``: the folder that holds the entries; default
    ``$RL2LLM_ARTIFACTS`` (the build's ``<build>/artifacts``), else
    ``~/.cache/rl2llm/artifacts``, as ``provenance.artifact_dir``.
    """
    spec = _spec(name_or_spec)
    return _base(cache_dir) / f"zoo-{spec.name}-{key(spec)}"


def _base(cache_dir) -> Path:
    if cache_dir is None:
        return Path(os.environ.get("RL2LLM_ARTIFACTS") or Path.home() / ".cache" / "rl2llm" / "artifacts")
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path or None, got {check.describe(cache_dir)}")
    return Path(cache_dir)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path, spec: ZooSpec, entry_key: str) -> None:
    files = {p.relative_to(folder).as_posix(): {"sha256": _hash_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = {"format": _FORMAT, "name": spec.name, "key": entry_key, "files": files}
    tmp = folder / "MANIFEST.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / "MANIFEST.json")


def verify(folder) -> str | None:
    """Why the cache entry in ``folder`` cannot be loaded, or None when it is complete and intact.

    Complete: a manifest (written last) that lists every file with its size
    and hash, every checkpoint present, and no file differing from it.
    """
    folder = Path(folder)
    manifest_path = folder / "MANIFEST.json"
    if not manifest_path.is_file():
        return "no manifest (the entry is missing or was never finished)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return "the manifest is unreadable"
    if manifest.get("format") != _FORMAT:
        return f"the manifest has format {manifest.get('format')!r}, not {_FORMAT}"
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    if set(files) != present:
        extra, missing = sorted(present - set(files)), sorted(set(files) - present)
        return f"files differ from the manifest (missing {missing[:3]}, unexpected {extra[:3]})"
    for rel, info in files.items():
        path = folder / rel
        if path.stat().st_size != info["bytes"] or _hash_file(path) != info["sha256"]:
            return f"{rel} differs from the manifest (corrupt or modified)"
    return None


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(name_or_spec, *, cache_dir=None, progress: bool = True) -> Path:
    """The folder of an intact cache entry of the model, training it first if needed.

    Under a file lock, so concurrent builds train it once and nobody reads a
    half-written entry: the model is trained in a temporary folder next to
    the entry, its manifest written last, and the folder renamed into place;
    a corrupt or partial entry is moved aside and retrained.
    """
    return _ensure(_spec(name_or_spec), cache_dir, check.as_bool("progress", progress))[0]


def _ensure(spec: ZooSpec, cache_dir, progress: bool) -> tuple[Path, bool]:
    """:func:`ensure`, and whether this call trained the model."""
    folder = entry_dir(spec, cache_dir)
    if verify(folder) is None:
        return folder, False
    with _lock(folder.parent / f".{folder.name}.lock"):
        problem = verify(folder)
        if problem is None:  # another process finished it while we waited
            return folder, False
        if folder.exists() and any(folder.iterdir()):
            log(f"zoo: {folder.name}: {problem}; retraining")
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            train(spec, tmp, show_progress=progress)
            _write_manifest(tmp, spec, folder.name.rsplit("-", 1)[-1])
            if folder.exists():
                trash = folder.parent / f".{folder.name}.trash-{os.getpid()}"
                os.replace(folder, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, True


def load(name_or_spec, checkpoint: str = "final", *, cache_dir=None, progress: bool = True) -> ZooModel:
    """A zoo model and its tokenizer, by name (``"stories"``, ``"arithmetic"``, ``"code"``) or spec.

    Trains it at first use (a minute or so; see :func:`ensure`), then loads it
    from the cache in a fraction of a second. ``checkpoint``: one of
    :func:`checkpoints`. A custom spec (``dataclasses.replace(SPECS[...], ...)``)
    is cached under its own key.
    """
    from transformers import PreTrainedTokenizerFast

    spec = _spec(name_or_spec)
    if not isinstance(checkpoint, str) or checkpoint not in checkpoints(spec):
        raise ValueError(f"checkpoint must be one of {checkpoints(spec)} for {spec.name!r}, got {checkpoint!r}")
    folder = ensure(spec, cache_dir=cache_dir, progress=progress)
    path = folder / checkpoint
    model = _load_model(path)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    card = json.loads((folder / "card.json").read_text())
    return ZooModel(model, tokenizer, path, spec, checkpoint, card)


def card_row(card: dict, checkpoint: str = "final") -> dict:
    """One line of the model-card table: the numbers a reader compares across the zoo."""
    if not isinstance(card, dict) or "checkpoints" not in card:
        raise TypeError(f"card must be a zoo card (ZooModel.card), got {check.describe(card)}")
    if checkpoint not in card["checkpoints"]:
        raise ValueError(f"checkpoint must be one of {sorted(card['checkpoints'])}, got {checkpoint!r}")
    quality = card["checkpoints"][checkpoint]
    return {"model": card["name"], "checkpoint": checkpoint, "parameters": card["parameters"],
            "train_seconds": card["train_seconds"], "train_cpu_seconds": card["train_cpu_seconds"], **quality}


def build_all(names: Iterable[str] | None = None, *, cache_dir=None) -> dict[str, dict]:
    """Make sure every model of ``names`` (default: :data:`SPECS`, then :data:`CONTRASTS`) is cached.

    Returns, per model, ``seconds`` (spent here: about 0 when it was cached)
    and ``train_seconds`` (its training, from its card). The build runs this
    before the chapters execute (``python -m rl2llm.zoo`` does the same).
    """
    names = [*SPECS, *CONTRASTS] if names is None else list(names)
    models = {}
    for name in names:
        spec = _spec(name)
        start = time.perf_counter()
        folder, trained = _ensure(spec, cache_dir, True)
        card = json.loads((folder / "card.json").read_text())
        models[spec.name] = {"seconds": time.perf_counter() - start, "train_seconds": card["train_seconds"]}
        how = f"{card['train_seconds']:.0f} s (CPU {card['train_cpu_seconds']:.0f} s)"
        state = (f"trained in {how}" if trained else "cached" if time.perf_counter() - start < 5
                 else f"trained by another process in {how}")
        print(f"[zoo] {spec.name}: {state} ({folder})", flush=True)
    return models


if __name__ == "__main__":  # python -m rl2llm.zoo: train what is missing (run as rl2llm.zoo, for its key)
    import rl2llm.zoo

    rl2llm.zoo.build_all()
