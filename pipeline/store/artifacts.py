"""Every artifact's path, the one rule that names a dataset, and the per-run manifest.

This module is the only place that spells an artifact's file name: steps ask an :class:`Artifacts`
for a path instead of writing an f-string, and record what they wrote in the dataset's
:class:`pipeline.store.manifest.Manifest`, which the push step reads instead of globbing.

Artifacts of dataset ``{dataset}`` (:func:`dataset_name`), under the artifact root
(:class:`pipeline.common.Paths`); *step* = who writes it (5 = ``train_models``, 7 =
``train_ppo_agent``, driver = ``runpod_train``, entry = ``runpod_main``), *pushed* = whether step 8
commits it (:data:`pipeline.store.manifest.KINDS`). The table is Markdown, for docs to copy:

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
| `results/predictions_{model}_{dataset}.json` | prediction_table | 5 | yes |
| `results/ensemble_{dataset}.json` | ensemble | 5 | yes |
| `results/rolling_{dataset}.json` | (not recorded) | rolling_eval | no |
| `results/rolling_{dataset}/{dataset}-origin{j}.csv` | (not recorded) | rolling_eval | no |
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
| `exports/{dataset}/{file}` | export | 7 | yes |
| `results/run_summary_{dataset}.json` | run_summary | driver | yes |
| `results/run_manifest_{dataset}.json` | (the manifest) | every step | yes |
| `logs/train_{dataset}_{stamp}.log` | log | driver | yes |
| `logs/train_{dataset}_{stamp}_parent_gone.log` | log | driver | yes |
| `logs/run_{dataset}_{stamp}.log` | log | entry | yes |
| `logs/run_{dataset}.lock` | (not recorded) | driver, step_lock | no |
| `results/multi_run_summary.json` | (no dataset's) | entry, several datasets | yes |
| `results/multi_run_summary.png` | (no dataset's) | entry, several datasets | yes |
| `runs/{dataset}/{n}/...` + `archive.json` | (not recorded: an earlier run) | driver | no |
| `results/tuning_{stage}_{dataset}/[{model}/]{file}` | (not recorded) | tune.py | no |

``{model}`` is a classifier name (``lstm``, ...) or, for prediction tables, PPO models, checkpoint
folders and backtests, the agent's ``prediction_model`` (which may be ``ensemble``); ``{tag}`` is
``main`` or ``fold{k}``; ``{stamp}`` is :func:`log_stamp`; ``{n}`` is the TensorBoard run number
Stable-Baselines3 appends. ``.previous_run/`` inside a PPO checkpoint folder holds an earlier run's
files while a fresh run has not yet written its first checkpoint; ``scalers/scaler_{dataset}.pkl``
(older versions) is never written, loaded nor pushed.

The run manifest (``results/run_manifest_{dataset}.json``, beside the run summary) lives in
:mod:`pipeline.store.manifest` (:meth:`Artifacts.manifest` opens it); its ``kind`` vocabulary is
:data:`pipeline.store.manifest.KINDS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipeline.common import Paths, PipelineError
from pipeline.store.manifest import Manifest

# ================================================================ the dataset name rule


DATASET_SUFFIX = ".csv"
"""The suffix of a dataset file; a dataset name ``NAME`` is the file ``datasets/NAME.csv``."""


def dataset_name(dataset: str) -> str:
    """Artifact name of a dataset given as a name or a CSV path (folder and ``.csv`` dropped).

    ``BTC_1h`` -> ``BTC_1h``; ``/data/ETH.csv`` -> ``ETH``; ``x/SOL.CSV`` -> ``SOL``. The one rule
    for every artifact name, the run lock and the manifest.
    """
    base = Path(str(dataset).strip()).name
    return base[: -len(DATASET_SUFFIX)] if base.lower().endswith(DATASET_SUFFIX) else base


def dataset_file(folder: Path, name: str) -> Path:
    """``{folder}/{name}.csv``: where a dataset given by name is looked for (the inverse of
    :func:`dataset_name`); ``folder`` is the artifact root's ``datasets/`` or a file's folder."""
    return Path(folder) / f"{name}{DATASET_SUFFIX}"


# ---------------------------------------------------------------- several datasets


def multi_run_summary(paths: Paths) -> Path:
    """``results/multi_run_summary.json``: the cross-dataset table of the last ``runpod_main.py``
    run over several datasets (pushed with their artifacts, in no dataset's manifest)."""
    return paths.results / "multi_run_summary.json"


def multi_run_plot(paths: Paths) -> Path:
    """``results/multi_run_summary.png``: that table as one figure."""
    return paths.results / "multi_run_summary.png"


TUNING_STORAGE_NAME = "optuna.db"
"""The default study storage of ``tune.py``: an SQLite file in :meth:`Artifacts.tuning_dir`."""
TUNING_BEST_PARAMS_NAME = "best_params.txt"
"""The best trial's parameters as a ``key = value`` file (``--set-file``)."""
TUNING_HISTORY_PLOT_NAME = "optimization_history.png"
TUNING_IMPORTANCE_PLOT_NAME = "param_importances.png"
TUNING_TOP_TRIALS_NAME = "top_trials.md"
TUNING_COMMAND_NAME = "command.txt"
"""The command that runs the full pipeline with the best parameters."""
TUNING_SUMMARY_NAME = "summary.json"
TUNING_TRIALS_DIR = "trials"
"""Scratch folders of running agent trials (checkpoints of one trial; removed after it)."""


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

PPO_SEED_FINAL_MODEL_NAME = "final_model.zip"
"""In a seed's checkpoint folder (``seeds > 1``): that seed's final model; the winner's
is copied to :meth:`Artifacts.ppo_model`."""

PPO_SEED_FINAL_META_NAME = "final_model.json"
"""Beside :data:`PPO_SEED_FINAL_MODEL_NAME`: its timesteps, SHA-256 and run config (resume)."""

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


def agent_name(model: str, source: str = "walk_forward", accuracy: float = 1.0) -> str:
    """The name of an agent's artifacts: the classifier that feeds it (``dlstm``), or, for a
    diagnostic fed the future (``oracle``, ``noisy_oracle``), that model plus the source and its
    accuracy in percent (``dlstm-oracle100``, ``dlstm-noisy_oracle40``), so a diagnostic run
    never overwrites a real agent, its report or its checkpoints."""
    if source in ("oracle", "noisy_oracle"):
        return f"{model}-{source}{round(100 * float(accuracy))}"
    return model


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
        written, loaded or pushed (loading a pickle can run code)."""
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

    def prediction_meta(self, model: str) -> Path:
        """``results/predictions_{model}_{dataset}.json``: what the table's dataset is (name,
        sha256, bars, spacing, bars per year), so the agent side needs no CSV parse."""
        return self.paths.results / f"predictions_{model}_{self.dataset}.json"

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

    def ppo_seed_checkpoint_dir(self, model: str, seed: int) -> Path:
        """``ppo_approach/checkpoints/{model}_{dataset}_seed{seed}/``: one agent of a multi-seed
        run (``seeds > 1``), with its own checkpoints, best model and final model."""
        return self.paths.ppo_checkpoints / f"{self.ppo_run_name(model)}_seed{int(seed)}"

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

    def tensorboard_seed_name(self, model: str, seed: int) -> str:
        """``ppo_{model}_{dataset}_seed{seed}``: ``tb_log_name`` of one agent of several."""
        return f"{self.tensorboard_name(model)}_seed{int(seed)}"

    def tensorboard_runs(self, model: str) -> list[Path]:
        """The run folders ``ppo_approach/logs/ppo_{model}_{dataset}_{n}/`` on disk, by ``n``, then
        those of a multi-seed run's agents (``..._seed{s}_{n}/``), by seed and ``n``."""
        folder = self.tensorboard_dir
        if not folder.is_dir():
            return []
        pattern = re.compile(rf"{re.escape(self.tensorboard_name(model))}(?:_seed(\d+))?_(\d+)")
        runs = [
            (-1 if m.group(1) is None else int(m.group(1)), int(m.group(2)), p)
            for p in folder.iterdir()
            if (m := pattern.fullmatch(p.name))
        ]
        return [p for _, _, p in sorted(runs) if p.is_dir()]

    def backtest_report(self, model: str) -> Path:
        """``results/backtest_{model}_{dataset}.json``: the test-block report."""
        return self.paths.results / f"backtest_{model}_{self.dataset}.json"

    def backtest_plot(self, model: str) -> Path:
        """``results/backtest_{model}_{dataset}.png``."""
        return self.paths.results / f"backtest_{model}_{self.dataset}.png"

    # ------------------------------------------------------------ tuning (tune.py)

    def tuning_dir(self, stage: str, model: str | None = None) -> Path:
        """``results/tuning_{stage}_{dataset}/`` (the agent stage), or its ``{model}/`` folder
        (the classifier stage: one study per architecture). The default study storage
        (:data:`TUNING_STORAGE_NAME`) sits in the stage folder, the outputs
        (``TUNING_*_NAME``) in this one."""
        folder = self.paths.results / f"tuning_{stage}_{self.dataset}"
        return folder / model if model else folder

    @property
    def ensemble_report(self) -> Path:
        """``results/ensemble_{dataset}.json``: how the ensemble combines its members, and the
        members' and the ensemble's validation and test macro-F1."""
        return self.paths.results / f"ensemble_{self.dataset}.json"

    # ------------------------------------------------------------ rolling origin

    def rolling_fold_dataset(self, fold: int) -> Path:
        """``results/rolling_{dataset}/{dataset}-origin{fold}.csv``: the candles of fold ``fold``
        (cut after its test block), a dataset of its own name for steps 5 and 7."""
        return self.paths.results / f"rolling_{self.dataset}" / f"{self.dataset}-origin{fold}.csv"

    @property
    def rolling_report(self) -> Path:
        """``results/rolling_{dataset}.json``: the per-fold results and their distribution."""
        return self.paths.results / f"rolling_{self.dataset}.json"

    # ------------------------------------------------------------ driver and entry point

    @property
    def run_summary(self) -> Path:
        """``results/run_summary_{dataset}.json``: the driver's summary of one invocation."""
        return self.paths.results / f"run_summary_{self.dataset}.json"

    @property
    def export_dir(self) -> Path:
        """``exports/{dataset}/``: the trained agent exported for inference without torch
        (``export.py``; its file names belong to :mod:`ppo_approach.export_bundle`)."""
        return self.paths.root / "exports" / self.dataset

    @property
    def run_archive(self) -> Path:
        """``runs/{dataset}/``: earlier runs' files, one numbered folder each
        (:mod:`pipeline.run.archive`); never pushed."""
        return self.paths.root / "runs" / self.dataset

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
