"""Attention from scratch: scaled dot-product, masks, multi-head, grouped-query, positions (Lecture 9).

Lecture 9 (Attention) builds and measures everything here; Lecture 10 assembles
a transformer from :class:`MultiHeadAttention`. Shapes follow PyTorch's
:func:`torch.nn.functional.scaled_dot_product_attention`: queries, keys and
values are ``(..., heads, T, d)``, and a boolean mask is True where a query may
attend.

* :func:`scaled_dot_product_attention` — ``softmax(q k^T / sqrt(d) + mask) v``,
  with causal and padding masks and keys/values shared by groups of query
  heads (grouped-query attention; one shared head is multi-query attention).
* :func:`causal_mask`, :func:`padding_mask` — the two masks a language model needs.
* :class:`MultiHeadAttention` — projections, heads, optional rotary or ALiBi
  positions, and a :class:`KVCache` for generation one token at a time.
* :func:`sinusoidal_positions`, :func:`apply_rope`, :func:`alibi_slopes`,
  :func:`alibi_bias` — four ways to tell attention where a token is (learned
  positions are an ``nn.Embedding``, see :class:`TinyAttentionModel`).
* :func:`kv_cache_bytes` — the memory a KV cache takes, in bytes; :func:`peak_tensor_bytes`
  — the memory a computation's tensors take at their peak, measured.
* :func:`lag_task`, :class:`TinyAttentionModel`, :func:`train_lag_model` — the
  chapter's small experiment: repeat the token ``lag`` places back, trained on
  short sequences and tested on long ones.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from . import _validate as check
from .dqn import flush_denormals, torch_threads
from .seeding import seed_everything

#: The positional schemes :class:`TinyAttentionModel` knows ("none": no position at all).
POSITIONAL = ("none", "sinusoidal", "learned", "rope", "alibi")
#: Schemes applied inside attention (to queries and keys, or to the scores) rather than to the input.
_IN_ATTENTION = ("rope", "alibi")


# --------------------------------------------------------------------------- argument checks


def _tensor(name: str, value, min_dim: int = 0, floating: bool = True) -> torch.Tensor:
    """``value`` must be a torch tensor with at least ``min_dim`` dimensions (of a float dtype when ``floating``)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {check.describe(value)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {value.dtype}")
    if value.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {tuple(value.shape)}")
    return value


def _finite(name: str, x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        where = tuple(int(i) for i in (~torch.isfinite(x)).nonzero()[0])
        raise ValueError(f"{name} must be finite, but {name}{list(where)} = {x[where].item()}")


def _positions(name: str, positions, n: int | None = None) -> torch.Tensor:
    """Token positions: a tensor (or list) of whole numbers >= 0; with ``n``, its last dimension is ``n``."""
    if isinstance(positions, (list, tuple, range)):
        positions = torch.as_tensor(list(positions))
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of token positions, got {check.describe(positions)}")
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(f"{name} must hold whole numbers, got dtype {positions.dtype}")
    if positions.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (one position per token), got a scalar")
    if n is not None and positions.shape[-1] != n:
        raise ValueError(f"{name} must have {n} positions in its last dimension (one per token), "
                         f"got shape {tuple(positions.shape)}")
    if positions.is_floating_point():
        _finite(name, positions)
        if bool((positions != positions.round()).any()):
            raise ValueError(f"{name} must hold whole numbers, got fractional positions")
    if bool((positions < 0).any()):
        raise ValueError(f"{name} must be >= 0, got a minimum of {positions.min().item()}")
    return positions


# --------------------------------------------------------------------------- masks


def causal_mask(n_queries: int, n_keys: int | None = None, device=None) -> torch.Tensor:
    """``(n_queries, n_keys)`` booleans, True where a query may attend: itself and what comes before it.

    The queries are the *last* ``n_queries`` of the ``n_keys`` positions
    (bottom-right aligned), which is what decoding with a KV cache needs: one
    new query sees every cached key. With ``n_queries == n_keys`` (the default)
    this is the usual lower triangle, the same as PyTorch's ``is_causal=True``;
    PyTorch aligns a shorter query block to the *first* keys instead (the
    gotcha of Lecture 9).
    """
    n_queries = check.as_int("n_queries", n_queries, 1)
    n_keys = n_queries if n_keys is None else check.as_int("n_keys", n_keys, 1)
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=n_keys - n_queries)


def padding_mask(lengths, T: int) -> torch.Tensor:
    """``(B, 1, 1, T)`` booleans: True for the first ``lengths[b]`` tokens of sequence ``b``, False for padding.

    It broadcasts over heads and queries, so no query attends to a padding
    key. (Padding *queries* still get an output; the loss should ignore it.)
    """
    T = check.as_int("T", T, 1)
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.tolist()
    lengths = check.numeric_array("lengths", lengths)
    if lengths.ndim != 1 or lengths.size == 0:
        raise ValueError(f"lengths must be a non-empty list of sequence lengths, got shape {lengths.shape}")
    lengths = check.as_actions("lengths", lengths, T + 1)  # whole numbers in 0 .. T
    return (torch.arange(T) < torch.as_tensor(lengths)[:, None])[:, None, None, :]


# --------------------------------------------------------------------------- attention


def scaled_dot_product_attention(q, k, v, mask=None, causal: bool = False, scale: float | None = None,
                                 return_weights: bool = False):
    """``softmax(q k^T * scale + mask) v``: what each query reads from the values.

    ``q``: ``(..., H, Tq, d)``; ``k``: ``(..., Hkv, Tk, d)``; ``v``: ``(..., Hkv, Tk, dv)``,
    float tensors of one dtype, with the same leading dimensions. ``Hkv`` must
    divide ``H``: query heads ``g*j .. g*j + g - 1`` (``g`` is ``H // Hkv``) share key
    and value head ``j`` (grouped-query attention, as PyTorch's ``enable_gqa``).
    ``mask``: ``None``, booleans (True: may attend) or floats added to the
    scores (an ALiBi bias; ``-inf`` forbids), broadcastable to
    ``(..., H, Tq, Tk)``. ``causal``: each query attends only to keys at or
    before its own position (see :func:`causal_mask` for ``Tq < Tk``).
    ``scale``: ``1 / sqrt(d)`` by default. A query with nothing to attend to
    gets a zero output (as PyTorch does), not NaN. Returns the output
    ``(..., H, Tq, dv)``, and with ``return_weights`` also the attention
    weights ``(..., H, Tq, Tk)``, each row summing to 1 (or 0 if fully masked).
    """
    q, k, v = (_tensor(name, x, 3) for name, x in (("q", q), ("k", k), ("v", v)))
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must have one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device} and {v.device}")
    *batch, H, Tq, d = q.shape
    if k.shape[:-3] != q.shape[:-3] or v.shape[:-3] != q.shape[:-3]:
        raise ValueError(f"q, k and v must have the same leading (batch) dimensions, got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}")
    Hkv, Tk = k.shape[-3], k.shape[-2]
    if k.shape[-1] != d:
        raise ValueError(f"k must have the query size d = {d} in its last dimension, got shape {tuple(k.shape)}")
    if v.shape[-3:-1] != k.shape[-3:-1]:
        raise ValueError(f"v must have k's heads and length (Hkv, Tk) = {(Hkv, Tk)}, got shape {tuple(v.shape)}")
    if H % Hkv:
        raise ValueError(f"k and v must have a number of heads that divides q's: q has {H}, k and v have {Hkv}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        _finite(name, x)
    causal = check.as_bool("causal", causal)
    return_weights = check.as_bool("return_weights", return_weights)
    scale = 1.0 / math.sqrt(d) if scale is None else check.as_real("scale", scale, 0.0, low_open=True)
    scores_shape = (*batch, H, Tq, Tk)
    if mask is not None:
        mask = _tensor("mask", mask, floating=False)
        if mask.dtype != torch.bool and not mask.is_floating_point():
            raise TypeError(f"mask must be booleans (True: may attend) or floats added to the scores, "
                            f"got dtype {mask.dtype}")
        try:
            broadcast = torch.broadcast_shapes(mask.shape, scores_shape)
        except RuntimeError:
            broadcast = None
        if broadcast != scores_shape:
            raise ValueError(f"mask must broadcast to the scores' shape (..., H, Tq, Tk) = {scores_shape}, "
                             f"got shape {tuple(mask.shape)}")
        if mask.is_floating_point() and bool(torch.isnan(mask).any()):
            raise ValueError("mask must not contain NaN")

    g = H // Hkv   # query heads per key/value head: a group is stacked along time
    grouped_q = q.reshape(*batch, Hkv, g * Tq, d)
    scores = (grouped_q @ k.transpose(-2, -1)).reshape(scores_shape) * scale
    if causal:
        future = ~causal_mask(Tq, Tk, device=q.device)
        scores = scores.masked_fill(future, float("-inf"))
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    empty = None
    if causal or mask is not None:   # a query with nothing to attend to: no NaN, zeros
        empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
        scores = scores.masked_fill(empty, 0.0)
    weights = torch.softmax(scores, dim=-1)
    if empty is not None:
        weights = weights.masked_fill(empty, 0.0)
    out = weights.reshape(*batch, Hkv, g * Tq, Tk) @ v
    out = out.reshape(*batch, H, Tq, v.shape[-1])
    return (out, weights) if return_weights else out


# --------------------------------------------------------------------------- positions


def sinusoidal_positions(T: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """The ``(T, d)`` sinusoidal encodings of Vaswani et al.: ``sin`` in even columns, ``cos`` in odd ones.

    Column pair ``i`` turns at the frequency ``base ** (-2i / d)``, from one
    radian per position down to about ``1 / base``; ``d`` must be even.
    """
    T = check.as_int("T", T, 1)
    d = check.as_int("d", d, 2)
    if d % 2:
        raise ValueError(f"d must be even (a sine and a cosine per frequency), got {d}")
    base = check.as_real("base", base, 1.0, low_open=True)
    position = torch.arange(T, dtype=torch.float64)[:, None]
    frequency = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    table = torch.zeros(T, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.float()


def apply_rope(x, positions, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding: rotate each pair of dimensions of ``x`` by ``position * frequency``.

    ``x``: ``(..., T, d)`` with ``d`` even; ``positions``: whole numbers >= 0,
    ``(T,)`` or any shape that broadcasts to ``x.shape[:-1]``. Dimension ``i``
    is paired with ``i + d/2`` (the GPT-NeoX and LLaMA layout; the paper pairs
    neighbours, which is the same up to a fixed reordering of dimensions), and
    pair ``i`` turns at ``base ** (-2i / d)`` radians per position. Because a
    rotation by ``a`` then by ``-b`` is a rotation by ``a - b``, the dot product
    of a rotated query and key depends on their positions only through the
    difference.
    """
    x = _tensor("x", x, 2)
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"x must have an even last dimension (pairs of dimensions rotate), got {d}")
    positions = _positions("positions", positions, x.shape[-2])
    try:
        torch.broadcast_shapes(positions.shape, x.shape[:-1])
    except RuntimeError:
        raise ValueError(f"positions must broadcast to x's shape without its last dimension "
                         f"{tuple(x.shape[:-1])}, got shape {tuple(positions.shape)}") from None
    base = check.as_real("base", base, 1.0, low_open=True)
    cos, sin = _rope_angles(positions.to(x.device), d, base, x.dtype)
    return _rotate(x, cos, sin)


def _rope_angles(positions: torch.Tensor, d: int, base: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``position * frequency`` for the ``d / 2`` frequencies: ``(..., T, d/2)`` each."""
    frequency = base ** (-torch.arange(d // 2, dtype=torch.float64, device=positions.device) * 2 / d)
    angle = positions.to(torch.float64)[..., None] * frequency
    return torch.cos(angle).to(dtype), torch.sin(angle).to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Turn each pair of dimensions (i, i + d/2) of x by its angle."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes: the geometric sequence ``2^(-8/n), 2^(-16/n), ...`` of Press et al.

    For a head count that is not a power of two, the slopes of the closest
    smaller power of two, then every other slope of the next power of two (the
    paper's recipe).
    """
    n_heads = check.as_int("n_heads", n_heads, 1)

    def powers_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if n_heads & (n_heads - 1) == 0:
        return torch.tensor(powers_of_two(n_heads))
    below = 2 ** int(math.floor(math.log2(n_heads)))
    return torch.tensor(powers_of_two(below) + powers_of_two(2 * below)[0::2][: n_heads - below])


def alibi_bias(n_heads: int, T: int, n_keys: int | None = None) -> torch.Tensor:
    """``(n_heads, T, n_keys)``: ``-slope * distance`` to add to the attention scores (ALiBi).

    Query ``i`` sits at position ``n_keys - T + i`` (the last ``T`` of the
    ``n_keys`` positions, as in :func:`causal_mask`); the distance to key ``j``
    is ``|position - j|``, so nearby keys are preferred, more strongly in heads
    with a larger slope. A causal model masks the keys after the query anyway.
    """
    n_heads = check.as_int("n_heads", n_heads, 1)
    T = check.as_int("T", T, 1)
    n_keys = T if n_keys is None else check.as_int("n_keys", n_keys, 1)
    query_at = torch.arange(n_keys - T, n_keys)[:, None]
    distance = (query_at - torch.arange(n_keys)[None, :]).abs().float()
    return -alibi_slopes(n_heads)[:, None, None] * distance


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1,
                   bytes_per_value: int = 2) -> int:
    """Bytes a KV cache holds: a key and a value vector per layer, key/value head, token and sequence.

    ``2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_value``
    (2 bytes per value in 16-bit floats, the default; 4 in float32).
    """
    sizes = [check.as_int(name, value, 1) for name, value in
             (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim),
              ("seq_len", seq_len), ("batch", batch), ("bytes_per_value", bytes_per_value))]
    return 2 * math.prod(sizes)


class _TensorMeter(TorchDispatchMode):
    """Counts the bytes of the tensors PyTorch operations create while it is active, and their peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._storages: set[int] = set()

    def _freed(self, pointer: int, n: int) -> None:
        self._storages.discard(pointer)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = tree_flatten((args, kwargs))[0]
        inputs = {t.untyped_storage().data_ptr() for t in given
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                pointer, n = storage.data_ptr(), storage.nbytes()
                # a view or an in-place result shares an input's memory: nothing new
                new = pointer not in inputs and pointer not in self._storages
                if n and new:
                    self._storages.add(pointer)
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._freed, pointer, n)
        return out


def peak_tensor_bytes(fn) -> int:
    """The largest number of bytes held at once by tensors that ``fn()`` creates (its result included).

    Every PyTorch operation's output is counted when it is made and released
    when it is freed; the peak is what the call needed on top of its inputs.
    Views and in-place results allocate nothing and are not counted; buffers
    a kernel allocates internally and frees before returning are not seen
    either (for a fused attention kernel, a few blocks of scores per thread).
    Gradients are not recorded while it runs.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function of no arguments, got {check.describe(fn)}")
    meter = _TensorMeter()
    with torch.no_grad(), meter:
        result = fn()
        del result
    return meter.peak


# --------------------------------------------------------------------------- multi-head attention


class KVCache:
    """The keys and values of one attention layer for the tokens seen so far, preallocated.

    ``(batch, n_kv_heads, max_len, head_dim)`` for keys and for values; each
    call of :meth:`append` writes the new tokens' keys and values after the
    previous ones and returns everything cached so far. :meth:`nbytes` is the
    memory the two tensors hold, what :func:`kv_cache_bytes` predicts.
    """

    def __init__(self, batch: int, n_kv_heads: int, head_dim: int, max_len: int, dtype=torch.float32,
                 device=None):
        shape = tuple(check.as_int(name, value, 1) for name, value in
                      (("batch", batch), ("n_kv_heads", n_kv_heads), ("max_len", max_len),
                       ("head_dim", head_dim)))
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {check.describe(dtype)}")
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys.shape[2]

    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` of shape ``(batch, n_kv_heads, T, head_dim)``; return all keys and values so far."""
        for name, x in (("k", k), ("v", v)):
            _tensor(name, x, 4)
            if x.shape[:2] != self.keys.shape[:2] or x.shape[3] != self.keys.shape[3]:
                raise ValueError(f"{name} must have shape (batch, n_kv_heads, T, head_dim) = "
                                 f"{(*self.keys.shape[:2], 'T', self.keys.shape[3])}, got {tuple(x.shape)}")
        T = k.shape[2]
        if v.shape[2] != T:
            raise ValueError(f"k and v must hold the same number of tokens, got {T} and {v.shape[2]}")
        if self.length + T > self.max_len:
            raise ValueError(f"the cache holds at most max_len = {self.max_len} tokens; it has {self.length} "
                             f"and was given {T} more")
        self.keys[:, :, self.length:self.length + T] = k
        self.values[:, :, self.length:self.length + T] = v
        self.length += T
        return self.keys[:, :, :self.length], self.values[:, :, :self.length]


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with ``n_kv_heads`` key/value heads (grouped-query; 1 is multi-query).

    ``d_model`` is split into ``n_heads`` heads of ``head_dim = d_model //
    n_heads``; queries get ``n_heads`` heads, keys and values ``n_kv_heads``
    (default ``n_heads``: ordinary multi-head attention), which must divide
    ``n_heads``. ``positional``: ``"none"`` (the input carries its positions,
    or there are none), ``"rope"`` (rotary, on queries and keys) or
    ``"alibi"`` (a distance penalty on the scores). ``fused``: compute with
    PyTorch's fused kernel (equal to :func:`scaled_dot_product_attention`, as the
    tests check) unless the weights are asked for or a mask is given.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, bias: bool = True, *,
                 positional: str = "none", rope_base: float = 10000.0, fused: bool = True):
        super().__init__()
        d_model = check.as_int("d_model", d_model, 1)
        n_heads = check.as_int("n_heads", n_heads, 1)
        n_kv_heads = n_heads if n_kv_heads is None else check.as_int("n_kv_heads", n_kv_heads, 1)
        if d_model % n_heads:
            raise ValueError(f"d_model must be a multiple of n_heads, got d_model = {d_model}, n_heads = {n_heads}")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads must divide n_heads, got n_kv_heads = {n_kv_heads}, n_heads = {n_heads}")
        if positional not in ("none", *_IN_ATTENTION):
            raise ValueError(f"positional must be one of 'none', 'rope', 'alibi' (sinusoidal and learned "
                             f"positions are added to the input), got {positional!r}")
        bias = check.as_bool("bias", bias)
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        if positional == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim = d_model // n_heads, got {self.head_dim}")
        self.positional = positional
        self.rope_base = check.as_real("rope_base", rope_base, 1.0, low_open=True)
        self.fused = check.as_bool("fused", fused)
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        if positional == "alibi":
            self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def _rope_table(self, n: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the rotary angles of positions ``0 .. n-1`` (at least), kept between calls."""
        table = getattr(self, "_rope_cache", None)
        if table is None or table[0].shape[0] < n or table[0].device != device or table[0].dtype != dtype:
            size = max(n, 2 * table[0].shape[0] if table is not None else 256)
            table = _rope_angles(torch.arange(size, device=device), self.head_dim, self.rope_base, dtype)
            self._rope_cache = table
        return table

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty :class:`KVCache` for this layer, in its parameters' dtype and device."""
        weight = self.k_proj.weight
        return KVCache(batch, self.n_kv_heads, self.head_dim, max_len, dtype=weight.dtype, device=weight.device)

    def forward(self, x, mask=None, causal: bool = True, positions=None, *, cache: KVCache | None = None,
                return_weights: bool = False):
        """``x``: ``(B, T, d_model)``. ``mask``: as in :func:`scaled_dot_product_attention` (for example
        :func:`padding_mask`), over the keys seen (cached ones included). ``positions``: the tokens'
        positions, ``(T,)`` or ``(B, T)``, used by rotary and ALiBi encodings (default: after the
        cached tokens, ``cache.length + 0 .. T-1``). ``cache``: a :class:`KVCache` the new keys and
        values are appended to. Returns ``(B, T, d_model)``, and the weights ``(B, H, T, Tk)`` with
        ``return_weights``."""
        x = _tensor("x", x, 3)
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, d_model) = (B, T, {self.d_model}), got {tuple(x.shape)}")
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache or None, got {check.describe(cache)}")
        B, T, _ = x.shape
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + T, device=x.device)
        else:
            positions = _positions("positions", positions, T)
            if positions.dim() > 2 or (positions.dim() == 2 and positions.shape[0] not in (1, B)):
                raise ValueError(f"positions must have shape (T,) or (B, T) = ({B}, {T}), "
                                 f"got {tuple(positions.shape)}")
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.positional == "rope":   # apply_rope, with the angles computed once for q and k
            where = positions if positions.dim() == 1 else positions[:, None, :]   # broadcast over heads
            cos, sin = self._rope_table(int(positions.max()) + 1, x.device, x.dtype)
            q, k = _rotate(q, cos[where], sin[where]), _rotate(k, cos[where], sin[where])
        if cache is not None:
            k, v = cache.append(k, v)
        Tk = k.shape[2]
        bias = None
        if self.positional == "alibi":   # -slope * |query position - key position|; keys sit at 0 .. Tk-1
            key_positions = torch.arange(Tk, device=x.device) if cache is not None else positions
            q_at = positions[..., :, None].float()
            k_at = key_positions[..., None, :].float()
            distance = (q_at - k_at).abs()
            if distance.dim() == 3:
                distance = distance[:, None]   # (B, 1, T, Tk)
            bias = -self.slopes[:, None, None] * distance
        if self.fused and not return_weights and mask is None:
            if bias is None and (not causal or T == Tk):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal and T > 1, enable_gqa=True)
            else:
                attn_mask = causal_mask(T, Tk, device=x.device) if causal else None
                if bias is not None:
                    attn_mask = bias if attn_mask is None else bias.masked_fill(~attn_mask, float("-inf"))
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=True)
            weights = None
        else:
            if bias is not None:
                if mask is None:
                    mask = bias
                elif mask.dtype == torch.bool:
                    mask = bias.masked_fill(~mask, float("-inf"))
                else:
                    mask = mask + bias
            out, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, return_weights=True)
        out = self.out_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
        return (out, weights) if return_weights else out


# --------------------------------------------------------------------------- the chapter's experiment


def lag_task(n: int, length: int, vocab: int = 16, lag: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences of ``length`` random tokens and their targets: the token ``lag`` places back.

    Returns ``(tokens, targets)``, both ``(n, length)`` integer tensors;
    ``targets[:, t] = tokens[:, t - lag]``, and ``-100`` (ignored by
    ``cross_entropy``) for the first ``lag`` positions, which have no answer.
    The answer depends on where a token is, relative to the current one,
    never on what the tokens are: a model without positional information
    cannot do better than chance, ``1 / vocab``.
    """
    n = check.as_int("n", n, 1)
    length = check.as_int("length", length, 1)
    vocab = check.as_int("vocab", vocab, 2)
    lag = check.as_int("lag", lag, 1)
    if lag >= length:
        raise ValueError(f"lag must be smaller than length (some position must have an answer), "
                         f"got lag = {lag}, length = {length}")
    seed = check.as_int("seed", seed, 0, 2**63 - 1)
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab, (n, length), generator=generator)
    targets = torch.full_like(tokens, -100)
    targets[:, lag:] = tokens[:, :-lag]
    return tokens, targets


class TinyAttentionModel(nn.Module):
    """A small causal model for the chapter's experiments: token embeddings, ``n_layers`` blocks, a readout.

    Each block is ``x + attention(norm(x))`` then ``x + mlp(norm(x))`` (the
    MLP only when ``mlp``). ``positional`` (one of :data:`POSITIONAL`) says how
    positions enter: ``"sinusoidal"`` and ``"learned"`` are added to the token
    embeddings (a learned table has ``max_len`` rows: it knows no position
    beyond), ``"rope"`` and ``"alibi"`` act inside every attention layer, and
    ``"none"`` gives the model no position at all. ``causal=False`` lets every
    position see the whole sequence, the future included (a gotcha of the
    chapter). Lecture 10 builds the full transformer; this one exists to
    compare positional schemes.
    """

    def __init__(self, vocab: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, *,
                 positional: str = "rope", max_len: int = 512, mlp: bool = True, causal: bool = True):
        super().__init__()
        self.causal = check.as_bool("causal", causal)
        vocab = check.as_int("vocab", vocab, 2)
        d_model = check.as_int("d_model", d_model, 2)
        n_layers = check.as_int("n_layers", n_layers, 1)
        self.max_len = check.as_int("max_len", max_len, 1)
        if positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {', '.join(map(repr, POSITIONAL))}, got {positional!r}")
        if positional == "sinusoidal" and d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
        self.positional = positional
        self.embed = nn.Embedding(vocab, d_model)
        if positional == "learned":
            self.position_table = nn.Embedding(self.max_len, d_model)
        elif positional == "sinusoidal":
            self.register_buffer("position_table", sinusoidal_positions(self.max_len, d_model), persistent=False)
        inside = positional if positional in _IN_ATTENTION else "none"
        self.attention = nn.ModuleList(
            MultiHeadAttention(d_model, n_heads, positional=inside) for _ in range(n_layers))
        self.attention_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 4 * d_model), nn.GELU(),
                          nn.Linear(4 * d_model, d_model)) if mlp else nn.Identity()
            for _ in range(n_layers))
        self.has_mlp = check.as_bool("mlp", mlp)
        self.norm = nn.LayerNorm(d_model)
        self.readout = nn.Linear(d_model, vocab)

    def forward(self, tokens, return_weights: bool = False):
        """``tokens``: ``(B, T)`` integers. Returns logits ``(B, T, vocab)``, and with ``return_weights``
        the list of each layer's attention weights ``(B, H, T, T)``."""
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be an integer tensor (B, T), got {check.describe(tokens)}")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, T), got {tuple(tokens.shape)}")
        T = tokens.shape[1]
        if self.positional in ("learned", "sinusoidal") and T > self.max_len:
            raise ValueError(f"this model's position table has max_len = {self.max_len} rows; "
                             f"got a sequence of {T} tokens")
        x = self.embed(tokens)
        if self.positional == "learned":
            x = x + self.position_table(torch.arange(T, device=tokens.device))
        elif self.positional == "sinusoidal":
            x = x + self.position_table[:T]
        maps = []
        for attention, norm, mlp in zip(self.attention, self.attention_norms, self.mlps):
            if return_weights:
                out, weights = attention(norm(x), causal=self.causal, return_weights=True)
                maps.append(weights)
            else:
                out = attention(norm(x), causal=self.causal)
            x = x + out
            if self.has_mlp:
                x = x + mlp(x)
        logits = self.readout(self.norm(x))
        return (logits, maps) if return_weights else logits


def train_tiny_model(model: nn.Module, batches, steps: int, learning_rate: float = 3e-3, seed: int = 0,
                     threads: int | None = 1) -> list[float]:
    """Train ``model`` on ``batches(step) -> (tokens, targets)``; return the loss of every step.

    Cross-entropy of the logits against ``targets`` (``-100``: not scored).
    Adam with ``learning_rate``, warmed up over the first 10% of the
    ``steps`` and decayed to a tenth (cosine), gradients clipped at norm 1.
    The model is left in eval mode. ``threads``: PyTorch threads while
    training (one by default: for models this small, more threads only wait
    for each other, badly so on a busy machine); ``None`` leaves the setting.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {check.describe(model)}")
    if not callable(batches):
        raise TypeError(f"batches must be a function step -> (tokens, targets), got {check.describe(batches)}")
    steps = check.as_int("steps", steps, 1)
    learning_rate = check.as_real("learning_rate", learning_rate, 0.0, low_open=True)
    seed = check.as_int("seed", seed, 0, 2**32 - 1)
    seed_everything(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, foreach=True)
    warmup = max(1, steps // 10)

    def rate(step):
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    losses = []
    model.train()
    with torch_threads(threads), flush_denormals():
        for step in range(steps):
            losses.append(_train_step(model, optimizer, schedule, *batches(step)))
    model.eval()
    return losses


def _train_step(model, optimizer, schedule, tokens, targets) -> float:
    logits = model(tokens)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    return loss.item()


def train_lag_model(positional: str, seed: int = 0, *, steps: int = 100, batch: int = 32,
                    min_len: int = 8, max_len: int = 32, vocab: int = 16, lag: int = 1,
                    d_model: int = 32, n_heads: int = 4, n_layers: int = 2, table_len: int = 512,
                    learning_rate: float = 2e-2, mlp: bool = False) -> tuple[TinyAttentionModel, list[float]]:
    """Train a :class:`TinyAttentionModel` on :func:`lag_task`, lengths drawn from ``min_len .. max_len``.

    A fresh batch every step (the data never repeat), trained with
    :func:`train_tiny_model`. Returns the model (in eval mode) and the loss
    of every step.
    """
    if positional not in POSITIONAL:
        raise ValueError(f"positional must be one of {', '.join(map(repr, POSITIONAL))}, got {positional!r}")
    seed = check.as_int("seed", seed, 0, 2**32 - 1)
    steps = check.as_int("steps", steps, 1)
    batch = check.as_int("batch", batch, 1)
    lag = check.as_int("lag", lag, 1)
    min_len = check.as_int("min_len", min_len, lag + 1)
    max_len = check.as_int("max_len", max_len, min_len)
    seed_everything(seed)
    model = TinyAttentionModel(vocab, d_model, n_heads, n_layers, positional=positional, max_len=table_len, mlp=mlp)
    lengths = torch.randint(min_len, max_len + 1, (steps,), generator=torch.Generator().manual_seed(seed))

    def batches(step):
        return lag_task(batch, int(lengths[step]), vocab, lag, seed=seed * 1_000_003 + step)

    losses = train_tiny_model(model, batches, steps, learning_rate, seed)
    return model, losses


#: The characters of the addition problems "07+35=042", in the order of their token numbers.
ADDITION_VOCAB = "0123456789+="


def addition_task(n: int, seed: int = 0, digits: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fixed-width additions (``rl2llm.corpora.arithmetic_problems``) as next-token examples.

    A problem ``"07+35=042"`` becomes the tokens of ``"07+35=04"`` and the
    targets of ``"7+35=042"`` (each position predicts the next character),
    with every target before the answer set to ``-100`` (not scored): the
    model is judged on the answer's digits only. Token numbers are positions
    in :data:`ADDITION_VOCAB`.
    """
    from .corpora import arithmetic_problems   # only this experiment needs the corpora

    n = check.as_int("n", n, 1)
    problems = arithmetic_problems(n, seed=seed, digits=digits)
    rows = torch.tensor([[ADDITION_VOCAB.index(c) for c in p.prompt + p.reference] for p in problems])
    tokens, targets = rows[:, :-1], rows[:, 1:].clone()
    answer_starts = len(problems[0].prompt) - 1
    targets[:, :answer_starts] = -100
    return tokens, targets


@torch.no_grad()
def lag_accuracy(model: TinyAttentionModel, length: int, n: int = 256, lag: int = 1, seed: int = 12345):
    """Accuracy of ``model`` at each position of ``n`` fresh sequences of ``length`` tokens: ``(length,)``,
    NaN for the first ``lag`` positions (no answer there)."""
    if not isinstance(model, TinyAttentionModel):
        raise TypeError(f"model must be a TinyAttentionModel, got {check.describe(model)}")
    vocab = model.readout.out_features
    tokens, targets = lag_task(n, length, vocab, lag, seed=seed)
    with torch_threads(1):
        predictions = model(tokens).argmax(dim=-1)
    correct = (predictions == targets).float().mean(dim=0)
    correct[:lag] = float("nan")
    return correct
