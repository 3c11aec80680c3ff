"""Tests for rl2llm.plotting (the house style and shared figures) and rl2llm.seeding."""

from __future__ import annotations

import os
import random

import gymnasium as gym
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.text import Annotation

from rl2llm import plotting
from rl2llm.dp import policy_iteration, value_iteration
from rl2llm.mdp import _MOVES, from_gymnasium, gridworld, random_mdp
from rl2llm.seeding import seed_everything

LAYOUT = ["S..#", ".#.G", "...X"]


@pytest.fixture(autouse=True)
def clean_figures():
    """Each test draws on fresh figures and leaves matplotlib's settings as it found them."""
    with matplotlib.rc_context():
        yield
    plt.close("all")


@pytest.fixture
def world():
    mdp = gridworld(LAYOUT, slip=0.1, gamma=0.9, step_reward=-0.04)
    return mdp, value_iteration(mdp)


def image_data(ax) -> np.ndarray:
    (image,) = ax.images
    return np.ma.filled(np.ma.asarray(image.get_array(), dtype=float), np.nan)


def arrows(ax) -> list[Annotation]:
    return [t for t in ax.texts if isinstance(t, Annotation)]


def letters(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if not isinstance(t, Annotation)]


def test_plot_values_heatmap_has_nan_exactly_at_walls(world):
    mdp, result = world
    fig, ax = plt.subplots()
    assert plotting.plot_values(mdp, result.V, ax=ax, title="V*") is ax
    data = image_data(ax)
    assert data.shape == (3, 4)
    walls = np.array([[c == "#" for c in row] for row in LAYOUT])
    np.testing.assert_array_equal(np.isnan(data), walls)
    np.testing.assert_array_equal(data[mdp.cells[:, 0], mdp.cells[:, 1]], result.V)
    assert ax.images[0].get_cmap().name == plotting.VALUE_CMAP
    assert ax.get_title() == "V*"
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    # A small grid is annotated: one label per state, goal and pit lettered, values elsewhere.
    labels = letters(ax)
    assert len(labels) == mdp.n_states
    assert sorted(label for label in labels if label in "GX") == ["G", "X"]
    expected = sorted(f"{v:.2f}" for v, t in zip(result.V, mdp.terminal) if not t)
    assert sorted(label for label in labels if label not in "GX") == expected


def test_plot_values_options(world):
    mdp, result = world
    fig, ax = plt.subplots()
    plotting.plot_values(mdp, result.V, ax=ax, annotate=False, colorbar=False)
    assert len(ax.texts) == 0 and len(fig.axes) == 1
    big = gridworld(["." * 11] * 10)  # 110 cells: too many to annotate by default
    fig, ax = plt.subplots()
    plotting.plot_values(big, np.arange(big.n_states, dtype=float), ax=ax)
    assert len(ax.texts) == 0


def test_plot_values_needs_a_grid():
    mdp = random_mdp(4, 2)
    with pytest.raises(ValueError, match="no grid layout"):
        plotting.plot_values(mdp, np.zeros(4))


def test_plot_policy_draws_one_arrow_per_live_state_pointing_the_right_way(world):
    mdp, _ = world
    policy = np.arange(mdp.n_states) % 4  # every direction appears
    fig, ax = plt.subplots()
    plotting.plot_policy(mdp, policy, ax=ax, title="a policy")
    drawn = arrows(ax)
    assert len(drawn) == (~mdp.terminal).sum()
    assert sorted(letters(ax)) == ["G", "X"]
    live = np.flatnonzero(~mdp.terminal)
    for s, arrow in zip(live, drawn):
        (head_x, head_y), (tail_x, tail_y) = arrow.xy, arrow.xyann
        r, c = mdp.cells[s]
        assert ((head_x + tail_x) / 2, (head_y + tail_y) / 2) == pytest.approx((c, r))  # centred on the cell
        d_row, d_col = _MOVES[policy[s]]  # where the action moves the agent on the grid
        assert np.sign(head_x - tail_x) == d_col and np.sign(head_y - tail_y) == d_row
    # Without values the background is a blank grid with walls left empty.
    data = image_data(ax)
    np.testing.assert_array_equal(np.isnan(data), np.array([[c == "#" for c in row] for row in LAYOUT]))
    assert ax.get_title() == "a policy"


