"""The small GPT (Lecture 10): the same logits as transformers' GPT-2 and Llama, the parameter formula,
causality, rotary positions, generation, training, and bad input named."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from rl2llm.transformer import (
    GPT, LLAMA, GPTConfig, RMSNorm, apply_rope, decode, encode, from_gpt2, get_batch, n_parameters, rope_tables,
    to_gpt2, to_llama, train_gpt,
)

TINY = dict(vocab_size=61, block_size=24, n_layer=3, n_head=4, n_embd=32)


@pytest.fixture(autouse=True)
def one_thread():
    """Models this small run fastest on one thread (and two threads on a busy machine are many times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0, scale: float = 0.3, **options) -> GPT:
    """A GPT whose weights are drawn large enough that the logits are far from uniform
    (a fresh GPT-2 initialisation makes every logit nearly 0, which would compare too easily)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **options})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, scale)
    return model


def _ids(seed: int = 1, batch: int = 3, T: int | None = None, vocab: int = TINY["vocab_size"]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, T or TINY["block_size"]), generator=g)


# --------------------------------------------------------------------------- the production implementations


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("tie", [True, False])
def test_our_weights_in_gpt2lmheadmodel_give_the_same_logits(attention, tie):
    model = _model(tie_weights=tie)
    hf = to_gpt2(model)
    hf.config._attn_implementation = attention   # eager: transformers' own softmax(q k^T / sqrt(d)) v
    idx = _ids()
    with torch.no_grad():
        ours, theirs = model(idx)[0], hf(idx).logits
    assert ours.abs().max() > 1.0, "the logits must be far from uniform for the comparison to mean something"
    assert (ours - theirs).abs().max() <= 1e-4


def test_the_loss_is_gpt2s_loss_with_the_targets_shifted_by_one():
    model, idx = _model(), _ids()
    hf = to_gpt2(model)
    with torch.no_grad():
        _, ours = model(idx[:, :-1], idx[:, 1:])
        theirs = hf(idx[:, :-1], labels=idx[:, :-1]).loss   # transformers shifts the labels itself
        # ... on T - 1 positions: the last one has no label inside the window
        full = F.cross_entropy(model(idx[:, :-1])[0][:, :-1].reshape(-1, TINY["vocab_size"]),
                               idx[:, 1:-1].reshape(-1))
    assert theirs.item() == pytest.approx(full.item(), abs=1e-5)
    assert ours.item() == pytest.approx(F.cross_entropy(model(idx[:, :-1])[0].reshape(-1, 61),
                                                        idx[:, 1:].reshape(-1)).item(), abs=1e-6)


def test_the_gpt2_parameters_and_counts_agree_and_the_conversion_goes_both_ways():
    model = _model()
    hf = to_gpt2(model)
    assert hf.num_parameters() == n_parameters(model.config) == sum(p.numel() for p in model.parameters())
    back = from_gpt2(hf)
    assert back.config == model.config
    idx = _ids()
    with torch.no_grad():
        assert torch.equal(back(idx)[0], model(idx)[0])


def test_our_weights_in_llamaforcausallm_give_the_same_logits():
    model = _model(**LLAMA)
    hf = to_llama(model)
    idx = _ids()
    with torch.no_grad():
        ours, theirs = model(idx)[0], hf(idx).logits
    assert ours.abs().max() > 1.0
    assert (ours - theirs).abs().max() <= 1e-4
    assert hf.num_parameters() == n_parameters(model.config)


@pytest.mark.parametrize("option, value", [("norm", "rms"), ("norm_placement", "post"), ("mlp", "swiglu"),
                                           ("position", "rope"), ("bias", False)])
def test_to_gpt2_refuses_a_block_gpt2_does_not_have_and_names_the_switch(option, value):
    with pytest.raises(ValueError, match=f"GPT2LMHeadModel needs {option} = "):
        to_gpt2(GPT(GPTConfig(**{**TINY, option: value})))


@pytest.mark.parametrize("option, value", [("norm", "layer"), ("norm_placement", "post"), ("mlp", "gelu"),
                                           ("position", "learned"), ("bias", True)])
def test_to_llama_refuses_a_block_llama_does_not_have_and_names_the_switch(option, value):
    with pytest.raises(ValueError, match=f"LlamaForCausalLM needs {option} = "):
        to_llama(GPT(GPTConfig(**{**TINY, **LLAMA, option: value})))


def test_the_converters_refuse_what_is_not_a_model():
    for convert in (to_gpt2, to_llama):
        with pytest.raises(TypeError, match="model must be a GPT"):
            convert("gpt2")
    with pytest.raises(TypeError, match="hf_model must be a transformers GPT2LMHeadModel"):
        from_gpt2(_model())


def test_exact_gelu_in_gpt2_changes_the_logits_by_more_than_the_tolerance():
    """The gotcha of the chapter: GPT-2's GELU is the tanh approximation; the exact one is another model."""
    model = _model()
    hf = to_gpt2(model)
    hf.config.activation_function = "gelu"
    for block in hf.transformer.h:
        block.mlp.act = torch.nn.GELU()
    with torch.no_grad():
        assert (model(_ids())[0] - hf(_ids()).logits).abs().max() > 1e-4


