"""Offline preference losses beyond DPO: KTO, SimPO, ORPO and CPO (Lecture 16).

Each one fixes a problem of DPO (Lecture 15, :mod:`rl2llm.dpo`), and each is a
loss on the sequence log-probabilities of a batch of pairs, so it plugs into
:func:`rl2llm.dpo.train_preferences` unchanged (IPO is in :mod:`rl2llm.dpo`,
as a ``loss_type``):

* :func:`kto_loss` (Ethayarajh et al. 2024) -- *DPO needs pairs.* KTO needs
  only a thumbs-up or a thumbs-down per answer: a desirable answer's loss is
  ``lambda_D (1 - sigmoid(beta (r - z0)))``, an undesirable one's
  ``lambda_U (1 - sigmoid(beta (z0 - r)))``, with ``r = log pi/pi_ref`` and
  ``z0`` a reference point (an estimate of the KL divergence, detached; here
  the batch's mean log-ratio, floored at 0). A pair is used as one desirable
  and one undesirable answer.
* :func:`simpo_loss` (Meng et al. 2024) -- *DPO needs a reference model, and
  its reward is not the one used to generate.* SimPO's reward is the mean
  log-probability per token (what sampling favours), with a target margin
  ``gamma``: ``-log sigmoid(beta (lp_w/|y_w| - lp_l/|y_l|) - gamma)``. No reference.
* :func:`cpo_loss` (Xu et al. 2024) -- *no reference either*: the sigmoid loss
  on the policy's own log-probabilities, ``-log sigmoid(beta (lp_w - lp_l))``,
  plus ``alpha`` times the negative log-likelihood per token of the chosen answer,
  which keeps it from drifting away from good text.
* :func:`orpo_loss` (Hong et al. 2024) -- *no separate fine-tuning stage and no
  reference*: supervised fine-tuning on the chosen answer plus ``lam`` times an
  odds-ratio term ``-log sigmoid(log odds(y_w) - log odds(y_l))``, where
  ``odds(y) = P(y) / (1 - P(y))`` and ``P(y)`` is the mean per-token probability
  ``exp(lp / |y|)``.

:func:`loss_fn` turns a method's name and settings into the ``loss_fn(policy,
reference)`` that :func:`~rl2llm.dpo.train_preferences` takes, and
:func:`train_offline` runs it (with no reference pass for the methods that
need none). Every public function checks its arguments and names the bad one.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from rl2llm import _validate as check
from rl2llm.dpo import PairLogps, dpo_loss, train_preferences

__all__ = ["METHODS", "kto_loss", "simpo_loss", "cpo_loss", "orpo_loss", "loss_fn", "needs_reference",
           "train_offline"]

#: The methods :func:`loss_fn` knows (``"dpo"`` and ``"ipo"`` come from :mod:`rl2llm.dpo`).
METHODS = ("dpo", "ipo", "kto", "simpo", "cpo", "orpo")


def _logps(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value if value.is_floating_point() else value.double()
    else:
        t = torch.as_tensor(check.as_finite_array(name, value))
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor (one entry per answer), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"{name} must be finite")
    return t


def _same(names_values, like: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for name, value in names_values:
        t = _logps(name, value).to(like.dtype)
        if t.shape != like.shape:
            raise ValueError(f"{name} must have shape {tuple(like.shape)}, got {tuple(t.shape)}")
        out.append(t)
    return out


def _lengths(name: str, value, like: torch.Tensor) -> torch.Tensor:
    t = _same([(name, value)], like)[0]
    if not bool((t >= 1).all()):
        raise ValueError(f"{name} must hold token counts >= 1, got {t.tolist()[:5]}")
    return t


def _log_probs_only(name: str, t: torch.Tensor) -> None:
    if bool((t.detach() > 0).any()):
        raise ValueError(f"{name} must hold log-probabilities (<= 0), got {t.detach().max().item():.3g}")


def kto_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
             beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             z0=None) -> torch.Tensor:
    """KTO's loss, the mean over the batch's desirable (chosen) and undesirable (rejected) answers.

    ``r = log pi(y|x) - log pi_ref(y|x)`` per answer. ``z0``: the reference
    point (a number); ``None`` uses ``max(0, mean of all r in the batch)``,
    detached (TRL estimates it from mismatched prompt-answer pairs instead).
    The two halves are summed and divided by the number of answers, as TRL does.
    """
    pc = _logps("policy_chosen_logps", policy_chosen_logps)
    pr, rc, rr = _same([("policy_rejected_logps", policy_rejected_logps), ("ref_chosen_logps", ref_chosen_logps),
                        ("ref_rejected_logps", ref_rejected_logps)], pc)
    beta = check.as_real("beta", beta, 0.0, low_open=True)
    wd = check.as_real("desirable_weight", desirable_weight, 0.0, low_open=True)
    wu = check.as_real("undesirable_weight", undesirable_weight, 0.0, low_open=True)
    chosen_r, rejected_r = pc - rc.detach(), pr - rr.detach()
    if z0 is None:
        z = torch.cat([chosen_r, rejected_r]).detach().mean().clamp(min=0)
    else:
        z = torch.as_tensor(check.as_real("z0", z0), dtype=pc.dtype)
    losses = torch.cat([wd * (1 - torch.sigmoid(beta * (chosen_r - z))),
                        wu * (1 - torch.sigmoid(beta * (z - rejected_r)))])
    return losses.mean()


def simpo_loss(policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths, *,
               beta: float = 2.0, gamma: float = 1.0) -> torch.Tensor:
    """SimPO: ``-log sigmoid(beta * (lp_w / |y_w| - lp_l / |y_l|) - gamma)``, the batch mean.

    ``gamma`` is the target margin (TRL's ``CPOConfig(loss_type="simpo")``
    writes it as ``gamma = beta * simpo_gamma``). No reference model.
    """
    pc = _logps("policy_chosen_logps", policy_chosen_logps)
    pr = _same([("policy_rejected_logps", policy_rejected_logps)], pc)[0]
    lc, lr = _lengths("chosen_lengths", chosen_lengths, pc), _lengths("rejected_lengths", rejected_lengths, pc)
    beta = check.as_real("beta", beta, 0.0, low_open=True)
    gamma = check.as_real("gamma", gamma, 0.0)
    return (-F.logsigmoid(beta * (pc / lc - pr / lr) - gamma)).mean()


def cpo_loss(policy_chosen_logps, policy_rejected_logps, chosen_lengths, *, beta: float = 0.1,
             alpha: float = 1.0) -> torch.Tensor:
    """CPO: ``-log sigmoid(beta (lp_w - lp_l)) - alpha * lp_w / |y_w|``, the batch mean.

    The first term is DPO's with the reference's log-probabilities set to 0
    (:func:`rl2llm.dpo.dpo_loss` computes it); the second is the chosen
    answer's negative log-likelihood per token. No reference model.
    """
    pc = _logps("policy_chosen_logps", policy_chosen_logps)
    pr = _same([("policy_rejected_logps", policy_rejected_logps)], pc)[0]
    lc = _lengths("chosen_lengths", chosen_lengths, pc)
    beta = check.as_real("beta", beta, 0.0, low_open=True)
    alpha = check.as_real("alpha", alpha, 0.0)
    zero = torch.zeros_like(pc.detach())
    preference = dpo_loss(pc, pr, zero, zero, beta).loss
    return preference + alpha * (-(pc / lc)).mean()


def orpo_loss(policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths, *,
              lam: float = 0.1) -> torch.Tensor:
    """ORPO: ``-lp_w / |y_w| - lam * log sigmoid(log odds(y_w) - log odds(y_l))``, the batch mean.

    With ``a = lp / |y|`` (the mean log-probability per token),
    ``log odds = a - log(1 - exp(a))``. ``lam`` is TRL's ``ORPOConfig.beta``.
    """
    pc = _logps("policy_chosen_logps", policy_chosen_logps)
    pr = _same([("policy_rejected_logps", policy_rejected_logps)], pc)[0]
    lc, lr = _lengths("chosen_lengths", chosen_lengths, pc), _lengths("rejected_lengths", rejected_lengths, pc)
    _log_probs_only("policy_chosen_logps", pc)
    _log_probs_only("policy_rejected_logps", pr)
    lam = check.as_real("lam", lam, 0.0)
    a_w, a_l = pc / lc, pr / lr
    # log(1 - exp(a)) without cancellation near a = 0 (log1p(-exp(a)) = log(-expm1(a)))
    log_odds = (a_w - torch.log(-torch.expm1(a_w).clamp(max=-1e-12))) - \
               (a_l - torch.log(-torch.expm1(a_l).clamp(max=-1e-12)))
    return (-a_w - lam * F.logsigmoid(log_odds)).mean()


def needs_reference(method: str) -> bool:
    """Whether ``method`` compares with a reference model (DPO, IPO, KTO) or not (SimPO, CPO, ORPO)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {check.describe(method)}")
    return method in ("dpo", "ipo", "kto")