@pytest.mark.parametrize("env_id, n_terminal", [("FrozenLake-v1", 5), ("FrozenLake8x8-v1", 11)])
def test_plot_policy_over_values_on_frozenlake(env_id, n_terminal):
    lake = from_gymnasium(gym.make(env_id), gamma=0.99)
    result = policy_iteration(lake)
    fig, ax = plt.subplots()
    plotting.plot_policy(lake, result.policy, ax=ax, V=result.V)
    assert len(arrows(ax)) == lake.n_states - n_terminal
    assert sorted(set(letters(ax))) == ["G", "X"] and len(letters(ax)) == n_terminal
    data = image_data(ax)
    assert not np.isnan(data).any()  # FrozenLake has no walls
    np.testing.assert_allclose(data.ravel(), result.V)
    assert len(fig.axes) == 1  # no colour bar on a policy plot


def test_plot_convergence_draws_each_curve_on_a_log_scale():
    curves = {"value iteration": 0.9 ** np.arange(50), "policy iteration": [1.0, 0.1, 1e-5]}
    fig, ax = plt.subplots()
    plotting.plot_convergence(curves, ax=ax, title="errors", styles={"policy iteration": {"marker": "o"}})
    assert [line.get_label() for line in ax.lines] == list(curves)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), curves["value iteration"])
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [0, 1, 2])
    assert ax.lines[1].get_marker() == "o"
    assert ax.get_yscale() == "log"
    assert ax.get_legend() is not None
    assert ax.get_xlabel() == "iteration" and ax.get_title() == "errors"
    fig, ax = plt.subplots()
    plotting.plot_convergence({"a": [3, 2, 1]}, ax=ax, log=False)
    assert ax.get_yscale() == "linear"


def test_use_house_style_sets_the_palette():
    plotting.use_house_style()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    assert colors == plotting.PALETTE
    assert plt.rcParams["image.cmap"] == plotting.VALUE_CMAP
    assert not plt.rcParams["axes.spines.top"] and not plt.rcParams["axes.spines.right"]
    fig, ax = plt.subplots()
    first, second = ax.plot([0, 1]), ax.plot([1, 0])
    assert matplotlib.colors.same_color(first[0].get_color(), plotting.PALETTE[0])
    assert matplotlib.colors.same_color(second[0].get_color(), plotting.PALETTE[1])


def test_palette_is_distinct_and_valid():
    assert len(set(plotting.PALETTE)) == len(plotting.PALETTE)
    assert all(matplotlib.colors.is_color_like(c) for c in plotting.PALETTE)


# --------------------------------------------------------------------------- seeding


def test_seed_everything_repeats_numpy_and_python_draws(monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "unset")  # restored after the test
    rng = seed_everything(123)
    first = (rng.random(5), np.random.rand(5), [random.random() for _ in range(5)])
    assert os.environ["PYTHONHASHSEED"] == "123"
    rng = seed_everything(123)
    second = (rng.random(5), np.random.rand(5), [random.random() for _ in range(5)])
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    rng = seed_everything(124)
    assert not np.array_equal(rng.random(5), first[0])
    assert not np.array_equal(np.random.rand(5), first[1])


def test_seed_everything_seeds_torch_when_imported(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("PYTHONHASHSEED", "unset")
    seed_everything(7)
    a = torch.rand(4)
    seed_everything(7)
    b = torch.rand(4)
    assert torch.equal(a, b)
    seed_everything(8)
    assert not torch.equal(torch.rand(4), a)
