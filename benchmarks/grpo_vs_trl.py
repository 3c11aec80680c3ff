"""GRPO: ours (rl2llm.grpo.train_grpo) against TRL 1.16's GRPOTrainer, same model, data and settings.

Both sides start from the same model, the zoo's half-trained arithmetic model
(``zoo.load("arithmetic", "half-trained")``, about 0.45M parameters, two-digit
sums such as ``"07+35="`` -> ``"042"``), and train on the same prompts (400
generated problems) with the same reward (1 for the right answer, 0 otherwise,
``corpora.check_arithmetic``) and the same settings: ``--group`` answers per
prompt, ``--prompts`` prompts per step, at most 4 new tokens at temperature 1,
one gradient step per batch, Adam (AdamW with no weight decay on TRL's side)
at a constant ``--lr``, gradient norm clipped at 1, no KL penalty (``beta = 0``,
TRL's default), advantages ``(r - mean) / (std + 1e-4)`` per group and the
per-answer mean of the clipped ratio (TRL's ``loss_type="grpo"``), in float32
(TRL's ``bf16`` default off), without activation checkpointing (TRL's default
on), with the same number of PyTorch threads, in the same process. The data
order differs (each side shuffles with its own generator).

Each round trains a fresh copy on each side for ``--steps`` steps; the sides
alternate, the first side changing every round, after an untimed warm-up run
of a few steps on each side; round ``r`` uses seed ``r`` on both sides. For
each run the script records the mean reward of every step's samples (the
reward curve), the wall time of training (TRL: ``trainer.train()`` only, the
trainer built before the clock starts), and the greedy exact match on 200
held-out problems before and after. Steps per second is ``--steps`` over the
wall time; the speed ratio is the median over rounds of ours over theirs.

Goals: ours at least TRL's quality (exact match after training, mean over
rounds, within 0.05) and at least 1.5 times its steps per second.

Writes ``benchmarks/results/grpo_vs_trl.json`` (settings, per-run rows with
reward curves, summary, date, machine, load, versions, commit), which the
Benchmarks page shows; ``--quick`` (2 rounds of 4 steps) writes a file only
where ``--out`` says. Importing TRL takes several seconds, which is why this
is a script and not a chapter cell.

Run:  python benchmarks/grpo_vs_trl.py [--quick] [--threads 2] [--rounds 3] [--steps 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from rl2llm import corpora, zoo
from rl2llm.grpo import GRPOConfig, train_grpo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import load_average, write_results  # noqa: E402  (a sibling module of this script)

RESULTS = Path(__file__).resolve().parent / "results" / "grpo_vs_trl.json"
SPEED_GOAL, QUALITY_MARGIN = 1.5, 0.05
N_PROMPTS, N_EVAL, DATA_SEED = 400, 200, 123


def exact_match(model, tokenizer, items) -> float:
    model.eval()
    return zoo.exact_match(model, tokenizer, items)


def run_ours(m, items, eval_items, args, seed: int) -> dict:
    config = GRPOConfig(steps=args.steps, group_size=args.group, prompts_per_step=args.prompts, lr=args.lr,
                        beta=0.0, advantage="grpo", aggregation="sequence", iterations=1, temperature=1.0,
                        max_new_tokens=4, grad_clip=1.0, eval_every=0, threads=None)
    reward = lambda item, completion: float(corpora.check_arithmetic(item.prompt, completion))
    wall, cpu = time.perf_counter(), time.process_time()
    history = train_grpo(m, reward, items, config, seed=seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"seconds": wall, "cpu_seconds": cpu, "reward": history.reward,
            "em_after": exact_match(history.model, m.tokenizer, eval_items)}


def make_trl(m, items, args, seed: int, steps: int):
    """A GRPOTrainer on a copy of the zoo model, built (not timed) and ready to train."""
    import copy

    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    rewards: list[float] = []

    def reward_fn(prompts, completions, **kwargs):
        out = [float(corpora.check_arithmetic(p, c)) for p, c in zip(prompts, completions)]
        rewards.append(float(np.mean(out)))
        return out

    config = TRLConfig(
        output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "rl2llm-grpo-vs-trl"),
        per_device_train_batch_size=args.group * args.prompts, num_generations=args.group,
        gradient_accumulation_steps=1, steps_per_generation=1, max_completion_length=4, temperature=1.0,
        top_p=1.0, top_k=0, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, beta=0.0, loss_type="grpo", scale_rewards="group", num_iterations=1,
        epsilon=0.2, max_steps=steps, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=1, seed=seed, data_seed=seed,
        dataloader_num_workers=0, disable_tqdm=True, log_completions=False)
    dataset = Dataset.from_dict({"prompt": [it.prompt for it in items]})
    model = copy.deepcopy(m.model)
    model.train()
    tokenizer = copy.deepcopy(m.tokenizer)
    tokenizer.padding_side = "left"
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=config, train_dataset=dataset,
                          processing_class=tokenizer)
    for callback in (PrinterCallback, ProgressCallback):   # no per-step printing on either side
        trainer.remove_callback(callback)
    return trainer, rewards


def run_trl(m, items, eval_items, args, seed: int) -> dict:
    trainer, rewards = make_trl(m, items, args, seed, args.steps)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"seconds": wall, "cpu_seconds": cpu, "reward": rewards,
            "em_after": exact_match(trainer.model, m.tokenizer, eval_items)}


RUN = {"rl2llm": run_ours, "trl": run_trl}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("transformers", "trl", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import_start = time.perf_counter()
    import trl  # noqa: F401  (timed once: the chapter would pay this)
    import_seconds = time.perf_counter() - import_start
    m = zoo.load("arithmetic", "half-trained", progress=False)
    items = corpora.arithmetic_problems(N_PROMPTS, DATA_SEED, **m.spec.options)
    eval_items = zoo.eval_items("arithmetic", N_EVAL)
    em_before = exact_match(m.model, m.tokenizer, eval_items)
    warm = argparse.Namespace(**{**vars(args), "steps": 2})
    for name in RUN:                                   # untimed warm-up
        RUN[name](m, items, eval_items, warm, 99)
    rows = []
    for r in range(args.rounds):
        order = list(RUN) if r % 2 == 0 else list(RUN)[::-1]
        for name in order:
            out = RUN[name](m, items, eval_items, args, r)
            row = {"round": r, "seed": r, "library": name, "first": name == order[0],
                   "steps_per_second": args.steps / out["seconds"], **out}
            rows.append(row)
            print(f"round {r}: {name:<7} {out['seconds']:6.2f} s  {row['steps_per_second']:5.2f} steps/s  "
                  f"reward {np.mean(out['reward'][:5]):.2f} -> {np.mean(out['reward'][-5:]):.2f}  "
                  f"exact match {em_before:.3f} -> {out['em_after']:.3f}", flush=True)
    summary = {}
    for name in RUN:
        mine = [row for row in rows if row["library"] == name]
        summary[name] = {"steps_per_second": statistics.median(row["steps_per_second"] for row in mine),
                         "cpu_steps_per_second": args.steps * len(mine) / sum(row["cpu_seconds"] for row in mine),
                         "em_after_mean": float(np.mean([row["em_after"] for row in mine])),
                         "em_after": [row["em_after"] for row in mine],
                         "reward_last5_mean": float(np.mean([np.mean(row["reward"][-5:]) for row in mine]))}
    ratios = [a["steps_per_second"] / b["steps_per_second"]
              for a, b in zip([x for x in rows if x["library"] == "rl2llm"], [x for x in rows if x["library"] == "trl"])]
    ratio = statistics.median(ratios)
    quality_gap = summary["rl2llm"]["em_after_mean"] - summary["trl"]["em_after_mean"]
    cpu_ratio = summary["rl2llm"]["cpu_steps_per_second"] / summary["trl"]["cpu_steps_per_second"]
    summary.update({"em_before": em_before, "speed_ratio": ratio, "speed_ratios": ratios, "cpu_speed_ratio": cpu_ratio,
                    "speed_goal_met": ratio >= SPEED_GOAL, "quality_gap": quality_gap,
                    "quality_goal_met": quality_gap >= -QUALITY_MARGIN, "trl_import_seconds": import_seconds})
    print(f"\nours {summary['rl2llm']['steps_per_second']:.2f} steps/s, TRL {summary['trl']['steps_per_second']:.2f} "
          f"steps/s: ratio {ratio:.2f} (goal {SPEED_GOAL:g}); exact match after {summary['rl2llm']['em_after_mean']:.3f} "
          f"vs {summary['trl']['em_after_mean']:.3f} (from {em_before:.3f}); importing trl took {import_seconds:.1f} s")
    settings = {"quick": args.quick, "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
                "group_size": args.group, "prompts_per_step": args.prompts, "lr": args.lr, "beta": 0.0,
                "max_new_tokens": 4, "temperature": 1.0, "clip": 0.2, "grad_clip": 1.0,
                "loss": "per-answer mean (TRL loss_type='grpo')", "advantage": "(r - mean) / (std + 1e-4) per group",
                "optimizer": "Adam (TRL: AdamW, weight decay 0)", "model": "zoo arithmetic, half-trained",
                "parameters": int(sum(p.numel() for p in m.model.parameters())),
                "n_prompts": N_PROMPTS, "n_eval": N_EVAL}
    return {"settings": settings, "rows": rows, "summary": summary,
            "goals": {"speed_ratio": SPEED_GOAL, "quality_margin": QUALITY_MARGIN}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 steps (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads on both sides")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (seeds 0, 1, ...)")
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps per run")
    parser.add_argument("--group", type=int, default=8, help="answers per prompt")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/grpo_vs_trl.json; "
                        "--quick: none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 4
    load_before = load_average()
    result = run(args)
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        write_results(out, "GRPO: rl2llm vs TRL GRPOTrainer", ("rl2llm", "torch", "transformers", "trl"), load_before, result)
    return result


if __name__ == "__main__":
    main()
