"""The book's one plotting style, and the figures every lecture reuses.

Lecture 1 introduces it (value heatmaps, policy arrows, convergence curves);
every later lecture calls :func:`use_house_style` and these helpers rather
than styling its own figures.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

#: Colour-blind-safe palette (Okabe & Ito), in the order lines are drawn.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
#: Colour map for values: sequential, perceptually uniform, readable in grey.
VALUE_CMAP = "viridis"
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


def _grid_of(mdp, values: np.ndarray) -> np.ndarray:
    if mdp.grid_shape is None or mdp.cells is None:
        raise ValueError("this MDP has no grid layout to draw (grid_shape and cells are None)")
    grid = np.full(mdp.grid_shape, np.nan)
    grid[mdp.cells[:, 0], mdp.cells[:, 1]] = values
    return grid


def plot_values(mdp, V: np.ndarray, ax=None, title: str | None = None, annotate: bool | None = None,
                fmt: str = "{:.2f}", colorbar: bool = True):
    """Heatmap of state values on the grid; walls are blank, goals and pits are lettered."""
    ax = ax or plt.gca()
    grid = _grid_of(mdp, V)
    image = ax.imshow(grid, cmap=VALUE_CMAP)
    n_rows, n_cols = mdp.grid_shape
    annotate = (n_rows * n_cols <= 100) if annotate is None else annotate
    if annotate:
        finite = grid[np.isfinite(grid)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (r, c), v in zip(mdp.cells, V):
            letter = mdp.layout[r][c] if mdp.layout else "."
            text = letter if letter in "GX" else fmt.format(v)
            ax.text(c, r, text, ha="center", va="center", fontsize=8,
                    color="white" if v < middle else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_policy(mdp, policy: np.ndarray, ax=None, V: np.ndarray | None = None, title: str | None = None,
                color: str = "white"):
    """Arrows for a deterministic policy, drawn over the value heatmap when ``V`` is given."""
    ax = ax or plt.gca()
    if V is not None:
        plot_values(mdp, V, ax=ax, annotate=False, colorbar=False)
    else:
        ax.imshow(_grid_of(mdp, np.zeros(len(policy))), cmap="Greys", vmin=0, vmax=1)
        color = "black"
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    n_rows, n_cols = mdp.grid_shape
    scale = 0.35
    for s, (r, c) in enumerate(mdp.cells):
        letter = mdp.layout[r][c] if mdp.layout else "."
        if mdp.terminal[s]:
            ax.text(c, r, letter, ha="center", va="center", fontsize=10, fontweight="bold", color=color)
            continue
        dx, dy = _ARROWS[int(policy[s])]
        ax.annotate("", xy=(c + scale * dx, r - scale * dy), xytext=(c - scale * dx, r + scale * dy),
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=1.5))
    if title:
        ax.set_title(title)
    return ax


def plot_convergence(curves: dict[str, np.ndarray], ax=None, title: str | None = None,
                     xlabel: str = "iteration", ylabel: str = "error (sup norm)", log: bool = True,
                     styles: dict[str, dict] | None = None):
    """Error-versus-iteration curves on a log scale; ``styles`` gives per-curve line options."""
    ax = ax or plt.gca()
    styles = styles or {}
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        x = np.arange(len(values))
        ax.plot(x, values, label=label, **styles.get(label, {}))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax
