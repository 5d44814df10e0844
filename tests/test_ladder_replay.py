"""The classifier ladder's runs file (issue 17): a bench killed mid-run keeps the runs that
ended, so ``--replay`` can rebuild their table with another choice rule without training."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _ladder():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))  # the bench's own `_common`
    try:
        spec = importlib.util.spec_from_file_location(
            "ladder", BENCH / "bench_classifier_ladder.py"
        )
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.unit
def test_a_runs_file_cut_off_mid_run_keeps_the_runs_that_ended(tmp_path: Path) -> None:
    ladder = _ladder()
    path = tmp_path / "runs.jsonl.gz"
    f = gzip.open(path, "wt")
    f.write(json.dumps({"header": ["# title", "", "Command: x"], "ensembles": True}) + "\n")
    for seed in (1, 2):
        f.write(json.dumps({"label": "echo 1.0", "seed": seed, "seconds": 1.0, "summary": {}}))
        f.write("\n")
    f.write('{"label": "echo 1.0", "seed": 3, "sec')  # the run the kill cut short
    f.flush()  # a sync flush: what a killed bench leaves on disk, no gzip trailer
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(path.read_bytes())
    f.close()
    head, runs = ladder.load_runs(cut)
    assert head["header"] == ["# title", "", "Command: x"] and head["ensembles"] is True
    assert [r["seed"] for r in runs] == [1, 2]
    assert "prediction_model = auto" in ladder.rule_text(False)
    assert "ensemble" in ladder.rule_text(True) and "ensemble" not in ladder.rule_text(False)


@pytest.mark.unit
def test_replay_of_a_missing_or_foreign_file_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ladder = _ladder()
    plain = tmp_path / "table.md"
    plain.write_text("| row |\n")
    for path in (tmp_path / "nowhere.jsonl.gz", plain):
        assert ladder.main(["--replay", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: --replay {path}: cannot read it")


def _one_saved_summary() -> dict:
    with gzip.open(BENCH / "results" / "runs" / "classifier_ladder.jsonl.gz", "rt") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("label") == "pure noise":
                return rec["summary"]
    raise AssertionError("no pure-noise run saved")


@pytest.mark.unit
def test_resume_trains_only_the_runs_a_cut_short_bench_had_not_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ladder = _ladder()
    monkeypatch.setattr(ladder, "HERE", tmp_path)
    monkeypatch.setattr(ladder, "RUNS", tmp_path / "results" / "runs")
    summary, trained = _one_saved_summary(), []

    def killed_on_the_second(write: object, name: str, sets: list[str]) -> dict:
        trained.append(name)
        if len(trained) == 2:
            raise KeyboardInterrupt  # the terminal closed mid-run
        return summary

    monkeypatch.setattr(ladder, "run", killed_on_the_second)
    argv = ["--rows", "noise", "--seeds", "3"]
    with pytest.raises(KeyboardInterrupt):
        ladder.main(argv)
    dump = tmp_path / "results" / "runs" / "classifier_ladder_rows-noise.jsonl.gz"
    assert [r["seed"] for r in ladder.load_runs(dump)[1]] == [1]

    trained.clear()
    monkeypatch.setattr(ladder, "run", lambda *a: trained.append(a[1]) or summary)
    assert ladder.main([*argv, "--resume"]) == 0
    assert len(trained) == 2  # seeds 2 and 3 only: seed 1 was kept, not trained again
    assert [r["seed"] for r in ladder.load_runs(dump)[1]] == [1, 2, 3]
    table = (tmp_path / "results" / "classifier_ladder_rows-noise.md").read_text()
    assert table.count("| pure noise |") == 3
    assert not list(dump.parent.glob("*.part"))

    # a runs file another command wrote is refused in one line and left as it was
    head, runs = ladder.load_runs(dump)
    head["header"][2] = "Machine: somewhere else"
    with gzip.open(dump, "wt") as f:
        f.write(json.dumps(head) + "\n" + "".join(json.dumps(r) + "\n" for r in runs))
    before = dump.read_bytes()
    capsys.readouterr()
    assert ladder.main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --resume {dump}: another command")
    assert "'Machine: somewhere else'" in err[0] and dump.read_bytes() == before
