"""The classifier architectures step 5 can train, declared once.

One :class:`Architecture` per classifier: its name, whether it is a recurrent network or a tabular
model, its place in the simplest-first order of the one-standard-error rule, and the config
settings it owns (type, default, doc line, bounds and the tuner's default range of each). The rest
is derived from :data:`ARCHITECTURES`:

- :mod:`pipeline.config.schema`: ``NETWORK_NAMES``, ``MODEL_NAMES`` and the model group of
  ``TrainingConfig``: one field per setting, in registry order, with its type, default, doc line
  and bounds, made from this table when the class is defined;
- :mod:`pipeline.classifiers.nets`: the arch dict of a model file (``arch_config``: the settings'
  short keys) and the dispatch of ``build_classifier`` (a builder per registered name, checked at
  import);
- :mod:`pipeline.classifiers.model_choice`: ``SIMPLEST_FIRST``;
- the tuner (:func:`pipeline.tuning.space.with_registry_ranges`): each setting's default range
  when the search-space file does not list it (a test checks that the lines the bundled
  ``pipeline/tuning/search_spaces/classifier.txt`` does list are these ranges).

So adding an architecture is two files: its entry here, and its ``nn.Module`` with its builder in
:mod:`pipeline.classifiers.nets` (step 5's training loop and the tabular fits dispatch on the
kind).

This module imports only the standard library and :mod:`pipeline.common`: no torch, scikit-learn or
LightGBM, so the config loader and ``--help`` stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.common import PipelineError

NETWORK = "network"
"""Kind of a recurrent network trained by ``pytorch_train``, reading ``network_features``."""

TABULAR = "tabular"
"""Kind of a model fitted on a summary of the window by scikit-learn or LightGBM."""

KINDS = (NETWORK, TABULAR)


@dataclass(frozen=True)
class Setting:
    """One config setting of an architecture.

    Its config key is ``{architecture}_{key}`` (``lstm_units``); ``key`` (``units``) is its name
    in the arch dict of a model file and the keyword of the model's constructor. The bounds are
    kept as written (an ``int`` bound prints as ``>= 1`` in error messages, not ``>= 1.0``).
    """

    key: str
    value_type: type[int] | type[float]
    default: int | float
    doc: str
    min: int | float | None = None
    gt: int | float | None = None
    max: int | float | None = None
    lt: int | float | None = None
    search: str | None = None
    """The tuner's default distribution in search-space syntax (``int 16 256 log``); ``None``
    when the bundled classifier space does not tune it."""

    def checks(self) -> dict[str, int | float]:
        """The bounds that are set, as ``setting(...)`` keywords (``{"min": 0, "lt": 1}``)."""
        bounds = {"min": self.min, "gt": self.gt, "max": self.max, "lt": self.lt}
        return {k: v for k, v in bounds.items() if v is not None}


@dataclass(frozen=True)
class Architecture:
    """A classifier step 5 can train (see the module docstring for what is derived from it)."""

    name: str
    kind: str
    simplicity: int
    """Place in the simplest-first order: 0 for the simplest (fewest parameters, fastest to
    fit); the one-standard-error rule prefers lower values."""
    description: str
    settings: tuple[Setting, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        keys = [s.key for s in self.settings]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: a setting key is declared twice: {keys}")

    @property
    def is_network(self) -> bool:
        """Whether this is a recurrent network (trained by ``pytorch_train``)."""
        return self.kind == NETWORK

    def config_key(self, setting: Setting) -> str:
        """The config key of one of this architecture's settings (``lstm_units``)."""
        return f"{self.name}_{setting.key}"

    @property
    def config_keys(self) -> tuple[str, ...]:
        """The config keys this architecture owns, in declaration order."""
        return tuple(self.config_key(s) for s in self.settings)

    @property
    def arch_keys(self) -> tuple[str, ...]:
        """The keys ``nets.arch_config`` copies from the config into the arch dict (besides
        ``name``, ``n_features`` and, for a network, ``input_columns``)."""
        return tuple(s.key for s in self.settings)

    def search_space(self) -> tuple[tuple[str, str], ...]:
        """``(config key, distribution)`` of every setting the bundled classifier space tunes."""
        return tuple((self.config_key(s), s.search) for s in self.settings if s.search is not None)


