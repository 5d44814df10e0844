"""``--help`` of every command: it exits 0, every flag has a help text, and the flags a user
relies on are there (one parametrised test instead of a copy per script)."""

from __future__ import annotations

import argparse
import importlib

import pytest

pytestmark = pytest.mark.unit

SCRIPTS: dict[str, tuple[str, ...]] = {
    "runpod_main": ("--dataset", "--verbose", "--skip-validation", "--no-push", "--resume",
                    "--preset", "--set", "--strict"),
    "runpod_train": ("--dataset", "--steps", "--from-step", "--resume", "--no-push",
                     "--no-install", "--preset", "--set", "--strict"),
    "rolling_eval": ("--dataset", "--root", "--verbose", "--preset", "--set", "--strict"),
    "train_models": ("--dataset", "--models", "--force", "--resume", "--root", "--set",
                     "--preset"),
    "runpod_github": ("--dataset", "--root", "--remote", "--branch", "--max-file-mb", "--metric"),
    "download_data": ("--exchange", "--symbol", "--timeframe", "--start", "--end", "--root",
                      "--force"),
    "tune": ("--dataset", "--stage", "--trials", "--timeout", "--storage", "--study", "--model",
             "--space", "--jobs", "--pruner", "--seed", "--heartbeat", "--root", "--preset",
             "--set", "--set-file"),
    "ppo_approach.train_ppo_agent": ("--dataset", "--resume"),
    "runs": ("--dataset", "--compare", "--root"),
    "export": ("--dataset", "--root", "--out", "--preset", "--set"),
    "paper_trade": ("--export", "--replay", "--exchange", "--symbol", "--timeframe", "--start",
                    "--end", "--out", "--fresh", "--max-candles", "--replay-delay", "--poll"),
}  # fmt: skip
"""Script module -> the flags its --help must list (at least)."""


@pytest.mark.parametrize(("module_name", "flags"), list(SCRIPTS.items()), ids=list(SCRIPTS))
def test_help_exits_0_and_documents_every_flag(
    module_name: str, flags: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(module_name)
    parser = module.build_parser()
    undocumented = [
        a.option_strings or [a.dest]
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip())
    ]
    assert undocumented == [], f"{module_name}: flags without help text"
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in flags:
        assert f"  {flag} " in out or f"  {flag}\n" in out or f"  {flag}," in out, flag
    if module_name == "runpod_github":
        assert "GITHUB_TOKEN" in out  # where the credentials come from
