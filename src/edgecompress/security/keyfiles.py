"""Writing secrets (key files, decrypted artifacts): readable by their owner only from the first byte on,
whole or not at all, and never silently replacing an existing file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import EdgeCompressError
from ..fileio import give_plain_mode, temp_beside


def refuse_existing(*paths: Path, force: bool, what: str = "a key file") -> None:
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise EdgeCompressError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                                f"{what} is never overwritten unless you pass --force (force=True)")


@contextmanager
def private_output(path: Path, *, force: bool, what: str = "a key file") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with mode 0600 (mkstemp's mode, so never readable by others, not
    even for a moment); on success it becomes ``path``. Without ``force`` an existing file is kept, checked
    at the final link itself so that a concurrent writer is not overwritten either."""
    with temp_beside(path) as tmp:
        yield tmp
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists: no check-then-write race
            except FileExistsError:
                refuse_existing(path, force=False, what=what)
            except OSError:  # a file system without hard links: check, then rename (a narrow race)
                refuse_existing(path, force=False, what=what)
                os.replace(tmp, path)


def write_key_file(path: Path, data: bytes, *, private: bool, force: bool) -> Path:
    with private_output(path, force=force) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not private:  # a public key gets the mode a plain open() would give
            give_plain_mode(tmp)
    return path
