"""Tests for rl2llm.plotting (the house style, shared figures, argument checks) and rl2llm.seeding."""

from __future__ import annotations

import os
import random

import gymnasium as gym
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import FancyArrowPatch, Rectangle
from matplotlib.text import Annotation

from rl2llm import plotting
from rl2llm.dp import finite_horizon, policy_iteration, value_iteration
from rl2llm.mdp import _MOVES, FiniteMDP, from_gymnasium, gridworld, random_mdp
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


def rects(ax, colour) -> list:
    """The filled rectangles of one colour drawn on ``ax`` (walls, goals, holes)."""
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_fill()
            and matplotlib.colors.same_color(p.get_facecolor(), colour)]


def cell_of(patch) -> tuple[int, int]:
    x, y = patch.get_xy()
    return int(round(y + 0.5)), int(round(x + 0.5))


def test_plot_values_heatmap_colours_live_states_only(world):
    mdp, result = world
    fig, ax = plt.subplots()
    assert plotting.plot_values(mdp, result.V, ax=ax, title="V*") is ax
    data = image_data(ax)
    assert data.shape == (3, 4)
    special = np.array([[c in "#GX" for c in row] for row in LAYOUT])
    np.testing.assert_array_equal(np.isnan(data), special)  # walls, goal and pit are not on the value scale
    live = ~mdp.terminal
    np.testing.assert_array_equal(data[mdp.cells[live, 0], mdp.cells[live, 1]], result.V[live])
    assert ax.images[0].get_cmap().name == plotting.VALUE_CMAP
    assert ax.get_title() == "V*"
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    # A small grid is annotated: one label per state, goal and pit lettered, values elsewhere.
    labels = letters(ax)
    assert len(labels) == mdp.n_states
    assert sorted(label for label in labels if label in "GX") == ["G", "X"]
    expected = sorted(f"{v:.2f}" for v, t in zip(result.V, mdp.terminal) if not t)
    assert sorted(label for label in labels if label not in "GX") == expected


def test_goal_holes_walls_and_start_are_drawn_apart(world):
    """The goal and a hole are both worth 0, yet they must not look alike (issue 5)."""
    mdp, result = world
    fig, ax = plt.subplots()
    plotting.plot_values(mdp, result.V, ax=ax)
    assert [cell_of(p) for p in rects(ax, plotting.GOAL_COLOR)] == [(1, 3)]
    assert [cell_of(p) for p in rects(ax, plotting.HOLE_COLOR)] == [(2, 3)]
    assert [cell_of(p) for p in rects(ax, plotting.WALL_COLOR)] == [(0, 3), (1, 1)]
    assert not matplotlib.colors.same_color(plotting.GOAL_COLOR, plotting.HOLE_COLOR)
    cmap = matplotlib.colormaps[plotting.VALUE_CMAP]
    value_colours = cmap(np.linspace(0, 1, 256))[:, :3]
    for special in (plotting.GOAL_COLOR, plotting.HOLE_COLOR, plotting.WALL_COLOR):
        rgb = np.array(matplotlib.colors.to_rgb(special))
        assert np.abs(value_colours - rgb).sum(axis=1).min() > 0.15, f"{special} is too close to the value map"
    outlines = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(outlines) == 1
    r, c = mdp.cells[mdp.start]
    assert outlines[0].get_xy() == pytest.approx((c - 0.44, r - 0.44))
    assert not any(spine.get_visible() for spine in ax.spines.values())


def test_plot_values_options(world):
    mdp, result = world
    fig, ax = plt.subplots()
    plotting.plot_values(mdp, result.V, ax=ax, annotate=False, colorbar=False)
    assert sorted(letters(ax)) == ["G", "X"] and len(fig.axes) == 1  # the letters, no values
    fig, ax = plt.subplots()
    plotting.plot_values(mdp, result.V, ax=ax, vmin=-1.0, vmax=2.0, colorbar_label="value",
                         legend=True, hole_name="pit", fmt="{:.1f}")
    assert ax.images[0].get_clim() == (-1.0, 2.0)
    assert fig.axes[1].get_ylabel() == "value"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["goal", "pit", "wall", "start"]
    assert f"{result.V[0]:.1f}" in letters(ax)
    big = gridworld(["." * 11] * 10)  # 110 cells: too many to annotate by default
    fig, ax = plt.subplots()
    plotting.plot_values(big, np.arange(big.n_states, dtype=float), ax=ax)
    assert len(ax.texts) == 0


