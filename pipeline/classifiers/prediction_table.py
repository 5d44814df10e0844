"""The prediction table: the contract between the classifier side and the agent side.

:func:`write_prediction_tables` writes :meth:`pipeline.store.artifacts.Artifacts.prediction_table`:
one row per bar the agent can use, produced by a model that never trained on that bar (walk-forward
over the development block), or by the main model everywhere when ``ppo_prediction_source =
in_sample`` (flagged in the ``in_sample`` column). :func:`load_prediction_table` reads and
validates a table for the environment side. Columns: ``bar, timestamp, p_fall, p_stationary,
p_rise, pred_class, confidence, source, agent_block, in_sample`` (plus each member's probabilities
for an ensemble), then what the agent's environment needs of each bar (:data:`AGENT_COLUMNS`:
``open, close``, the five agent price features and the true class ``label``, -1 where the future is
not known yet), so step 7 reads the table and never builds the classifier's features, labels or
splits again. Beside each table, ``predictions_{model}_{dataset}.json`` (:func:`table_meta`) says
which dataset it belongs to (its SHA-256, bars, spacing and bars per year).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.classifiers.ensembles import AUTO, beats_members, combine, fit_ensemble
from pipeline.classifiers.predictors import PROB_COLUMNS, PredictionModel
from pipeline.classifiers.prepare import ClassifierData
from pipeline.common import Paths, PipelineError, atomic_path, atomic_write_json
from pipeline.config.schema import Config
from pipeline.data.annualisation import infer_periods_per_year
from pipeline.data.features import AGENT_PRICE_FEATURE_NAMES
from pipeline.store.artifacts import Artifacts

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
AGENT_COLUMNS: tuple[str, ...] = ("open", "close", *AGENT_PRICE_FEATURE_NAMES, "label")
"""Per bar, what the agent's environment reads besides the predictions: the prices it trades at,
its price features (computed from bars <= t, NaN in their warm-up) and the true future class (for
the oracle diagnostics only)."""
EXACT_COLUMNS: tuple[str, ...] = ("open", "close", *AGENT_PRICE_FEATURE_NAMES)
"""Written with every digit (shortest round-trip text), unlike the probabilities' 6 digits: the
agent must trade at the dataset's prices and see the same features as if computed again."""
AGENT_BLOCKS: tuple[str, str, str] = ("train", "val", "test")
PROB_TOLERANCE = 1e-6
META_FORMAT = "prediction-table-meta/1"


@dataclass(frozen=True)
class AgentRange:
    """A range of bars of one agent block, and which model predicts it."""

    agent_block: str
    start: int
    stop: int
    fold: int | None  # walk-forward fold whose model predicts it; None = the main (dev) model


def agent_ranges(prep: ClassifierData) -> list[AgentRange]:
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


def _check_current(model: PredictionModel, cfg: Config, prep: ClassifierData) -> None:
    model.check_dataset(prep)
    expected = cfg.training.hash_for_model(model.name)
    if model.config_hash != expected:
        raise PipelineError(
            f"{model.path}: trained with config hash {model.config_hash}, current config has "
            f"{expected}; rerun train_models.py"
        )


def build_prediction_table(
    cfg: Config, prep: ClassifierData, paths: Paths, model: str, device: torch.device
) -> pd.DataFrame:
    """The prediction table of one model (see the module docstring and docs/DESIGN.md)."""
    dataset = prep.info.name
    # the oracle source keeps the walk-forward layout of blocks
    walk_forward = cfg.ppo.ppo_prediction_source != "in_sample"
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
                model,
                dataset,
                paths,
                device,
                path=Artifacts(paths, dataset).fold_model(model, r.fold),
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
    return with_agent_columns(table, prep)


def with_agent_columns(table: pd.DataFrame, prep: ClassifierData) -> pd.DataFrame:
    """``table`` plus :data:`AGENT_COLUMNS` of each row's bar, from the prepared dataset."""
    bars = table["bar"].to_numpy(dtype=np.int64)
    arrays = prep.arrays
    out = table.copy()
    out["open"] = arrays.open[bars]
    out["close"] = arrays.close[bars]
    price = arrays.price_features[bars]  # (rows, 5) float32
    for j, name in enumerate(AGENT_PRICE_FEATURE_NAMES):
        out[name] = price[:, j]
    out["label"] = arrays.labels[bars].astype(np.int64)
    return out


