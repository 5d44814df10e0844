"""Every artifact's path, the one rule that names a dataset, and the per-run manifest.

This module is the only place that spells an artifact's file name (issue 9 item 2): steps ask an
:class:`Artifacts` for a path instead of writing an f-string, and record what they wrote in the
dataset's :class:`Manifest`, which the push step reads instead of globbing.

Artifacts of dataset ``{dataset}`` (:func:`dataset_name`), under the artifact root
(:class:`pipeline.common.Paths`); *step* = who writes it (5 = ``train_models``, 7 =
``train_ppo_agent``, driver = ``runpod_train``, entry = ``runpod_main``), *pushed* = whether step 8
commits it (:data:`KINDS`). The table is Markdown, for docs to copy:

| path | kind | step | pushed |
|------|------|------|--------|
| `models/{model}_{dataset}_classification.pth` | classifier_model | 5 | yes |
| `models/{model}_{dataset}_config.txt` | config | 5 | yes |
| `models/walkforward/{model}_{dataset}_fold{k}.pth` | fold_model | 5 | yes |
| `models/checkpoints/{model}_{dataset}_{tag}.ckpt.pt` | classifier_ckpt | 5 | no |
| `scalers/scaler_{dataset}.json` | scaler | 5 | yes |
| `results/metrics_{model}_{dataset}.json` | metrics | 5 | yes |
| `results/history_{model}_{dataset}.json` | history | 5 | yes |
| `results/training_{model}_{dataset}.png` | plot | 5 | yes |
| `results/training_summary_{dataset}.json` | training_summary | 5 | yes |
| `results/predictions_{model}_{dataset}.csv` | prediction_table | 5 | yes |
| `ppo_approach/models/ppo_{model}_{dataset}.zip` | ppo_model | 7 | yes |
| `ppo_approach/models/ppo_{model}_{dataset}_meta.json` | ppo_meta | 7 | yes |
| `ppo_approach/models/ppo_{model}_{dataset}_config.txt` | config | 7 | yes |
| `ppo_approach/checkpoints/{model}_{dataset}/checkpoint_{T}.zip` | ppo_checkpoint | 7 | no |
| `ppo_approach/checkpoints/{model}_{dataset}/best_model.zip` | ppo_best_model | 7 | no |
| `ppo_approach/checkpoints/{model}_{dataset}/best_model.json` | ppo_checkpoint_meta | 7 | no |
| `ppo_approach/checkpoints/{model}_{dataset}/checksums.json` | ppo_checkpoint_meta | 7 | no |
| `ppo_approach/checkpoints/{model}_{dataset}/run_config.json` | ppo_checkpoint_meta | 7 | no |
| `ppo_approach/logs/ppo_{model}_{dataset}_{n}/events.out.tfevents.*` | tensorboard | 7 | yes |
| `results/backtest_{model}_{dataset}.json` | backtest | 7 | yes |
| `results/backtest_{model}_{dataset}.png` | plot | 7 | yes |
| `results/run_summary_{dataset}.json` | run_summary | driver | yes |
| `results/run_manifest_{dataset}.json` | (the manifest) | every step | yes |
| `logs/train_{dataset}_{stamp}.log` | log | driver | yes |
| `logs/train_{dataset}_{stamp}_parent_gone.log` | log | driver | yes |
| `logs/run_{dataset}_{stamp}.log` | log | entry | yes |
| `logs/run_{dataset}.lock` | (not recorded) | driver, step_lock | no |

``{model}`` is a classifier name (``lstm``, ...) or, for prediction tables, PPO models, checkpoint
folders and backtests, the agent's ``prediction_model`` (which may be ``ensemble``); ``{tag}`` is
``main`` or ``fold{k}``; ``{stamp}`` is :func:`log_stamp`; ``{n}`` is the TensorBoard run number
Stable-Baselines3 appends. ``.previous_run/`` inside a PPO checkpoint folder holds an earlier run's
files while a fresh run has not yet written its first checkpoint; ``scalers/scaler_{dataset}.pkl``
(older versions) is never written, loaded nor pushed.

The run manifest (``results/run_manifest_{dataset}.json``, beside the run summary) is **one per
dataset and cumulative**: one entry per artifact path (kind, the step that recorded it, sha256 and
size at that moment, ``written`` or ``up_to_date``, when, and the run id); recording a path again
replaces its entry. A run does not start from an empty manifest, so ``--steps 8`` alone, or
``--steps 7,8`` after an earlier step 5, pushes the same files a full run would, as the push
step's glob did before (issue 9 item 2). A step that finds an artifact up to date and skips it
records it all the same, with ``status = "up_to_date"``, so the push step (which pushes exactly the
manifest's entries of pushed kinds, plus the manifest) pushes it. An entry whose file has since
been deleted is reported by :meth:`Manifest.missing` and dropped by :meth:`Manifest.prune_missing`.

Every record re-reads the file, merges and rewrites it atomically
(:func:`pipeline.common.atomic_write_json`) under one process-wide lock, so several
:class:`Manifest` objects in one process (the driver and the step it calls) never lose each other's
entries. Across processes the dataset's run lock (``logs/run_{dataset}.lock``, held by the driver
and by :func:`pipeline.runlock.step_lock` for a step run by hand) keeps writers apart.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.common import Paths, PipelineError, atomic_write_json, sha256_file

# ================================================================ the dataset name rule


def dataset_name(dataset: str) -> str:
    """Artifact name of a dataset given as a name or a CSV path (folder and ``.csv`` dropped).

    ``BTC_1h`` -> ``BTC_1h``; ``/data/ETH.csv`` -> ``ETH``; ``x/SOL.CSV`` -> ``SOL``. The one rule
    for every artifact name, the run lock and the manifest (issue 9 item 2).
    """
    base = Path(str(dataset).strip()).name
    return base[: -len(".csv")] if base.lower().endswith(".csv") else base


LOG_STAMP_FORMAT = "%Y%m%d-%H%M%S"
"""Local time in log file names: ``logs/run_{dataset}_20250101-120000.log``."""


def log_stamp(when: datetime | None = None) -> str:
    """``when`` (default: now, local time) as it appears in log file names."""
    return (when if when is not None else datetime.now()).strftime(LOG_STAMP_FORMAT)


# ================================================================ names inside a folder

# A PPO checkpoint folder is handled by code that only has the folder (checkpointing, pruning,
# checksums, the best model), so its member names are module constants.
PPO_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)\.zip$")
"""``checkpoint_{timesteps}.zip`` in a PPO checkpoint folder."""
PPO_BEST_MODEL_NAME = "best_model.zip"
"""The best model on the validation block, in the checkpoint folder (never pruned)."""
PPO_BEST_META_NAME = "best_model.json"
"""The best model's validation score and timesteps, beside it."""
PPO_CHECKSUMS_NAME = "checksums.json"
"""``{file name: sha256}`` of the checkpoints and best model the run wrote."""
PPO_RUN_CONFIG_NAME = "run_config.json"
"""The settings the checkpoints were trained under (checked by ``--resume``)."""
PPO_PREVIOUS_RUN_DIR = ".previous_run"
"""An earlier run's files while a fresh run has not yet written its first checkpoint."""
TENSORBOARD_EVENTS_GLOB = "events.out.tfevents.*"
"""TensorBoard event files inside a run folder."""

