"""Config files, presets and --set overrides: types, ranges, and error messages with file:line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipeline.common import run_cli
from pipeline.config.files import (
    PPO_CONFIG_PATH,
    TRAINING_CONFIG_PATH,
    ConfigError,
    PPOConfig,
    TrainingConfig,
    add_config_args,
    available_presets,
    config_from_args,
    load_config,
    load_resolved,
    read_config_file,
    read_preset,
    write_resolved,
)

pytestmark = pytest.mark.unit  # every test here (tiers: tests/conftest.py)


def write(tmp_path: Path, text: str, name: str = "training_config.txt") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_files_parse_to_the_documented_defaults() -> None:
    cfg = load_config()
    assert cfg.training == TrainingConfig()
    assert cfg.ppo == PPOConfig()
    t, p = cfg.training, cfg.ppo
    assert (t.epochs, t.lookback, t.batch_size, t.amp) == (150, 60, 1024, True)
    assert (p.total_timesteps, p.batch_size, p.n_steps, p.n_epochs) == (150_000, 2048, 1024, 20)
    assert (p.learning_rate, p.gamma, p.gae_lambda, p.clip_range) == (3e-4, 0.99, 0.95, 0.2)
    assert (p.net_arch, p.n_envs, p.checkpoint_freq, p.eval_freq, p.eval_episodes) == (
        (1280, 640),
        16,
        25_000,
        5_000,
        5,
    )


def test_every_key_is_documented_in_the_shipped_files() -> None:
    for path, cls in ((TRAINING_CONFIG_PATH, TrainingConfig), (PPO_CONFIG_PATH, PPOConfig)):
        text = path.read_text()
        keys = read_config_file(path, cls)
        assert set(keys) == {f for f in cls.__dataclass_fields__}
        for key in keys:
            line = next(i for i, s in enumerate(text.splitlines()) if s.startswith(f"{key} ="))
            comment = text.splitlines()[line - 1]
            assert comment.startswith("# ") and "(default: " in comment, key


def test_values_are_typed(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "[data]\nlookback = 30  # short\nthreshold_delta = 0.002\namp = off\n"
        "features = ret_1, rsi_14\n",
    )
    values = {k: v for k, (v, _) in read_config_file(p, TrainingConfig).items()}
    assert values == {
        "lookback": 30,
        "threshold_delta": 0.002,
        "amp": False,
        "features": ("ret_1", "rsi_14"),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "lookbak = 60\n",
            "training_config.txt:1: unknown key 'lookbak' (did you mean 'lookback'?)",
        ),
        (
            "lookback = sixty\n",
            "training_config.txt:1: lookback = sixty: 'sixty' is not an integer",
        ),
        ("lookback = 0\n", "training_config.txt:1: lookback = 0: 0 is out of range; expected >= 2"),
        (
            "# x\ntest_fraction = 1.4\n",
            "training_config.txt:2: test_fraction = 1.4: 1.4 is out of range; expected < 1",
        ),
        (
            "epochs = 3\n\nepochs = 4\n",
            "training_config.txt:3: duplicate key 'epochs' (first set at line 1)",
        ),
        ("amp = maybe\n", "amp = maybe: 'maybe' is not a boolean; expected true or false"),
        ("device = tpu\n", "'tpu' is not allowed; expected one of auto, cpu, cuda"),
        ("just some words\n", "training_config.txt:1: expected 'key = value'"),
        ("lookback =\n", "training_config.txt:1: lookback = : is empty"),
    ],
)
def test_file_errors_name_file_line_and_value(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p, None)
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_ppo_file_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "net_arch = 1280, 0\n", "ppo_config.txt")
    with pytest.raises(
        ConfigError, match=r"ppo_config.txt:1: net_arch = 1280, 0: 0 is out of range"
    ):
        load_config(None, p)
    p = write(tmp_path, "ensemble_models = dlstm, transformer\n", "ppo_config.txt")
    with pytest.raises(ConfigError, match="'transformer' is not allowed"):
        load_config(None, p)
    p = write(tmp_path, "prediction_model = ensemble\nensemble_models = gru\n", "ppo_config.txt")
    with pytest.raises(ConfigError, match="an ensemble needs at least 2 members"):
        load_config(None, p)


def test_cross_key_checks_name_both_keys(tmp_path: Path) -> None:
    p = write(tmp_path, "lookback = 60\nsmoothing_k = 5\npurge_gap = 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, None)
    assert "purge_gap = 10" in str(err.value) and "smoothing_k + lookback = 65" in str(err.value)
    assert "training_config.txt:3" in str(err.value)


def test_overrides_bare_and_qualified() -> None:
    cfg = load_config(
        overrides=["lookback=30", "ppo.batch_size=64", "training.batch_size=128", "gamma=0.9"]
    )
    assert cfg.training.lookback == 30
    assert cfg.ppo.batch_size == 64
    assert cfg.training.batch_size == 128
    assert cfg.ppo.gamma == 0.9
    assert cfg.sources["ppo.gamma"] == "--set"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "batch_size=64",
            "'batch_size' is in both training_config.txt and ppo_config.txt; write "
            "training.batch_size or ppo.batch_size",
        ),
        ("gamm=0.9", "unknown key 'gamm' (did you mean 'gamma'?)"),
        ("ppo.lookback=3", "unknown key 'lookback' in ppo_config.txt"),
        ("model.units=3", "unknown section 'model'"),
        ("lookback", "expected key=value"),
        ("n_envs=0", "--set n_envs=0: n_envs 0 is out of range; expected >= 1"),
    ],
)
def test_override_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)


def test_presets_apply_between_file_and_overrides() -> None:
    cfg = load_config(preset="smoke", overrides=["epochs=1"])
    smoke = read_preset("smoke")
    assert cfg.training.lstm_units == smoke["training"]["lstm_units"][0]
    assert cfg.ppo.total_timesteps == smoke["ppo"]["total_timesteps"][0]
    assert cfg.training.epochs == 1
    assert cfg.sources["training.lstm_units"] == "preset smoke"
    with pytest.raises(ConfigError, match="unknown preset .*did you mean 'smoke'"):
        load_config(preset="smok")


def test_every_preset_is_valid() -> None:
    assert {"smoke", "demo"} <= set(available_presets())
    for name in available_presets():
        load_config(preset=name)


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(preset="smoke", overrides=["threshold_delta=0.003", "allow_short=true"])
    path = write_resolved(cfg, tmp_path / "sub" / "resolved.txt")
    back = load_resolved(path)
    assert back.training == cfg.training and back.ppo == cfg.ppo
    assert back.hash() == cfg.hash()
    assert not list((tmp_path / "sub").glob("*.tmp")), "no temp file left behind"


def test_model_hash_ignores_other_models_and_run_settings() -> None:
    base = load_config().training
    other = load_config(overrides=["gru_units=7", "training.device=cpu", "min_disk_gb=1"]).training
    own = load_config(overrides=["lstm_units=7"]).training
    data = load_config(overrides=["smoothing_k=7"]).training
    assert base.hash_for_model("lstm") == other.hash_for_model("lstm")
    assert base.hash_for_model("lstm") != own.hash_for_model("lstm")
    assert base.hash_for_model("gru") != other.hash_for_model("gru")
    assert base.hash_for_model("dlstm") != data.hash_for_model("dlstm")


def test_cli_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    args = parser.parse_args(["--set", "lookback=0"])
    code = run_cli(lambda: (config_from_args(args), 0)[1])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "error: --set lookback=0: lookback 0 is out of range; expected >= 2\n"


# ---------------------------------------------------------------- non-finite and absurd values


def _float_keys() -> list[tuple[str, str]]:
    """(section, key) of every float field, optional floats included."""
    import dataclasses
    import typing

    out = []
    for section, cls in (("training", TrainingConfig), ("ppo", PPOConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if float in (hints[f.name], *typing.get_args(hints[f.name])):
                out.append((section, f.name))
    return out


def test_every_float_key_is_covered() -> None:
    keys = {k for _, k in _float_keys()}
    # Keys where NaN once passed every range check, so the helper above cannot silently find none.
    assert {"learning_rate", "gamma", "lstm_dropout", "test_fraction", "min_disk_gb"} <= keys
    assert {"initial_capital", "transaction_cost", "threshold_delta"} <= keys


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_non_finite_rejected_for_every_float_key_via_set(bad: str) -> None:
    # Range checks with < / > are False for NaN, so NaN passed every range.
    for section, key in _float_keys():
        text = f"{section}.{key}={bad}"
        with pytest.raises(ConfigError) as err:
            load_config(None, None, overrides=[text])
        msg = str(err.value)
        assert msg.startswith(f"--set {text}: {key} "), msg
        assert "not a finite number" in msg and "expected" in msg, msg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate = nan\n", "training_config.txt:1: learning_rate = nan: "),
        ("lstm_dropout = nan\n", "training_config.txt:1: lstm_dropout = nan: "),
        ("test_fraction = nan\n", "training_config.txt:1: test_fraction = nan: "),
        ("\nmin_disk_gb = nan\n", "training_config.txt:2: min_disk_gb = nan: "),
        ("threshold_delta = inf\n", "training_config.txt:1: threshold_delta = inf: "),
    ],
)
def test_non_finite_in_file_names_file_line_key_value(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), None)
    assert message in str(err.value)
    assert "not a finite number" in str(err.value)


@pytest.mark.parametrize(
    "text", ["gamma = nan\n", "initial_capital = inf\n", "transaction_cost = nan\n"]
)
def test_non_finite_in_ppo_file(tmp_path: Path, text: str) -> None:
    key, _, value = text.strip().partition(" = ")
    with pytest.raises(ConfigError) as err:
        load_config(None, write(tmp_path, text, "ppo_config.txt"))
    assert f"ppo_config.txt:1: {key} = {value}: " in str(err.value)
    assert "not a finite number" in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("total_timesteps=1e30", "total_timesteps 1e+30 is out of range; expected <= 2147483647"),
        ("epochs=99999999999", "epochs 1e+11 is out of range; expected <= 2147483647"),
        ("ppo.net_arch=64, 1e20", "1e+20 is out of range; expected <= 2147483647"),
        ("initial_capital=1e300", "initial_capital 1e+300 is out of range; expected <= 1e+15"),
        ("ppo.learning_rate=5", "learning_rate 5.0 is out of range; expected <= 1"),
    ],
)
def test_absurd_values_rejected(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, None, overrides=[override])
    assert message in str(err.value)


def _preset_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    """A presets folder holding one ``smoke.txt`` with ``text``, in place of the shipped one."""
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "smoke.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr("pipeline.config.files.PRESETS_DIR", folder)
    return folder / "smoke.txt"


def test_bad_preset_value_names_the_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _preset_dir(tmp_path, monkeypatch, "# bad\n[training]\nlearning_rate = nan\n")
    with pytest.raises(ConfigError) as err:
        load_config(None, None, preset="smoke")
    # Presets are files now, so the error names the preset's file and line
    assert str(err.value).startswith(f"{path}:3: learning_rate = nan: ")
    assert "not a finite number" in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "# for tests\n[training]\nlookbak = 3\n",
            ":3: unknown key 'lookbak' in [training] (did you mean 'lookback'?)",
        ),
        ("[ppo]\nlookback = 3\n", ":2: unknown key 'lookback' in [ppo]"),
        ("lookback = 3\n", ":1: key before any [training] or [ppo] section"),
        ("[model]\nlstm_units = 3\n", ":1: unknown section [model]; expected [training] or [ppo]"),
        ("[ppo]\nn_envs = 2\nn_envs = 3\n", ":3: duplicate key 'n_envs' (first set at line 2)"),
        ("[ppo]\nprofit_scale = 0\n", ":2: profit_scale = 0: 0.0 is out of range; expected > 0"),
    ],
)
def test_preset_file_errors_name_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    # A preset file goes through the same parser and checks as the config files
    path = _preset_dir(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError) as err:
        load_config(None, None, preset="smoke")
    assert str(err.value).startswith(f"{path}{message}"), str(err.value)


def test_preset_choices_and_help_list_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = argparse.ArgumentParser()
    add_config_args(shipped)
    text = shipped.format_help()
    assert "smoke = tiny models" in text and "demo = the README's demo" in text
    _preset_dir(tmp_path, monkeypatch, "# only for this test, 100% tiny\n[ppo]\nn_envs = 1\n")
    (tmp_path / "presets" / "mine.txt").write_text("# mine\n[training]\nepochs = 1\n")
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    help_text = " ".join(parser.format_help().split())
    assert "smoke = only for this test, 100% tiny" in help_text and "mine = mine" in help_text
    assert parser.parse_args(["--preset", "mine"]).preset == "mine"
    with pytest.raises(SystemExit):
        parser.parse_args(["--preset", "demo"])  # not in this folder
    assert load_config(None, None, preset="mine").training.epochs == 1


def test_validate_catches_values_set_in_code() -> None:
    from pipeline.config.files import Config, validate

    cfg = Config(TrainingConfig(lstm_dropout=float("nan")), PPOConfig(), {})
    with pytest.raises(ConfigError, match="lstm_dropout = nan .*default.*not a finite number"):
        validate(cfg)


def test_cli_error_for_nan_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    args = parser.parse_args(["--set", "gamma=nan"])
    code = run_cli(lambda: (config_from_args(args), 0)[1])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        "error: --set gamma=nan: gamma nan is not a finite number; expected > 0 and <= 1\n"
    )


# ---------------------------------------------------------------- env and reward ranges


def _env_and_reward_bounds() -> list[tuple[str, str, float]]:
    """``(key, bound kind, bound)`` of every bounded env/reward setting of PPOConfig."""
    import dataclasses

    return [
        (f.name, kind, f.metadata[kind])
        for f in dataclasses.fields(PPOConfig)
        if f.metadata["group"] in ("env", "reward")
        for kind in ("min", "gt", "max", "lt")
        if kind in f.metadata
    ]


def test_profit_scale_zero_is_refused_at_load_time(tmp_path: Path) -> None:
    # profit_scale = 0 passed the config, then RewardConfig refused it in step 7
    with pytest.raises(ConfigError) as err:
        load_config(None, None, overrides=["profit_scale=0"])
    assert str(err.value) == "--set profit_scale=0: profit_scale 0.0 is out of range; expected > 0"
    path = write(tmp_path, "[reward]\n\nprofit_scale = 0\n", "ppo_config.txt")
    with pytest.raises(ConfigError) as err:
        load_config(None, path)
    assert str(err.value).startswith(f"{path}:3: profit_scale = 0: ")


def test_every_env_and_reward_range_is_checked_at_load_time() -> None:
    # Every value the env or the reward refuses is refused by load_config first, with the --set that
    # gave it; the boundary of an inclusive bound is accepted by all three.
    from ppo_approach.reward_functions import RewardConfig, RewardConfigError
    from ppo_approach.trading_env import EnvConfig, EnvConfigError

    bounds = _env_and_reward_bounds()
    assert {k for k, _, _ in bounds} >= {"profit_scale", "sharpe_eta", "ruin_threshold"}
    for key, kind, bound in bounds:
        outside = bound - 1 if kind in ("min", "gt") else bound + 1
        text = f"{key}={outside}"
        with pytest.raises(ConfigError) as err:
            load_config(None, None, overrides=[text])
        assert str(err.value).startswith(f"--set {text}: {key} "), str(err.value)
        cls, error = (
            (EnvConfig, EnvConfigError)
            if key in EnvConfig.__dataclass_fields__
            else (RewardConfig, RewardConfigError)
        )
        with pytest.raises(error, match=key):
            cls(**{key: outside})
        if kind in ("min", "max"):
            cfg = load_config(None, None, overrides=[f"{key}={bound}"])
            assert getattr(cls.from_ppo_config(cfg.ppo), key) == bound
    with pytest.raises(ConfigError, match=r"--set episode_length=2\.5: .*not an integer"):
        load_config(None, None, overrides=["episode_length=2.5"])


# ---------------------------------------------------------------- --set-file


def _set_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "best_params.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_set_file_applies_after_the_preset_and_before_set(tmp_path: Path) -> None:
    from pipeline.config.files import load_config

    path = _set_file(
        tmp_path,
        "# tuned\nlookback = 24\n[ppo]\nlearning_rate = 0.0005\nbatch_size = 128\n"
        "training.batch_size = 64\n",
    )
    cfg = load_config(None, None, "smoke", ["lookback=40"], [path])
    assert cfg.training.lookback == 40  # --set wins
    assert cfg.ppo.learning_rate == 0.0005  # the file beats the preset / defaults
    assert (cfg.ppo.batch_size, cfg.training.batch_size) == (128, 64)
    assert cfg.sources["ppo.learning_rate"] == f"{path}:4"
    assert cfg.sources["training.batch_size"] == f"{path}:6"


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("lookback = 24\nlookbak = 3\n", 2, "unknown key 'lookbak'"),
        ("batch_size = 64\n", 1, "'batch_size' is in both training_config.txt and ppo_config.txt"),
        ("[ppo]\ngamma = 2\n", 2, "gamma = 2: 2.0 is out of range; expected <= 1"),
        ("[model]\nlookback = 2\n", 1, "unknown section [model]"),
        ("lookback = 24\nlookback = 30\n", 2, "duplicate key 'lookback'"),
        ("lookback 24\n", 1, "expected 'key = value'"),
    ],
)
def test_a_bad_set_file_line_is_one_error_naming_file_and_line(
    tmp_path: Path, text: str, line: int, expected: str
) -> None:
    from pipeline.config.files import load_config

    path = _set_file(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(None, None, None, [], [path])
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert expected in str(err.value)
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=rf"^{missing}: --set-file not found"):
        load_config(None, None, None, [], [missing])


def test_every_step_and_the_entry_point_take_set_file(tmp_path: Path) -> None:
    import runpod_main
    import runpod_train
    import train_models
    from pipeline.config.files import config_from_args, passthrough_args
    from ppo_approach import train_ppo_agent

    path = _set_file(tmp_path, "[ppo]\nn_epochs = 3\n")
    for parser in (
        runpod_main.build_parser(),
        runpod_train.build_parser(),
        train_models.build_parser(),
        train_ppo_agent.build_parser(),
    ):
        args = parser.parse_args(["--dataset", "X", "--set-file", str(path)])
        assert config_from_args(args).ppo.n_epochs == 3
        passed = passthrough_args(args)
        assert passed[passed.index("--set-file") + 1] == str(path)


@pytest.mark.unit
def test_network_features_outside_the_feature_list_is_one_error_at_load() -> None:
    """Checked when the config is read, not after step 5 has loaded the data."""
    with pytest.raises(ConfigError, match=r"^network_features: volume not in the feature list .*"
                       r"\(--set\)$"):  # fmt: skip
        load_config(overrides=["network_features=ret_1,volume"])
    cfg = load_config(overrides=["network_features=ret_1,hl_range"])
    assert cfg.training.network_columns() == [0, 5]