def loss_fn(method: str, **settings):
    """The ``loss_fn(policy, reference)`` of ``method`` for :func:`rl2llm.dpo.train_preferences`.

    ``settings`` are the method's keyword arguments: ``beta`` for DPO and IPO
    (IPO with TRL's per-token normalisation), those of :func:`kto_loss`,
    :func:`simpo_loss`, :func:`cpo_loss` or :func:`orpo_loss` otherwise.
    """
    needs_reference(method)
    if method in ("dpo", "ipo"):
        unknown = set(settings) - {"beta"}
        if unknown:
            raise TypeError(f"settings: {method} takes only beta, got {sorted(unknown)}")
        beta = check.as_real("beta", settings.get("beta", 0.1), 0.0, low_open=True)
        kind = "sigmoid" if method == "dpo" else "ipo"

        def fn(policy: PairLogps, reference: PairLogps) -> torch.Tensor:
            lengths = {}
            if kind == "ipo":
                lengths = dict(chosen_lengths=policy.chosen_lengths, rejected_lengths=policy.rejected_lengths)
            return dpo_loss(policy.chosen, policy.rejected, reference.chosen, reference.rejected, beta, kind,
                            **lengths).loss
        return fn
    allowed = {"kto": {"beta", "desirable_weight", "undesirable_weight", "z0"}, "simpo": {"beta", "gamma"},
               "cpo": {"beta", "alpha"}, "orpo": {"lam"}}[method]
    unknown = set(settings) - allowed
    if unknown:
        raise TypeError(f"settings: {method} takes {sorted(allowed)}, got {sorted(unknown)}")
    # validate now (a bad setting fails here, not at the first step)
    probe = torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([1.0])
    if method == "kto":
        kto_loss(probe[0], probe[1], probe[0], probe[1], **settings)
        return lambda policy, reference: kto_loss(policy.chosen, policy.rejected, reference.chosen,
                                                  reference.rejected, **settings)
    if method == "simpo":
        simpo_loss(probe[0], probe[1], probe[2], probe[2], **settings)
        return lambda policy, reference: simpo_loss(policy.chosen, policy.rejected, policy.chosen_lengths,
                                                    policy.rejected_lengths, **settings)
    if method == "cpo":
        cpo_loss(probe[0], probe[1], probe[2], **settings)
        return lambda policy, reference: cpo_loss(policy.chosen, policy.rejected, policy.chosen_lengths,
                                                  **settings)
    orpo_loss(probe[0], probe[1], probe[2], probe[2], **settings)
    return lambda policy, reference: orpo_loss(policy.chosen, policy.rejected, policy.chosen_lengths,
                                               policy.rejected_lengths, **settings)


def train_offline(zoo_model, prefs: Sequence, method: str, *, steps: int, lr: float, seed: int = 0,
                  settings: dict | None = None, **options):
    """Train a copy of ``zoo_model.model`` on ``prefs`` with ``method``'s loss.

    :func:`rl2llm.dpo.train_preferences` with :func:`loss_fn` ``(method,
    **settings)``; the reference pass is skipped for the methods that need
    none. ``options`` go to ``train_preferences`` (``batch_size``,
    ``callback``, ``eval_every``, ...). Returns ``(policy, history)``.
    """
    settings = {} if settings is None else settings
    if not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict of the method's keyword arguments, got {check.describe(settings)}")
    fn = loss_fn(method, **settings)
    return train_preferences(zoo_model, prefs, fn, steps=steps, lr=lr, seed=seed,
                             needs_reference=needs_reference(method), **options)

