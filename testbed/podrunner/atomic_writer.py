"""A configMap or secret volume's files, written as a kubelet writes them (its AtomicWriter,
kubernetes pkg/volume/util/atomic_writer.go), so that they can change while the pod runs.

The files live in a hidden timestamped folder (`..2026_11_30_01_02_03.<random>`); `..data` is a
symlink to it, and each top-level name the pod sees is a symlink through `..data`
(`ca.crt -> ..data/ca.crt`). An update writes a whole new timestamped folder, then swaps `..data`
to it in one `rename` (atomic), then adds the links of new names, removes those of names that
went, and removes the old folder. A reader thus sees either the old set of files or the new one,
never a half-written file or a mix of the two (one file read twice may of course differ). A
reader that lists the folder sees `..data` and the timestamped folder too, as in a cluster.

Unchanged contents are not written again (nothing is swapped), so a caller may write every few
seconds.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import NamedTuple

DATA = "..data"


class File(NamedTuple):
    """One file of the volume: its content and mode."""

    data: bytes
    mode: int


def check_path(path: str) -> None:
    """A file's path inside the volume, as the API server validates `items[].path`: relative,
    no `..` element, not starting with `..` (the writer's own names). ValueError otherwise."""
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or path.startswith("..") or ".." in parts:
        raise ValueError(f"volume file path {path!r}: must be relative, without '..' and not start with '..'")


def write(target: Path, payload: dict[str, File], fs_group: int | None) -> bool:
    """Make `target` hold exactly `payload` (path inside the volume -> File); whether anything
    changed. `target` is made if missing (mode 0755). Files get the group `fs_group` when given."""
    for path in payload:
        check_path(path)
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o755)
    current = target / DATA
    if current.is_symlink() and _holds(current, payload):
        return False
    old = os.readlink(current) if current.is_symlink() else None
    was_visible = {entry.name for entry in (target / old).iterdir()} if old is not None else set()
    folder = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S', time.gmtime())}.{secrets.token_hex(5)}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    for path, file in payload.items():
        destination = folder / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(file.data)
        destination.chmod(file.mode)
        if fs_group is not None:
            os.chown(destination, -1, fs_group)
    staged = target / "..data_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(folder.name)
    staged.replace(current)  # the swap: rename(2) over the old link
    visible = {PurePosixPath(path).parts[0] for path in payload}
    for name in sorted(visible):
        link = target / name
        if not link.is_symlink():
            link.symlink_to(f"{DATA}/{name}")
    for name in sorted(was_visible - visible):  # only the writer's own links: a mount point made in the folder stays
        (target / name).unlink(missing_ok=True)
    if old is not None:
        shutil.rmtree(target / old, ignore_errors=True)
    return True


def _holds(data: Path, payload: dict[str, File]) -> bool:
    """Whether the folder `data` points to holds exactly `payload`, modes included."""
    present = {str(p.relative_to(data.resolve())) for p in data.resolve().rglob("*") if p.is_file()}
    if present != set(payload):
        return False
    for path, file in payload.items():
        on_disk = data / path
        if on_disk.read_bytes() != file.data or on_disk.stat().st_mode & 0o7777 != file.mode:
            return False
    return True