def table_meta(
    cfg: Config, prep: ClassifierData, model: str, members: tuple[str, ...] | list[str] = ()
) -> dict[str, Any]:
    """What ``predictions_{model}_{dataset}.json`` records: the dataset the table belongs to, its
    bars per year (inferred over the whole dataset, as the report annualises) and the classifier
    settings its predictions came from (``model_keys`` of the model, or of every member of an
    ensemble): the agent's resume fingerprint reads them here, not from the current config."""
    bars_per_year, basis = infer_periods_per_year(prep.arrays.timestamps)
    return {
        "format": META_FORMAT,
        "model": model,
        "dataset": prep.info.name,
        "dataset_sha256": prep.info.sha256,
        "n_bars": int(prep.arrays.n_bars),
        "interval_seconds": float(prep.info.interval_seconds),
        "periods_per_year": float(bars_per_year),
        "periods_per_year_basis": basis,
        "classifier_settings": classifier_settings(cfg, members or (model,)),
    }


def classifier_settings(cfg: Config, models: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``{key: value}`` of the training settings that change what ``models`` learn (the union of
    their ``model_keys``: data, training loop, their own sizes; JSON values)."""
    training = cfg.to_dict()["training"]
    keys = sorted({k for m in models for k in cfg.training.model_keys(m)})
    return {k: training[k] for k in keys}


def ensemble_fit(
    cfg: Config, prep: ClassifierData, members: dict[str, pd.DataFrame], method: str | None = None
) -> dict[str, Any]:
    """:func:`pipeline.classifiers.ensembles.fit_ensemble` on the members' tables (labels from
    ``prep``); ``method`` defaults to the config's ``ensemble_method``."""
    names = list(members)
    probs = np.stack([members[m][list(PROB_COLUMNS)].to_numpy() for m in names])  # (M, n, 3)
    first = members[names[0]]
    labels = prep.arrays.labels[first["bar"].to_numpy()]  # (n,) -1 past the last label
    blocks = first["agent_block"].to_numpy()
    how = method or cfg.ppo.ensemble_method
    return fit_ensemble(names, probs, labels, blocks, how, cfg.training.seed, prep.arrays.k)


def ensemble_line(fit: dict[str, Any]) -> str:
    """``weighted (chosen on validation: weighted); weights dlstm 0.60, bilstm 0.40; val macro-F1
    0.41 vs best member 0.40 (lead +0.012, paired s.e. 0.008); test 0.40 vs 0.39`` (the test
    numbers are reported, not used; the lead's s.e. where the fit kept it)."""
    if fit["kind"] == "weights":
        how = "weights " + ", ".join(
            f"{m} {w:.2f}" for m, w in zip(fit["members"], fit["weights"], strict=True)
        )
    else:
        how = "logistic-regression meta-model on the members' log-probabilities"
    parts = [f"{fit['method']} (chosen on validation: {fit['choice']}); {how}"]
    for block in ("val", "test"):
        s = fit["scores"].get(block)
        if s:
            best, name = max((v, k) for k, v in s.items() if k != "ensemble")
            line = f"{block} macro-F1 {s['ensemble']:.3f} vs best member {best:.3f}"
            se = (fit.get("val_lead_standard_errors") or {}).get(name)
            if block == "val" and se is not None:
                line += f" (lead {s['ensemble'] - best:+.3f}, paired s.e. {se:.3f})"
            parts.append(line)
    return "; ".join(parts)


