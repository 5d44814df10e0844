"""A LightGBM classifier as one ONNX graph: raw feature windows in, class probabilities out.

:func:`lightgbm_classifier_onnx` writes the graph the pipeline's predictor computes for a
``lightgbm`` model file (:class:`pipeline.classifiers.nets.BoosterClassifier` behind
:class:`pipeline.classifiers.predictors.PredictionModel`), with the same input and output as
:func:`ppo_approach.export.export_classifier_onnx` (so
:func:`ppo_approach.export.onnx_classifier_probabilities` runs it)::

    windows (B, L, F) float32, raw features
      -> Cast double, Sub mean, Div scale, Cast float       the train block's scaler, as _scale
      -> Cast double; Gather last bar, ReduceMean,           the summary (B, 3F): last bar, mean
         population std (two-pass), Concat; Cast float       and std over the window, float32
      -> Cast double -> TreeEnsembleClassifier (SOFTMAX)     the booster's trees
      -> probabilities (B, 3) float32                        p_fall, p_stationary, p_rise

The trees come from onnxmltools' LightGBM converter, which writes float32 thresholds and leaf
values (``ai.onnx.ml`` opset 1). LightGBM compares a feature with a float64 threshold, and a
float32 threshold rounded to nearest sends a feature equal to it the other way whenever the
rounding went up; so the trees' attributes are rewritten with the booster's own float64
thresholds and leaf values (``*_as_tensor``, ``ai.onnx.ml`` opset 3) and read a float64 input,
paired node by node with LightGBM's dump (a mismatch is an error, not a silent drift). The
summary is computed in float64 and rounded once to float32: for the std this is bit for bit
what torch gives (it accumulates in float64); torch's float32 mean (its summation order
depends on the CPU's vector width) may differ by an ulp.

Opsets: default domain 17, ``ai.onnx.ml`` 3, IR version 8; ONNX Runtime 1.18 and later run it.
onnx, onnxmltools and lightgbm are imported inside the functions that use them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common import atomic_path
from ppo_approach.export import ExportError

OPSET = 17
"""Opset of the default ONNX domain (the scaler and the summary)."""
ML_OPSET = 3
"""Opset of ``ai.onnx.ml``: the first with float64 tree attributes (``*_as_tensor``)."""
IR_VERSION = 8
"""The ONNX IR version written (ONNX 1.12's; the installed onnx would write a newer one, which
ONNX Runtime 1.18 cannot read)."""
INPUT_NAME = "windows"
OUTPUT_NAME = "probabilities"
SUMMARY = "summary"
"""The float64 summary ``(B, 3F)`` the front graph hands to the trees."""
TREES_OUTPUT = "tree_probabilities"
"""The probabilities ``(B, 3)`` of the trees' graph (:func:`_tree_model`)."""
N_CLASSES = 3


def lightgbm_classifier_onnx(payload: dict[str, Any], path: Path) -> Path:
    """Write the LightGBM classifier of a model file's ``payload`` (``arch`` name ``lightgbm``,
    ``booster`` text, ``scaler``, ``lookback``, ``feature_names``) as ONNX to ``path``
    (atomically): ``windows (B, lookback, F)`` raw float32 -> ``probabilities (B, 3)``."""
    onnx = _onnx_packages()
    name = payload.get("arch", {}).get("name")
    if name != "lightgbm":
        raise ExportError(f"not a LightGBM model file (its arch is {name!r})")
    lookback, n_features = int(payload["lookback"]), len(payload["feature_names"])
    booster = _booster(payload, n_features)
    trees = _tree_model(booster, 3 * n_features)  # summary (B, 3F) -> probabilities (B, 3)
    front = _summary_model(payload["scaler"], lookback, n_features)  # windows -> summary
    merged = onnx.compose.merge_models(front, trees, io_map=[(SUMMARY, SUMMARY)], prefix2="trees/")
    model = _renamed_output(merged, f"trees/{TREES_OUTPUT}", lookback, n_features)
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return path


