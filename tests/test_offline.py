"""rl2llm.offline: each loss against its paper's formula on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rl2llm import offline
from rl2llm.dpo import PairLogps


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_simpo_by_hand():
    # chosen: -4 over 2 tokens (-2 per token), rejected: -9 over 3 tokens (-3 per token)
    loss = offline.simpo_loss(torch.tensor([-4.0]), torch.tensor([-9.0]), torch.tensor([2.0]), torch.tensor([3.0]),
                              beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(-math.log(sig(2.0 * (-2 + 3) - 0.5)), rel=1e-6)


def test_simpo_matches_trl_cpo_trainer_form():
    """TRL's CPOTrainer(loss_type='simpo'): logits = (avg_w - avg_l) - simpo_gamma / beta; -logsigmoid(beta * logits)."""
    beta, simpo_gamma = 2.5, 0.5
    cw, rl = torch.tensor([-3.0, -1.0]), torch.tensor([-8.0, -0.5])
    lw, ll = torch.tensor([3.0, 2.0]), torch.tensor([4.0, 1.0])
    trl = (-torch.nn.functional.logsigmoid(beta * ((cw / lw - rl / ll) - simpo_gamma / beta))).mean()
    ours = offline.simpo_loss(cw, rl, lw, ll, beta=beta, gamma=simpo_gamma)
    assert torch.allclose(ours, trl)


def test_cpo_by_hand():
    loss = offline.cpo_loss(torch.tensor([-2.0]), torch.tensor([-5.0]), torch.tensor([4.0]), beta=0.5, alpha=1.0)
    assert loss.item() == pytest.approx(-math.log(sig(0.5 * 3)) + 2.0 / 4, rel=1e-6)


def test_orpo_by_hand():
    lp_w, lp_l, n_w, n_l, lam = -1.0, -3.0, 2.0, 3.0, 0.1
    a_w, a_l = lp_w / n_w, lp_l / n_l
    odds = lambda a: math.exp(a) / (1 - math.exp(a))
    expected = -a_w - lam * math.log(sig(math.log(odds(a_w) / odds(a_l))))
    loss = offline.orpo_loss(torch.tensor([lp_w]), torch.tensor([lp_l]), torch.tensor([n_w]), torch.tensor([n_l]),
                             lam=lam)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_orpo_is_finite_near_certainty():
    loss = offline.orpo_loss(torch.tensor([-1e-9]), torch.tensor([-2.0]), torch.tensor([1.0]), torch.tensor([1.0]))
    assert torch.isfinite(loss)


def test_kto_by_hand():
    beta = 0.5
    pc, pr, rc, rr = [torch.tensor([x]) for x in (-1.0, -4.0, -2.0, -3.0)]
    # r_w = 1, r_l = -1, z0 from the batch: max(0, mean(1, -1)) = 0
    expected = ((1 - sig(beta * 1)) + (1 - sig(beta * 1))) / 2
    assert offline.kto_loss(pc, pr, rc, rr, beta=beta).item() == pytest.approx(expected, rel=1e-6)
    # a given reference point, and weights
    expected = (2.0 * (1 - sig(beta * (1 - 0.5))) + 1.0 * (1 - sig(beta * (0.5 + 1)))) / 2
    got = offline.kto_loss(pc, pr, rc, rr, beta=beta, z0=0.5, desirable_weight=2.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_kto_reference_point_is_floored_and_detached():
    pc = torch.tensor([-3.0], requires_grad=True)
    loss = offline.kto_loss(pc, torch.tensor([-4.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), beta=1.0)
    (g,) = torch.autograd.grad(loss, pc)
    r = -2.0   # z0 = max(0, mean(-2, -3)) = 0
    assert g.item() == pytest.approx(-sig(r) * (1 - sig(r)) / 2, rel=1e-6)


def test_loss_fn_matches_the_functions_and_dpo():
    from rl2llm.dpo import dpo_loss
    pol = PairLogps(torch.tensor([-2.0, -1.0]), torch.tensor([-3.0, -4.0]), torch.tensor([2.0, 1.0]),
                    torch.tensor([3.0, 2.0]))
    ref = PairLogps(torch.tensor([-2.5, -1.5]), torch.tensor([-2.5, -3.0]), pol.chosen_lengths, pol.rejected_lengths)
    assert torch.allclose(offline.loss_fn("dpo", beta=0.1)(pol, ref),
                          dpo_loss(pol.chosen, pol.rejected, ref.chosen, ref.rejected, 0.1).loss)
    assert torch.allclose(offline.loss_fn("simpo", beta=2.0, gamma=0.5)(pol, None),
                          offline.simpo_loss(pol.chosen, pol.rejected, pol.chosen_lengths, pol.rejected_lengths,
                                             beta=2.0, gamma=0.5))
    assert torch.allclose(offline.loss_fn("orpo")(pol, None),
                          offline.orpo_loss(pol.chosen, pol.rejected, pol.chosen_lengths, pol.rejected_lengths))
    assert torch.allclose(offline.loss_fn("kto", beta=0.2)(pol, ref),
                          offline.kto_loss(pol.chosen, pol.rejected, ref.chosen, ref.rejected, beta=0.2))
    assert torch.allclose(offline.loss_fn("cpo")(pol, None),
                          offline.cpo_loss(pol.chosen, pol.rejected, pol.chosen_lengths))
    assert [offline.needs_reference(m) for m in offline.METHODS] == [True, True, True, False, False, False]


def test_bad_inputs_are_named():
    one = torch.tensor([-1.0])
    with pytest.raises(ValueError, match="method"):
        offline.loss_fn("ppo")
    with pytest.raises(TypeError, match="settings"):
        offline.loss_fn("simpo", lam=1.0)
    with pytest.raises(ValueError, match="beta"):
        offline.loss_fn("kto", beta=-1.0)
    with pytest.raises(ValueError, match="chosen_lengths"):
        offline.simpo_loss(one, one, torch.tensor([0.0]), one.abs())
    with pytest.raises(ValueError, match="policy_rejected_logps"):
        offline.cpo_loss(one, torch.tensor([-1.0, -2.0]), one.abs())
    with pytest.raises(ValueError, match="policy_chosen_logps"):
        offline.orpo_loss(torch.tensor([0.5]), one, one.abs(), one.abs())
    with pytest.raises(ValueError, match="policy_chosen_logps"):
        offline.kto_loss(torch.tensor([float("nan")]), one, one, one)
    with pytest.raises(TypeError, match="settings"):
        offline.train_offline(None, [], "dpo", steps=1, lr=1e-3, settings=[1])


def test_train_offline_runs_without_a_reference():
    from rl2llm import zoo
    from rl2llm.preferences import Preference
    m = zoo.load("arithmetic", "half-trained", progress=False)
    prefs = [Preference("03+14=", "017", "016", 1.0, 0.0), Preference("21+30=", "051", "050", 1.0, 0.0)]
    for method in ("simpo", "orpo", "kto"):
        policy, history = offline.train_offline(m, prefs, method, steps=2, lr=1e-3, batch_size=2)
        assert len(history.loss) == 2 and all(math.isfinite(x) for x in history.loss)
