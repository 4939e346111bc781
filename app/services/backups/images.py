"""qemu-img's word on a backup's disk image before a restore uses it: the format it was stored
in, and no backing or external data file."""

import json
import subprocess
from pathlib import Path

from app.errors import Conflict, VirtdeckError
from app.virt.failures import one_line
from app.virt.images import read_file_header


def check_image(path: Path, expected_format: str) -> None:
    """qemu-img info: the expected format, and no backing or external data file (which a
    tampered image could point at a host file with); 409 naming the file otherwise. A qcow2
    header is read first, so that qemu-img never opens a file the image names."""
    if expected_format == "qcow2" and read_file_header(str(path)).names_other_files:
        raise Conflict(f"{path.name} names a backing or external data file; refusing to restore it")
    try:
        done = subprocess.run(
            ["qemu-img", "info", "--output=json", "-f", expected_format, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VirtdeckError(f"cannot check {path.name} with qemu-img: {exc}") from exc
    if done.returncode != 0:
        # qemu-img may quote what a tampered image says (feature names, file names): bounded.
        raise Conflict(
            one_line(f"{path.name} is not a valid {expected_format} image: {done.stderr}")
        )
    info = json.loads(done.stdout)
    if info.get("format") != expected_format:
        raise Conflict(f"{path.name} is {info.get('format')}, not {expected_format}")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise Conflict(f"{path.name} has a backing file; refusing to restore it")
    if (info.get("format-specific") or {}).get("data", {}).get("data-file"):
        raise Conflict(f"{path.name} has an external data file; refusing to restore it")
