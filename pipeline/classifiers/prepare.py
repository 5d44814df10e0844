"""Load a dataset and turn it into model-ready arrays, with the train-only scaler saved beside it.

Steps 5 (classifiers) and 7 (PPO agent) both start here, so the two see the very same features,
labels, splits and scaler for a dataset. :func:`build_classifier_arrays` joins the features
(:mod:`pipeline.data.features`), labels (:mod:`pipeline.data.labels`) and splits
(:mod:`pipeline.data.splits`) and fits the scaler on the train block's rows only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from pipeline.common import Paths, PipelineError, atomic_write_text
from pipeline.config.schema import TrainingConfig
from pipeline.data.features import (
    DEFAULT_FEATURES,
    FeatureError,
    agent_price_features,
    check_feature_names,
    compute_features,
    utc_index,
    warmup_bars,
)
from pipeline.data.labels import auto_threshold, make_labels, smoothed_future_return
from pipeline.data.load import DatasetInfo, load_dataset
from pipeline.data.splits import Block, Splits, make_splits
from pipeline.store.artifacts import Artifacts

log = logging.getLogger(__name__)


def scaler_rows(block: Block, lookback: int) -> slice:
    """Feature rows the windows of ``block`` cover: ``start - lookback + 1 .. stop - 1``."""
    return slice(block.start - lookback + 1, block.stop)


def fit_scaler(features: np.ndarray, block: Block, lookback: int) -> StandardScaler:
    """StandardScaler fit on the feature rows read by the windows of ``block`` only.

    Walk-forward fold models call this with their own training fold, so no fold is scaled
    with statistics of later bars.
    """
    rows = np.asarray(features[scaler_rows(block, lookback)], dtype=np.float64)  # (n+L-1, F)
    if len(rows) == 0 or not np.isfinite(rows).all():
        raise FeatureError(
            f"cannot fit the scaler on block '{block.name}' bars {block.start}..{block.stop - 1}"
            f" (lookback {lookback}): rows are empty or contain NaN (inside the warm-up?)"
        )
    return StandardScaler().fit(rows)


def apply_scaler(scaler: StandardScaler, features: np.ndarray) -> np.ndarray:
    """``scaler`` applied to every row, ``(N, F)`` float32; NaN warm-up rows stay NaN."""
    x = np.asarray(features, dtype=np.float64)
    return ((x - scaler.mean_) / scaler.scale_).astype(np.float32)


def features_of(df: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The feature frame :func:`build_classifier_arrays` builds the model inputs from; the leak
    alarms' future-shift control recomputes it on cut candles through this same call."""
    return compute_features(df, names)


@dataclass
class ClassifierArrays:
    """Everything the classifier trainer needs, as arrays indexed by bar.

    The samples of a block are windows of ``scaled`` (or of a fold scaler's output) gathered by
    :class:`pipeline.classifiers.windows.WindowData`, the one windowing implementation.
    """

    feature_names: tuple[str, ...]
    lookback: int
    k: int
    delta: float
    delta_auto: bool
    timestamps: np.ndarray  # (N,) datetime64, UTC with the timezone dropped
    open: np.ndarray  # (N,) float64
    close: np.ndarray  # (N,) float64
    features: np.ndarray  # (N, F) float32, unscaled, NaN in warm-up rows
    price_features: np.ndarray  # (N, 5) float32, agent_price_features
    r: np.ndarray  # (N,) float64 smoothed future return, NaN in the last k rows
    labels: np.ndarray  # (N,) int8, -1 = no label
    splits: Splits
    scaler: StandardScaler
    scaled: np.ndarray  # (N, F) float32, scaled with `scaler`
    warmup: int = 0  # leading NaN rows of `features`

    @property
    def n_bars(self) -> int:
        """Rows (bars) of the dataset."""
        return len(self.close)


