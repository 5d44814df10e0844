"""Several datasets in one ``runpod_main.py`` run: one preflight, the driver for each dataset in
turn (going on when one fails), the cross-dataset table (console, JSON, PNG) read from the reports
of steps 5 and 7, one push of every good dataset in one commit, exit code 1 naming the datasets that
failed.

The end-to-end test runs two small synthetic datasets (smoke preset), one of them broken, in one
``runpod_main.main([...])`` call that pushes to a local bare repository. The others replace the
driver (``stream_driver``) or train nothing, and are fast.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import runpod_main
from pipeline.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PREFLIGHT,
    Paths,
)
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from pipeline.publish.push import PushConfig
from pipeline.run.multi_run import (
    DEFERRED_REASON,
    DatasetOutcome,
    best_classifier,
    dataset_row,
    format_multi_table,
    plot_multi_summary,
    push_datasets,
    split_datasets,
)
from pipeline.run.preflight import CheckResult
from pipeline.store.artifacts import Artifacts, multi_run_plot, multi_run_summary
from pipeline.store.manifest import STEP_AGENT, STEP_CLASSIFIERS

GOOD, BAD = "MULTI-GOOD_1H", "MULTI-BAD_1H"
SMOKE = ["--preset", "smoke", "--set", "num_threads=1"]
ROOM = ["--set", "min_disk_gb=0", "--set", "min_memory_gb=0"]
GITIGNORE = "/datasets/\n/models/\n/scalers/\n/results/\n/logs/\n/ppo_approach/\n"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "DATASET_NAME",
        "RESUME_TRAINING",
        "RUNPOD_PUSH_TO_GITHUB",
        "PIPELINE_HOME",
        "PIPELINE_PROGRESS",
        "PIPELINE_PARENT_PID",
        "PIPELINE_RUN_LOG",
        "PIPELINE_PUSH_DEFERRED",
    ):
        monkeypatch.delenv(var, raising=False)
    yield
    # main() adds each dataset's run log to ``child_log``; close it.
    for h in list(runpod_main.child_log.handlers):
        runpod_main.child_log.removeHandler(h)
        h.close()


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def _work_tree(base: Path) -> tuple[Path, Path]:
    """A git work tree whose ``origin`` is a local bare repository."""
    root, bare = base / "work", base / "remote.git"
    _git("init", "-q", "--bare", str(bare))
    _git("init", "-q", "-b", "main", str(root))
    (root / ".gitignore").write_text(GITIGNORE)
    _git("add", ".gitignore", cwd=root)
    _git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init", cwd=root)
    _git("remote", "add", "origin", str(bare), cwd=root)
    _git("push", "-q", "origin", "main", cwd=root)
    return root, bare


def _write_broken(path: Path) -> None:
    """A CSV whose ``close`` column is misnamed: the preflight's dataset row fails."""
    write_ohlcv_csv(generate_ohlcv(300, seed=2), path)
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("close", "klose")
    path.write_text("\n".join(lines) + "\n")


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


# ---------------------------------------------------------------- end to end


