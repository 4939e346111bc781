"""What a restore says about an image qemu-img refuses: one bounded line, whatever the image
holds."""

import struct
import subprocess
from pathlib import Path

import pytest

from app.errors import Conflict
from app.services.backups.images import check_image

FEATURE_TABLE = 0x6803F857


def image_with_named_features(path: Path) -> None:
    """A qcow2 image claiming every unknown incompatible feature, each with a name of the
    image's choosing (qemu-img quotes them all in its error): the name holds a line break."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    with open(path, "r+b") as handle:
        header = handle.read(112)
        header_length = struct.unpack_from(">I", header, 100)[0]
        bits = range(5, 64)  # 0-4 are features qemu knows
        table = b"".join(
            struct.pack(">BB46s", 0, bit, f"evil\nline {bit} ".ljust(46, "x").encode())
            for bit in bits
        )
        handle.seek(72)
        handle.write(struct.pack(">Q", sum(1 << bit for bit in bits)))
        handle.seek(header_length)
        handle.write(struct.pack(">II", FEATURE_TABLE, len(table)) + table)
        handle.write(struct.pack(">II", 0, 0))


def test_qemu_img_refusing_an_image_is_reported_on_one_bounded_line(tmp_path: Path) -> None:
    image = tmp_path / "disk-vda.qcow2"
    image_with_named_features(image)

    with pytest.raises(Conflict) as refused:
        check_image(image, "qcow2")

    message = refused.value.message
    assert message.startswith("disk-vda.qcow2 is not a valid qcow2 image: ")
    assert "Unsupported" in message
    assert "\n" not in message and len(message) <= 500