# --------------------------------------------------------------------------- parameter counts


def test_the_formula_counts_gpt2_small_124m_parameters():
    from transformers import GPT2Config, GPT2LMHeadModel

    small = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    assert n_parameters(small) == 124_439_808
    with torch.device("meta"):   # shapes without memory
        assert GPT2LMHeadModel(GPT2Config()).num_parameters() == n_parameters(small)
        assert sum(p.numel() for p in GPT(small).parameters()) == n_parameters(small)


@pytest.mark.parametrize("norm, placement, mlp, position, bias, tie",
                         list(itertools.product(("layer", "rms"), ("pre", "post"), ("gelu", "swiglu"),
                                                ("learned", "rope"), (True, False), (True, False))))
def test_the_formula_counts_every_parameter_of_every_variant(norm, placement, mlp, position, bias, tie):
    config = GPTConfig(**TINY, norm=norm, norm_placement=placement, mlp=mlp, position=position, bias=bias,
                       tie_weights=tie)
    assert n_parameters(config) == sum(p.numel() for p in GPT(config).parameters())


def test_the_blocks_of_gpt2s_shape_hold_about_twelve_d_squared_per_layer():
    c = GPTConfig(vocab_size=256, block_size=256, n_layer=8, n_head=8, n_embd=512)
    blocks = n_parameters(c) - c.vocab_size * c.n_embd - c.block_size * c.n_embd
    assert blocks == pytest.approx(12 * c.n_layer * c.n_embd**2, rel=0.01)


def test_swiglus_default_width_keeps_the_feed_forward_layer_about_the_same_size():
    for d in (32, 64, 96, 128, 768):
        gelu, swiglu = GPTConfig(n_embd=d, n_head=4), GPTConfig(n_embd=d, n_head=4, mlp="swiglu")
        assert gelu.mlp_hidden == 4 * d and swiglu.mlp_hidden % 8 == 0
        assert 3 * swiglu.mlp_hidden == pytest.approx(2 * gelu.mlp_hidden, rel=0.05)


# --------------------------------------------------------------------------- the pieces


@pytest.mark.parametrize("options", [{}, LLAMA, {"norm_placement": "post"}])
def test_no_position_sees_the_future(options):
    model = _model(**options)
    idx = _ids()
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 7) % TINY["vocab_size"]
    with torch.no_grad():
        a, b = model(idx)[0], model(changed)[0]
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-3)


def test_rmsnorm_is_the_formula_and_pytorchs_rms_norm():
    x = torch.randn(5, 7, 16)
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5) * norm.weight
        assert torch.allclose(norm(x), expected, atol=1e-6)
        assert torch.allclose(norm(x), F.rms_norm(x, (16,), norm.weight, eps=1e-5), atol=1e-6)


def test_rotary_embeddings_make_attention_scores_depend_on_the_offset_only():
    cos, sin = rope_tables(8, 40)
    q, k = torch.randn(8), torch.randn(8)

    def score(i, j):
        return (apply_rope(q, cos[i], sin[i]) @ apply_rope(k, cos[j], sin[j])).item()

    assert score(3, 1) == pytest.approx(score(30, 28), abs=1e-4)
    assert score(0, 0) == pytest.approx((q @ k).item(), abs=1e-5)   # position 0 is not rotated
    assert score(5, 1) != pytest.approx(score(5, 2), abs=1e-3)
    rotated = apply_rope(q, cos[17], sin[17])
    assert rotated.norm() == pytest.approx(q.norm().item(), rel=1e-5)   # a rotation keeps lengths


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(head_dim=7, n_positions=4), ValueError, "head_dim must be even"),
    (dict(head_dim=8, n_positions=0), ValueError, "n_positions must be a positive integer"),
    (dict(head_dim=8, n_positions=4, theta=-1.0), ValueError, "theta must be"),
    (dict(head_dim=8.0, n_positions=4), TypeError, "head_dim must be an integer"),
])
def test_rope_tables_names_the_bad_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        rope_tables(**kwargs)


