"""rl2llm.sequences: batches of prompts and completions, sampled ids, log-probabilities."""

import pytest
import torch

from rl2llm import sequences, zoo

SPEC = zoo.SPECS["arithmetic"]


@pytest.fixture(scope="module")
def lm():
    tok = zoo.build_tokenizer(SPEC, "0123456789+= \n")
    torch.manual_seed(0)
    model = zoo.build_model(SPEC, len(tok), tok.pad_token_id, tok.eos_token_id).eval()
    return model, tok


def test_encode_layout(lm):
    _, tok = lm
    b = sequences.encode(tok, ["12+3=", "1+1="], ["15", "2"])
    assert b.input_ids.shape == (2, 8)   # 5 + 2 + eos
    assert b.prompt_lengths == (5, 4) and b.completion_lengths == (3, 2)
    assert b.completion_mask[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert b.completion_mask[1].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert b.attention_mask[1].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert b.input_ids[0, -1].item() == tok.eos_token_id
    no_eos = sequences.encode(tok, ["1+1="], ["2"], eos=False)
    assert no_eos.completion_lengths == (1,) and no_eos.ended == (False,)


def test_log_probs_match_a_direct_computation_and_ignore_padding(lm):
    model, tok = lm
    b = sequences.encode(tok, ["12+3=", "1+1="], ["15", "2"])
    lp = sequences.token_log_probs(model, b)
    for i, (p, c) in enumerate([("12+3=", "15"), ("1+1=", "2")]):
        ids = tok(p + c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            out = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        n_p = len(tok(p, add_special_tokens=False)["input_ids"])
        direct = sum(out[t - 1, ids[t]].item() for t in range(n_p, len(ids)))
        assert sequences.sequence_log_probs(model, b)[i].item() == pytest.approx(direct, abs=1e-5)
    assert (lp[b.completion_mask == 0] == 0).all()
    # alone or padded in a batch: the same numbers
    alone = sequences.sequence_log_probs(model, sequences.encode(tok, ["1+1="], ["2"]))
    assert alone.item() == pytest.approx(sequences.sequence_log_probs(model, b)[1].item(), abs=1e-5)


def test_sample_returns_the_drawn_ids_and_is_seeded(lm):
    model, tok = lm
    prompts = ["12+3=", "1+1=", "45+45="]
    texts, b = sequences.sample(model, tok, prompts, 6, seed=3)
    again, b2 = sequences.sample(model, tok, prompts, 6, seed=3)
    assert texts == again and torch.equal(b.input_ids, b2.input_ids)
    for i, text in enumerate(texts):
        row = b.input_ids[i][b.completion_mask[i] == 1].tolist()
        assert len(row) == b.completion_lengths[i] <= 6
        assert tok.decode(row, skip_special_tokens=True) == text
        assert b.ended[i] == (row[-1] == tok.eos_token_id)
    greedy, _ = sequences.sample(model, tok, prompts, 4, temperature=0.0)
    assert greedy == zoo.generate(model, tok, prompts, 4)


def test_sampling_frequencies_follow_the_log_probs(lm):
    """The drawn ids are a sample of the model's distribution: one-token completions, counted."""
    model, tok = lm
    texts, b = sequences.sample(model, tok, ["1+1="] * 4000, 1, seed=0)
    first = b.input_ids[torch.arange(len(b)), torch.tensor(b.prompt_lengths)]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([tok("1+1=", add_special_tokens=False)["input_ids"]])).logits[0, -1].float(), -1)
    freq = torch.bincount(first, minlength=probs.numel()).float() / len(first)
    assert (freq - probs).abs().max().item() < 0.03


def test_select_keeps_rows(lm):
    _, tok = lm
    b = sequences.encode(tok, ["12+3=", "1+1="], ["15", "2"])
    s = b.select([1])
    assert s.input_ids.shape == (1, 6) and s.prompt_lengths == (4,)


@pytest.mark.parametrize("call, name", [
    (lambda tok, m: sequences.encode(tok, "1+1=", ["2"]), "prompts"),
    (lambda tok, m: sequences.encode(tok, ["1+1="], ["2", "3"]), "prompts and completions"),
    (lambda tok, m: sequences.encode(tok, [""], ["2"]), "prompts[0]"),
    (lambda tok, m: sequences.encode(tok, ["1+1="], [2]), "completions[0]"),
    (lambda tok, m: sequences.sample(m, tok, ["1+1="], 0), "max_new_tokens"),
    (lambda tok, m: sequences.sample(m, tok, ["1+1="], 2, temperature=-1), "temperature"),
    (lambda tok, m: sequences.sample("model", tok, ["1+1="], 2), "model"),
    (lambda tok, m: sequences.token_log_probs(m, "batch"), "batch"),
    (lambda tok, m: sequences.from_ids([[1]], [[2], [3]], 0), "prompt_ids and completion_ids"),
    (lambda tok, m: sequences.from_ids([[]], [[2]], 0), "prompt_ids[0]"),
    (lambda tok, m: sequences.encode(object(), ["1+1="], ["2"]), "tokenizer"),
])
def test_bad_inputs_are_named(lm, call, name):
    model, tok = lm
    with pytest.raises((TypeError, ValueError), match=name.replace("[", r"\[").replace("]", r"\]")):
        call(tok, model)
