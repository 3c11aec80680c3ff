"""Value iteration: rl2llm against mdptoolbox-hiive, same sweeps, same answer.

Problems: a 10,000-state random MDP (4 actions, 10 successors each) and a
100x100 slippery grid world (goal in a corner, seeded walls and pits), both
with gamma 0.95. Both libraries start from V = 0.

* Ours: ``rl2llm.dp.value_iteration(mdp, tol)`` stops at the first sweep with
  ``max|V_k+1 - V_k| < tol``, then acts greedily on the final V.
* Theirs: ``hiive.mdptoolbox.mdp.ValueIteration`` stops when the *span*
  ``max(V_k+1 - V_k) - min(V_k+1 - V_k)`` drops below ``epsilon (1-g)/g``. We
  pass ``epsilon = tol g/(1-g)``, so its threshold is exactly ``tol``. A span is
  not a sup-norm: on the random MDP every value rises by nearly the same amount
  each sweep, so its rule fires after a few dozen sweeps while V is still far
  from V*. For the timed comparison we therefore pin it to our sweep count
  (``max_iter = ours``, threshold 0): both do the same sweeps of the same
  arithmetic, so the value functions must agree. What its own rule gives is
  printed underneath.

Timed (time.perf_counter, best of --repeats): "solve" is ``value_iteration``
(greedy policy included) against ``ValueIteration.run()`` (its per-sweep
bookkeeping included); "init" builds each library's object from ready arrays:
our ``FiniteMDP`` (checks P) against mdptoolbox's ``util.check`` plus the
``ValueIteration`` constructor (an iteration bound, ``_boundIter``). That takes
seconds, so it is timed once. Converting to mdptoolbox's format (A sparse
(S, S) matrices, R of shape (S, A)) is not timed.

Writes ``benchmarks/results/value_iteration.json`` (the rows, the settings, the
date, the machine, the versions, the commit), which ``book/benchmarks.md`` shows;
``--quick`` writes a file only where ``--out`` says.

Run:  python benchmarks/value_iteration.py [--quick] [--repeats 3] [--tol 1e-8] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from hiive.mdptoolbox.mdp import ValueIteration
from hiive.mdptoolbox.util import check

from rl2llm.dp import q_from_v, value_iteration
from rl2llm.mdp import FiniteMDP, gridworld, random_mdp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import load_average, provenance  # noqa: E402  (a sibling module of this script)

RESULTS = Path(__file__).resolve().parent / "results" / "value_iteration.json"


def grid_layout(n: int, seed: int = 0) -> list[str]:
    """An n x n grid: start top-left, goal bottom-right, ~5% walls, ~1% pits."""
    u = np.random.default_rng(seed).random((n, n))
    grid = np.where(u < 0.05, "#", np.where(u < 0.06, "X", "."))
    grid[0, 0], grid[-1, -1] = "S", "G"
    return ["".join(row) for row in grid]


def problems(quick: bool) -> list[tuple[str, FiniteMDP]]:
    n_states, side = (500, 20) if quick else (10_000, 100)
    return [
        ("random MDP", random_mdp(n_states, n_actions=4, n_successors=10, gamma=0.95, seed=0)),
        (f"grid {side}x{side}", gridworld(grid_layout(side), slip=0.2, gamma=0.95, step_reward=-0.01)),
    ]


def best_of(repeats: int, fn):
    """Smallest wall time of ``repeats`` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out  # nothing is cached between calls: each one solves from scratch


def agreement(mdp: FiniteMDP, V: np.ndarray, policy, V_ours: np.ndarray, policy_ours, qtol: float) -> dict:
    """Max |V diff| and how often the other policy's action is (as good as) ours, judged by our Q."""
    Q = q_from_v(mdp, V_ours)
    chosen = Q[np.arange(mdp.n_states), np.asarray(policy)]
    return {
        "v_diff": float(np.max(np.abs(np.asarray(V) - V_ours))),
        "same_action": float(np.mean(np.asarray(policy) == policy_ours)),
        "as_good": float(np.mean(chosen >= Q.max(axis=1) - qtol)),
    }


