"""Chronological splits, purge gaps and the train-only scaler / threshold of
build_classifier_arrays."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.classifiers import prepare as P
from pipeline.classifiers.windows import WindowData
from pipeline.common import PipelineError
from pipeline.data import features as F
from pipeline.data import labels as L
from pipeline.data import splits as S

pytestmark = pytest.mark.unit  # every test here (tiers: tests/conftest.py)

GRID = [
    # n_bars, warmup, lookback, k, test_fraction, val_fraction, purge_gap, n_folds
    (5000, 49, 48, 5, 0.2, 0.15, None, 5),
    (5000, 49, 24, 10, 0.3, 0.2, "auto", 4),
    (3000, 10, 1, 1, 0.25, 0.25, 100, 3),
    (20000, 49, 96, 12, 0.1, 0.1, 200, 8),
    (800, 0, 10, 3, 0.2, 0.2, 13, 1),
]


def _pairs(s: S.Splits) -> list[tuple[S.Block, S.Block]]:
    """Every (earlier, later) pair of blocks whose separation must hold."""
    pairs = [(s.train, s.val), (s.val, s.test), (s.dev, s.test), (s.train, s.test)]
    pairs += list(zip(s.folds[:-1], s.folds[1:], strict=True))
    pairs += [(f, s.test) for f in s.folds]
    return pairs


@pytest.mark.parametrize("args", GRID)
def test_blocks_ordered_disjoint_and_purged(args: tuple) -> None:
    n_bars, warmup, lookback, k, tf, vf, gap, n_folds = args
    s = S.make_splits(n_bars, warmup, lookback, k, tf, vf, gap, n_folds)
    assert s.first_bar == warmup + lookback - 1
    assert s.last_bar == n_bars - k - 1
    assert s.purge >= k + lookback
    assert s.train.start == s.dev.start == s.first_bar
    assert s.val.stop == s.dev.stop
    assert s.test.stop == s.last_bar + 1
    assert len(s.test) == round((s.last_bar + 1 - s.first_bar) * tf)
    assert len(s.val) == round(len(s.dev) * vf)
    assert len(s.folds) == n_folds
    assert s.folds[0].start == s.dev.start and s.folds[-1].stop == s.dev.stop
    sizes = [len(f) for f in s.folds]
    assert max(sizes) - min(sizes) <= 1
    for earlier, later in _pairs(s):
        assert len(earlier) > 0 and len(later) > 0
        assert earlier.stop <= later.start
        assert later.start - earlier.stop >= k + lookback
        # The explicit leakage rule: the label horizon of every bar of the earlier block ends
        # before the first bar any window of the later block reads.
        t = earlier.bars()
        assert (t + k < later.start - lookback + 1).all(), (earlier.name, later.name)
    # Consecutive blocks are separated by exactly the purge.
    assert s.val.start - s.train.stop == s.purge
    assert s.test.start - s.dev.stop == s.purge


def test_purge_gap_used_when_larger_and_auto_is_minimum() -> None:
    s = S.make_splits(5000, 49, 48, 5, 0.2, 0.15, 300, 3)
    assert s.purge == 300
    assert s.val.start - s.train.stop == 300
    assert s.folds[1].start - s.folds[0].stop == 300
    assert S.make_splits(5000, 49, 48, 5, 0.2, 0.15, "auto", 3).purge == 53
    assert S.make_splits(5000, 49, 48, 5, 0.2, 0.15, None, 3).purge == 53
    assert S.make_splits(5000, 49, 48, 5, 0.2, 0.15, 53, 3).purge == 53


def test_purge_gap_below_minimum_raises_with_minimum() -> None:
    with pytest.raises(S.SplitError) as exc:
        S.make_splits(5000, 49, 48, 5, 0.2, 0.15, 20, 3)
    msg = str(exc.value)
    assert "purge_gap = 20" in msg and "minimum" in msg and "53" in msg
    assert issubclass(S.SplitError, PipelineError)
    with pytest.raises(S.SplitError, match="not an integer or 'auto'"):
        S.make_splits(5000, 49, 48, 5, 0.2, 0.15, "soon", 3)


def test_too_small_dataset_names_block_and_rows_needed() -> None:
    with pytest.raises(S.SplitError) as exc:
        S.make_splits(400, 49, 48, 5, 0.2, 0.15, None, 5)
    msg = str(exc.value)
    assert "block '" in msg and "needs at least 10" in msg and "400 rows" in msg
    needed = int(msg.split("needs at least ")[2].split()[0])
    assert needed > 400
    s = S.make_splits(needed, 49, 48, 5, 0.2, 0.15, None, 5)
    assert min(len(b) for b in (s.train, s.val, s.test, *s.folds)) >= S.MIN_BLOCK_SAMPLES
    with pytest.raises(S.SplitError, match="needs at least"):
        S.make_splits(needed - 1, 49, 48, 5, 0.2, 0.15, None, 5)


def test_dataset_shorter_than_warmup_and_horizon() -> None:
    with pytest.raises(S.SplitError) as exc:
        S.make_splits(60, 49, 48, 5, 0.2, 0.15, None, 0)
    msg = str(exc.value)
    assert "60 rows" in msg and "first sample bar is 96" in msg and "last is 54" in msg
    assert "needs at least 260 rows" in msg
    assert S.make_splits(260, 49, 48, 5, 0.2, 0.15, None, 0).train.start == 96


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"test_fraction": 0.0}, "test_fraction = 0.0"),
        ({"val_fraction": 1.0}, "val_fraction = 1.0"),
        ({"n_folds": -1}, "n_folds = -1"),
        ({"lookback": 0}, "lookback = 0"),
        ({"k": 0}, "smoothing_k = 0"),
    ],
)
def test_bad_split_parameters(kwargs: dict, needle: str) -> None:
    args = {
        "n_bars": 5000,
        "warmup": 49,
        "lookback": 48,
        "k": 5,
        "test_fraction": 0.2,
        "val_fraction": 0.15,
        "purge_gap": None,
        "n_folds": 3,
    }
    args.update(kwargs)
    with pytest.raises(S.SplitError, match=needle):
        S.make_splits(**args)


def test_no_folds_and_to_dict() -> None:
    s = S.make_splits(5000, 49, 48, 5, 0.2, 0.15, None, 0)
    assert s.folds == []
    d = json.loads(json.dumps(s.to_dict()))
    assert d["train"] == {"name": "train", "start": 96, "stop": s.train.stop, "n": len(s.train)}
    assert d["purge"] == 53 and d["first_bar"] == 96 and d["last_bar"] == 4994
    block = S.Block("x", 3, 7)
    assert len(block) == 4 and block.bars().tolist() == [3, 4, 5, 6]


# ---------------------------------------------------------------- build_classifier_arrays


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    from pipeline.data.synthetic import generate_ohlcv

    return generate_ohlcv(n, signal=0.3, seed=seed)


KW = {"lookback": 16, "k": 5, "test_fraction": 0.2, "val_fraction": 0.2, "n_folds": 4}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _frame(4000, seed=11)


def _samples(
    scaled: np.ndarray, labels: np.ndarray, block: S.Block, lookback: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled samples of ``block`` as the trainer gathers them (WindowData on the CPU):
    ``(X (n, L, F) float32, y (n,) int64, bars (n,) int64)``."""
    bars = block.bars()
    bars = bars[labels[bars] >= 0]
    data = WindowData.create(scaled, bars, labels[bars], lookback, torch.device("cpu"))
    x, y = data.batch(torch.arange(len(data)))
    return x.numpy(), y.numpy(), data.bars.numpy()


