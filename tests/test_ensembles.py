"""ensemble_method = mean | weighted | stacking, fitted on out-of-fold agent-train rows, chosen on
agent-val rows against the mean and each member alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.classifiers.ensembles import (
    beats_members,
    combine,
    fit_ensemble,
    is_combination,
    select_weights,
)


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


def _voters(n: int = 3000, k: int = 3, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``k`` independent members, each right on about 2/3 of the rows with random confidence:
    their mean is right more often than any one of them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    out = []
    for _ in range(k):
        p = rng.dirichlet(np.ones(3), size=n) * 0.5
        guess = np.where(rng.random(n) < 0.5, y, rng.integers(0, 3, size=n))
        p[np.arange(n), guess] += 0.5
        out.append(p)
    return np.stack(out), y


@pytest.mark.unit
def test_auto_tries_both_fits_the_mean_and_each_member_alone() -> None:
    """``prediction_model = auto`` considers the ensembles; a combination is used only where it
    beats every member alone on the validation rows."""
    probs, y, blocks = _members()
    fit = fit_ensemble(["good", "noise"], probs, y, blocks, "auto")
    assert fit["candidates"] == ["weighted", "mean", "good alone", "noise alone"]
    assert set(fit["candidate_val_macro_f1"]) == set(fit["candidates"])
    # weighted voting puts every weight on "good": that is "good" alone, not a combination
    assert fit["weights"] == [1.0, 0.0] and not is_combination(fit)

    votes, y3 = _voters()
    fit = fit_ensemble(["a", "b", "c"], votes, y3, blocks, "auto")
    val = fit["scores"]["val"]
    assert is_combination(fit) and fit["choice"] in ("weighted", "mean")
    assert val["ensemble"] > max(val["a"], val["b"], val["c"]) + 0.05
    # 750 agent-val rows, labels over 5 bars: one s.e. is 0.038, the gain is larger
    assert fit["val_rows"] == 750 and beats_members(fit, 5)
    # the same gain on rows that overlap 50 bars is within one s.e. (0.12): not used
    assert not beats_members(fit, 50)


@pytest.mark.unit
def test_the_ensembles_margin_is_the_paired_standard_error_of_its_lead() -> None:
    """With the labels' horizon, the fit keeps the paired s.e. of the ensemble's lead over each
    member on the agent-val rows, and :func:`beats_members` weighs the lead by it (issue 17)."""
    from pipeline.classifiers.metrics import paired_macro_f1_standard_errors
    from pipeline.classifiers.report import macro_f1_standard_error

    votes, y3 = _voters()
    _, _, blocks = _members()
    fit = fit_ensemble(["a", "b", "c"], votes, y3, blocks, "auto", horizon=5)
    assert is_combination(fit) and fit["lead_horizon"] == 5
    rows = blocks == "val"
    preds = {"ensemble": combine(votes[:, rows], fit).argmax(1)}
    preds |= {m: votes[i, rows].argmax(1) for i, m in enumerate("abc")}
    want = paired_macro_f1_standard_errors(y3[rows], preds, "ensemble", 50)
    assert fit["val_lead_standard_errors"] == pytest.approx({m: want[m] for m in "abc"})
    # the members and the ensemble read the same labels: the lead's s.e. is well under a score's
    single = macro_f1_standard_error(750, 5)
    assert max(fit["val_lead_standard_errors"].values()) < 0.8 * single
    assert beats_members(fit, 5)
    # no horizon, or one member alone chosen: nothing kept, the single-score rule stands
    no_horizon = fit_ensemble(["a", "b", "c"], votes, y3, blocks, "auto")
    assert "val_lead_standard_errors" not in no_horizon
    probs, y, _ = _members()
    assert "val_lead_standard_errors" not in fit_ensemble(
        ["good", "noise"], probs, y, blocks, "auto", horizon=5
    )


@pytest.mark.unit
def test_a_lead_inside_one_score_s_e_but_outside_the_paired_one_is_used() -> None:
    """A lead of 0.02 over the best member on 750 rows of 5-bar labels: one score's s.e. is 0.038,
    so the single-score rule refuses it; the paired s.e. of that lead is 0.010, so it is used, and
    only if it clears every member's own paired s.e."""
    fit: dict[str, Any] = {
        "kind": "weights",
        "weights": [0.5, 0.5],
        "val_rows": 750,
        "scores": {"val": {"a": 0.40, "b": 0.37, "ensemble": 0.42}},
        "val_lead_standard_errors": {"a": 0.010, "b": 0.030},
        "lead_horizon": 5,
    }
    assert beats_members(fit, 5)
    assert not beats_members({**fit, "val_lead_standard_errors": {"a": 0.025, "b": 0.03}}, 5)
    assert not beats_members({**fit, "val_lead_standard_errors": {"a": 0.01, "b": 0.06}}, 5)
    # kept for another horizon, for other members, or absent: the single-score s.e. (0.038)
    assert not beats_members(fit, 3)
    assert not beats_members({**fit, "val_lead_standard_errors": {"a": 0.01}}, 5)
    assert not beats_members({k: v for k, v in fit.items() if k != "lead_horizon"}, 5)


