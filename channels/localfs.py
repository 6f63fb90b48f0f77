"""File-system ports shared by the channels that publish static files (RSS, micro-site).

Readers must never see a half-written file: every write goes to a temporary file in the same
directory and is swapped in with `os.replace`. Concurrent deliveries to one channel instance (worker
threads and processes) serialise on an exclusive `flock` of the instance's lock file.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from channels.base import AssetRef, MediaSource


def atomic_write(path: Path, data: bytes | str) -> bool:
    """Replace `path` with `data` atomically. Returns False (and writes nothing) if unchanged."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold the instance-wide lock of a channel's output directory."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def publish_media(directory: Path, assets: list[AssetRef], media: MediaSource) -> None:
    """Copy content-addressed images into `directory` (idempotent: existing files are kept)."""
    for asset in assets:
        target = directory / asset.stored_name
        if not target.exists():
            atomic_write(target, media.read(asset.sha256))
