"""The per-dataset run manifest: what the steps wrote or kept, for the push step to push.

Which file is where, and the rule that names a dataset, are :mod:`pipeline.store.artifacts`'s
(``Artifacts(paths, dataset).manifest(run)`` opens this dataset's manifest); this module only keeps
the record, and imports nothing from :mod:`pipeline.store.artifacts`, so the two never import each
other. ``dataset`` here is already the dataset's artifact name
(:attr:`pipeline.store.artifacts.Artifacts.dataset`).

The run manifest (:attr:`pipeline.store.artifacts.Artifacts.run_manifest`, beside the run summary)
is
**one per dataset and cumulative**: one entry per artifact path (kind, the step that recorded it,
sha256 and size at that moment, ``written`` or ``up_to_date``, when, and the run id); recording a
path again replaces its entry. A run does not start from an empty manifest, so ``--steps 8`` alone,
or ``--steps 7,8`` after an earlier step 5, pushes the same files a full run would, as the push
step's glob did before. A step that finds an artifact up to date and skips it
records it all the same, with ``status = "up_to_date"``, so the push step (which pushes exactly the
manifest's entries of pushed kinds, plus the manifest) pushes it. An entry whose file has since been
deleted is reported by :meth:`Manifest.missing` and dropped by :meth:`Manifest.prune_missing`.

Every record re-reads the file, merges and rewrites it atomically
(:func:`pipeline.common.atomic_write_json`) under one process-wide lock, so several
:class:`Manifest` objects in one process (the driver and the step it calls) never lose each other's
entries. Across processes the dataset's run lock (:attr:`pipeline.store.artifacts.Artifacts.lock`,
held by the driver and by :func:`pipeline.run.lock.step_lock` for a step run by hand) keeps writers
apart.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.common import PipelineError, atomic_write_json, sha256_file


@dataclass(frozen=True)
class Kind:
    """What a manifest ``kind`` means to the push step."""

    pushed: bool
    """Step 8 commits files of this kind."""
    live: bool
    """Still changes after it is recorded (a log being written, the run summary's final
    status): its sha256/size are those at record time and are not compared later."""
    what: str


KINDS: dict[str, Kind] = {
    "classifier_model": Kind(True, False, "a classifier's main model file"),
    "fold_model": Kind(True, False, "a walk-forward model that predicts one fold"),
    "classifier_ckpt": Kind(False, False, "a classifier's per-epoch checkpoint"),
    "config": Kind(True, False, "the resolved config written beside a model"),
    "scaler": Kind(True, False, "the dataset's train-block scaler"),
    "metrics": Kind(True, False, "a classifier's metrics vs the baselines"),
    "history": Kind(True, False, "a classifier's per-epoch history"),
    "plot": Kind(True, False, "a PNG (training curves or backtest)"),
    "training_summary": Kind(True, False, "step 5's summary of every model"),
    "prediction_table": Kind(True, False, "the predictions the agent's environment reads"),
    "ensemble": Kind(True, False, "how the ensemble combines its members, and their scores"),
    "ppo_model": Kind(True, False, "the final PPO agent"),
    "ppo_meta": Kind(True, False, "the final agent's metadata"),
    "ppo_checkpoint": Kind(False, False, "a PPO checkpoint (resume only)"),
    "ppo_best_model": Kind(False, False, "the PPO model best on the validation block"),
    "ppo_checkpoint_meta": Kind(False, False, "checksums, best score or run config of a folder"),
    "tensorboard": Kind(True, False, "a TensorBoard event file"),
    "backtest": Kind(True, False, "the test-block backtest report"),
    "export": Kind(True, False, "the agent exported for inference (ONNX graphs, export.json)"),
    "run_summary": Kind(True, True, "the driver's run summary"),
    "log": Kind(True, True, "a log file"),
}
"""The manifest's ``kind`` vocabulary; the module docstring's table says which path has which."""

STEP_CLASSIFIERS = "train_models"
STEP_VALIDATE = "validate_models"
STEP_AGENT = "train_ppo_agent"
STEP_PUSH = "push"
STEP_DRIVER = "runpod_train"
STEP_ENTRY = "runpod_main"
STEPS: frozenset[str] = frozenset(
    {STEP_CLASSIFIERS, STEP_VALIDATE, STEP_AGENT, STEP_PUSH, STEP_DRIVER, STEP_ENTRY}
)
"""Who may record an entry: the step functions (5, 6, 7, 8), the driver and the entry point."""
ARTIFACT_STEPS: frozenset[str] = frozenset({STEP_CLASSIFIERS, STEP_VALIDATE, STEP_AGENT})
"""The steps that make artifacts: a manifest without an entry of theirs has nothing to push."""

WRITTEN = "written"
UP_TO_DATE = "up_to_date"
STATUSES: frozenset[str] = frozenset({WRITTEN, UP_TO_DATE})
"""``written`` by the recording step, or found ``up_to_date`` and kept (still pushed)."""

MANIFEST_FORMAT = 1

_lock = threading.RLock()  # one process-wide lock for every manifest's read-merge-write


class ManifestError(PipelineError):
    """The manifest file cannot be read, or a path cannot be recorded in it."""


@dataclass(frozen=True)
class ManifestEntry:
    """One recorded artifact; ``path`` is relative to the artifact root, with ``/``."""

    path: str
    kind: str
    step: str
    status: str
    sha256: str
    size: int
    recorded_utc: str
    run: str | None = None

    def absolute(self, root: Path) -> Path:
        """The file under ``root``."""
        return Path(root) / self.path

    def to_dict(self) -> dict[str, Any]:
        """The entry as the manifest file stores it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ManifestEntry:
        """Parse one entry; raises ``ValueError`` saying what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError(f"entry {data!r} is not an object")
        strings = ("path", "kind", "step", "status", "sha256", "recorded_utc")
        bad = [k for k in strings if not isinstance(data.get(k), str) or not data[k]]
        if bad or not isinstance(data.get("size"), int) or isinstance(data.get("size"), bool):
            what = ", ".join(bad or ["size"])
            raise ValueError(f"entry {data.get('path')!r} has no valid {what}")
        if data["kind"] not in KINDS:
            raise ValueError(
                f"entry {data['path']!r} has kind {data['kind']!r}; expected one of "
                f"{', '.join(KINDS)}"
            )
        if data["status"] not in STATUSES:
            raise ValueError(f"entry {data['path']!r} has status {data['status']!r}")
        rel = Path(data["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"entry path {data['path']!r} is not inside the artifact root")
        run = data.get("run")
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name != "run"}
        return cls(**fields, run=run if isinstance(run, str) else None)


class Manifest:
    """The dataset's record of the artifacts its steps wrote or kept (module docstring).

    Nothing is cached: each call reads the file, so every object on the same file sees every
    record. ``run`` (e.g. the driver's start time, as in the run summary) is stored with each
    entry this object records; ``None`` for a step run by hand.
    """

    def __init__(
        self,
        path: str | Path,
        root: str | Path,
        *,
        dataset: str | None = None,
        run: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.root = Path(root)
        self.dataset = dataset or None
        self.run = run

    @classmethod
    def load(
        cls,
        path: str | Path,
        root: str | Path,
        *,
        dataset: str | None = None,
        run: str | None = None,
    ) -> Manifest:
        """A manifest on ``path`` whose file (if any) is checked now: an unreadable one raises
        :class:`ManifestError` here rather than at the first record."""
        manifest = cls(path, root, dataset=dataset, run=run)
        manifest._read()
        return manifest

    # ------------------------------------------------------------ reading and writing

    def _read(self) -> dict[str, ManifestEntry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error(f"cannot read it ({exc})") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._error(f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
            raise self._error('expected a JSON object with a list "entries"')
        if self.dataset is None and isinstance(doc.get("dataset"), str):
            self.dataset = doc["dataset"]
        entries: dict[str, ManifestEntry] = {}
        for raw in doc["entries"]:
            try:
                entry = ManifestEntry.from_dict(raw)
            except ValueError as exc:
                raise self._error(str(exc)) from None
            entries[entry.path] = entry
        return entries

    def _error(self, what: str) -> ManifestError:
        return ManifestError(
            f"{self.path}: unreadable run manifest: {what}; delete it and rerun the steps "
            "(with --resume) so they record their artifacts again"
        )

    def _write(self, entries: dict[str, ManifestEntry]) -> None:
        doc = {
            "format": MANIFEST_FORMAT,
            "dataset": self.dataset,
            "updated_utc": _now_utc(),
            "entries": [entries[k].to_dict() for k in sorted(entries)],
        }
        atomic_write_json(self.path, doc)

    def _relative(self, path: str | Path) -> str:
        """``path`` (absolute, or relative to the root) as a ``/`` path relative to the root."""
        given = Path(path)
        full = given if given.is_absolute() else self.root / given
        # Lexical first (keeps a symlinked root as the caller spelled it), then resolved.
        pairs = (
            (Path(os.path.normpath(full.absolute())), Path(os.path.normpath(self.root.absolute()))),
            (full.resolve(), self.root.resolve()),
        )
        for candidate, base in pairs:
            try:
                return candidate.relative_to(base).as_posix()
            except ValueError:
                continue
        raise ManifestError(
            f"{path}: cannot record it in {self.path}: not under the artifact root {self.root}"
        )

    # ------------------------------------------------------------ recording

    def record(
        self, path: str | Path, kind: str, step: str, *, status: str = WRITTEN
    ) -> ManifestEntry:
        """Record one file (its sha256 and size now) and rewrite the manifest; returns the entry.

        ``path`` is absolute or relative to the root; ``status`` is :data:`WRITTEN` or
        :data:`UP_TO_DATE` (a skipped, still current artifact: listed, and so pushed, all the
        same).
        """
        return self.record_many([(path, kind)], step, status=status)[0]

    def record_many(
        self,
        items: Iterable[tuple[str | Path, str]],
        step: str,
        *,
        status: str = WRITTEN,
    ) -> list[ManifestEntry]:
        """Record several ``(path, kind)`` files with one rewrite of the manifest."""
        if step not in STEPS:
            raise ValueError(f"step {step!r}; expected one of {', '.join(sorted(STEPS))}")
        if status not in STATUSES:
            raise ValueError(f"status {status!r}; expected one of {', '.join(sorted(STATUSES))}")
        new: list[ManifestEntry] = []
        for path, kind in items:
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r}; expected one of {', '.join(KINDS)}")
            rel = self._relative(path)
            file = self.root / rel
            try:
                if file.is_dir():
                    raise ManifestError(
                        f"{file}: is a folder; record the files in it (record_tree)"
                    )
                size = file.stat().st_size
                sha = sha256_file(file)
            except FileNotFoundError:
                raise ManifestError(
                    f"{file}: cannot record it in {self.path}: file not found"
                ) from None
            new.append(ManifestEntry(rel, kind, step, status, sha, size, _now_utc(), self.run))
        if not new:
            return []
        with _lock:
            entries = self._read()
            entries.update((e.path, e) for e in new)
            self._write(entries)
        return new

    def record_tree(
        self,
        folder: str | Path,
        kind: str,
        step: str,
        *,
        pattern: str = "*",
        status: str = WRITTEN,
    ) -> list[ManifestEntry]:
        """Record every file below ``folder`` matching ``pattern`` (e.g. a TensorBoard run folder
        with :data:`pipeline.store.artifacts.TENSORBOARD_EVENTS_GLOB`); hidden files and ``.tmp``
        files are left out."""
        root = Path(folder)
        files = sorted(
            p
            for p in (root.rglob(pattern) if root.is_dir() else [])
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")
        )
        return self.record_many([(p, kind) for p in files], step, status=status)

    def forget(self, *paths: str | Path) -> list[ManifestEntry]:
        """Drop the entries of ``paths`` (e.g. pruned checkpoints); returns those dropped."""
        rels = {self._relative(p) for p in paths}
        with _lock:
            entries = self._read()
            dropped = [entries.pop(r) for r in sorted(rels) if r in entries]
            if dropped:
                self._write(entries)
        return dropped

    def prune_missing(self) -> list[ManifestEntry]:
        """Drop the entries whose file no longer exists; returns those dropped."""
        with _lock:
            entries = self._read()
            dropped = [e for e in entries.values() if not e.absolute(self.root).is_file()]
            for e in dropped:
                del entries[e.path]
            if dropped:
                self._write(entries)
        return dropped

    # ------------------------------------------------------------ reading back

    def entries(self, kind: str | None = None, step: str | None = None) -> list[ManifestEntry]:
        """The recorded entries (of ``kind`` / ``step`` when given), sorted by path."""
        with _lock:
            found = self._read()
        return [
            e
            for _, e in sorted(found.items())
            if (kind is None or e.kind == kind) and (step is None or e.step == step)
        ]

    def missing(self) -> list[ManifestEntry]:
        """Entries whose file is gone."""
        return [e for e in self.entries() if not e.absolute(self.root).is_file()]

    def changed(self) -> list[ManifestEntry]:
        """Entries of kinds that do not change after recording whose file now differs (size or
        sha256) from what was recorded: rewritten by something that did not record it."""
        out = []
        for e in self.entries():
            file = e.absolute(self.root)
            if KINDS[e.kind].live or not file.is_file():
                continue
            if file.stat().st_size != e.size or sha256_file(file) != e.sha256:
                out.append(e)
        return out

    def push_files(self) -> list[Path]:
        """What step 8 commits: the existing files of pushed kinds, plus the manifest itself.

        Raises:
            ManifestError: no step (:data:`ARTIFACT_STEPS`) has recorded anything yet: there is
                no manifest (artifacts from before it existed), or it lists only the driver's
                and entry point's logs. Pushing those alone would look like a pushed run.
        """
        entries = self.entries()
        if not any(e.step in ARTIFACT_STEPS for e in entries):
            name = self.dataset or self.path.name
            what = "lists no artifact of a step" if self.path.is_file() else "does not exist"
            raise ManifestError(
                f"{self.path}: nothing to push for dataset {name}: its run manifest {what} "
                "(artifacts written before the run manifest existed are not listed); rerun the "
                f"steps that write them (python runpod_train.py --dataset {name} --resume) so "
                "they record them, then push again"
            )
        files = [
            e.absolute(self.root)
            for e in entries
            if KINDS[e.kind].pushed and e.absolute(self.root).is_file()
        ]
        files.append(self.path)
        return sorted(set(files))


def _now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
