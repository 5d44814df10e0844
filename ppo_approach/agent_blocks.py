"""The agent's blocks: the prediction table of the classifier side turned into the train, val and
test blocks the environment runs on (prices, prediction features, price features; episodes
never cross a purge gap).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common import PipelineError
from pipeline.config.schema import PPOConfig
from ppo_approach.trading_env import MarketData

log = logging.getLogger(__name__)

BLOCK_NAMES = ("train", "val", "test")
PRED_BASE_COLUMNS = ("pred_class", "confidence", "p_fall", "p_stationary", "p_rise")


class PredictionTableError(PipelineError):
    """The prediction table is missing, malformed or does not match the dataset."""


EDGE_NAME = "edge"
"""``edge_feature = true``: ``p_rise - p_fall``, the last prediction feature."""


def table_column_names(cfg: PPOConfig) -> tuple[str, ...]:
    """The prediction table's columns the agent reads (ensemble: + each member's probabilities)."""
    names = list(PRED_BASE_COLUMNS)
    if cfg.prediction_model == "ensemble":
        for m in cfg.ensemble_models:
            names += [f"p_fall_{m}", f"p_stationary_{m}", f"p_rise_{m}"]
    return tuple(names)


def prediction_feature_names(cfg: PPOConfig) -> tuple[str, ...]:
    """Observation names of the prediction features: the table's columns, then ``edge``."""
    return table_column_names(cfg) + ((EDGE_NAME,) if cfg.edge_feature else ())


def prediction_features(table: pd.DataFrame, cfg: PPOConfig) -> np.ndarray:
    """Per-row prediction features ``(n, P)`` float32 in :func:`prediction_feature_names` order.

    ``pred_class`` enters centred as ``class - 1`` (Fall -1, Stationary 0, Rise +1), so the
    network sees an ordered, zero-mean input rather than a label code 0..2.
    """
    where = table.attrs.get("path", "prediction table")
    cols = table_column_names(cfg)
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise PredictionTableError(
            f"{where}: missing column(s) {', '.join(missing)} needed for prediction_model = "
            f"{cfg.prediction_model}"
        )
    x = table.loc[:, list(cols)].to_numpy(dtype=np.float64)  # (n, P)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PredictionTableError(
            f"{where}: column {cols[col]} has a non-finite value at data row {row + 1}"
        )
    x[:, 0] -= 1.0
    if cfg.edge_feature:
        x = np.concatenate([x, x[:, 4:5] - x[:, 2:3]], axis=1)  # (n, P + 1): p_rise - p_fall
    return x.astype(np.float32)


ORACLE_LABEL = "ORACLE (uses future data, diagnostic only)"
"""Said by every report, plot title, run summary and table of an agent fed the oracle source."""

DIAGNOSTIC_SOURCES = ("oracle", "noisy_oracle")
"""Prediction sources that use the future: their agents are written under their own names."""


def _noisy_oracle_accuracy(strength: float) -> float:
    """Accuracy of the most probable class when class logits are ``strength * onehot + N(0, 1)``:
    ``P(s + e0 > max(e1, e2)) = integral phi(x) Phi(x + s)^2 dx`` (three classes)."""
    from scipy.stats import norm

    x = np.linspace(-9.0, 9.0, 4001)
    dx = x[1] - x[0]
    return float(np.sum(norm.pdf(x) * norm.cdf(x + strength) ** 2) * dx)


