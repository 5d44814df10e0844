"""PPO checkpoints under faults and hostile files.

The dataset and the real DLSTM prediction table come from ``test_ppo_agent``'s ``ppo_source_root``
fixture (imported, so it runs once for this module too); every run uses the smoke preset on one
torch thread.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from test_ppo_agent import (  # noqa: F401  (fixtures used by name)
    DATASET,
    SMOKE,
    _fresh_root,
    _one_torch_thread,
    _smoke_cfg,
    val_block,
)

from pipeline.common import Paths, sha256_file
from pipeline.store import artifacts as art
from ppo_approach import agent_blocks, callbacks, learn_phase, model_files, run_folder
from ppo_approach import ppo_trading_agent as agent
from ppo_approach import train_ppo_agent as step
from ppo_approach.reward_functions import RewardConfig, RewardFunction
from ppo_approach.trading_env import EnvConfig, TradingEnv

CK = Path("ppo_approach") / "checkpoints" / f"dlstm_{DATASET}"
FINAL = Path("ppo_approach") / "models" / f"ppo_dlstm_{DATASET}.zip"
PRUNED_RUN = [
    "--set",
    "total_timesteps=3072",
    "--set",
    "checkpoint_freq=512",
    "--set",
    "eval_freq=3072",
]
"""Rollouts of 256 steps x 2 envs: checkpoints at 512 .. 2560 (3072 is the end, the final model)."""

OLD_RUN_FILES = {
    "checkpoint_99999.zip": b"an earlier run's checkpoint",
    "best_model.zip": b"an earlier run's best model",
    "best_model.json": b'{"mean_reward": 1.0, "timesteps": 99999}',
    "run_config.json": b'{"dataset_sha256": "earlier"}',
    "checksums.json": b"{}",
}


def _plant_old_run(root: Path) -> Path:
    """Files of an earlier run in the checkpoint folder (contents only need to survive)."""
    ck = root / CK
    ck.mkdir(parents=True, exist_ok=True)
    for name, data in OLD_RUN_FILES.items():
        (ck / name).write_bytes(data)
    return ck


def _folder(ck: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def pruned_run(ppo_source_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """A fresh smoke run over an earlier run's files, with a checkpoint every rollout."""
    root = _fresh_root(ppo_source_root, tmp_path_factory.mktemp("ppo_ck"))
    _plant_old_run(root)
    torch.set_num_threads(1)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = step.main(["--dataset", DATASET, "--root", str(root), *SMOKE, *PRUNED_RUN])
    report = json.loads((root / "results" / f"backtest_dlstm_{DATASET}.json").read_text())
    return {"code": code, "root": root, "err": err.getvalue(), "report": report}


def _copy(run: dict[str, Any], dst: Path) -> Path:
    shutil.copytree(run["root"], dst)
    return dst


def _argv(root: Path, *extra: str) -> list[str]:
    return ["--dataset", DATASET, "--root", str(root), *SMOKE, *PRUNED_RUN, *extra]


# ---------------------------------------------------------------- set aside, not deleted


