"""Sizes for people: one formatter for pages, job messages and the backup list."""


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB', 1073741824 -> '1 GiB' (whole numbers without a decimal)."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if size == int(size) or unit == "B" else f"{size:.1f} {unit}"
