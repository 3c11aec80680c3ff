"""Argument checks shared by the public functions of rl2llm (design principle 9).

Each helper checks one argument and returns it in the form the caller computes
with (a float, an int, a float array, an integer array of actions). A value of
the wrong kind raises ``TypeError``; a value of the right kind that makes no
sense raises ``ValueError``. Every message starts with the argument's name and
says what is wrong with it, so the reader knows what to fix.

Conventions: a bool is not a number (``gamma=True`` is a mistake, not 1.0);
NumPy scalars are numbers; lists are arrays.
"""

from __future__ import annotations

import math
import numbers
import reprlib

import numpy as np
import scipy.sparse as sp

#: How far from 1 a probability distribution may sum (absolute, per distribution).
PROB_TOL = 1e-9


def describe(value) -> str:
    """A short description of a value for an error message: its type and a clipped repr."""
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _at(index) -> str:
    """``(1, 2)`` -> ``"[1, 2]"``: an array position as it is written in Python."""
    return "[" + ", ".join(str(int(i)) for i in np.atleast_1d(index)) + "]"


def _first(mask: np.ndarray) -> tuple:
    """Position of the first True entry of ``mask``."""
    return np.unravel_index(int(np.argmax(mask)), mask.shape)


# --------------------------------------------------------------------------- scalars


def as_real(name: str, value, low: float | None = None, high: float | None = None, *,
            low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float, within ``[low, high]`` (an end is excluded when ``*_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    try:
        x = float(value)
    except OverflowError:  # an int beyond the float range
        x = math.inf if value > 0 else -math.inf
    too_low = low is not None and (x <= low if low_open else x < low)
    too_high = high is not None and (x >= high if high_open else x > high)
    if not np.isfinite(x) or too_low or too_high:
        if low is not None and high is not None:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise ValueError(f"{name} must lie in {interval}, got {x!r}")
        if low is not None:
            raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low:g}, got {x!r}")
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    return x


def as_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int within ``low .. high``; floats (even 3.0) and bools are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {describe(value)}")
    n = int(value)
    if (low is not None and n < low) or (high is not None and n > high):
        if high is None:
            wanted = "a positive integer" if low == 1 else f"an integer >= {low}"
        else:
            wanted = f"an integer in {low} .. {high}"
        raise ValueError(f"{name} must be {wanted}, got {n}")
    return n


def as_bool(name: str, value) -> bool:
    """``value`` as a bool; only ``True`` and ``False`` (Python or NumPy) are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


# --------------------------------------------------------------------------- arrays


def numeric_array(name: str, value) -> np.ndarray:
    """``value`` as a NumPy array of integers or floats (not bools, strings or objects)."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of numbers ({err})") from None
    if array.dtype == bool:
        raise TypeError(f"{name} must be an array of numbers, got an array of bools")
    if array.dtype.kind not in "iuf":
        got = f"an array of dtype {array.dtype}" if isinstance(value, np.ndarray) else describe(value)
        raise TypeError(f"{name} must be an array of numbers, got {got}")
    return array


def check_finite(name: str, array: np.ndarray) -> None:
    """Refuse NaN and infinities, naming the first offending entry."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = _first(bad)
        raise ValueError(f"{name} must be finite, but {name}{_at(where)} = {array[where]}")


def no_nan(name: str, array: np.ndarray) -> None:
    """Refuse NaN (infinities are allowed), naming the first one."""
    nan = np.isnan(array)
    if nan.any():
        raise ValueError(f"{name} must not contain NaN, but {name}{_at(_first(nan))} is NaN")


def as_finite_array(name: str, value, shape: tuple[int, ...] | None = None, shape_text: str = "") -> np.ndarray:
    """``value`` as a float array of finite numbers, of ``shape`` when given (``shape_text`` names it, e.g. "(S,)")."""
    array = numeric_array(name, value)
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {shape_text + ' = ' if shape_text else ''}{tuple(shape)}, "
                         f"got {array.shape}")
    check_finite(name, array)
    return array.astype(float, copy=False)


def as_mask(name: str, value, n: int) -> np.ndarray:
    """A boolean mask of shape ``(n,)``; 0/1 numbers are read as False/True, other numbers refused."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} must be a boolean mask of shape ({n},) ({err})") from None
    if array.dtype != bool:
        if array.dtype.kind not in "iuf" or not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must be a boolean mask (True/False or 0/1), got {describe(value)}")
        array = array.astype(bool)
    if array.shape != (n,):
        raise ValueError(f"{name} must be a boolean mask of shape (S,) = {(n,)}, got shape {array.shape}")
    return array


