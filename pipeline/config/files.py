"""Reading the config: ``key = value`` files, presets, ``--set`` overrides, argparse helpers, and
writing the resolved config beside each artifact.

``training_config.txt`` and ``ppo_approach/ppo_config.txt`` are read into the schema's
:class:`~pipeline.config.schema.TrainingConfig` and :class:`~pipeline.config.schema.PPOConfig`
(types, defaults, ranges and doc lines live in :mod:`pipeline.config.schema`).
Precedence: dataclass defaults < file < ``--preset NAME`` < ``--set-file FILE`` <
``--set key=value``.
Like nanoGPT's configurator, unknown keys are rejected, but here with the file, line and a "did you
mean" suggestion, and every value is parsed with the field's type and checked against its range.

File format::

    # comment
    [section]            # optional, only for reading at a glance; keys are flat
    lookback = 60        # inline comments are fine
    threshold_delta = auto
    net_arch = 1280, 640

Presets are files ``pipeline/config/presets/NAME.txt`` in the format of the resolved config:
``[training]`` and ``[ppo]`` sections say which file each key belongs to (some keys, such as
``batch_size``, are in both), and the first line is a comment saying what the preset is for (the
``--preset`` help shows it). They are read by the same line parser as the config files, so an error
names the preset file and line.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.common import PROJECT_ROOT, atomic_write_text
from pipeline.config.checks import check_value, field_map
from pipeline.config.schema import Config, ConfigError, PPOConfig, TrainingConfig
from pipeline.config.values import _suggest, format_value, parse_value

TRAINING_CONFIG_PATH = PROJECT_ROOT / "training_config.txt"
PPO_CONFIG_PATH = PROJECT_ROOT / "ppo_approach" / "ppo_config.txt"
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
"""Where ``--preset NAME`` finds ``NAME.txt``."""

SECTIONS: dict[str, type] = {"training": TrainingConfig, "ppo": PPOConfig}
FILE_OF_SECTION = {"training": "training_config.txt", "ppo": "ppo_config.txt"}

Entries = dict[str, tuple[Any, str]]
"""``{key: (value, "file:line")}`` as read from one file or one section."""


# ================================================================ files


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a {what} (a text file)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason})") from None


def _lines(
    path: Path, text: str, expected: str = "'key = value'"
) -> Iterator[tuple[str, str | None, str, str]]:
    """Yield ``(where, section, key, raw)`` per meaningful line: ``section`` is the name of a
    ``[section]`` line (``key`` and ``raw`` empty then), ``None`` on a ``key = value`` line.
    ``expected`` is what the error line says a line without ``=`` should have been."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{lineno}"
        stripped = line.split("#", 1)[0].strip()
        if not stripped:
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            yield where, stripped[1:-1].strip(), "", ""
            continue
        if "=" not in stripped:
            raise ConfigError(f"{where}: expected {expected}, got {stripped!r}")
        key, _, raw = (s.strip() for s in stripped.partition("="))
        yield where, None, key, raw


def _add_entry(cls: type, seen: Entries, where: str, key: str, raw: str, in_section: str) -> None:
    """Parse ``key = raw`` for ``cls`` into ``seen``; ConfigError naming ``where`` if it is bad."""
    fields = field_map(cls)
    if key not in fields:
        raise ConfigError(f"{where}: unknown key {key!r}{in_section}{_suggest(key, fields)}")
    if key in seen:
        first = seen[key][1].rpartition(":")[2]
        raise ConfigError(f"{where}: duplicate key {key!r} (first set at line {first})")
    try:
        value = parse_value(cls, key, raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key} = {raw}: {exc}") from None
    seen[key] = (value, where)


def read_config_file(path: str | Path, cls: type) -> Entries:
    """Parse one ``key = value`` file for ``cls``; returns ``{key: (value, "file:line")}``.

    ``[section]`` lines are only for reading: every key belongs to ``cls``.
    """
    path = Path(path)
    seen: Entries = {}
    for where, section, key, raw in _lines(path, _read_text(path, "config file")):
        if section is None:
            _add_entry(cls, seen, where, key, raw, "")
    return seen


