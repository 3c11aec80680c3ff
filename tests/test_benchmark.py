"""The value-iteration benchmark runs, and both libraries give the same answer (timings not checked)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "value_iteration.py"


def test_benchmark_quick_answers_agree(capsys):
    spec = importlib.util.spec_from_file_location("vi_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--quick", "--repeats", "1"])
    assert len(rows) == 2
    for r in rows:
        ours, theirs = r["sweeps"]
        assert ours == theirs > 1
        assert r["v_diff"] < r["bound"]
        assert r["as_good"] == 1.0
        assert r["same_action"] > 0.99
    assert "speed-up" in capsys.readouterr().out
