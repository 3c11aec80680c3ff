"""Tests for rl2llm.tokenizer: byte-level BPE from scratch (Lecture 11).

The claims, each with a test that would fail if it were wrong:
``decode(encode(text)) == text`` for any Unicode text (a property test);
the naive and the incremental trainers learn the same merges (a property
test, on texts full of ties and repeated letters); encoding applies the merges
in the order they were learned, exactly as training did; special tokens are
never split and never made by a merge; every id has its own bytes;
``to_hf`` encodes and decodes exactly as ours and
survives ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` with no
network; bad input is refused with the argument's name.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rl2llm.corpora import corpus
from rl2llm.tokenizer import (
    DIGIT_PATTERN,
    GPT2_PATTERN,
    BPETokenizer,
    merge,
    pretokenize,
    to_hf,
    train_bpe,
)

SPECIALS = ("<|endoftext|>", "<|pad|>", "<|user|>")
TRAIN = (corpus("stories", n_chars=20_000) + "<|endoftext|>" + corpus("arithmetic", n_chars=10_000)
         + "<|endoftext|>" + corpus("code", n_chars=20_000)
         + "Ünïcödé wörds, ελληνικά, русский, 中文字符, emoji 😀🎉 and numbers ²³ Ⅻ 42.")
TOK = train_bpe(TRAIN, 600, SPECIALS)

VARIED = [
    "", " ", "  ", "\n\n\n", "Once upon a time, there was a little cat named Lily.",
    "85+63=148\n07+01=008\n", "def f(x: int) -> int:\n    return x + 1\n",
    "Ünïcödé wörds, ελληνικά, русский, 中文字符, emoji 😀🎉👩‍👩‍👧", "tabs\tand\r\nwindows\u00a0nbsp",
    "<|endoftext|>", "a<|endoftext|>b<|pad|><|user|>c", "<|endoftext", "it's they're we'll I'd",
    "numbers 1234567890 ²³ Ⅻ ١٢٣", "zero\u200bwidth \ufeff bom", "trailing spaces   ", "\x00\x01 control",
]


def apply_in_order(tokenizer: BPETokenizer, piece: str) -> list[int]:
    """The training view of encoding: apply every merge, in the order learned, to the whole piece."""
    ids = list(piece.encode("utf-8"))
    for pair, new_id in zip(tokenizer.merges, tokenizer.merge_ids):
        ids = merge(ids, pair, new_id)
    return ids


# --------------------------------------------------------------------------- round trip


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_decode_encode_is_the_identity_on_any_text(text):
    assert TOK.decode(TOK.encode(text)) == text
    assert TOK.decode(TOK.encode(text, specials=False)) == text


@given(st.lists(st.sampled_from(["<|endoftext|>", "<|pad|>", "a", " b", "é", "<|", "|>", "\n"]), max_size=12))
@settings(max_examples=200, deadline=None)
def test_round_trip_with_special_tokens_mixed_in(parts):
    text = "".join(parts)
    assert TOK.decode(TOK.encode(text)) == text


@pytest.mark.parametrize("text", VARIED)
def test_round_trip_on_varied_text(text):
    assert TOK.decode(TOK.encode(text)) == text


def test_base_vocabulary_is_the_256_bytes_so_nothing_is_unknown():
    assert [TOK.token_bytes(i) for i in range(256)] == [bytes([b]) for b in range(256)]
    untrained = train_bpe("", 300)
    assert untrained.merges == [] and untrained.vocab_size == 256
    assert untrained.encode("é😀") == list("é😀".encode("utf-8"))


def test_pieces_join_back_into_the_text_for_any_pattern():
    for pattern in (GPT2_PATTERN, DIGIT_PATTERN, r"\d+", r"(a)(b)?"):
        text = "abc 123 de! f  "
        assert "".join(pretokenize(text, pattern)) == text


# --------------------------------------------------------------------------- both trainers agree


@given(st.text(alphabet="aab c\n1", max_size=400), st.integers(256, 320), st.integers(1, 3))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_naive_and_incremental_learn_the_same_merges(text, vocab_size, min_frequency):
    naive = train_bpe(text, vocab_size, method="naive", min_frequency=min_frequency)
    fast = train_bpe(text, vocab_size, method="incremental", min_frequency=min_frequency)
    assert naive.merges == fast.merges and naive.merge_ids == fast.merge_ids and naive.vocab == fast.vocab


@pytest.mark.parametrize("name", ["stories", "arithmetic", "code"])
def test_both_trainers_agree_on_the_corpora(name):
    text = corpus(name, n_chars=30_000, seed=1)
    naive = train_bpe(text, 700, ["<|endoftext|>"], method="naive")
    fast = train_bpe(text, 700, ["<|endoftext|>"], method="incremental")
    assert naive.merges == fast.merges and naive.vocab == fast.vocab
    assert naive.special_tokens == fast.special_tokens


def test_most_frequent_pair_is_merged_first_and_ties_go_to_the_smallest_ids():
    tok = train_bpe("ab ab ab cd cd cd xy", 258, method="naive")
    # " a"+"b"... pieces are "ab", " ab", " ab", " cd", " cd", " cd", " xy": (a, b) occurs 3 times,
    # (" ", a) 2, (" ", c) 3, (c, d) 3: three pairs tie at 3; the smallest ids win: (" ", c) = (32, 99)
    assert tok.merges[0] == (32, 99)
    assert tok.merges[1] == (97, 98)


@given(st.text(alphabet="ab c", max_size=200))
@settings(max_examples=100, deadline=None)
def test_encoding_applies_the_merges_in_the_order_learned(text):
    tok = train_bpe(text, 300, min_frequency=1)
    for piece in pretokenize(text):
        assert tok.encode(piece, specials=False) == apply_in_order(tok, piece)


def test_encoding_the_training_text_matches_applying_merges_in_order_on_the_corpora():
    for piece in set(pretokenize(TRAIN)):
        assert TOK.encode(piece, specials=False) == apply_in_order(TOK, piece)


@given(st.text(alphabet="abcd ", max_size=300))
@settings(max_examples=150, deadline=None)
def test_every_id_has_its_own_bytes_and_each_merge_makes_the_bytes_of_its_id(text):
    tok = train_bpe(text, 400, min_frequency=1)
    assert len(set(tok.vocab)) == len(tok.vocab), "two ids with the same bytes"
    assert all(tok.vocab[i] == tok.vocab[a] + tok.vocab[b] for (a, b), i in zip(tok.merges, tok.merge_ids))


def test_vocab_size_is_reached_when_the_text_allows_and_never_exceeded():
    assert TOK.vocab_size == 600 and len(TOK.vocab) + len(SPECIALS) == 600
    small = train_bpe("abab", 1000)
    assert small.vocab_size < 1000 and small.merges, "training stops when no pair occurs twice"


def test_merges_stay_inside_pieces():
    tok = train_bpe("the cat. the cat. the cat.", 300, min_frequency=1)
    assert len(tok.vocab) > 260
    for token in tok.vocab[256:]:
        assert len(pretokenize(token.decode("ascii"))) == 1, f"token {token!r} crosses a piece boundary"


def test_digit_pattern_spells_numbers_digit_by_digit():
    text = corpus("arithmetic", n_chars=20_000)
    digits = train_bpe(text, 400, pattern=DIGIT_PATTERN)
    grouped = train_bpe(text, 400)
    assert [digits.token_bytes(i) for i in digits.encode("123+456=579")] == \
        [bytes([c]) for c in b"123+456=579"]
    assert len(grouped.encode("123+456=579")) < 11, "GPT-2's pattern lets BPE merge digits"


# --------------------------------------------------------------------------- special tokens


def test_special_tokens_get_the_last_ids_and_are_never_split():
    n = len(TOK.vocab)
    assert TOK.special_tokens == {name: n + i for i, name in enumerate(SPECIALS)}
    for name, i in TOK.special_tokens.items():
        assert TOK.encode(name) == [i]
        assert TOK.token_bytes(i) == name.encode()
        assert TOK.decode([i]) == name
    assert TOK.encode("x<|endoftext|>y") == TOK.encode("x") + [TOK.special_tokens["<|endoftext|>"]] + TOK.encode("y")


def test_special_tokens_are_never_made_by_a_merge_even_when_frequent_in_training():
    text = "<|endoftext|>".join(["hello world"] * 200)
    tok = train_bpe(text, 400, ["<|endoftext|>"])
    assert all(b"<|" not in token and b"|>" not in token for token in tok.vocab)


def test_specials_false_reads_a_special_name_as_ordinary_text():
    ids = TOK.encode("<|endoftext|>", specials=False)
    assert len(ids) > 1 and not set(ids) & set(TOK.special_tokens.values())
    assert TOK.decode(ids) == "<|endoftext|>"


def test_longest_special_name_wins():
    tok = train_bpe("", 258, ["<a>", "<a><b>"])
    assert tok.encode("<a><b>") == [tok.special_tokens["<a><b>"]]


# --------------------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf():
    return to_hf(TOK, bos="<|endoftext|>", eos="<|endoftext|>", pad="<|pad|>",
                 chat_template="{% for m in messages %}<|user|>{{ m['content'] }}<|endoftext|>{% endfor %}")


@pytest.mark.parametrize("text", VARIED + [TRAIN[:3000]])
def test_to_hf_encodes_and_decodes_exactly_as_ours(hf, text):
    ids = TOK.encode(text)
    assert hf(text, add_special_tokens=True)["input_ids"] == ids
    assert hf.decode(ids) == text


@given(st.text(max_size=80))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_to_hf_agrees_with_ours_on_any_text(hf, text):
    ids = TOK.encode(text)
    assert hf(text)["input_ids"] == ids
    assert hf.decode(ids) == TOK.decode(ids)


def test_to_hf_knows_the_special_roles(hf):
    assert hf.eos_token_id == TOK.special_tokens["<|endoftext|>"] == hf.bos_token_id
    assert hf.pad_token_id == TOK.special_tokens["<|pad|>"]
    assert len(hf) == TOK.vocab_size
    assert hf.convert_ids_to_tokens([32, 10, 97]) == ["Ġ", "Ċ", "a"], "GPT-2's byte-to-character map"


def test_to_hf_round_trips_through_save_pretrained_offline(hf, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    for text in VARIED:
        assert loaded(text)["input_ids"] == TOK.encode(text)
        assert loaded.decode(TOK.encode(text)) == text
    assert loaded.pad_token_id == hf.pad_token_id and loaded.eos_token_id == hf.eos_token_id
    chat = loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "<|user|>hi<|endoftext|>"


def test_to_hf_keeps_the_digit_pattern():
    text = corpus("arithmetic", n_chars=5_000)
    tok = train_bpe(text, 300, pattern=DIGIT_PATTERN)
    hf = to_hf(tok)
    for sample in (text[:500], "12345+678=", "x 9 y 99"):
        assert hf(sample)["input_ids"] == tok.encode(sample)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(text=b"bytes", vocab_size=300), TypeError, "text must be a string"),
    (dict(text="ok\ud800", vocab_size=300), ValueError, "text is not valid Unicode"),
    (dict(text="ok", vocab_size=300.0), TypeError, "vocab_size must be an integer"),
    (dict(text="ok", vocab_size=255), ValueError, "vocab_size must be an integer >= 256"),
    (dict(text="ok", vocab_size=257, special_tokens=["<a>", "<b>"]), ValueError, "vocab_size must be an integer >= 258"),
    (dict(text="ok", vocab_size=300, special_tokens="<a>"), TypeError, "special_tokens must be a list"),
    (dict(text="ok", vocab_size=300, special_tokens=["<a>", ""]), ValueError, "special_tokens[1] must be a non-empty"),
    (dict(text="ok", vocab_size=300, special_tokens=["<a>", 3]), ValueError, "special_tokens[1]"),
    (dict(text="ok", vocab_size=300, special_tokens=["<a>", "<a>"]), ValueError, "special_tokens must be distinct"),
    (dict(text="ok", vocab_size=300, method="fast"), ValueError, "method must be one of"),
    (dict(text="ok", vocab_size=300, pattern="(unclosed"), ValueError, "pattern is not a valid regular expression"),
    (dict(text="ok", vocab_size=300, pattern=None), TypeError, "pattern must be a regular expression"),
    (dict(text="ok", vocab_size=300, min_frequency=0), ValueError, "min_frequency must be a positive integer"),
])
def test_train_bpe_refuses_bad_input_naming_the_argument(kwargs, error, words):
    with pytest.raises(error) as info:
        train_bpe(**kwargs)
    assert words in str(info.value)


def test_encode_decode_refuse_bad_input_naming_the_argument():
    with pytest.raises(TypeError, match="text must be a string"):
        TOK.encode(["not", "text"])
    with pytest.raises(ValueError, match="text is not valid Unicode"):
        TOK.encode("\udcff")
    with pytest.raises(TypeError, match="specials must be True or False"):
        TOK.encode("x", specials=1)
    with pytest.raises(ValueError, match=r"ids\[1\] must be an integer in 0 .. 599"):
        TOK.decode([5, 600])
    with pytest.raises(ValueError, match=r"ids\[0\] must be an integer in 0 .. 599"):
        TOK.decode([-1])
    with pytest.raises(TypeError, match=r"ids\[0\] must be an integer"):
        TOK.decode([1.0])
    with pytest.raises(TypeError, match="ids must be a list of token ids"):
        TOK.decode("abc")
    with pytest.raises(ValueError, match="token_id must be an integer in 0 .. 599"):
        TOK.token_bytes(600)
    with pytest.raises(ValueError, match="text must not be empty"):
        TOK.bytes_per_token("")


def test_to_hf_refuses_bad_input_naming_the_argument():
    with pytest.raises(TypeError, match="tokenizer must be a BPETokenizer"):
        to_hf("gpt2")
    with pytest.raises(ValueError, match="eos must be one of the tokenizer's special tokens"):
        to_hf(TOK, eos="</s>")
    with pytest.raises(TypeError, match="chat_template must be a string"):
        to_hf(TOK, chat_template=3)


# --------------------------------------------------------------------------- the exercise's checker


def _reference_encode(piece, merges):
    ids = list(piece)
    for k, pair in enumerate(merges):
        ids = merge(ids, pair, 256 + k)
    return ids


def test_check_bpe_encode_passes_the_reference_and_a_rank_based_solution():
    from rl2llm.exercises import check_bpe_encode

    assert check_bpe_encode(_reference_encode).passed

    def by_rank(piece, merges):
        rank = {pair: k for k, pair in enumerate(merges)}
        ids = list(piece)
        while True:
            pairs = [p for p in zip(ids, ids[1:]) if p in rank]
            if not pairs:
                return ids
            best = min(pairs, key=rank.get)
            ids = merge(ids, best, 256 + rank[best])

    assert check_bpe_encode(by_rank).passed


def _first_only(piece, merges):
    ids = list(piece)
    for k, pair in enumerate(merges):
        for i in range(len(ids) - 1):
            if (ids[i], ids[i + 1]) == pair:
                ids = ids[:i] + [256 + k] + ids[i + 2:]
                break
    return ids


def _latest_first(piece, merges):
    ids = list(piece)
    for k in reversed(range(len(merges))):
        ids = merge(ids, merges[k], 256 + k)
    return ids


def _longest_match(piece, merges):
    vocab = [bytes([i]) for i in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    index = {}
    for i, token in enumerate(vocab):
        index.setdefault(token, i)
    ids, at = [], 0
    while at < len(piece):
        end = max(e for e in range(at + 1, len(piece) + 1) if piece[at:e] in index)
        ids.append(index[piece[at:end]])
        at = end
    return ids


def _right_to_left(piece, merges):
    ids = list(piece)
    for k, pair in enumerate(merges):
        ids = merge(ids[::-1], pair[::-1], 256 + k)[::-1]
    return ids


@pytest.mark.parametrize("wrong, words", [
    (_first_only, "only its first occurrence"),
    (_latest_first, "latest first"),
    (_longest_match, "longest match"),
    (_right_to_left, "merged from the right"),
])
def test_check_bpe_encode_names_the_classic_mistakes(wrong, words):
    from rl2llm.exercises import check_bpe_encode

    result = check_bpe_encode(wrong)
    assert not result.passed
    assert any(words in case.hint for case in result.failures), result.report()
    assert "expected" in result.failures[0].message


def test_check_bpe_encode_reports_bad_answers_and_bad_arguments():
    from rl2llm.exercises import check_bpe_encode

    result = check_bpe_encode(lambda piece, merges: None)
    assert not result.passed and "forget the return" in result.failures[0].message
    result = check_bpe_encode(lambda piece, merges: piece)
    assert "expected a list of token ids" in result.failures[0].message
    result = check_bpe_encode(lambda piece, merges: [1 / 0])
    assert "raised ZeroDivisionError" in result.failures[0].message
    result = check_bpe_encode(lambda piece, merges: [str(b) for b in piece])
    assert "every entry must be a token id" in result.failures[0].message
    with pytest.raises(TypeError, match="fn must be your function"):
        check_bpe_encode("encode")
    with pytest.raises(TypeError, match="fn must take 2 arguments"):
        check_bpe_encode(lambda piece: piece)


# --------------------------------------------------------------------------- the benchmark and its page


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """The BPE benchmark's quick mode, small vocabularies, results to a temporary file."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bpe_vs_tokenizers.py"
    spec = importlib.util.spec_from_file_location("bpe_vs_tokenizers", script)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bpe_vs_tokenizers"] = bench
    spec.loader.exec_module(bench)
    out = tmp_path_factory.mktemp("bench") / "bpe.json"
    data = bench.main(["--quick", "--vocab-sizes", "400", "--zipf-vocab", "400", "--naive-up-to", "400",
                       "--out", str(out)])
    return data, out


