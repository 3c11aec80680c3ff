"""Language modelling (Lecture 12): decoding filters, perplexity, training, power-law fits, and bad input named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rl2llm.lm import (
    LMRun, PowerLaw, ScalingLaw, apply_temperature, fit_power_law, fit_scaling_law, generate, lr_schedule,
    scaling_law_profile,
    next_token_probs, non_embedding_parameters, perplexity, sample_next, token_losses, top_k_filter,
    top_p_filter, train_lm,
)
from rl2llm.transformer import GPT, GPTConfig, n_parameters, to_gpt2

TINY = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)


def _logits(seed: int = 0, shape=(5, 40), scale: float = 2.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _model(seed: int = 0, config: GPTConfig = TINY, scale: float = 0.3) -> GPT:
    """A GPT with weights large enough that its predictions are far from uniform."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not ("norm" in name and name.endswith("weight")):
                p.normal_(0.0, scale)
    return model


def _stream(n: int = 400, vocab: int = TINY.vocab_size, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- decoding filters


@pytest.mark.parametrize("k", [1, 2, 7, 40])
def test_top_k_keeps_exactly_k_tokens_the_most_likely(k):
    logits = _logits()
    kept = top_k_filter(logits, k)
    assert ((kept > -math.inf).sum(dim=-1) == k).all()
    for row, out in zip(logits, kept):
        alive = torch.nonzero(out > -math.inf).ravel()
        assert set(alive.tolist()) == set(torch.topk(row, k).indices.tolist())
        assert torch.equal(out[alive], row[alive]), "kept logits are unchanged"


def test_top_k_keeps_exactly_k_even_on_ties():
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]])
    kept = top_k_filter(logits, 2)
    assert (kept > -math.inf).sum() == 2
    assert torch.equal(kept[0, :2], logits[0, :2]), "a tie at the border keeps the lower token id"


def _smallest_nucleus_size(probs: np.ndarray, p: float) -> int:
    """The size of the smallest set of tokens whose probability reaches p (brute force over sorted sizes)."""
    ordered = np.sort(probs)[::-1]
    return int(np.argmax(np.cumsum(ordered) >= p - 1e-12) + 1)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99])
def test_top_p_keeps_the_smallest_set_of_most_likely_tokens_with_mass_at_least_p(p):
    for seed in range(5):
        logits = _logits(seed, scale=1.0 + seed)
        kept = top_p_filter(logits, p)
        probs = torch.softmax(logits.double(), dim=-1).numpy()
        for row, out in zip(probs, kept):
            alive = (out > -math.inf).numpy()
            assert row[alive].sum() >= p - 1e-12, "the kept set reaches p"
            assert alive.sum() == _smallest_nucleus_size(row, p), "and is the smallest that does"
            assert row[alive].min() >= row[~alive].max(initial=0.0), "and holds the most likely tokens"


def test_top_p_of_one_keeps_everything_and_a_tiny_p_keeps_the_best_token():
    logits = _logits()
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    tiny = top_p_filter(logits, 1e-9)
    assert ((tiny > -math.inf).sum(dim=-1) == 1).all()
    assert torch.equal(tiny.argmax(dim=-1), logits.argmax(dim=-1))


def test_top_p_exactly_at_a_boundary_stops_there():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    assert (top_p_filter(logits, 0.75) > -math.inf).sum() == 2
    assert (top_p_filter(logits, 0.76) > -math.inf).sum() == 3


def test_the_filters_agree_with_transformers_logits_warpers():
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = _logits(3, shape=(6, 50))
    for temperature, k, p in [(0.7, 20, 0.9), (1.3, 5, 0.5), (1.0, 50, 0.8)]:
        theirs = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopKLogitsWarper(k),
                                      TopPLogitsWarper(p)])(None, logits.clone())
        ours = next_token_probs(logits, temperature, top_k=k, top_p=p)
        assert torch.allclose(ours, torch.softmax(theirs, dim=-1), atol=1e-6)


def test_temperature_one_changes_nothing_and_a_high_temperature_flattens():
    logits = _logits()
    assert torch.allclose(next_token_probs(logits, 1.0), torch.softmax(logits, -1))
    flat = next_token_probs(logits, 1e4)
    assert torch.allclose(flat, torch.full_like(flat, 1 / logits.shape[-1]), atol=1e-3)


