"""Tests of rl2llm.attention (Lecture 9): attention against PyTorch's, masks, GQA, positions, KV cache."""

import math

import pytest
import torch
import torch.nn.functional as F

from rl2llm.attention import (
    ADDITION_VOCAB, KVCache, MultiHeadAttention, TinyAttentionModel, addition_task, alibi_bias, alibi_slopes,
    apply_rope, causal_mask, kv_cache_bytes, lag_accuracy, lag_task, padding_mask, scaled_dot_product_attention,
    sinusoidal_positions, train_lag_model, train_tiny_model,
)


def qkv(batch=(2,), heads=4, kv_heads=None, Tq=7, Tk=None, d=16, dv=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    kv_heads = heads if kv_heads is None else kv_heads
    Tk = Tq if Tk is None else Tk
    dv = d if dv is None else dv
    q = torch.randn(*batch, heads, Tq, d, generator=g, dtype=dtype)
    k = torch.randn(*batch, kv_heads, Tk, d, generator=g, dtype=dtype)
    v = torch.randn(*batch, kv_heads, Tk, dv, generator=g, dtype=dtype)
    return q, k, v


# --------------------------------------------------------------------------- ours equals PyTorch's


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (8, 2), (6, 1)])
def test_ours_equals_pytorch_with_and_without_the_causal_mask_and_with_gqa(causal, heads, kv_heads):
    q, k, v = qkv(heads=heads, kv_heads=kv_heads, Tq=9, d=16)
    ours = scaled_dot_product_attention(q, k, v, causal=causal)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=kv_heads != heads)
    assert ours.shape == theirs.shape == (2, heads, 9, 16)
    assert (ours - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["bool", "float", "padding"])
def test_ours_equals_pytorch_with_masks(kind):
    q, k, v = qkv(batch=(3,), heads=4, kv_heads=2, Tq=6, Tk=8, d=8, dv=5)
    g = torch.Generator().manual_seed(1)
    if kind == "bool":
        mask = torch.rand(6, 8, generator=g) > 0.3
        mask[:, 0] = True   # every query sees something (PyTorch's kernels agree on empty rows too, tested below)
    elif kind == "float":
        mask = torch.randn(3, 4, 6, 8, generator=g)
    else:
        mask = padding_mask([8, 5, 2], 8)
    ours = scaled_dot_product_attention(q, k, v, mask=mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert (ours - theirs).abs().max() <= 1e-5


def test_a_custom_scale_and_float64_agree_with_pytorch_tightly():
    q, k, v = qkv(dtype=torch.float64, d=32)
    ours = scaled_dot_product_attention(q, k, v, causal=True, scale=0.5)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5)
    assert (ours - theirs).abs().max() <= 1e-12


def test_gqa_equals_ordinary_attention_on_repeated_keys_and_values():
    q, k, v = qkv(heads=8, kv_heads=2)
    grouped = scaled_dot_product_attention(q, k, v, causal=True)
    repeated = scaled_dot_product_attention(q, k.repeat_interleave(4, dim=-3), v.repeat_interleave(4, dim=-3),
                                            causal=True)
    assert torch.allclose(grouped, repeated, atol=1e-6)


def test_the_weights_are_the_softmax_of_the_scaled_scores_and_rows_sum_to_one():
    q, k, v = qkv(d=16)
    out, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    expected = torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1)
    assert torch.allclose(weights, expected, atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 7))
    assert torch.allclose(out, weights @ v, atol=1e-6)


def test_causal_attention_never_looks_ahead():
    q, k, v = qkv(Tq=6)
    out, weights = scaled_dot_product_attention(q, k, v, causal=True, return_weights=True)
    assert (weights.triu(diagonal=1) == 0).all()
    k2, v2 = k.clone(), v.clone()
    k2[..., 4:, :] += 10.0
    v2[..., 4:, :] -= 3.0   # change the future: the first four outputs stay the same
    out2 = scaled_dot_product_attention(q, k2, v2, causal=True)
    assert torch.allclose(out[..., :4, :], out2[..., :4, :])


# --------------------------------------------------------------------------- masks


