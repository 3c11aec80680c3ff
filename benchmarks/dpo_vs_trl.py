"""DPO training: ours (rl2llm.dpo) against TRL's DPOTrainer, same model, data and settings.

Both sides start from the zoo's stories model and train on the same
preference pairs (two of the model's own stories for each of 256 openings,
judged by the gold reward with no noise, ties dropped: Lecture 15's data),
with the sigmoid DPO loss at the same ``beta``, the same batch of pairs, the
same number of steps, AdamW at the same constant learning rate (no warm-up, no
decay, no weight decay, betas (0.9, 0.999)), gradients clipped to norm 1.0,
float32, the same number of PyTorch threads, in the same process. TRL is set
up for a CPU as its defaults are not: ``bf16=False`` (bf16 is 8 to 11 times
slower on a CPU without native bf16), no activation checkpointing, and the
reference model's log-probabilities computed once before training
(``precompute_ref_log_probs=True``), as ours are.

A round trains one model on each side, from the same start, with the round's
seed; the sides alternate which goes first, one untimed warm-up round first.
Speed is training steps per second over the whole training call (for TRL
``trainer.train()``, for us ``train_dpo``; both include the reference pass,
neither includes building the trainer, where TRL tokenizes the data), the
median over rounds; the process's CPU time is recorded too. Quality, per
round: the loss curve (TRL's logged loss per step, ours per step), and two
measures of the trained models on the same held-out openings with the same
sampling seed: the gold judge's win rate against the starting model, and the
DPO loss and implicit-reward accuracy on all training pairs. The minibatches
differ (each side shuffles with its own sampler), so the curves agree in
shape and level, not step by step; the loss itself is tested equal to TRL's
on the same batch in ``tests/test_dpo.py``.

Goals: ours at least TRL's quality (the win rate, averaged over rounds, within
0.05 of TRL's or above) and at least 1.5 times its steps per second.

Writes ``benchmarks/results/dpo_vs_trl.json`` (settings, per-round rows, loss
curves, summary, date, machine, load, versions, commit), which the Benchmarks
page shows; ``--quick`` (a few steps) writes a file only where ``--out`` says.

Run:  python benchmarks/dpo_vs_trl.py [--quick] [--threads 2] [--rounds 3] [--steps 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rl2llm import dpo, zoo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import load_average, write_results  # noqa: E402  (a sibling module of this script)

RESULTS = Path(__file__).resolve().parent / "results" / "dpo_vs_trl.json"
SPEED_GOAL, QUALITY_TOLERANCE = 1.5, 0.05
CLIP = 1.0


def train_ours(zm, prefs, args, seed):
    policy, history = dpo.train_dpo(zm, prefs, beta=args.beta, steps=args.steps, lr=args.lr,
                                    batch_size=args.batch, seed=seed, max_grad_norm=CLIP)
    return policy, history.loss


def train_trl(zm, prefs, args, seed, workdir):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in prefs]
    config = DPOConfig(output_dir=workdir, beta=args.beta, loss_type=["sigmoid"], learning_rate=args.lr,
                       lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=CLIP,
                       per_device_train_batch_size=args.batch, max_steps=args.steps, bf16=False, fp16=False,
                       activation_checkpointing=False, precompute_ref_log_probs=True, use_cpu=True,
                       report_to=[], logging_steps=1, save_strategy="no", seed=seed, data_seed=seed,
                       dataloader_num_workers=0, disable_tqdm=True)
    policy = copy.deepcopy(zm.model)
    trainer = DPOTrainer(model=policy, ref_model=copy.deepcopy(zm.model), args=config,
                         train_dataset=Dataset.from_list(rows), processing_class=zm.tokenizer)
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)   # the log goes to trainer.state.log_history, not the terminal
    return trainer, policy


def quality(policy, zm, prefs, test, args) -> dict:
    batch = dpo.preference_batch(zm.tokenizer, prefs)
    with torch.no_grad():
        pol, ref = dpo.pair_log_probs(policy, batch), dpo.pair_log_probs(zm.model, batch)
    out = dpo.dpo_loss(pol.chosen, pol.rejected, ref.chosen, ref.rejected, args.beta)
    verdict = dpo.win_rate(policy, zm.model, zm.tokenizer, test, max_new_tokens=80, seed=123)
    return {"win_rate": verdict.win_rate, "kl": verdict.kl, "train_loss": float(out.loss),
            "train_accuracy": out.accuracy}


def run(args) -> dict:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(name, "1")
    torch.set_num_threads(args.threads)
    zm = zoo.load("stories")
    prefs = dpo.dpo_prefs(zm, "on-policy", n_prompts=args.prompts)
    test = zoo.eval_items("stories", args.test)
    rows, curves = [], {"rl2llm": [], "trl": []}
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(args.rounds + 1):            # round 0 is the untimed warm-up
            seed = args.seed + r
            order = ["rl2llm", "trl"] if r % 2 == 0 else ["trl", "rl2llm"]
            for name in order:
                if name == "trl":
                    trainer, policy = train_trl(zm, prefs, args, seed, workdir)
                    wall, cpu = time.perf_counter(), time.process_time()
                    trainer.train()
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
                else:
                    wall, cpu = time.perf_counter(), time.process_time()
                    policy, losses = train_ours(zm, prefs, args, seed)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                policy.eval()
                measured = quality(policy, zm, prefs, test, args)
                print(f"round {r}{' (warm-up)' if r == 0 else ''}: {name:<7} {wall:6.2f} s (CPU {cpu:6.2f} s) "
                      f"{args.steps / wall:6.2f} steps/s  last loss {losses[-1]:.3f}  win rate "
                      f"{measured['win_rate']:.3f}  KL {measured['kl']:.2f}", flush=True)
                if r > 0:
                    rows.append({"round": r, "library": name, "first": name == order[0], "seed": seed,
                                 "seconds": wall, "cpu_seconds": cpu, "steps_per_second": args.steps / wall,
                                 **measured})
                    curves[name].append(losses)
    summary = {}
    for name in curves:
        mine = [row for row in rows if row["library"] == name]
        summary[name] = {"steps_per_second": statistics.median(row["steps_per_second"] for row in mine),
                         "cpu_steps_per_second": args.steps * len(mine) / sum(row["cpu_seconds"] for row in mine),
                         "win_rate": float(np.mean([row["win_rate"] for row in mine])),
                         "kl": float(np.mean([row["kl"] for row in mine])),
                         "train_loss": float(np.mean([row["train_loss"] for row in mine])),
                         "final_logged_loss": float(np.mean([c[-1] for c in curves[name]]))}
    ratio = summary["rl2llm"]["steps_per_second"] / summary["trl"]["steps_per_second"]
    cpu_ratio = summary["rl2llm"]["cpu_steps_per_second"] / summary["trl"]["cpu_steps_per_second"]
    quality_gap = summary["rl2llm"]["win_rate"] - summary["trl"]["win_rate"]
    summary.update({"speed_ratio": ratio, "cpu_speed_ratio": cpu_ratio, "speed_goal_met": ratio >= SPEED_GOAL,
                    "win_rate_gap": quality_gap, "quality_goal_met": quality_gap >= -QUALITY_TOLERANCE})
    print(f"\nours {summary['rl2llm']['steps_per_second']:.2f} steps/s, TRL {summary['trl']['steps_per_second']:.2f} "
          f"steps/s: ratio {ratio:.2f} (by CPU time {cpu_ratio:.2f}; goal {SPEED_GOAL:g}); win rate ours "
          f"{summary['rl2llm']['win_rate']:.3f}, TRL {summary['trl']['win_rate']:.3f}")
    settings = {"quick": args.quick, "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
                "batch_pairs": args.batch, "beta": args.beta, "lr": args.lr, "seed": args.seed,
                "pairs": len(prefs), "prompts": args.prompts, "test_prompts": args.test, "loss_type": "sigmoid",
                "optimizer": "AdamW", "grad_clip": CLIP, "lr_schedule": "constant", "dtype": "float32",
                "model": "zoo stories (LlamaForCausalLM)",
                "parameters": int(sum(p.numel() for p in zm.model.parameters())),
                "trl": {"bf16": False, "activation_checkpointing": False, "precompute_ref_log_probs": True}}
    return {"settings": settings, "rows": rows, "curves": curves, "summary": summary,
            "goals": {"speed_ratio": SPEED_GOAL, "win_rate_tolerance": QUALITY_TOLERANCE}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 4 steps (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads on both sides")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per side per round")
    parser.add_argument("--batch", type=int, default=8, help="preference pairs per step")
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--prompts", type=int, default=256, help="openings the preference pairs are drawn for")
    parser.add_argument("--test", type=int, default=128, help="held-out openings for the win rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/dpo_vs_trl.json; "
                        "--quick: none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.prompts, args.test = 1, 4, 32, 16
    load_before = load_average()
    result = run(args)
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        write_results(out, "DPO training: rl2llm vs TRL DPOTrainer", ("rl2llm", "torch", "transformers", "trl", "peft"), load_before, result)
    return result


if __name__ == "__main__":
    main()