def test_temperature_towards_zero_is_greedy():
    logits = _logits()
    best = logits.argmax(dim=-1)
    cold = next_token_probs(logits, 1e-3)
    assert torch.allclose(cold.max(dim=-1).values, torch.ones(len(logits)), atol=1e-6)
    assert torch.equal(cold.argmax(dim=-1), best)
    zero = next_token_probs(logits, 0.0)
    assert torch.equal(zero, F.one_hot(best, logits.shape[-1]).float())
    assert torch.equal(sample_next(logits, 0.0), best)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, 1e-4, generator=g), best)
    assert torch.equal(apply_temperature(logits, 0.0).argmax(-1), best)


def test_sampling_follows_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(20_000, 1)
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits, 1.0, top_p=0.8, generator=g)
    counts = torch.bincount(draws, minlength=4).double() / len(draws)
    assert counts[2:].sum() == 0, "tokens outside the nucleus are never drawn"
    assert abs(counts[0] - 0.5 / 0.8) < 0.015 and abs(counts[1] - 0.3 / 0.8) < 0.015, "the rest renormalised"


# --------------------------------------------------------------------------- generation


def test_greedy_generation_picks_the_argmax_and_matches_gpt2lmheadmodel():
    model = _model()
    prompt = _stream(12, seed=1).view(3, 4)
    out = generate(model, prompt, 6, temperature=0.0)
    assert out.shape == (3, 10) and torch.equal(out[:, :4], prompt)
    for t in range(4, 10):
        assert torch.equal(out[:, t], model(out[:, :t])[0][:, -1].argmax(-1))
    hf = to_gpt2(model)
    assert torch.equal(generate(hf, prompt, 6, temperature=0.0), out), "the same tokens with transformers' cache"


def test_sampled_generation_is_reproducible_with_a_generator_and_respects_the_context():
    model = _model()
    prompt = _stream(2, seed=2).view(2, 1)
    a = generate(model, prompt, 30, top_k=5, generator=torch.Generator().manual_seed(7))
    b = generate(model, prompt, 30, top_k=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (2, 31), "30 tokens beyond a context of 16 are fine"
    assert model.training is False


def test_a_row_that_drew_the_stop_token_stays_stopped():
    model = _model()
    prompt = _stream(8, seed=3).view(4, 2)
    free = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
    stop = int(free[0, 2])   # the first row's first new token: it stops at once
    out = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1), stop_token=stop)
    assert (out[0, 2:] == stop).all()
    for row in out:
        hits = torch.nonzero(row[2:] == stop).ravel()
        if len(hits):
            assert (row[2 + hits[0]:] == stop).all()


# --------------------------------------------------------------------------- perplexity


def test_token_losses_are_the_cross_entropy_of_each_window():
    model = _model()
    data = _stream(200)
    losses = token_losses(model, data, batch_size=3)
    T = TINY.block_size
    n = (len(data) - 1) // T
    assert losses.shape == (n, T)
    windows = torch.stack([data[i * T:i * T + T + 1] for i in range(n)])
    with torch.no_grad():
        _, loss = model(windows[:, :-1], windows[:, 1:])
    assert np.isclose(losses.mean(), loss.item(), atol=1e-5)
    assert np.isclose(perplexity(losses), math.exp(loss.item()), rtol=1e-5), "perplexity = exp(mean CE)"
    hf = to_gpt2(model)
    assert np.allclose(token_losses(hf, data, block_size=T), losses, atol=1e-4)


def test_a_model_that_predicts_uniformly_has_perplexity_equal_to_the_vocabulary():
    model = GPT(TINY)
    with torch.no_grad():
        model.head.weight.zero_()   # tied: every logit is 0
    assert np.isclose(perplexity(token_losses(model, _stream())), TINY.vocab_size)


def test_perplexity_is_exp_of_the_mean():
    assert perplexity(0.0) == 1.0
    assert np.isclose(perplexity([1.0, 3.0]), math.exp(2.0))
    assert np.isclose(perplexity(torch.tensor([math.log(7.0)])), 7.0)


# --------------------------------------------------------------------------- training


