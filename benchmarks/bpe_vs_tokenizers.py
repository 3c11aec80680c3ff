"""Byte-pair encoding: rl2llm's trainers against Hugging Face ``tokenizers``, same text, same sizes.

Three trainers learn a byte-level BPE vocabulary from the same text:

* ``naive``: ``rl2llm.tokenizer.train_bpe(method="naive")``, which recounts every
  pair of adjacent tokens after each merge (Python, written to be read);
* ``incremental``: ``train_bpe(method="incremental")``, which keeps the pair
  counts and updates only the words a merge touched (Python, written to be fast);
* ``tokenizers``: Hugging Face's ``BpeTrainer`` (Rust) with the ``ByteLevel``
  pre-tokenizer (GPT-2's splitting regex, as ours), the 256 bytes as the initial
  alphabet and the same ``min_frequency`` (2), multi-threaded: ``RAYON_NUM_THREADS``
  is set to ``--threads`` before ``tokenizers`` is imported.

Each trainer gets the whole text as one string (ours take one; giving
``tokenizers`` the same string keeps the pieces it counts identical to ours, so
the compression comparison is exact). Timed (``time.perf_counter``, best of
``--repeats``): the whole training call, splitting the text included; the CPU
time of the process is recorded next to it (``tokenizers`` uses more than one
core, so its CPU time exceeds its wall time). ``encode`` is timed on the
held-out text, ours against ``Tokenizer.encode``.

The texts:

* **the book's corpus**: 1 MB (``--mb``) of generated text, a third each of
  stories, arithmetic and code (``rl2llm.corpora.corpus``, seed 0). It is
  repetitive: about a thousand distinct words, so the vocabulary stops growing
  near 1,350 tokens (no pair occurs twice any more).
* **many distinct words**: 1 MB of made-up words drawn with Zipf frequencies
  from a list of 50,000 (seed 0), closer to natural language in the number of
  distinct words, where the merge loop, not the splitting, takes the time. The
  naive trainer runs on it once, and only up to ``--naive-up-to`` tokens (every
  merge recounts every distinct word: minutes).

Compression (bytes per token, more is better) is measured on held-out text
(seed 1): 100 KB of each corpus, and 300 KB of made-up words.

Goals, checked in the same run: the incremental trainer at least 10 times as
fast as the naive one on 1 MB, by CPU time (both run single-threaded in this
process, and CPU time is what other work on a shared machine disturbs least;
the wall-clock ratio is recorded too), judged on each text at the largest vocabulary
size both run (on the book's corpus training then runs to the end: every merge
the text allows), and our compression within 2 %
of the ``tokenizers`` vocabulary of the same size. The ratio is also reported
for the smaller sizes, where it is lower: both of our trainers first split the
text into words (the same step, timed on its own as ``split_seconds``), and
with few merges to learn that shared step is most of the time. The speed ratio to ``tokenizers`` is
reported as it comes out, by the wall clock (``tokenizers`` runs several threads,
so its CPU time adds theirs up).

Writes ``benchmarks/results/bpe.json``, which ``book/benchmarks.md`` shows;
``--quick`` (100 KB, one vocabulary size per text, one repeat) writes a file only where
``--out`` says.

Run:  python benchmarks/bpe_vs_tokenizers.py [--quick] [--repeats 3] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from rl2llm.corpora import corpus
from rl2llm.tokenizer import GPT2_PATTERN, _word_counts, bytes_to_unicode, train_bpe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import load_average, provenance  # noqa: E402  (a sibling module of this script)

RESULTS = Path(__file__).resolve().parent / "results" / "bpe.json"
DOMAINS = ("stories", "arithmetic", "code")
GOALS = {"incremental_speedup": 10.0, "compression_gap": 0.02}
MIN_FREQUENCY = 2


def book_corpus(n_chars: int, seed: int) -> str:
    """A third each of stories, arithmetic and code."""
    third = n_chars // 3
    return "".join(corpus(d, n_chars=third if d != "code" else n_chars - 2 * third, seed=seed) for d in DOMAINS)


def zipf_words(n_chars: int, seed: int, n_words: int = 50_000, exponent: float = 1.1) -> str:
    """Made-up words (consonant-vowel syllables) with Zipf frequencies, in sentences of 5 to 15 words."""
    rng = np.random.default_rng(0)                       # the same word list for every seed
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words: dict[str, None] = {}
    while len(words) < n_words:
        lengths = rng.integers(1, 5, size=n_words)
        picks = rng.integers(len(syllables), size=(n_words, 4))
        for k, row in zip(lengths, picks):
            words["".join(syllables[i] for i in row[:k])] = None
    vocab = list(words)[:n_words]
    p = 1.0 / np.arange(1, n_words + 1) ** exponent
    draw = np.random.default_rng(seed + 1)
    n = n_chars // 4                                     # more words than needed (about 7 characters each)
    chosen = draw.choice(n_words, size=n, p=p / p.sum())
    ends = np.cumsum(draw.integers(5, 16, size=n // 5 + 1))
    newline = draw.random(len(ends)) < 0.2
    parts, start = [], 0
    for end, nl in zip(ends, newline):
        if end > n:
            break
        parts.append(" ".join(vocab[i] for i in chosen[start:end]).capitalize() + (".\n" if nl else ". "))
        start = end
    text = "".join(parts)
    assert len(text) >= n_chars, "draw more words"
    return text[:n_chars]


def hf_train(text: str, vocab_size: int):
    """Hugging Face's byte-level BPE trainer on ``text``, set up as ours."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=MIN_FREQUENCY, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def timed(repeats: int, fn):
    """Best wall time of ``repeats`` calls, the CPU time of that call, and its result."""
    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best[0]:
            best = (wall, cpu, out)
    return best


