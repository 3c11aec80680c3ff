"""Trust regions and TRPO: bound how far each update moves the policy, measured in behaviour.

Introduced in Lecture 5 (Trust regions and TRPO); Lecture 6 (PPO) replaces
the constraint with a clipped objective and keeps the rest.

* :func:`categorical_kl` — the KL divergence between two categorical
  distributions given by their logits, one per row.
* :func:`flat_grad`, :func:`flat_params`, :func:`set_flat_params` — a
  network's gradient and parameters as one long vector, the shape in which
  the trust-region step is computed.
* :func:`fisher_operator`, :func:`fisher_vector_product` — the Fisher
  information matrix times a vector, as the Hessian of the mean KL times the
  vector (two backward passes), without ever forming the matrix.
* :func:`conjugate_gradient` — solves ``F x = g`` with one product ``F v``
  per iteration (Hestenes and Stiefel, 1952).
* :func:`line_search` — backtracks along the proposed step until the
  measured KL is within the bound and the surrogate objective improves;
  returns every step it tried and why it rejected it.
* :class:`TRPOConfig`, :func:`train_trpo` — TRPO (Schulman et al., 2015) on
  a gymnasium environment with discrete actions, with a learned critic and
  GAE advantages from :mod:`rl2llm.advantages` (Lecture 4).
* :func:`tabular_fisher`, :func:`natural_policy_gradient` — the exact
  Fisher matrix and natural gradient of a tabular softmax policy on a known
  MDP (Kakade, 2002), next to Lecture 2's exact gradient.

Every public function checks its arguments and raises a ``TypeError`` or
``ValueError`` that names the bad one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from . import _validate as check
from .advantages import gae
from .dqn import _checked_env_id, torch_threads
from .mdp import FiniteMDP
from .policies import CategoricalMLP, ValueMLP, softmax
from .policy_gradient import discounted_visits, exact_policy_gradient
from .progress import progress
from .rollouts import collect_episodes, start_distribution

# --------------------------------------------------------------------------- KL and flat vectors


def categorical_kl(p_logits, q_logits) -> torch.Tensor:
    """``KL(p || q) = sum_a p(a) (log p(a) - log q(a))`` for each row, shape ``(n,)``.

    ``p_logits``, ``q_logits``: tensors of logits of the same shape
    ``(n, A)`` (any real numbers: the softmax of a row is its distribution).
    Differentiable in both. Zero exactly when the two rows give the same
    distribution, positive otherwise.
    """
    p_logits = _checked_logits("p_logits", p_logits)
    q_logits = _checked_logits("q_logits", q_logits)
    if p_logits.shape != q_logits.shape:
        raise ValueError(f"p_logits and q_logits must have the same shape, got {tuple(p_logits.shape)} "
                         f"and {tuple(q_logits.shape)}")
    log_p = torch.log_softmax(p_logits, dim=-1)
    log_q = torch.log_softmax(q_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _checked_logits(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor of logits, got {check.describe(value)}")
    if value.ndim != 2 or value.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (n, A) with A >= 1, got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {value.dtype}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} must be finite")
    return value


def _checked_module(name: str, module) -> list[torch.Tensor]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {check.describe(module)}")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{name} has no trainable parameters")
    return params


def flat_grad(output, module, retain_graph: bool = False, create_graph: bool = False) -> torch.Tensor:
    """The gradient of the scalar tensor ``output`` with respect to ``module``'s parameters, as one vector.

    A parameter ``output`` does not depend on contributes zeros.
    ``create_graph=True`` keeps the gradient differentiable (for a second
    derivative: :func:`fisher_operator`).
    """
    params = _checked_module("module", module)
    if not isinstance(output, torch.Tensor) or output.numel() != 1:
        raise TypeError(f"output must be a scalar tensor, got {check.describe(output)}")
    grads = torch.autograd.grad(output, params, retain_graph=retain_graph or create_graph,
                                create_graph=create_graph,
                                allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def flat_params(module) -> torch.Tensor:
    """``module``'s trainable parameters as one vector (a detached copy)."""
    params = _checked_module("module", module)
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def set_flat_params(module, flat) -> None:
    """Write the vector ``flat`` (as :func:`flat_params` returns it) into ``module``'s parameters."""
    params = _checked_module("module", module)
    n = sum(p.numel() for p in params)
    if not isinstance(flat, torch.Tensor) or flat.shape != (n,):
        raise ValueError(f"flat must be a tensor of shape ({n},), one entry per parameter, "
                         f"got {check.describe(flat)}")
    if not torch.isfinite(flat).all():
        raise ValueError("flat must be finite")
    with torch.no_grad():
        i = 0
        for p in params:
            p.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()


