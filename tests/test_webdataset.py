"""The tar framing of results: the fast member header is tarfile's, byte for byte, so tar bytes never change."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from synthgen.core.webdataset import TAR_END, sample_meta, tar_sample, tarfile_header, ustar_header


@pytest.mark.parametrize("name", ["00000000.npy", "00000007.json", "12345678.png", "a" * 99, "b" * 100, "é.png", "x"])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 12_416, 10**9, 8**11 - 1])
def test_the_member_header_is_tarfiles_byte_for_byte(name: str, size: int) -> None:
    assert ustar_header(name, size) == tarfile_header(name, size)


def test_a_sample_reads_back_with_tarfile() -> None:
    image = b"\x93NUMPY" + bytes(range(256)) * 5
    meta = sample_meta(3, 9, np.arange(4, dtype=np.float32), "m@1", "0" * 64, None)
    data = tar_sample(3, "npy", image, meta) + TAR_END
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["00000003.npy", "00000003.json"]
        member = tar.extractfile("00000003.npy")
        assert member is not None and member.read() == image