@pytest.mark.unit
def test_the_ensemble_line_shows_the_lead_and_its_paired_s_e() -> None:
    from pipeline.classifiers.prediction_table import ensemble_line

    fit: dict[str, Any] = {
        "kind": "weights",
        "weights": [0.5, 0.5],
        "members": ["a", "b"],
        "method": "auto",
        "choice": "weighted",
        "scores": {
            "val": {"a": 0.40, "b": 0.37, "ensemble": 0.42},
            "test": {"a": 0.4, "b": 0.4, "ensemble": 0.39},
        },
        "val_lead_standard_errors": {"a": 0.011, "b": 0.03},
    }
    line = ensemble_line(fit)
    assert "val macro-F1 0.420 vs best member 0.400 (lead +0.020, paired s.e. 0.011)" in line
    assert line.endswith("test macro-F1 0.390 vs best member 0.400")
    del fit["val_lead_standard_errors"]
    assert "paired" not in ensemble_line(fit)


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
    train_models.train_classifiers(cfg, "EN", Paths.from_root(tmp_path))
    fit = json.loads((tmp_path / "results" / "ensemble_EN.json").read_text())
    assert fit["method"] == "weighted" and fit["members"] == ["dlstm", "bilstm"]
    if is_combination(fit):  # step 5 hands the labels' horizon on: the report keeps the lead's s.e.
        assert fit["lead_horizon"] == 5 and set(fit["val_lead_standard_errors"]) == {
            "dlstm",
            "bilstm",
        }
    table = pd.read_csv(tmp_path / "results" / "predictions_ensemble_EN.csv")
    cols = ["p_fall", "p_stationary", "p_rise"]
    members = np.stack([table[[f"{c}_{m}" for c in cols]].to_numpy() for m in fit["members"]])
    assert np.allclose(table[cols].to_numpy(), combine(members, fit), atol=1e-9)
    val = fit["scores"]["val"]
    assert val["ensemble"] >= max(val["dlstm"], val["bilstm"])


@pytest.mark.integration
def test_auto_fits_the_ensembles_over_every_walk_forward_table(
    tmp_path: Path, write_dataset: Any, smoke_config: Any
) -> None:
    """With ``prediction_model = auto`` step 5 fits the ensembles over every model's out-of-fold
    table, records the comparison in the training summary, and step 7 and the live predictor use
    exactly what it chose."""
    import pandas as pd

    import train_models
    from pipeline.classifiers.model_choice import resolve_prediction_model
    from pipeline.classifiers.predictors import EnsemblePredictionModel, PredictionModel
    from pipeline.classifiers.prepare import load_classifier_data
    from pipeline.common import Paths
    from pipeline.store.artifacts import Artifacts

    write_dataset(tmp_path, "AU", signal=1.0, seed=3)
    paths = Paths.from_root(tmp_path)
    cfg = smoke_config("leak_controls=false", "prediction_model=auto")
    summary = train_models.train_classifiers(cfg, "AU", paths, ["gru", "logreg", "lightgbm"])
    ens = summary["auto_ensemble"]
    assert ens is not None and ens["members"] == ["gru", "logreg", "lightgbm"]
    assert ens["candidates"][:2] == ["weighted", "mean"]
    val = ens["scores"]["val"]
    best_alone = max(val[m] for m in ens["members"])
    horizon = summary["models"]["gru"]["label_horizon"]
    assert ens["used"] == beats_members(ens, horizon)
    if is_combination(ens):  # the paired margin, for the labels' horizon, over every model
        assert ens["lead_horizon"] == horizon
        assert set(ens["val_lead_standard_errors"]) == set(ens["members"])
    assert val["ensemble"] >= best_alone  # by construction
    resolved, why = resolve_prediction_model(cfg, paths, "AU")
    art = Artifacts(paths, "AU")
    if ens["used"]:
        assert resolved.ppo.prediction_model == "ensemble" and why.startswith("ensemble of")
        assert resolved.ppo.ensemble_models == ("gru", "logreg", "lightgbm")
        assert json.loads(art.ensemble_report.read_text())["choice"] == ens["choice"]
        table = pd.read_csv(art.prediction_table("ensemble"))
        cols = ["p_fall", "p_stationary", "p_rise"]
        members = np.stack([table[[f"{c}_{m}" for c in cols]].to_numpy() for m in ens["members"]])
        assert np.allclose(table[cols].to_numpy(), combine(members, ens), atol=1e-5)
        # the live predictor combines its members as the report says, not by the mean
        prep = load_classifier_data(cfg.training, "AU", paths, save_scaler=False)
        window = prep.arrays.features[-cfg.training.lookback :]
        live = EnsemblePredictionModel("AU", ens["members"], paths).predict(window)[2]
        alone = np.stack(
            [PredictionModel(m, "AU", paths).predict(window)[2][None] for m in ens["members"]]
        )
        assert np.allclose(live, combine(alone, ens)[0], atol=1e-6)
    else:
        assert resolved.ppo.prediction_model in ens["members"]
        assert "ensemble" not in summary["prediction_tables"]