def _onnx_packages() -> Any:
    """The ``onnx`` module, once onnxmltools (which needs it) is known to be installed."""
    if importlib.util.find_spec("onnxmltools") is None:
        raise ExportError("exporting a LightGBM model needs onnxmltools (pip install onnxmltools)")
    if importlib.util.find_spec("lightgbm") is None:
        raise ExportError("exporting a LightGBM model needs lightgbm (pip install lightgbm)")
    import onnx
    import onnx.checker
    import onnx.compose

    return onnx


def _booster(payload: dict[str, Any], n_features: int) -> Any:
    """The payload's ``lightgbm.Booster``: a 3-class multiclass model of ``3 * n_features``
    inputs, else one error line naming what is wrong."""
    import lightgbm

    text = payload.get("booster")
    if not isinstance(text, str):
        raise ExportError(
            f"the model file has no LightGBM model text (its booster is {type(text).__name__})"
        )
    try:
        booster = lightgbm.Booster(model_str=text)
    except lightgbm.basic.LightGBMError as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ExportError(
            f"the model file's booster is not a LightGBM model text (LightGBM: {reason})"
        ) from None
    objective = str(booster.dump_model().get("objective", ""))
    if objective.split(" ")[0] != "multiclass" or booster.num_model_per_iteration() != N_CLASSES:
        raise ExportError(f"the model file's booster is not a 3-class model ({objective!r})")
    if booster.num_feature() != 3 * n_features:
        raise ExportError(
            f"the model file's booster reads {booster.num_feature()} inputs; the summary of "
            f"{n_features} features has {3 * n_features}"
        )
    return booster


def _summary_model(scaler: dict[str, Any], lookback: int, n_features: int) -> Any:
    """``windows (B, L, F)`` raw float32 -> ``summary (B, 3F)`` float64 of the float32 summary
    the predictor hands the booster (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    mean = np.asarray(scaler["mean"], dtype=np.float64)  # (F,)
    scale = np.asarray(scaler["scale"], dtype=np.float64)  # (F,)
    if mean.shape != (n_features,) or scale.shape != (n_features,):
        raise ExportError(
            f"the model file's scaler has {mean.size} means and {scale.size} scales for "
            f"{n_features} features"
        )
    node = helper.make_node
    nodes = [
        node("Cast", [INPUT_NAME], ["raw64"], to=TensorProto.DOUBLE),  # (B, L, F)
        node("Sub", ["raw64", "scaler_mean"], ["centred"]),  # (B, L, F)
        node("Div", ["centred", "scaler_scale"], ["scaled64"]),  # (B, L, F)
        node("Cast", ["scaled64"], ["scaled"], to=TensorProto.FLOAT),  # (B, L, F), as _scale
        node("Cast", ["scaled"], ["x"], to=TensorProto.DOUBLE),  # (B, L, F)
        node("Gather", ["x", "last_bar"], ["last"], axis=1),  # (B, F)
        node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=0),  # (B, F)
        node("ReduceMean", ["x"], ["mean_kept"], axes=[1], keepdims=1),  # (B, 1, F)
        node("Sub", ["x", "mean_kept"], ["deviation"]),  # (B, L, F)
        node("Mul", ["deviation", "deviation"], ["squared"]),  # (B, L, F)
        node("ReduceMean", ["squared"], ["variance"], axes=[1], keepdims=0),  # (B, F)
        node("Sqrt", ["variance"], ["std"]),  # (B, F), population std
        node("Concat", ["last", "mean", "std"], ["summary64"], axis=1),  # (B, 3F)
        node("Cast", ["summary64"], ["summary32"], to=TensorProto.FLOAT),  # (B, 3F), as torch
        node("Cast", ["summary32"], [SUMMARY], to=TensorProto.DOUBLE),  # (B, 3F)
    ]
    initializers = [
        numpy_helper.from_array(mean, "scaler_mean"),
        numpy_helper.from_array(scale, "scaler_scale"),
        numpy_helper.from_array(np.array(-1, dtype=np.int64), "last_bar"),
    ]
    graph = helper.make_graph(
        nodes,
        "scaled_summary",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", lookback, n_features]
            )
        ],
        [helper.make_tensor_value_info(SUMMARY, TensorProto.DOUBLE, ["batch", 3 * n_features])],
        initializers,
    )
    return _model(graph)


def _model(graph: Any) -> Any:
    """``graph`` as a model of this module's opsets and IR version."""
    from onnx import helper

    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ppo_approach")
    model.ir_version = IR_VERSION
    return model