@pytest.mark.integration
@pytest.mark.parametrize("where", ["build_model", "learn"])
def test_fresh_run_failing_early_keeps_the_previous_run(
    ppo_source_root: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """A fresh run that crashes in setup (or in training before its first checkpoint, after an
    evaluation wrote a best model of its own) leaves the earlier run's files exactly as they were
    (a run with gamma=nan used to delete them first)."""
    root = _fresh_root(ppo_source_root, tmp_path / "root")
    ck = _plant_old_run(root)
    before = _folder(ck)

    def crash(*args: Any, **kwargs: Any) -> Any:
        if where == "learn":
            (ck / art.PPO_BEST_MODEL_NAME).write_bytes(b"the failed run's best model")
        raise RuntimeError("boom in setup")

    monkeypatch.setattr(agent, where, crash)
    with pytest.raises(RuntimeError, match="boom in setup"):
        step.train_agent(_smoke_cfg(), DATASET, Paths.from_root(root), resume=False)
    assert _folder(ck) == before
    assert not (ck / run_folder.PREVIOUS_RUN_DIR).exists()


@pytest.mark.unit
def test_files_set_aside_by_a_killed_run_come_back(tmp_path: Path) -> None:
    """A fresh run killed (-9) before its first checkpoint leaves ``.previous_run/``: the next run
    puts it back (the killed run's own run_config goes); after a checkpoint it is dropped."""
    ck = tmp_path / "ck"
    aside = ck / run_folder.PREVIOUS_RUN_DIR
    aside.mkdir(parents=True)
    (aside / "checkpoint_512.zip").write_bytes(b"old")
    (aside / run_folder.RUN_CONFIG_NAME).write_text('{"old": 1}')
    (ck / run_folder.RUN_CONFIG_NAME).write_text('{"new": 1}')
    run_folder.recover_previous_run(ck)
    assert _folder(ck) == {"checkpoint_512.zip": b"old", run_folder.RUN_CONFIG_NAME: b'{"old": 1}'}
    assert not aside.exists()

    aside.mkdir()
    (aside / "checkpoint_512.zip").write_bytes(b"old")
    (ck / "checkpoint_512.zip").write_bytes(b"new")
    run_folder.recover_previous_run(ck)
    assert not aside.exists() and (ck / "checkpoint_512.zip").read_bytes() == b"new"


@pytest.mark.integration
def test_fresh_run_removes_the_earlier_files_after_writing_its_own(
    pruned_run: dict[str, Any],
) -> None:
    assert pruned_run["code"] == 0, pruned_run["err"][-2000:]
    ck = pruned_run["root"] / CK
    assert not (ck / run_folder.PREVIOUS_RUN_DIR).exists()
    assert not (ck / "checkpoint_99999.zip").exists()
    assert (ck / art.PPO_BEST_MODEL_NAME).read_bytes() != OLD_RUN_FILES["best_model.zip"]
    assert "moved 5 file(s) of an earlier run" in pruned_run["err"]


# ---------------------------------------------------------------- pruning


@pytest.mark.integration
def test_only_the_newest_checkpoints_are_kept_with_their_checksums(
    pruned_run: dict[str, Any],
) -> None:
    """Five checkpoint intervals, KEEP_CHECKPOINTS = 3: the three newest stay, plus the best."""
    assert model_files.KEEP_CHECKPOINTS == 3
    ck = pruned_run["root"] / CK
    kept = [t for t, _ in model_files.list_checkpoints(ck)]
    assert kept == [1536, 2048, 2560]
    sums = json.loads((ck / art.PPO_CHECKSUMS_NAME).read_text())
    assert set(sums) == {"checkpoint_1536.zip", "checkpoint_2048.zip", "checkpoint_2560.zip"} | {
        art.PPO_BEST_MODEL_NAME
    }
    for name, sha in sums.items():
        assert sha256_file(ck / name) == sha, name
    meta = json.loads((pruned_run["root"] / FINAL.with_name(FINAL.stem + "_meta.json")).read_text())
    assert meta["sha256"] == sha256_file(pruned_run["root"] / FINAL)


@pytest.mark.unit
def test_prune_keeps_n(tmp_path: Path) -> None:
    for t in (512, 1024, 1536, 2048):
        (tmp_path / f"checkpoint_{t}.zip").write_bytes(b"x")
    (tmp_path / art.PPO_BEST_MODEL_NAME).write_bytes(b"x")
    gone = model_files.prune_checkpoints(tmp_path, 2)
    assert [p.name for p in gone] == ["checkpoint_512.zip", "checkpoint_1024.zip"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        art.PPO_BEST_MODEL_NAME,
        "checkpoint_1536.zip",
        "checkpoint_2048.zip",
    ]


# ---------------------------------------------------------------- damaged checkpoint


def _drop_final(root: Path) -> None:
    """As if the run had been interrupted: no final model, resume goes to the checkpoints."""
    (root / FINAL).unlink()
    (root / FINAL.with_name(FINAL.stem + "_meta.json")).unlink()


def _spy_learn(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    starts: list[int] = []
    real = agent.learn

    def spy(model: Any, *args: Any, **kwargs: Any) -> agent.LearnResult:
        starts.append(int(model.num_timesteps))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(agent, "learn", spy)
    return starts


@pytest.mark.integration
def test_resume_skips_a_truncated_checkpoint_and_falls_back(
    pruned_run: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = _copy(pruned_run, tmp_path / "copy")
    _drop_final(root)
    newest = root / CK / "checkpoint_2560.zip"
    newest.write_bytes(newest.read_bytes()[:3000])
    starts = _spy_learn(monkeypatch)
    code = step.main(_argv(root, "--resume"))
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    assert starts == [2048]
    warn = [ln for ln in err.splitlines() if "skipping" in ln]
    assert warn and str(newest) in warn[0] and "damaged" in warn[0], err[-2000:]
    meta = json.loads((root / FINAL.with_name(FINAL.stem + "_meta.json")).read_text())
    assert meta["timesteps"] == 3072 and meta["resumed_from"].endswith("checkpoint_2048.zip")


# ---------------------------------------------------------------- no unpickling


class _Trap:
    """Unpickling this creates ``path`` (what a crafted checkpoint could do with a shell)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _booby_trap(path: Path, marker: Path, key: str) -> None:
    """Rewrite the ``data`` of SB3's own zip at ``path`` with a ``:serialized:`` entry ``key``
    that creates ``marker`` when SB3 decodes it."""
    with zipfile.ZipFile(path) as zin:
        entries = {n: zin.read(n) for n in zin.namelist()}
    data = json.loads(entries["data"])
    blob = base64.b64encode(pickle.dumps(_Trap(marker))).decode()
    data[key] = {":type:": "<class 'numpy.ndarray'>", ":serialized:": blob}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as zout:
        for name, raw in entries.items():
            zout.writestr(name, raw)


def _record(ck: Path, path: Path) -> None:
    """An attacker who can also rewrite the checksum manifest."""
    sums = json.loads((ck / art.PPO_CHECKSUMS_NAME).read_text())
    sums[path.name] = sha256_file(path)
    (ck / art.PPO_CHECKSUMS_NAME).write_text(json.dumps(sums))


def _spaces_of(block: agent_blocks.AgentBlock) -> tuple[Any, Any]:
    env = TradingEnv(block.data, EnvConfig(), RewardFunction(RewardConfig()))
    return env.observation_space, env.action_space


def _old_sb3_zip(src: Path, dst: Path, marker: Path, spaces: tuple[Any, Any]) -> None:
    """``dst``: the agent of ``src`` saved with SB3's own ``save`` (what earlier versions wrote),
    its ``_last_obs`` replaced by a pickle that creates ``marker``."""
    model = model_files.load_model(src, None, "cpu", spaces=spaces)
    model.save(dst)
    _booby_trap(dst, marker, "_last_obs")


@pytest.mark.integration
def test_trap_fires_with_plain_sb3_load(
    pruned_run: dict[str, Any],
    tmp_path: Path,
    val_block: agent_blocks.AgentBlock,  # noqa: F811
) -> None:
    """Positive control: SB3's own zip format runs code when SB3's own loader reads it."""
    trapped, marker = tmp_path / "trapped.zip", tmp_path / "fired"
    _old_sb3_zip(
        pruned_run["root"] / CK / "checkpoint_2560.zip", trapped, marker, _spaces_of(val_block)
    )
    with contextlib.suppress(Exception):
        agent.PPO.load(trapped, device="cpu")
    assert marker.exists()


@pytest.mark.integration
def test_resume_refuses_a_checkpoint_whose_hash_differs(
    pruned_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(pruned_run, tmp_path / "copy")
    _drop_final(root)
    newest, marker = root / CK / "checkpoint_2560.zip", tmp_path / "fired"
    _pickled_pth(newest, marker)
    before = _folder(root / CK)
    code = step.main(_argv(root, "--resume"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists()
    assert code == 1 and "Traceback" not in "\n".join(lines)
    err = [ln for ln in lines if ln.startswith("error:")]
    assert len(err) == 1 and lines[-1] == err[0], lines
    assert err[0].startswith(f"error: {newest}: sha256 ") and "differs" in err[0], err
    assert _folder(root / CK) == before  # nothing deleted or written


@pytest.mark.integration
def test_an_sb3_zip_of_an_older_version_is_one_clear_line_and_never_unpickled(
    pruned_run: dict[str, Any],
    tmp_path: Path,
    val_block: agent_blocks.AgentBlock,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SB3's own zip (earlier versions wrote it) is refused in one line, exit 1, even when the
    manifest vouches for it; its pickled entries never run and nothing in the folder changes."""
    root = _copy(pruned_run, tmp_path / "copy")
    _drop_final(root)
    ck, marker = root / CK, tmp_path / "fired"
    newest = ck / "checkpoint_2560.zip"
    _old_sb3_zip(newest, newest, marker, _spaces_of(val_block))
    _record(ck, newest)
    before = _folder(ck)
    code = step.main(_argv(root, "--resume"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists()
    assert code == 1 and "Traceback" not in "\n".join(lines)
    assert lines[-1] == (
        f"error: {newest}: a stable-baselines3 zip saved by an older version of this pipeline, "
        "which is no longer loaded (it stores pickled Python objects); train the agent again, "
        "or run without --resume to start over"
    ), lines[-3:]
    assert _folder(ck) == before


def _pickled_pth(path: Path, marker: Path, member: str = model_files.PARAMS_ENTRY) -> None:
    """Rewrite ``path``'s ``member`` as a ``torch.save`` of a Python object whose unpickling
    creates ``marker`` (not a plain state dict of tensors)."""
    with zipfile.ZipFile(path) as zin:
        entries = {n: zin.read(n) for n in zin.namelist()}
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(2), "trap": _Trap(marker)}, buf)
    entries[member] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zout:
        for name, raw in entries.items():
            zout.writestr(name, raw)


@pytest.mark.integration
def test_a_pickle_in_the_parameters_is_refused_in_one_line(
    pruned_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint whose parameters.pth holds a pickled object (manifest rewritten too) stops
    ``--resume`` with one error line and exit 1; it is not skipped as damaged (no fallback to an
    older checkpoint, exit 0) and PyTorch's several-line message stays out."""
    root = _copy(pruned_run, tmp_path / "copy")
    _drop_final(root)
    ck, marker = root / CK, tmp_path / "fired"
    newest = ck / "checkpoint_2560.zip"
    _pickled_pth(newest, marker)
    _record(ck, newest)
    before = _folder(ck)
    code = step.main(_argv(root, "--resume"))
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert not marker.exists()
    assert code == 1, err[-5:]
    assert err[-1] == (
        f"error: {newest}: its parameters.pth holds the Python object io.open, not only "
        "tensors; refusing to load it (loading would run code from the file)"
    ), err[-5:]  # the trap pickles open() as io.open
    assert "Weights only load failed" not in out.err + out.out
    assert "skipping" not in out.err
    assert _folder(ck) == before


@pytest.mark.integration
def test_load_model_refuses_a_pickle_in_the_parameters(
    pruned_run: dict[str, Any],
    tmp_path: Path,
    val_block: agent_blocks.AgentBlock,  # noqa: F811
) -> None:
    """The best model and the final model go through the same loader: refused, not damaged."""
    path, marker = tmp_path / "trapped.zip", tmp_path / "fired"
    shutil.copy(pruned_run["root"] / CK / "checkpoint_2560.zip", path)
    _pickled_pth(path, marker)
    with pytest.raises(model_files.UntrustedModelError) as info:
        model_files.load_model(path, None, "cpu", spaces=_spaces_of(val_block))
    assert not isinstance(info.value, model_files.CorruptModelError)
    assert str(info.value).startswith(f"{path}: its parameters.pth holds the Python object")
    assert "\n" not in str(info.value) and not marker.exists()


@pytest.mark.integration
def test_a_checkpoint_the_manifest_does_not_list_is_refused(
    pruned_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """checksums.json is written before each checkpoint is renamed into place, so a checkpoint it
    does not list was put there by someone else."""
    root = _copy(pruned_run, tmp_path / "copy")
    _drop_final(root)
    ck = root / CK
    planted = ck / "checkpoint_2816.zip"
    shutil.copy(ck / "checkpoint_2560.zip", planted)
    code = step.main(_argv(root, "--resume"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(f"error: {planted}: not recorded in"), err


@pytest.mark.integration
def test_a_checkpoint_is_json_and_weights_only_and_loads_without_sb3_load(
    pruned_run: dict[str, Any],
    val_block: agent_blocks.AgentBlock,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file holds agent.json (plain JSON: the settings it was built with, its spaces, its
    timesteps) and parameters.pth (weights only), and loads through SB3's public ``set_parameters``:
    SB3's own ``load`` (and its private zip layout) is never used."""
    path = pruned_run["root"] / CK / "checkpoint_2560.zip"
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["agent.json", "parameters.pth"]
        meta = json.loads(z.read("agent.json"))
        weights = torch.load(io.BytesIO(z.read("parameters.pth")), weights_only=True)
    cfg = _smoke_cfg().ppo
    assert meta["format"] == model_files.AGENT_FORMAT and meta["algorithm"] == "ppo"
    assert meta["settings"] == json.loads(json.dumps(agent.ppo_kwargs(cfg)))
    assert meta["num_timesteps"] == 2560
    assert set(weights) == {"policy", "policy.optimizer"}

    def no_sb3_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("SB3's own load was called")

    monkeypatch.setattr(agent.PPO, "load", no_sb3_load)
    model = model_files.load_model(
        path, None, "cpu", spaces=_spaces_of(val_block), expected_sha256=sha256_file(path)
    )
    assert model.num_timesteps == 2560 and model.clip_range(1.0) == 0.2
    assert model.env is None  # built to predict: it cannot be trained on a spaces-only env
    saved = weights["policy"]
    for name, value in model.policy.state_dict().items():
        assert torch.equal(value, saved[name]), name


# ---------------------------------------------------------------- fsync before rename


@pytest.mark.integration
def test_checkpoint_is_fsynced_before_the_rename(
    val_block: agent_blocks.AgentBlock,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    venv, _ = agent.make_vec_env(val_block.data, EnvConfig(), RewardConfig(), 2, 0, "dummy")
    model = agent.build_model(_smoke_cfg().ppo, venv, "cpu", None)
    venv.close()
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = callbacks.save_checkpoint(model, tmp_path, 512, keep=3)
    renames = [i for i, (kind, what) in enumerate(events) if what.endswith(f"-> {path}")]
    assert len(renames) == 1
    i = renames[0]
    tmp_name = events[i][1].split(" -> ")[0]
    assert ("fsync", tmp_name) in events[:i]  # the data is on disk before the name points at it
    assert ("fsync", str(tmp_path)) in events[i + 1 :]  # and the rename itself after
    sums = json.loads((tmp_path / art.PPO_CHECKSUMS_NAME).read_text())
    assert sums == {path.name: sha256_file(path)}


# ---------------------------------------------------------------- progress lines, bars per year


@pytest.mark.integration
def test_progress_lines_without_a_terminal(pruned_run: dict[str, Any]) -> None:
    """No terminal (pytest): no SB3 bar, a ProgressLog line at least at the end."""
    lines = [ln for ln in pruned_run["err"].splitlines() if "PPO training:" in ln]
    assert lines and "3072/3072 timesteps (100%)" in lines[-1] and "ETA" in lines[-1]


@pytest.mark.unit
def test_progress_callback_logs_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    cb = callbacks.ProgressLogCallback(1000, interval_s=30.0, clock=lambda: now[0])
    cb.model = SimpleNamespace(num_timesteps=0)  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger=callbacks.__name__):
        cb._on_training_start()
        for t in range(1, 11):
            now[0] = 10.0 * t
            cb.model.num_timesteps = 50 * t
            cb._on_step()
    msgs = [r.getMessage() for r in caplog.records if "PPO training" in r.getMessage()]
    assert msgs == [
        "PPO training: 150/1000 timesteps (15%), 30 s elapsed, ETA 170 s",
        "PPO training: 300/1000 timesteps (30%), 60 s elapsed, ETA 140 s",
        "PPO training: 450/1000 timesteps (45%), 90 s elapsed, ETA 110 s",
    ]


@pytest.mark.unit
def test_progress_bar_only_when_wanted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_PROGRESS", "log")
    assert learn_phase._progress_bar_wanted() is False
    monkeypatch.setenv("PIPELINE_PROGRESS", "bar")
    assert learn_phase._progress_bar_wanted() is True  # tqdm and rich are installed here


@pytest.mark.integration
def test_annualisation_is_inferred_from_the_bars(
    ppo_source_root: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The validation evaluations and the report use the bars per year step 5 inferred over the
    whole dataset and recorded beside the prediction table, and the report says how it was
    inferred (step 7 reads it, never the CSV; training itself is skipped here)."""
    root = _fresh_root(ppo_source_root, tmp_path / "root")
    table_meta = art.Artifacts(Paths.from_root(root), DATASET).prediction_meta("dlstm")
    meta = json.loads(table_meta.read_text())
    assert meta["periods_per_year"] == 8760.0  # hourly 24/7 bars
    meta.update(periods_per_year=252.0, periods_per_year_basis="252 from 4000 bars")
    table_meta.write_text(json.dumps(meta))
    seen: dict[str, float] = {}
    real_eval = callbacks.ValidationEvalCallback.__init__

    def spy_eval(self: Any, *args: Any, **kwargs: Any) -> None:
        real_eval(self, *args, **kwargs)
        seen["bars_per_year"] = self.bars_per_year

    monkeypatch.setattr(callbacks.ValidationEvalCallback, "__init__", spy_eval)
    monkeypatch.setattr(
        agent, "learn", lambda model, total, *a, **k: agent.LearnResult(False, total)
    )
    report = step.train_agent(_smoke_cfg(), DATASET, Paths.from_root(root), resume=False)
    assert seen["bars_per_year"] == 252.0
    assert report["periods_per_year"] == 252.0
    assert report["periods_per_year_basis"] == "252 from 4000 bars"
    saved = json.loads((root / "results" / f"backtest_dlstm_{DATASET}.json").read_text())
    assert saved["periods_per_year_basis"] == "252 from 4000 bars"


@pytest.mark.integration
def test_report_of_a_real_run_says_how_it_annualised(pruned_run: dict[str, Any]) -> None:
    rep = pruned_run["report"]
    assert rep["periods_per_year"] == 8760
    assert isinstance(rep["periods_per_year_basis"], str) and rep["periods_per_year_basis"]