# --------------------------------------------------------------------------- the Fisher matrix, implicitly


def fisher_operator(policy, observations, damping: float = 0.0) -> Callable:
    """A function ``v -> (F + damping I) v``: ``F``, the Fisher matrix, implicitly.

    ``F`` is the Hessian, at the current parameters, of the mean KL between
    the current policy (held fixed) and the policy being moved, on
    ``observations``. That Hessian is the Fisher information matrix
    ``E[grad log pi grad log pi^T]``, and a product with it costs two
    backward passes (Pearlmutter's trick): the gradient of the KL is built
    once, with its graph kept, and each product differentiates
    ``gradient . v`` once more. No ``parameters x parameters`` matrix is
    ever formed.

    ``policy``: a module mapping float observations ``(n, d)`` to logits
    ``(n, A)`` (a :class:`rl2llm.policies.CategoricalMLP`);
    ``observations``: ``(n, d)`` finite numbers; ``damping`` >= 0 (it keeps
    conjugate gradient stable where ``F`` is nearly singular).
    """
    _checked_module("policy", policy)
    obs = _checked_observations(observations)
    damping = check.as_real("damping", damping, 0.0)
    logits = policy(obs)
    # zero, with zero gradient, at the current parameters; its Hessian is not zero: it is F
    kl = categorical_kl(logits.detach(), logits).mean()
    kl_grad = flat_grad(kl, policy, create_graph=True)

    def product(vector: torch.Tensor) -> torch.Tensor:
        _check_vector(vector, kl_grad.shape)
        along = kl_grad @ vector.to(kl_grad.dtype)
        return flat_grad(along, policy, retain_graph=True) + damping * vector

    return product


def _check_vector(vector, shape) -> None:
    if not isinstance(vector, torch.Tensor) or vector.shape != shape:
        raise ValueError(f"vector must be a tensor of shape {tuple(shape)}, one entry per "
                         f"parameter, got {check.describe(vector)}")


def fisher_vector_product(policy, observations, vector, damping: float = 0.0) -> torch.Tensor:
    """``(F + damping * I) v`` for one vector: :func:`fisher_operator` applied once."""
    return fisher_operator(policy, observations, damping)(vector)


def _checked_observations(observations) -> torch.Tensor:
    if isinstance(observations, torch.Tensor):
        observations = observations.detach().cpu().numpy()
    array = check.as_finite_array("observations", observations)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"observations must have shape (n, obs_dim) with n >= 1, got {array.shape}")
    return torch.as_tensor(array, dtype=torch.float32)


# --------------------------------------------------------------------------- conjugate gradient