def build_classifier_arrays(
    df: pd.DataFrame,
    feature_names: Sequence[str] = DEFAULT_FEATURES,
    lookback: int = 60,
    k: int = 5,
    delta: float | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    purge_gap: int | str | None = None,
    n_folds: int = 4,
) -> ClassifierArrays:
    """Features, labels, splits, the train-only scaler and scaled features of one dataset.

    ``delta = None`` picks the label threshold with :func:`auto_threshold` on the TRAIN block's
    returns only; the scaler is fit on the feature rows the train windows read (bars
    ``train.start - lookback + 1 .. train.stop - 1``). Nothing after the train block influences
    either. Raises :class:`FeatureError` / :class:`SplitError` on bad input.
    """
    names = check_feature_names(feature_names)
    feats = features_of(df, names)  # (N, F) float64
    warm = warmup_bars(names)
    splits = make_splits(
        len(df), warm, lookback, k, test_fraction, val_fraction, purge_gap, n_folds
    )
    close = np.asarray(df["close"], dtype=np.float64)
    r = smoothed_future_return(close, k)  # (N,)
    delta_auto = delta is None
    d = auto_threshold(r[splits.train.bars()]) if delta is None else float(delta)
    labels = make_labels(r, d)
    features = feats.to_numpy(dtype=np.float32)  # (N, F)
    scaler = fit_scaler(features, splits.train, lookback)
    return ClassifierArrays(
        feature_names=names,
        lookback=lookback,
        k=k,
        delta=d,
        delta_auto=delta_auto,
        timestamps=utc_index(df["timestamp"]).to_numpy(),
        open=np.asarray(df["open"], dtype=np.float64),
        close=close,
        features=features,
        price_features=agent_price_features(df, feats),
        r=r,
        labels=labels,
        splits=splits,
        scaler=scaler,
        scaled=apply_scaler(scaler, features),
        warmup=warm,
    )


@dataclass
class ClassifierData:
    """A validated dataset and its arrays (features, scaled features, labels, splits, scaler)."""

    info: DatasetInfo
    df: pd.DataFrame
    arrays: ClassifierArrays
    feature_names: list[str]


def arrays_from_config(df: pd.DataFrame, cfg: TrainingConfig) -> ClassifierArrays:
    """:func:`build_classifier_arrays` of a validated frame with ``cfg``'s settings.

    The one place that maps config keys to the arguments (features, lookback, label and split
    settings), shared by :func:`load_classifier_data` and bench/bench_data_prep.py.
    """
    return build_classifier_arrays(
        df,
        cfg.resolved_features(),
        lookback=cfg.lookback,
        k=cfg.smoothing_k,
        delta=cfg.threshold_delta,
        test_fraction=cfg.test_fraction,
        val_fraction=cfg.val_fraction,
        purge_gap=cfg.purge_gap,
        n_folds=cfg.walk_forward_folds,
    )


def load_classifier_data(
    cfg: TrainingConfig, dataset: str, paths: Paths, save_scaler: bool = True
) -> ClassifierData:
    """Load and validate ``dataset`` from ``paths.datasets`` and build its arrays from ``cfg``.

    ``threshold_delta = auto`` (None) lets :func:`build_classifier_arrays` pick the
    threshold that balances the classes on the training block; ``purge_gap = auto`` (None) uses the
    minimum ``smoothing_k + lookback``. With ``save_scaler`` the scaler (fit on the train block's
    rows only) is written atomically as JSON to the dataset's
    :attr:`pipeline.store.artifacts.Artifacts.scaler` with what it was fit on, so a later
    prediction can check it matches data and features.
    """
    df, info = load_dataset(dataset, paths.datasets)
    arrays = arrays_from_config(df, cfg)
    prepared = ClassifierData(
        info=info, df=df, arrays=arrays, feature_names=list(arrays.feature_names)
    )
    if save_scaler:
        save_scaler_file(prepared, cfg, Artifacts(paths, info.name).scaler)
    return prepared


SCALER_FORMAT = "pipeline-standard-scaler"
SCALER_VERSION = 1


