"""Classifier predictions for the agent: model wrappers, prediction tables and step 6.

* :class:`PredictionModel` / :class:`EnsemblePredictionModel` load a trained classifier (or the
  mean of several) from ``models/`` and ``scalers/``, check it belongs to the dataset and feature
  list, and predict one window or a whole dataset in batched passes.
* :func:`write_prediction_tables` writes ``results/predictions_{model}_{dataset}.csv``: one row
  per bar the agent can use, produced by a model that never trained on that bar (walk-forward
  over the development block, see docs/DESIGN.md), or by the main model everywhere when
  ``ppo_prediction_source = in_sample`` (flagged in the ``in_sample`` column).
* :func:`load_prediction_table` reads and validates a table for the environment side.
* :func:`validate_models` is step 6 of the driver: load every model the PPO config needs, run a
  dummy window, check shapes and probability sums.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.common import Paths, PipelineError, atomic_path, sha256_file
from pipeline.config import Config
from pipeline.device import resolve_device
from pipeline.nets import count_parameters, load_model_file, model_from_payload
from pipeline.prepare import Prepared, load_scaler_file, scaler_path
from pipeline.windows import WindowData, predict_proba

log = logging.getLogger(__name__)

TABLE_COLUMNS: tuple[str, ...] = (
    "bar",
    "timestamp",
    "p_fall",
    "p_stationary",
    "p_rise",
    "pred_class",
    "confidence",
    "source",
    "agent_block",
    "in_sample",
)
PROB_COLUMNS: tuple[str, str, str] = ("p_fall", "p_stationary", "p_rise")
AGENT_BLOCKS: tuple[str, str, str] = ("train", "val", "test")
PROB_TOLERANCE = 1e-6


def model_path(paths: Paths, model: str, dataset: str) -> Path:
    """``models/{model}_{dataset}_classification.pth`` (the main model)."""
    return paths.models / f"{model}_{dataset}_classification.pth"


def fold_model_path(paths: Paths, model: str, dataset: str, fold: int) -> Path:
    """``models/walkforward/{model}_{dataset}_fold{fold}.pth``."""
    return paths.models / "walkforward" / f"{model}_{dataset}_fold{fold}.pth"


def predictions_path(paths: Paths, model: str, dataset: str) -> Path:
    """``results/predictions_{model}_{dataset}.csv`` (``model`` may be ``ensemble``)."""
    return paths.results / f"predictions_{model}_{dataset}.csv"


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return resolve_device("auto")
    return device if isinstance(device, torch.device) else resolve_device(str(device))


def _scale(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, dtype=np.float64) - mean) / scale).astype(np.float32)


# ================================================================ model wrappers


class PredictionModel:
    """One trained classifier with its scaler, checked against the dataset's scaler file.

    The scaler file is ``scalers/scaler_{dataset}.json`` (plain data); an old pickled
    ``scaler_{dataset}.pkl`` is never loaded, since unpickling a shared file can run code.

    Args:
        model_name: ``lstm`` | ``gru`` | ``bilstm`` | ``dlstm``.
        dataset_name: the dataset the model was trained on (file stem).
        paths: artifact folders (default ``Paths.from_root()``).
        device: ``cpu`` / ``cuda`` / a torch.device; default CUDA when available.
        path: load this model file instead of the main one (walk-forward fold models); such
            files carry their own scaler, so the dataset's scaler file is not consulted.
    """

    def __init__(
        self,
        model_name: str,
        dataset_name: str,
        paths: Paths | None = None,
        device: str | torch.device | None = None,
        path: Path | None = None,
    ) -> None:
        self.paths = paths if paths is not None else Paths.from_root()
        self.name = model_name
        self.dataset = dataset_name
        self.device = _device(device)
        self.path = path if path is not None else model_path(self.paths, model_name, dataset_name)
        self.payload = load_model_file(self.path)
        p = self.payload
        if p["model"] != model_name:
            raise PipelineError(f"{self.path}: holds model {p['model']!r}, not {model_name!r}")
        self.feature_names: list[str] = list(p["feature_names"])
        self.lookback: int = int(p["lookback"])
        self.dataset_sha256: str = str(p["dataset_sha256"])
        self.config_hash: str = str(p["config_hash"])
        self.source: str = str(p.get("source", f"{model_name}/dev"))
        self.mean = np.asarray(p["scaler"]["mean"], dtype=np.float64)  # (F,)
        self.scale = np.asarray(p["scaler"]["scale"], dtype=np.float64)  # (F,)
        if path is None:
            self._check_scaler_file()
        self.model = model_from_payload(p, self.device)
        self.n_parameters = count_parameters(self.model)

    def _check_scaler_file(self) -> None:
        spath = scaler_path(self.paths, self.dataset)
        info = load_scaler_file(spath)
        if info.get("dataset_sha256") != self.dataset_sha256:
            raise PipelineError(
                f"{spath}: fit on dataset sha256 {str(info.get('dataset_sha256'))[:12]}, but "
                f"{self.path.name} was trained on {self.dataset_sha256[:12]}; rerun train_models.py"
            )
        if list(info.get("feature_names", [])) != self.feature_names:
            raise PipelineError(
                f"{spath}: feature list differs from the one {self.path.name} was trained with; "
                "rerun train_models.py"
            )
        scaler = info["scaler"]  # rebuilt from JSON data; no pickle is read (issue 8 item 7)
        if (
            len(scaler.mean_) != len(self.mean)
            or not np.allclose(scaler.mean_, self.mean)
            or not np.allclose(scaler.scale_, self.scale)
        ):
            # The file is per dataset: a train_models.py run with other split settings (e.g. a
            # different lookback for one model) rewrites it. The model carries its own scaler, so
            # rerunning with this model's config only rewrites the file (the model is skipped).
            lookback = info.get("lookback")
            why = (
                f"written for lookback {lookback}, {self.path.name} uses {self.lookback}"
                if lookback is not None and int(lookback) != self.lookback
                else f"its statistics differ from those {self.path.name} was trained with"
            )
            raise PipelineError(
                f"{spath}: {why} (a run with another config rewrote it); rerun "
                "train_models.py with this model's config (up-to-date models are skipped)"
            )

    def check_dataset(self, prep: Prepared) -> None:
        """PipelineError unless ``prep`` is the dataset and feature list this model was fit on."""
        if prep.info.sha256 != self.dataset_sha256:
            raise PipelineError(
                f"{self.path.name}: trained on dataset sha256 {self.dataset_sha256[:12]}, but "
                f"{prep.info.path} has {prep.info.sha256[:12]}; rerun train_models.py"
            )
        if list(prep.feature_names) != self.feature_names:
            raise PipelineError(
                f"{self.path.name}: trained on features {', '.join(self.feature_names)}; the "
                f"config now gives {', '.join(prep.feature_names)}"
            )

    def predict_proba_windows(self, windows: np.ndarray, scaled: bool = False) -> np.ndarray:
        """Probabilities ``(n, 3)`` of windows ``(n, lookback, F)`` (raw features unless scaled)."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.lookback, len(self.feature_names)):
            raise PipelineError(
                f"{self.name}: windows of shape {x.shape}; expected "
                f"(n, {self.lookback}, {len(self.feature_names)})"
            )
        if not scaled:
            x = _scale(x, self.mean, self.scale)
        flat = x.reshape(-1, x.shape[2])  # (n * L, F): each window as its own rows
        bars = np.arange(1, len(x) + 1) * self.lookback - 1  # (n,) last row of each window
        data = WindowData.create(flat, bars, None, self.lookback, self.device)
        return predict_proba(self.model, data)

    def predict(self, window: np.ndarray, scaled: bool = False) -> tuple[int, float, np.ndarray]:
        """One window ``(lookback, F)`` -> ``(class, confidence, probabilities (3,))``."""
        probs = self.predict_proba_windows(np.asarray(window)[None], scaled=scaled)[0]
        cls = int(probs.argmax())
        return cls, float(probs[cls]), probs

    def predict_bars(self, features: np.ndarray, bars: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, 3)`` of the windows ending at ``bars`` of raw ``features (N, F)``."""
        scaled = _scale(features, self.mean, self.scale)  # (N, F)
        data = WindowData.create(scaled, bars, None, self.lookback, self.device)
        return predict_proba(self.model, data)

    def predict_dataset(self, prep: Prepared, bars: np.ndarray | None = None) -> pd.DataFrame:
        """Batched predictions for ``bars`` (default: every bar with a full, warmed-up window)."""
        self.check_dataset(prep)
        if bars is None:
            bars = np.arange(prep.arrays.splits.first_bar, prep.arrays.n_bars)
        return _frame(prep, np.asarray(bars), self.predict_bars(prep.arrays.features, bars))


class EnsemblePredictionModel:
    """Mean of the members' probabilities (each member scales its own input)."""

    def __init__(
        self,
        dataset_name: str,
        model_names: list[str] | tuple[str, ...],
        paths: Paths | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if len(model_names) < 1:
            raise PipelineError("an ensemble needs at least one member")
        self.dataset = dataset_name
        self.members = [PredictionModel(m, dataset_name, paths, device) for m in model_names]
        first = self.members[0]
        for m in self.members[1:]:
            if m.feature_names != first.feature_names or m.lookback != first.lookback:
                raise PipelineError(
                    f"ensemble members {first.name} and {m.name} differ in features or lookback; "
                    "retrain them with the same config"
                )
        self.name = "ensemble"
        self.feature_names = first.feature_names
        self.lookback = first.lookback
        self.device = first.device
        self.n_parameters = sum(m.n_parameters for m in self.members)

    def predict_proba_windows(self, windows: np.ndarray, scaled: bool = False) -> np.ndarray:
        """Mean member probabilities ``(n, 3)``."""
        return np.mean([m.predict_proba_windows(windows, scaled) for m in self.members], axis=0)

    def predict(self, window: np.ndarray, scaled: bool = False) -> tuple[int, float, np.ndarray]:
        """One window ``(lookback, F)`` -> ``(class, confidence, probabilities (3,))``."""
        probs = self.predict_proba_windows(np.asarray(window)[None], scaled=scaled)[0]
        cls = int(probs.argmax())
        return cls, float(probs[cls]), probs

    def predict_dataset(self, prep: Prepared, bars: np.ndarray | None = None) -> pd.DataFrame:
        """Batched mean predictions (see :meth:`PredictionModel.predict_dataset`)."""
        frames = [m.predict_dataset(prep, bars) for m in self.members]
        probs = np.mean([f[list(PROB_COLUMNS)].to_numpy() for f in frames], axis=0)
        return _frame(prep, frames[0]["bar"].to_numpy(), probs)


def _frame(prep: Prepared, bars: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """``bar, timestamp, p_fall, p_stationary, p_rise, pred_class, confidence``."""
    ts = prep.df["timestamp"].iloc[bars].dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
    return pd.DataFrame(
        {
            "bar": bars.astype(np.int64),
            "timestamp": ts,
            "p_fall": probs[:, 0],
            "p_stationary": probs[:, 1],
            "p_rise": probs[:, 2],
            "pred_class": probs.argmax(axis=1).astype(np.int64),
            "confidence": probs.max(axis=1),
        }
    )


# ================================================================ prediction tables


@dataclass(frozen=True)
class AgentRange:
    """A range of bars of one agent block, and which model predicts it."""

    agent_block: str
    start: int
    stop: int
    fold: int | None  # walk-forward fold whose model predicts it; None = the main (dev) model


def agent_ranges(prep: Prepared) -> list[AgentRange]:
    """Folds 1..F-2 -> agent ``train``, fold F-1 -> ``val``, test block (to the end) -> ``test``.

    Fold 0 is never predicted (no earlier data to train its model on). The test range runs to the
    dataset's last bar: predictions need a window, not a label.
    """
    s = prep.arrays.splits
    folds = s.folds
    out = [
        AgentRange("train", f.start, f.stop, i)
        for i, f in enumerate(folds)
        if 0 < i < len(folds) - 1
    ]
    last = folds[-1]
    out.append(AgentRange("val", last.start, last.stop, len(folds) - 1))
    out.append(AgentRange("test", s.test.start, prep.arrays.n_bars, None))
    return out


def _check_current(model: PredictionModel, cfg: Config, prep: Prepared) -> None:
    model.check_dataset(prep)
    expected = cfg.training.hash_for_model(model.name)
    if model.config_hash != expected:
        raise PipelineError(
            f"{model.path}: trained with config hash {model.config_hash}, current config has "
            f"{expected}; rerun train_models.py"
        )


def build_prediction_table(
    cfg: Config, prep: Prepared, paths: Paths, model: str, device: torch.device
) -> pd.DataFrame:
    """The prediction table of one model (see the module docstring and docs/DESIGN.md)."""
    dataset = prep.info.name
    walk_forward = cfg.ppo.ppo_prediction_source == "walk_forward"
    main = PredictionModel(model, dataset, paths, device)
    _check_current(main, cfg, prep)
    fit = main.payload["trained_on"]["fit"]
    es = main.payload["trained_on"]["early_stop"]
    parts = []
    for r in agent_ranges(prep):
        bars = np.arange(r.start, r.stop)
        producer = main
        if walk_forward and r.fold is not None:
            producer = PredictionModel(
                model, dataset, paths, device, path=fold_model_path(paths, model, dataset, r.fold)
            )
            _check_current(producer, cfg, prep)
        frame = producer.predict_dataset(prep, bars)
        frame["source"] = producer.source
        frame["agent_block"] = r.agent_block
        if producer is main:
            # The main model fit the train block and early-stopped on val: both count as seen.
            frame["in_sample"] = (bars >= fit[0]) & (bars < es[1])
        else:
            frame["in_sample"] = False
        parts.append(frame)
    table = pd.concat(parts, ignore_index=True)[list(TABLE_COLUMNS)]
    if walk_forward and table["in_sample"].any():
        raise PipelineError(f"{model}: walk-forward table has in-sample rows (a bug; report it)")
    return table


def ensemble_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean of the members' probabilities, plus ``p_fall_{m}, p_stationary_{m}, p_rise_{m}``."""
    names = list(tables)
    first = tables[names[0]]
    for m in names[1:]:
        if not np.array_equal(tables[m]["bar"].to_numpy(), first["bar"].to_numpy()):
            raise PipelineError(
                f"ensemble: {m}'s prediction table covers other bars than {names[0]}'s"
            )
    probs = np.mean([tables[m][list(PROB_COLUMNS)].to_numpy() for m in names], axis=0)  # (n, 3)
    out = first[["bar", "timestamp"]].copy()
    out["p_fall"], out["p_stationary"], out["p_rise"] = probs[:, 0], probs[:, 1], probs[:, 2]
    out["pred_class"] = probs.argmax(axis=1).astype(np.int64)
    out["confidence"] = probs.max(axis=1)
    out["source"] = [
        "+".join(vals) for vals in zip(*(tables[m]["source"] for m in names), strict=True)
    ]
    out["agent_block"] = first["agent_block"]
    out["in_sample"] = np.logical_or.reduce([tables[m]["in_sample"].to_numpy() for m in names])
    for m in names:
        for c in PROB_COLUMNS:
            out[f"{c}_{m}"] = tables[m][c].to_numpy()
    return out


def _write_table(table: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    return path


def write_prediction_tables(
    cfg: Config, prep: Prepared, paths: Paths, models: list[str], device: torch.device
) -> dict[str, Path]:
    """Write the table of every model in ``models`` (and the ensemble's when the agent uses it).

    Ensemble members not in ``models`` are predicted from their files on disk (they must exist
    and be current). Returns ``{model or "ensemble": path}``.
    """
    dataset = prep.info.name
    written: dict[str, Path] = {}
    tables: dict[str, pd.DataFrame] = {}
    wanted = list(models)
    if cfg.ppo.prediction_model == "ensemble":
        wanted += [m for m in cfg.ppo.ensemble_models if m not in wanted]
    ensemble_ok = cfg.ppo.prediction_model == "ensemble"
    for m in wanted:
        try:
            tables[m] = build_prediction_table(cfg, prep, paths, m, device)
        except PipelineError as exc:
            if m in models:
                raise
            # A member outside this run (e.g. --models gru) is missing or stale: the run's own
            # tables are still written; step 6 refuses the ensemble until the member is retrained.
            log.warning("ensemble table not written: member %s is not usable (%s)", m, exc)
            ensemble_ok = False
            continue
        if m in models:
            written[m] = _write_table(tables[m], predictions_path(paths, m, dataset))
    if ensemble_ok:
        ens = ensemble_table({m: tables[m] for m in cfg.ppo.ensemble_models})
        written["ensemble"] = _write_table(ens, predictions_path(paths, "ensemble", dataset))
    if cfg.ppo.ppo_prediction_source == "in_sample":
        log.warning(
            "prediction tables use IN-SAMPLE predictions (ppo_prediction_source = in_sample): "
            "the agent will see classifier outputs better than on new data"
        )
    for m, path in written.items():
        log.info("prediction table %s: %s", m, path)
    return written


def load_prediction_table(paths: Paths, model: str, dataset: str) -> pd.DataFrame:
    """Read and validate ``results/predictions_{model}_{dataset}.csv`` for the environment.

    Checks the columns, that bars increase strictly, that probabilities lie in [0, 1] and sum to 1,
    and that ``agent_block`` holds only train / val / test. ``timestamp`` is parsed to UTC.

    Raises:
        PipelineError: missing file or a failed check (naming the column and row).
    """
    path = predictions_path(paths, model, dataset)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: prediction table not found; run train_models.py") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: unreadable prediction table ({exc})") from None
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}")
    if len(df) == 0:
        raise PipelineError(f"{path}: no rows")
    bars = df["bar"].to_numpy()
    if not np.issubdtype(bars.dtype, np.integer) or (np.diff(bars) <= 0).any():
        raise PipelineError(f"{path}: column bar must be strictly increasing integers")
    probs = df[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | (probs > 1).any(axis=1)
    bad |= np.abs(probs.sum(axis=1) - 1.0) > 1e-4  # the CSV keeps 6 significant digits
    if bad.any():
        row = int(np.argmax(bad))
        raise PipelineError(
            f"{path}: row {row + 2} (bar {bars[row]}): probabilities {probs[row].tolist()} "
            "are not in [0, 1] or do not sum to 1"
        )
    blocks = set(df["agent_block"].unique())
    if not blocks <= set(AGENT_BLOCKS):
        raise PipelineError(
            f"{path}: agent_block has {sorted(blocks - set(AGENT_BLOCKS))}; "
            "expected train, val, test"
        )
    if df["in_sample"].dtype != bool:
        raise PipelineError(f"{path}: column in_sample must be true/false")
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


# ================================================================ step 6


def _check_probs(name: str, probs: np.ndarray, n: int) -> None:
    if probs.shape != (n, 3):
        raise PipelineError(f"model {name}: output shape {probs.shape}, expected ({n}, 3)")
    if not np.isfinite(probs).all() or np.abs(probs.sum(axis=1) - 1).max() > PROB_TOLERANCE:
        raise PipelineError(f"model {name}: probabilities do not sum to 1 ({probs.sum(axis=1)})")


def validate_models(cfg: Config, dataset: str, paths: Paths) -> dict[str, Any]:
    """Step 6: load every model the PPO config needs, run dummy windows, check the outputs.

    Checks each model file (and the ensemble) loads, matches the dataset file's SHA-256 and the
    current config hash, maps windows ``(n, lookback, F)`` to probabilities ``(n, 3)`` summing to
    1, that the walk-forward fold models exist when the agent uses them, and that the prediction
    table the agent will read is valid. Returns ``{name: details}``.

    Raises:
        PipelineError: naming the model that failed.
    """
    from pipeline.data import resolve_dataset_path

    dataset_file = resolve_dataset_path(dataset, paths.datasets)
    name = dataset_file.stem
    sha = sha256_file(dataset_file)
    device = resolve_device(cfg.training.device)
    p = cfg.ppo
    needed = list(p.ensemble_models) if p.prediction_model == "ensemble" else [p.prediction_model]
    results: dict[str, Any] = {}
    rng = np.random.default_rng(0)

    def dummy_check(label: str, model: PredictionModel | EnsemblePredictionModel) -> np.ndarray:
        window = rng.standard_normal((model.lookback, len(model.feature_names)))  # (L, F)
        try:
            cls, conf, probs = model.predict(window, scaled=True)
            batch = model.predict_proba_windows(np.stack([window] * 4), scaled=True)  # (4, 3)
        except PipelineError:
            raise
        except Exception as exc:  # any failure inside the network names the model
            raise PipelineError(
                f"model {label}: prediction failed ({type(exc).__name__}: {exc})"
            ) from None
        _check_probs(label, probs[None], 1)
        _check_probs(label, batch, 4)
        if not (0 <= cls < 3 and abs(conf - probs.max()) < 1e-12):
            raise PipelineError(f"model {label}: class {cls} / confidence {conf} inconsistent")
        return probs

    for m in needed:
        model = PredictionModel(m, name, paths, device)
        if model.dataset_sha256 != sha:
            raise PipelineError(
                f"model {m}: trained on dataset sha256 {model.dataset_sha256[:12]}, "
                f"{dataset_file} has {sha[:12]}; rerun train_models.py"
            )
        expected = cfg.training.hash_for_model(m)
        if model.config_hash != expected:
            raise PipelineError(
                f"model {m}: config changed since training (hash {model.config_hash} -> "
                f"{expected}); rerun train_models.py"
            )
        probs = dummy_check(m, model)
        folds = 0
        if p.ppo_prediction_source == "walk_forward":
            for fold in range(1, cfg.training.walk_forward_folds):
                fpath = fold_model_path(paths, m, name, fold)
                fm = PredictionModel(m, name, paths, device, path=fpath)
                if fm.dataset_sha256 != sha or fm.config_hash != expected:
                    raise PipelineError(f"model {m}: walk-forward model {fpath} is stale")
                dummy_check(f"{m}/fold{fold}", fm)
                folds += 1
        results[m] = {
            "device": str(model.device),
            "n_parameters": model.n_parameters,
            "lookback": model.lookback,
            "n_features": len(model.feature_names),
            "dummy_probabilities": probs.tolist(),
            "walk_forward_models": folds,
        }
        log.info(
            "model %s ok: %s parameters on %s, input (%d, %d), %d walk-forward models",
            m,
            f"{model.n_parameters:,}",
            model.device,
            model.lookback,
            len(model.feature_names),
            folds,
        )
    table_name = "ensemble" if p.prediction_model == "ensemble" else p.prediction_model
    if p.prediction_model == "ensemble":
        ens = EnsemblePredictionModel(name, needed, paths, device)
        results["ensemble"] = {
            "device": str(ens.device),
            "n_parameters": ens.n_parameters,
            "dummy_probabilities": dummy_check("ensemble", ens).tolist(),
        }
        log.info("ensemble of %s ok", ", ".join(needed))
    table = load_prediction_table(paths, table_name, name)
    if p.ppo_prediction_source == "walk_forward" and table["in_sample"].any():
        raise PipelineError(
            f"prediction table of {table_name} has in-sample rows but ppo_prediction_source = "
            "walk_forward; rerun train_models.py"
        )
    results["table"] = {
        "path": str(predictions_path(paths, table_name, name)),
        "rows": len(table),
        "in_sample_rows": int(table["in_sample"].sum()),
    }
    return results
