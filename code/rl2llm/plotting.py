"""The book's one plotting style, and the figures every lecture reuses.

Lecture 1 introduces it (value heatmaps, policy arrows, convergence curves,
the agent-environment loop); every later lecture calls :func:`use_house_style`
and these helpers rather than styling its own figures.

Grid figures follow one legend: values are coloured with :data:`VALUE_CMAP`;
the goal, the holes (or pits) and the walls have fixed colours that the value
map never uses, so a goal worth 0 cannot be mistaken for a hole worth 0; the
start cell is outlined. Every public function checks its arguments and raises
a ``TypeError`` or ``ValueError`` that names the bad one.
"""

from __future__ import annotations

import matplotlib
import matplotlib.patheffects as path_effects
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle

from ._validate import as_actions, as_bool, as_finite_array, describe

#: Colour-blind-safe palette (Okabe & Ito), in the order lines are drawn.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
#: Colour map for values: sequential, perceptually uniform, readable in grey.
VALUE_CMAP = "viridis"
#: Fixed colours of the special cells (none of them occurs in the value map).
GOAL_COLOR = "#D55E00"
HOLE_COLOR = "#1f1f1f"
WALL_COLOR = "#b3b3b3"
START_COLOR = "#ffffff"
_ARROWS = {0: (-1, 0), 1: (0, -1), 2: (1, 0), 3: (0, 1)}  # left, down, right, up as (dx, dy) on screen


def use_house_style() -> None:
    """Set matplotlib's defaults to the book's style (call once per chapter)."""
    plt.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 110,
            "savefig.dpi": 110,
            "savefig.bbox": "tight",
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.titleweight": "bold",
            "axes.labelsize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.25,
            "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
            "legend.frameon": False,
            "lines.linewidth": 2.0,
            "image.cmap": VALUE_CMAP,
        }
    )


# --------------------------------------------------------------------------- argument checks


def _check_grid_mdp(mdp) -> None:
    """``mdp`` must be a FiniteMDP (or look like one) with a grid layout to draw."""
    needed = ("n_states", "n_actions", "terminal", "grid_shape", "cells")
    if not all(hasattr(mdp, attr) for attr in needed):
        raise TypeError(f"mdp must be a FiniteMDP (rl2llm.mdp), got {describe(mdp)}")
    if mdp.grid_shape is None or mdp.cells is None:
        raise ValueError("mdp has no grid layout to draw (its grid_shape and cells are None); "
                         "grid figures need a world built by gridworld() or from_gymnasium() of a map")


def _check_axes(ax):
    if ax is None:
        return plt.gca()
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {describe(ax)}")
    return ax