def test_the_training_loss_decreases_on_a_tiny_model():
    pattern = torch.tensor([1, 5, 2, 9, 3, 1, 4, 7, 2, 8, 0, 6] * 60)
    run = train_lm(TINY, pattern, 16 * 16 * 60, eval_data=pattern[:200], batch_size=16, lr=1e-2, warmup=5)
    assert isinstance(run, LMRun)
    assert run.losses[:5].mean() > math.log(TINY.vocab_size) - 0.5
    assert run.losses[-5:].mean() < 0.5 and run.final_loss < 0.5, "a repeated pattern is learned"
    assert np.all(np.diff(run.eval_losses) < 0.05), "held-out losses fall (up to noise)"
    assert run.tokens == 16 * 16 * 60 and len(run.losses) == 60
    assert run.parameters == n_parameters(TINY) and run.non_embedding == non_embedding_parameters(TINY)
    assert np.isclose(run.compute, 6 * run.non_embedding * run.tokens)
    assert 0 < run.cpu_seconds and 0 < run.seconds
    again = train_lm(TINY, pattern, 16 * 16 * 10, batch_size=16, seed=0)
    assert np.array_equal(again.losses, train_lm(TINY, pattern, 16 * 16 * 10, batch_size=16, seed=0).losses)


def test_the_schedule_warms_up_then_decays_along_a_cosine_to_the_end_of_the_budget():
    lrs = [lr_schedule(s, 100, 1.0, 10, 0.1) for s in range(100)]
    assert np.allclose(lrs[:10], np.arange(1, 11) / 10)
    assert np.isclose(lrs[10], 1.0) and np.isclose(lrs[-1], 0.1)
    assert np.all(np.diff(lrs[10:]) <= 1e-12)
    assert np.isclose(lrs[10 + 89 // 2], 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (89 // 2) / 89)))


def test_non_embedding_parameters_leave_out_the_embeddings():
    c = GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, n_embd=32)
    model = GPT(c)
    blocks = sum(p.numel() for p in model.blocks.parameters()) + sum(p.numel() for p in model.norm.parameters())
    assert non_embedding_parameters(c) == blocks
    assert abs(non_embedding_parameters(c) - 12 * c.n_layer * c.n_embd ** 2) < 0.05 * non_embedding_parameters(c)
    untied = GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, n_embd=32, tie_weights=False)
    assert non_embedding_parameters(untied) == blocks, "an untied output layer is a vocabulary matrix too"


# --------------------------------------------------------------------------- scaling laws


def test_the_power_law_fit_recovers_known_exponents():
    x = np.logspace(3, 8, 12)
    for scale, exponent, offset in [(40.0, 0.35, 1.7), (5.0, 0.076, 0.0), (300.0, 0.7, 0.3)]:
        y = offset + scale * x ** -exponent
        law = fit_power_law(x, y, offset=offset > 0)
        assert np.isclose(law.exponent, exponent, rtol=1e-3) and np.isclose(law.scale, scale, rtol=1e-2)
        assert np.isclose(law.offset, offset, atol=1e-3)
        assert np.allclose(law(x), y, rtol=1e-4)
    noisy = (1.7 + 40 * x ** -0.35) * np.exp(np.random.default_rng(0).normal(0, 0.003, x.size))
    assert abs(fit_power_law(x, noisy).exponent - 0.35) < 0.03