def noisy_oracle_strength(accuracy: float) -> float:
    """The signal strength ``s`` whose most probable class is right on ``accuracy`` of the bars
    (bisection on :func:`_noisy_oracle_accuracy`; 0 at or below chance, 1/3)."""
    if accuracy <= 1.0 / 3.0:
        return 0.0
    lo, hi = 0.0, 12.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _noisy_oracle_accuracy(mid) < accuracy:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def noisy_oracle_probs(true: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Calibrated soft probabilities with a controlled edge, like a real classifier's.

    Each bar's evidence is ``x = s * onehot(true) + N(0, I)`` with ``s`` from
    :func:`noisy_oracle_strength`; the probabilities are the Bayes posterior under equal priors,
    ``softmax(s * x)``, so they are calibrated and, for a weak edge, a few points apart like a
    real classifier's (unlike the degraded oracle's confident one-hot classes). ``(n, 3)``.
    """
    s = noisy_oracle_strength(accuracy)
    rng = np.random.default_rng(seed)
    x = s * np.eye(3)[true] + rng.standard_normal((true.size, 3))  # (n, 3)
    z = s * x
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)  # (n, 3)


def oracle_table(
    table: pd.DataFrame, labels: np.ndarray, accuracy: float, seed: int, soft: bool = False
) -> pd.DataFrame:
    """The table with the true future class of each bar in place of the classifier's output.

    ``ppo_prediction_source = oracle``: a diagnostic of the RL machinery, never a
    default: the probabilities become one-hot on ``labels[bar]`` (the class of the bar's smoothed
    future return; bars without a label count as Stationary), ``confidence`` 1. With ``accuracy``
    < 1, each bar keeps the true class with that probability and otherwise gets a class drawn
    uniformly (which may be the true one): the degraded oracle of the learnability ladder.
    ``soft`` (``noisy_oracle``): :func:`noisy_oracle_probs` instead, calibrated probabilities
    whose most probable class is right on ``accuracy`` of the bars.
    Seeded: the same seed gives the same classes.
    """
    out = table.copy()
    bars = out["bar"].to_numpy(dtype=np.int64)
    true = labels[bars].astype(np.int64)
    true[true < 0] = 1
    if soft:
        onehot = noisy_oracle_probs(true, accuracy, seed)  # (n, 3) soft, despite the name
        cls = np.argmax(onehot, axis=1)
    else:
        rng = np.random.default_rng(seed)
        keep = rng.random(len(bars)) < accuracy
        cls = np.where(keep, true, rng.integers(0, 3, len(bars)))  # (n,)
        onehot = np.eye(3)[cls]  # (n, 3)
    for suffix in (
        "",
        *sorted({c[len("p_fall") :] for c in out.columns if c.startswith("p_fall_")}),
    ):
        for i, col in enumerate(("p_fall", "p_stationary", "p_rise")):
            if f"{col}{suffix}" in out.columns:
                out[f"{col}{suffix}"] = onehot[:, i]
    out["pred_class"] = cls
    out["confidence"] = onehot.max(axis=1)
    out["source"] = "noisy_oracle" if soft else "oracle"
    out.attrs = dict(table.attrs)
    return out


def _utc_iso(value: Any) -> str:
    """ISO 8601 with an explicit UTC offset (dataset timestamps are naive UTC datetime64)."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


@dataclass
class AgentBlock:
    """One block of the agent: its env data, the bars it covers and the classifier's probs."""

    name: str
    data: MarketData
    bars: np.ndarray  # (n,) int64 dataset bars, consecutive
    probs: np.ndarray  # (n, 3) p_fall, p_stationary, p_rise
    in_sample: bool

    def describe(self) -> dict[str, Any]:
        """``{"start", "end", "bars", "first_bar", "last_bar"}`` (ISO timestamps)."""
        ts = self.data.timestamps
        assert ts is not None
        return {
            "start": _utc_iso(ts[0]),
            "end": _utc_iso(ts[-1]),
            "bars": int(self.bars.size),
            "first_bar": int(self.bars[0]),
            "last_bar": int(self.bars[-1]),
        }


