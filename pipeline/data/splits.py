"""Leakage-safe chronological splits of the sample bars: train / val / test and walk-forward folds.

Splits (half-open ranges of *sample bars*; a sample at bar ``t`` is the window ``t-L+1 .. t`` of
features and the label of ``t``, whose horizon is ``t+1 .. t+k``)::

    bar 0          first = warmup + L - 1                       last = N - k - 1     N-1
    |-- warm-up --|------------------------ usable sample bars ---------------------|-- k --|
                  [ train ......... ) purge [ val ... ) purge [ test ............. ]
                  [ fold0 ) purge [ fold1 ) purge [ fold2 ) purge [ fold3 )
                  |<------------------- dev ------------------>|

    purge = max(purge_gap, k + L)  (purge_gap None / "auto" -> k + L)
    test  = last test_fraction of the usable span
    val   = last val_fraction of dev; folds = n_folds equal walk-forward folds over dev

With a gap of at least ``k + L`` bars between consecutive blocks, the label horizon of the last
bar of one block (``t + k``) ends before the first bar that any window of the next block reads
(``start - L + 1``): no label of a training sample is built from prices a validation or test
sample sees, and no window overlaps the previous block's labels (Lopez de Prado 2018, "Advances
in Financial Machine Learning", ch. 7: purging). The scaler and the auto threshold are fit on
the training block's rows only (:func:`pipeline.classifiers.prepare.build_classifier_arrays`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.common import PipelineError

MIN_BLOCK_SAMPLES = 10
"""Fewest sample bars any split block (train, val, test, each fold) may have."""


class SplitError(PipelineError):
    """The requested chronological split does not fit the data or breaks the purge rule."""


@dataclass(frozen=True)
class Block:
    """Half-open range ``[start, stop)`` of sample bars."""

    name: str
    start: int
    stop: int

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def bars(self) -> np.ndarray:
        """The sample bars of the block, ``(len,)`` int64."""
        return np.arange(self.start, self.stop, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "start", "stop", "n"}``."""
        return {"name": self.name, "start": self.start, "stop": self.stop, "n": len(self)}


@dataclass
class Splits:
    """Chronological blocks of sample bars (see the module docstring's diagram)."""

    train: Block
    val: Block
    test: Block
    dev: Block
    folds: list[Block]
    purge: int
    first_bar: int
    last_bar: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for run summaries and the saved scaler's metadata)."""
        return {
            "train": self.train.to_dict(),
            "val": self.val.to_dict(),
            "test": self.test.to_dict(),
            "dev": self.dev.to_dict(),
            "folds": [f.to_dict() for f in self.folds],
            "purge": self.purge,
            "first_bar": self.first_bar,
            "last_bar": self.last_bar,
        }


def resolve_purge(purge_gap: int | str | None, k: int, lookback: int) -> int:
    """Bars dropped between blocks: ``k + lookback`` for None/"auto", else ``purge_gap``.

    A ``purge_gap`` below ``k + lookback`` would let a training label horizon reach bars a
    validation window reads, so it raises :class:`SplitError` naming the minimum.
    """
    minimum = k + lookback
    if purge_gap is None or (isinstance(purge_gap, str) and purge_gap.strip().lower() == "auto"):
        return minimum
    try:
        gap = int(purge_gap)
    except (TypeError, ValueError):
        raise SplitError(f"purge_gap = {purge_gap!r} is not an integer or 'auto'") from None
    if gap != purge_gap and not isinstance(purge_gap, str):
        raise SplitError(f"purge_gap = {purge_gap!r} is not an integer or 'auto'")
    if gap < minimum:
        raise SplitError(
            f"purge_gap = {gap} is below the minimum smoothing_k + lookback = {k} + {lookback} "
            f"= {minimum}; use purge_gap >= {minimum} or 'auto'"
        )
    return gap


