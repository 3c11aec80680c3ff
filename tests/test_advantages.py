"""Advantage estimates (Lecture 4): GAE at its two ends, episode ends of both kinds, n-step returns."""

import numpy as np
import pytest
import torch

from rl2llm.advantages import gae, n_step_returns, td_errors
from rl2llm.policies import ValueMLP
from rl2llm.rollouts import reward_to_go


def stream(seed=0, T=40, n=None, p_term=0.1, p_trunc=0.05):
    """A random stream of steps with episode ends of both kinds (never both at once)."""
    rng = np.random.default_rng(seed)
    shape = (T,) if n is None else (T, n)
    rewards = rng.normal(size=shape)
    values = rng.normal(size=shape)
    next_values = rng.normal(size=shape)
    u = rng.random(shape)
    terminated = u < p_term
    truncated = (u >= p_term) & (u < p_term + p_trunc)
    # within an episode, the next step starts where this one went
    values[1:] = np.where((terminated | truncated)[:-1], values[1:], next_values[:-1])
    return rewards, values, next_values, terminated, truncated


def by_hand(rewards, values, next_values, terminated, truncated, gamma, lam):
    """GAE step by step, for one (T,) stream, with plain Python floats."""
    out, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + (0.0 if terminated[t] else gamma * next_values[t]) - values[t]
        running = delta + (0.0 if terminated[t] or truncated[t] else gamma * lam * running)
        out[t] = running
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 0.0), (0.9, 1.0), (1.0, 0.5), (0.0, 0.7)])
def test_gae_agrees_with_the_recursion_written_by_hand(seed, gamma, lam):
    data = stream(seed)
    assert np.allclose(gae(*data, gamma=gamma, lam=lam), by_hand(*data, gamma, lam))


@pytest.mark.parametrize("seed", range(5))
def test_lambda_zero_is_the_one_step_td_advantage(seed):
    rewards, values, next_values, terminated, truncated = stream(seed)
    one_step = rewards + 0.9 * (1 - terminated) * next_values - values
    assert np.allclose(gae(rewards, values, next_values, terminated, truncated, 0.9, 0.0), one_step)
    assert np.allclose(td_errors(rewards, values, next_values, terminated, 0.9), one_step)


def test_lambda_one_is_the_monte_carlo_return_minus_v_when_every_episode_terminates():
    rewards, values, next_values, terminated, _ = stream(1, T=60, p_trunc=0.0)
    terminated[-1] = True   # the stream ends at an episode end
    no_truncation = np.zeros_like(terminated)
    G = reward_to_go(rewards, terminated, gamma=0.95)
    assert np.allclose(gae(rewards, values, next_values, terminated, no_truncation, 0.95, 1.0), G - values)


def test_lambda_one_bootstraps_at_a_truncation_and_at_the_end_of_the_stream():
    # one episode terminated after 3 steps, one truncated after 2, one cut by the end of the stream after 2
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    values = np.array([0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7])
    next_values = np.array([0.1, 0.2, 9.0, 0.4, 10.0, 0.7, 11.0])
    terminated = np.array([False, False, True, False, False, False, False])
    truncated = np.array([False, False, False, False, True, False, False])
    g = 0.9
    returns = np.array([
        1 + g * 2 + g**2 * 3,                      # terminated: V = 9.0 after the end is never used
        2 + g * 3,
        3.0,
        4 + g * 5 + g**2 * 10.0,                   # truncated: bootstrap with V(last observation) = 10
        5 + g * 10.0,
        6 + g * 7 + g**2 * 11.0,                   # the stream ends: bootstrap with 11
        7 + g * 11.0,
    ])
    assert np.allclose(gae(rewards, values, next_values, terminated, truncated, g, 1.0), returns - values)
    assert np.allclose(n_step_returns(rewards, values, next_values, terminated, truncated, 100, g), returns)


def test_a_truncated_step_bootstraps_and_a_terminated_one_does_not():
    r, v, nv = np.array([1.0]), np.array([2.0]), np.array([10.0])
    yes, no = np.array([True]), np.array([False])
    assert gae(r, v, nv, no, yes, gamma=0.5, lam=0.9)[0] == 1.0 + 0.5 * 10.0 - 2.0
    assert gae(r, v, nv, yes, no, gamma=0.5, lam=0.9)[0] == 1.0 - 2.0
    assert gae(r, v, nv, no, no, gamma=0.5, lam=0.9)[0] == 1.0 + 0.5 * 10.0 - 2.0  # the stream ends mid-episode


@pytest.mark.parametrize("end", ["terminated", "truncated"])
def test_the_recursion_stops_at_episode_ends(end):
    rewards, values, next_values, terminated, truncated = (np.zeros(6), np.zeros(6), np.zeros(6),
                                                           np.zeros(6, bool), np.zeros(6, bool))
    (terminated if end == "terminated" else truncated)[2] = True
    before = gae(rewards, values, next_values, terminated, truncated, 0.99, 0.95)
    rewards[3:] = 100.0   # the next episode goes very well: the first one must not hear of it
    next_values[3:] = 50.0
    after = gae(rewards, values, next_values, terminated, truncated, 0.99, 0.95)
    assert np.array_equal(before[:3], after[:3]) and (after[3:] > 0).all()


