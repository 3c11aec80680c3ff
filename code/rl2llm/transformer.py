"""A small GPT, written to be read (Lecture 10); Lecture 12 trains it and samples from it.

The file reads top to bottom in the order Lecture 10 explains a transformer:

* :class:`GPTConfig` -- the few numbers and switches that define a model, and
  :func:`n_parameters`, the parameter count as a formula;
* the block's pieces: a normalisation (:class:`RMSNorm` or PyTorch's
  LayerNorm), rotary position embeddings (:func:`rope_tables`,
  :func:`apply_rope`), :class:`CausalSelfAttention`, the feed-forward
  :class:`MLP` (GELU or SwiGLU), and the :class:`Block` that adds them to the
  residual stream, before (pre-norm) or after (post-norm) normalising;
* :class:`GPT`: embeddings, blocks, a final norm and the output layer, with
  ``forward(idx, targets) -> (logits, loss)`` and :meth:`GPT.generate`;
* :func:`train_gpt`: the minimal training loop of the chapter's experiments;
* converters to and from the production implementations of the same
  architectures in ``transformers``: :func:`to_gpt2` / :func:`from_gpt2`
  (``GPT2LMHeadModel``) and :func:`to_llama` (``LlamaForCausalLM``). The
  tests load our weights into them and compare the logits.

Its defaults are GPT-2's block (learned positions, LayerNorm with biases,
GELU, pre-norm, tied input and output embeddings); ``LLAMA`` holds the four
switches that turn it into Llama's block (RMSNorm, SwiGLU, RoPE, no biases).
Attention is :func:`torch.nn.functional.scaled_dot_product_attention`, the
fused kernel for ``softmax(q k^T / sqrt(d)) v`` (Lecture 9 shows it equals the
formula).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _validate as check

NORMS = ("layer", "rms")
PLACEMENTS = ("pre", "post")
MLPS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")
#: The switches that make a :class:`GPTConfig` a Llama-style block: ``GPTConfig(**LLAMA, ...)``.
LLAMA = {"norm": "rms", "mlp": "swiglu", "position": "rope", "bias": False}


# --------------------------------------------------------------------------- configuration


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {check.describe(value)}")
    return value


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a :class:`GPT` and the switches of its block.

    ``vocab_size`` tokens, a context of ``block_size`` positions, ``n_layer``
    blocks of width ``n_embd`` with ``n_head`` attention heads each
    (``n_embd / n_head`` dimensions per head), and a feed-forward layer of
    ``mlp_hidden`` units (``None``: ``4 * n_embd`` for GELU; for SwiGLU, two
    thirds of that rounded up to a multiple of 8, which keeps the parameter
    count about the same with its three matrices instead of two).

    The switches: ``norm`` ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm);
    ``norm_placement`` ``"pre"`` (normalise the input of each sublayer, GPT-2
    and every large model since) or ``"post"`` (normalise after adding to the
    residual stream, the original Transformer); ``mlp`` ``"gelu"`` or
    ``"swiglu"``; ``position`` ``"learned"`` (an embedding per position) or
    ``"rope"`` (rotary embeddings of queries and keys); ``bias`` adds biases to
    every linear layer and LayerNorm; ``tie_weights`` makes the output layer
    share the token embedding's matrix. ``dropout`` is applied to the
    embeddings, the attention weights and each sublayer's output while
    training.
    """

    vocab_size: int = 256
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_hidden: int | None = None
    norm: str = "layer"
    norm_placement: str = "pre"
    mlp: str = "gelu"
    position: str = "learned"
    bias: bool = True
    tie_weights: bool = True
    dropout: float = 0.0
    norm_eps: float = 1e-5
    rope_theta: float = 10_000.0

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check.as_int(name, getattr(self, name), 1)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be a multiple of n_head, got n_embd = {self.n_embd} and "
                             f"n_head = {self.n_head}")
        _choice("norm", self.norm, NORMS)
        _choice("norm_placement", self.norm_placement, PLACEMENTS)
        _choice("mlp", self.mlp, MLPS)
        _choice("position", self.position, POSITIONS)
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"position 'rope' rotates pairs of dimensions, so n_embd / n_head must be even, "
                             f"got {self.head_dim}")
        if self.mlp_hidden is None:
            default = 4 * self.n_embd if self.mlp == "gelu" else 8 * math.ceil(8 * self.n_embd / 3 / 8)
            object.__setattr__(self, "mlp_hidden", default)
        check.as_int("mlp_hidden", self.mlp_hidden, 1)
        check.as_bool("bias", self.bias)
        check.as_bool("tie_weights", self.tie_weights)
        check.as_real("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check.as_real("norm_eps", self.norm_eps, 0.0, low_open=True)
        check.as_real("rope_theta", self.rope_theta, 0.0, low_open=True)

    @property
    def head_dim(self) -> int:
        """Dimensions per attention head, ``n_embd // n_head``."""
        return self.n_embd // self.n_head


def n_parameters(config: GPTConfig) -> int:
    """The number of parameters of ``GPT(config)``, counted from the formula of Lecture 10.

    With width ``d``, ``L`` layers, feed-forward width ``h``, vocabulary ``V``
    and context ``T``: embeddings ``V d`` (plus ``T d`` for learned
    positions); per block, attention ``4 d^2`` and a feed-forward layer of
    ``2 d h`` (GELU) or ``3 d h`` (SwiGLU), plus biases and the norms' gains;
    the output layer ``V d`` unless it is tied to the token embedding. For
    GPT-2's shape (``h = 4 d``) the blocks hold about ``12 L d^2``.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {check.describe(config)}")
    d, h, L = config.n_embd, config.mlp_hidden, config.n_layer
    V, T = config.vocab_size, config.block_size
    b = int(config.bias)
    norm = d + (d * b if config.norm == "layer" else 0)   # gain (and bias)
    attention = 4 * d * d + 4 * d * b                     # q, k, v, output
    if config.mlp == "gelu":
        mlp = 2 * d * h + (h + d) * b                     # up, down
    else:
        mlp = 3 * d * h + (2 * h + d) * b                 # gate, up, down
    block = attention + mlp + 2 * norm
    embeddings = V * d + (T * d if config.position == "learned" else 0)
    final_norm = norm if config.norm_placement == "pre" else 0
    head = 0 if config.tie_weights else V * d
    return embeddings + L * block + final_norm + head


# --------------------------------------------------------------------------- the block's pieces


class RMSNorm(nn.Module):
    """Root-mean-square normalisation: ``x / sqrt(mean(x^2) + eps) * gain``.

    LayerNorm also subtracts the mean and adds a bias; RMSNorm only rescales.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inverse_rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * inverse_rms * self.weight


def make_norm(config: GPTConfig) -> nn.Module:
    """The normalisation ``config.norm`` names, over ``config.n_embd`` features."""
    if config.norm == "rms":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


#: The cosines and sines of rotary positions for the T positions of a window, ``(T, head_dim)`` each.
Rope = tuple[torch.Tensor, torch.Tensor]


def rope_tables(head_dim: int, n_positions: int, theta: float = 10_000.0) -> Rope:
    """Cosines and sines of rotary position embeddings, each ``(n_positions, head_dim)``.

    Dimension ``i`` and ``i + head_dim / 2`` form a pair that position ``t``
    rotates by the angle ``t * theta^(-2i / head_dim)``: fast rotations in the
    first pairs, slow ones in the last (``transformers``' Llama convention).
    """
    head_dim = check.as_int("head_dim", head_dim, 2)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even (dimensions are rotated in pairs), got {head_dim}")
    n_positions = check.as_int("n_positions", n_positions, 1)
    theta = check.as_real("theta", theta, 0.0, low_open=True)
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(n_positions, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of dimensions of ``x`` (``(..., T, head_dim)``) by its position's angle."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class CausalSelfAttention(nn.Module):
    """Multi-head attention in which each position sees itself and the positions before it."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # queries, keys, values
        self.out = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, C / heads): one slice of the features per head
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        if rope is not None:  # positions enter as rotations of the queries and keys
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        p_drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p_drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.out(y)


class MLP(nn.Module):
    """The feed-forward layer, applied to each position on its own.

    GELU: ``down(gelu(up(x)))``. SwiGLU: ``down(silu(gate(x)) * up(x))``, a
    gate computed from the input multiplies the hidden units; the gate's and
    the up projection's matrices are stored as one (``up``), gate first.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        width = 2 * config.mlp_hidden if self.swiglu else config.mlp_hidden
        self.up = nn.Linear(config.n_embd, width, bias=config.bias)
        self.down = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(self.up(x), approximate="tanh"))  # GPT-2's GELU


class Block(nn.Module):
    """Attention, then the feed-forward layer, each added to the residual stream.

    Pre-norm normalises what enters each sublayer and leaves the stream
    itself untouched; post-norm normalises the stream after each addition.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.norm1, self.attn = make_norm(config), CausalSelfAttention(config)
        self.norm2, self.mlp = make_norm(config), MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), rope))
            x = x + self.drop(self.mlp(self.norm2(x)))
        else:
            x = self.norm1(x + self.drop(self.attn(x, rope)))
            x = self.norm2(x + self.drop(self.mlp(x)))
        return x


# --------------------------------------------------------------------------- the model


class GPT(nn.Module):
    """A decoder-only transformer: embed the tokens, run the blocks, predict the next token.

    ``forward(idx, targets=None)`` takes token ids ``(B, T)`` with ``T <=
    block_size`` and returns the logits ``(B, T, vocab_size)`` of the next
    token at every position, and, when ``targets`` (the ids that follow,
    ``(B, T)``; ``-100`` is ignored) are given, their mean cross-entropy.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {check.describe(config)}")
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd)
        self.pos_emb = nn.Embedding(c.block_size, c.n_embd) if c.position == "learned" else None
        if c.position == "rope":
            cos, sin = rope_tables(c.head_dim, c.block_size, c.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        # pre-norm's stream is never normalised inside the blocks, so it is once at the end
        self.norm = make_norm(c) if c.norm_placement == "pre" else nn.Identity()
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        for block in self.blocks:  # GPT-2: the layers that write into the stream start smaller
            for layer in (block.attn.out, block.mlp.down):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = self._check_ids("idx", idx)
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=idx.device))
        x = self.drop(x)
        rope = None
        if self.config.position == "rope":   # rotations for the first T positions
            rope = (self.rope_cos[:T], self.rope_sin[:T])
        for block in self.blocks:
            x = block(x, rope)
        logits = self.head(self.norm(x))
        if targets is None:
            return logits, None
        if not isinstance(targets, torch.Tensor) or targets.shape != idx.shape:
            raise ValueError(f"targets must be a tensor of token ids shaped like idx {tuple(idx.shape)}, got "
                             f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else check.describe(targets)}")
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def _check_ids(self, name: str, idx) -> int:
        """``idx`` must be integer token ids ``(B, T)``, ``1 <= T <= block_size``, within the vocabulary."""
        if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be a tensor of token ids (torch.long), got "
                            f"{idx.dtype if isinstance(idx, torch.Tensor) else check.describe(idx)}")
        if idx.dim() != 2 or not 1 <= idx.size(1) <= self.config.block_size:
            raise ValueError(f"{name} must have shape (batch, T) with 1 <= T <= block_size = "
                             f"{self.config.block_size}, got {tuple(idx.shape)}")
        low, high = torch.aminmax(idx)
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(f"{name} holds token ids from {int(low)} to {int(high)}; the vocabulary is "
                             f"0 .. {self.config.vocab_size - 1}")
        return idx.size(1)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` ``(B, T)``, one at a time.

        Each step feeds the last ``block_size`` tokens, divides the last
        position's logits by ``temperature`` (``0``: always the most likely
        token), keeps the ``top_k`` largest when given, and samples with
        ``generator``. The model is in evaluation mode (no dropout) while it
        generates.
        """
        self._check_ids("idx", idx[:, -self.config.block_size:] if isinstance(idx, torch.Tensor) else idx)
        max_new_tokens = check.as_int("max_new_tokens", max_new_tokens, 0)
        temperature = check.as_real("temperature", temperature, 0.0)
        if top_k is not None:
            top_k = check.as_int("top_k", top_k, 1, self.config.vocab_size)
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])
            logits = logits[:, -1, :]
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, -math.inf)
                next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, next_id], dim=1)
        self.train(was_training)
        return idx


# --------------------------------------------------------------------------- training


def encode(text: str) -> torch.Tensor:
    """A text as its UTF-8 bytes, the token ids of a byte-level model (``vocab_size = 256``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {check.describe(text)}")
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def decode(ids) -> str:
    """Byte-level token ids back to text (bytes that are not valid UTF-8 become U+FFFD)."""
    ids = check.as_actions("ids", torch.as_tensor(ids).cpu().numpy().ravel(), 256)
    return bytes(ids.astype(np.uint8).tolist()).decode("utf-8", errors="replace")


def get_batch(data: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``block_size`` tokens from ``data`` and the tokens that follow each."""
    _check_data(data, block_size)
    batch_size = check.as_int("batch_size", batch_size, 1)
    start = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    window = start[:, None] + torch.arange(block_size + 1)
    chunk = data[window]
    return chunk[:, :-1], chunk[:, 1:]


def _check_data(data, block_size) -> None:
    if not isinstance(data, torch.Tensor) or data.dim() != 1 or data.dtype != torch.long:
        got = f"a {data.dim()}-D tensor of {data.dtype}" if isinstance(data, torch.Tensor) else check.describe(data)
        raise TypeError(f"data must be a 1-D tensor of token ids (torch.long), got {got}")
    block_size = check.as_int("block_size", block_size, 1)
    if len(data) <= block_size:
        raise ValueError(f"data must be longer than block_size = {block_size}, got {len(data)} tokens")


@dataclass
class TrainResult:
    """What :func:`train_gpt` returns: the model, the loss and the gradient norm of every step
    (before clipping), and the step at which the loss stopped being finite (``None`` if it never did)."""

    model: GPT
    losses: np.ndarray
    grad_norms: np.ndarray
    diverged_at: int | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None


def train_gpt(config: GPTConfig, data: torch.Tensor, steps: int, batch_size: int = 16, lr: float = 1e-3,
              warmup: int = 0, seed: int = 0, weight_decay: float = 0.0, grad_clip: float | None = None,
              betas: tuple[float, float] = (0.9, 0.95)) -> TrainResult:
    """Train a fresh ``GPT(config)`` on random windows of ``data`` with AdamW.

    The learning rate rises linearly from ``lr / warmup`` to ``lr`` over the
    first ``warmup`` steps and stays there (no decay, so that the
    experiments of Lecture 10 compare the architectures, not the schedule).
    ``grad_clip`` rescales gradients whose norm exceeds it (``None``: never).
    Training stops early if the loss becomes infinite or NaN. ``seed`` fixes
    the initial weights and the batches.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {check.describe(config)}")
    steps = check.as_int("steps", steps, 1)
    lr = check.as_real("lr", lr, 0.0, low_open=True)
    warmup = check.as_int("warmup", warmup, 0)
    seed = check.as_int("seed", seed, 0, 2**63 - 1)
    weight_decay = check.as_real("weight_decay", weight_decay, 0.0)
    if grad_clip is not None:
        grad_clip = check.as_real("grad_clip", grad_clip, 0.0, low_open=True)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair such as (0.9, 0.95), got {check.describe(betas)}")
    betas = tuple(check.as_real("betas", b, 0.0, 1.0, high_open=True) for b in betas)
    _check_data(data, config.block_size)
    if int(data.max()) >= config.vocab_size or int(data.min()) < 0:
        raise ValueError(f"data holds token ids from {int(data.min())} to {int(data.max())}; the vocabulary is "
                         f"0 .. {config.vocab_size - 1}")
    torch.manual_seed(seed)
    model = GPT(config)
    batches = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]      # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]    # gains and biases
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)
    losses, grad_norms, diverged_at = [], [], None
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        x, y = get_batch(data, batch_size, config.block_size, batches)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip else math.inf)
        losses.append(loss.item())
        grad_norms.append(norm.item())
        if not math.isfinite(losses[-1]):
            diverged_at = step
            break
        optimizer.step()
    return TrainResult(model, np.array(losses), np.array(grad_norms), diverged_at)


# --------------------------------------------------------------------------- the same models in transformers


def _require(config: GPTConfig, target: str, **wanted) -> None:
    for name, value in wanted.items():
        if getattr(config, name) != value:
            raise ValueError(f"{target} needs {name} = {value!r}; this model has {name} = "
                             f"{getattr(config, name)!r}")


def _check_model(model) -> GPT:
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a GPT, got {check.describe(model)}")
    return model


def to_gpt2(model: GPT):
    """A ``transformers.GPT2LMHeadModel`` of the same configuration holding ``model``'s weights.

    GPT-2's block is this module's default: pre-norm LayerNorm with biases,
    GELU (tanh approximation), learned positions; any other switch is a
    ``ValueError``. GPT-2 stores its linear layers as ``Conv1D``, whose weight
    is the transpose of ``nn.Linear``'s. The copy is in evaluation mode.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    c = _check_model(model).config
    _require(c, "GPT2LMHeadModel", norm="layer", norm_placement="pre", mlp="gelu", position="learned", bias=True)
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, n_inner=c.mlp_hidden, activation_function="gelu_pytorch_tanh",
        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout, layer_norm_epsilon=c.norm_eps,
        tie_word_embeddings=c.tie_weights, bos_token_id=None, eos_token_id=None))
    state = {"transformer.wte.weight": model.tok_emb.weight, "transformer.wpe.weight": model.pos_emb.weight,
             "transformer.ln_f.weight": model.norm.weight, "transformer.ln_f.bias": model.norm.bias,
             "lm_head.weight": model.head.weight}
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}."
        for ours, theirs in [(block.norm1, "ln_1"), (block.norm2, "ln_2")]:
            state[h + theirs + ".weight"], state[h + theirs + ".bias"] = ours.weight, ours.bias
        for ours, theirs in [(block.attn.qkv, "attn.c_attn"), (block.attn.out, "attn.c_proj"),
                             (block.mlp.up, "mlp.c_fc"), (block.mlp.down, "mlp.c_proj")]:
            state[h + theirs + ".weight"], state[h + theirs + ".bias"] = ours.weight.T, ours.bias
    _load(hf, state)
    return hf.eval()


def from_gpt2(hf_model) -> GPT:
    """A :class:`GPT` holding the weights of a ``transformers.GPT2LMHeadModel`` (the reverse of :func:`to_gpt2`)."""
    from transformers import GPT2LMHeadModel

    if not isinstance(hf_model, GPT2LMHeadModel):
        raise TypeError(f"hf_model must be a transformers GPT2LMHeadModel, got {check.describe(hf_model)}")
    h = hf_model.config
    if h.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"hf_model's activation_function must be GELU's tanh approximation ('gelu_new' or "
                         f"'gelu_pytorch_tanh'), got {h.activation_function!r}")
    if h.scale_attn_by_inverse_layer_idx or not h.scale_attn_weights:
        raise ValueError("hf_model must scale attention by 1/sqrt(head_dim) only (scale_attn_weights=True, "
                         "scale_attn_by_inverse_layer_idx=False)")
    config = GPTConfig(vocab_size=h.vocab_size, block_size=h.n_positions, n_layer=h.n_layer, n_head=h.n_head,
                       n_embd=h.n_embd, mlp_hidden=h.n_inner or 4 * h.n_embd, norm_eps=h.layer_norm_epsilon,
                       tie_weights=bool(h.tie_word_embeddings), dropout=float(h.resid_pdrop))
    model = GPT(config)
    theirs = hf_model.state_dict()
    ours = {"tok_emb.weight": "transformer.wte.weight", "pos_emb.weight": "transformer.wpe.weight",
            "norm.weight": "transformer.ln_f.weight", "norm.bias": "transformer.ln_f.bias",
            "head.weight": "lm_head.weight"}
    transposed = set()
    for i in range(h.n_layer):
        for a, b in [("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.qkv", "attn.c_attn"), ("attn.out", "attn.c_proj"),
                     ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj")]:
            for p in ("weight", "bias"):
                ours[f"blocks.{i}.{a}.{p}"] = f"transformer.h.{i}.{b}.{p}"
            if not a.startswith("norm"):
                transposed.add(f"blocks.{i}.{a}.weight")
    _load(model, {k: theirs[v].T if k in transposed else theirs[v] for k, v in ours.items()})
    return model


def to_llama(model: GPT):
    """A ``transformers.LlamaForCausalLM`` of the same configuration holding ``model``'s weights.

    Llama's block is pre-norm with RMSNorm, SwiGLU, rotary positions and no
    biases (``GPTConfig(**LLAMA, ...)``); any other switch is a
    ``ValueError``. Our fused query-key-value and gate-up matrices are split
    into Llama's separate ones. The copy is in evaluation mode.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    c = _check_model(model).config
    _require(c, "LlamaForCausalLM", norm_placement="pre", **LLAMA)
    if c.dropout:
        raise ValueError(f"LlamaForCausalLM has no dropout outside attention; this model has dropout = {c.dropout}")
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.mlp_hidden, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.n_head, max_position_embeddings=c.block_size,
        rms_norm_eps=c.norm_eps, rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=c.tie_weights, hidden_act="silu", attention_bias=False, mlp_bias=False,
        bos_token_id=None, eos_token_id=None))
    d, hidden = c.n_embd, c.mlp_hidden
    state = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.norm.weight,
             "lm_head.weight": model.head.weight}
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        q, k, v = block.attn.qkv.weight.split(d, dim=0)
        gate, up = block.mlp.up.weight.split(hidden, dim=0)
        state.update({p + "input_layernorm.weight": block.norm1.weight,
                      p + "post_attention_layernorm.weight": block.norm2.weight,
                      p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                      p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": block.attn.out.weight,
                      p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                      p + "mlp.down_proj.weight": block.mlp.down.weight})
    _load(hf, state)
    return hf.eval()


def _load(target: nn.Module, state: dict) -> None:
    """Copy ``state`` into ``target``'s parameters; every parameter must be given, with its shape."""
    params = dict(target.named_parameters(remove_duplicate=False))
    missing, unknown = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unknown:   # a bug in a mapping above, never the caller's
        raise RuntimeError(f"weights missing for {missing[:3]}, unknown names {unknown[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.detach())