def test_dropout_acts_only_while_training():
    model = _model(dropout=0.2)
    idx = _ids()
    with torch.no_grad():
        assert torch.equal(model.eval()(idx)[0], model(idx)[0])
        model.train()
        assert not torch.equal(model(idx)[0], model(idx)[0])


def test_post_norm_has_no_final_norm_and_pre_norm_has_one():
    assert isinstance(GPT(GPTConfig(**TINY, norm_placement="post")).norm, torch.nn.Identity)
    assert isinstance(GPT(GPTConfig(**TINY)).norm, torch.nn.LayerNorm)
    assert isinstance(GPT(GPTConfig(**TINY, norm="rms")).norm, RMSNorm)


def test_gpt2s_initialisation_shrinks_the_layers_that_write_into_the_stream():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=8, n_head=4, n_embd=128))
    out = torch.cat([b.attn.out.weight.ravel() for b in model.blocks])
    qkv = torch.cat([b.attn.qkv.weight.ravel() for b in model.blocks])
    assert out.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert qkv.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.head.weight is model.tok_emb.weight


# --------------------------------------------------------------------------- generation


def test_generate_appends_tokens_and_zero_temperature_is_greedy():
    model = _model()
    start = _ids(T=5, batch=2)
    out = model.generate(start, 30, temperature=0.0)
    assert out.shape == (2, 35) and torch.equal(out[:, :5], start)
    # greedy, one step at a time, from the last block_size tokens
    idx = start
    for _ in range(30):
        with torch.no_grad():
            logits = model(idx[:, -TINY["block_size"]:])[0]
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, idx)
    assert torch.equal(model.generate(start, 30, top_k=1), out)   # top-1 sampling is greedy too


def test_generate_is_reproducible_with_a_generator_and_restores_training_mode():
    model = _model(dropout=0.1).train()
    start = _ids(T=3, batch=4)
    a = model.generate(start, 20, generator=torch.Generator().manual_seed(5))
    b = model.generate(start, 20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and model.training
    assert torch.equal(model.generate(start, 0), start)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=2, temperature=-0.5), ValueError, "temperature"),
    (dict(max_new_tokens=2, top_k=0), ValueError, "top_k"),
    (dict(max_new_tokens=2, top_k=1000), ValueError, "top_k"),
    (dict(max_new_tokens=2.0), TypeError, "max_new_tokens"),
])
def test_generate_names_the_bad_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        _model().generate(_ids(T=3), **kwargs)


# --------------------------------------------------------------------------- bad input to the model


@pytest.mark.parametrize("idx, error, match", [
    (torch.zeros(2, 5), TypeError, "idx must be a tensor of token ids"),
    ([[1, 2, 3]], TypeError, "idx must be a tensor of token ids"),
    (torch.zeros(5, dtype=torch.long), ValueError, r"idx must have shape \(batch, T\)"),
    (torch.zeros(2, 25, dtype=torch.long), ValueError, "block_size = 24"),
    (torch.full((2, 5), 61), ValueError, r"vocabulary is 0 \.\. 60"),
    (torch.full((2, 5), -1), ValueError, "vocabulary"),
])
def test_forward_names_bad_token_ids(idx, error, match):
    with pytest.raises(error, match=match):
        _model()(idx)


