"""Search spaces of the tuner: a plain-text file like the configs, one key per line.

Format (``pipeline/tuning/search_spaces/agent.txt`` and ``classifier.txt`` are the defaults)::

    # comment
    [ppo]                                  # optional; says which config file the keys belong to
    learning_rate = float 1e-5 1e-2 log    # a float between two bounds, sampled on a log scale
    n_epochs = int 1 20                    # an integer between two bounds (both included)
    lstm_units = int 16 256 log step 1     # an integer on a log scale (step only without log)
    net_arch = choice 64, 64 | 256, 256    # one of the values between the '|'

The keys are config keys (``training_config.txt`` / ``ppo_config.txt``), so a sampled trial is
a list of ``--set`` overrides and the best one a ``key = value`` file the normal parser reads
(``--set-file``). A key in both files needs a ``[training]`` / ``[ppo]`` section (or the
``training.`` / ``ppo.`` prefix). Every bound and every choice is parsed with the key's own type
and range check, so a space cannot propose a value the config loader would refuse; an unknown
key, an unknown distribution, a reversed range or a log range through zero is one
:class:`~pipeline.config.schema.ConfigError` naming the file and line.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import registry as model_registry
from pipeline.config.checks import field_map
from pipeline.config.files import SECTIONS, _lines, _read_text, load_config
from pipeline.config.schema import MODEL_NAMES, Config, ConfigError
from pipeline.config.values import _hints, _suggest, format_value, parse_value

SPACES_DIR = Path(__file__).resolve().parent / "search_spaces"
"""The bundled spaces: ``{stage}.txt``."""

KINDS = ("int", "float", "choice")


class TrialLike(Protocol):
    """What :meth:`Param.suggest` needs of an ``optuna.Trial`` (kept a protocol so this module
    imports without optuna)."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """An integer in ``[low, high]``."""
        ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        """A float in ``[low, high]``."""
        ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """One of ``choices``."""
        ...


REGISTRY_WHERE = "pipeline/config/registry.py"
"""Where a default range comes from, for messages (a range the file does not list)."""


@dataclass(frozen=True)
class Param:
    """One line of a search space: ``section.key`` and its distribution."""

    section: str
    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: int = 1
    choices: tuple[str, ...] = ()
    where: str = ""

    @property
    def name(self) -> str:
        """``section.key``: the Optuna parameter name and the ``--set`` key."""
        return f"{self.section}.{self.key}"

    def suggest(self, trial: TrialLike) -> str:
        """Sample this parameter on ``trial``; returns the value as the config file writes it."""
        if self.kind == "int":
            v: Any = trial.suggest_int(
                self.name, int(self.low), int(self.high), step=self.step, log=self.log
            )
            return str(v)
        if self.kind == "float":
            return repr(float(trial.suggest_float(self.name, self.low, self.high, log=self.log)))
        return str(trial.suggest_categorical(self.name, list(self.choices)))

    def values(self) -> list[Any]:
        """Every value of an ``int`` or ``choice`` parameter (the bounds of a ``float``)."""
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, self.step))
        if self.kind == "float":
            return [self.low, self.high]
        return list(self.choices)


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of one space file, in file order."""

    path: Path
    params: tuple[Param, ...]

    def names(self) -> list[str]:
        """``section.key`` of every parameter."""
        return [p.name for p in self.params]

    def get(self, name: str) -> Param | None:
        """The parameter called ``name`` (``section.key``), if any."""
        return next((p for p in self.params if p.name == name), None)

    def without(self, keep: Any) -> SearchSpace:
        """The space with only the parameters for which ``keep(param)`` is true."""
        return SearchSpace(self.path, tuple(p for p in self.params if keep(p)))

    def suggest(self, trial: TrialLike) -> list[str]:
        """Sample every parameter; returns ``section.key=value`` overrides (``--set`` syntax)."""
        return [f"{p.name}={p.suggest(trial)}" for p in self.params]


def default_space_path(stage: str) -> Path:
    """The bundled space of ``stage`` (``classifier`` or ``agent``)."""
    return SPACES_DIR / f"{stage}.txt"


