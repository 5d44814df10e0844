"""Issue 17 item 2: ensemble_method = mean | weighted | stacking, fitted on out-of-fold agent-train
rows, chosen on agent-val rows against the mean and each member alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.ensembles import combine, fit_ensemble, select_weights


def _members(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two members on labels y: ``good`` is right on 60 % of rows, ``noise`` on a third."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    good = np.full((n, 3), 0.2)
    right = rng.random(n) < 0.6
    guess = np.where(right, y, rng.integers(0, 3, size=n))
    good[np.arange(n), guess] = 0.6
    noise = rng.dirichlet(np.ones(3), size=n)
    blocks = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    return np.stack([good, noise]), y, blocks


@pytest.mark.unit
def test_selection_weighs_the_informative_member() -> None:
    probs, y, _ = _members()
    w = select_weights(probs, y)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.8


@pytest.mark.unit
@pytest.mark.parametrize("method", ["weighted", "stacking"])
def test_the_ensemble_scores_at_least_its_best_member_on_validation(method: str) -> None:
    probs, y, blocks = _members()
    fit = fit_ensemble(["good", "noise"], probs, y, blocks, method)
    val = fit["scores"]["val"]
    assert val["ensemble"] >= max(val["good"], val["noise"])  # by construction
    assert fit["candidates"][0] == method and "good alone" in fit["candidates"]
    assert set(fit["scores"]) == {"val", "test"}  # the test score is reported, not used
    p = combine(probs, fit)
    assert p.shape == (len(y), 3) and np.allclose(p.sum(axis=1), 1.0)
    json.dumps(fit)  # JSON-ready: weights or coefficients, no pickle


@pytest.mark.unit
def test_mean_is_the_plain_average() -> None:
    probs, y, blocks = _members()
    fit = fit_ensemble(["good", "noise"], probs, y, blocks, "mean")
    assert fit["choice"] == "mean" and fit["weights"] == [0.5, 0.5]
    assert np.allclose(combine(probs, fit), probs.mean(axis=0))


@pytest.mark.integration
def test_weighted_ensemble_table_uses_the_reported_weights(
    tmp_path: Path, write_dataset: Any, signal_config: Any
) -> None:
    import pandas as pd

    import train_models
    from pipeline.common import Paths

    write_dataset(tmp_path, "EN", signal=1.0, seed=3)
    cfg = signal_config("ensemble_method=weighted", "leak_controls=false")
    train_models.train_all(cfg, "EN", Paths.from_root(tmp_path))
    fit = json.loads((tmp_path / "results" / "ensemble_EN.json").read_text())
    assert fit["method"] == "weighted" and fit["members"] == ["dlstm", "bilstm"]
    table = pd.read_csv(tmp_path / "results" / "predictions_ensemble_EN.csv")
    cols = ["p_fall", "p_stationary", "p_rise"]
    members = np.stack([table[[f"{c}_{m}" for c in cols]].to_numpy() for m in fit["members"]])
    assert np.allclose(table[cols].to_numpy(), combine(members, fit), atol=1e-9)
    val = fit["scores"]["val"]
    assert val["ensemble"] >= max(val["dlstm"], val["bilstm"])