@pytest.fixture(scope="module")
def prepared(frame: pd.DataFrame) -> P.ClassifierArrays:
    return P.build_classifier_arrays(frame, F.DEFAULT_FEATURES, delta=None, purge_gap=None, **KW)


def test_prepare_arrays_shapes(prepared: P.ClassifierArrays, frame: pd.DataFrame) -> None:
    p = prepared
    n = len(frame)
    assert p.features.shape == (n, 26) and p.features.dtype == np.float32
    assert p.scaled.shape == (n, 26) and p.scaled.dtype == np.float32
    assert p.price_features.shape == (n, 5) and p.price_features.dtype == np.float32
    assert p.labels.shape == (n,) and p.labels.dtype == np.int8
    assert (p.labels[-5:] == -1).all() and (p.labels[:-5] >= 0).all()
    assert p.splits.first_bar == F.warmup_bars() + 16 - 1
    assert p.timestamps.dtype.kind == "M"
    for block in (p.splits.train, p.splits.val, p.splits.test):
        x, y, bars = _samples(p.scaled, p.labels, block, p.lookback)
        assert x.shape == (len(block), 16, 26) and x.dtype == np.float32
        assert y.dtype == np.int64 and set(np.unique(y)) <= {0, 1, 2}
        np.testing.assert_array_equal(bars, block.bars())
        np.testing.assert_array_equal(x[:, -1, :], p.scaled[bars])
        np.testing.assert_array_equal(y, p.labels[bars])
        assert np.isfinite(x).all()