@pytest.mark.integration
def test_two_datasets_one_broken_table_exit_code_and_one_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    root, bare = _work_tree(tmp_path)
    write_ohlcv_csv(generate_ohlcv(1000, signal=1.0, seed=1), root / "datasets" / f"{GOOD}.csv")
    _write_broken(root / "datasets" / f"{BAD}.csv")
    monkeypatch.setenv("RUNPOD_PUSH_TO_GITHUB", "true")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["--dataset", GOOD, "--dataset", BAD, "--root", str(root), *SMOKE, *ROOM]

    code = runpod_main.main(argv)

    out, err = capsys.readouterr()
    assert code == EXIT_ERROR, out[-3000:] + err[-3000:]
    (line,) = _error_lines(err)
    assert line.startswith(f"error: 1 of 2 datasets failed: {BAD} (preflight: dataset {BAD}: ")
    assert "missing column(s) close" in line

    # The table's numbers are those steps 5 and 7 wrote for the good dataset.
    paths = Paths.from_root(root)
    good = Artifacts(paths, GOOD)
    summary = json.loads(multi_run_summary(paths).read_text())
    assert summary["datasets"] == [GOOD, BAD] and summary["failed"] == [BAD]
    row_good, row_bad = summary["rows"]
    training = json.loads(good.training_summary.read_text())
    best, entry = best_classifier(training)
    assert row_good["status"] == "ok" and row_good["best_classifier"] == best
    assert row_good["test_macro_f1"] == entry["test_macro_f1"]
    assert row_good["majority_test_macro_f1"] == entry["majority_test_macro_f1"]
    assert row_good["logreg_test_macro_f1"] == entry["logreg_test_macro_f1"]
    backtest = json.loads(good.backtest_report(row_good["agent_model"]).read_text())
    strategies = backtest["strategies"]
    assert row_good["agent_total_return"] == strategies["agent"]["total_return"]
    assert row_good["buy_and_hold_total_return"] == strategies["buy_and_hold"]["total_return"]
    assert row_good["flat_total_return"] == strategies["flat"]["total_return"]
    assert row_good["classifier_rule_total_return"] == strategies["classifier_rule"]["total_return"]
    assert row_good["agent_trades"] == strategies["agent"]["n_trades"]
    assert row_bad["status"] == "failed" and row_bad["exit_code"] == EXIT_PREFLIGHT
    assert row_bad["test_macro_f1"] is None and row_bad["agent_total_return"] is None
    assert multi_run_plot(paths).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The console table: a row per dataset, the failed one marked and explained.
    table_rows = [ln.split() for ln in err.splitlines() if ln.startswith((GOOD, BAD))]
    assert [r[:2] for r in table_rows[:2]] == [[GOOD, "ok"], [BAD, "FAILED"]]
    assert table_rows[0][3] == f"{entry['test_macro_f1']:.3f}"
    assert table_rows[0][6] == f"{strategies['agent']['total_return']:+.2%}"

    # The good dataset's artifacts; its driver left the push to the entry point.
    run = json.loads(good.run_summary.read_text())
    assert run["status"] == "ok"
    assert run["steps"][7]["status"] == "skipped"
    assert DEFERRED_REASON in run["steps"][7]["result"]
    assert good.classifier_model(best).is_file() and good.ppo_model(run["agent"]["model"]).is_file()
    assert not Artifacts(paths, BAD).run_summary.exists()

    # One commit on the remote with the good dataset's manifest files and the table, none of BAD.
    log = _git("log", "--format=%s", "main", cwd=bare).splitlines()
    assert len(log) == 2 and log[0].startswith("Run artifacts: 1 dataset @ ")
    pushed = set(_git("show", "--name-only", "--format=", "main", cwd=bare).split())
    assert {
        f"results/run_summary_{GOOD}.json",
        f"results/run_manifest_{GOOD}.json",
        f"results/training_summary_{GOOD}.json",
        f"results/backtest_{run['agent']['model']}_{GOOD}.json",
        "results/multi_run_summary.json",
        "results/multi_run_summary.png",
    } <= pushed
    assert any(p.startswith(f"logs/run_{GOOD}_") for p in pushed)
    assert not any(BAD in p for p in pushed)


# ---------------------------------------------------------------- one commit for several


def _recorded_dataset(root: Path, name: str) -> None:
    """A dataset whose steps 5 and 7 "wrote" two small reports, recorded in its manifest."""
    a = Artifacts(Paths.from_root(root), name)
    a.paths.results.mkdir(parents=True, exist_ok=True)
    a.training_summary.write_text(json.dumps({"dataset": name, "models": {}}))
    a.backtest_report("dlstm").write_text(json.dumps({"dataset": name}))
    a.manifest().record(a.training_summary, "training_summary", STEP_CLASSIFIERS)
    a.manifest().record(a.backtest_report("dlstm"), "backtest", STEP_AGENT)