def conjugate_gradient(Avp: Callable, b, iters: int = 10, tol: float = 1e-10):
    """Solve ``A x = b`` for a symmetric positive-definite ``A`` given as ``Avp``.

    ``Avp(v)`` returns the product ``A v``; the matrix itself is never needed.

    Starts from ``x = 0`` and takes at most ``iters`` steps, one product
    ``A p`` each; stops early once the squared residual ``|b - A x|^2`` is
    below ``tol``. Each new direction ``p`` is the residual made conjugate to
    the previous ones (``p_i . A p_j = 0``), so in exact arithmetic the
    answer is exact after ``n`` steps for an ``n x n`` matrix, and good after
    far fewer when ``A``'s eigenvalues cluster.

    ``b``: a 1-D NumPy array or torch tensor (the answer has its type);
    ``Avp``: a callable taking and returning vectors of that type and shape;
    ``iters``: a positive integer; ``tol``: >= 0.
    """
    b = _checked_rhs(Avp, b)
    iters = check.as_int("iters", iters, 1)
    tol = check.as_real("tol", tol, 0.0)
    x = b * 0.0
    r = b * 1.0                          # the residual b - A x, at x = 0
    p = b * 1.0                          # the first direction: the residual
    r_dot_r = float(r @ r)
    for _ in range(iters):
        if r_dot_r <= tol:
            break
        Ap = Avp(p)
        alpha = r_dot_r / float(p @ Ap)  # the exact minimiser along p
        x = x + alpha * p
        r = r - alpha * Ap               # kept up to date: no extra product
        new_r_dot_r = float(r @ r)
        p = r + (new_r_dot_r / r_dot_r) * p   # conjugate to the last ones
        r_dot_r = new_r_dot_r
    return x


def _checked_rhs(Avp, b):
    if not callable(Avp):
        raise TypeError(f"Avp must be a callable v -> A v, got {check.describe(Avp)}")
    if isinstance(b, torch.Tensor):
        if b.ndim != 1 or not torch.isfinite(b).all():
            raise ValueError(f"b must be a finite 1-D vector, got shape {tuple(b.shape)}")
        return b
    b = check.as_finite_array("b", b)
    if b.ndim != 1:
        raise ValueError(f"b must be a 1-D vector, got shape {b.shape}")
    return b


# --------------------------------------------------------------------------- the line search


@dataclass(frozen=True)
class Trial:
    """One step the line search tried: its fraction of the full step, what it measured, its verdict."""

    fraction: float
    kl: float
    improvement: float
    #: What the linear model of the surrogate predicted for this step (NaN when not given).
    expected: float
    accepted: bool
    #: "accepted", "KL over the bound" or "no improvement".
    reason: str


@dataclass(frozen=True)
class LineSearch:
    """What :func:`line_search` did: every trial in order, and the parameters it returns."""

    trials: tuple[Trial, ...]
    #: The accepted parameters, or the old ones when every trial was rejected.
    params: torch.Tensor

    @property
    def accepted(self) -> bool:
        return bool(self.trials) and self.trials[-1].accepted

    @property
    def backtracks(self) -> int:
        """Trials rejected before the accepted one (all of them when none was accepted)."""
        return len(self.trials) - 1 if self.accepted else len(self.trials)

    @property
    def kl(self) -> float:
        """The measured KL of the accepted step (0 when none was accepted)."""
        return self.trials[-1].kl if self.accepted else 0.0

    @property
    def improvement(self) -> float:
        """The surrogate improvement of the accepted step (0 when none was accepted)."""
        return self.trials[-1].improvement if self.accepted else 0.0


def line_search(evaluate: Callable, old_params, full_step, max_kl: float,
                max_backtracks: int = 10, shrink: float = 0.5,
                expected_improvement: float | None = None) -> LineSearch:
    """Try ``old_params + f * full_step`` for ``f = 1, shrink, shrink**2, ...``.

    Returns the first trial that passes, and every trial before it.

    ``evaluate(params) -> (surrogate, kl)`` measures the surrogate objective
    and the mean KL from the old policy at a parameter vector. A trial passes
    when its measured KL is at most ``max_kl`` and the surrogate improved on
    its value at ``old_params`` (strictly); otherwise the step is shrunk and
    tried again, ``max_backtracks`` times at most. When nothing passes, the
    old parameters are returned: no update is better than a bad one.
    ``expected_improvement`` (the linear model's prediction for the full
    step) is recorded, scaled, in each trial.

    ``old_params``, ``full_step``: 1-D tensors of the same shape;
    ``max_kl`` > 0; ``max_backtracks`` >= 0; ``shrink`` in (0, 1).
    """
    max_kl, max_backtracks, shrink, expected_improvement = _checked_search(
        evaluate, old_params, full_step, max_kl, max_backtracks, shrink,
        expected_improvement)
    base, _ = evaluate(old_params)
    trials = []
    for k in range(max_backtracks + 1):
        fraction = shrink ** k
        params = old_params + fraction * full_step
        surrogate, kl = evaluate(params)
        gain = float(surrogate) - float(base)
        if not math.isfinite(kl) or kl > max_kl:
            reason = "KL over the bound"
        elif not gain > 0:
            reason = "no improvement"
        else:
            reason = "accepted"
        expected = fraction * expected_improvement
        ok = reason == "accepted"
        trials.append(Trial(fraction, float(kl), gain, expected, ok, reason))
        if ok:
            return LineSearch(tuple(trials), params)
    return LineSearch(tuple(trials), old_params.clone())