# The doc lines, defaults and bounds below are exactly those TrainingConfig declared before the
# registry (the classifier's numbers and `--help` do not change); the search ranges are those of
# pipeline/tuning/search_spaces/classifier.txt.
_UNITS_SEARCH = "int 16 256 log"
_LAYERS_SEARCH = "int 1 3"
_DROPOUT_SEARCH = "float 0 0.5"

ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture(
        name="lstm",
        kind=NETWORK,
        simplicity=4,
        description="stacked LSTM, last hidden state -> linear head",
        settings=(
            Setting("units", int, 256, "LSTM hidden units", min=1, search=_UNITS_SEARCH),
            Setting("layers", int, 3, "LSTM stacked layers", min=1, search=_LAYERS_SEARCH),
            Setting(
                "dropout",
                float,
                0.2,
                "LSTM dropout between layers and before the head",
                min=0,
                lt=1,
                search=_DROPOUT_SEARCH,
            ),
        ),
    ),
    Architecture(
        name="gru",
        kind=NETWORK,
        simplicity=3,
        description="stacked GRU, last hidden state -> linear head",
        settings=(
            Setting("units", int, 128, "GRU hidden units", min=1, search=_UNITS_SEARCH),
            Setting("layers", int, 2, "GRU stacked layers", min=1, search=_LAYERS_SEARCH),
            Setting("dropout", float, 0.2, "GRU dropout", min=0, lt=1, search=_DROPOUT_SEARCH),
        ),
    ),
    Architecture(
        name="bilstm",
        kind=NETWORK,
        simplicity=5,
        description="stacked bidirectional LSTM, both final states -> linear head",
        settings=(
            Setting(
                "units", int, 128, "BiLSTM hidden units per direction", min=1, search=_UNITS_SEARCH
            ),
            Setting("layers", int, 2, "BiLSTM stacked layers", min=1, search=_LAYERS_SEARCH),
            Setting("dropout", float, 0.2, "BiLSTM dropout", min=0, lt=1, search=_DROPOUT_SEARCH),
        ),
    ),
    Architecture(
        name="dlstm",
        kind=NETWORK,
        simplicity=6,
        description="decomposition LSTM: trend and remainder of the window, an LSTM stack each",
        settings=(
            Setting(
                "units",
                int,
                128,
                "DLSTM hidden units of each branch (trend, remainder)",
                min=1,
                search=_UNITS_SEARCH,
            ),
            Setting(
                "layers",
                int,
                2,
                "DLSTM stacked layers of each branch",
                min=1,
                search=_LAYERS_SEARCH,
            ),
            Setting("dropout", float, 0.2, "DLSTM dropout", min=0, lt=1, search=_DROPOUT_SEARCH),
            Setting(
                "kernel",
                int,
                25,
                "DLSTM moving-average window of the trend (Autoformer / DLinear use 25)",
                min=1,
                search="choice 5 | 9 | 25",
            ),
        ),
    ),
    Architecture(
        name="logreg",
        kind=TABULAR,
        simplicity=0,
        description="multinomial logistic regression on the window's last bar and mean",
        settings=(
            Setting(
                "c",
                float,
                1.0,
                "logistic regression (on the window's last bar and mean): inverse L2 strength C",
                gt=0,
            ),
        ),
    ),
    Architecture(
        name="window_logreg",
        kind=TABULAR,
        simplicity=1,
        description="multinomial logistic regression on every bar of the window (per-bar features)",
        # No settings: its L2 strength is chosen on an inner split of the training block
        # (pipeline.classifiers.tabular.WINDOW_LOGREG_C_GRID), as LightGBM's rounds are.
        settings=(),
    ),
    Architecture(
        name="lightgbm",
        kind=TABULAR,
        simplicity=2,
        description="LightGBM gradient-boosted trees on the window's last bar, mean and std",
        settings=(
            Setting(
                "rounds",
                int,
                1000,
                "LightGBM: most boosting rounds (early stopping after 50 without a better log "
                "loss on the last val_fraction of the training block)",
                min=1,
            ),
            # A slow, small, regularised ensemble (issue 17): at 0.05 / 15 leaves / 50 rows a leaf
            # the trees overfit within 1-33 rounds, so the rounds kept were noise; these moved
            # LightGBM's mean test macro-F1 from 0.418 to 0.423 on the ladder's 14 development
            # runs and from 0.401 to 0.414 on 13 confirmation runs (bench/results).
            Setting("learning_rate", float, 0.02, "LightGBM: shrinkage per round", gt=0, max=1),
            Setting("leaves", int, 7, "LightGBM: leaves per tree", min=2),
            Setting("min_leaf_rows", int, 200, "LightGBM: fewest training rows in a leaf", min=1),
            Setting("l2", float, 10.0, "LightGBM: L2 penalty on the leaf values", min=0),
        ),
    ),
)
"""Every classifier, in the order of :data:`MODEL_NAMES` (the networks as the seed document lists
them, then the tabular models): the order of the config's ``models`` default, of the model group's
fields and of ties in the model choice."""

MODEL_NAMES: tuple[str, ...] = tuple(a.name for a in ARCHITECTURES)
"""Every classifier's name, in registry order."""

NETWORK_NAMES: tuple[str, ...] = tuple(a.name for a in ARCHITECTURES if a.is_network)
"""The recurrent networks, in registry order."""

SIMPLEST_FIRST: tuple[str, ...] = tuple(
    a.name for a in sorted(ARCHITECTURES, key=lambda a: a.simplicity)
)
"""Every classifier from the simplest to the most complex (by :attr:`Architecture.simplicity`)."""

_BY_NAME: dict[str, Architecture] = {a.name: a for a in ARCHITECTURES}

_SETTINGS: dict[str, Setting] = {a.config_key(s): s for a in ARCHITECTURES for s in a.settings}


def _check_registry() -> None:
    """Refuse, at import, a registry whose derived lists would be ambiguous."""
    if len(_BY_NAME) != len(ARCHITECTURES):
        raise ValueError(f"an architecture name is registered twice: {MODEL_NAMES}")
    ranks = sorted(a.simplicity for a in ARCHITECTURES)
    if ranks != list(range(len(ARCHITECTURES))):
        raise ValueError(f"simplicity must number the architectures 0..n-1 once each: {ranks}")
    if len(_SETTINGS) != sum(len(a.settings) for a in ARCHITECTURES):
        # e.g. an architecture "lstm_x" with key "units" and "lstm" with key "x_units"
        raise ValueError("two architectures declare the same config key")


_check_registry()


def architecture(name: str) -> Architecture:
    """The registered architecture called ``name``; :class:`PipelineError` naming the known ones
    when there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise PipelineError(
            f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}"
        ) from None


def config_setting(key: str) -> Setting:
    """The setting behind the config key ``key`` (``lstm_units``); ``KeyError`` if no architecture
    owns it."""
    return _SETTINGS[key]


def config_keys() -> tuple[str, ...]:
    """Every architecture's config keys, in registry order (the model group of the config)."""
    return tuple(_SETTINGS)
