"""The arrays of one block that :class:`ppo_approach.trading_env.TradingEnv` steps over (plain
numpy, no torch, no pandas), validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.common import PipelineError


class MarketDataError(PipelineError, ValueError):
    """Inconsistent or non-finite block arrays (names the array and the first bad index)."""


def _check_finite(name: str, arr: np.ndarray) -> None:
    """Raise MarketDataError naming ``name`` and the first non-finite index of ``arr``."""
    ok = np.isfinite(arr)
    if not ok.all():
        idx = np.unravel_index(int(np.flatnonzero(~ok.ravel())[0]), arr.shape)
        where = f"row {idx[0]}" + (f", column {idx[1]}" if arr.ndim == 2 else "")
        raise MarketDataError(
            f"market data: {name} has a non-finite value {float(arr[idx])!r} at {where}; "
            "expected finite numbers"
        )


@dataclass
class MarketData:
    """The arrays of ONE block (bars ``0..n-1`` of the block, in time order).

    ``open``/``close`` (n,) prices > 0; ``pred_features`` (n, P) classifier outputs for each bar
    (P may be 0); ``price_features`` (n, K) from ``features.agent_price_features`` (K = 5 in the
    pipeline); ``timestamps`` (n,) optional, any dtype, not used by the env; ``pred_names`` /
    ``price_names`` optional column names for :meth:`TradingEnv.observation_names`. Validated on
    construction; arrays are converted to contiguous float64 (prices) / float32 (features).
    """

    open: np.ndarray
    close: np.ndarray
    pred_features: np.ndarray
    price_features: np.ndarray
    timestamps: np.ndarray | None = None
    pred_names: tuple[str, ...] | None = None
    price_names: tuple[str, ...] | None = field(default=None)
    segment_starts: tuple[int, ...] = (0,)
    """Rows where a new contiguous run of bars begins (the first is 0). A block made of several
    walk-forward folds has purge gaps between them: an episode never steps across a gap, since the
    next row's open is not the next bar's open."""

    def __post_init__(self) -> None:
        self.open = np.ascontiguousarray(self.open, dtype=np.float64)
        self.close = np.ascontiguousarray(self.close, dtype=np.float64)
        self.pred_features = np.ascontiguousarray(self.pred_features, dtype=np.float32)
        self.price_features = np.ascontiguousarray(self.price_features, dtype=np.float32)
        n = self.open.shape[0] if self.open.ndim == 1 else -1
        if self.open.ndim != 1 or n < 2:
            raise MarketDataError(
                f"market data: open has shape {self.open.shape}, expected (n,) with n >= 2 bars"
            )
        expected = {"close": 1, "pred_features": 2, "price_features": 2}
        for name, ndim in expected.items():
            arr = getattr(self, name)
            if arr.ndim != ndim or arr.shape[0] != n:
                want = f"({n},)" if ndim == 1 else f"({n}, columns)"
                raise MarketDataError(
                    f"market data: {name} has shape {arr.shape}, expected {want} like open"
                )
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps)
            if self.timestamps.shape != (n,):
                raise MarketDataError(
                    f"market data: timestamps has shape {self.timestamps.shape}, expected ({n},)"
                )
        for name in ("open", "close", "pred_features", "price_features"):
            _check_finite(name, getattr(self, name))
        for name in ("open", "close"):
            arr = getattr(self, name)
            bad = np.flatnonzero(arr <= 0)
            if bad.size:
                raise MarketDataError(
                    f"market data: {name} has a non-positive price {float(arr[bad[0]])!r} at row "
                    f"{int(bad[0])}; expected prices > 0"
                )
        starts = tuple(int(s) for s in self.segment_starts)
        if not starts or starts[0] != 0 or any(np.diff(starts) <= 0):
            raise MarketDataError(
                f"market data: segment_starts = {starts}, expected increasing rows starting at 0"
            )
        if starts[-1] > n - 2:
            raise MarketDataError(
                f"market data: segment_starts = {starts}: the last segment starts at row "
                f"{starts[-1]}, expected every segment to have at least 2 rows (n = {n})"
            )
        self.segment_starts = starts
        for name, arr in (("pred_names", self.pred_features), ("price_names", self.price_features)):
            names = getattr(self, name)
            if names is not None:
                names = tuple(str(s) for s in names)
                setattr(self, name, names)
                if len(names) != arr.shape[1]:
                    raise MarketDataError(
                        f"market data: {name} has {len(names)} names, expected {arr.shape[1]}"
                    )

    @property
    def n_bars(self) -> int:
        """Number of bars in the block."""
        return int(self.open.shape[0])