_CLASSIFIER_CKPT_SUFFIX = ".ckpt.pt"


def ppo_checkpoint_file(directory: Path, timesteps: int) -> Path:
    """``{directory}/checkpoint_{timesteps}.zip``."""
    if int(timesteps) < 0:
        raise ValueError(f"timesteps = {timesteps}; expected >= 0")
    return Path(directory) / f"checkpoint_{int(timesteps)}.zip"


def ppo_checkpoint_timesteps(name: str) -> int | None:
    """The timesteps in a checkpoint file name, or ``None`` for any other name."""
    m = PPO_CHECKPOINT_RE.match(name)
    return int(m.group(1)) if m else None


# ================================================================ one dataset's artifacts


@dataclass(frozen=True)
class Artifacts:
    """Every artifact path of one dataset under one artifact root.

    ``Artifacts(paths, "datasets/BTC_1h.csv").dataset == "BTC_1h"``: the dataset may be given as
    a name or a CSV path; it is stored as its :func:`dataset_name`. Methods return paths only;
    nothing is created.
    """

    paths: Paths
    dataset: str

    def __post_init__(self) -> None:
        name = dataset_name(self.dataset)
        if not name:
            raise PipelineError(
                f"dataset {self.dataset!r}: no file name in it; expected a dataset name or a "
                "CSV path"
            )
        object.__setattr__(self, "dataset", name)

    # ------------------------------------------------------------ classifiers (step 5)

    def classifier_model(self, model: str) -> Path:
        """``models/{model}_{dataset}_classification.pth``: the main model file."""
        return self.paths.models / f"{model}_{self.dataset}_classification.pth"

    def classifier_config(self, model: str) -> Path:
        """``models/{model}_{dataset}_config.txt``: the resolved config beside the model."""
        return self.paths.models / f"{model}_{self.dataset}_config.txt"

    @property
    def fold_models_dir(self) -> Path:
        """``models/walkforward/``."""
        return self.paths.models / "walkforward"

    def fold_model(self, model: str, fold: int) -> Path:
        """``models/walkforward/{model}_{dataset}_fold{fold}.pth``: predicts fold ``fold``."""
        return self.fold_models_dir / f"{model}_{self.dataset}_fold{int(fold)}.pth"

    @property
    def classifier_checkpoints_dir(self) -> Path:
        """``models/checkpoints/``."""
        return self.paths.models / "checkpoints"

    def classifier_checkpoint(self, model: str, tag: str = "main") -> Path:
        """``models/checkpoints/{model}_{dataset}_{tag}.ckpt.pt``: the per-epoch checkpoint
        (``tag`` = ``main`` or ``fold{k}``), deleted once its model file is written."""
        if not re.fullmatch(r"[A-Za-z0-9]+", tag):
            raise ValueError(f"checkpoint tag {tag!r}; expected letters and digits (main, fold2)")
        return self.classifier_checkpoints_dir / f"{model}_{self.dataset}_{tag}.ckpt.pt"

    def pending_classifier_checkpoints(self, models: Iterable[str]) -> list[Path]:
        """Epoch checkpoints of ``models`` on this dataset on disk now, sorted.

        Matches the whole name, so dataset ``BTC`` does not list ``BTC_USDT``'s checkpoints.
        """
        folder = self.classifier_checkpoints_dir
        if not folder.is_dir():
            return []
        ds = re.escape(self.dataset)
        names = "|".join(re.escape(m) for m in models)
        if not names:
            return []
        pattern = re.compile(rf"(?:{names})_{ds}_[A-Za-z0-9]+{re.escape(_CLASSIFIER_CKPT_SUFFIX)}")
        return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file())

    @property
    def scaler(self) -> Path:
        """``scalers/scaler_{dataset}.json``: the train-block scaler (JSON data)."""
        return self.paths.scalers / f"scaler_{self.dataset}.json"

    @property
    def legacy_scaler(self) -> Path:
        """``scalers/scaler_{dataset}.pkl``: where older versions pickled the scaler; never
        written, loaded or pushed (issue 8 item 7)."""
        return self.paths.scalers / f"scaler_{self.dataset}.pkl"

    def metrics(self, model: str) -> Path:
        """``results/metrics_{model}_{dataset}.json``."""
        return self.paths.results / f"metrics_{model}_{self.dataset}.json"

    def history(self, model: str) -> Path:
        """``results/history_{model}_{dataset}.json``: per-epoch losses and scores."""
        return self.paths.results / f"history_{model}_{self.dataset}.json"

    def training_plot(self, model: str) -> Path:
        """``results/training_{model}_{dataset}.png``: curves and confusion matrix."""
        return self.paths.results / f"training_{model}_{self.dataset}.png"

    @property
    def training_summary(self) -> Path:
        """``results/training_summary_{dataset}.json``: step 5's summary of every model."""
        return self.paths.results / f"training_summary_{self.dataset}.json"

    def prediction_table(self, model: str) -> Path:
        """``results/predictions_{model}_{dataset}.csv`` (``model`` may be ``ensemble``): the
        table the agent's environment reads."""
        return self.paths.results / f"predictions_{model}_{self.dataset}.csv"

    # ------------------------------------------------------------ PPO agent (step 7)

    def ppo_run_name(self, model: str) -> str:
        """``{model}_{dataset}``: the name of the checkpoint folder (``model`` = the agent's
        prediction model)."""
        return f"{model}_{self.dataset}"

    def ppo_model(self, model: str) -> Path:
        """``ppo_approach/models/ppo_{model}_{dataset}.zip``: the final agent."""
        return self.paths.ppo_models / f"ppo_{model}_{self.dataset}.zip"

    def ppo_meta(self, model: str) -> Path:
        """``ppo_approach/models/ppo_{model}_{dataset}_meta.json``: timesteps, sha256, settings."""
        return self.paths.ppo_models / f"ppo_{model}_{self.dataset}_meta.json"

    def ppo_config(self, model: str) -> Path:
        """``ppo_approach/models/ppo_{model}_{dataset}_config.txt``: the resolved config."""
        return self.paths.ppo_models / f"ppo_{model}_{self.dataset}_config.txt"

    def ppo_checkpoint_dir(self, model: str) -> Path:
        """``ppo_approach/checkpoints/{model}_{dataset}/``."""
        return self.paths.ppo_checkpoints / self.ppo_run_name(model)

    def ppo_checkpoint(self, model: str, timesteps: int) -> Path:
        """``ppo_approach/checkpoints/{model}_{dataset}/checkpoint_{timesteps}.zip``."""
        return ppo_checkpoint_file(self.ppo_checkpoint_dir(model), timesteps)

    def ppo_best_model(self, model: str) -> Path:
        """``.../checkpoints/{model}_{dataset}/best_model.zip``."""
        return self.ppo_checkpoint_dir(model) / PPO_BEST_MODEL_NAME

    def ppo_best_meta(self, model: str) -> Path:
        """``.../checkpoints/{model}_{dataset}/best_model.json``."""
        return self.ppo_checkpoint_dir(model) / PPO_BEST_META_NAME

    def ppo_checksums(self, model: str) -> Path:
        """``.../checkpoints/{model}_{dataset}/checksums.json``."""
        return self.ppo_checkpoint_dir(model) / PPO_CHECKSUMS_NAME

    def ppo_run_config(self, model: str) -> Path:
        """``.../checkpoints/{model}_{dataset}/run_config.json``."""
        return self.ppo_checkpoint_dir(model) / PPO_RUN_CONFIG_NAME

    def ppo_previous_run_dir(self, model: str) -> Path:
        """``.../checkpoints/{model}_{dataset}/.previous_run/``."""
        return self.ppo_checkpoint_dir(model) / PPO_PREVIOUS_RUN_DIR

    @property
    def tensorboard_dir(self) -> Path:
        """``ppo_approach/logs/``: SB3's ``tensorboard_log`` folder (all datasets)."""
        return self.paths.ppo_logs

    def tensorboard_name(self, model: str) -> str:
        """``ppo_{model}_{dataset}``: SB3's ``tb_log_name``; it appends ``_1``, ``_2``, ... per
        fresh run."""
        return f"ppo_{model}_{self.dataset}"

    def tensorboard_runs(self, model: str) -> list[Path]:
        """The run folders ``ppo_approach/logs/ppo_{model}_{dataset}_{n}/`` on disk, by ``n``."""
        folder = self.tensorboard_dir
        if not folder.is_dir():
            return []
        pattern = re.compile(rf"{re.escape(self.tensorboard_name(model))}_(\d+)")
        runs = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
        return [p for _, p in sorted(runs) if p.is_dir()]

    def backtest_report(self, model: str) -> Path:
        """``results/backtest_{model}_{dataset}.json``: the test-block report."""
        return self.paths.results / f"backtest_{model}_{self.dataset}.json"

    def backtest_plot(self, model: str) -> Path:
        """``results/backtest_{model}_{dataset}.png``."""
        return self.paths.results / f"backtest_{model}_{self.dataset}.png"

    # ------------------------------------------------------------ driver and entry point

    @property
    def run_summary(self) -> Path:
        """``results/run_summary_{dataset}.json``: the driver's summary of one invocation."""
        return self.paths.results / f"run_summary_{self.dataset}.json"

    @property
    def run_manifest(self) -> Path:
        """``results/run_manifest_{dataset}.json``: what the steps wrote (:class:`Manifest`)."""
        return self.paths.results / f"run_manifest_{self.dataset}.json"

    @property
    def lock(self) -> Path:
        """``logs/run_{dataset}.lock``: the dataset's run lock."""
        return self.paths.logs / f"run_{self.dataset}.lock"

    def run_log(self, stamp: str) -> Path:
        """``logs/run_{dataset}_{stamp}.log``: the entry point's log (runpod_main.py)."""
        return self.paths.logs / f"run_{self.dataset}_{stamp}.log"

    def train_log(self, stamp: str) -> Path:
        """``logs/train_{dataset}_{stamp}.log``: the driver's log (runpod_train.py)."""
        return self.paths.logs / f"train_{self.dataset}_{stamp}.log"

    def orphan_log(self, stamp: str) -> Path:
        """``logs/train_{dataset}_{stamp}_parent_gone.log``: the driver's output after its entry
        point died."""
        return self.paths.logs / f"train_{self.dataset}_{stamp}_parent_gone.log"

    @property
    def plot_glob(self) -> str:
        """``*{dataset}*.png``: how the final report lists this dataset's plots in ``results/``."""
        return f"*{self.dataset}*.png"

    def plots(self) -> list[Path]:
        """The PNG files in ``results/`` whose name contains the dataset name, sorted."""
        if not self.paths.results.is_dir():
            return []
        return sorted(self.paths.results.glob(self.plot_glob))

    def manifest(self, run: str | None = None) -> Manifest:
        """This dataset's :class:`Manifest`; records made through it carry ``run``."""
        return Manifest(self.run_manifest, self.paths.root, dataset=self.dataset, run=run)


