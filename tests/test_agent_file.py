"""The agent file: SB3's public ``get_parameters`` / ``set_parameters`` with JSON beside them.

Tiny models on spaces alone (no market data, no training), so every case runs in a second.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO

from pipeline.common import sha256_file
from pipeline.config.schema import PPOConfig
from ppo_approach import model_files
from ppo_approach import ppo_trading_agent as agent

pytestmark = pytest.mark.unit

OBS = spaces.Box(
    low=np.array([-10.0, -10.0, -10.0, 0.0], dtype=np.float32),
    high=np.array([10.0, 10.0, 10.0, 1.0], dtype=np.float32),
    dtype=np.float32,
)
ACT = spaces.Discrete(3)


def _model(algorithm: str = "ppo") -> Any:
    cfg = PPOConfig(algorithm=algorithm, n_steps=64, batch_size=32, net_arch=(16, 16), seed=3)
    return model_files.new_model(algorithm, agent.ppo_kwargs(cfg), None, "cpu", spaces_=(OBS, ACT))


def _step_optimizer(model: Any) -> None:
    """One Adam step, so the optimizer has state (moments, step count) worth saving."""
    obs = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (8, 4)), dtype=torch.float32)
    loss = model.policy.evaluate_actions(obs, torch.zeros(8))[0].sum()
    model.policy.optimizer.zero_grad()
    loss.backward()
    model.policy.optimizer.step()


@pytest.mark.parametrize("algorithm", ["ppo", "maskable_ppo"])
def test_settings_read_back_are_the_configs_keyword_arguments(algorithm: str) -> None:
    cfg = PPOConfig(algorithm=algorithm, clip_range=0.3, ent_coef=0.02, net_arch=(32, 8))
    model = model_files.new_model(algorithm, agent.ppo_kwargs(cfg), None, "cpu", spaces_=(OBS, ACT))
    assert model_files.agent_settings(model) == json.loads(json.dumps(agent.ppo_kwargs(cfg)))
    assert model_files.algorithm_of(model) == algorithm


@pytest.mark.parametrize("algorithm", ["ppo", "maskable_ppo"])
def test_save_and_load_give_back_the_same_agent(algorithm: str, tmp_path: Path) -> None:
    model = _model(algorithm)
    _step_optimizer(model)
    model.num_timesteps, model._n_updates = 4096, 12
    path = model_files.save_model_atomic(model, tmp_path / "agent.zip", record_checksum=True)
    assert model_files.read_checksums(tmp_path) == {"agent.zip": sha256_file(path)}

    loaded = model_files.load_model(path, None, "cpu", expected_sha256=sha256_file(path))
    assert type(loaded) is type(model) and loaded.env is None
    assert loaded.num_timesteps == 4096 and loaded._n_updates == 12
    assert model_files.agent_settings(loaded) == model_files.agent_settings(model)
    for name, value in model.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[name], value), name
    saved_opt, loaded_opt = (
        model.policy.optimizer.state_dict(),
        loaded.policy.optimizer.state_dict(),
    )
    assert saved_opt["param_groups"] == loaded_opt["param_groups"]
    for key, state in saved_opt["state"].items():
        for field, value in state.items():
            assert torch.equal(
                torch.as_tensor(loaded_opt["state"][key][field]), torch.as_tensor(value)
            )
    obs = np.random.default_rng(1).uniform(-1, 1, (50, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


def test_a_saved_file_is_the_same_bytes_each_time(tmp_path: Path) -> None:
    """Same agent, same file: hashes recorded in checksums.json can be compared across saves."""
    model = _model()
    a = model_files.save_model_atomic(model, tmp_path / "a.zip").read_bytes()
    b = model_files.save_model_atomic(model, tmp_path / "b.zip").read_bytes()
    assert a == b


def test_spaces_round_trip_through_json_with_infinite_bounds() -> None:
    box = spaces.Box(low=-np.inf, high=np.inf, shape=(2, 3), dtype=np.float32)
    text = json.dumps(model_files.space_to_json(box), allow_nan=False)
    back = model_files.space_from_json(json.loads(text))
    assert back == box and back.dtype == np.float32
    assert model_files.space_from_json(model_files.space_to_json(ACT)) == ACT
    assert model_files.space_from_json(model_files.space_to_json(OBS)) == OBS


def _rewrite(path: Path, **entries: bytes) -> None:
    with zipfile.ZipFile(path) as z:
        current = {n: z.read(n) for n in z.namelist()}
    current.update(entries)
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in current.items():
            z.writestr(name, raw)


def _meta(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read(model_files.META_ENTRY))


def test_damaged_and_foreign_files_are_one_line_each(tmp_path: Path) -> None:
    path = model_files.save_model_atomic(_model(), tmp_path / "agent.zip")
    good = path.read_bytes()

    def error(**kwargs: Any) -> model_files.AgentError:
        with pytest.raises(model_files.AgentError) as info:
            model_files.load_model(path, None, "cpu", **kwargs)
        assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: ")
        return info.value

    path.write_bytes(good[: len(good) // 2])
    assert isinstance(error(), model_files.CorruptModelError)

    path.write_bytes(good)
    meta = _meta(path)
    _rewrite(path, **{"agent.json": json.dumps({**meta, "format": "ppo-agent/9"}).encode()})
    exc = error()
    assert not isinstance(exc, model_files.CorruptModelError)
    assert "format 'ppo-agent/9'; expected 'ppo-agent/1'" in str(exc)

    path.write_bytes(good)
    _rewrite(path, **{"agent.json": json.dumps({**meta, "settings": None}).encode()})
    assert isinstance(error(), model_files.CorruptModelError)

    path.write_bytes(good)
    exc = error(algorithm="maskable_ppo")
    assert "a ppo model, but the config says algorithm = maskable_ppo" in str(exc)

    wider = spaces.Box(low=-1, high=1, shape=(7,), dtype=np.float32)
    exc = error(spaces=(wider, ACT))
    assert "observations of shape [4], but the environment has [7]" in str(exc)
    exc = error(spaces=(OBS, spaces.Discrete(5)))
    assert "3 actions, but the environment has 5" in str(exc)


def test_loading_never_calls_sb3s_own_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SB3's ``load`` reads its private save layout (and unpickles): an SB3 upgrade that changes
    it cannot break loading an agent file."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("SB3's own load was called")

    for cls in (PPO, MaskablePPO):
        monkeypatch.setattr(cls, "load", refuse)
    for algorithm in ("ppo", "maskable_ppo"):
        path = model_files.save_model_atomic(_model(algorithm), tmp_path / f"{algorithm}.zip")
        assert model_files.algorithm_of(model_files.load_model(path, None, "cpu")) == algorithm


def test_an_sb3_zip_is_refused_even_without_pickled_entries(tmp_path: Path) -> None:
    model = _model()
    model.save(tmp_path / "old.zip")
    with pytest.raises(model_files.OldModelFormatError) as info:
        model_files.load_model(tmp_path / "old.zip", None, "cpu")
    assert str(info.value).startswith(f"{tmp_path / 'old.zip'}: a stable-baselines3 zip saved by")


def test_the_parameters_entry_is_loaded_weights_only(tmp_path: Path) -> None:
    path = model_files.save_model_atomic(_model(), tmp_path / "agent.zip")
    with zipfile.ZipFile(path) as z:
        raw = z.read(model_files.PARAMS_ENTRY)
    params = torch.load(io.BytesIO(raw), weights_only=True)
    assert set(params) == {"policy", "policy.optimizer"}