def _locate(where: str, key: str, section: str | None) -> tuple[str, str]:
    """``(section, key)`` of a space line; the section from ``[...]``, a prefix or the key."""
    if "." in key:
        section, _, key = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown section {section!r} in {section}.{key}; "
                "expected 'training.' or 'ppo.'"
            )
    if section is not None:
        fields = field_map(SECTIONS[section])
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} in [{section}]{_suggest(key, fields)}")
        return section, key
    owners = [s for s, cls in SECTIONS.items() if key in field_map(cls)]
    if len(owners) == 1:
        return owners[0], key
    if owners:
        raise ConfigError(
            f"{where}: {key!r} is in both training_config.txt and ppo_config.txt; put it under "
            "[training] or [ppo] or write training.KEY / ppo.KEY"
        )
    everything = [k for cls in SECTIONS.values() for k in field_map(cls)]
    raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key, everything)}")


def _bound(where: str, section: str, key: str, line: str, raw: str) -> Any:
    """One bound or choice (``raw``, of the line's text ``line``) parsed and range-checked as
    the config value of ``key``."""
    try:
        return parse_value(SECTIONS[section], key, raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key} = {line}: {exc}") from None


def _scalar_type(cls: type, key: str) -> Any:
    """The type of ``cls.key`` with ``| None`` dropped (``tuple`` for a list setting)."""
    hint = _hints(cls)[key]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _range_options(where: str, key: str, raw: str, kind: str, extra: list[str]) -> tuple[bool, int]:
    """``(log, step)`` from the words after a range's bounds (``log``, and ``step N`` for an
    ``int``)."""
    log, step = False, 1
    while extra:
        word = extra.pop(0)
        if word == "log":
            log = True
        elif word == "step" and kind == "int" and extra:
            try:
                step = int(extra.pop(0))
            except ValueError:
                step = 0
            if step < 1:
                raise ConfigError(f"{where}: {key} = {raw}: step must be an integer >= 1")
        else:
            raise ConfigError(
                f"{where}: {key} = {raw}: unexpected {word!r}; expected 'log' or (int) 'step N'"
            )
    return log, step


def parse_param(where: str, section: str, key: str, raw: str) -> Param:
    """One ``key = distribution`` line (``raw`` is the text after ``=``)."""
    kind, _, rest = raw.partition(" ")
    kind, rest = kind.strip(), rest.strip()
    if kind not in KINDS:
        raise ConfigError(
            f"{where}: {key} = {raw}: unknown distribution {kind!r}; expected one of "
            f"{', '.join(KINDS)}"
        )
    hint = _scalar_type(SECTIONS[section], key)
    if kind == "choice":
        items = [s.strip() for s in rest.split("|")]
        if len(items) < 2 or any(not s for s in items):
            raise ConfigError(
                f"{where}: {key} = {raw}: expected at least two non-empty choices separated by '|'"
            )
        values = [format_value(_bound(where, section, key, raw, s)) for s in items]
        if len(set(values)) != len(values):
            raise ConfigError(f"{where}: {key} = {raw}: a choice is listed twice")
        return Param(section, key, "choice", choices=tuple(values), where=where)
    words = rest.split()
    if len(words) < 2:
        raise ConfigError(f"{where}: {key} = {raw}: expected '{kind} LOW HIGH [log] [step N]'")
    if hint not in (int, float):
        raise ConfigError(
            f"{where}: {key} = {raw}: {key} is not a number; use 'choice A | B' for it"
        )
    if kind == "int" and hint is float:
        raise ConfigError(f"{where}: {key} = {raw}: {key} is a float; use 'float LOW HIGH'")
    if kind == "float" and hint is int:
        raise ConfigError(f"{where}: {key} = {raw}: {key} is an integer; use 'int LOW HIGH'")
    low = _bound(where, section, key, raw, words[0])
    high = _bound(where, section, key, raw, words[1])
    log, step = _range_options(where, key, raw, kind, words[2:])
    if not low < high:
        raise ConfigError(
            f"{where}: {key} = {raw}: empty range; expected LOW < HIGH, got {low} and {high}"
        )
    if log and low <= 0:
        raise ConfigError(f"{where}: {key} = {raw}: a log range needs LOW > 0, got {low}")
    if log and step != 1:
        raise ConfigError(f"{where}: {key} = {raw}: 'log' and 'step' cannot be combined")
    if kind == "int" and (high - low) % step:
        raise ConfigError(
            f"{where}: {key} = {raw}: HIGH - LOW = {high - low} is not a multiple of step {step}"
        )
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        raise ConfigError(f"{where}: {key} = {raw}: bounds must be finite")
    return Param(section, key, kind, float(low), float(high), log, step, where=where)