def _checked_search(evaluate, old_params, full_step, max_kl, max_backtracks, shrink, expected):
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable params -> (surrogate, kl), got {check.describe(evaluate)}")
    for name, value in (("old_params", old_params), ("full_step", full_step)):
        if not isinstance(value, torch.Tensor) or value.ndim != 1:
            raise TypeError(f"{name} must be a 1-D tensor, got {check.describe(value)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} must be finite")
    if old_params.shape != full_step.shape:
        raise ValueError(f"full_step must have the shape of old_params, {tuple(old_params.shape)}, "
                         f"got {tuple(full_step.shape)}")
    max_kl = check.as_real("max_kl", max_kl, 0.0, low_open=True)
    max_backtracks = check.as_int("max_backtracks", max_backtracks, 0)
    shrink = check.as_real("shrink", shrink, 0.0, 1.0, low_open=True, high_open=True)
    expected = math.nan if expected is None else check.as_real("expected_improvement", expected)
    return max_kl, max_backtracks, shrink, expected


# --------------------------------------------------------------------------- one TRPO step


@dataclass(frozen=True)
class TRPOStep:
    """One policy update of TRPO: the search along the natural-gradient step, and what went into it."""

    search: LineSearch
    #: The norm of the plain gradient of the surrogate, and the KL the quadratic model predicts
    #: for the full step (``max_kl`` by construction, unless the step was capped).
    grad_norm: float
    predicted_kl: float


def surrogate_and_kl(policy, observations, actions, advantages, old_log_probs,
                     old_logits) -> tuple[torch.Tensor, torch.Tensor]:
    """The surrogate ``mean(pi(a|s) / pi_old(a|s) * A)`` and the mean ``KL(pi_old || pi)`` on a batch.

    Both are differentiable in ``policy``'s parameters; at the old parameters
    the surrogate's gradient is the policy gradient and the KL is zero.
    ``observations`` ``(n, d)``; ``actions``, ``advantages``,
    ``old_log_probs`` ``(n,)`` tensors; ``old_logits`` ``(n, A)``.
    """
    logits = policy(observations)
    log_probs = torch.log_softmax(logits, dim=-1).gather(1, actions[:, None])[:, 0]
    ratio = torch.exp(log_probs - old_log_probs)
    return (ratio * advantages).mean(), categorical_kl(old_logits, logits).mean()


