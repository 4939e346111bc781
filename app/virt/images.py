"""Read what an image's first bytes say about it: whether they are a qcow2 header, and whether
that header names another file (a backing file or an external data file) that QEMU would open.

The bytes are untrusted (a guest can write them into its own raw disk); this only reads fixed
fields at fixed offsets and never follows, echoes or opens what they name.
"""

import struct
from dataclasses import dataclass

QCOW2_MAGIC = b"QFI\xfb"
# The fields read here all lie in the first HEADER_BYTES of a version 2 or 3 header.
HEADER_BYTES = 512
# Incompatible feature bit 2: the image keeps its data in an external file named in the header.
DATA_FILE_BIT = 1 << 2


@dataclass(frozen=True)
class ImageHeader:
    """What an image's first bytes claim."""

    qcow2: bool = False
    backing_file: bool = False
    data_file: bool = False

    @property
    def names_other_files(self) -> bool:
        """Whether opening it as qcow2 would make QEMU open another file."""
        return self.backing_file or self.data_file


def read_header(data: bytes) -> ImageHeader:
    """What the first bytes of an image (at least HEADER_BYTES, fewer for a tiny file) claim."""
    if len(data) < 72 or data[:4] != QCOW2_MAGIC:
        return ImageHeader()
    version, backing_offset = struct.unpack_from(">IQ", data, 4)
    incompatible = struct.unpack_from(">Q", data, 72)[0] if version >= 3 and len(data) >= 80 else 0
    return ImageHeader(
        qcow2=True,
        backing_file=backing_offset != 0,
        data_file=bool(incompatible & DATA_FILE_BIT),
    )


def read_file_header(path: str) -> ImageHeader:
    """What the first bytes of a local file claim."""
    with open(path, "rb") as handle:
        return read_header(handle.read(HEADER_BYTES))