def test_plot_values_needs_a_grid():
    mdp = random_mdp(4, 2)
    with pytest.raises(ValueError, match="mdp has no grid layout"):
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
    # Without values the background is a blank grid with walls left empty, light cell borders
    # and no axis lines.
    data = image_data(ax)
    np.testing.assert_array_equal(np.isnan(data), np.array([[c == "#" for c in row] for row in LAYOUT]))
    assert ax.get_title() == "a policy"
    assert not any(spine.get_visible() for spine in ax.spines.values())
    assert len(ax.get_xticks(minor=True)) == 5 and len(ax.get_xticks()) == 0


@pytest.mark.parametrize("env_id, n_terminal", [("FrozenLake-v1", 5), ("FrozenLake8x8-v1", 11)])
def test_plot_policy_over_values_on_frozenlake(env_id, n_terminal):
    lake = from_gymnasium(gym.make(env_id), gamma=0.99)
    result = policy_iteration(lake)
    fig, ax = plt.subplots()
    plotting.plot_policy(lake, result.policy, ax=ax, V=result.V)
    assert len(arrows(ax)) == lake.n_states - n_terminal
    assert sorted(set(letters(ax))) == ["G", "X"] and len(letters(ax)) == n_terminal
    data = image_data(ax).ravel()
    np.testing.assert_array_equal(np.isnan(data), lake.terminal)  # no walls; terminal cells drawn apart
    np.testing.assert_allclose(data[~lake.terminal], result.V[~lake.terminal])
    assert len(fig.axes) == 1  # no colour bar unless asked
    assert len(rects(ax, plotting.GOAL_COLOR)) == 1 and len(rects(ax, plotting.HOLE_COLOR)) == n_terminal - 1


def test_plot_policy_colour_scale_for_probabilities():
    lake = from_gymnasium(gym.make("FrozenLake-v1"), gamma=1.0)
    V, plan = finite_horizon(lake, 100)
    fig, ax = plt.subplots()
    plotting.plot_policy(lake, plan[0], V=V[0], ax=ax, vmin=0.0, vmax=1.0, colorbar=True,
                         colorbar_label="chance of arriving in time", legend=True)
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "chance of arriving in time"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["goal", "hole", "start"]


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
    plotting.plot_convergence({"a": [3, 2, 1, 0]}, ax=ax, log=False)
    assert ax.get_yscale() == "linear"