def trpo_step(policy, observations, actions, advantages, max_kl: float = 0.01,
              damping: float = 0.1, cg_iters: int = 10,
              max_backtracks: int = 10, shrink: float = 0.5,
              search: bool = True) -> TRPOStep:
    """One TRPO update of ``policy`` in place, on a batch; returns what it did.

    1. ``g``: the gradient of the surrogate (:func:`surrogate_and_kl`).
    2. ``x ~ F^-1 g`` by :func:`conjugate_gradient` with ``cg_iters``
       Fisher-vector products (:func:`fisher_operator`, with ``damping``).
    3. The full step ``sqrt(2 max_kl / x.Fx) x``: the largest step along
       ``x`` whose KL, by the model ``KL ~ step.F step / 2``, is ``max_kl``.
    4. :func:`line_search` along it, unless ``search=False``: then the full
       step is taken whatever it measures (the gotcha of Lecture 5).

    ``observations`` ``(n, d)``, ``actions`` ``(n,)`` integers,
    ``advantages`` ``(n,)`` finite numbers; the rest as in :class:`TRPOConfig`.
    """
    obs, acts, adv = _checked_batch(policy, observations, actions, advantages)
    max_kl = check.as_real("max_kl", max_kl, 0.0, low_open=True)
    cg_iters = check.as_int("cg_iters", cg_iters, 1)
    search = check.as_bool("search", search)
    with torch.no_grad():
        old_logits = policy(obs)
        old_log_probs = torch.log_softmax(old_logits, dim=-1).gather(
            1, acts[:, None])[:, 0]
    batch = (obs, acts, adv, old_log_probs, old_logits)
    g = flat_grad(surrogate_and_kl(policy, *batch)[0], policy)
    old = flat_params(policy)

    def evaluate(params):
        set_flat_params(policy, params)
        with torch.no_grad():
            surrogate, kl = surrogate_and_kl(policy, *batch)
        return float(surrogate), float(kl)

    if not torch.isfinite(g).all() or float(g @ g) == 0.0:  # nowhere to go
        return TRPOStep(LineSearch((), old), float(g.norm()), 0.0)
    Fvp = fisher_operator(policy, obs, damping)
    x = conjugate_gradient(Fvp, g, cg_iters)              # x ~ F^-1 g
    xFx = float(x @ Fvp(x))
    scale = math.sqrt(2 * max_kl / max(xFx, 1e-12))
    full_step = scale * x
    expected = float(g @ full_step)
    # the model's KL of the full step, without the damping
    predicted_kl = 0.5 * scale ** 2 * (xFx - damping * float(x @ x))
    if search:
        result = line_search(evaluate, old, full_step, max_kl, max_backtracks,
                             shrink, expected)
    else:   # the full step, whatever it measures
        after, kl = evaluate(old + full_step)
        gain = after - evaluate(old)[0]
        trial = Trial(1.0, kl, gain, expected, True, "accepted")
        result = LineSearch((trial,), old + full_step)
    set_flat_params(policy, result.params)
    return TRPOStep(result, float(g.norm()), predicted_kl)


def _checked_batch(policy, observations, actions, advantages):
    if not isinstance(policy, CategoricalMLP):
        raise TypeError(f"policy must be a CategoricalMLP, got {check.describe(policy)}")
    obs = _checked_observations(observations)
    acts = torch.as_tensor(check.as_actions("actions", actions, policy.n_actions))
    if acts.shape != (len(obs),):
        raise ValueError(f"actions must have shape (n,) = ({len(obs)},), got {tuple(acts.shape)}")
    adv = check.as_finite_array("advantages", advantages, (len(obs),), "(n,)")
    return obs, acts, torch.as_tensor(adv, dtype=torch.float32)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TRPOConfig:
    """The knobs of :func:`train_trpo`. The defaults are the chapter's small setting for CartPole-v1.

    Every update plays ``episodes_per_update`` whole episodes on ``n_envs``
    copies of the environment, computes GAE advantages (``gamma``, ``lam``)
    with the critic, takes one TRPO step (``max_kl``, ``damping``,
    ``cg_iters``, ``max_backtracks``, ``shrink``; ``line_search=False`` takes
    the full step unchecked), then fits the critic to the returns with Adam
    (``value_lr``, ``value_epochs`` passes over the batch in minibatches of
    ``value_batch_size``).
    """

    n_updates: int = 25
    episodes_per_update: int = 16
    n_envs: int = 16
    max_kl: float = 0.01
    damping: float = 0.1
    cg_iters: int = 10
    max_backtracks: int = 10
    shrink: float = 0.5
    line_search: bool = True
    gamma: float = 0.99
    lam: float = 0.97
    hidden: tuple[int, ...] = (32,)
    value_hidden: tuple[int, ...] = (64,)
    value_lr: float = 3e-3
    value_epochs: int = 5
    value_batch_size: int = 512
    normalize_advantages: bool = True

    def __post_init__(self):
        for name in ("n_updates", "episodes_per_update", "n_envs", "cg_iters", "value_epochs",
                     "value_batch_size"):
            check.as_int(name, getattr(self, name), 1)
        check.as_int("max_backtracks", self.max_backtracks, 0)
        check.as_real("max_kl", self.max_kl, 0.0, low_open=True)
        check.as_real("damping", self.damping, 0.0)
        check.as_real("shrink", self.shrink, 0.0, 1.0, low_open=True, high_open=True)
        check.as_real("gamma", self.gamma, 0.0, 1.0)
        check.as_real("lam", self.lam, 0.0, 1.0)
        check.as_real("value_lr", self.value_lr, 0.0, low_open=True)
        for name in ("line_search", "normalize_advantages"):
            check.as_bool(name, getattr(self, name))
        for name in ("hidden", "value_hidden"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a tuple of layer widths such as (64,), "
                                f"got {check.describe(value)}")
            object.__setattr__(self, name, tuple(check.as_int(f"{name}[{i}]", w, 1) for i, w in enumerate(value)))


