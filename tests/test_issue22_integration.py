"""Issue 22 (defects found running the pipeline as a new user, under faults and hostile input):
the integration-tier checks (training, subprocesses, signals)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import train_models

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- item 4: kill before metrics


def test_a_kill_between_model_file_and_metrics_resumes_from_the_last_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_dataset: Any
) -> None:
    write_dataset(tmp_path, "TINY", signal=0.5, seed=3, n=1500)
    args = ["--dataset", "TINY", "--root", str(tmp_path), "--preset", "smoke", "--models", "gru"]
    args += ["--set", "num_threads=1", "--set", "training.device=cpu", "--set", "epochs=2"]
    args += ["--set", "patience=5", "--set", "ppo_prediction_source=in_sample"]
    real_write = train_models.atomic_write_json

    class Killed(BaseException):
        """Stands for kill -9 right before the metrics file is written."""

    def dying_write(path: Path, obj: Any) -> Path:
        if Path(path).name.startswith("metrics_"):
            raise Killed
        return real_write(path, obj)

    monkeypatch.setattr(train_models, "atomic_write_json", dying_write)
    with pytest.raises(Killed):
        train_models.main(args)
    ckpts = list((tmp_path / "models" / "checkpoints").glob("*gru*"))
    assert ckpts, "the finished model's checkpoint must survive until its metrics are written"
    monkeypatch.setattr(train_models, "atomic_write_json", real_write)
    assert train_models.main([*args, "--resume"]) == 0
    metrics = json.loads(next((tmp_path / "results").glob("metrics_gru*.json")).read_text())
    assert metrics["resumed_from_epoch"] == 2
    assert not list((tmp_path / "models" / "checkpoints").glob("*gru*"))
