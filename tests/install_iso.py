"""A bootable "installer" ISO for the console tests, from Debian's isolinux and syslinux: it
stops at isolinux's boot: prompt (as an installer's boot menu does) and powers the guest off
when someone types `off` and Enter there. So a test that types into the guest's screen sees
the guest shut off. Real-mode code only: it runs as fast under nested KVM as on metal.

Needs isolinux, syslinux-common and xorriso (scripts/setup-system.sh --test installs them).
"""

import shutil
import subprocess
from pathlib import Path

ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
MODULES = Path("/usr/lib/syslinux/modules/bios")
# The boot menu: wait at the prompt for ever; "off" runs poweroff.c32 (APM, which SeaBIOS has).
CONFIG = """PROMPT 1
TIMEOUT 0
DEFAULT wait
SAY virtdeck test installer: type off and press Enter to power this guest off
LABEL off
  COM32 poweroff.c32
"""


def build_install_iso(path: Path, workdir: Path) -> Path:
    """Write the ISO to path (its tree is built in workdir) and return path."""
    tree = workdir / "iso"
    boot = tree / "isolinux"
    boot.mkdir(parents=True)
    shutil.copy(ISOLINUX, boot)
    for module in ("ldlinux.c32", "libcom32.c32", "libutil.c32", "poweroff.c32"):
        shutil.copy(MODULES / module, boot)
    (boot / "isolinux.cfg").write_text(CONFIG)
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(path), "-V", "VDTEST",
         "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
         "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(tree)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return path