def build_blocks(
    table: pd.DataFrame, meta: dict[str, Any], cfg: PPOConfig
) -> dict[str, AgentBlock]:
    """Split the table by ``agent_block`` into train / val / test :class:`AgentBlock`s.

    Everything comes from the table (step 5 wrote each bar's prices, price features and true
    class beside its predictions) and ``meta``, its ``predictions_*.json``
    (:func:`pipeline.classifiers.prediction_table.load_table_meta`): no CSV parse, no classifier
    features, labels or splits, and so no classifier config. Checks that each block's bars are
    consecutive, inside the dataset, past the price-feature warm-up, in chronological order
    train < val < test. That the table belongs to the dataset on disk is the caller's check (its
    SHA-256 against ``meta["dataset_sha256"]``: :func:`check_table_dataset`).
    """
    from pipeline.data.features import AGENT_PRICE_FEATURE_NAMES

    where = table.attrs.get("path", "prediction table")
    n_bars = int(meta["n_bars"])
    if cfg.ppo_prediction_source in DIAGNOSTIC_SOURCES:
        soft = cfg.ppo_prediction_source == "noisy_oracle"
        labels = np.full(n_bars, -1, dtype=np.int64)  # (N,) the true class by dataset bar
        labels[table["bar"].to_numpy(dtype=np.int64)] = table["label"].to_numpy(dtype=np.int64)
        table = oracle_table(table, labels, cfg.oracle_accuracy, cfg.seed, soft)
    feats = prediction_features(table, cfg)  # (rows, P)
    bars_all = _checked_bars(table, where, n_bars)
    stamps = _parsed_timestamps(table, where)
    open_all = table["open"].to_numpy(dtype=np.float64)  # (rows,)
    close_all = table["close"].to_numpy(dtype=np.float64)
    price_all = table.loc[:, list(AGENT_PRICE_FEATURE_NAMES)].to_numpy(dtype=np.float32)
    pred_names = prediction_feature_names(cfg)
    in_sample_col = table["in_sample"].to_numpy(dtype=bool)  # (rows,)
    blocks: dict[str, AgentBlock] = {}
    for name in BLOCK_NAMES:
        rows, bars, segment_starts = _block_rows(table, name, bars_all, where)
        price = price_all[rows]  # (n, 5)
        if not np.isfinite(price).all():
            first = int(bars[np.flatnonzero(~np.isfinite(price).all(axis=1))[0]])
            raise PredictionTableError(
                f"{where}: agent_block = {name} starts in the price-feature warm-up (bar {first} "
                "has no price features); the agent's blocks must start later"
            )
        data = MarketData(
            open=open_all[rows],
            close=close_all[rows],
            pred_features=feats[rows],
            price_features=price,
            timestamps=stamps[rows],
            pred_names=pred_names,
            price_names=AGENT_PRICE_FEATURE_NAMES,
            segment_starts=segment_starts,
        )
        probs = feats[rows][:, 2:5]
        blocks[name] = AgentBlock(name, data, bars, probs, bool(in_sample_col[rows].any()))
    _check_block_order(blocks, where)
    if cfg.price_feature_scaling == "train_zscore":
        blocks = standardise_price_features(blocks)
    if cfg.prediction_feature_scaling == "train_zscore":
        blocks = standardise_prediction_features(blocks)
    return blocks


def _checked_bars(table: pd.DataFrame, where: str, n_bars: int) -> np.ndarray:
    """The table's ``bar`` column ``(rows,)``: integers inside the dataset's ``0..n_bars-1``."""
    bars_all = table["bar"].to_numpy()
    if not np.issubdtype(bars_all.dtype, np.integer):
        raise PredictionTableError(f"{where}: column bar must hold integers, got {bars_all.dtype}")
    out_of_range = np.flatnonzero((bars_all < 0) | (bars_all >= n_bars))
    if out_of_range.size:
        i = int(out_of_range[0])
        raise PredictionTableError(
            f"{where}: data row {i + 1} has bar {bars_all[i]}, outside the dataset's "
            f"0..{n_bars - 1}"
        )
    return bars_all


def _parsed_timestamps(table: pd.DataFrame, where: str) -> np.ndarray:
    """The table's ``timestamp`` column as naive UTC ``datetime64[ns]`` ``(rows,)``."""
    try:
        parsed = pd.to_datetime(table["timestamp"], utc=True)
    except (ValueError, TypeError) as exc:
        raise PredictionTableError(f"{where}: column timestamp is not parseable ({exc})") from None
    return parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")  # (rows,) naive UTC


