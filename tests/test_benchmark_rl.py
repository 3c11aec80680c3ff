"""The deep-RL benchmark against Stable-Baselines3 runs both sides and writes a well-formed results file,
and the Benchmarks page renders it (or says how to produce it). Sanity only: timings are not checked."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "rl_vs_sb3.py"


def _load_script():
    if importlib.util.find_spec("stable_baselines3") is None:
        pytest.skip("Stable-Baselines3 is a benchmark dependency: pip install --no-deps -r benchmarks/requirements.txt")
    if "rl_vs_sb3" not in sys.modules:
        spec = importlib.util.spec_from_file_location("rl_vs_sb3", SCRIPT)
        bench = importlib.util.module_from_spec(spec)
        sys.modules["rl_vs_sb3"] = bench  # dataclasses look their module up there
        spec.loader.exec_module(bench)
    return sys.modules["rl_vs_sb3"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The script's quick mode, every algorithm, results to a temporary file."""
    bench = _load_script()
    out = tmp_path_factory.mktemp("bench") / "cartpole.json"
    blocks = bench.main(["--quick", "--out", str(out)])
    return bench, blocks, out


@pytest.mark.slow  # trains every algorithm of the benchmark, both libraries (minutes)
def test_quick_run_trains_both_sides_of_every_algorithm(quick_run, capsys):
    bench, blocks, _ = quick_run
    assert set(blocks) == set(bench.ALGORITHMS)
    for key, block in blocks.items():
        algo = bench.ALGORITHMS[key]
        runs = block["runs"]
        assert [r["library"] for r in runs] == ["rl2llm", "stable-baselines3"], key
        for r in runs:
            where = f"{key}, {r['library']}"
            assert r["seed"] == 0 and r["episodes"] == 10, where
            assert r["env_steps"] == algo.quick_steps, f"{where}: {r['env_steps']} steps"
            # CartPole-v1: every episode lasts at least 8 steps and at most 500 (reward 1 a step);
            # Pendulum-v1: 200 steps, each costing between 0 and about 16.3
            low, high = {"CartPole-v1": (8, 500), "Pendulum-v1": (-200 * 16.3, 0)}[algo.env_id]
            assert low <= r["return_min"] <= r["return_mean"] <= high, f"{where}: return {r['return_mean']}"
            assert r["return_std"] >= 0 and r["seconds"] > 0 and r["cpu_seconds"] > 0, where
            assert r["steps_per_second"] == pytest.approx(r["env_steps"] / r["seconds"], rel=1e-3), where
        s = block["summary"]
        assert s["speed_ratio"] == pytest.approx(
            s["rl2llm"]["steps_per_second"] / s["stable-baselines3"]["steps_per_second"]), key
        assert s["return_goal_met"] == (s["rl2llm"]["return_mean"] >= algo.return_goal), key
        assert s["cpu_speed_ratio"] > 0, key


@pytest.mark.slow  # trains every algorithm of the benchmark, both libraries (minutes)
def test_quick_run_writes_a_well_formed_results_file(quick_run):
    bench, blocks, out = quick_run
    data = json.loads(out.read_text())
    assert data["schema"] == bench.SCHEMA and list(data["algorithms"]) == list(blocks)
    for block in data["algorithms"].values():
        assert block["settings"]["quick"] is True
        assert block["date"].endswith("UTC") and block["machine"]["cores"] >= 1 and block["machine"]["cpu"]
        assert block["versions"]["stable-baselines3"] == "2.9.2"
        assert {"torch", "gymnasium", "python", "rl2llm"} <= set(block["versions"])
        assert block["rl2llm_commit"] and len(block["load_average"]["before"]) == 3
        assert block["settings"]["threads"] == 1 and block["hyperparameters"]


@pytest.mark.slow  # trains every algorithm of the benchmark, both libraries (minutes)
def test_results_file_keeps_the_algorithms_a_run_did_not_touch(quick_run, tmp_path):
    bench, blocks, _ = quick_run
    path = tmp_path / "r.json"
    bench.write_results(path, {"dqn": blocks["dqn"]})
    bench.write_results(path, {"a2c": blocks["a2c"]})
    bench.write_results(path, {"dqn": {**blocks["dqn"], "date": "replaced"}})
    data = json.loads(path.read_text())
    assert list(data["algorithms"]) == ["dqn", "a2c"] and data["algorithms"]["dqn"]["date"] == "replaced"


def test_quick_runs_never_replace_the_published_results():
    bench = _load_script()
    assert bench.results_path("dqn", None, quick=True) is None
    assert bench.results_path("dqn", None, quick=False) == REPO / "benchmarks" / "results" / "cartpole.json"
    assert bench.results_path("dqn", Path("x.json"), quick=True) == Path("x.json")