@pytest.mark.integration
def test_push_datasets_commits_every_manifest_and_the_table_in_one_commit(
    tmp_path: Path,
) -> None:
    root, bare = _work_tree(tmp_path)
    for name in ("A_1H", "B_1H"):
        _recorded_dataset(root, name)
    table = root / "results" / "multi_run_summary.json"
    table.write_text("{}")
    rows = [{"dataset": "A_1H", "test_macro_f1": 0.5}, {"dataset": "B_1H"}]
    result = push_datasets(root, rows, ["A_1H", "B_1H"], [table], PushConfig())
    assert result.pushed
    log = _git("log", "--format=%s", "main", cwd=bare).splitlines()
    assert len(log) == 2 and log[0].startswith("Run artifacts: 2 datasets @ ")
    assert log[0].endswith("(A_1H, B_1H)")
    pushed = set(_git("show", "--name-only", "--format=", "main", cwd=bare).split())
    assert pushed == {
        "results/multi_run_summary.json",
        *(
            f"results/{kind}_{name}.json"
            for name in ("A_1H", "B_1H")
            for kind in ("training_summary", "backtest_dlstm", "run_manifest")
        ),
    }
    body = _git("log", "-1", "--format=%b", "main", cwd=bare)
    assert "A_1H: test_macro_f1=0.5" in body and "B_1H: no metrics" in body


# ---------------------------------------------------------------- fast: the driver replaced


@pytest.mark.unit
def test_dataset_flag_repeats_and_takes_comma_lists() -> None:
    assert split_datasets(["A", "B, C", "A", " ", "D,"]) == ["A", "B", "C", "D"]
    args = runpod_main.build_parser().parse_args(["--dataset", "A,B", "--dataset", "C"])
    assert args.datasets == ["A", "B", "C"] and args.dataset == "A"
    one = runpod_main.build_parser().parse_args(["--dataset", "A"])
    assert one.datasets == ["A"] and one.dataset == "A"


def _datasets(root: Path, *names: str) -> None:
    for name in names:
        write_ohlcv_csv(generate_ohlcv(600, seed=3), root / "datasets" / f"{name}.csv")