def _block_rows(
    table: pd.DataFrame, name: str, bars_all: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The table rows of block ``name`` in bar order, their bars ``(n,)`` int64 and the segment
    starts; at least 2 rows, one row per bar, consecutive except across the train block's gaps."""
    rows = np.flatnonzero((table["agent_block"] == name).to_numpy())
    if rows.size < 2:
        raise PredictionTableError(
            f"{where}: {rows.size} row(s) with agent_block = {name}; expected at least 2"
        )
    rows = rows[np.argsort(bars_all[rows], kind="stable")]
    bars = bars_all[rows].astype(np.int64)
    steps = np.diff(bars)
    if (steps < 1).any():
        g = int(np.flatnonzero(steps < 1)[0])
        raise PredictionTableError(
            f"{where}: agent_block = {name} lists bar {bars[g]} twice; expected one row per bar"
        )
    # The agent's train block spans several walk-forward folds with purge gaps between them
    # (no fold model predicts a purged bar): each run of consecutive bars is a segment, and
    # the env never steps across a gap.
    segment_starts = (0, *(int(i) + 1 for i in np.flatnonzero(steps > 1)))
    if name != "train" and len(segment_starts) > 1:
        g = segment_starts[1] - 1
        raise PredictionTableError(
            f"{where}: agent_block = {name} is not consecutive: bar {bars[g]} is followed by "
            f"bar {bars[g + 1]}"
        )
    return rows, bars, segment_starts


def _check_block_order(blocks: dict[str, AgentBlock], where: str) -> None:
    """The blocks in chronological order: train < val < test."""
    for a, b in zip(BLOCK_NAMES, BLOCK_NAMES[1:], strict=False):
        if blocks[a].bars[-1] >= blocks[b].bars[0]:
            raise PredictionTableError(
                f"{where}: agent_block {a} ends at bar {blocks[a].bars[-1]} but {b} starts at bar "
                f"{blocks[b].bars[0]}; expected {a} before {b}"
            )


@dataclass(frozen=True)
class TableDataset:
    """The dataset a prediction table was written from, as its ``predictions_*.json`` says
    (:func:`pipeline.classifiers.prediction_table.table_meta`): all step 7 needs of the dataset
    itself."""

    name: str
    sha256: str
    n_bars: int
    interval_seconds: float
    bars_per_year: float
    bars_per_year_basis: str
    classifier_settings: dict[str, Any]
    """The training settings the table's predictions came from (the resume fingerprint's)."""

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TableDataset:
        """From a checked :func:`pipeline.classifiers.prediction_table.load_table_meta` dict."""
        return cls(
            name=str(meta["dataset"]),
            sha256=str(meta["dataset_sha256"]),
            n_bars=int(meta["n_bars"]),
            interval_seconds=float(meta["interval_seconds"]),
            bars_per_year=float(meta["periods_per_year"]),
            bars_per_year_basis=str(meta["periods_per_year_basis"]),
            classifier_settings=dict(meta["classifier_settings"]),
        )


def check_table_dataset(meta: dict[str, Any], dataset_sha256: str, where: str) -> None:
    """The table was written from the dataset on disk now (the same SHA-256), else one line:
    a table left over from another version of the CSV is refused, never traded on."""
    if meta["dataset_sha256"] != dataset_sha256:
        raise PredictionTableError(
            f"{where}: written from a dataset with sha256 {meta['dataset_sha256'][:16]}... but "
            f"{meta['dataset']} now has {dataset_sha256[:16]}...; the table belongs to other "
            "data, rebuild it with train_models.py"
        )


def zscore_stats(blocks: dict[str, AgentBlock], field: str) -> tuple[np.ndarray, np.ndarray]:
    """The train block's mean and std ``(K,)`` float64 of ``MarketData.<field>`` (a constant
    column's std is 1, so it stays constant (0) instead of dividing by 0)."""
    train = getattr(blocks["train"].data, field).astype(np.float64)  # (n_train, K)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std < 1e-12] = 1.0
    return mean, std


def _train_zscore(blocks: dict[str, AgentBlock], field: str) -> dict[str, AgentBlock]:
    """``MarketData.<field>`` of every block minus the train block's mean, over its std."""
    mean, std = zscore_stats(blocks, field)
    out = {}
    for name, b in blocks.items():
        scaled = ((getattr(b.data, field) - mean) / std).astype(np.float32)  # (n, K)
        out[name] = dataclasses.replace(b, data=dataclasses.replace(b.data, **{field: scaled}))
    return out


def standardise_prediction_features(blocks: dict[str, AgentBlock]) -> dict[str, AgentBlock]:
    """``prediction_feature_scaling = train_zscore``: real probabilities sit a few points apart
    around 1/3, so the policy barely sees their differences; standardised with the train block's
    statistics (val and test with the same numbers) they span a few units.
    ``AgentBlock.probs`` stays the raw probabilities: the classifier rule reads those."""
    return _train_zscore(blocks, "pred_features")


def standardise_price_features(blocks: dict[str, AgentBlock]) -> dict[str, AgentBlock]:
    """The price features of every block minus the train block's mean, over its std. Raw, they
    span ~1e-3 (one-bar return, MACD / close) to ~1 (RSI / 100), so the policy network barely sees
    the small ones. Train-block statistics only: the val and test blocks are scaled with the same
    numbers (nothing is learned from them). Fixed numbers rather than SB3's running
    ``VecNormalize``: nothing to save, freeze or restore beside the model, and the same
    observation for the same bar in training, evaluation and backtest."""
    return _train_zscore(blocks, "price_features")