def test_causal_mask_is_the_lower_triangle_and_aligns_short_query_blocks_to_the_last_keys():
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())
    assert torch.equal(causal_mask(1, 5), torch.ones(1, 5, dtype=torch.bool))
    assert torch.equal(causal_mask(2, 4), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))


def test_with_fewer_queries_than_keys_ours_matches_pytorch_given_the_bottom_right_mask_not_is_causal():
    q, k, v = qkv(Tq=1, Tk=6)
    ours = scaled_dot_product_attention(q, k, v, causal=True)
    explicit = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(1, 6))
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # sees only the first key
    assert (ours - explicit).abs().max() <= 1e-5
    assert torch.allclose(top_left, v[..., :1, :], atol=1e-6)
    assert not torch.allclose(ours, top_left, atol=1e-3)


def test_a_query_with_nothing_to_attend_to_gets_zeros_not_nan_and_finite_gradients():
    q, k, v = qkv(Tq=4, Tk=4)
    q.requires_grad_(True)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert torch.isfinite(out).all() and (out[..., 2, :] == 0).all() and (weights[..., 2, :] == 0).all()
    theirs = F.scaled_dot_product_attention(q.detach(), k, v, attn_mask=mask)
    assert (out.detach() - theirs).abs().max() <= 1e-5
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    # a float mask of -inf behaves the same
    float_mask = torch.zeros(4, 4).masked_fill(~mask, float("-inf"))
    assert torch.allclose(scaled_dot_product_attention(q.detach(), k, v, mask=float_mask), out.detach())


def test_padding_keys_do_not_change_the_outputs_of_real_tokens():
    q, k, v = qkv(batch=(2,), Tq=5)
    mask = padding_mask([5, 3], 5)
    assert mask.shape == (2, 1, 1, 5)
    out = scaled_dot_product_attention(q, k, v, mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 3:] = 99.0
    v2[1, :, 3:] = -7.0
    out2 = scaled_dot_product_attention(q, k2, v2, mask=mask)
    assert torch.allclose(out, out2)
    alone = scaled_dot_product_attention(q[1:, :, :], k[1:, :, :3], v[1:, :, :3])
    assert torch.allclose(out[1:], alone, atol=1e-6)


# --------------------------------------------------------------------------- positions


def test_rope_dot_products_depend_only_on_the_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)
    for m, n in [(0, 0), (3, 1), (1, 3), (17, 5)]:
        reference = apply_rope(q[None], torch.tensor([m])) @ apply_rope(k[None], torch.tensor([n])).T
        for shift in (1, 7, 100, 2000):
            shifted = apply_rope(q[None], torch.tensor([m + shift])) @ apply_rope(k[None], torch.tensor([n + shift])).T
            assert torch.allclose(shifted, reference, atol=1e-10), (m, n, shift)


def test_rope_relative_property_holds_in_float32_to_1e5_for_a_batch_of_heads():
    q, k, _ = qkv(heads=2, Tq=8, d=32)
    positions = torch.arange(8)
    base = apply_rope(q, positions) @ apply_rope(k, positions).transpose(-2, -1)
    shifted = apply_rope(q, positions + 50) @ apply_rope(k, positions + 50).transpose(-2, -1)
    assert (base - shifted).abs().max() <= 1e-4 * base.abs().max()


def test_rope_is_a_rotation_identity_at_position_zero_and_the_frequencies_are_the_papers():
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    rotated = apply_rope(x, torch.arange(5))
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1))
    assert torch.allclose(rotated[:, 0], x[:, 0])
    e = torch.zeros(1, 8, dtype=torch.float64)
    e[0, 1] = 1.0   # the second pair (dims 1 and 5) turns at 10000^(-2/8) radians per position
    angle = 3 * 10000 ** (-2 / 8)
    turned = apply_rope(e, torch.tensor([3]))
    assert torch.allclose(turned[0, [1, 5]], torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64))


def test_rope_takes_per_sequence_positions():
    x = torch.randn(2, 3, 4, 8)   # (B, H, T, d)
    positions = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])[:, None, :]
    both = apply_rope(x, positions)
    assert torch.allclose(both[1], apply_rope(x[1], torch.arange(5, 9)), atol=1e-6)


