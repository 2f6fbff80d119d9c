"""Constants the client modules share."""

from __future__ import annotations

import os
from typing import IO

from synthgen.core.jobs import TERMINAL_STATUSES
from synthgen.core.webdataset import BLOCK, TAR_END

__all__ = ["BLOCK", "TAR_END", "TERMINAL_STATUSES", "Destination"]
Destination = str | os.PathLike[str] | IO[bytes]