def check_distributions(name: str, probs: np.ndarray) -> None:
    """Each row ``probs[..., :]`` is a probability distribution: finite, >= 0, summing to 1 within PROB_TOL."""
    check_finite(name, probs)
    if (probs < 0).any():
        where = _first(probs < 0)
        raise ValueError(f"{name} has a negative probability: {name}{_at(where)} = {probs[where]}")
    sums = probs.sum(axis=-1)
    off = np.abs(sums - 1.0) > PROB_TOL
    if off.any():
        where = _first(off)
        raise ValueError(f"each row of {name} must sum to 1 (within {PROB_TOL:g}), "
                         f"but {name}{_at(where)[:-1]}, :] sums to {sums[where]:.10g}")


# --------------------------------------------------------------------------- policies


def as_actions(name: str, value, n_actions: int) -> np.ndarray:
    """Integer actions in ``0 .. n_actions - 1``, any shape. Whole-number floats (2.0) are accepted;
    -1 is not an action (NumPy would read it as the last one), nor is 1.5."""
    array = numeric_array(name, value)
    if array.dtype.kind == "f":
        check_finite(name, array)
        fractional = array != np.round(array)
        if fractional.any():
            where = _first(fractional)
            raise ValueError(f"{name} must hold whole action numbers, but {name}{_at(where)} = {array[where]}")
    outside = (array < 0) | (array >= n_actions)
    if outside.any():
        where = _first(outside)
        raise ValueError(f"{name}{_at(where)} = {array[where]:g} is not an action: "
                         f"actions are 0 .. {n_actions - 1}")
    return array.astype(int)


def as_actions_per_state(name: str, value, n_states: int, n_actions: int) -> np.ndarray:
    """A deterministic stationary policy: ``(S,)`` integer actions."""
    array = numeric_array(name, value)
    if array.shape != (n_states,):
        raise ValueError(f"{name} must be (S,) = ({n_states},) actions, one per state, got shape {array.shape}")
    return as_actions(name, array, n_actions)


def as_policy(name: str, value, n_states: int | None, n_actions: int) -> np.ndarray:
    """A deterministic policy ``(S,)`` of actions (returned as ints) or a stochastic one ``(S, A)``
    whose rows are distributions (returned as floats). ``n_states=None`` accepts any S."""
    array = numeric_array(name, value)
    S = array.shape[0] if n_states is None and array.ndim else n_states
    if array.shape == (S,):
        return as_actions(name, array, n_actions)
    if array.shape == (S, n_actions):
        array = array.astype(float)
        check_distributions(name, array)
        return array
    S_text = "S" if n_states is None else f"S = {n_states}"
    raise ValueError(f"{name} must be ({S_text},) actions or ({S_text}, A = {n_actions}) action probabilities, "
                     f"got shape {array.shape}")


def as_plan(name: str, value, n_states: int, n_actions: int, horizon: int | None = None) -> np.ndarray:
    """A deterministic policy, stationary ``(S,)`` or time-dependent ``(H, S)`` (``H = horizon`` when
    given, otherwise any ``H >= 1``), as integer actions."""
    array = numeric_array(name, value)
    H = horizon if horizon is not None else (array.shape[0] if array.ndim == 2 and array.shape[0] else "H")
    if array.shape not in ((n_states,), (H, n_states)):
        raise ValueError(f"{name} must be (S,) = ({n_states},) actions, or (H, S) = ({H}, {n_states}) "
                         f"actions per step, got shape {array.shape}")
    return as_actions(name, array, n_actions)


# --------------------------------------------------------------------------- MDPs