def test_sinusoidal_positions_match_the_formula_and_shift_by_a_fixed_rotation():
    table = sinusoidal_positions(50, 16).double()
    assert table.shape == (50, 16)
    assert torch.allclose(table[0, 0::2], torch.zeros(8, dtype=torch.float64))
    assert torch.allclose(table[0, 1::2], torch.ones(8, dtype=torch.float64))
    assert math.isclose(table[7, 2], math.sin(7 / 10000 ** (2 / 16)), abs_tol=1e-6)
    # position p + k is a fixed linear map of position p (the same for every p)
    k = 5
    M = torch.linalg.lstsq(table[:40], table[k:40 + k]).solution
    assert torch.allclose(table[10:45] @ M, table[10 + k:45 + k], atol=1e-4)


def test_alibi_slopes_follow_the_papers_geometric_sequence():
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    assert torch.allclose(alibi_slopes(4), torch.tensor([2.0 ** -(2 * (i + 1)) for i in range(4)]))
    # not a power of two: the 4 slopes of 4 heads, then slopes 1 and 3 of the 8-head sequence
    expected6 = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
    assert torch.allclose(alibi_slopes(6), torch.tensor(expected6))


def test_alibi_bias_is_minus_slope_times_distance():
    bias = alibi_bias(2, 4)
    assert bias.shape == (2, 4, 4)
    assert torch.allclose(bias[0, 3], -0.0625 * torch.tensor([3.0, 2.0, 1.0, 0.0]))
    last = alibi_bias(2, 1, n_keys=4)   # one new query after three cached keys
    assert torch.allclose(last, bias[:, 3:])


def test_kv_cache_bytes_is_the_formula_and_what_a_cache_allocates():
    assert kv_cache_bytes(1, 1, 1, 1) == 4
    assert kv_cache_bytes(32, 8, 128, 4096) == 2 * 32 * 8 * 128 * 4096 * 2
    cache = KVCache(batch=3, n_kv_heads=2, head_dim=16, max_len=40)
    assert cache.nbytes() == kv_cache_bytes(1, 2, 16, 40, batch=3, bytes_per_value=4)
    half = KVCache(3, 2, 16, 40, dtype=torch.float16)
    assert half.nbytes() == kv_cache_bytes(1, 2, 16, 40, batch=3)


# --------------------------------------------------------------------------- multi-head attention


@pytest.mark.parametrize("kv_heads, expected_kv_params", [(None, 2 * (32 * 32 + 32)), (2, 2 * (32 * 16 + 16)),
                                                          (1, 2 * (32 * 8 + 8))])
def test_mha_shapes_and_parameters_shrink_with_fewer_kv_heads(kv_heads, expected_kv_params):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, kv_heads)
    x = torch.randn(2, 5, 32)
    assert mha(x).shape == (2, 5, 32)
    kv = sum(p.numel() for name, p in mha.named_parameters() if name.startswith(("k_proj", "v_proj")))
    assert kv == expected_kv_params