@dataclass
class TRPOResult:
    """What :func:`train_trpo` returns: the trained networks and one entry per update."""

    policy: CategoricalMLP
    critic: ValueMLP
    config: TRPOConfig
    seed: int
    #: Per update: the mean return of the batch's episodes, environment steps so far,
    #: the measured KL of the accepted step (0 if none), its surrogate improvement,
    #: the trials rejected before it, and whether any step was accepted.
    mean_returns: np.ndarray
    steps: np.ndarray
    kls: np.ndarray
    improvements: np.ndarray
    backtracks: np.ndarray
    accepted: np.ndarray
    #: Every update's line search, trial by trial.
    searches: list[LineSearch] = field(default_factory=list)
    #: Evaluations every ``eval_every`` updates: the update count, and the returns (one row each).
    eval_updates: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    eval_returns: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    seconds: float = 0.0


def train_trpo(env_id: str, config: TRPOConfig = TRPOConfig(), seed: int = 0, eval_every: int = 0,
               eval_episodes: int = 20, threads: int | None = 1, description: str | None = None) -> TRPOResult:
    """Train a :class:`~rl2llm.policies.CategoricalMLP` with TRPO on ``env_id``; see :class:`TRPOConfig`.

    The loop, once per update: play whole episodes (:func:`rl2llm.rollouts.collect_episodes`),
    compute GAE advantages with the critic (:func:`rl2llm.advantages.gae`),
    take one :func:`trpo_step`, fit the critic. The networks, the sampled
    actions and the environments all start from ``seed``, so the same seed
    gives the same run (PyTorch's generator is forked: the caller's is left
    as it was). With
    ``eval_every > 0`` the policy plays ``eval_episodes`` fresh episodes
    every ``eval_every`` updates and after the last (:func:`evaluate_policy`).

    Accepted: ``env_id`` a registered id with a flat Box observation space and
    Discrete actions; ``config`` a :class:`TRPOConfig`; ``seed`` an integer >= 0;
    ``eval_every`` >= 0; ``eval_episodes`` >= 1; ``threads`` ``None`` or >= 1;
    ``description`` ``None`` or a string (the progress lines of the build log).
    """
    if not isinstance(config, TRPOConfig):
        raise TypeError(f"config must be a TRPOConfig, got {check.describe(config)}")
    seed = check.as_int("seed", seed, 0, 2**31 - 1)
    eval_every = check.as_int("eval_every", eval_every, 0)
    eval_episodes = check.as_int("eval_episodes", eval_episodes, 1)
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a string or None, got {check.describe(description)}")
    _checked_env_id(env_id).close()
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)   # the networks and every sampled action: the same seed, the same run
        return _train_trpo(env_id, config, seed, eval_every, eval_episodes,
                           description or f"TRPO on {env_id}, seed {seed}")