def read_sectioned_file(path: str | Path, what: str = "config file") -> dict[str, Entries]:
    """Parse a file whose ``[training]`` / ``[ppo]`` sections say which class each key is for
    (resolved configs and presets); returns ``{section: {key: (value, "file:line")}}``."""
    path = Path(path)
    out: dict[str, Entries] = {name: {} for name in SECTIONS}
    current = None
    for where, section, key, raw in _lines(path, _read_text(path, what)):
        if section is not None:
            if section not in SECTIONS:
                raise ConfigError(
                    f"{where}: unknown section [{section}]; expected [training] or [ppo]"
                )
            current = section
        elif current is None:
            raise ConfigError(f"{where}: key before any [training] or [ppo] section")
        else:
            _add_entry(SECTIONS[current], out[current], where, key, raw, f" in [{current}]")
    return out


# ================================================================ presets


def available_presets() -> dict[str, Path]:
    """``{name: path}`` of the preset files in :data:`PRESETS_DIR`, sorted by name."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.txt"))}


def preset_summary(path: Path) -> str:
    """What a preset is for: its first line, a comment (empty if the file has none)."""
    first = path.read_text(encoding="utf-8-sig").partition("\n")[0].strip()
    return first[1:].strip() if first.startswith("#") else ""


def read_preset(name: str) -> dict[str, Entries]:
    """The values of preset ``name`` by section; ConfigError for an unknown name or a bad file."""
    presets = available_presets()
    if name not in presets:
        raise ConfigError(
            f"--preset {name}: unknown preset{_suggest(name, presets)}; "
            f"expected one of {', '.join(presets)}"
        )
    return read_sectioned_file(presets[name], "preset file")


# ================================================================ overrides and loading


def _locate_key(key: str) -> tuple[str, str]:
    """Resolve ``key`` or ``section.key`` to ``(section, key)`` for ``--set`` and presets."""
    if "." in key:
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError(
                f"--set {key}: unknown section {section!r}; expected 'training.' or 'ppo.'"
            )
        if name not in field_map(SECTIONS[section]):
            fields = field_map(SECTIONS[section])
            raise ConfigError(
                f"--set {key}: unknown key {name!r} in {FILE_OF_SECTION[section]}"
                f"{_suggest(name, fields)}"
            )
        return section, name
    owners = [s for s, cls in SECTIONS.items() if key in field_map(cls)]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(
            f"--set {key}: {key!r} is in both training_config.txt and ppo_config.txt; "
            f"write training.{key} or ppo.{key}"
        )
    everything = [k for cls in SECTIONS.values() for k in field_map(cls)]
    raise ConfigError(f"--set {key}: unknown key {key!r}{_suggest(key, everything)}")


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse one ``--set key=value`` into ``(section, key, value)``."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key=value")
    key, _, raw = (s.strip() for s in text.partition("="))
    section, name = _locate_key(key)
    try:
        return section, name, parse_value(SECTIONS[section], name, raw)
    except ValueError as exc:
        raise ConfigError(f"--set {text}: {name} {exc}") from None


def read_set_file(path: str | Path) -> dict[str, Entries]:
    """Parse a ``--set-file`` (the tuner's best parameters): ``key = value`` lines, each
    key resolved like ``--set`` (``training.KEY`` / ``ppo.KEY`` or a ``[training]`` / ``[ppo]``
    section when the key is in both files); returns ``{section: {key: (value, "file:line")}}``.
    Every error names the file and line."""
    path = Path(path)
    out: dict[str, Entries] = {name: {} for name in SECTIONS}
    current: str | None = None
    for where, section, key, raw in _lines(path, _read_text(path, "--set-file")):
        if section is not None:
            if section not in SECTIONS:
                raise ConfigError(
                    f"{where}: unknown section [{section}]; expected [training] or [ppo]"
                )
            current = section
            continue
        if current is not None and "." not in key:
            owner, name = current, key
        else:
            try:
                owner, name = _locate_key(key)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {str(exc).removeprefix(f'--set {key}: ')}") from None
        _add_entry(SECTIONS[owner], out[owner], where, name, raw, f" in [{owner}]")
    return out


def load_config(
    training_path: str | Path | None = TRAINING_CONFIG_PATH,
    ppo_path: str | Path | None = PPO_CONFIG_PATH,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    set_files: Sequence[str | Path] = (),
) -> Config:
    """Read both files (``None`` = defaults), then apply ``preset``, the ``set_files``
    (``--set-file``, in order) and ``overrides`` (``--set``) in that order."""
    values: dict[str, dict[str, Any]] = {"training": {}, "ppo": {}}
    sources: dict[str, str] = {}
    for section, path in (("training", training_path), ("ppo", ppo_path)):
        if path is None:
            continue
        for key, (value, where) in read_config_file(path, SECTIONS[section]).items():
            values[section][key] = value
            sources[f"{section}.{key}"] = where
    if preset is not None:
        for section, entries in read_preset(preset).items():
            for key, (value, _where) in entries.items():
                values[section][key] = value
                sources[f"{section}.{key}"] = f"preset {preset}"
    for set_file in set_files:
        for section, entries in read_set_file(set_file).items():
            for key, (value, where) in entries.items():
                values[section][key] = value
                sources[f"{section}.{key}"] = where
    for text in overrides:
        section, key, value = parse_override(text)
        values[section][key] = value
        sources[f"{section}.{key}"] = "--set"
    cfg = Config(TrainingConfig(**values["training"]), PPOConfig(**values["ppo"]), sources)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Checks that span several keys; each error names the keys and where they were set."""
    train_cfg, ppo_cfg = cfg.training, cfg.ppo

    def where(key: str) -> str:
        return cfg.sources.get(key, "default")

    # Every field again, for configs built in code rather than parsed.
    for section, obj in (("training", train_cfg), ("ppo", ppo_cfg)):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            try:
                check_value(f, value)
            except ValueError as exc:
                raise ConfigError(
                    f"{f.name} = {format_value(value)} ({where(f'{section}.{f.name}')}): {exc}"
                ) from None

    if train_cfg.test_fraction + train_cfg.val_fraction * (1 - train_cfg.test_fraction) >= 0.95:
        raise ConfigError(
            f"test_fraction = {train_cfg.test_fraction} ({where('training.test_fraction')}) and "
            f"val_fraction = {train_cfg.val_fraction} ({where('training.val_fraction')}) "
            "leave under 5% for training"
        )
    if (
        train_cfg.purge_gap is not None
        and train_cfg.purge_gap < train_cfg.smoothing_k + train_cfg.lookback
    ):
        raise ConfigError(
            f"purge_gap = {train_cfg.purge_gap} ({where('training.purge_gap')}) is below "
            f"smoothing_k + lookback "
            f"= {train_cfg.smoothing_k + train_cfg.lookback}; a window or label would straddle "
            "two blocks"
        )
    if tuple(train_cfg.features) != ("default",):
        from pipeline.data.features import DEFAULT_FEATURES, FEATURE_DOCS

        for name in train_cfg.features:
            if name not in FEATURE_DOCS:
                raise ConfigError(
                    f"features ({where('training.features')}): unknown feature {name!r}"
                    f"{_suggest(name, FEATURE_DOCS)}; "
                    f"'default' gives {len(DEFAULT_FEATURES)} features"
                )
    try:
        train_cfg.network_columns()  # every name must be in the feature list
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({where('training.network_features')})") from None
    if ppo_cfg.prediction_model == "ensemble" and len(ppo_cfg.ensemble_models) < 2:
        raise ConfigError(
            f"ensemble_models = {','.join(ppo_cfg.ensemble_models)} "
            f"({where('ppo.ensemble_models')}): an ensemble needs at least 2 members"
        )
    if len(set(ppo_cfg.ensemble_models)) != len(ppo_cfg.ensemble_models):
        raise ConfigError(f"ensemble_models ({where('ppo.ensemble_models')}) lists a model twice")


# ================================================================ writing and CLI


def format_config(cfg: Config) -> str:
    """Both sections as ``key = value`` text that :func:`load_resolved` reads back."""
    lines = [f"# resolved config {cfg.hash()}", ""]
    for section, obj in (("training", cfg.training), ("ppo", cfg.ppo)):
        lines.append(f"[{section}]")
        for f in dataclasses.fields(obj):
            lines.append(f"{f.name} = {format_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)


def write_resolved(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config beside an artifact, atomically (see :func:`load_resolved`)."""
    return atomic_write_text(path, format_config(cfg))


def load_resolved(path: str | Path) -> Config:
    """Read a file written by :func:`write_resolved` (both sections in one file)."""
    entries = read_sectioned_file(path, "resolved config")
    values = {s: {k: v for k, (v, _) in items.items()} for s, items in entries.items()}
    return Config(TrainingConfig(**values["training"]), PPOConfig(**values["ppo"]), {})


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--preset``, ``--set``, ``--training-config``, ``--ppo-config`` to a parser."""
    g = parser.add_argument_group("configuration")
    presets = available_presets()
    g.add_argument(
        "--preset",
        choices=sorted(presets),
        # The files found, each with its first comment line; argparse formats help with %, so a
        # literal % in a summary is doubled.
        help="apply a named preset (pipeline/config/presets/NAME.txt) on top of the config files: "
        + "; ".join(f"{n} = {preset_summary(p)}" for n, p in presets.items()).replace("%", "%%"),
    )
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value (repeatable); write training.KEY or ppo.KEY when the "
        "key is "
        "in both files, e.g. --set lookback=30 --set ppo.batch_size=512",
    )
    g.add_argument(
        "--set-file",
        dest="set_files",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="apply a file of 'key = value' overrides (repeatable; the same keys and checks as "
        "--set; applied after --preset and before --set), e.g. the best parameters written by "
        "tune.py: --set-file results/tuning_agent_NAME/best_params.txt",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="fail with exit code 4 when a leak alarm fires (same as --set strict_alarms=true; "
        "the alarms are listed in README 'Is it luck?')",
    )
    g.add_argument(
        "--training-config",
        type=Path,
        default=TRAINING_CONFIG_PATH,
        metavar="PATH",
        help=f"classifier/data config file (default: {TRAINING_CONFIG_PATH.name})",
    )
    g.add_argument(
        "--ppo-config",
        type=Path,
        default=PPO_CONFIG_PATH,
        metavar="PATH",
        help="PPO/environment config file (default: ppo_approach/ppo_config.txt)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the Config from arguments added by :func:`add_config_args`."""
    strict = ["strict_alarms=true"] if getattr(args, "strict", False) else []
    return load_config(
        args.training_config,
        args.ppo_config,
        args.preset,
        [*args.overrides, *strict],
        getattr(args, "set_files", ()),
    )


def passthrough_args(args: argparse.Namespace) -> list[str]:
    """The configuration arguments again, for launching another step as a subprocess."""
    out: list[str] = []
    if args.preset:
        out += ["--preset", args.preset]
    # Absolute here, in the caller's working directory: the driver runs in the project folder.
    for f in getattr(args, "set_files", ()):
        out += ["--set-file", str(Path(f).expanduser().resolve())]
    for o in args.overrides:
        out += ["--set", o]
    if getattr(args, "strict", False):
        out.append("--strict")
    out += ["--training-config", str(args.training_config), "--ppo-config", str(args.ppo_config)]
    return out


def render_config_file(cls: type, title: str) -> str:
    """Text of a config file: every key with its doc line and default (writes the templates)."""
    lines = [
        f"# {title}",
        "# Format: key = value; '#' starts a comment; [sections] are only for reading.",
        "",
    ]
    group = None
    for f in dataclasses.fields(cls):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines += ["", f"[{group}]"]
        text = format_value(f.default)
        lines.append(f"# {f.metadata['doc']} (default: {text})")
        lines.append(f"{f.name} = {text}")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"