@pytest.mark.parametrize("positional", ["none", "rope", "alibi"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_mha_fused_and_from_scratch_paths_agree(positional, kv_heads):
    torch.manual_seed(1)
    mha = MultiHeadAttention(32, 4, kv_heads, positional=positional)
    x = torch.randn(2, 6, 32)
    fused = mha(x)
    ours, weights = mha(x, return_weights=True)
    assert (fused - ours).abs().max() <= 1e-5
    assert weights.shape == (2, 4, 6, 6) and (weights.triu(1) == 0).all()
    mha.fused = False
    assert (mha(x) - fused).abs().max() <= 1e-5


@pytest.mark.parametrize("positional", ["none", "rope", "alibi"])
def test_decoding_with_a_kv_cache_equals_the_full_forward_pass(positional):
    torch.manual_seed(2)
    mha = MultiHeadAttention(32, 4, 2, positional=positional)
    x = torch.randn(2, 7, 32)
    full = mha(x)
    cache = mha.new_cache(batch=2, max_len=7)
    prefix = mha(x[:, :3], cache=cache)
    steps = [mha(x[:, t:t + 1], cache=cache) for t in range(3, 7)]
    assert cache.length == 7
    assert (torch.cat([prefix, *steps], dim=1) - full).abs().max() <= 1e-5


def test_mha_is_causal_and_masks_padding():
    torch.manual_seed(3)
    mha = MultiHeadAttention(16, 2)
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] += 5.0
    assert torch.allclose(mha(x)[:, :4], mha(y)[:, :4], atol=1e-6)
    mask = padding_mask([3], 6)
    assert torch.allclose(mha(x, mask=mask, causal=False)[:, :3], mha(y, mask=mask, causal=False)[:, :3], atol=1e-6)


def test_rope_in_mha_makes_attention_shift_invariant_and_alibi_too():
    for positional in ("rope", "alibi"):
        torch.manual_seed(4)
        mha = MultiHeadAttention(16, 2, positional=positional)
        x = torch.randn(1, 5, 16)
        a = mha(x, positions=torch.arange(5))
        b = mha(x, positions=torch.arange(100, 105))
        assert torch.allclose(a, b, atol=1e-4), positional


# --------------------------------------------------------------------------- the experiments


def test_lag_task_targets_are_the_tokens_lag_places_back():
    tokens, targets = lag_task(5, 10, vocab=7, lag=3, seed=1)
    assert tokens.shape == targets.shape == (5, 10)
    assert (targets[:, :3] == -100).all() and torch.equal(targets[:, 3:], tokens[:, :7])
    assert tokens.max() < 7
    assert torch.equal(lag_task(5, 10, vocab=7, lag=3, seed=1)[0], tokens)


def test_addition_task_scores_only_the_answer_digits():
    tokens, targets = addition_task(4, seed=0)
    assert tokens.shape == targets.shape == (4, 8)
    text = "".join(ADDITION_VOCAB[i] for i in tokens[0]) + ADDITION_VOCAB[targets[0, -1]]
    a, b = int(text[:2]), int(text[3:5])
    assert text[2] == "+" and text[5] == "=" and int(text[6:]) == a + b
    assert (targets[:, :5] == -100).all() and (targets[:, 5:] >= 0).all()


@pytest.mark.parametrize("positional", ["none", "sinusoidal", "learned", "rope", "alibi"])
def test_tiny_models_run_and_return_their_attention_maps(positional):
    torch.manual_seed(0)
    model = TinyAttentionModel(10, 16, 2, 2, positional=positional, max_len=12)
    tokens = torch.randint(10, (3, 9))
    logits, maps = model(tokens, return_weights=True)
    assert logits.shape == (3, 9, 10) and len(maps) == 2 and maps[0].shape == (3, 2, 9, 9)
    assert torch.allclose(model(tokens), logits, atol=1e-5)


def test_a_lag_model_learns_in_a_few_steps_and_training_is_deterministic():
    model, losses = train_lag_model("alibi", 0, steps=40)
    again, losses_again = train_lag_model("alibi", 0, steps=40)
    assert losses == losses_again
    assert losses[-1] < 0.7 * losses[0]
    accuracy = lag_accuracy(model, 20, n=64)
    assert torch.isnan(accuracy[:1]).all() and accuracy[1:].mean() > 1 / 16


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, error, fragment", [
    (lambda q, k, v: scaled_dot_product_attention(q.numpy(), k, v), TypeError, "q must be a torch.Tensor"),
    (lambda q, k, v: scaled_dot_product_attention(q[0, 0], k, v), ValueError, "q must have at least 3"),
    (lambda q, k, v: scaled_dot_product_attention(q.long(), k, v), TypeError, "q must hold floating"),
    (lambda q, k, v: scaled_dot_product_attention(q, k.double(), v), TypeError, "one dtype"),
    (lambda q, k, v: scaled_dot_product_attention(q, k[..., :3], v), ValueError, "k must have the query size"),
    (lambda q, k, v: scaled_dot_product_attention(q, k, v[..., :3, :]), ValueError, "v must have k's heads"),
    (lambda q, k, v: scaled_dot_product_attention(q, k[:, :3], v[:, :3]), ValueError, "divides q's"),
    (lambda q, k, v: scaled_dot_product_attention(q, k[:1], v[:1]), ValueError, "leading (batch)"),
    (lambda q, k, v: scaled_dot_product_attention(q, k, v, scale=0.0), ValueError, "scale"),
    (lambda q, k, v: scaled_dot_product_attention(q, k, v, causal=1), TypeError, "causal"),
    (lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=torch.ones(3, 3, dtype=torch.bool)),
     ValueError, "mask must broadcast"),
    (lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=torch.ones(7, 7, dtype=torch.long)),
     TypeError, "mask must be booleans"),
    (lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=torch.full((7, 7), float("nan"))),
     ValueError, "NaN"),
    (lambda q, k, v: scaled_dot_product_attention(q * float("nan"), k, v), ValueError, "q must be finite"),
])
def test_attention_names_its_bad_argument(call, error, fragment):
    q, k, v = qkv()
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        call(q, k, v)


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: apply_rope(torch.randn(4, 5), torch.arange(4)), ValueError, "even last dimension"),
    (lambda: apply_rope(torch.randn(4, 6), torch.arange(3)), ValueError, "positions must have 4"),
    (lambda: apply_rope(torch.randn(4, 6), torch.arange(-1, 3)), ValueError, "positions must be >= 0"),
    (lambda: apply_rope(torch.randn(4, 6), torch.tensor([0.5, 1, 2, 3])), ValueError, "whole numbers"),
    (lambda: apply_rope(torch.randn(4, 6), "0123"), TypeError, "positions must be a tensor"),
    (lambda: apply_rope(torch.randn(4, 6), torch.arange(4), base=1.0), ValueError, "base"),
    (lambda: sinusoidal_positions(10, 5), ValueError, "d must be even"),
    (lambda: sinusoidal_positions(0, 4), ValueError, "T must be"),
    (lambda: alibi_slopes(0), ValueError, "n_heads"),
    (lambda: alibi_bias(2, 3.0), TypeError, "T must be an integer"),
    (lambda: kv_cache_bytes(2, 0, 64, 128), ValueError, "n_kv_heads"),
    (lambda: kv_cache_bytes(2, 2, 64, 128, bytes_per_value=2.0), TypeError, "bytes_per_value"),
    (lambda: causal_mask(0), ValueError, "n_queries"),
    (lambda: padding_mask([3, 9], 5), ValueError, "lengths"),
    (lambda: padding_mask([], 5), ValueError, "lengths"),
    (lambda: MultiHeadAttention(30, 4), ValueError, "d_model must be a multiple of n_heads"),
    (lambda: MultiHeadAttention(32, 4, 3), ValueError, "n_kv_heads must divide n_heads"),
    (lambda: MultiHeadAttention(32, 4, positional="sinusoidal"), ValueError, "positional"),
    (lambda: MultiHeadAttention(12, 4, positional="rope"), ValueError, "even head_dim"),
    (lambda: MultiHeadAttention(32, 4)(torch.randn(2, 5, 16)), ValueError, "x must have shape"),
    (lambda: MultiHeadAttention(32, 4)(torch.randn(2, 5, 32), cache="yes"), TypeError, "cache must be"),
    (lambda: MultiHeadAttention(32, 4)(torch.randn(2, 5, 32), positions=torch.arange(4)), ValueError,
     "positions must have 5"),
    (lambda: KVCache(1, 1, 4, 2).append(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4)), ValueError,
     "at most max_len"),
    (lambda: KVCache(1, 1, 4, 2, dtype=torch.int64), TypeError, "dtype"),
    (lambda: lag_task(2, 3, lag=3), ValueError, "lag must be smaller"),
    (lambda: lag_task(2, 3, vocab=1), ValueError, "vocab"),
    (lambda: addition_task(0), ValueError, "n must be"),
    (lambda: TinyAttentionModel(10, positional="absolute"), ValueError, "positional must be one of"),
    (lambda: TinyAttentionModel(10, 16, 2, 1, positional="learned", max_len=4)(torch.zeros(1, 5, dtype=torch.long)),
     ValueError, "max_len = 4"),
    (lambda: TinyAttentionModel(10, 16, 2, 1)(torch.zeros(1, 5)), TypeError, "tokens must be an integer"),
    (lambda: train_lag_model("rope", steps=0), ValueError, "steps"),
    (lambda: train_lag_model("rope", min_len=1), ValueError, "min_len"),
    (lambda: train_tiny_model("model", lambda s: None, 3), TypeError, "model must be"),
    (lambda: train_tiny_model(torch.nn.Linear(2, 2), None, 3), TypeError, "batches must be"),
    (lambda: lag_accuracy("model", 10), TypeError, "model must be a TinyAttentionModel"),
])
def test_positions_caches_and_models_name_their_bad_argument(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# --------------------------------------------------------------------------- memory accounting


def test_peak_tensor_bytes_sees_the_two_score_matrices_of_naive_attention_and_none_in_the_fused_kernel():
    from rl2llm.attention import peak_tensor_bytes

    H, T, d = 2, 256, 16
    q, k, v = qkv(batch=(1,), heads=H, Tq=T, d=d)
    scores = H * T * T * 4
    naive = peak_tensor_bytes(lambda: scaled_dot_product_attention(q, k, v))
    fused = peak_tensor_bytes(lambda: F.scaled_dot_product_attention(q, k, v))
    out = H * T * d * 4
    assert 2 * scores <= naive <= 2 * scores + 4 * out
    assert out <= fused < scores / 4
    assert peak_tensor_bytes(lambda: q.transpose(-2, -1)) == 0          # a view
    assert peak_tensor_bytes(lambda: torch.zeros(10, dtype=torch.float64)) == 80
    with pytest.raises(TypeError, match="fn must be a function"):
        peak_tensor_bytes(3)


# --------------------------------------------------------------------------- the exercise's checker


def _reader_attention(q, k, v, causal):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        Tq, Tk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool).triu(Tk - Tq + 1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def test_the_attention_checker_passes_a_right_solution_and_ours():
    from rl2llm.exercises import check_attention

    assert check_attention(_reader_attention).passed
    assert check_attention(lambda q, k, v, causal: scaled_dot_product_attention(q, k, v, causal=causal)).passed


@pytest.mark.parametrize("variant, fragment", [
    ("no_scale", "not divided by sqrt(d)"),
    ("by_d", "you divided the scores by d"),
    ("query_axis", "runs over the queries"),
    ("no_mask", "must not see the keys after"),
    ("zero_fill", "set to 0"),
    ("inverted", "hides the past and shows the future"),
    ("strict", "also hides each query's own key"),
    ("top_left", "aligned to the first keys"),
])
def test_the_attention_checker_names_the_classic_mistakes(variant, fragment):
    from rl2llm.exercises import _attention_reference, check_attention

    result = check_attention(lambda q, k, v, causal: _attention_reference(q, k, v, causal, variant))
    assert not result.passed
    assert any(fragment in case.hint for case in result.failures), result.report()


def test_the_attention_checker_describes_malformed_answers_and_exceptions():
    from rl2llm.exercises import check_attention

    def overflowing(q, k, v, causal):   # a softmax without the maximum subtracted
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if causal:
            Tq, Tk = scores.shape[-2:]
            scores = scores.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool).triu(Tk - Tq + 1), float("-inf"))
        e = scores.exp()
        return (e / e.sum(-1, keepdim=True)) @ v

    report = check_attention(overflowing).report()
    assert "6 of 7 cases pass" in report and "subtracted" in report
    weights_only = check_attention(lambda q, k, v, c: torch.softmax(q @ k.transpose(-2, -1), -1)).report()
    assert "multiply them by v" in weights_only
    assert "forget the return" in check_attention(lambda q, k, v, c: None).report()
    assert "raised ZeroDivisionError" in check_attention(lambda q, k, v, c: 1 / 0).report()
    assert "tuple" in check_attention(lambda q, k, v, c: (_reader_attention(q, k, v, c), None)).report()
    with pytest.raises(TypeError, match="fn must be your function"):
        check_attention("attention")
    with pytest.raises(TypeError, match="fn must take 4 arguments"):
        check_attention(lambda q, k, v: q)