def _train_trpo(env_id, c: TRPOConfig, seed, eval_every, eval_episodes, description) -> TRPOResult:
    start = time.perf_counter()
    env = _vector_env(env_id, c.n_envs)
    obs_dim, n_actions = env.single_observation_space.shape[0], int(env.single_action_space.n)
    policy = CategoricalMLP(obs_dim, n_actions, c.hidden)
    critic = ValueMLP(obs_dim, c.value_hidden)
    value_opt = torch.optim.Adam(critic.parameters(), lr=c.value_lr, fused=True)
    rng = np.random.default_rng(seed)
    log = {k: [] for k in ("mean_returns", "steps", "kls", "improvements", "backtracks", "accepted")}
    searches, eval_updates, eval_returns, steps = [], [], [], 0
    for update in progress(range(c.n_updates), description):
        batch = collect_episodes(env, policy, c.episodes_per_update, seed=seed if update == 0 else None)
        with torch.no_grad():
            values = critic.values(batch.observations)
            next_values = critic.values(batch.next_observations)
        advantages = gae(batch.rewards, values, next_values, batch.terminated, batch.truncated, c.gamma, c.lam)
        returns = advantages + values   # the critic's targets
        if c.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        step = trpo_step(policy, batch.observations, batch.actions, advantages, c.max_kl, c.damping,
                         c.cg_iters, c.max_backtracks, c.shrink, c.line_search)
        _fit_critic(critic, value_opt, batch.observations, returns, c, rng)
        steps += batch.n_steps
        searches.append(step.search)
        for key, value in (("mean_returns", float(batch.episode_returns().mean())), ("steps", steps),
                           ("kls", step.search.kl), ("improvements", step.search.improvement),
                           ("backtracks", step.search.backtracks), ("accepted", step.search.accepted)):
            log[key].append(value)
        if eval_every and ((update + 1) % eval_every == 0 or update + 1 == c.n_updates):
            eval_updates.append(update + 1)
            eval_returns.append(_evaluate(policy, env_id, eval_episodes, 10_000 + 1_000 * seed + update))
    env.close()
    return TRPOResult(policy, critic, c, seed, *(np.array(log[k]) for k in log), searches,
                      np.array(eval_updates, dtype=int),
                      np.array(eval_returns).reshape(len(eval_updates), eval_episodes),
                      time.perf_counter() - start)


def _vector_env(env_id: str, n_envs: int):
    """``n_envs`` copies side by side: natively vectorised where gymnasium has it (CartPole), else in a loop."""
    try:
        return gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point")
    except (gym.error.Error, ValueError, TypeError):
        return gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="sync")