def _check_text(name: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string{' or None' if allow_none else ''}, got {describe(value)}")


def _check_limits(vmin, vmax) -> tuple[float | None, float | None]:
    limits = []
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if value is None:
            limits.append(None)
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number or None, got {describe(value)}")
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        limits.append(float(value))
    if limits[0] is not None and limits[1] is not None and limits[0] >= limits[1]:
        raise ValueError(f"vmin must be smaller than vmax, got vmin={limits[0]:g} and vmax={limits[1]:g}")
    return limits[0], limits[1]


def _values_of(mdp, V, name: str = "V") -> np.ndarray:
    return as_finite_array(name, V, (mdp.n_states,), "(S,)")


# --------------------------------------------------------------------------- grid figures


def _letters(mdp) -> list[str]:
    """The layout letter of every state (``.`` when the world has no layout)."""
    if not getattr(mdp, "layout", None):
        return ["."] * mdp.n_states
    return [mdp.layout[r][c] for r, c in mdp.cells]


def _grid_of(mdp, values: np.ndarray) -> np.ndarray:
    grid = np.full(mdp.grid_shape, np.nan)
    grid[mdp.cells[:, 0], mdp.cells[:, 1]] = values
    return grid


def _draw_cells(mdp, ax, outline: bool) -> None:
    """Walls, terminal cells and the start outline, drawn over the heatmap; light cell borders."""
    n_rows, n_cols = mdp.grid_shape
    is_state = np.zeros(mdp.grid_shape, dtype=bool)
    is_state[mdp.cells[:, 0], mdp.cells[:, 1]] = True
    for r, c in np.argwhere(~is_state):
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=WALL_COLOR, edgecolor="none"))
    for s, letter in enumerate(_letters(mdp)):
        if not mdp.terminal[s]:
            continue
        r, c = mdp.cells[s]
        colour = GOAL_COLOR if letter == "G" else HOLE_COLOR
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=colour, edgecolor="none"))
        ax.text(c, r, letter if letter in "GX" else "", ha="center", va="center", fontsize=9,
                fontweight="bold", color="white")
    start = getattr(mdp, "start", None)
    if start is not None:
        r, c = mdp.cells[start]
        box = Rectangle((c - 0.44, r - 0.44), 0.88, 0.88, fill=False, edgecolor=START_COLOR, linewidth=2.2)
        box.set_path_effects([path_effects.Stroke(linewidth=4.2, foreground="black"), path_effects.Normal()])
        ax.add_patch(box)
    if outline:  # thin borders so that an arrow-only grid reads as a grid
        ax.set_xticks(np.arange(-0.5, n_cols, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n_rows, 1), minor=True)
        ax.grid(which="minor", color="#d0d0d0", linewidth=0.8)
        ax.tick_params(which="minor", length=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(which="major", visible=False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)


def _cell_legend(mdp, ax, hole_name: str) -> None:
    letters = _letters(mdp)
    handles = []
    if any(t and l == "G" for t, l in zip(mdp.terminal, letters)):
        handles.append(Patch(facecolor=GOAL_COLOR, label="goal"))
    if any(t and l != "G" for t, l in zip(mdp.terminal, letters)):
        handles.append(Patch(facecolor=HOLE_COLOR, label=hole_name))
    if len(mdp.cells) < mdp.grid_shape[0] * mdp.grid_shape[1]:
        handles.append(Patch(facecolor=WALL_COLOR, label="wall"))
    if getattr(mdp, "start", None) is not None:
        handles.append(Patch(facecolor="none", edgecolor="black", linewidth=2, label="start"))
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=len(handles),
                  fontsize=8, handlelength=1.2, columnspacing=1.0, frameon=False)


def plot_values(mdp, V, ax=None, title: str | None = None, annotate: bool | None = None,
                fmt: str = "{:.2f}", colorbar: bool = True, colorbar_label: str | None = None,
                vmin: float | None = None, vmax: float | None = None, legend: bool = False,
                hole_name: str = "hole"):
    """Heatmap of state values on the grid.

    Live states are coloured by value (and, on small grids, labelled with it);
    the goal, holes/pits and walls have fixed colours outside the value map, so
    the colour scale describes live states only; the start cell is outlined.
    ``vmin``/``vmax`` fix the colour scale (say 0 and 1 for probabilities);
    ``legend`` explains the special cells in words (``hole_name`` names the
    losing terminal cells: "hole", "pit").
    """
    _check_grid_mdp(mdp)
    V = _values_of(mdp, V)
    ax = _check_axes(ax)
    _check_text("title", title)
    _check_text("colorbar_label", colorbar_label)
    _check_text("hole_name", hole_name, allow_none=False)
    if annotate is not None:
        annotate = as_bool("annotate", annotate)
    colorbar = as_bool("colorbar", colorbar)
    legend = as_bool("legend", legend)
    _check_text("fmt", fmt, allow_none=False)
    try:
        fmt.format(0.0)
    except (IndexError, KeyError, ValueError) as err:
        raise ValueError(f"fmt must be a format string with one number field such as '{{:.2f}}', got {fmt!r}") from err
    vmin, vmax = _check_limits(vmin, vmax)

    live = ~np.asarray(mdp.terminal, dtype=bool)
    shown = np.where(live, V, np.nan)  # terminal cells get their own colours
    grid = _grid_of(mdp, shown)
    image = ax.imshow(grid, cmap=VALUE_CMAP, vmin=vmin, vmax=vmax)
    n_rows, n_cols = mdp.grid_shape
    annotate = (n_rows * n_cols <= 100) if annotate is None else annotate
    if annotate:
        low, high = image.get_clim()
        middle = (low + high) / 2
        for s in np.flatnonzero(live):
            r, c = mdp.cells[s]
            ax.text(c, r, fmt.format(V[s]), ha="center", va="center", fontsize=8,
                    color="white" if V[s] < middle else "black")
    _draw_cells(mdp, ax, outline=False)
    if title:
        ax.set_title(title)
    if colorbar:
        bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        if colorbar_label:
            bar.set_label(colorbar_label)
    if legend:
        _cell_legend(mdp, ax, hole_name)
    return ax


