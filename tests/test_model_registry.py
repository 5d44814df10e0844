"""The model registry: names and order, the config's model group, the arch dicts and modules built
from it, the bundled search space, and that it imports no torch."""

from __future__ import annotations

import ast
import dataclasses
import sys
import typing
from pathlib import Path

import pytest

from pipeline.classifiers import model_choice, nets
from pipeline.common import PipelineError
from pipeline.config import checks as config_checks
from pipeline.config import registry as model_registry
from pipeline.config import schema as config_schema
from pipeline.config.registry import ARCHITECTURES, architecture
from pipeline.config.schema import TrainingConfig
from pipeline.tuning.space import default_space_path, parse_param, read_search_space, stage_space

pytestmark = pytest.mark.unit

REGISTRY = Path(model_registry.__file__).resolve()
PIPELINE = REGISTRY.parents[1]

# Trainable parameters of each classifier built from the default TrainingConfig, measured before
# the registry existed (git b9bf668, the old if-chain of build_classifier): a builder or default
# that drifts changes them.
PARAMETERS: dict[tuple[str, int], int] = {
    ("lstm", 26): 1344259,
    ("gru", 26): 159363,
    ("bilstm", 26): 555779,
    ("dlstm", 26): 424710,
    ("logreg", 26): 159,
    ("lstm", 7): 1324803,
    ("gru", 7): 152067,
    ("bilstm", 7): 536323,
    ("dlstm", 7): 405254,
    ("logreg", 7): 45,
    # 60 bars x the 6 per-bar features x 3 classes + 3 biases
    ("window_logreg", 26): 1083,
}


def test_names_and_orders() -> None:
    assert model_registry.MODEL_NAMES == (
        "lstm",
        "gru",
        "bilstm",
        "dlstm",
        "logreg",
        "window_logreg",
        "lightgbm",
    )
    assert model_registry.NETWORK_NAMES == ("lstm", "gru", "bilstm", "dlstm")
    assert model_registry.SIMPLEST_FIRST == (
        "logreg",
        "window_logreg",
        "lightgbm",
        "gru",
        "lstm",
        "bilstm",
        "dlstm",
    )
    # the modules that name them take them from the registry
    assert config_schema.MODEL_NAMES is model_registry.MODEL_NAMES
    assert config_schema.NETWORK_NAMES is model_registry.NETWORK_NAMES
    assert model_choice.SIMPLEST_FIRST is model_registry.SIMPLEST_FIRST
    assert [a.kind for a in ARCHITECTURES] == ["network"] * 4 + ["tabular"] * 3


def test_architecture_lookup() -> None:
    assert architecture("dlstm").arch_keys == ("units", "layers", "dropout", "kernel")
    assert architecture("lightgbm").config_keys == (
        "lightgbm_rounds",
        "lightgbm_learning_rate",
        "lightgbm_leaves",
        "lightgbm_min_leaf_rows",
        "lightgbm_l2",
    )
    with pytest.raises(PipelineError, match="unknown model 'tcn'; expected one of lstm, gru"):
        architecture("tcn")


def test_the_model_group_of_the_config_is_the_registry_one_for_one() -> None:
    """The drift check: TrainingConfig's ``model`` fields are the registry's settings, in
    registry order, with their types, defaults, doc lines and bounds (nothing more, nothing
    less)."""
    fields = [f for f in dataclasses.fields(TrainingConfig) if f.metadata["group"] == "model"]
    hints = typing.get_type_hints(TrainingConfig)
    assert [f.name for f in fields] == list(model_registry.config_keys())
    declared = [(a, s) for a in ARCHITECTURES for s in a.settings]
    for f, (arch, s) in zip(fields, declared, strict=True):
        assert f.name == arch.config_key(s)
        assert hints[f.name] is s.value_type, f.name
        assert f.default == s.default and type(f.default) is s.value_type, f.name
        assert f.metadata["doc"] == s.doc, f.name
        bounds = {k: v for k, v in f.metadata.items() if k not in ("doc", "group")}
        assert bounds == s.checks(), f.name
        # an int bound stays an int: error messages print ">= 1", not ">= 1.0"
        assert {k: type(v) for k, v in bounds.items()} == {
            k: type(v) for k, v in s.checks().items()
        }, f.name
        config_checks.check_value(f, s.default)  # every default passes its own bounds


@pytest.mark.parametrize("name", model_registry.MODEL_NAMES)
def test_arch_config_holds_the_registry_keys(name: str) -> None:
    cfg = TrainingConfig()
    arch = nets.arch_config(name, 26, cfg)
    spec = architecture(name)
    # window_logreg's flat input: the lookback and the per-bar columns it reads at every bar
    window = {"lookback": 60, "input_columns": [0, 5, 6, 7, 8, 12]}
    assert arch == {"name": name, "n_features": 26} | {
        s.key: getattr(cfg, spec.config_key(s)) for s in spec.settings
    } | (window if name == "window_logreg" else {})
    assert cfg.model_params(name) == {s.key: s.default for s in spec.settings}
    picky = dataclasses.replace(cfg, network_features=("ret_1", "body"))
    assert ("input_columns" in nets.arch_config(name, 26, picky)) == (
        spec.is_network or name == "window_logreg"
    )