def _layout(
    n_bars: int,
    warmup: int,
    lookback: int,
    k: int,
    test_fraction: float,
    val_fraction: float,
    purge: int,
    n_folds: int,
) -> Splits:
    """Block boundaries without size checks (blocks may come out empty)."""
    first = warmup + lookback - 1
    last = n_bars - k - 1
    span = max(0, last + 1 - first)
    n_test = int(round(span * test_fraction))
    test = Block("test", last + 1 - n_test, last + 1)
    dev = Block("dev", first, test.start - purge)
    n_val = int(round(len(dev) * val_fraction))
    val = Block("val", dev.stop - n_val, dev.stop)
    train = Block("train", first, val.start - purge)
    folds: list[Block] = []
    if n_folds > 0:
        usable = len(dev) - (n_folds - 1) * purge
        # Equal folds; the integer remainder goes to the earliest folds.
        sizes = [usable // n_folds + (1 if i < usable % n_folds else 0) for i in range(n_folds)]
        start = first
        for i, size in enumerate(sizes):
            folds.append(Block(f"fold{i}", start, start + size))
            start += size + purge
    return Splits(train, val, test, dev, folds, purge, first, last)


def _too_small(s: Splits, min_samples: int) -> Block | None:
    for block in (s.train, s.val, s.test, *s.folds):
        if block.stop - block.start < min_samples:
            return block
    return None


def make_splits(
    n_bars: int,
    warmup: int,
    lookback: int,
    k: int,
    test_fraction: float,
    val_fraction: float,
    purge_gap: int | str | None,
    n_folds: int,
    min_samples: int = MIN_BLOCK_SAMPLES,
) -> Splits:
    """Chronological train / val / test blocks and walk-forward folds with purge gaps.

    Usable sample bars are ``first = warmup + lookback - 1`` (first window without NaN
    features) .. ``last = n_bars - k - 1`` (last bar with a full label horizon). ``test`` is
    the last ``test_fraction`` of that span; ``dev`` the part before it minus a purge gap;
    ``val`` the last ``val_fraction`` of dev and ``train`` the rest minus a purge gap;
    ``folds`` are ``n_folds`` equal contiguous folds over dev with purge gaps between them.
    ``purge = max(purge_gap, k + lookback)``; see the module docstring for the diagram.

    Raises:
        SplitError: bad parameter, purge_gap below ``k + lookback``, or a block with fewer than
            ``min_samples`` bars (the message names the block and the rows needed).
    """
    if lookback < 1:
        raise SplitError(f"lookback = {lookback} must be >= 1")
    if k < 1:
        raise SplitError(f"smoothing_k = {k} must be >= 1")
    if warmup < 0:
        raise SplitError(f"warmup = {warmup} must be >= 0")
    for key, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < float(frac) < 1.0:
            raise SplitError(f"{key} = {frac} must be between 0 and 1 (exclusive)")
    if n_folds < 0:
        raise SplitError(f"n_folds = {n_folds} must be >= 0 (0 = no walk-forward folds)")
    purge = resolve_purge(purge_gap, k, lookback)
    args = (warmup, lookback, k, test_fraction, val_fraction, purge, n_folds)
    splits = _layout(n_bars, *args)
    small = _too_small(splits, min_samples)
    if small is not None:
        needed = _rows_needed(args, min_samples, n_bars)
        if splits.last_bar < splits.first_bar:
            raise SplitError(
                f"the dataset has {n_bars} rows: no bar has both a full feature window and a "
                f"full label horizon (first sample bar is {splits.first_bar} = warm-up {warmup} "
                f"+ lookback {lookback} - 1, last is {splits.last_bar} = rows - smoothing_k "
                f"{k} - 1); the split needs at least {needed} rows"
            )
        raise SplitError(
            f"not enough rows for the chronological split: block '{small.name}' would have "
            f"{len(small)} sample bars (needs at least {min_samples}); the dataset has {n_bars} "
            f"rows, needs at least {needed} with warm-up {warmup}, lookback {lookback}, "
            f"smoothing_k {k}, purge {purge}, test_fraction {test_fraction}, "
            f"val_fraction {val_fraction}, n_folds {n_folds}"
        )
    return splits


def min_rows_for_split(
    warmup: int,
    lookback: int,
    k: int,
    test_fraction: float,
    val_fraction: float,
    purge_gap: int | str | None,
    n_folds: int,
    min_samples: int = MIN_BLOCK_SAMPLES,
) -> int | None:
    """Fewest rows whose split :func:`make_splits` accepts (None: no count does); preflight
    shows it so that preflight and step 5 cannot disagree."""
    purge = resolve_purge(purge_gap, k, lookback)
    args = (warmup, lookback, k, test_fraction, val_fraction, purge, n_folds)
    return _rows_needed(args, min_samples, 1)


def _rows_needed(args: tuple[Any, ...], min_samples: int, n_bars: int) -> int | None:
    """Smallest row count whose layout passes the size check (binary search, then verified)."""

    def ok(n: int) -> bool:
        return _too_small(_layout(n, *args), min_samples) is None

    hi = max(n_bars, 64)
    while not ok(hi):
        hi *= 2
        if hi > 2**40:
            return None
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    # Rounding of fractions can make the check non-monotone by a bar or two; step up if so.
    while not all(ok(lo + d) for d in range(4)):
        lo += 1
    return lo
