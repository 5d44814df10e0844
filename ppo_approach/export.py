"""The trained agent's policy as an ONNX graph, for inference without torch or SB3.

:func:`export_classifier_onnx` writes a classifier (a network, logreg, or LightGBM through
:mod:`ppo_approach.export_lightgbm`) with its train-block scaler inside the graph, ``raw windows
(B, lookback, F) float32 -> probabilities (B, 3)`` (p_fall, p_stationary, p_rise), and
:func:`export_policy_onnx` writes the policy's
action logits as a function of the observation, ``obs (B, n_obs) float32 -> logits (B, n_actions)``,
through SB3's public modules (features extractor, the actor's MLP, the action head); the action
the backtest takes is the ``argmax`` of the logits (for MaskablePPO after setting the invalid
actions' logits to ``-inf``, as sb3-contrib does). :func:`onnx_policy_logits` runs such a file with
ONNX Runtime. An ONNX file is data (a graph of tensor operations), not code: loading it runs
nothing of the file's author.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common import PipelineError, atomic_path
from ppo_approach.model_files import AgentModel
from ppo_approach.runtime import DeciderError, masked_argmax, onnx_session

OPSET = 17
"""ONNX opset of the exported graph (ONNX Runtime 1.16 and later run it)."""
INPUT_NAME = "obs"
OUTPUT_NAME = "logits"


class ExportError(PipelineError):
    """The policy cannot be exported, or an exported file cannot be run."""


def _logits_module(model: AgentModel) -> Any:
    """``obs -> action logits`` of ``model``'s policy as one torch module (the deterministic
    action is their argmax)."""
    import torch

    policy = model.policy

    class PolicyLogits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = policy.pi_features_extractor
            self.mlp = policy.mlp_extractor
            self.head = policy.action_net

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            features = self.features(obs)  # (B, n_obs): Box observations need no preprocessing
            return self.head(self.mlp.forward_actor(features))  # (B, n_actions)

    return PolicyLogits().eval()


def export_policy_onnx(model: AgentModel, path: Path) -> Path:
    """Write ``model``'s policy logits as ONNX to ``path`` (atomically); returns ``path``."""
    import torch

    n_obs = int(np.prod(model.observation_space.shape))
    module = _logits_module(model).to("cpu")
    example = torch.zeros((1, n_obs), dtype=torch.float32)  # (1, n_obs)
    return _export(module, example, path, INPUT_NAME, OUTPUT_NAME)


def _probabilities_module(payload: dict[str, Any]) -> Any:
    """``raw windows -> probabilities`` of a classifier model file: its scaler, network, softmax."""
    import torch

    from pipeline.classifiers.nets import model_from_payload

    network = model_from_payload(payload, torch.device("cpu"))
    mean = torch.as_tensor(np.asarray(payload["scaler"]["mean"], dtype=np.float32))  # (F,)
    scale = torch.as_tensor(np.asarray(payload["scaler"]["scale"], dtype=np.float32))  # (F,)

    class ScaledProbabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network
            self.register_buffer("mean", mean)
            self.register_buffer("scale", scale)

        def forward(self, windows: torch.Tensor) -> torch.Tensor:
            x = (windows - self.mean) / self.scale  # (B, L, F), the train block's scaler
            return torch.softmax(self.network(x).float(), dim=-1)  # (B, 3)

    return ScaledProbabilities().eval()


def export_classifier_onnx(model_file: Path, path: Path) -> Path:
    """Write the classifier of ``model_file`` (``models/{model}_{dataset}_classification.pth``)
    as ONNX to ``path``: raw feature windows in, class probabilities out. LightGBM's booster is
    not a torch module: its trees go through onnxmltools
    (:func:`ppo_approach.export_lightgbm.lightgbm_classifier_onnx`)."""
    from pipeline.classifiers.nets import load_model_file

    return classifier_payload_onnx(load_model_file(model_file), path)


def classifier_payload_onnx(payload: dict[str, Any], path: Path) -> Path:
    """:func:`export_classifier_onnx` of a model file already read (its payload), so that the
    export bundle reads each classifier file once and writes the graph of what it read."""
    import torch

    if payload["arch"].get("name") == "lightgbm":
        from ppo_approach.export_lightgbm import lightgbm_classifier_onnx

        return lightgbm_classifier_onnx(payload, path)
    module = _probabilities_module(payload)
    example = torch.zeros((1, int(payload["lookback"]), len(payload["feature_names"])))
    return _export(module, example, path, "windows", "probabilities")


def onnx_classifier_probabilities(path: Path, windows: np.ndarray) -> np.ndarray:
    """Run an exported classifier on raw ``windows (B, lookback, F)``; ``(B, 3)`` float32."""
    batch = np.asarray(windows, dtype=np.float32)
    (probs,) = _session(path).run(["probabilities"], {"windows": batch})
    return np.asarray(probs)


def _export(module: Any, example: Any, path: Path, input_name: str, output_name: str) -> Path:
    """``module`` traced on ``example`` as ONNX (batch axis dynamic), written atomically. Needs
    the ``onnx`` package (PyTorch's exporter writes the graph with it)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("onnx") is None:
        raise ExportError("exporting needs the onnx package (pip install onnx onnxruntime)")

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, which needs
        # onnxscript; for these modules both give the same graph. Its UserWarnings (constant
        # folding, an LSTM traced with batch 1) are about graphs the parity checks run anyway.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # RNN shape checks, traced once
        torch.onnx.export(
            module,
            (example,),
            buf,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def _session(path: Path) -> Any:
    """:func:`ppo_approach.runtime.onnx_session`, its one error line raised as ExportError."""
    try:
        return onnx_session(path)
    except DeciderError as exc:
        raise ExportError(str(exc)) from None


def onnx_policy_logits(path: Path, obs: np.ndarray) -> np.ndarray:
    """Run the exported policy on ``obs (B, n_obs)``; ``(B, n_actions)`` float32 logits."""
    batch = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)  # (B, n_obs)
    (logits,) = _session(path).run([OUTPUT_NAME], {INPUT_NAME: batch})
    return np.asarray(logits)


decide = masked_argmax
"""The deterministic action of each row of logits (invalid actions masked): the runtime's."""
