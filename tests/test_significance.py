"""Is a result distinguishable from luck? PSR and DSR against the published worked example, and the
block-bootstrap intervals' coverage and behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.checks import significance as sig

pytestmark = pytest.mark.unit


def test_dsr_reproduces_bailey_lopez_de_prado_2014_numerical_example() -> None:
    """ "The Deflated Sharpe Ratio" (JPM 40(5), 2014), numerical example: the best of N = 100
    trials has an annualised SR of 2.5 over T = 1,250 daily returns, skewness -3, kurtosis 10;
    the trials' annualised SR variance is 1/2. The paper: SR0 = 0.1132 (per day), DSR = 0.9004."""
    days = 250
    sr = 2.5 / math.sqrt(days)
    sr0 = sig.expected_max_sharpe(100, 0.5 / days)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = sig.deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 100, 0.5 / days)
    assert dsr == pytest.approx(0.9004, abs=5e-4)


def test_psr_is_one_half_at_the_benchmark_and_grows_with_the_sample() -> None:
    assert sig.probabilistic_sharpe_ratio(0.05, 500, sr_star=0.05) == pytest.approx(0.5)
    short = sig.probabilistic_sharpe_ratio(0.05, 100)
    long = sig.probabilistic_sharpe_ratio(0.05, 10_000)
    assert 0.5 < short < long and long > 0.99
    # negative skew and fat tails make the same Sharpe less convincing
    assert sig.probabilistic_sharpe_ratio(0.05, 1000, -3, 10) < sig.probabilistic_sharpe_ratio(
        0.05, 1000
    )


def test_one_trial_is_not_deflated() -> None:
    assert sig.expected_max_sharpe(1, 0.01) == 0.0
    assert sig.deflated_sharpe_ratio(0.05, 800, 0, 3, 1, 0.01) == pytest.approx(
        sig.probabilistic_sharpe_ratio(0.05, 800)
    )


def test_bootstrap_interval_covers_the_true_mean_about_95_percent() -> None:
    """i.i.d. normal returns with known mean: the 95 % interval of the mean covers it in about
    95 % of 200 samples (the block bootstrap is a little conservative or liberal, not broken)."""
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        r = rng.normal(0.001, 0.01, 400)
        lo, hi = sig.block_bootstrap_interval(r, np.mean, n_boot=300, seed=i)
        hits += lo <= 0.001 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_block_bootstrap_is_wider_than_iid_on_clustered_returns() -> None:
    """Returns in long same-sign runs: blocks keep the runs, so the interval of the total return
    is wider than with blocks of one bar (the i.i.d. bootstrap understates the uncertainty)."""
    rng = np.random.default_rng(1)
    r = np.repeat(rng.choice([-0.004, 0.005], 60), 25)  # (1500,) runs of 25 bars
    lo1, hi1 = sig.block_bootstrap_interval(r, lambda x: float(np.prod(1 + x) - 1), block=1)
    lob, hib = sig.block_bootstrap_interval(r, lambda x: float(np.prod(1 + x) - 1), block=50)
    assert (hib - lob) > 2 * (hi1 - lo1)


def test_verdicts_edge_no_edge_and_cannot_tell() -> None:
    rng = np.random.default_rng(2)
    strong = 100 * np.cumprod(1 + rng.normal(0.002, 0.01, 3000))
    weak = 100 * np.cumprod(1 + rng.normal(0.0001, 0.01, 300))
    losing = 100 * np.cumprod(1 + rng.normal(-0.003, 0.01, 3000))
    assert sig.significance(strong, 8760).verdict == "edge"
    assert sig.significance(weak, 8760).verdict == "cannot tell at this sample size"
    assert sig.significance(losing, 8760).verdict == "no edge"
    flat = np.full(500, 100.0)
    s = sig.significance(flat, 8760, traded=False)
    assert s.verdict == "no edge (no trade)" and s.psr == pytest.approx(0.5)


def test_many_trials_deflate_a_lucky_winner() -> None:
    """The same equity curve: an edge as one trial, not after 1,000 trials whose Sharpe ratios
    vary as much as a skill-less search's would."""
    rng = np.random.default_rng(3)
    eq = 100 * np.cumprod(1 + rng.normal(0.0012, 0.01, 2000))
    one = sig.significance(eq, 8760)
    many = sig.significance(eq, 8760, n_trials=1000, var_sr=(1 / math.sqrt(2000)) ** 2 * 4)
    assert one.verdict == "edge"
    assert many.dsr is not None and many.dsr < 0.95 <= one.psr
    assert many.verdict == "cannot tell at this sample size"
    d = many.as_dict()
    assert d["n_trials"] == 1000 and len(d["total_return_ci95"]) == 2


def test_trials_without_their_sharpe_ratios_deflate_by_estimation_noise() -> None:
    """Tuning trials never see the test block, so their test Sharpe ratios are unknown: the DSR
    then takes the estimation variance of one Sharpe ratio, (1 + SR^2/2) / n (Lo 2002)."""
    rng = np.random.default_rng(4)
    eq = 100 * np.cumprod(1 + rng.normal(0.0008, 0.01, 2000))
    s = sig.significance(eq, 8760, n_trials=50)
    sr, skew, kurt = sig.moments(eq[1:] / eq[:-1] - 1)
    assert s.dsr == pytest.approx(
        sig.deflated_sharpe_ratio(sr, 1999, skew, kurt, 50, (1 + sr * sr / 2) / 1999)
    )
    assert s.dsr is not None and s.dsr < s.psr