def test_the_scaling_law_fit_recovers_chinchillas_exponents():
    N, D = np.meshgrid(np.logspace(4, 6, 4), np.logspace(5, 7, 4))
    chinchilla = ScalingLaw(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
    law = fit_scaling_law(N.ravel(), D.ravel(), chinchilla(N, D).ravel())
    for name in ("E", "alpha", "beta"):
        assert np.isclose(getattr(law, name), getattr(chinchilla, name), rtol=2e-3), name
    small = ScalingLaw(E=0.8, A=30.0, alpha=0.5, B=80.0, beta=0.4)
    N, D = np.meshgrid([2e3, 8e3, 3e4], [1e5, 3e5, 1e6])
    law = fit_scaling_law(N.ravel(), D.ravel(), small(N, D).ravel())
    assert np.isclose(law.alpha, 0.5, rtol=1e-3) and np.isclose(law.beta, 0.4, rtol=1e-3)


def _noisy_grid(seed=0):
    """A grid shaped like Lecture 12's (5 sizes x 3 budgets), losses from a known law with 1% noise."""
    truth = ScalingLaw(E=0.6, A=60.0, alpha=0.7, B=3000.0, beta=0.7)
    N, D = np.meshgrid([500, 1800, 7000, 27000, 100000], [5e4, 1e5, 2e5])
    noise = np.exp(np.random.default_rng(seed).normal(0, 0.01, N.shape))
    return truth, N.ravel(), D.ravel(), (truth(N, D) * noise).ravel()


def test_the_scaling_law_fit_is_no_worse_than_a_wide_multistart():
    """The objective has local minima on a flat ridge; the fit must not stop in one (Lecture 12's grid did)."""
    from scipy.optimize import minimize

    for seed in range(3):
        truth, N, D, L = _noisy_grid(seed)
        law = fit_scaling_law(N, D, L)
        best = np.inf
        rng = np.random.default_rng(seed)
        for _ in range(40):                        # an independent multi-start: random starts, numerical gradients
            start = [rng.uniform(0, 8), rng.uniform(0, 12), np.log(L.min()) - rng.uniform(0.05, 1.5),
                     rng.uniform(0.1, 1.8), rng.uniform(0.1, 1.8)]
            f = minimize(lambda t: ScalingLaw(np.exp(t[2]), np.exp(t[0]), t[3], np.exp(t[1]), t[4]).huber_loss(N, D, L),
                         start, method="L-BFGS-B", bounds=[(None, 30), (None, 30), (None, np.log(L.min())),
                                                           (1e-3, 4), (1e-3, 4)],
                         options=dict(ftol=1e-13, gtol=1e-10, maxiter=1000))
            best = min(best, f.fun)
        assert law.huber_loss(N, D, L) <= best * (1 + 1e-4), (seed, law.huber_loss(N, D, L), best)
        assert abs(law.parameter_exponent - truth.parameter_exponent) < 0.1


def test_the_profile_brackets_the_fit_and_contains_the_true_exponent():
    truth, N, D, L = _noisy_grid(0)
    law = fit_scaling_law(N, D, L)
    exponents = np.round(np.arange(0.3, 0.71, 0.05), 2)
    laws, objectives = scaling_law_profile(N, D, L, exponents)
    assert len(laws) == len(exponents)
    assert np.allclose([fit.parameter_exponent for fit in laws], exponents)
    assert (objectives >= law.huber_loss(N, D, L) * (1 - 1e-6)).all(), "no fixed exponent beats the free fit"
    assert np.allclose(objectives, [fit.huber_loss(N, D, L) for fit in laws])
    assert abs(exponents[np.argmin(objectives)] - law.parameter_exponent) <= 0.025 + 1e-9
    assert abs(exponents[np.argmin(objectives)] - truth.parameter_exponent) <= 0.05 + 1e-9
    assert objectives[0] > 1.05 * objectives.min() and objectives[-1] > 1.05 * objectives.min()


def test_the_optimal_allocation_spends_the_budget_where_the_loss_is_lowest():
    law = ScalingLaw(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
    assert np.isclose(law.parameter_exponent + law.data_exponent, 1.0)
    assert np.isclose(law.parameter_exponent, 0.28 / 0.62)
    for C in (1e18, 5.76e23):
        N, D = law.optimal_allocation(C)
        assert np.isclose(6 * N[0] * D[0], C)
        others = N[0] * np.array([0.5, 0.8, 1.25, 2.0])
        assert (law(others, C / 6 / others) > law(N, D)).all()
    N, _ = law.optimal_allocation(5.76e23)   # Chinchilla's own budget: about 70 billion parameters with this fit
    assert 2e10 < N[0] < 1e11


# --------------------------------------------------------------------------- bad input, named


@pytest.mark.parametrize("call, error, match", [
    (lambda: top_k_filter(_logits(), 0), ValueError, "k must be an integer in 1 .. 40"),
    (lambda: top_k_filter(_logits(), 41), ValueError, "k must be"),
    (lambda: top_k_filter(_logits(), 2.0), TypeError, "k must be an integer"),
    (lambda: top_p_filter(_logits(), 0.0), ValueError, r"p must lie in \(0, 1\]"),
    (lambda: top_p_filter(_logits(), 1.5), ValueError, "p must lie in"),
    (lambda: apply_temperature(_logits(), -1.0), ValueError, "temperature must be a finite number >= 0"),
    (lambda: apply_temperature(_logits(), True), TypeError, "temperature must be a real number"),
    (lambda: top_k_filter(np.zeros(3), 1), TypeError, "logits must be a floating-point torch tensor"),
    (lambda: top_k_filter(torch.zeros(3, dtype=torch.long), 1), TypeError, "logits must be a floating-point"),
    (lambda: top_p_filter(torch.tensor([0.0, float("nan")]), 0.5), ValueError, "logits must not contain NaN"),
    (lambda: top_p_filter(torch.tensor([0.0, float("inf")]), 0.5), ValueError, r"logits must not contain \+inf"),
    (lambda: top_p_filter(torch.full((2,), -float("inf")), 0.5), ValueError, "every token of some row is -inf"),
    (lambda: sample_next(_logits()[0], 1.0), ValueError, r"logits must have shape \(batch, vocab_size\)"),
    (lambda: sample_next(_logits(), 1.0, generator=0), TypeError, "generator must be a torch.Generator"),
    (lambda: next_token_probs(_logits(), 1.0, top_k=0), ValueError, "k must be"),
    (lambda: generate(_model(), [[1, 2]], 3), TypeError, r"idx must be a \(batch, T\) tensor"),
    (lambda: generate(_model(), torch.tensor([[1, 2]]), -1), ValueError, "max_new_tokens must be"),
    (lambda: generate(_model(), torch.tensor([[1, 99]]), 1), ValueError, "idx holds token ids"),
    (lambda: generate(_model(), torch.tensor([[1]]), 1, top_p=0), ValueError, "top_p must lie in"),
    (lambda: generate(_model(), torch.tensor([[1]]), 1, stop_token=-1), ValueError, "stop_token must be"),
    (lambda: generate("gpt", torch.tensor([[1]]), 1), TypeError, "model must be a GPT or a transformers"),
    (lambda: token_losses(_model(), [1, 2, 3]), TypeError, "data must be a 1-D tensor of token ids"),
    (lambda: token_losses(_model(), _stream(10)), ValueError, r"data must hold at least block_size \+ 1 = 17"),
    (lambda: token_losses(_model(), _stream(50, vocab=99)), ValueError, "data holds token ids from"),
    (lambda: token_losses(_model(), _stream(), block_size=17), ValueError, "block_size must be"),
    (lambda: token_losses(to_gpt2(_model()), _stream()), ValueError, "block_size must be given"),
    (lambda: perplexity([]), ValueError, "losses must not be empty"),
    (lambda: perplexity([-1.0]), ValueError, "losses must be >= 0"),
    (lambda: perplexity([float("nan")]), ValueError, "losses must be finite"),
    (lambda: train_lm({"n_embd": 8}, _stream(), 1000), TypeError, "config must be a GPTConfig"),
    (lambda: train_lm(TINY, _stream(), 10), ValueError, "tokens must cover at least one batch"),
    (lambda: train_lm(TINY, _stream(10), 1000), ValueError, "data must be longer than block_size"),
    (lambda: train_lm(TINY, _stream(), 1000, lr=0), ValueError, "lr must be"),
    (lambda: train_lm(TINY, _stream(), 1000, eval_data=_stream(5)), ValueError, "eval_data must hold"),
    (lambda: train_lm(TINY, _stream(), 1000, label=3), TypeError, "label must be a string"),
    (lambda: train_lm(TINY, _stream(), 1000, threads=0), ValueError, "threads must be a positive integer"),
    (lambda: lr_schedule(100, 100, 1.0, 0, 0.1), ValueError, "step must be"),
    (lambda: lr_schedule(0, 100, 1.0, 0, 1.5), ValueError, "final_lr_fraction must lie in"),
    (lambda: non_embedding_parameters(None), TypeError, "config must be a GPTConfig"),
    (lambda: fit_power_law([1, 2, 3], [1, 2]), ValueError, "x and y must have the same length"),
    (lambda: fit_power_law([1, 2, -3], [1, 2, 3]), ValueError, r"x must be positive, but x\[2\]"),
    (lambda: fit_power_law([1, 1, 2], [3, 2, 1]), ValueError, "x must hold at least 3 different values"),
    (lambda: fit_power_law([1, 2], [3, 2], offset=1), TypeError, "offset must be True or False"),
    (lambda: fit_power_law([[1, 2]], [[3, 2]]), ValueError, "x must be one-dimensional"),
    (lambda: fit_scaling_law([1, 2, 3], [1, 2, 3], [1, 2, 3]), ValueError, "need at least 5 runs"),
    (lambda: fit_scaling_law([1] * 5, [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]), ValueError, "2 different N"),
    (lambda: fit_scaling_law([1, 2, 3, 4, 5], [1, 2, 3, 4], [1] * 5), ValueError, "must have the same length"),
    (lambda: fit_scaling_law([1, 2, 3, 4, 5], [1, 2, 1, 2, 1], [1, 1, 1, 0, 1]), ValueError, "loss must be positive"),
    (lambda: ScalingLaw(1, 1, 0.3, 1, 0.3).optimal_allocation(-1.0), ValueError, "compute must be positive"),
    (lambda: scaling_law_profile([1, 2, 3, 4, 5], [1, 2, 1, 2, 1], [5, 4, 3, 2, 1], [0.5, 1.0]), ValueError,
     "exponents must be a non-empty list of numbers strictly between 0 and 1"),
    (lambda: scaling_law_profile([1, 2, 3, 4, 5], [1, 2, 1, 2, 1], [5, 4, 3, 2, 1], [0.5, np.nan]), ValueError,
     r"exponents must be finite"),
    (lambda: scaling_law_profile([1, 2, 3], [1, 2, 3], [1, 2, 3], [0.5]), ValueError, "need at least 5 runs"),
    (lambda: ScalingLaw(1, 1, 0.3, 1, 0.3).huber_loss([1, 2, 3, 4, 5], [1, 2, 1, 2, 1], [1, 1, 1, 1]), ValueError,
     "must have the same length"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_powerlaw_and_scalinglaw_evaluate_like_their_formulas():
    assert np.isclose(PowerLaw(2.0, 0.5, 1.0)(4.0), 2.0)
    assert np.isclose(ScalingLaw(1.0, 4.0, 0.5, 9.0, 0.5)(4.0, 9.0), 6.0)


# --------------------------------------------------------------------------- the exercise's checker


def test_the_nucleus_checker_passes_the_reference_and_a_tie_breaking_solution():
    from rl2llm.exercises import check_top_p_filter

    assert check_top_p_filter(top_p_filter).passed

    def unstable(logits, p):   # ties broken the other way round; log-probabilities returned
        probs = torch.softmax(logits, -1)
        s, order = torch.sort(-probs.flip(-1), dim=-1)
        order = probs.shape[-1] - 1 - order
        s = -s
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, s.cumsum(-1) - s < p)
        return torch.log_softmax(logits, -1).masked_fill(~keep, -math.inf)

    assert check_top_p_filter(unstable).passed


def _stop_before(logits, p):
    probs = torch.softmax(logits, -1)
    s, order = torch.sort(probs, -1, descending=True)
    return logits.masked_fill(~torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, s.cumsum(-1) < p),
                              -math.inf)


def _vocabulary_order(logits, p):
    probs = torch.softmax(logits, -1)
    return logits.masked_fill(~(probs.cumsum(-1) - probs < p), -math.inf)


@pytest.mark.parametrize("fn, fragment, hint", [
    (_stop_before, "where the nucleus has", "stopped before the token that crosses p"),
    (_vocabulary_order, "should be dropped", "in vocabulary order"),
    (lambda logits, p: torch.softmax(top_p_filter(logits, p), -1), "tokens where the nucleus", "returned probabilities"),
    (lambda logits, p: torch.nan_to_num(top_p_filter(logits, p), neginf=0.0), "where the nucleus", "must be -inf, not 0"),
    (lambda logits, p: None, "returned None", ""),
    (lambda logits, p: logits[:, :2], "returned shape", ""),
    (lambda logits, p: 1 / 0, "raised ZeroDivisionError", ""),
])
def test_the_nucleus_checker_names_classic_mistakes(fn, fragment, hint):
    from rl2llm.exercises import check_top_p_filter

    result = check_top_p_filter(fn)
    assert not result.passed
    assert any(fragment in case.message for case in result.failures)
    if hint:
        assert any(hint in case.hint for case in result.failures)


def test_the_nucleus_checker_refuses_what_is_not_a_function():
    from rl2llm.exercises import check_top_p_filter

    with pytest.raises(TypeError, match="fn must be your function"):
        check_top_p_filter("top_p")
    with pytest.raises(TypeError, match="fn must take 2 arguments"):
        check_top_p_filter(lambda logits: logits)