def _fit_critic(critic, optimizer, observations, returns, c: TRPOConfig, rng) -> None:
    obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32)
    targets = torch.as_tensor(np.asarray(returns), dtype=torch.float32)
    n = len(obs)
    for _ in range(c.value_epochs):
        order = rng.permutation(n)
        for i in range(0, n, c.value_batch_size):
            idx = torch.as_tensor(order[i:i + c.value_batch_size])
            loss = ((critic(obs[idx]) - targets[idx]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def evaluate_policy(policy, env_id: str, n_episodes: int = 100, seed: int = 0) -> np.ndarray:
    """Play ``n_episodes`` episodes with ``policy`` (sampling its actions, as it was trained); return each return.

    Episode ``i`` starts from ``env.reset(seed=seed + i)``; the actions come
    from PyTorch's generator, which is forked and seeded with ``seed``, so the
    same arguments give the same returns. ``policy``: a
    :class:`~rl2llm.policies.CategoricalMLP` that fits the environment.
    """
    if not isinstance(policy, CategoricalMLP):
        raise TypeError(f"policy must be a CategoricalMLP, got {check.describe(policy)}")
    env = _checked_env_id(env_id)
    if (env.observation_space.shape[0], env.action_space.n) != (policy.obs_dim, policy.n_actions):
        env.close()
        raise ValueError(f"policy takes {policy.obs_dim} numbers and chooses among {policy.n_actions} actions; "
                         f"{env_id} has observations of shape {env.observation_space.shape} and "
                         f"{env.action_space.n} actions")
    env.close()
    n_episodes = check.as_int("n_episodes", n_episodes, 1)
    seed = check.as_int("seed", seed, 0)
    return _evaluate(policy, env_id, n_episodes, seed)


def _evaluate(policy, env_id, n_episodes, seed) -> np.ndarray:
    """One episode on each of ``n_episodes`` copies side by side (copy ``i`` reset with ``seed + i``)."""
    env = _vector_env(env_id, n_episodes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        episodes = collect_episodes(env, policy, n_episodes, seed=seed)
    env.close()
    return episodes.episode_returns()


def config_dict(config: TRPOConfig) -> dict:
    """The config as a plain dict (for printing)."""
    if not isinstance(config, TRPOConfig):
        raise TypeError(f"config must be a TRPOConfig, got {check.describe(config)}")
    return asdict(config)


# --------------------------------------------------------------------------- the exact natural gradient


def tabular_fisher(mdp: FiniteMDP, theta, start=None) -> np.ndarray:
    """The Fisher matrix of the tabular softmax policy ``softmax(theta[s])``, shape ``(S*A, S*A)``.

    ``F = sum_s d(s) (diag(pi_s) - pi_s pi_s^T)``, one block per state, with
    ``d`` the discounted visits of Lecture 2 (:func:`rl2llm.policy_gradient.discounted_visits`):
    the expected outer product of ``grad log pi`` over the states the policy
    visits, weighted as the policy gradient weights them. Rows and columns
    are ordered ``s * A + a``. ``theta``: finite ``(S, A)``; ``start``: as
    :func:`rl2llm.policy_gradient.exact_policy_gradient`.
    """
    if not isinstance(mdp, FiniteMDP):
        raise TypeError(f"mdp must be a FiniteMDP, got {check.describe(mdp)}")
    theta = check.as_finite_array("theta", theta)
    S, A = mdp.n_states, mdp.n_actions
    if theta.shape != (S, A):
        raise ValueError(f"theta must have shape (S, A) = {(S, A)}, got {theta.shape}")
    probs = softmax(theta, axis=1)
    d = discounted_visits(mdp, probs, start_distribution(mdp, start))
    F = np.zeros((S * A, S * A))
    for s in range(S):
        block = np.diag(probs[s]) - np.outer(probs[s], probs[s])
        F[s * A:(s + 1) * A, s * A:(s + 1) * A] = d[s] * block
    return F


def natural_policy_gradient(mdp: FiniteMDP, theta, start=None) -> np.ndarray:
    """``F^+ grad J``, shape ``(S, A)``: the natural gradient of the tabular softmax policy, exactly.

    ``F`` is :func:`tabular_fisher` and ``grad J`` Lecture 2's
    :func:`rl2llm.policy_gradient.exact_policy_gradient`; ``F`` is singular
    (adding a constant to a state's scores changes nothing), so this is the
    smallest solution, by least squares. For the tabular softmax it is the
    advantage ``A(s, a)`` minus its mean over actions in every visited state
    (Kakade, 2002): the step no longer shrinks where the policy is nearly
    certain.
    """
    F = tabular_fisher(mdp, theta, start)
    g = exact_policy_gradient(mdp, theta, start)
    x = np.linalg.lstsq(F, g.ravel(), rcond=1e-10)[0]
    return x.reshape(g.shape)


__all__ = [
    "categorical_kl", "flat_grad", "flat_params", "set_flat_params", "fisher_operator", "fisher_vector_product",
    "conjugate_gradient", "Trial", "LineSearch", "line_search", "TRPOStep", "surrogate_and_kl", "trpo_step",
    "TRPOConfig", "TRPOResult", "train_trpo", "evaluate_policy", "config_dict", "tabular_fisher",
    "natural_policy_gradient",
]