def test_gae_is_the_lambda_weighted_mix_of_n_step_advantages():
    """Within one terminated episode: A = (1 - lam) sum_n lam^(n-1) A^(n), the tail's weight on the last."""
    rewards, values, next_values, terminated, truncated = stream(3, T=12, p_term=0.0, p_trunc=0.0)
    terminated[-1] = True
    gamma, lam, T = 0.9, 0.7, 12
    A = gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    n_step = {n: n_step_returns(rewards, values, next_values, terminated, truncated, n, gamma) - values
              for n in range(1, T + 1)}
    for t in range(T):
        k = T - t   # steps left in the episode
        mix = sum((1 - lam) * lam ** (n - 1) * n_step[n][t] for n in range(1, k)) + lam ** (k - 1) * n_step[k][t]
        assert np.isclose(A[t], mix)


def test_n_step_returns_at_one_step_is_the_td_target():
    rewards, values, next_values, terminated, truncated = stream(4)
    target = rewards + 0.9 * (1 - terminated) * next_values
    assert np.allclose(n_step_returns(rewards, values, next_values, terminated, truncated, 1, 0.9), target)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_columns_are_separate_streams(lam):
    data = stream(5, T=30, n=4)
    together = gae(*data, gamma=0.97, lam=lam)
    nstep = n_step_returns(*data, n=3, gamma=0.97)
    for i in range(4):
        column = [array[:, i] for array in data]
        assert np.allclose(together[:, i], gae(*column, gamma=0.97, lam=lam))
        assert np.allclose(nstep[:, i], n_step_returns(*column, n=3, gamma=0.97))


def test_gae_returns_float64_and_leaves_its_inputs_alone():
    data = [np.asarray(a) for a in stream(6)]
    data[0] = data[0].astype(np.float32)
    copies = [a.copy() for a in data]
    out = gae(*data)
    assert out.dtype == np.float64 and out.shape == data[0].shape
    assert all(np.array_equal(a, b) for a, b in zip(data, copies))


# --------------------------------------------------------------------------- the value network


def test_the_value_network_gives_one_number_per_observation():
    torch.manual_seed(0)
    net = ValueMLP(4, hidden=(8, 8))
    obs = np.random.default_rng(0).normal(size=(5, 4))
    assert net(torch.as_tensor(obs, dtype=torch.float32)).shape == (5,)
    values = net.values(obs)
    assert values.shape == (5,) and values.dtype == np.float64
    assert np.allclose(values, net(torch.as_tensor(obs, dtype=torch.float32)).detach().numpy(), atol=1e-6)
    assert ValueMLP(3, hidden=()).values(np.zeros((2, 3))).shape == (2,)
    assert not any(isinstance(layer, torch.nn.ReLU) for layer in net.net)


# --------------------------------------------------------------------------- bad input

T3 = (np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3, bool), np.zeros(3, bool))


def with_(i, value):
    args = list(T3)
    args[i] = value
    return args


BAD = [
    ("gae-rewards-3d", lambda: gae(np.zeros((2, 2, 2)), *T3[1:]), ValueError, r"rewards must have shape \(T,\)"),
    ("gae-rewards-empty", lambda: gae(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros(0, bool)),
     ValueError, r"rewards must have shape \(T,\) or \(T, N\) with T >= 1"),
    ("gae-rewards-nan", lambda: gae(*with_(0, [0.0, np.nan, 0.0])), ValueError, r"rewards must be finite"),
    ("gae-values-shape", lambda: gae(*with_(1, np.zeros(4))), ValueError, r"values must have shape"),
    ("gae-next_values-inf", lambda: gae(*with_(2, [0.0, np.inf, 0.0])), ValueError, r"next_values must be finite"),
    ("gae-terminated-ints", lambda: gae(*with_(3, np.zeros(3, int))), TypeError, r"terminated must be an array of bools"),
    ("gae-truncated-shape", lambda: gae(*with_(4, np.zeros(2, bool))), ValueError,
     r"truncated must have the shape of rewards"),
    ("gae-gamma", lambda: gae(*T3, gamma=1.5), ValueError, r"gamma must lie in \[0, 1\]"),
    ("gae-lam", lambda: gae(*T3, lam=-0.1), ValueError, r"lam must lie in \[0, 1\]"),
    ("gae-lam-str", lambda: gae(*T3, lam="0.9"), TypeError, r"lam must be"),
    ("td-gamma", lambda: td_errors(*T3[:4], gamma=2.0), ValueError, r"gamma must lie in \[0, 1\]"),
    ("td-terminated-str", lambda: td_errors(*T3[:3], "no"), TypeError, r"terminated must be an array of bools"),
    ("nstep-n-0", lambda: n_step_returns(*T3, n=0), ValueError, r"n must be a positive integer"),
    ("nstep-n-float", lambda: n_step_returns(*T3, n=2.0), TypeError, r"n must be an integer"),
    ("nstep-values-strings", lambda: n_step_returns(*with_(1, ["a", "b", "c"]), n=1), TypeError,
     r"values must be an array of numbers"),
    ("value-obs_dim-0", lambda: ValueMLP(0), ValueError, r"obs_dim must be a positive integer"),
    ("value-hidden-str", lambda: ValueMLP(4, hidden="64"), TypeError, r"hidden must be a tuple of layer widths"),
    ("value-hidden-0", lambda: ValueMLP(4, hidden=(0,)), ValueError, r"hidden\[0\] must be a positive integer"),
    ("value-values-shape", lambda: ValueMLP(4).values(np.zeros((2, 3))), ValueError,
     r"observations must have shape \(n, obs_dim\) = \(n, 4\)"),
    ("value-values-nan", lambda: ValueMLP(4).values(np.full((1, 4), np.nan)), ValueError,
     r"observations must be finite"),
    ("value-values-str", lambda: ValueMLP(4).values("obs"), TypeError, r"observations must be an array of numbers"),
]