def test_benchmark_quick_run_compares_all_three_trainers(bench_run):
    data, out = bench_run
    assert out.exists() and data["settings"]["quick"]
    assert [r["text"] for r in data["rows"]] == ["the book's corpus", "many distinct words"]
    for row in data["rows"]:
        assert set(row["seconds"]) == {"naive", "incremental", "tokenizers"}
        assert row["same_merges_naive_incremental"]
        assert abs(row["compression_gap"]) < 0.02 and row["merges_in_common"] > 0.8 * row["merges"]["ours"]
        assert row["bytes_per_token"]["ours"]["all"] > 1.0
    assert set(data["summary"]) >= {"incremental_speedup", "compression_gap", "tokenizers_over_incremental",
                                    "speedup_goal_met", "compression_goal_met"}


def _render_benchmark_page(tmp_path, edition, results):
    from conftest import render_benchmark_page

    return render_benchmark_page(tmp_path, edition, "bpe-benchmark", "bpe.json", results)


def test_benchmark_page_renders_in_both_editions(bench_run, tmp_path):
    from bs4 import BeautifulSoup

    _, out = bench_run
    scientist = _render_benchmark_page(tmp_path, "scientist", out)
    assert "Verdict" in scientist and "quick run" in scientist and "incremental trainer" in scientist
    assert "naive / incr." in scientist and "RAYON_NUM_THREADS" in scientist
    manager = BeautifulSoup(_render_benchmark_page(tmp_path, "manager", out), "html.parser")
    body = manager.select_one('[role="main"]') or manager.body
    assert "fast trainer" in body.get_text() and not body.select("pre"), "the manager edition shows code"
    missing = _render_benchmark_page(tmp_path / "none", "scientist", None)
    assert "No results file yet" in missing and "bpe_vs_tokenizers.py" in missing
