"""Reading a WebDataset tar stream sample by sample, so a download can resume between samples."""

from __future__ import annotations

import logging
import tarfile

from synthgen.client.constants import BLOCK, TAR_END
from synthgen.client.errors import SynthgenProtocolError
from synthgen.client.models import Sample

log = logging.getLogger(__name__)


class TarSampleReader:
    """Splits a stream of tar blocks, fed in pieces of any size, into whole samples.

    A sample (all members sharing a key) is complete when a member with another key begins, or at the
    end-of-archive blocks. Samples must come in index order, starting at ``first_index``.
    """

    def __init__(self, first_index: int = 0) -> None:
        self.expected = first_index
        self.ended = False
        self._buf = bytearray()
        self._scan = 0  # where the next member header starts in _buf
        self._key: str | None = None
        self._members: list[tuple[str, int, int]] = []  # name, start and end of its data in _buf

    def feed(self, data: bytes) -> list[Sample]:
        if self.ended:
            return []
        self._buf += data
        samples: list[Sample] = []
        while len(self._buf) - self._scan >= BLOCK:
            header = bytes(self._buf[self._scan : self._scan + BLOCK])
            if header == TAR_END[:BLOCK]:
                self.ended = True
                samples += self._emit()
                break
            name, size = _parse_header(header)
            if len(self._buf) < self._scan + BLOCK + size + (-size) % BLOCK:
                break  # the member's data has not all come yet
            if name.split(".", 1)[0] != self._key:
                samples += self._emit()
                self._key = name.split(".", 1)[0]
            data_start = self._scan + BLOCK
            self._members.append((name, data_start, data_start + size))
            self._scan = data_start + size + (-size) % BLOCK
        return samples

    def _emit(self) -> list[Sample]:
        if self._key is None:
            return []
        if not self._key.isdigit() or int(self._key) != self.expected:
            raise SynthgenProtocolError(f"expected sample {self.expected:08d} in the result, got {self._key!r}")
        raw = bytes(self._buf[: self._scan])
        sample = Sample(self.expected, raw, {name: raw[a:b] for name, a, b in self._members})
        del self._buf[: self._scan]
        self._scan, self._key, self._members = 0, None, []
        self.expected += 1
        return [sample]


def _parse_header(header: bytes) -> tuple[str, int]:
    try:
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise SynthgenProtocolError(f"malformed tar header in the result: {exc}") from exc
    return info.name, info.size
