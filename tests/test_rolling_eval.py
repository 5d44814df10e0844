"""Rolling-origin evaluation. The folds tile the single evaluation's test stretch, each fold trains
only on bars before its test block, and the report's distribution is computed from the folds' own
backtests."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

import rolling_eval
from pipeline.common import Paths, PipelineError
from pipeline.config.files import load_config
from pipeline.data.features import warmup_bars
from pipeline.data.splits import make_splits


def _splits(rows: int, cfg: Any) -> Any:
    t = cfg.training
    warm = warmup_bars(t.resolved_features())
    return make_splits(
        rows, warm, t.lookback, t.smoothing_k, t.test_fraction, t.val_fraction, t.purge_gap,
        t.walk_forward_folds,
    )  # fmt: skip


@pytest.mark.unit
@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_tile_the_test_stretch_and_train_only_before_it(k: int) -> None:
    cfg = load_config(None, None, "smoke", [])
    n = 6000
    full = _splits(n, cfg)
    folds = rolling_eval.origin_folds(n, cfg, k)
    assert [f.index for f in folds] == list(range(1, k + 1))
    # The agents' test blocks [test_start, rows) tile the single evaluation's stretch.
    assert folds[0].test_start == full.test.start and folds[-1].rows == n
    assert all(a.rows == b.test_start for a, b in zip(folds, folds[1:], strict=False))
    for f in folds:
        s = _splits(f.rows, rolling_eval.fold_config(cfg, f))  # step 5 on the cut CSV
        assert (s.test.start, s.test.stop) == (f.test_start, f.rows - 5)  # labelled bars
        assert s.val.stop + s.purge <= s.test.start and s.train.stop + s.purge <= s.val.start
        assert s.dev.stop <= f.test_start - s.purge  # nothing it trains on reaches the test


@pytest.mark.unit
def test_too_many_folds_is_one_clear_error() -> None:
    cfg = load_config(None, None, "smoke", [])
    with pytest.raises(PipelineError, match=r"rolling_folds = 40: the test stretch has \d+ bars"):
        rolling_eval.origin_folds(3000, cfg, 40)


@pytest.mark.integration
def test_rolling_run_reports_each_block_and_the_distribution(
    tmp_path: Path, write_dataset: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    write_dataset(tmp_path, "RO", signal=0.5, seed=2)
    cfg = load_config(None, None, "smoke", ["num_threads=1", "rolling_folds=2"])
    result = rolling_eval.run_rolling(cfg, "RO", Paths.from_root(tmp_path))
    on_disk = json.loads((tmp_path / "results" / "rolling_RO.json").read_text())
    assert on_disk["folds"] == json.loads(json.dumps(result["folds"]))
    folds = result["folds"]
    assert [f["fold"] for f in folds] == [1, 2]
    assert folds[0]["test_bars"][1] == folds[1]["test_bars"][0]  # consecutive, no overlap
    assert folds[0]["test_end"] < folds[1]["test_start"]
    for f in folds:  # each fold's numbers are its own backtest's
        report = json.loads(
            (
                tmp_path / "results" / f"backtest_{f['classifier']}_RO-origin{f['fold']}.json"
            ).read_text()
        )
        agent = report["strategies"]["agent"]
        assert f["agent_total_return"] == pytest.approx(agent["total_return"])
        assert report["blocks"]["test"]["first_bar"] == f["test_bars"][0]
    returns = [f["agent_total_return"] for f in folds]
    d = result["distribution"]
    assert d["agent"]["median"] == pytest.approx(statistics.median(returns))
    assert (d["agent"]["min"], d["agent"]["max"]) == (min(returns), max(returns))
    assert d["agent_positive"] == sum(r > 0 for r in returns)
    out = capsys.readouterr().out
    assert "rolling origin, 2 test blocks: agent median " in out


@pytest.mark.integration
def test_driver_runs_the_rolling_evaluation_in_step_7(tmp_path: Path, write_dataset: Any) -> None:
    """``evaluation = rolling``: step 7 runs the single evaluation, then the folds; its row and
    the run summary carry the distribution."""
    import runpod_train

    write_dataset(tmp_path, "RD", signal=0.5, seed=4)
    argv = ["--dataset", "RD", "--root", str(tmp_path), "--no-log-file", "--steps", "5,7"]
    argv += ["--preset", "smoke", "--set", "num_threads=1", "--set", "evaluation=rolling"]
    assert runpod_train.main([*argv, "--set", "rolling_folds=2"]) == 0
    summary = json.loads((tmp_path / "results" / "run_summary_RD.json").read_text())
    step7 = next(s for s in summary["steps"] if s["number"] == 7)
    assert "; rolling origin, 2 test blocks: agent median " in step7["result"]
    rolling = json.loads((tmp_path / "results" / "rolling_RD.json").read_text())
    assert summary["rolling"] == rolling["distribution"]
    assert rolling["distribution"]["folds"] == 2
