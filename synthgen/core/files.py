"""Atomic file writes: a file is whole or absent, never partial, after a crash or a full disk.

Every writer (result stores, checkpoints, caches, model cards, the client's downloads) goes through
``atomic_file``: write under a unique temporary name beside the target, fsync, then rename into place.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_file(path: str | os.PathLike[str], fsync: bool = True) -> Iterator[IO[bytes]]:
    """A binary file that appears at ``path`` only once the ``with`` block has completed without error.

    The temporary name is unique, so writers of the same path in parallel never share one; on any
    error (a full disk included) the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_file``)."""
    with atomic_file(path, fsync) as f:
        f.write(data)