# ================================================================ the run manifest


@dataclass(frozen=True)
class Kind:
    """What a manifest ``kind`` means to the push step."""

    pushed: bool
    """Step 8 commits files of this kind."""
    live: bool
    """Still changes after it is recorded (a log being written, the run summary's final
    status): its sha256/size are those at record time and are not compared later."""
    what: str


KINDS: dict[str, Kind] = {
    "classifier_model": Kind(True, False, "a classifier's main model file"),
    "fold_model": Kind(True, False, "a walk-forward model that predicts one fold"),
    "classifier_ckpt": Kind(False, False, "a classifier's per-epoch checkpoint"),
    "config": Kind(True, False, "the resolved config written beside a model"),
    "scaler": Kind(True, False, "the dataset's train-block scaler"),
    "metrics": Kind(True, False, "a classifier's metrics vs the baselines"),
    "history": Kind(True, False, "a classifier's per-epoch history"),
    "plot": Kind(True, False, "a PNG (training curves or backtest)"),
    "training_summary": Kind(True, False, "step 5's summary of every model"),
    "prediction_table": Kind(True, False, "the predictions the agent's environment reads"),
    "ppo_model": Kind(True, False, "the final PPO agent"),
    "ppo_meta": Kind(True, False, "the final agent's metadata"),
    "ppo_checkpoint": Kind(False, False, "a PPO checkpoint (resume only)"),
    "ppo_best_model": Kind(False, False, "the PPO model best on the validation block"),
    "ppo_checkpoint_meta": Kind(False, False, "checksums, best score or run config of a folder"),
    "tensorboard": Kind(True, False, "a TensorBoard event file"),
    "backtest": Kind(True, False, "the test-block backtest report"),
    "run_summary": Kind(True, True, "the driver's run summary"),
    "log": Kind(True, True, "a log file"),
}
"""The manifest's ``kind`` vocabulary; the module docstring's table says which path has which."""