def plot_policy(mdp, policy, ax=None, V=None, title: str | None = None, color: str = "white",
                colorbar: bool = False, colorbar_label: str | None = None, vmin: float | None = None,
                vmax: float | None = None, legend: bool = False, hole_name: str = "hole"):
    """Arrows for a deterministic policy (actions left, down, right, up).

    With ``V`` the arrows are drawn over the value heatmap (``colorbar`` adds
    its scale); without it, over a plain grid with thin cell borders.
    """
    _check_grid_mdp(mdp)
    if mdp.n_actions != 4:
        raise ValueError(f"mdp must have the 4 grid actions (left, down, right, up) to draw arrows, "
                         f"got {mdp.n_actions} actions")
    policy = as_actions("policy", policy, 4)
    if policy.shape != (mdp.n_states,):
        raise ValueError(f"policy must have shape (S,) = ({mdp.n_states},), one action per state, "
                         f"got {policy.shape}")
    ax = _check_axes(ax)
    _check_text("title", title)
    _check_text("color", color, allow_none=False)
    if not matplotlib.colors.is_color_like(color):
        raise ValueError(f"color must be a matplotlib colour, got {color!r}")
    colorbar = as_bool("colorbar", colorbar)
    legend = as_bool("legend", legend)
    if V is not None:
        plot_values(mdp, V, ax=ax, annotate=False, colorbar=colorbar, colorbar_label=colorbar_label,
                    vmin=vmin, vmax=vmax, legend=legend, hole_name=hole_name)
    else:
        if colorbar:
            raise ValueError("colorbar=True needs the values V to colour the cells")
        _check_text("hole_name", hole_name, allow_none=False)
        _check_limits(vmin, vmax)
        ax.imshow(_grid_of(mdp, np.zeros(mdp.n_states)), cmap="Greys", vmin=0, vmax=1)
        color = "black"
        _draw_cells(mdp, ax, outline=True)
        if legend:
            _cell_legend(mdp, ax, hole_name)
    scale = 0.3
    for s, (r, c) in enumerate(mdp.cells):
        if mdp.terminal[s]:
            continue
        dx, dy = _ARROWS[int(policy[s])]
        ax.annotate("", xy=(c + scale * dx, r - scale * dy), xytext=(c - scale * dx, r + scale * dy),
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=1.5))
    if title:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------- curves


def plot_convergence(curves: dict[str, np.ndarray], ax=None, title: str | None = None,
                     xlabel: str = "iteration", ylabel: str = "error (sup norm)", log: bool = True,
                     styles: dict[str, dict] | None = None):
    """Error-versus-iteration curves, on a log scale by default; ``styles`` gives per-curve line options.

    A log scale cannot show zero or negative values (matplotlib would drop
    them without a word), so they are refused: clip them first, e.g.
    ``np.maximum(values, 1e-17)``, or pass ``log=False``.
    """
    if not isinstance(curves, dict):
        raise TypeError(f"curves must be a dict from label to values, got {describe(curves)}")
    if not curves:
        raise ValueError("curves must hold at least one curve, got an empty dict")
    ax = _check_axes(ax)
    _check_text("title", title)
    _check_text("xlabel", xlabel, allow_none=False)
    _check_text("ylabel", ylabel, allow_none=False)
    log = as_bool("log", log)
    styles = {} if styles is None else styles
    if not isinstance(styles, dict) or not all(isinstance(s, dict) for s in styles.values()):
        raise TypeError(f"styles must be a dict from curve label to a dict of line options, got {describe(styles)}")
    unknown = sorted(set(styles) - set(curves))
    if unknown:
        raise ValueError(f"styles names curves that are not in curves: {unknown}; curves are {sorted(curves)}")
    checked = {}
    for label, values in curves.items():
        if not isinstance(label, str):
            raise TypeError(f"curves must have string labels, got {describe(label)}")
        name = f"curves[{label!r}]"
        values = as_finite_array(name, values)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {values.shape}")
        if log and (values <= 0).any():
            first = int(np.argmax(values <= 0))
            raise ValueError(f"{name}[{first}] = {values[first]:g}, but a log scale shows only positive values; "
                             "clip the curve (np.maximum(values, 1e-17)) or pass log=False")
        checked[label] = values
    for label, values in checked.items():
        ax.plot(np.arange(len(values)), values, label=label, **styles.get(label, {}))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