def test_scaler_and_delta_fit_on_train_rows_only(
    prepared: P.ClassifierArrays, frame: pd.DataFrame
) -> None:
    p = prepared
    train = p.splits.train
    rows = p.features[train.start - 16 + 1 : train.stop].astype(np.float64)
    np.testing.assert_allclose(p.scaler.mean_, rows.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(p.scaler.scale_, rows.std(axis=0), rtol=1e-10)
    assert p.delta_auto
    assert p.delta == L.auto_threshold(p.r[train.bars()])
    # Wreck every bar after the train block (val, test and the gaps): nothing fitted changes.
    changed = frame.copy()
    after = slice(train.stop, None)
    factor = np.linspace(1.0, 3.0, len(changed) - train.stop)
    for col in ("open", "high", "low", "close"):
        changed.loc[after, col] = changed.loc[after, col].to_numpy() * factor
    changed.loc[after, "volume"] = changed.loc[after, "volume"].to_numpy() * 50
    q = P.build_classifier_arrays(changed, F.DEFAULT_FEATURES, delta=None, purge_gap=None, **KW)
    assert q.splits.to_dict() == p.splits.to_dict()
    np.testing.assert_array_equal(q.scaler.mean_, p.scaler.mean_)
    np.testing.assert_array_equal(q.scaler.scale_, p.scaler.scale_)
    assert q.delta == p.delta
    assert not np.allclose(q.features[-100:], p.features[-100:])


def test_fixed_delta_and_fold_scaler(prepared: P.ClassifierArrays, frame: pd.DataFrame) -> None:
    fixed = P.build_classifier_arrays(frame, F.DEFAULT_FEATURES, delta=0.002, purge_gap=None, **KW)
    assert fixed.delta == 0.002 and not fixed.delta_auto
    np.testing.assert_array_equal(fixed.labels, L.make_labels(fixed.r, 0.002))
    # A walk-forward fold model: own scaler and threshold from its own training fold.
    p = prepared
    fold0, fold1 = p.splits.folds[0], p.splits.folds[1]
    scaler = P.fit_scaler(p.features, fold0, p.lookback)
    delta = L.auto_threshold(p.r[fold0.bars()])
    # The fold model's inputs: its scaler applied to the rows its windows read, NaN elsewhere,
    # so a window reaching outside the fold would show as NaN.
    lo = max(0, fold1.start - p.lookback + 1)
    source = np.full_like(p.scaled, np.nan)
    source[lo : fold1.stop] = P.apply_scaler(scaler, p.features[lo : fold1.stop])
    x, y, bars = _samples(source, L.make_labels(p.r, delta), fold1, p.lookback)
    assert np.isfinite(x).all()
    expected = (p.features[bars].astype(np.float64) - scaler.mean_) / scaler.scale_
    np.testing.assert_allclose(x[:, -1, :], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y, L.make_labels(p.r, delta)[bars])


def test_fit_scaler_refuses_warmup_rows(prepared: P.ClassifierArrays) -> None:
    with pytest.raises(F.FeatureError, match="contain NaN"):
        P.fit_scaler(prepared.features, S.Block("early", 5, 50), 16)


def test_prepare_arrays_too_small_and_bad_purge() -> None:
    small = _frame(150)
    with pytest.raises(S.SplitError, match="needs at least"):
        P.build_classifier_arrays(small, F.DEFAULT_FEATURES, delta=None, purge_gap=None, **KW)
    with pytest.raises(S.SplitError, match="minimum"):
        P.build_classifier_arrays(_frame(2000), F.DEFAULT_FEATURES, delta=None, purge_gap=10, **KW)
