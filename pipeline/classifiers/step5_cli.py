"""Step 5's command line (``train_models.py``): its parser, and what an interrupt says: what is on
disk and the command to run next."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from pipeline.common import CliParser, Paths, TrainingInterrupted
from pipeline.config.files import add_config_args
from pipeline.config.schema import MODEL_NAMES
from pipeline.store.artifacts import Artifacts


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of step 5 (usage errors exit 1)."""
    p = CliParser(
        prog="train_models.py",
        description="Step 5: train the LSTM / GRU / BiLSTM / DLSTM classifiers on one dataset, "
        "report test metrics against chance and a logistic-regression baseline and write the "
        "agent's prediction tables.",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name (datasets/NAME.csv under --root) or a path to an OHLCV CSV",
    )
    p.add_argument(
        "--models",
        help="comma-separated models to train (lstm,gru,bilstm,dlstm); default: the ensemble "
        "members when ppo_config.txt has prediction_model = ensemble, else all four",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="retrain even when a model file with the same dataset and config hash exists",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted trainings from their last epoch checkpoint "
        "(models/checkpoints/); gives the same result as an uninterrupted run",
    )
    p.add_argument(
        "--root",
        type=Path,
        help="folder holding datasets/, models/, scalers/, results/ (default: $PIPELINE_HOME "
        "or the project folder)",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging (one line per epoch)")
    add_config_args(p)
    return p


def _resume_command(argv: list[str]) -> str:
    args = [a for a in argv if a != "--resume"] + ["--resume"]
    return shlex.join(["python", "train_models.py", *args])


def interrupt_hint(message: str, has_checkpoint: bool, argv: list[str]) -> str:
    """The interrupt's message plus the command to run next; a resume only when it can resume.

    Without a checkpoint, "resume" would be a false promise.
    """
    if has_checkpoint:
        return f"{message}; resume with: {_resume_command(argv)}"
    return f"{message}; rerun with: {shlex.join(['python', 'train_models.py', *argv])}"


def interrupted_outside_epoch(paths: Paths, dataset: str) -> TrainingInterrupted:
    """An interrupt of step 5 outside a training epoch (data preparation, saving, prediction
    tables), said as what is on disk rather than assumed."""
    pending = Artifacts(paths, dataset).pending_classifier_checkpoints(MODEL_NAMES)
    where = "train_models interrupted outside a training epoch; model files saved "
    if pending:
        what = f"{where}before it are kept, checkpoints kept: {', '.join(map(str, pending))}"
    else:
        what = f"{where}before it are kept; no checkpoint is pending"
    return TrainingInterrupted(what, pending[0] if pending else None)


def reworded(exc: TrainingInterrupted, message: str) -> TrainingInterrupted:
    """``exc`` said with ``message``: the same checkpoint, epochs and model."""
    return TrainingInterrupted(message, exc.checkpoint_path, exc.last_epoch, exc.epoch, exc.what)