@pytest.mark.unit
def test_a_failed_dataset_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _datasets(tmp_path, "A_1H", "B_1H", "C_1H")
    ran: list[tuple[str, str | None, str]] = []

    def fake(cmd: list[str], env: dict[str, str], secrets: list[str]) -> int:
        name = Path(cmd[cmd.index("--dataset") + 1]).name
        ran.append((name, env.get("PIPELINE_PUSH_DEFERRED"), env["RUNPOD_PUSH_TO_GITHUB"]))
        return 1 if name == "B_1H" else 0

    monkeypatch.setattr(runpod_main, "stream_driver", fake)
    argv = ["--dataset", "A_1H,B_1H,C_1H", "--root", str(tmp_path), "--no-push", *ROOM]
    assert runpod_main.main(argv) == EXIT_ERROR
    assert ran == [("A_1H", None, "false"), ("B_1H", None, "false"), ("C_1H", None, "false")]
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == "error: 1 of 3 datasets failed: B_1H (exit code 1)"
    rows = json.loads(multi_run_summary(Paths.from_root(tmp_path)).read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    # Each dataset has its own run log.
    assert {p.name.split("_2")[0] for p in (tmp_path / "logs").glob("run_*.log")} == {
        "run_A_1H",
        "run_B_1H",
        "run_C_1H",
    }


@pytest.mark.unit
def test_pushing_defers_step_8_of_each_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _datasets(tmp_path, "A_1H", "B_1H")
    seen: list[tuple[str | None, str]] = []

    def fake(cmd: list[str], env: dict[str, str], secrets: list[str]) -> int:
        seen.append((env.get("PIPELINE_PUSH_DEFERRED"), env["RUNPOD_PUSH_TO_GITHUB"]))
        return 0

    pushes: list[list[str]] = []
    monkeypatch.setattr(runpod_main, "stream_driver", fake)

    def fake_push(cfg: object, paths: Paths, multi: object, rows: list, extra: list) -> int:
        pushes.append([r["dataset"] for r in rows])
        return EXIT_OK

    monkeypatch.setattr(runpod_main, "push_all", fake_push)
    argv = ["--dataset", "A_1H", "--dataset", "B_1H", "--root", str(tmp_path), "--skip-validation"]
    monkeypatch.setenv("RUNPOD_PUSH_TO_GITHUB", "true")
    assert runpod_main.main(argv) == EXIT_OK
    assert seen == [("true", "false"), ("true", "false")]
    assert pushes == [["A_1H", "B_1H"]]


@pytest.mark.unit
def test_an_interrupt_stops_the_remaining_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _datasets(tmp_path, "A_1H", "B_1H")
    calls: list[str] = []

    def fake(cmd: list[str], env: dict[str, str], secrets: list[str]) -> int:
        calls.append(cmd[cmd.index("--dataset") + 1])
        return EXIT_INTERRUPTED

    monkeypatch.setattr(runpod_main, "stream_driver", fake)
    argv = ["--dataset", "A_1H,B_1H", "--root", str(tmp_path), "--no-push", *ROOM]
    assert runpod_main.main(argv) == EXIT_INTERRUPTED
    assert calls == ["A_1H"]
    rows = json.loads(multi_run_summary(Paths.from_root(tmp_path)).read_text())["rows"]
    assert [r["status"] for r in rows] == ["interrupted", "not run"]
    assert rows[1]["reason"] == "not run: the run was interrupted"


@pytest.mark.unit
def test_a_failed_machine_check_stops_the_whole_run_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _datasets(tmp_path, "A_1H", "B_1H")
    monkeypatch.setattr(runpod_main, "stream_driver", lambda *a: pytest.fail("driver started"))
    argv = ["--dataset", "A_1H,B_1H", "--root", str(tmp_path), "--no-push"]
    argv += ["--set", "min_disk_gb=1000000", "--set", "min_memory_gb=0"]
    assert runpod_main.main(argv) == EXIT_PREFLIGHT
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: preflight failed: disk: ")


@pytest.mark.unit
def test_every_dataset_failing_its_preflight_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _write_broken(tmp_path / "datasets" / "A_1H.csv")
    monkeypatch.setattr(runpod_main, "stream_driver", lambda *a: pytest.fail("driver started"))
    argv = ["--dataset", "A_1H,MISSING_1H", "--root", str(tmp_path), "--no-push", *ROOM]
    assert runpod_main.main(argv) == EXIT_PREFLIGHT
    (line,) = _error_lines(capsys.readouterr().err)
    assert "dataset A_1H: " in line and "dataset MISSING_1H: " in line


@pytest.mark.unit
def test_two_datasets_with_one_artifact_name_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _datasets(tmp_path, "A_1H")
    other = tmp_path / "elsewhere" / "A_1H.csv"
    write_ohlcv_csv(generate_ohlcv(300, seed=4), other)
    argv = ["--dataset", "A_1H", "--dataset", str(other), "--root", str(tmp_path), "--no-push"]
    assert runpod_main.main(argv) == EXIT_ERROR
    (line,) = _error_lines(capsys.readouterr().err)
    assert "have the same artifact name 'A_1H'" in line


@pytest.mark.unit
def test_best_classifier_is_chosen_on_the_validation_block() -> None:
    summary = {
        "models": {
            "lstm": {"status": "trained", "val_macro_f1": 0.30, "test_macro_f1": 0.50},
            "gru": {"status": "trained", "val_macro_f1": 0.40, "test_macro_f1": 0.20},
            "dlstm": {"status": "failed", "val_macro_f1": 0.90, "test_macro_f1": 0.90},
        }
    }
    name, _entry = best_classifier(summary)
    assert name == "gru"
    assert best_classifier({"models": {}}) is None


@pytest.mark.unit
def test_preflight_rows_name_each_dataset(tmp_path: Path) -> None:
    from pipeline.config.files import load_config
    from pipeline.run.preflight import run_preflight_many

    _datasets(tmp_path, "A_1H")
    cfg = load_config(None, None, "smoke", [])
    machine, per = run_preflight_many(
        cfg, ["A_1H", "NOPE_1H"], Paths.from_root(tmp_path), push=False
    )
    assert [r.check for r in machine] == ["disk", "memory", "gpu", "dependencies", "write access"]
    assert [(r.check, r.status) for r in per["A_1H"]] == [
        ("dataset A_1H", "pass"),
        ("run lock A_1H", "pass"),
    ]
    assert [(r.check, r.status) for r in per["NOPE_1H"]][0] == ("dataset NOPE_1H", "fail")
    assert isinstance(per["A_1H"][0], CheckResult)


def _ok_root(tmp_path: Path, fed: str, verdict: str) -> tuple[Paths, DatasetOutcome]:
    """A root with step 5's summary (gru best on validation) and step 7's report of an agent
    fed by ``fed``, as the steps write them."""
    paths = Paths.from_root(tmp_path)
    paths.results.mkdir(parents=True)
    files = Artifacts(paths, "D_1H")
    models = {
        "gru": {"status": "trained", "val_macro_f1": 0.41, "test_macro_f1": 0.40},
        "dlstm": {"status": "trained", "val_macro_f1": 0.35, "test_macro_f1": 0.33},
    }
    for m in models.values():
        m.update(majority_test_macro_f1=0.2, logreg_test_macro_f1=0.39)
    files.training_summary.write_text(json.dumps({"models": models}))
    files.run_summary.write_text(json.dumps({"agent": {"model": fed}}))
    strategies = {
        "agent": {"total_return": 0.0, "n_trades": 0},
        "buy_and_hold": {"total_return": -0.1},
        "flat": {"total_return": 0.0},
        "classifier_rule": {"total_return": 0.2},
    }
    report = {"strategies": strategies, "agent": {"prediction_model": fed}, "verdict": verdict}
    files.backtest_report(fed).write_text(json.dumps(report))
    return paths, DatasetOutcome("D_1H", code=0)


@pytest.mark.unit
def test_the_table_shows_the_f1_of_the_classifier_that_fed_the_agent(tmp_path: Path) -> None:
    """The table printed the validation-best model's F1 beside an agent fed by another model; now
    it prints the F1 of the model that fed the agent, and the verdict in plain words under the
    table."""
    verdict = "the agent did not learn: the classifier rule made +78.6 % on validation, ..."
    paths, outcome = _ok_root(tmp_path, "dlstm", verdict)
    row = dataset_row(paths, outcome)
    assert row["best_classifier"] == "dlstm" and row["test_macro_f1"] == 0.33
    assert row["verdict"] == verdict
    text = format_multi_table([row])
    assert "agent's classifier" in text.splitlines()[0]
    assert text.splitlines()[-1] == f"D_1H: {verdict}"


@pytest.mark.unit
def test_the_png_marks_zero_bars_and_keeps_the_legend_off_the_bars(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    paths, outcome = _ok_root(tmp_path, "gru", "no edge")
    row = dataset_row(paths, outcome)
    seen: dict[str, object] = {}
    orig = plt.Figure.savefig

    def keep(fig: plt.Figure, *a: object, **k: object) -> None:
        seen["fig"] = fig
        orig(fig, *a, **k)

    plt.Figure.savefig = keep  # type: ignore[method-assign]
    try:
        out = plot_multi_summary(paths, [row])
    finally:
        plt.Figure.savefig = orig  # type: ignore[method-assign]
    assert out.is_file()
    fig = seen["fig"]
    ax_returns = fig.axes[1]  # type: ignore[attr-defined]
    # The agent and flat returns are 0: each gets a visible tick at 0 in its bar's colour.
    zero_ticks = [
        ln
        for ln in ax_returns.lines
        if list(ln.get_ydata()) == [0, 0] and ln.get_linewidth() == 3  # not the axhline
    ]
    assert len(zero_ticks) == 2
    legend = ax_returns.get_legend()
    assert legend.get_bbox_to_anchor().x0 > ax_returns.get_window_extent().x1 - 1


@pytest.mark.unit
def test_the_table_shows_the_ensembles_f1_when_auto_fed_it(tmp_path: Path) -> None:
    """``prediction_model = auto`` may feed the agent an ensemble; the table shows its test F1, not
    the validation-best single model's."""
    paths, outcome = _ok_root(tmp_path, "ensemble", "v")
    files = Artifacts(paths, "D_1H")
    summary = json.loads(files.training_summary.read_text())
    summary["auto_ensemble"] = {
        "used": True,
        "members": ["gru", "dlstm"],
        "scores": {"test": {"gru": 0.40, "dlstm": 0.33, "ensemble": 0.42}},
    }
    files.training_summary.write_text(json.dumps(summary))
    row = dataset_row(paths, outcome)
    assert row["best_classifier"] == "ensemble" and row["test_macro_f1"] == 0.42
    assert row["logreg_test_macro_f1"] == 0.39
