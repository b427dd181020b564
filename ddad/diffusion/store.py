"""Per-image results on disk, written atomically and tied to the settings that made them.

Results live under ``<root>/<settings digest>/``: a result made with other settings sits in
another folder and is never mistaken for a current one, and each result records the digest of
the files it was made from, so an edited image is computed again. Each file is written under a
temporary name and renamed into place, so a killed run leaves only whole files, and a re-run
picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np


def settings_digest(settings: dict[str, Any]) -> str:
    """A short stable digest of JSON-serialisable settings."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ResultStore:
    """A folder of ``<key>.npz`` files for one set of settings."""

    def __init__(self, root: Path, digest: str):
        self.root = root
        self.digest = digest
        self.folder = root / digest

    @classmethod
    def open(cls, root: Path, settings: dict[str, Any]) -> ResultStore:
        """The store for ``settings``, created; results of any other settings are dropped."""
        store = cls(root, settings_digest(settings))
        store._clear_others()
        store.folder.mkdir(parents=True, exist_ok=True)
        (store.folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        return store

    def _clear_others(self) -> None:
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.is_dir() and child.name != self.digest:
                    shutil.rmtree(child)

    def path(self, key: str) -> Path:
        return self.folder / (key.replace("/", "__") + ".npz")

    def has(self, key: str, source: str) -> bool:
        """Whether ``key``'s result is stored and was made from the input files whose digest
        is ``source`` (the ``source`` array ``save`` was given)."""
        if not self.path(key).is_file():
            return False
        with np.load(self.path(key)) as data:
            return "source" in data.files and str(data["source"]) == source

    def save(self, key: str, **arrays: np.ndarray) -> None:
        """Write one result atomically."""
        target = self.path(key)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, target)

    def load(self, key: str, fields: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """One result's arrays; only ``fields`` when given (npz members are read on demand)."""
        with np.load(self.path(key)) as data:
            return {name: data[name] for name in (fields or data.files)}

    def prune(self, keep: set[str]) -> None:
        """Remove results and temporaries for keys no longer asked for."""
        wanted = {self.path(k).name for k in keep} | {"settings.json"}
        for child in self.folder.iterdir():
            if child.name not in wanted:
                child.unlink()