def as_transitions(name: str, P, S: int, A: int):
    """Transition probabilities: a dense ``(S, A, S)`` float array, or a sparse ``(S * A, S)``
    CSR matrix, whose every distribution over next states is finite, >= 0 and sums to 1 within PROB_TOL."""
    if sp.issparse(P):
        if P.shape != (S * A, S):
            raise ValueError(f"sparse {name} must have shape (S*A, S) = {(S * A, S)}, got {P.shape}")
        if P.dtype == bool or P.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold numbers, got a sparse matrix of dtype {P.dtype}")
        P = sp.csr_matrix(P)
        P = P if P.dtype == float else P.astype(float)
        values, row_sums = P.data, np.asarray(P.sum(axis=1)).ravel()
    else:
        P = numeric_array(name, P)
        if P.shape != (S, A, S):
            raise ValueError(f"{name} must have shape (S, A, S) = {(S, A, S)}, got {P.shape}")
        P = P.astype(float, copy=False)
        values, row_sums = P.ravel(), P.sum(axis=2).ravel()
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        i = int(np.argmax(bad))
        if sp.issparse(P):  # data entry i sits in row (s * A + a), column s'
            row = int(np.searchsorted(P.indptr, i, side="right")) - 1
            where = (row // A, row % A, P.indices[i])
        else:
            where = np.unravel_index(i, P.shape)
        problem = "must be finite" if not np.isfinite(values[i]) else "has negative probabilities"
        raise ValueError(f"{name} {problem}: {name}{_at(where)} = {values[i]}")
    off = np.abs(row_sums - 1.0)
    if (off > PROB_TOL).any():
        i = int(np.argmax(off))
        raise ValueError(f"each {name}[s, a, :] must sum to 1; state {i // A}, action {i % A} sums to "
                         f"{row_sums[i]:.10g} (the tolerance is {PROB_TOL:g})")
    return P


# --------------------------------------------------------------------------- gymnasium


def discrete_sizes(name: str, env, need_table: bool = False) -> tuple[int, int]:
    """``(S, A)`` of a gymnasium environment with Discrete observation and action spaces (numbered
    from 0), which with ``need_table`` also has a transition table ``env.unwrapped.P``."""
    spec = getattr(env, "spec", None)
    label = getattr(spec, "id", None) or type(env).__name__
    sizes, problems = [], []
    for space_name in ("observation_space", "action_space"):
        space = getattr(env, space_name, None)
        n = getattr(space, "n", None)
        if not isinstance(n, numbers.Integral) or isinstance(n, (bool, np.bool_)):
            shown = repr(space)
            if len(shown) > 60:  # a Box prints all its bounds
                shown = f"{type(space).__name__} of shape {getattr(space, 'shape', '?')}"
            problems.append(f"{space_name} {shown}")
        elif int(getattr(space, "start", 0)) != 0:
            raise ValueError(f"{name} must number its {space_name} from 0; {label} has {space!r}")
        else:
            sizes.append(int(n))
    if need_table and getattr(getattr(env, "unwrapped", None), "P", None) is None:
        problems.append("no transition table env.unwrapped.P")
    if problems:
        raise TypeError(f"{name} must be a tabular gymnasium environment (FrozenLake, CliffWalking, Taxi): "
                        f"Discrete observation and action spaces"
                        f"{' and a transition table env.unwrapped.P' if need_table else ''}; "
                        f"{label} has {' and '.join(problems)}")
    return sizes[0], sizes[1]


def transition_table(name: str, table, S: int, A: int):
    """A gymnasium transition table: ``table[s][a]`` lists ``(probability, next_state, reward, done)``
    for every state and action, with probabilities in [0, 1], next states in 0 .. S-1, finite rewards."""
    for s in range(S):
        for a in range(A):
            try:
                outcomes = list(table[s][a])
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"{name} has no list of outcomes for state {s}, action {a}") from None
            for outcome in outcomes:
                where = f"{name}[{s}][{a}]"
                if not isinstance(outcome, (tuple, list)) or len(outcome) != 4:
                    raise ValueError(f"{where} must list (probability, next_state, reward, done), "
                                     f"got {describe(outcome)}")
                prob, nxt, reward, _ = outcome
                as_real(f"the probability in {where}", prob, 0.0, 1.0)
                as_int(f"the next state in {where}", nxt, 0, S - 1)
                as_real(f"the reward in {where}", reward)
    return table


def as_strings(name: str, values) -> list[str]:
    """``values`` as a list of strings (one string alone is refused: it is a sequence of characters)."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of strings, not one string (wrap it: [text])")
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a list of strings, got {describe(values)}") from None
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{i}] must be a string, got {describe(value)}")
    return values