def compare(name: str, mdp: FiniteMDP, tol: float, repeats: int) -> dict:
    (S, A), g = mdp.R.shape, mdp.gamma
    P, R = [mdp.P[a::A].tocsr() for a in range(A)], mdp.R.copy()  # our row s*A + a is their P[a][s]
    init_ours, _ = best_of(repeats, lambda: FiniteMDP(mdp.P, mdp.R, g, terminal=mdp.terminal))
    solve_ours, ours = best_of(repeats, lambda: value_iteration(mdp, tol=tol))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        check(P, R)  # the constructor's first step; timed apart so we can say what it costs
        check_theirs = time.perf_counter() - start
        template = ValueIteration(P, R, g, epsilon=tol * g / (1 - g), skip_check=True)  # threshold == tol
        init_theirs = time.perf_counter() - start
    assert abs(template.thresh - tol) <= 1e-12 * tol

    def run_theirs(pinned: bool) -> ValueIteration:
        vi = copy.copy(template)  # run() rebinds V, never writes into it: the copy starts at V = 0
        if pinned:
            vi.max_iter, vi.thresh = ours.iterations, 0.0
        vi.run()
        return vi

    solve_theirs, theirs = best_of(repeats, lambda: run_theirs(pinned=True))
    own_time, own = best_of(repeats, lambda: run_theirs(pinned=False))
    bound = 2 * tol * g / (1 - g)  # each V is within tol*g/(1-g) of V*
    return {
        "problem": name, "states": S, "sweeps": (ours.iterations, theirs.iter),
        "solve": (solve_ours, solve_theirs), "init": (init_ours, init_theirs), "check": check_theirs, "bound": bound,
        **agreement(mdp, theirs.V, theirs.policy, ours.V, ours.policy, qtol=bound),
        "own": {"sweeps": own.iter, "bound_iter": template.max_iter, "time": own_time,
                **agreement(mdp, own.V, own.policy, ours.V, ours.policy, qtol=bound)},
        "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
    }


def print_table(rows: list[dict], tol: float, repeats: int) -> None:
    print(f"value iteration, tol = {tol:g}, best of {repeats}; times in seconds; "
          "speed-up = theirs / ours (solve, and init + solve)")
    head = (f"{'problem':<13}{'states':>7} {'sweeps o/t':>11}{'solve ours':>11}{'theirs':>9}{'speed-up':>9}"
            f"{'init ours':>10}{'theirs':>8}{'total x':>9}{'max|V diff|':>12}{'policy same/as-good':>21}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        (so, st), (io, it) = r["solve"], r["init"]
        print(f"{r['problem']:<13}{r['states']:>7} {'%d/%d' % r['sweeps']:>11}{so:>11.4f}{st:>9.4f}{st / so:>8.1f}x"
              f"{io:>10.4f}{it:>8.2f}{(it + st) / (io + so):>8.0f}x{r['v_diff']:>12.1e}"
              f"{r['same_action']:>13.2%} /{r['as_good']:>6.1%}")
    print(f"bound on max|V diff|: 2*tol*g/(1-g) = {rows[0]['bound']:.1e}; 'as-good': their action's Q "
          "(under our V) within that bound of the best")
    print("\nmdptoolbox left to its own stopping rule (span < tol, iteration cap from _boundIter):")
    for r in rows:
        o = r["own"]
        print(f"  {r['problem']:<13} {o['sweeps']:>4} sweeps (cap {o['bound_iter']}), {o['time']:.4f} s, "
              f"max|V diff| {o['v_diff']:.1e}, policy same {o['same_action']:.2%} / as-good {o['as_good']:.1%}")
    print("\nmdptoolbox init = util.check (skip_check=True drops it) + the rest, mostly _boundIter:")
    for r in rows:
        print(f"  {r['problem']:<13} {r['check']:.2f} s + {r['init'][1] - r['check']:.2f} s"
              + "".join(f"; warned {w}" for w in r["warnings"]))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problems (500 states, 20x20 grid)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the best counts")
    parser.add_argument("--tol", type=float, default=1e-8, help="stopping threshold of both libraries")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/value_iteration.json; "
                        "--quick: none)")
    args = parser.parse_args(argv)
    load_before = load_average()
    rows = [compare(name, mdp, args.tol, args.repeats) for name, mdp in problems(args.quick)]
    print_table(rows, args.tol, args.repeats)
    for r in rows:
        assert r["sweeps"][0] == r["sweeps"][1], f"{r['problem']}: different sweep counts"
        assert r["v_diff"] < r["bound"], f"{r['problem']}: value functions differ by {r['v_diff']:.2e}"
        assert r["as_good"] == 1.0, f"{r['problem']}: policies differ beyond ties"
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        write_results(out, rows, {"quick": args.quick, "repeats": args.repeats, "tol": args.tol}, load_before)
    return rows


def write_results(path: Path, rows: list[dict], settings: dict, load_before: list[float]) -> None:
    """The rows with the settings and where they ran, as JSON (NumPy numbers as plain ones)."""
    data = {"benchmark": "value iteration: rl2llm vs mdptoolbox-hiive", "schema": 1,
            **provenance(("rl2llm", "numpy", "scipy", "mdptoolbox-hiive")),
            "load_average": {"before": load_before, "after": load_average()}, "settings": settings, "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=lambda x: x.item() if hasattr(x, "item") else str(x)) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