def test_forward_names_bad_targets():
    with pytest.raises(ValueError, match="targets must be a tensor of token ids shaped like idx"):
        _model()(_ids(), _ids()[:, :-1])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_embd=30, n_head=4), ValueError, "n_embd must be a multiple of n_head"),
    (dict(norm="batch"), ValueError, "norm must be one of 'layer', 'rms'"),
    (dict(norm_placement="middle"), ValueError, "norm_placement must be one of"),
    (dict(mlp="relu"), ValueError, "mlp must be one of"),
    (dict(position="sinusoidal"), ValueError, "position must be one of"),
    (dict(position="rope", n_embd=36, n_head=12), ValueError, "n_embd / n_head must be even"),
    (dict(vocab_size=0), ValueError, "vocab_size must be a positive integer"),
    (dict(n_layer=2.0), TypeError, "n_layer must be an integer"),
    (dict(mlp_hidden=0), ValueError, "mlp_hidden"),
    (dict(bias="yes"), TypeError, "bias must be True or False"),
    (dict(tie_weights=1), TypeError, "tie_weights must be True or False"),
    (dict(dropout=1.0), ValueError, "dropout must lie in"),
    (dict(norm_eps=0.0), ValueError, "norm_eps"),
    (dict(rope_theta=-5.0), ValueError, "rope_theta"),
])
def test_the_config_names_the_bad_field(kwargs, error, match):
    with pytest.raises(error, match=match):
        GPTConfig(**kwargs)


def test_the_model_and_the_formula_refuse_what_is_not_a_config():
    with pytest.raises(TypeError, match="config must be a GPTConfig"):
        GPT({"n_layer": 2})
    with pytest.raises(TypeError, match="config must be a GPTConfig"):
        n_parameters(TINY)


# --------------------------------------------------------------------------- data and training


def test_bytes_round_trip_and_batches_are_windows_and_their_next_tokens():
    text = "Once upon a time, there was a little fox.\n\n" * 20
    data = encode(text)
    assert data.dtype == torch.long and decode(data) == text and len(data) == len(text)
    x, y = get_batch(data, 6, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y):   # each row is a window of the text
        assert decode(torch.cat([row_x, row_y[-1:]])) in text
    x2, _ = get_batch(data, 6, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


@pytest.mark.parametrize("call, error, match", [
    (lambda: encode(b"bytes"), TypeError, "text must be a string"),
    (lambda: decode([300]), ValueError, "ids"),
    (lambda: get_batch(torch.zeros(100), 2, 8), TypeError, "data must be a 1-D tensor of token ids"),
    (lambda: get_batch(torch.zeros(8, dtype=torch.long), 2, 8), ValueError, "data must be longer than block_size"),
    (lambda: get_batch(torch.zeros(100, dtype=torch.long), 0, 8), ValueError, "batch_size"),
])
def test_data_helpers_name_the_bad_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_training_learns_a_repeated_text_and_is_reproducible():
    data = encode("the cat sat on the mat. " * 200)
    config = GPTConfig(vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=32)
    a = train_gpt(config, data, 120, batch_size=8, lr=3e-3, seed=3)
    b = train_gpt(config, data, 120, batch_size=8, lr=3e-3, seed=3)
    assert not a.diverged and len(a.losses) == len(a.grad_norms) == 120
    assert a.losses[0] == pytest.approx(math.log(256), abs=0.1)   # a fresh model guesses uniformly
    assert a.losses[-10:].mean() < 0.5
    assert (a.losses == b.losses).all()
    assert torch.equal(a.model.head.weight, b.model.head.weight)


def test_warmup_raises_the_learning_rate_linearly():
    data = encode("abcdefgh" * 50)
    config = GPTConfig(vocab_size=256, block_size=8, n_layer=1, n_head=1, n_embd=8)
    # with a warmup of 10 steps the first step moves the weights a tenth as far as without (Adam's first
    # step moves every weight by about lr, whatever the gradient)
    moves = []
    for warmup in (0, 10):
        torch.manual_seed(0)
        before = GPT(config).tok_emb.weight.detach().clone()
        after = train_gpt(config, data, 1, lr=1e-2, warmup=warmup, seed=0).model.tok_emb.weight.detach()
        moves.append((after - before).abs().max().item())
    assert moves[1] == pytest.approx(moves[0] / 10, rel=0.05)


def test_training_stops_when_the_loss_is_no_longer_finite():
    data = encode("abcdefgh" * 50)
    config = GPTConfig(vocab_size=256, block_size=8, n_layer=1, n_head=1, n_embd=8, norm_placement="post")
    result = train_gpt(config, data, 50, lr=1e30, seed=0)
    assert result.diverged and result.diverged_at == len(result.losses) - 1 < 50
    assert not math.isfinite(result.losses[-1])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(steps=0), ValueError, "steps"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(warmup=-1), ValueError, "warmup"),
    (dict(grad_clip=0.0), ValueError, "grad_clip"),
    (dict(betas=0.9), TypeError, "betas"),
    (dict(betas=(0.9, 1.0)), ValueError, "betas"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(data=torch.full((100,), 300)), ValueError, "data holds token ids"),
    (dict(config={"n_layer": 1}), TypeError, "config must be a GPTConfig"),
])
def test_train_gpt_names_the_bad_argument(kwargs, error, match):
    args = dict(config=GPTConfig(vocab_size=256, block_size=8, n_layer=1, n_head=1, n_embd=8),
                data=encode("abcdefgh" * 50), steps=2)
    with pytest.raises(error, match=match):
        train_gpt(**{**args, **kwargs})