def ensemble_table(
    tables: dict[str, pd.DataFrame], fit: dict[str, Any] | None = None
) -> pd.DataFrame:
    """The members' probabilities combined by ``fit``
    (:func:`pipeline.classifiers.ensembles.fit_ensemble`; ``None``: the mean), plus ``p_fall_{m},
    p_stationary_{m}, p_rise_{m}``."""
    names = list(tables)
    first = tables[names[0]]
    for m in names[1:]:
        if not np.array_equal(tables[m]["bar"].to_numpy(), first["bar"].to_numpy()):
            raise PipelineError(
                f"ensemble: {m}'s prediction table covers other bars than {names[0]}'s"
            )
    members = np.stack([tables[m][list(PROB_COLUMNS)].to_numpy() for m in names])  # (M, n, 3)
    probs = members.mean(axis=0) if fit is None else combine(members, fit)  # (n, 3)
    out = first[["bar", "timestamp"]].copy()
    out["p_fall"], out["p_stationary"], out["p_rise"] = probs[:, 0], probs[:, 1], probs[:, 2]
    out["pred_class"] = probs.argmax(axis=1).astype(np.int64)
    out["confidence"] = probs.max(axis=1)
    out["source"] = [
        "+".join(vals) for vals in zip(*(tables[m]["source"] for m in names), strict=True)
    ]
    out["agent_block"] = first["agent_block"]
    out["in_sample"] = np.logical_or.reduce([tables[m]["in_sample"].to_numpy() for m in names])
    for c in AGENT_COLUMNS:
        if c in first.columns:
            out[c] = first[c].to_numpy()
    for m in names:
        for c in PROB_COLUMNS:
            out[f"{c}_{m}"] = tables[m][c].to_numpy()
    return out


def _exact_text(values: np.ndarray) -> list[str]:
    """Each value as the shortest text that reads back to the same number of its dtype (float64
    prices, float32 features); ``nan`` for a warm-up bar."""
    return [str(v) for v in values]  # numpy scalars print their shortest round-trip text


def _write_table(table: pd.DataFrame, art: Artifacts, model: str, meta: dict[str, Any]) -> Path:
    """The table of ``model`` (:meth:`Artifacts.prediction_table`) and its .json
    (:meth:`Artifacts.prediction_meta`); returns the table's path."""
    out = table.copy()
    for c in EXACT_COLUMNS:
        if c in out.columns:
            out[c] = _exact_text(out[c].to_numpy())
    path = art.prediction_table(model)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    atomic_write_json(art.prediction_meta(model), meta)
    return path


@dataclass
class WrittenTables:
    """What :func:`write_prediction_tables` wrote."""

    paths: dict[str, Path]
    """``{model or "ensemble": path}``."""
    auto_ensemble: dict[str, Any] | None = None
    """``prediction_model = auto`` with two or more walk-forward tables: the ensemble fitted over
    all of them (:func:`pipeline.classifiers.ensembles.fit_ensemble` with method ``auto``) and
    ``used``:
    whether it combines members and beats the best of them alone on the agent-val rows by more
    than one (paired) standard error (:func:`pipeline.classifiers.ensembles.beats_members`)."""


def write_prediction_tables(
    cfg: Config, prep: ClassifierData, paths: Paths, models: list[str], device: torch.device
) -> WrittenTables:
    """Write the table of every model in ``models`` (and the ensemble's when the agent uses it).

    Ensemble members not in ``models`` are predicted from their files on disk (they must exist
    and be current). With ``prediction_model = auto`` and walk-forward tables of two or more
    models, the ensembles are candidates too: weighted voting is fitted on the
    out-of-fold agent-train rows over every model and chosen on the agent-val rows against the
    mean and each model alone (:data:`pipeline.classifiers.ensembles.AUTO` says why not stacking);
    when a combination beats every model alone by more than the paired standard error of its
    lead (:func:`pipeline.classifiers.ensembles.beats_members`), its table is written and step 7
    feeds it to the agent (:func:`pipeline.classifiers.model_choice.resolve_prediction_model`).
    """
    art = Artifacts(paths, prep.info.name)
    tables, written, ensemble_ok = _model_tables(cfg, prep, paths, models, device, art)
    members, fit, auto_fit = _ensemble_choice(cfg, prep, tables, written, ensemble_ok)
    if fit is not None and (ensemble_ok or (auto_fit is not None and auto_fit["used"])):
        atomic_write_json(art.ensemble_report, fit)
        written["ensemble"] = _write_table(
            ensemble_table(members, fit),
            art,
            "ensemble",
            table_meta(cfg, prep, "ensemble", list(members)),
        )
    if cfg.ppo.ppo_prediction_source == "in_sample":
        log.warning(
            "prediction tables use IN-SAMPLE predictions (ppo_prediction_source = in_sample): "
            "the agent will see classifier outputs better than on new data"
        )
    for m, path in written.items():
        log.info("prediction table %s: %s", m, path)
    return WrittenTables(written, auto_fit)


