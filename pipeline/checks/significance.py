"""Is it luck? Sharpe-ratio significance and block-bootstrap intervals.

* **Probabilistic Sharpe ratio** (Bailey & López de Prado 2012, "The Sharpe Ratio Efficient
  Frontier"): the probability that the true per-period Sharpe ratio exceeds ``sr_star``, given the
  observed one over ``n`` returns with their skewness and (non-excess) kurtosis::

      PSR = Phi( (SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2) )

* **Deflated Sharpe ratio** (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio", JPM
  40(5)): the PSR against the Sharpe ratio the best of ``n_trials`` skill-less configurations would
  show, ``SR0 = sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))`` with ``V`` the
  variance of the trials' Sharpe ratios and ``g`` the Euler-Mascheroni constant. The paper's
  numerical example (annualised SR 2.5 over 1,250 daily returns, skew -3, kurtosis 10, 100
  trials, annualised variance 1/2) gives SR0 = 0.1132 per day and DSR = 0.9004; the tests check it.

* **Moving-block bootstrap** (Künsch 1989) of per-bar returns for intervals of the total return
  and the Sharpe ratio: blocks keep the returns' serial dependence (volatility clusters, a
  strategy's holding periods), which an i.i.d. bootstrap would destroy and so give too narrow
  intervals. Block length ``ceil(n ** (1/3))`` by default (the usual rate for variance estimates).

Everything is per bar (not annualised) unless a name says ``annualised``. Pure numpy and the
standard library: no torch, no scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()

CONFIDENCE = 0.95
"""Two-sided level of the bootstrap intervals; also the PSR / DSR level that counts as an edge."""


def moments(returns: np.ndarray) -> tuple[float, float, float]:
    """Per-period Sharpe ratio (population std), skewness and non-excess kurtosis of ``returns``;
    a constant series has Sharpe 0, skew 0, kurtosis 3 (the normal values: nothing to say)."""
    r = np.asarray(returns, dtype=np.float64)
    sd = float(r.std())
    if r.size < 2 or sd == 0.0 or not math.isfinite(sd):
        return 0.0, 0.0, 3.0
    z = (r - r.mean()) / sd
    return float(r.mean() / sd), float(np.mean(z**3)), float(np.mean(z**4))


def probabilistic_sharpe_ratio(
    sr: float, n: int, skew: float = 0.0, kurt: float = 3.0, sr_star: float = 0.0
) -> float:
    """PSR: probability that the true per-period Sharpe exceeds ``sr_star`` (see the module)."""
    if n < 2:
        return float("nan")
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if var <= 0:
        return float("nan")
    return _N.cdf((sr - sr_star) * math.sqrt(n - 1) / math.sqrt(var))


def expected_max_sharpe(n_trials: int, var_sr: float) -> float:
    """SR0: the expected best per-period Sharpe of ``n_trials`` skill-less configurations whose
    Sharpe ratios vary with variance ``var_sr`` (0 for a single trial)."""
    if n_trials <= 1 or var_sr <= 0:
        return 0.0
    n = float(n_trials)
    return math.sqrt(var_sr) * (
        (1 - EULER_GAMMA) * _N.inv_cdf(1 - 1 / n) + EULER_GAMMA * _N.inv_cdf(1 - 1 / (n * math.e))
    )


def deflated_sharpe_ratio(
    sr: float, n: int, skew: float, kurt: float, n_trials: int, var_sr: float
) -> float:
    """DSR: the PSR against :func:`expected_max_sharpe` (see the module)."""
    return probabilistic_sharpe_ratio(sr, n, skew, kurt, expected_max_sharpe(n_trials, var_sr))


def block_bootstrap_interval(
    returns: np.ndarray,
    stat: Any,
    n_boot: int = 1000,
    block: int | None = None,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile interval of ``stat(resampled returns)`` over ``n_boot`` moving-block bootstrap
    series (circular blocks of ``block`` bars, default ``ceil(n ** (1/3))``), seeded."""
    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    if n < 2:
        return float("nan"), float("nan")
    b = block or max(1, math.ceil(n ** (1 / 3)))
    k = math.ceil(n / b)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(n_boot, k))  # (B, k)
    idx = (starts[:, :, None] + np.arange(b)[None, None, :]) % n  # (B, k, b) circular
    samples = r[idx.reshape(n_boot, k * b)[:, :n]]  # (B, n)
    values = np.array([stat(s) for s in samples])
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def _total_return(r: np.ndarray) -> float:
    return float(np.prod(1.0 + r) - 1.0)


