"""Constants the client modules share."""

from __future__ import annotations

import os
import tarfile
from typing import IO

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "expired"})
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "npy": "npy"}
BLOCK = tarfile.BLOCKSIZE
TAR_END = b"\0" * (2 * BLOCK)
Destination = str | os.PathLike[str] | IO[bytes]
