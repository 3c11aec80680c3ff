"""Training throughput: our GPT (rl2llm.transformer) against transformers' GPT2LMHeadModel, same everything.

The two models have the same configuration (GPT-2's block: pre-norm LayerNorm
with biases, GELU with the tanh approximation, learned positions, tied
embeddings, no dropout) and the *same initial weights*: the Hugging Face model
is ``to_gpt2(ours)``, a copy. Both train on the same batches (random windows of
the book's generated stories, byte-level, drawn once and shared), with the same
optimizer (AdamW, lr 1e-3, betas (0.9, 0.95), no weight decay, PyTorch's
default implementation), the same gradient clipping (norm 1.0), the same
number of PyTorch threads, in the same process.

A training step on each side is exactly what a training loop does: forward
pass to the logits, the mean cross-entropy of the next tokens (ours inside its
``forward``; for ``GPT2LMHeadModel`` computed from its logits with the same
function, as passing ``labels`` would drop one position per row), backward
pass, clip, optimizer step, ``zero_grad``. Each side runs ``--steps`` steps per
round; the sides alternate, the first side changing every round, for
``--rounds`` rounds after one untimed warm-up round. Throughput is tokens per
second (``steps * batch * block`` over the wall time of a round), the median
over rounds; the CPU time of the process is recorded too, since other work on
a shared machine stretches the wall clock more than CPU time. Because both
start from the same weights and see the same batches, their losses must
agree: the script asserts that they do over the first round (to 1e-3; float
sums in another order make them drift apart slowly afterwards).

Goal: ours at least 1.0 times GPT2LMHeadModel's tokens per second.

Writes ``benchmarks/results/gpt_throughput.json`` (settings, per-round rows,
summary, date, machine, load, versions, commit), which the Benchmarks page
shows; ``--quick`` (a few steps) writes a file only where ``--out`` says.

Run:  python benchmarks/gpt_throughput.py [--quick] [--threads 2] [--rounds 6] [--steps 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rl2llm.corpora import corpus
from rl2llm.transformer import GPT, GPTConfig, encode, get_batch, n_parameters, to_gpt2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import load_average, write_results  # noqa: E402  (a sibling module of this script)

RESULTS = Path(__file__).resolve().parent / "results" / "gpt_throughput.json"
#: GPT-2's block at about half a million parameters, byte-level (256 tokens).
CONFIG = dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=96)
GOAL = 1.0
LR, BETAS, CLIP = 1e-3, (0.9, 0.95), 1.0


def make_sides(config: GPTConfig, seed: int):
    """Our GPT and a GPT2LMHeadModel holding the same weights, each with its optimizer, in training mode."""
    torch.manual_seed(seed)
    ours = GPT(config)
    theirs = to_gpt2(ours)
    sides = {}
    for name, model in (("rl2llm", ours), ("transformers", theirs)):
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=0.0)
        sides[name] = (model, optimizer)
    return sides


def step_ours(model, optimizer, x, y) -> float:
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def step_theirs(model, optimizer, x, y) -> float:
    logits = model(input_ids=x).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


STEP = {"rl2llm": step_ours, "transformers": step_theirs}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    config = GPTConfig(**CONFIG)
    data = encode(corpus("stories", n_chars=2_000_000 if not args.quick else 200_000, seed=0))
    g = torch.Generator().manual_seed(args.seed)
    total_steps = (args.rounds + 1) * args.steps
    batches = [get_batch(data, args.batch, config.block_size, g) for _ in range(total_steps)]
    sides = make_sides(config, args.seed)
    hf_attention = sides["transformers"][0].config._attn_implementation
    tokens_per_round = args.steps * args.batch * config.block_size
    losses = {name: [] for name in sides}
    rows = []
    for r in range(args.rounds + 1):             # round 0 is the untimed warm-up
        chunk = batches[r * args.steps:(r + 1) * args.steps]
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for name in order:
            model, optimizer = sides[name]
            wall, cpu = time.perf_counter(), time.process_time()
            for x, y in chunk:
                losses[name].append(STEP[name](model, optimizer, x, y))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if r > 0:
                rows.append({"round": r, "library": name, "first": name == order[0], "seconds": wall,
                             "cpu_seconds": cpu, "tokens_per_second": tokens_per_round / wall})
            print(f"round {r}{' (warm-up)' if r == 0 else ''}: {name:<13} {wall:6.2f} s "
                  f"(CPU {cpu:6.2f} s)  {tokens_per_round / wall:9,.0f} tokens/s  loss {losses[name][-1]:.3f}",
                  flush=True)
    first = args.steps
    gap = max(abs(a - b) for a, b in zip(losses["rl2llm"][:first], losses["transformers"][:first]))
    summary = {}
    for name in sides:
        mine = [row for row in rows if row["library"] == name]
        summary[name] = {
            "tokens_per_second": statistics.median(row["tokens_per_second"] for row in mine),
            "cpu_tokens_per_second": tokens_per_round * len(mine) / sum(row["cpu_seconds"] for row in mine),
            "final_loss": losses[name][-1]}
    ratio = summary["rl2llm"]["tokens_per_second"] / summary["transformers"]["tokens_per_second"]
    cpu_ratio = summary["rl2llm"]["cpu_tokens_per_second"] / summary["transformers"]["cpu_tokens_per_second"]
    summary.update({"speed_ratio": ratio, "cpu_speed_ratio": cpu_ratio, "speed_goal_met": ratio >= GOAL,
                    "loss_gap_first_round": gap,
                    "loss_gap_final": abs(losses["rl2llm"][-1] - losses["transformers"][-1])})
    print(f"\nours {summary['rl2llm']['tokens_per_second']:,.0f} tokens/s, GPT2LMHeadModel "
          f"{summary['transformers']['tokens_per_second']:,.0f} tokens/s: ratio {ratio:.2f} "
          f"(by CPU time {cpu_ratio:.2f}; goal {GOAL:g}); largest loss difference over the first "
          f"{first} steps {gap:.1e}")
    settings = {"quick": args.quick, "threads": args.threads, "rounds": args.rounds, "steps_per_round": args.steps,
                "batch_size": args.batch, "seed": args.seed, "config": CONFIG, "parameters": n_parameters(config),
                "tokens_per_step": args.batch * config.block_size, "optimizer": "AdamW", "lr": LR,
                "betas": list(BETAS), "weight_decay": 0.0, "grad_clip": CLIP, "hf_attention": hf_attention,
                "data": "byte-level generated stories (rl2llm.corpora)"}
    return {"settings": settings, "rows": rows, "summary": summary, "goals": {"speed_ratio": GOAL}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 steps (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads on both sides")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per side (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per side per round")
    parser.add_argument("--batch", type=int, default=16, help="sequences per batch (of 128 tokens)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/gpt_throughput.json; "
                        "--quick: none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 3
    load_before = load_average()
    result = run(args)
    assert result["summary"]["loss_gap_first_round"] < 1e-3, \
        f"the two sides diverge: losses differ by {result['summary']['loss_gap_first_round']:.2e}"
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        write_results(out, "GPT training throughput: rl2llm vs transformers GPT2LMHeadModel", ("rl2llm", "torch", "transformers"), load_before, result)
    return result


if __name__ == "__main__":
    main()