def hf_merges_as_ours(hf) -> list[tuple[bytes, bytes]]:
    """The merges of a trained ``tokenizers`` BPE as pairs of byte strings."""
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    model = json.loads(hf.to_str())["model"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    return [(bytes(byte_of[c] for c in a), bytes(byte_of[c] for c in b)) for a, b in merges]


def compression(encode, held_out: dict[str, str]) -> dict[str, float]:
    """Bytes per token on each held-out text and on all of them together."""
    out, total_bytes, total_tokens = {}, 0, 0
    for name, text in held_out.items():
        n_bytes, n_tokens = len(text.encode("utf-8")), len(encode(text))
        out[name] = n_bytes / n_tokens
        total_bytes, total_tokens = total_bytes + n_bytes, total_tokens + n_tokens
    out["all"] = total_bytes / total_tokens
    return out


def compare(name: str, text: str, held_out: dict[str, str], vocab_size: int, repeats: int,
            naive_repeats: int) -> dict:
    """Train the three trainers (the naive one ``naive_repeats`` times, none if 0) and compare them."""
    row = {"text": name, "text_bytes": len(text.encode("utf-8")), "vocab_size": vocab_size, "seconds": {},
           "cpu_seconds": {}, "repeats": {"naive": naive_repeats, "others": repeats}}
    naive = naive_repeats > 0
    runs = {"incremental": (repeats, lambda: train_bpe(text, vocab_size, method="incremental")),
            "tokenizers": (repeats, lambda: hf_train(text, vocab_size))}
    if naive:
        runs = {"naive": (naive_repeats, lambda: train_bpe(text, vocab_size, method="naive")), **runs}
    wall, cpu, words = timed(repeats, lambda: _word_counts(text, GPT2_PATTERN, ()))
    row["split_seconds"], row["distinct_words"] = wall, len(words)
    print(f"  {name}: splitting into words (both of our trainers do it first) {wall:.3f} s, "
          f"{len(words):,} distinct words", flush=True)
    trained = {}
    for trainer, (n, fn) in runs.items():
        wall, cpu, trained[trainer] = timed(n, fn)
        row["seconds"][trainer], row["cpu_seconds"][trainer] = wall, cpu
        print(f"  {name}, vocabulary {vocab_size}: {trainer} trained in {wall:.3f} s (CPU {cpu:.3f} s)", flush=True)
    ours, hf = trained["incremental"], trained["tokenizers"]
    if naive:
        row["same_merges_naive_incremental"] = trained["naive"].merges == ours.merges
    ours_pairs = [(ours.vocab[a], ours.vocab[b]) for a, b in ours.merges]
    theirs_pairs = hf_merges_as_ours(hf)
    row["vocab_reached"] = {"ours": ours.vocab_size, "tokenizers": hf.get_vocab_size()}
    row["merges_in_common"] = len(set(ours_pairs) & set(theirs_pairs))
    row["merges"] = {"ours": len(ours_pairs), "tokenizers": len(theirs_pairs)}
    row["same_merge_order"] = ours_pairs == theirs_pairs
    row["bytes_per_token"] = {"ours": compression(ours.encode, held_out),
                              "tokenizers": compression(lambda t: hf.encode(t).ids, held_out)}
    row["compression_gap"] = 1 - row["bytes_per_token"]["ours"]["all"] / row["bytes_per_token"]["tokenizers"]["all"]
    joined = "".join(held_out.values())
    ours._cache.clear()
    wall, _, ids = timed(repeats, lambda: ours.encode(joined))
    ours._cache.clear()
    wall_hf, _, enc = timed(repeats, lambda: hf.encode(joined))
    row["encode_seconds"] = {"ours": wall, "tokenizers": wall_hf, "bytes": len(joined.encode("utf-8"))}
    row["same_encoding"] = ids == enc.ids
    return row


def print_rows(rows: list[dict]) -> None:
    head = (f"{'text':<20}{'vocab':>6}{'naive s':>9}{'incr. s':>9}{'HF s':>8}{'naive/incr':>11}{'HF/incr':>9}"
            f"{'B/tok ours':>11}{'HF':>7}{'gap':>7}{'same merges':>12}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        s, b = r["seconds"], r["bytes_per_token"]
        naive = f"{s['naive']:>9.3f}" if "naive" in s else f"{'-':>9}"
        ratio = f"{s['naive'] / s['incremental']:>10.1f}x" if "naive" in s else f"{'-':>11}"
        print(f"{r['text']:<20}{r['vocab_size']:>6}{naive}{s['incremental']:>9.3f}{s['tokenizers']:>8.3f}{ratio}"
              f"{s['tokenizers'] / s['incremental']:>8.2f}x{b['ours']['all']:>11.3f}{b['tokenizers']['all']:>7.3f}"
              f"{r['compression_gap']:>7.2%}{r['merges_in_common']:>6}/{r['merges']['ours']:<5}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 KB, one vocabulary size, one repeat")
    parser.add_argument("--mb", type=float, default=1.0, help="megabytes of training text (default 1)")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--zipf-vocab", type=int, nargs="+", default=[2048, 8192],
                        help="vocabulary sizes on the made-up words")
    parser.add_argument("--naive-up-to", type=int, default=2048,
                        help="on the made-up words, run the naive trainer (once) up to this vocabulary size")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the best counts")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="RAYON_NUM_THREADS for tokenizers")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/bpe.json; --quick: none)")
    args = parser.parse_args(argv)
    if "tokenizers" in sys.modules and os.environ.get("RAYON_NUM_THREADS") != str(args.threads):
        print(f"note: tokenizers was imported before the thread count was set; RAYON_NUM_THREADS="
              f"{os.environ.get('RAYON_NUM_THREADS')}")
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)   # before tokenizers starts its thread pool
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    n_chars = 100_000 if args.quick else int(args.mb * 1_000_000)
    sizes = args.vocab_sizes[:1] if args.quick else args.vocab_sizes
    if args.quick:
        args.zipf_vocab = args.zipf_vocab[:1]
    repeats = 1 if args.quick else args.repeats
    load_before = load_average()

    text = book_corpus(n_chars, seed=0)
    held_out = {d: corpus(d, n_chars=n_chars // 10, seed=1) for d in DOMAINS}
    rows = [compare("the book's corpus", text, held_out, v, repeats, repeats) for v in sizes]
    zipf = zipf_words(n_chars, seed=0)
    zipf_held_out = {"made-up words": zipf_words(3 * n_chars // 10, seed=1)}
    for v in args.zipf_vocab:
        rows.append(compare("many distinct words", zipf, zipf_held_out, v, repeats, 1 if v <= args.naive_up_to else 0))
    print_rows(rows)

    with_naive = [r for r in rows if "naive" in r["seconds"]]
    # judged where training runs longest: the largest size with both trainers, on each text
    full = [max((r for r in with_naive if r["text"] == t), key=lambda r: r["vocab_size"])
            for t in dict.fromkeys(r["text"] for r in with_naive)]
    label = lambda r: f"{r['text']} ({r['vocab_size']})"   # noqa: E731
    summary = {
        # ours against ours: both single-threaded in one process, so judged by CPU time, which other work on a
        # shared machine disturbs far less than the wall clock (both are recorded)
        "incremental_speedup": min(r["cpu_seconds"]["naive"] / r["cpu_seconds"]["incremental"] for r in full),
        "incremental_speedup_wall": min(r["seconds"]["naive"] / r["seconds"]["incremental"] for r in full),
        "incremental_speedup_at": [label(r) for r in full],
        "incremental_speedup_by_row": {label(r): r["cpu_seconds"]["naive"] / r["cpu_seconds"]["incremental"]
                                       for r in with_naive},
        "incremental_wall_speedup_by_row": {label(r): r["seconds"]["naive"] / r["seconds"]["incremental"]
                                            for r in with_naive},
        "compression_gap": max(abs(r["compression_gap"]) for r in rows),
        # ours against tokenizers: by the wall clock (tokenizers uses several threads, and its CPU time adds them)
        "tokenizers_over_incremental": {label(r): r["seconds"]["tokenizers"] / r["seconds"]["incremental"]
                                        for r in rows},
    }
    summary["speedup_goal_met"] = summary["incremental_speedup"] >= GOALS["incremental_speedup"]
    summary["compression_goal_met"] = summary["compression_gap"] <= GOALS["compression_gap"]
    print(f"incremental over naive by CPU time, smallest at the largest sizes: {summary['incremental_speedup']:.1f}x "
          f"(wall clock {summary['incremental_speedup_wall']:.1f}x) "
          f"(goal {GOALS['incremental_speedup']:g}x: {'met' if summary['speedup_goal_met'] else 'MISSED'})")
    print(f"compression gap to tokenizers, largest: {summary['compression_gap']:.2%} "
          f"(goal {GOALS['compression_gap']:.0%}: {'met' if summary['compression_goal_met'] else 'MISSED'})")
    for r in rows:
        assert r.get("same_merges_naive_incremental", True), f"{r['text']}: naive and incremental merges differ"
    data = {"benchmark": "byte-pair encoding: rl2llm vs Hugging Face tokenizers", "schema": 1,
            **provenance(("rl2llm", "tokenizers", "numpy", "regex")),
            "load_average": {"before": load_before, "after": load_average()},
            "settings": {"quick": args.quick, "repeats": repeats, "threads": args.threads, "text_bytes": n_chars,
                         "min_frequency": MIN_FREQUENCY, "vocab_sizes": sizes, "zipf_vocab": args.zipf_vocab,
                         "naive_up_to": args.naive_up_to},
            "goals": GOALS, "summary": summary, "rows": rows}
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {out}")
    return data


if __name__ == "__main__":
    main()