def read_search_space(path: str | Path) -> SearchSpace:
    """Parse and check a search-space file (see the module docstring)."""
    path = Path(path)
    params: list[Param] = []
    seen: dict[str, str] = {}
    section: str | None = None
    for where, sec, key, raw in _lines(
        path,
        _read_text(path, "search space file"),
        "'key = int|float LOW HIGH [log]' or 'key = choice A | B'",
    ):
        if sec is not None:
            if sec not in SECTIONS:
                raise ConfigError(f"{where}: unknown section [{sec}]; expected [training] or [ppo]")
            section = sec
            continue
        sect, name = _locate(where, key, section)
        full = f"{sect}.{name}"
        if full in seen:
            first = seen[full].rpartition(":")[2]
            raise ConfigError(f"{where}: duplicate key {name!r} (first at line {first})")
        seen[full] = where
        params.append(parse_param(where, sect, name, raw))
    if not params:
        raise ConfigError(f"{path}: the search space lists no parameter")
    return SearchSpace(path, tuple(params))


CLASSIFIER_KEYS = frozenset(
    {"lookback", "learning_rate", "weight_decay", "grad_clip", "batch_size", "patience"}
)
"""Training keys a classifier trial may vary besides the architectures' own sizes (the ``model``
group): not the labels or splits (they change what is measured and where the test block lies),
not ``epochs`` (the budget), the seed or the run settings."""

AGENT_FIXED_KEYS = frozenset({"total_timesteps", "vec_env", "device", "seed", "seeds"})
"""Keys of the ``ppo`` group an agent trial may not vary: the budget, the seed and run settings.
Outside the ``ppo`` group nothing is tunable: the data keys change which data the agent sees (its
blocks are built once per worker), and the reward, environment and evaluation keys change the
measure itself (a trial would raise its score by rescaling the reward)."""


def with_registry_ranges(space: SearchSpace, model: str) -> SearchSpace:
    """``space`` plus the tuner's default range (:mod:`pipeline.config.registry`) of each setting
    of ``model`` the file does not list: a new architecture is tuned without editing the bundled
    file, and a line in the file still overrides its range."""
    extra = [
        parse_param(f"{REGISTRY_WHERE} ({key})", "training", key, search)
        for key, search in model_registry.architecture(model).search_space()
        if space.get(f"training.{key}") is None
    ]
    return dataclasses.replace(space, params=space.params + tuple(extra)) if extra else space


def stage_space(space: SearchSpace, stage: str, model: str | None) -> SearchSpace:
    """The parameters one study tunes; a key of the other config file (or one an agent trial
    cannot vary) is one error naming its line."""
    wanted = "training" if stage == "classifier" else "ppo"
    for p in space.params:
        if p.section != wanted:
            raise ConfigError(
                f"{p.where}: {p.name} is a {p.section} key; the {stage} stage tunes "
                f"{'training_config.txt' if wanted == 'training' else 'ppo_config.txt'} keys only"
            )
        group = field_map(SECTIONS[p.section])[p.key].metadata["group"]
        if stage == "agent" and (group != "ppo" or p.key in AGENT_FIXED_KEYS):
            raise ConfigError(
                f"{p.where}: {p.key} cannot be tuned in the agent stage (only PPO "
                "hyperparameters: the data, reward, environment, evaluation, budget and seed stay "
                "fixed so that every trial is measured the same way); set it with --set instead"
            )
        if stage == "classifier" and group != "model" and p.key not in CLASSIFIER_KEYS:
            raise ConfigError(
                f"{p.where}: {p.key} cannot be tuned in the classifier stage (only the "
                f"architectures' sizes and {', '.join(sorted(CLASSIFIER_KEYS))}: labels, splits, "
                "the epoch budget and the seed stay fixed); set it with --set instead"
            )
    if stage == "classifier":
        others = [m for m in MODEL_NAMES if m != model]
        space = space.without(lambda p: not any(p.key.startswith(f"{m}_") for m in others))
        if model is not None:
            space = with_registry_ranges(space, model)
    if not space.params:
        raise ConfigError(f"{space.path}: no parameter of the {stage} stage in the search space")
    return space


def trial_config(args: argparse.Namespace, overrides: list[str]) -> Config:
    """The trial's config through the normal parser: files, preset, --set-file, --set, then the
    sampled values."""
    return load_config(
        args.training_config,
        args.ppo_config,
        args.preset,
        [*args.overrides, *overrides],
        args.set_files,
    )