@pytest.mark.parametrize("call, error, message", [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_input_is_refused_with_the_argument_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------- the exercise's checker

from rl2llm.exercises import check_gae  # noqa: E402


def reader_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """A reader's correct answer: a plain loop."""
    A, running = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        if terminated[t] or truncated[t]:
            running = 0.0
        delta = rewards[t] + gamma * (1 - terminated[t]) * next_values[t] - values[t]
        running = delta + gamma * lam * running
        A[t] = running
    return A


def mistake(bootstrap_stop, recursion_stop, next_row=False, carry=None, plus_values=False):
    """A reader's GAE with one classic mistake, chosen by which masks it uses."""
    def fn(rewards, values, next_values, terminated, truncated, gamma, lam):
        masks = {"term": terminated, "trunc": truncated, "ends": terminated | truncated,
                 "never": np.zeros_like(terminated)}
        nv = np.append(values[1:], next_values[-1]) if next_row else next_values
        A, running = np.zeros(len(rewards)), 0.0
        factor = {"gamma": gamma, "lam": lam, None: gamma * lam}[carry]
        for t in reversed(range(len(rewards))):
            delta = rewards[t] + (0.0 if masks[bootstrap_stop][t] else gamma * nv[t]) - values[t]
            running = delta + (0.0 if masks[recursion_stop][t] else factor * running)
            A[t] = running
        return A + values if plus_values else A
    return fn


def test_the_correct_gae_passes():
    result = check_gae(reader_gae)
    assert result.passed and len(result.cases) == 8, result.report()
    assert check_gae(lambda *args: gae(*args)).passed


@pytest.mark.parametrize("solution, hint", [
    (mistake("ends", "ends"), "a truncated episode was treated as terminated"),
    (mistake("never", "ends"), "the step that terminated an episode bootstrapped from next_values"),
    (mistake("term", "never"), "the recursion runs on across episode ends"),
    (mistake("term", "term"), "the recursion stops at terminations but runs on across truncations"),
    (mistake("term", "ends", next_row=True), "you used values[t + 1] as the value of the next state"),
    (mistake("term", "ends", carry="gamma"), "without lam"),
    (mistake("term", "ends", carry="lam"), "without gamma"),
    (mistake("term", "ends", plus_values=True), "you returned the value targets"),
])
def test_classic_gae_mistakes_are_diagnosed(solution, hint):
    result = check_gae(solution)
    assert not result.passed
    assert any(hint in case.hint for case in result.failures), result.report()
    assert all(case.message.startswith("the advantage") for case in result.failures), result.report()


def test_gae_malformed_answers_and_exceptions_are_described():
    def no_return(*args):
        pass

    def crashes(rewards, *args):
        return rewards[len(rewards)]

    assert "returned None instead of the advantages" in check_gae(no_return).cases[0].message
    assert "IndexError" in check_gae(crashes).cases[0].message
    assert "shape (7, 1)" in check_gae(lambda r, *a: np.zeros((len(r), 1))).report() or \
        "flatten it with .ravel()" in check_gae(lambda r, *a: np.zeros((len(r), 1))).report()
    assert "finite" in check_gae(lambda r, *a: np.full(len(r), np.nan)).cases[0].message
    with pytest.raises(TypeError, match="check_gae: fn must take 7 arguments"):
        check_gae(lambda rewards, values: rewards)


def test_gae_checker_shows_a_repeated_error_once():
    def stub(rewards, values, next_values, terminated, truncated, gamma, lam):
        raise NotImplementedError("your code here")

    result = check_gae(stub)
    assert not result.passed and "NotImplementedError" in result.cases[0].message
    assert all("same error as in the first case" in case.message for case in result.cases[1:]), result.report()
    assert result.report().count("NotImplementedError: your code here") == 1, result.report()
    with pytest.raises(TypeError, match="check_gae: fn must be your function"):
        check_gae("gae")