@dataclass
class Significance:
    """Is a strategy's result distinguishable from luck? (JSON via :meth:`as_dict`)."""

    n: int
    sharpe_per_bar: float
    psr: float
    """P(true Sharpe > 0)."""
    dsr: float | None
    """PSR against the best of ``n_trials`` skill-less trials; ``None`` for a single trial."""
    n_trials: int
    total_return_ci: tuple[float, float]
    sharpe_annualised_ci: tuple[float, float]
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the backtest report."""
        return {
            "n_returns": self.n,
            "sharpe_per_bar": self.sharpe_per_bar,
            "psr": self.psr,
            "dsr": self.dsr,
            "n_trials": self.n_trials,
            "total_return_ci95": list(self.total_return_ci),
            "sharpe_annualised_ci95": list(self.sharpe_annualised_ci),
            "verdict": self.verdict,
        }


def verdict(score: float, total_return_ci: tuple[float, float], traded: bool) -> str:
    """``edge`` when the (deflated) PSR reaches :data:`CONFIDENCE` and the return interval lies
    above 0; ``no edge`` when the interval lies at or below 0, or nothing was traded; else
    ``cannot tell at this sample size``."""
    lo, hi = total_return_ci
    if not traded:
        return "no edge (no trade)"
    if math.isfinite(score) and score >= CONFIDENCE and lo > 0:
        return "edge"
    if hi <= 0:
        return "no edge"
    return "cannot tell at this sample size"


def significance(
    equity: np.ndarray,
    bars_per_year: float,
    n_trials: int = 1,
    var_sr: float | None = None,
    traded: bool = True,
    seed: int = 0,
    n_boot: int = 1000,
) -> Significance:
    """PSR, DSR (``n_trials > 1``; ``var_sr`` the trials' per-bar Sharpe variance, else the
    estimation variance of one Sharpe ratio) and 95 % block-bootstrap intervals of the total
    return and annualised Sharpe of an equity curve."""
    eq = np.asarray(equity, dtype=np.float64)
    r = eq[1:] / eq[:-1] - 1.0  # (n,)
    sr, skew, kurt = moments(r)
    psr = probabilistic_sharpe_ratio(sr, r.size, skew, kurt)
    if n_trials > 1 and var_sr is None:
        # Without the trials' own Sharpe ratios (tuning trials never saw the test block): the
        # variance of a Sharpe estimate over n returns, (1 + SR^2 / 2) / n (Lo 2002), i.e. how
        # much skill-less trials' Sharpe ratios scatter by estimation noise alone.
        var_sr = (1 + sr * sr / 2) / max(r.size, 1)
    dsr = (
        deflated_sharpe_ratio(sr, r.size, skew, kurt, n_trials, var_sr)
        if n_trials > 1 and var_sr is not None
        else None
    )

    def ann_sharpe(x: np.ndarray) -> float:
        return moments(x)[0] * math.sqrt(bars_per_year)

    ret_ci = block_bootstrap_interval(r, _total_return, n_boot, seed=seed)
    sr_ci = block_bootstrap_interval(r, ann_sharpe, n_boot, seed=seed)
    score = dsr if dsr is not None else psr
    return Significance(
        int(r.size), sr, psr, dsr, int(n_trials), ret_ci, sr_ci, verdict(score, ret_ci, traded)
    )