def _model_tables(
    cfg: Config,
    prep: ClassifierData,
    paths: Paths,
    models: list[str],
    device: torch.device,
    art: Artifacts,
) -> tuple[dict[str, pd.DataFrame], dict[str, Path], bool]:
    """Each model's table (written for ``models``; predicted only, for an ensemble member
    outside them); whether the configured ensemble can be built."""
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
            written[m] = _write_table(tables[m], art, m, table_meta(cfg, prep, m))
    return tables, written, ensemble_ok


def _ensemble_choice(
    cfg: Config,
    prep: ClassifierData,
    tables: dict[str, pd.DataFrame],
    written: dict[str, Path],
    ensemble_ok: bool,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any] | None, dict[str, Any] | None]:
    """``(members, fit, auto_fit)``: the configured ensemble's fit, or auto's candidate ensemble
    over every written walk-forward table with ``used`` (beats the best model alone by more than
    one standard error); ``fit`` is ``None`` when there is no ensemble to consider."""
    out_of_fold = cfg.ppo.ppo_prediction_source == "walk_forward"
    if ensemble_ok:
        members = {m: tables[m] for m in cfg.ppo.ensemble_models}
        fit = ensemble_fit(cfg, prep, members)
        log.info("ensemble (%s): %s", cfg.ppo.ensemble_method, ensemble_line(fit))
        return members, fit, None
    if cfg.ppo.prediction_model == "auto" and out_of_fold and len(written) >= 2:
        members = {m: tables[m] for m in written}
        fit = ensemble_fit(cfg, prep, members, AUTO)
        auto_fit = {**fit, "used": beats_members(fit, prep.arrays.k)}
        log.info(
            "auto: ensemble of %s %s: %s",
            ", ".join(members),
            "chosen"
            if auto_fit["used"]
            else "not chosen (not one paired standard error above every model alone)",
            ensemble_line(auto_fit),
        )
        return members, auto_fit, auto_fit
    return {}, None, None


def load_prediction_table(paths: Paths, model: str, dataset: str) -> pd.DataFrame:
    """Read and validate the prediction table of ``model`` on ``dataset`` for the environment.

    Checks the columns, that bars increase strictly, that probabilities lie in [0, 1] and sum to 1,
    and that ``agent_block`` holds only train / val / test. ``timestamp`` is parsed to UTC; the
    file's path is in ``attrs["path"]`` (for error messages).

    Raises:
        PipelineError: missing file or a failed check (naming the column and row).
    """
    path = Artifacts(paths, dataset).prediction_table(model)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: prediction table not found; run train_models.py") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: unreadable prediction table ({exc})") from None
    missing = [c for c in (*TABLE_COLUMNS, *AGENT_COLUMNS) if c not in df.columns]
    if missing:
        raise PipelineError(
            f"{path}: missing column(s) {', '.join(missing)} (a table of an older version?); "
            "rebuild it with train_models.py"
        )
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
    df.attrs["path"] = str(path)  # for the agent's later error messages
    return df


META_KEYS: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "dataset_sha256": str,
    "n_bars": int,
    "interval_seconds": (int, float),
    "periods_per_year": (int, float),
    "periods_per_year_basis": str,
    "classifier_settings": dict,
}


def load_table_meta(paths: Paths, model: str, dataset: str) -> dict[str, Any]:
    """``predictions_{model}_{dataset}.json`` (:func:`table_meta`), checked key by key.

    Raises:
        PipelineError: a missing file or key, or a value of the wrong type (naming both).
    """
    path = Artifacts(paths, dataset).prediction_meta(model)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(
            f"{path}: not found (written beside the prediction table since the table carries the "
            "agent's inputs); rebuild the table with train_models.py"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != META_FORMAT:
        raise PipelineError(f"{path}: expected a JSON object with format {META_FORMAT!r}")
    for key, kind in META_KEYS.items():
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise PipelineError(f"{path}: key {key} is {data.get(key)!r}; expected a {kind}")
    return data