@pytest.mark.parametrize(("name", "n_features"), list(PARAMETERS), ids=str)
def test_each_classifier_builds_with_the_parameters_it_had(name: str, n_features: int) -> None:
    net = nets.build_classifier(nets.arch_config(name, n_features, TrainingConfig()))
    assert nets.count_parameters(net) == PARAMETERS[(name, n_features)]


def test_every_architecture_has_a_builder() -> None:
    assert set(nets.BUILDERS) == set(model_registry.MODEL_NAMES)
    built = {n for n, _f in PARAMETERS}
    assert built == {a.name for a in ARCHITECTURES if a.name != "lightgbm"}
    with pytest.raises(PipelineError, match="fit by pipeline.classifiers.tabular.fit_lightgbm"):
        nets.build_classifier(nets.arch_config("lightgbm", 26, TrainingConfig()))
    with pytest.raises(PipelineError, match="unknown model 'tcn'"):
        nets.build_classifier({"name": "tcn", "n_features": 26})


def test_the_bundled_classifier_space_has_the_registry_ranges() -> None:
    """Every per-architecture line of pipeline/tuning/search_spaces/classifier.txt is the registry's
    range (parsed the same way); today the file lists all of them."""
    path = default_space_path("classifier")
    bundled = {
        p.key: dataclasses.replace(p, where="")
        for p in read_search_space(path).params
        if p.key in model_registry.config_keys()
    }
    declared = {
        key: dataclasses.replace(parse_param("registry", "training", key, search), where="")
        for a in ARCHITECTURES
        for key, search in a.search_space()
    }
    assert bundled == declared


def test_a_setting_the_space_file_does_not_list_is_tuned_on_its_registry_range(
    tmp_path: Path,
) -> None:
    """A new architecture needs no line in the search-space file: the tuner takes its settings'
    ranges from the registry, and a line in the file still overrides one."""
    space_file = tmp_path / "space.txt"
    space_file.write_text("[training]\nlearning_rate = float 1e-4 1e-2 log\ngru_units = int 8 32\n")
    space = stage_space(read_search_space(space_file), "classifier", "gru")
    by_key = {p.key: p for p in space.params}
    assert list(by_key) == ["learning_rate", "gru_units", "gru_layers", "gru_dropout"]
    assert (by_key["gru_units"].low, by_key["gru_units"].high) == (8, 32)  # the file's line
    layers = dataclasses.replace(by_key["gru_layers"], where="")
    assert layers == dataclasses.replace(
        parse_param("registry", "training", "gru_layers", "int 1 3"), where=""
    )
    assert by_key["gru_layers"].where.startswith("pipeline/config/registry.py")
    # Another architecture's settings stay out of the gru study.
    assert not any(k.startswith("lstm_") for k in by_key)


def test_the_model_group_is_made_from_the_registry() -> None:
    """The model group's fields are not written out in the schema: every registry setting is a
    TrainingConfig field, with the registry's default, in registry order."""
    source = (PIPELINE / "config" / "schema.py").read_text(encoding="utf-8")
    assert "lstm_units" not in source and "logreg_c" not in source
    group = [f for f in dataclasses.fields(TrainingConfig) if f.metadata["group"] == "model"]
    assert [f.name for f in group] == list(model_registry.config_keys())
    cfg = TrainingConfig()
    for key in model_registry.config_keys():
        assert getattr(cfg, key) == model_registry.config_setting(key).default


def _imported_modules(path: Path, top_level_only: bool) -> set[str]:
    """Every module ``path`` imports (also inside functions, unless ``top_level_only``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_registry_imports_no_torch() -> None:
    """model_registry imports only the standard library and pipeline.common, whose own
    module-level imports are the standard library: importing it cannot load torch, scikit-learn
    or LightGBM. (Checked on the source, not in a fresh interpreter: a unit test runs no
    subprocess, and in this process torch is already loaded.)"""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    registry = _imported_modules(REGISTRY, top_level_only=False)
    assert {m for m in registry if m.split(".")[0] not in stdlib} <= {"pipeline", "pipeline.common"}
    # `from pipeline import common` would parse as module "pipeline": only common is named
    tree = ast.parse(REGISTRY.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            assert [a.name for a in node.names] == ["common"]
    common = _imported_modules(PIPELINE / "common.py", top_level_only=True)
    assert {m for m in common if m.split(".")[0] not in stdlib} == set()
    for init in (PIPELINE / "__init__.py", REGISTRY.parent / "__init__.py"):
        package = _imported_modules(init, top_level_only=True)
        assert {m for m in package if m.split(".")[0] not in stdlib} == set()
