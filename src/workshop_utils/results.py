"""The results record shared by the notebooks: ``outputs/<profile>/results.json``.

Each notebook writes what it measured under its own name (baseline scores, scores after fine-tuning,
timings, peak memory); later notebooks and the final summary read them. Writes are atomic (a crash
never leaves half a file) and merge with what is there, so re-running a notebook replaces only its
own entries.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import DataError, MissingArtifactError
from .paths import write_json_atomic
from .series import notebook as series_entry


def _producer(name: str) -> str:
    """The one-sentence "run this first" target for a notebook's entries."""
    entry = series_entry(name)
    return entry.producer() if entry else name


class Results:
    """Read and write one profile's results record."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def for_profile(cls, profile) -> "Results":
        return cls(profile.outputs() / "results.json")

    # ------------------------------------------------------------------ reading
    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{self.path}: line {exc.lineno}: results record is not valid JSON; delete it and re-run the notebooks"
            ) from None
        if not isinstance(data, dict):
            raise DataError(f"{self.path}: results record must be a JSON object; delete it and re-run the notebooks")
        return data

    def get(self, notebook: str, key: str | None = None, default: Any = None) -> Any:
        section = self.load().get(notebook, {})
        if key is None:
            return section or default
        return section.get(key, default)

    def require(self, notebook: str, key: str) -> Any:
        """The entry, or a one-sentence error naming what makes it."""
        value = self.get(notebook, key)
        if value is None:
            maker = _producer(notebook)
            raise MissingArtifactError(f"'{key}' from {notebook} is not in {self.path.name} yet: run {maker} first")
        return value

    # ------------------------------------------------------------------ writing
    def record(self, notebook: str, key: str, value: Any) -> Any:
        """Store ``value`` (JSON-serialisable) under ``notebook``/``key`` and return it."""
        data = self.load()
        section = data.setdefault(notebook, {})
        section[key] = value
        section["_updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._write(data)
        return value

    def _write(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.path, data, sort_keys=True, default=_jsonable)

    # ------------------------------------------------------------------ views
    def before_after_pairs(self) -> list[dict[str, Any]]:
        """Every (before, after) pair recorded in the series, for tables and the run-all summary."""
        data = self.load()
        pairs = []
        for notebook, section in sorted(data.items()):
            for key, value in sorted(section.items()):
                if isinstance(value, dict) and "before" in value and "after" in value:
                    for metric, after in value["after"].items():
                        before = value["before"].get(metric)
                        if metric in NOT_A_SCORE:
                            continue
                        if isinstance(after, (int, float)) and isinstance(before, (int, float)):
                            pairs.append({"notebook": notebook, "what": key, "metric": metric, "before": before, "after": after})
        return pairs


# recorded beside the scores, but not scores: how many questions were answered, the references' own looping rate
NOT_A_SCORE = frozenset({"answered", "references_looping"})


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in the results record")


def require_artifact(path: Path | str, notebook: str) -> Path:
    """``path`` if it exists, else a one-sentence error naming the notebook or command that makes it."""
    from .paths import display_path

    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        maker = _producer(notebook)
        raise MissingArtifactError(f"{display_path(path)} is missing: run {maker} first (same profile)")
    return path