def _tree_model(booster: Any, n_inputs: int) -> Any:
    """``summary (B, n_inputs)`` float64 -> :data:`TREES_OUTPUT` ``(B, 3)`` float32: the booster as
    onnxmltools converts it, its trees rewritten in float64 (:func:`_float64_trees`), its label
    output dropped."""
    from onnx import TensorProto, helper
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    converted = convert_lightgbm(
        booster, initial_types=[(SUMMARY, FloatTensorType([None, n_inputs]))], zipmap=False
    )
    other = {o.domain for o in converted.opset_import} - {"", "ai.onnx.ml"}
    if other:
        raise ExportError(f"onnxmltools wrote operators of other domains: {sorted(other)}")
    graph = converted.graph
    (ensemble,) = [n for n in graph.node if n.op_type == "TreeEnsembleClassifier"]
    _float64_trees(ensemble, booster)
    floats = [o.name for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    if len(floats) != 1:
        raise ExportError(f"onnxmltools' graph has the float outputs {floats}, not one")
    if floats[0] != TREES_OUTPUT:
        graph.node.append(helper.make_node("Identity", [floats[0]], [TREES_OUTPUT]))
    return _pruned(
        _model(graph),
        helper.make_tensor_value_info(SUMMARY, TensorProto.DOUBLE, ["batch", n_inputs]),
        helper.make_tensor_value_info(TREES_OUTPUT, TensorProto.FLOAT, ["batch", N_CLASSES]),
    )


def _renamed_output(merged: Any, probabilities: str, lookback: int, n_features: int) -> Any:
    """``merged`` with its output ``probabilities`` named :data:`OUTPUT_NAME`."""
    from onnx import TensorProto, helper

    merged.graph.node.append(helper.make_node("Identity", [probabilities], [OUTPUT_NAME]))
    return _pruned(
        merged,
        helper.make_tensor_value_info(
            INPUT_NAME, TensorProto.FLOAT, ["batch", lookback, n_features]
        ),
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", N_CLASSES]),
    )


def _pruned(model: Any, graph_input: Any, graph_output: Any) -> Any:
    """``model`` reduced to the nodes from ``graph_input`` to ``graph_output`` (value infos:
    their names, types and shapes), as a model of this module's opsets and IR version."""
    from onnx import utils

    model.graph.output.append(graph_output)  # extract_model needs the name among the values
    graph = utils.Extractor(model).extract_model([graph_input.name], [graph_output.name]).graph
    del graph.input[:], graph.output[:]
    graph.input.append(graph_input)
    graph.output.append(graph_output)
    return _model(graph)


def _float64_trees(ensemble: Any, booster: Any) -> None:
    """Rewrite ``ensemble`` (a TreeEnsembleClassifier node) with the booster's float64 thresholds
    and leaf values, found by walking each ONNX tree beside LightGBM's dump of the same tree:
    every node must pair up (same feature, ``<=`` split, the float32 of the same threshold)."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in ensemble.attribute}
    thresholds = np.asarray(attrs["nodes_values"], dtype=np.float64)  # (n_nodes,)
    weights = np.asarray(attrs["class_weights"], dtype=np.float64)  # (n_leaf_weights,)
    nodes, leaves, roots = _tree_index(attrs)
    dumped = booster.dump_model()["tree_info"]
    if sorted(roots) != list(range(len(dumped))):
        raise ExportError(
            f"onnxmltools wrote {len(roots)} trees, LightGBM's dump has {len(dumped)}"
        )
    visited = 0
    for tree_id, tree in enumerate(dumped):
        stack = [(roots[tree_id], tree["tree_structure"])]
        while stack:
            key, lgb = stack.pop()
            i, visited = nodes.get(key, -1), visited + 1
            if "leaf_value" in lgb:
                _same(i >= 0 and attrs["nodes_modes"][i] == b"LEAF" and key in leaves, tree_id)
                weights[leaves[key]] = float(lgb["leaf_value"])
                continue
            _same(
                i >= 0
                and attrs["nodes_modes"][i] == b"BRANCH_LEQ"
                and lgb.get("decision_type") == "<="
                and attrs["nodes_featureids"][i] == lgb["split_feature"]
                and np.float32(lgb["threshold"]) == np.float32(thresholds[i]),
                tree_id,
            )
            thresholds[i] = float(lgb["threshold"])
            stack.append(((tree_id, attrs["nodes_truenodeids"][i]), lgb["left_child"]))
            stack.append(((tree_id, attrs["nodes_falsenodeids"][i]), lgb["right_child"]))
    _same(visited == len(nodes), -1)
    _set_float64_attributes(ensemble, thresholds, weights)


def _tree_index(
    attrs: dict[str, Any],
) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int], dict[int, tuple[int, int]]]:
    """``(nodes, leaves, roots)`` of a TreeEnsembleClassifier's attributes: the position of each
    ``(tree, node)`` in the ``nodes_*`` and ``class_*`` lists, and each tree's root."""
    tree_ids, node_ids = attrs["nodes_treeids"], attrs["nodes_nodeids"]
    nodes = {(t, n): i for i, (t, n) in enumerate(zip(tree_ids, node_ids, strict=True))}
    leaf_keys = zip(attrs["class_treeids"], attrs["class_nodeids"], strict=True)
    leaves = {key: i for i, key in enumerate(leaf_keys)}
    splits = [i for i, mode in enumerate(attrs["nodes_modes"]) if mode != b"LEAF"]
    children = {(tree_ids[i], attrs["nodes_truenodeids"][i]) for i in splits}
    children |= {(tree_ids[i], attrs["nodes_falsenodeids"][i]) for i in splits}
    roots: dict[int, tuple[int, int]] = {}
    for key in nodes.keys() - children:
        if key[0] in roots:
            raise ExportError(f"tree {key[0]}: onnxmltools wrote a tree with two roots")
        roots[key[0]] = key
    return nodes, leaves, roots


def _same(ok: bool, tree_id: int) -> None:
    """One error line unless ``ok``: onnxmltools' tree ``tree_id`` is not LightGBM's."""
    if not ok:
        where = f"tree {tree_id}" if tree_id >= 0 else "the trees"
        raise ExportError(
            f"{where}: onnxmltools' conversion differs from LightGBM's dump (a split other "
            "than a numerical <=, or another converter version)"
        )


def _set_float64_attributes(ensemble: Any, thresholds: np.ndarray, weights: np.ndarray) -> None:
    """Replace ``nodes_values`` and ``class_weights`` of ``ensemble`` by float64 tensors."""
    from onnx import helper, numpy_helper

    kept = [a for a in ensemble.attribute if a.name not in ("nodes_values", "class_weights")]
    del ensemble.attribute[:]
    ensemble.attribute.extend(kept)
    for name, values in (("nodes_values", thresholds), ("class_weights", weights)):
        tensor = numpy_helper.from_array(values.astype(np.float64), f"{name}_as_tensor")
        ensemble.attribute.append(helper.make_attribute(f"{name}_as_tensor", tensor))