# --------------------------------------------------------------------------- the exercise's checker


def _as_config(shape) -> GPTConfig:
    from dataclasses import asdict
    return GPTConfig(**asdict(shape))


def test_the_checkers_reference_is_the_packages_formula():
    from rl2llm.exercises import _parameter_cases, _parameter_parts

    for _, shape in _parameter_cases():
        assert sum(_parameter_parts(shape).values()) == n_parameters(_as_config(shape))


def test_the_package_formula_passes_the_checker():
    from rl2llm.exercises import check_parameter_count

    result = check_parameter_count(lambda c: n_parameters(_as_config(c)))
    assert result.passed and len(result.cases) == 8
    assert check_parameter_count(lambda c: float(n_parameters(_as_config(c)))).passed   # 1.0e6 is a count too


def _hints(fn) -> list[str]:
    from rl2llm.exercises import check_parameter_count

    result = check_parameter_count(fn)
    assert not result.passed
    return [case.hint for case in result.failures]


@pytest.mark.parametrize("mistake, hint", [
    (lambda c: n_parameters(c) + (c.vocab_size * c.n_embd if c.tie_weights else 0), "count it once"),
    (lambda c: n_parameters(c) - (c.vocab_size * c.n_embd if not c.tie_weights else 0), "its own vocab_size"),
    (lambda c: n_parameters(c) + (c.n_embd if c.norm_placement == "post" else 0), "post-norm model has no final"),
    (lambda c: n_parameters(c) + (c.block_size * c.n_embd if c.position == "rope" else 0), "no position table"),
    (lambda c: n_parameters(c) + (c.n_layer * (c.n_embd + c.bias) * c.mlp_hidden if c.mlp == "gelu" else 0),
     "GELU's feed-forward layer has two matrices"),
    (lambda c: 12 * c.n_layer * c.n_embd**2, "rule of thumb"),
])
def test_classic_mistakes_fail_with_their_hint(mistake, hint):
    hints = _hints(lambda shape: mistake(_as_config(shape)))
    assert any(hint in h for h in hints), hints


def test_rmsnorm_with_a_bias_and_swiglu_with_two_matrices_are_named():
    def rms_with_bias(shape):
        c = _as_config(shape)
        extra = (2 * c.n_layer + 1) * c.n_embd if c.norm == "rms" and c.bias else 0
        return n_parameters(c) + extra

    def swiglu_as_gelu(shape):
        c = _as_config(shape)
        return n_parameters(c) - (c.n_layer * c.n_embd * c.mlp_hidden + c.n_layer * c.mlp_hidden * c.bias
                                  if c.mlp == "swiglu" else 0)

    assert any("RMSNorm has a gain and no bias" in h for h in _hints(rms_with_bias))
    assert any("SwiGLU has three matrices" in h for h in _hints(swiglu_as_gelu))


def test_the_checker_reports_none_exceptions_and_dictionary_access():
    from rl2llm.exercises import check_parameter_count

    def no_return(config):
        config.n_embd * 12

    report = check_parameter_count(no_return).report()
    assert "did you forget the return statement" in report
    report = check_parameter_count(lambda config: config["n_embd"]).report()
    assert "not config['n_embd']" in report
    report = check_parameter_count(lambda config: 2.5).report()
    assert "whole number" in report
    with pytest.raises(TypeError, match="fn must take 1 argument"):
        check_parameter_count(lambda a, b: 0)
    with pytest.raises(TypeError, match="fn must be your function"):
        check_parameter_count(5)
