"""The record a teacher cache keeps of its models: ``manifest.json`` in the cache's root.

One entry per model folder (by its name): the digest of its key (``teacher_key.json``, the
same as :meth:`~medic_viz.experiments.teachers.TeacherRecipe.digest`), the SHA-256 and size of
its weights, its architecture, role, clean accuracy and ASR (from its card). The manifest is
committed with the cache, also for models whose weights are not (a VGG-11-BN or ResNet-18
teacher is 37–45 MB: retrained from its recipe on first use), so that a model retrained or
copied in later is checked against the one the committed results came from
(:func:`check_manifest`).

The manifest is written whole (a temporary file renamed over it), updated under an exclusive
``flock`` of the cache's folder (teachers trained at once in several processes each
add their entry), and read with a size bound. POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from medic_viz.data_identity import file_sha256
from medic_viz.limits import MAX_CARD_BYTES, listed

__all__ = ["MANIFEST_FILE", "KEY_FILE", "MAX_MANIFEST_BYTES", "ManifestStatus", "folder_entry", "read_manifest",
           "record_model", "record_models", "merge_manifest", "check_manifest"]

#: The manifest's file name, in a cache's root.
MANIFEST_FILE = "manifest.json"
#: The key of a cached model, inside its folder; written with the model, before the folder is
#: renamed into place.
KEY_FILE = "teacher_key.json"
#: Largest manifest read, in bytes (an entry is about 300 bytes).
MAX_MANIFEST_BYTES: int = 4 * 2**20
_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ManifestStatus:
    """How one model stands against the manifest. ``status``: ``"same"`` (its weights are the
    recorded ones), ``"differs"`` (other weights, or another recipe, under the recorded name),
    ``"missing"`` (recorded, not in the cache: trained again on first use) or ``"unrecorded"``
    (in the cache, not in the manifest)."""

    name: str
    status: str
    detail: str = ""


def _read_json(path: Path, limit: int, what: str) -> Any:
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{path}: {what} is {size:,} bytes, more than the {limit:,} allowed; is it the right file?")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable {what} ({type(exc).__name__}); restore it from git or remove it") from None


def folder_entry(folder: str | Path) -> dict:
    """The manifest entry of a model folder (weights, ``card.json`` and ``teacher_key.json``).
    Raises FileNotFoundError when the weights are not there, ValueError for an unreadable card
    or key."""
    folder = Path(folder)
    weights = folder / _WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no {_WEIGHTS}; only a whole model folder is recorded")
    digest = None
    if (folder / KEY_FILE).is_file():
        key = _read_json(folder / KEY_FILE, MAX_CARD_BYTES, "teacher key")
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    card = _read_json(folder / "card.json", MAX_CARD_BYTES, "model card") if (folder / "card.json").is_file() else {}
    card = card if isinstance(card, dict) else {}
    metrics: dict = card["metrics"] if isinstance(card.get("metrics"), dict) else {}

    def number(value: Any) -> float | None:
        return round(float(value), 6) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    return {
        "key_digest": digest,
        "weights_sha256": file_sha256(weights),
        "weights_bytes": weights.stat().st_size,
        "architecture": card.get("architecture") if isinstance(card.get("architecture"), str) else None,
        "role": card.get("role") if isinstance(card.get("role"), str) else None,
        "clean_acc": number(metrics.get("clean_acc")),
        "asr": number(metrics.get("asr")),
    }


def read_manifest(root: str | Path) -> dict[str, dict]:
    """The manifest under ``root`` (name → entry); empty when there is none. Raises ValueError
    (one line) for a file too large or not a JSON object of objects."""
    return _read_manifest_file(Path(root) / MANIFEST_FILE)


def _read_manifest_file(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    data = _read_json(path, MAX_MANIFEST_BYTES, "teacher manifest")
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: a teacher manifest maps folder names to entries; restore it from git or remove it")
    return data


def _write(root: Path, manifest: dict[str, dict]) -> None:
    path = root / MANIFEST_FILE
    tmp = root / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(dict(sorted(manifest.items())), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)  # the folder itself: no lock file left behind
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def record_model(root: str | Path, folder: str | Path) -> dict:
    """Record the model folder ``folder`` (inside ``root``) in ``root``'s manifest, replacing
    an entry of the same name; returns the entry."""
    root, folder = Path(root), Path(folder)
    entry = folder_entry(folder)
    with _locked(root):
        manifest = read_manifest(root)
        manifest[folder.name] = entry
        _write(root, manifest)
    return entry


def merge_manifest(root: str | Path, other: str | Path) -> list[str]:
    """Add the entries of the manifest file ``other`` (teachers trained elsewhere, e.g. on a GPU
    machine whose weights did not come back) to ``root``'s; returns the names added or changed.
    Raises FileNotFoundError for a missing file, ValueError (one line, nothing merged) when
    ``other`` records a name already here with other weights or another recipe."""
    other = Path(other)
    if not other.is_file():
        raise FileNotFoundError(f"{other}: no such manifest file")
    entries = _read_manifest_file(other)
    root = Path(root)
    with _locked(root):
        manifest = read_manifest(root)
        clash = [name for name, e in entries.items() if name in manifest and any(
            manifest[name].get(k) != e.get(k) for k in ("key_digest", "weights_sha256"))]
        if clash:
            raise ValueError(f"{other}: {listed(clash)} recorded here with other weights or recipe; "
                             "nothing merged (compare the two manifests, or remove the stale entry)")
        added = sorted(name for name, e in entries.items() if manifest.get(name) != e)
        _write(root, {**manifest, **entries})
    return added


def _model_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / _WEIGHTS).is_file())


def record_models(root: str | Path) -> dict[str, dict]:
    """Record every whole model folder under ``root`` (entries of models not there are kept);
    returns the manifest written."""
    root = Path(root)
    entries = {folder.name: folder_entry(folder) for folder in _model_folders(root)}
    with _locked(root):
        manifest = {**read_manifest(root), **entries}
        _write(root, manifest)
    return manifest


def _summary(entry: dict) -> str:
    def pct(value: Any) -> str:
        return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else "?"
    return (f"SHA-256 {str(entry.get('weights_sha256'))[:12]}…, clean {pct(entry.get('clean_acc'))}, "
            f"ASR {pct(entry.get('asr'))}")


def check_manifest(root: str | Path) -> list[ManifestStatus]:
    """Every model recorded under ``root`` or present there, against the manifest, by name."""
    root = Path(root)
    manifest = read_manifest(root)
    present = {f.name: f for f in _model_folders(root)}
    out: list[ManifestStatus] = []
    for name in sorted(set(manifest) | set(present)):
        if name not in present:
            out.append(ManifestStatus(name, "missing", "recorded, not in the cache: trained from its recipe on first use"))
        elif name not in manifest:
            out.append(ManifestStatus(name, "unrecorded", "in the cache, not in the manifest"))
        else:
            recorded, now = manifest[name], folder_entry(present[name])
            if recorded.get("key_digest") != now["key_digest"]:
                out.append(ManifestStatus(name, "differs", f"another recipe (key {now['key_digest']}, "
                                                           f"recorded {recorded.get('key_digest')})"))
            elif recorded.get("weights_sha256") != now["weights_sha256"]:
                out.append(ManifestStatus(name, "differs", f"other weights: {_summary(now)}, recorded {_summary(recorded)}"))
            else:
                out.append(ManifestStatus(name, "same"))
    return out