# --------------------------------------------------------------------------- diagrams


def plot_agent_environment(ax=None, agent: str = "Agent", environment: str = "Environment",
                           action: str = "action", feedback: str = "next state and reward",
                           title: str | None = None):
    """The agent-environment loop: the agent acts, the environment answers with a state and a reward.

    The labels are words by default; pass others to draw the same loop for
    another setting (a language model emits a token, the environment returns
    the longer text and, at the end, a score).
    """
    ax = _check_axes(ax)
    for name, value in (("agent", agent), ("environment", environment), ("action", action),
                        ("feedback", feedback)):
        _check_text(name, value, allow_none=False)
        if not value.strip():
            raise ValueError(f"{name} must be a non-empty label")
    _check_text("title", title)
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.3, 4.9)
    ax.set_aspect("equal")
    ax.axis("off")
    boxes = {"agent": (0.3, agent, PALETTE[0]), "environment": (6.2, environment, PALETTE[2])}
    for x, label, colour in boxes.values():
        ax.add_patch(FancyBboxPatch((x, 1.5), 3.5, 1.6, boxstyle="round,pad=0.08,rounding_size=0.25",
                                    facecolor=colour, edgecolor="none", alpha=0.9))
        ax.text(x + 1.75, 2.3, label, ha="center", va="center", fontsize=12, fontweight="bold", color="white")
    arrow = dict(arrowstyle="-|>", mutation_scale=18, color="#333333", linewidth=1.8)
    ax.add_patch(FancyArrowPatch((2.05, 3.2), (7.95, 3.2), connectionstyle="arc3,rad=-0.35", **arrow))
    ax.add_patch(FancyArrowPatch((7.95, 1.4), (2.05, 1.4), connectionstyle="arc3,rad=-0.35", **arrow))
    ax.text(5.0, 4.6, action, ha="center", va="center", fontsize=10)
    ax.text(5.0, 0.0, feedback, ha="center", va="center", fontsize=10)
    if title:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------- learning curves


def plot_runs(runs, x=None, ax=None, label: str | None = None, color: str | None = None,
              band_label: str | None = None, show_runs: bool = True):
    """Learning curves of several runs (seeds) of one method: never a single lucky run.

    Draws each run as a thin line (``show_runs``), the band from the lowest
    to the highest run at each point, and their mean as a thick line, all in
    one colour (the next of the palette unless ``color`` is given). ``label``
    names the mean line in the legend and ``band_label`` the band.

    ``runs``: finite numbers of shape ``(n_runs, n_points)``; ``x``: ``None``
    (``0 .. n_points - 1``) or ``(n_points,)`` finite numbers. Added for
    Lecture 2; every chapter that shows learning curves over seeds uses it.
    """
    runs = as_finite_array("runs", runs)
    if runs.ndim != 2 or 0 in runs.shape:
        raise ValueError(f"runs must have shape (n_runs, n_points) with both >= 1, got {runs.shape}")
    x = np.arange(runs.shape[1]) if x is None else as_finite_array("x", x, (runs.shape[1],), "(n_points,)")
    ax = _check_axes(ax)
    _check_text("label", label)
    _check_text("band_label", band_label)
    show_runs = as_bool("show_runs", show_runs)
    if color is not None and (not isinstance(color, str) or not matplotlib.colors.is_color_like(color)):
        raise ValueError(f"color must be a matplotlib colour, got {color!r}")
    (mean,) = ax.plot(x, runs.mean(axis=0), color=color, linewidth=2.4, label=label, zorder=3)
    color = mean.get_color()  # the palette's next colour when none was given
    ax.fill_between(x, runs.min(axis=0), runs.max(axis=0), color=color, alpha=0.15, linewidth=0,
                    label=band_label, zorder=1)
    if show_runs:
        for run in runs:
            ax.plot(x, run, color=color, linewidth=0.8, alpha=0.45, zorder=2)
    return ax