STEP_CLASSIFIERS = "train_models"
STEP_VALIDATE = "validate_models"
STEP_AGENT = "train_ppo_agent"
STEP_PUSH = "push"
STEP_DRIVER = "runpod_train"
STEP_ENTRY = "runpod_main"
STEPS: frozenset[str] = frozenset(
    {STEP_CLASSIFIERS, STEP_VALIDATE, STEP_AGENT, STEP_PUSH, STEP_DRIVER, STEP_ENTRY}
)
"""Who may record an entry: the step functions (5, 6, 7, 8), the driver and the entry point."""

WRITTEN = "written"
UP_TO_DATE = "up_to_date"
STATUSES: frozenset[str] = frozenset({WRITTEN, UP_TO_DATE})
"""``written`` by the recording step, or found ``up_to_date`` and kept (still pushed)."""

MANIFEST_FORMAT = 1

_lock = threading.RLock()  # one process-wide lock for every manifest's read-merge-write


class ManifestError(PipelineError):
    """The manifest file cannot be read, or a path cannot be recorded in it."""


@dataclass(frozen=True)
class ManifestEntry:
    """One recorded artifact; ``path`` is relative to the artifact root, with ``/``."""

    path: str
    kind: str
    step: str
    status: str
    sha256: str
    size: int
    recorded_utc: str
    run: str | None = None

    def absolute(self, root: Path) -> Path:
        """The file under ``root``."""
        return Path(root) / self.path

    def to_dict(self) -> dict[str, Any]:
        """The entry as the manifest file stores it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ManifestEntry:
        """Parse one entry; raises ``ValueError`` saying what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError(f"entry {data!r} is not an object")
        strings = ("path", "kind", "step", "status", "sha256", "recorded_utc")
        bad = [k for k in strings if not isinstance(data.get(k), str) or not data[k]]
        if bad or not isinstance(data.get("size"), int) or isinstance(data.get("size"), bool):
            what = ", ".join(bad or ["size"])
            raise ValueError(f"entry {data.get('path')!r} has no valid {what}")
        if data["kind"] not in KINDS:
            raise ValueError(
                f"entry {data['path']!r} has kind {data['kind']!r}; expected one of "
                f"{', '.join(KINDS)}"
            )
        if data["status"] not in STATUSES:
            raise ValueError(f"entry {data['path']!r} has status {data['status']!r}")
        rel = Path(data["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"entry path {data['path']!r} is not inside the artifact root")
        run = data.get("run")
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name != "run"}
        return cls(**fields, run=run if isinstance(run, str) else None)


class Manifest:
    """The dataset's record of the artifacts its steps wrote or kept (module docstring).

    Nothing is cached: each call reads the file, so every object on the same file sees every
    record. ``run`` (e.g. the driver's start time, as in the run summary) is stored with each
    entry this object records; ``None`` for a step run by hand.
    """

    def __init__(
        self,
        path: str | Path,
        root: str | Path,
        *,
        dataset: str | None = None,
        run: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.root = Path(root)
        self.dataset = dataset_name(dataset) if dataset else None
        self.run = run

    @classmethod
    def load(
        cls,
        path: str | Path,
        root: str | Path,
        *,
        dataset: str | None = None,
        run: str | None = None,
    ) -> Manifest:
        """A manifest on ``path`` whose file (if any) is checked now: an unreadable one raises
        :class:`ManifestError` here rather than at the first record."""
        manifest = cls(path, root, dataset=dataset, run=run)
        manifest._read()
        return manifest

    # ------------------------------------------------------------ reading and writing

    def _read(self) -> dict[str, ManifestEntry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error(f"cannot read it ({exc})") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._error(f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
            raise self._error('expected a JSON object with a list "entries"')
        if self.dataset is None and isinstance(doc.get("dataset"), str):
            self.dataset = doc["dataset"]
        entries: dict[str, ManifestEntry] = {}
        for raw in doc["entries"]:
            try:
                entry = ManifestEntry.from_dict(raw)
            except ValueError as exc:
                raise self._error(str(exc)) from None
            entries[entry.path] = entry
        return entries

    def _error(self, what: str) -> ManifestError:
        return ManifestError(
            f"{self.path}: unreadable run manifest: {what}; delete it and rerun the steps "
            "(with --resume) so they record their artifacts again"
        )

    def _write(self, entries: dict[str, ManifestEntry]) -> None:
        doc = {
            "format": MANIFEST_FORMAT,
            "dataset": self.dataset,
            "updated_utc": _now_utc(),
            "entries": [entries[k].to_dict() for k in sorted(entries)],
        }
        atomic_write_json(self.path, doc)

    def _relative(self, path: str | Path) -> str:
        """``path`` (absolute, or relative to the root) as a ``/`` path relative to the root."""
        given = Path(path)
        full = given if given.is_absolute() else self.root / given
        # Lexical first (keeps a symlinked root as the caller spelled it), then resolved.
        pairs = (
            (Path(os.path.normpath(full.absolute())), Path(os.path.normpath(self.root.absolute()))),
            (full.resolve(), self.root.resolve()),
        )
        for candidate, base in pairs:
            try:
                return candidate.relative_to(base).as_posix()
            except ValueError:
                continue
        raise ManifestError(
            f"{path}: cannot record it in {self.path}: not under the artifact root {self.root}"
        )

    # ------------------------------------------------------------ recording

    def record(
        self, path: str | Path, kind: str, step: str, *, status: str = WRITTEN
    ) -> ManifestEntry:
        """Record one file (its sha256 and size now) and rewrite the manifest; returns the entry.

        ``path`` is absolute or relative to the root; ``status`` is :data:`WRITTEN` or
        :data:`UP_TO_DATE` (a skipped, still current artifact: listed, and so pushed, all the
        same).
        """
        return self.record_many([(path, kind)], step, status=status)[0]

    def record_many(
        self,
        items: Iterable[tuple[str | Path, str]],
        step: str,
        *,
        status: str = WRITTEN,
    ) -> list[ManifestEntry]:
        """Record several ``(path, kind)`` files with one rewrite of the manifest."""
        if step not in STEPS:
            raise ValueError(f"step {step!r}; expected one of {', '.join(sorted(STEPS))}")
        if status not in STATUSES:
            raise ValueError(f"status {status!r}; expected one of {', '.join(sorted(STATUSES))}")
        new: list[ManifestEntry] = []
        for path, kind in items:
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r}; expected one of {', '.join(KINDS)}")
            rel = self._relative(path)
            file = self.root / rel
            try:
                if file.is_dir():
                    raise ManifestError(
                        f"{file}: is a folder; record the files in it (record_tree)"
                    )
                size = file.stat().st_size
                sha = sha256_file(file)
            except FileNotFoundError:
                raise ManifestError(
                    f"{file}: cannot record it in {self.path}: file not found"
                ) from None
            new.append(ManifestEntry(rel, kind, step, status, sha, size, _now_utc(), self.run))
        if not new:
            return []
        with _lock:
            entries = self._read()
            entries.update((e.path, e) for e in new)
            self._write(entries)
        return new

    def record_tree(
        self,
        folder: str | Path,
        kind: str,
        step: str,
        *,
        pattern: str = "*",
        status: str = WRITTEN,
    ) -> list[ManifestEntry]:
        """Record every file below ``folder`` matching ``pattern`` (e.g. a TensorBoard run folder
        with :data:`TENSORBOARD_EVENTS_GLOB`); hidden files and ``.tmp`` files are left out."""
        root = Path(folder)
        files = sorted(
            p
            for p in (root.rglob(pattern) if root.is_dir() else [])
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")
        )
        return self.record_many([(p, kind) for p in files], step, status=status)

    def forget(self, *paths: str | Path) -> list[ManifestEntry]:
        """Drop the entries of ``paths`` (e.g. pruned checkpoints); returns those dropped."""
        rels = {self._relative(p) for p in paths}
        with _lock:
            entries = self._read()
            dropped = [entries.pop(r) for r in sorted(rels) if r in entries]
            if dropped:
                self._write(entries)
        return dropped

    def prune_missing(self) -> list[ManifestEntry]:
        """Drop the entries whose file no longer exists; returns those dropped."""
        with _lock:
            entries = self._read()
            dropped = [e for e in entries.values() if not e.absolute(self.root).is_file()]
            for e in dropped:
                del entries[e.path]
            if dropped:
                self._write(entries)
        return dropped

    # ------------------------------------------------------------ reading back

    def entries(self, kind: str | None = None, step: str | None = None) -> list[ManifestEntry]:
        """The recorded entries (of ``kind`` / ``step`` when given), sorted by path."""
        with _lock:
            found = self._read()
        return [
            e
            for _, e in sorted(found.items())
            if (kind is None or e.kind == kind) and (step is None or e.step == step)
        ]

    def missing(self) -> list[ManifestEntry]:
        """Entries whose file is gone."""
        return [e for e in self.entries() if not e.absolute(self.root).is_file()]

    def changed(self) -> list[ManifestEntry]:
        """Entries of kinds that do not change after recording whose file now differs (size or
        sha256) from what was recorded: rewritten by something that did not record it."""
        out = []
        for e in self.entries():
            file = e.absolute(self.root)
            if KINDS[e.kind].live or not file.is_file():
                continue
            if file.stat().st_size != e.size or sha256_file(file) != e.sha256:
                out.append(e)
        return out

    def push_files(self) -> list[Path]:
        """What step 8 commits: the existing files of pushed kinds, plus the manifest itself."""
        files = [
            e.absolute(self.root)
            for e in self.entries()
            if KINDS[e.kind].pushed and e.absolute(self.root).is_file()
        ]
        if self.path.is_file():
            files.append(self.path)
        return sorted(set(files))


def _now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