def scaler_payload(prepared: ClassifierData, cfg: TrainingConfig) -> dict[str, Any]:
    """The JSON-ready dict of a scaler file: its statistics plus what it was fit on.

    Plain numbers and strings only: the file is shared through the git remote (step 8), so it
    must be data that loading cannot turn into code, unlike the pickle it replaces. JSON
    floats round-trip exactly (``repr``), so the rebuilt scaler equals the fit one.
    """
    train = prepared.arrays.splits.train
    scaler = prepared.arrays.scaler
    return {
        "format": SCALER_FORMAT,
        "version": SCALER_VERSION,
        "dataset": prepared.info.name,
        "dataset_sha256": prepared.info.sha256,
        "feature_names": list(prepared.feature_names),
        "lookback": int(cfg.lookback),
        "fitted_on": [int(train.start), int(train.stop)],
        "delta": float(prepared.arrays.delta),
        "n_samples": int(scaler.n_samples_seen_),
        "mean": [float(v) for v in scaler.mean_],
        "scale": [float(v) for v in scaler.scale_],
        "var": [float(v) for v in scaler.var_],
    }


def save_scaler_file(prepared: ClassifierData, cfg: TrainingConfig, path: Path) -> Path:
    """Write :func:`scaler_payload` to ``path`` as JSON, atomically."""
    text = json.dumps(scaler_payload(prepared, cfg), indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)
    log.debug("scaler saved to %s", path)
    return path


def _bad(path: Path, what: str) -> PipelineError:
    return PipelineError(f"{path}: not a valid scaler file ({what}); rerun train_models.py")


def _floats(path: Path, data: dict[str, Any], key: str, n: int) -> np.ndarray:
    """``data[key]`` as ``n`` finite floats, or a PipelineError naming the file and key."""
    value = data.get(key)
    if not isinstance(value, list) or len(value) != n:
        raise _bad(path, f"'{key}' must be a list of {n} numbers, one per feature")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise _bad(path, f"'{key}' must hold numbers only")
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise _bad(path, f"'{key}' holds a non-finite value")
    return arr


def _int(path: Path, data: dict[str, Any], key: str, minimum: int) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _bad(path, f"'{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def load_scaler_file(path: Path) -> dict[str, Any]:
    """Read and check a scaler file written by :func:`save_scaler_file`.

    Returns its fields plus ``"scaler"``: a :class:`StandardScaler` rebuilt from the stored
    statistics (no pickle is ever read; an old ``scaler_*.pkl`` beside it is ignored, and when
    it is all there is, the error says to rerun train_models.py).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        legacy = path.with_suffix(".pkl")
        if legacy.exists():
            raise PipelineError(
                f"{path}: scaler file not found; {legacy.name} beside it is an old pickled "
                "scaler, which is never loaded (unpickling a shared file can run code); rerun "
                f"train_models.py to write {path.name}"
            ) from None
        raise PipelineError(f"{path}: scaler file not found; run train_models.py first") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise _bad(path, f"unreadable: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path, f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SCALER_FORMAT:
        raise _bad(path, f'expected a JSON object with "format": "{SCALER_FORMAT}"')
    if data.get("version") != SCALER_VERSION:
        raise _bad(path, f"version {data.get('version')!r}, this code reads {SCALER_VERSION}")
    names = data.get("feature_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _bad(path, "'feature_names' must be a non-empty list of strings")
    for key in ("dataset", "dataset_sha256"):
        if not isinstance(data.get(key), str):
            raise _bad(path, f"'{key}' must be a string")
    n = len(names)
    mean = _floats(path, data, "mean", n)
    scale = _floats(path, data, "scale", n)
    var = _floats(path, data, "var", n)
    if (scale <= 0).any():
        raise _bad(path, "'scale' must be > 0")
    n_samples = _int(path, data, "n_samples", 1)
    _int(path, data, "lookback", 1)
    fitted = data.get("fitted_on")
    if (
        not isinstance(fitted, list)
        or len(fitted) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in fitted)
    ):
        raise _bad(path, "'fitted_on' must be [start, stop] bar indices")
    scaler = StandardScaler()
    scaler.mean_ = mean
    scaler.scale_ = scale
    scaler.var_ = var
    scaler.n_samples_seen_ = n_samples
    scaler.n_features_in_ = n
    return {**data, "fitted_on": (fitted[0], fitted[1]), "scaler": scaler}