def test_plot_agent_environment_draws_two_boxes_and_two_arrows():
    fig, ax = plt.subplots()
    assert plotting.plot_agent_environment(ax=ax, agent="Language model", action="next token") is ax
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["Language model", "Environment", "next token", "next state and reward"]
    assert sum(isinstance(p, FancyArrowPatch) for p in ax.patches) == 2
    assert not ax.axison


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, error, match", [
    (lambda m, V: plotting.plot_values("grid", V), TypeError, "mdp must be a FiniteMDP"),
    (lambda m, V: plotting.plot_values(m, V[:-1]), ValueError, r"V must have shape \(S,\) = \(10,\)"),
    (lambda m, V: plotting.plot_values(m, np.full(10, np.nan)), ValueError, "V must be finite"),
    (lambda m, V: plotting.plot_values(m, ["a"] * 10), TypeError, "V must be an array of numbers"),
    (lambda m, V: plotting.plot_values(m, V, ax="left"), TypeError, "ax must be a matplotlib Axes"),
    (lambda m, V: plotting.plot_values(m, V, title=3), TypeError, "title must be a string"),
    (lambda m, V: plotting.plot_values(m, V, annotate="yes"), TypeError, "annotate must be True or False"),
    (lambda m, V: plotting.plot_values(m, V, colorbar=1), TypeError, "colorbar must be True or False"),
    (lambda m, V: plotting.plot_values(m, V, fmt="{:.2f} {}"), ValueError, "fmt must be a format string"),
    (lambda m, V: plotting.plot_values(m, V, fmt=2), TypeError, "fmt must be a string"),
    (lambda m, V: plotting.plot_values(m, V, vmin=1.0, vmax=0.0), ValueError, "vmin must be smaller than vmax"),
    (lambda m, V: plotting.plot_values(m, V, vmax=np.inf), ValueError, "vmax must be finite"),
    (lambda m, V: plotting.plot_values(m, V, vmin="0"), TypeError, "vmin must be a number"),
    (lambda m, V: plotting.plot_values(m, V, legend=None), TypeError, "legend must be True or False"),
    (lambda m, V: plotting.plot_values(m, V, colorbar_label=1), TypeError, "colorbar_label must be a string"),
    (lambda m, V: plotting.plot_policy(m, np.full(10, 4)), ValueError, r"policy\[0\] = 4 is not an action"),
    (lambda m, V: plotting.plot_policy(m, np.full(10, -1)), ValueError, r"policy\[0\] = -1 is not an action"),
    (lambda m, V: plotting.plot_policy(m, np.full(10, 1.5)), ValueError, "policy must hold whole action numbers"),
    (lambda m, V: plotting.plot_policy(m, np.zeros(9, int)), ValueError, r"policy must have shape \(S,\) = \(10,\)"),
    (lambda m, V: plotting.plot_policy(m, np.zeros(10, int), V=V[:3]), ValueError, "V must have shape"),
    (lambda m, V: plotting.plot_policy(m, np.zeros(10, int), color="not a colour"), ValueError,
     "color must be a matplotlib colour"),
    (lambda m, V: plotting.plot_policy(m, np.zeros(10, int), colorbar=True), ValueError,
     "colorbar=True needs the values V"),
    (lambda m, V: plotting.plot_policy(random_mdp(4, 4), np.zeros(4, int)), ValueError, "mdp has no grid layout"),
    (lambda m, V: plotting.plot_convergence([1, 2]), TypeError, "curves must be a dict"),
    (lambda m, V: plotting.plot_convergence({}), ValueError, "curves must hold at least one curve"),
    (lambda m, V: plotting.plot_convergence({"a": []}), ValueError, r"curves\['a'\] must be a non-empty 1-D"),
    (lambda m, V: plotting.plot_convergence({"a": [[1, 2]]}), ValueError, r"curves\['a'\] must be a non-empty 1-D"),
    (lambda m, V: plotting.plot_convergence({"a": [1, np.nan]}), ValueError, r"curves\['a'\] must be finite"),
    (lambda m, V: plotting.plot_convergence({"a": [1, 0]}), ValueError, r"curves\['a'\]\[1\] = 0, but a log scale"),
    (lambda m, V: plotting.plot_convergence({1: [1, 2]}), TypeError, "curves must have string labels"),
    (lambda m, V: plotting.plot_convergence({"a": [1]}, styles={"b": {}}), ValueError,
     r"styles names curves that are not in curves: \['b'\]"),
    (lambda m, V: plotting.plot_convergence({"a": [1]}, styles=[1]), TypeError, "styles must be a dict"),
    (lambda m, V: plotting.plot_convergence({"a": [1]}, log="no"), TypeError, "log must be True or False"),
    (lambda m, V: plotting.plot_convergence({"a": [1]}, xlabel=None), TypeError, "xlabel must be a string"),
    (lambda m, V: plotting.plot_agent_environment(agent=""), ValueError, "agent must be a non-empty label"),
    (lambda m, V: plotting.plot_agent_environment(action=3), TypeError, "action must be a string"),
    (lambda m, V: plotting.plot_agent_environment(ax=1), TypeError, "ax must be a matplotlib Axes"),
])
def test_bad_arguments_are_named(world, call, error, match):
    mdp, result = world
    with pytest.raises(error, match=match):
        call(mdp, result.V)


def test_plot_policy_needs_four_grid_actions(world):
    mdp, _ = world
    three = FiniteMDP(np.ones((2, 3, 2)) / 2, np.zeros((2, 3)), 0.9, grid_shape=(1, 2), cells=np.array([[0, 0], [0, 1]]))
    with pytest.raises(ValueError, match="mdp must have the 4 grid actions"):
        plotting.plot_policy(three, np.zeros(2, dtype=int))


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