def test_dqn_settings_are_the_zoo_hyperparameters():
    bench = _load_script()
    c, z = bench.ours_dqn_config(50_000), bench.ZOO_DQN
    assert (c.learning_rate, c.batch_size, c.buffer_size, c.learning_starts, c.gamma, c.train_every,
            c.gradient_steps, c.epsilon_fraction, c.epsilon_end, list(c.hidden)) == (
        z["learning_rate"], z["batch_size"], z["buffer_size"], z["learning_starts"], z["gamma"], z["train_freq"],
        z["gradient_steps"], z["exploration_fraction"], z["exploration_final_eps"], z["policy_kwargs"]["net_arch"])
    assert c.target_update == z["gradient_steps"] and c.max_grad_norm == 10.0


# --------------------------------------------------------------------------- the page


def _sphinx(src: Path, out: Path, *flags: str) -> str:
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", *flags, "-b", "html", str(src), str(out)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return build.stdout


def _render(tmp_path: Path, edition: str, results: Path | None) -> str:
    """Build a one-page Sphinx project with the page's directives (in a subprocess); return the HTML."""
    src = tmp_path / f"src-{edition}"
    (src / "benchmarks" / "results").mkdir(parents=True)
    if results is not None:
        shutil.copy(results, src / "benchmarks" / "results" / "cartpole.json")
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO / 'book' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'rl2llm_benchmarks']\n"
        f"def setup(app):\n    app.add_config_value('rl2llm_edition', {edition!r}, 'env')\n")
    (src / "index.md").write_text("# Benchmarks\n\n```{rl-benchmark} benchmarks/results/cartpole.json\n```\n\n"
                                  "```{vi-benchmark} benchmarks/results/value_iteration.json\n```\n")
    _sphinx(src, tmp_path / f"out-{edition}", "-E")
    return (tmp_path / f"out-{edition}" / "index.html").read_text()


@pytest.mark.slow  # trains every algorithm of the benchmark, both libraries (minutes)
def test_page_renders_the_results_in_both_editions(quick_run, tmp_path):
    _, _, out = quick_run
    scientist = _render(tmp_path, "scientist", out)
    assert "DQN on CartPole-v1" in scientist and "A2C on CartPole-v1" in scientist
    assert "Verdict" in scientist and "quick run" in scientist and "Stable-Baselines3" in scientist
    assert "seconds (CPU): rl2llm" in scientist, "no per-seed table in the scientist edition"
    manager = _render(tmp_path, "manager", out)
    body = BeautifulSoup(manager, "html.parser").select_one('[role="main"]')
    assert "the book's code" in body.get_text().replace("\u2019", "'").lower()
    assert not body.select("code, pre"), "the manager edition shows code"


def test_page_without_results_says_how_to_produce_them(tmp_path):
    html = _render(tmp_path, "scientist", None)
    assert "No results file yet" in html and "rl_vs_sb3.py" in html and "value_iteration.py" in html
    assert "Not measured yet" in _render(tmp_path, "manager", None)


def test_a2c_settings_are_stable_baselines3s_defaults():
    """A2C: the Zoo sets n_envs and ent_coef; everything else is SB3's default, which A2CConfig must equal."""
    import inspect

    bench = _load_script()
    c = bench.ours_a2c_config(500_000)
    sb3 = {k: v.default for k, v in inspect.signature(sys.modules["stable_baselines3"].A2C.__init__).parameters.items()}
    assert (c.n_envs, c.ent_coef) == (bench.ZOO_A2C["n_envs"], bench.ZOO_A2C["ent_coef"])
    assert (c.learning_rate, c.n_steps, c.gamma, c.gae_lambda, c.vf_coef, c.max_grad_norm, c.rmsprop_eps,
            c.normalize_advantage) == (sb3["learning_rate"], sb3["n_steps"], sb3["gamma"], sb3["gae_lambda"],
                                       sb3["vf_coef"], sb3["max_grad_norm"], sb3["rms_prop_eps"],
                                       sb3["normalize_advantage"])
    assert sb3["use_rms_prop"] and c.rmsprop_alpha == 0.99 and c.hidden == (64, 64) and not c.shared


def test_page_is_read_again_when_a_results_file_changes(quick_run, tmp_path):
    _, _, out = quick_run
    _render(tmp_path, "scientist", out)
    src, html = tmp_path / "src-scientist", tmp_path / "out-scientist"
    shutil.copy(REPO / "benchmarks" / "results" / "value_iteration.json", src / "benchmarks" / "results")
    _sphinx(src, html)
    assert "0 changed" in _sphinx(src, html), "nothing changed, yet the page was read again"
    results = src / "benchmarks" / "results" / "cartpole.json"
    stamp = results.stat().st_mtime + 10
    os.utime(results, (stamp, stamp))
    assert "1 changed" in _sphinx(src, html), "a changed results file did not re-read the page"
