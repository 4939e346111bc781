"""How much memory a virtdeck process keeps: glibc's malloc, told to keep less."""

import contextlib
import ctypes

# glibc's mallopt parameter for its number of malloc arenas: by default up to 8 per core, each
# keeping memory a thread freed; virtdeck's threads mostly wait on I/O, so two suffice.
M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """Fewer malloc arenas for this process (call before it starts threads): a worker has a
    thread per host and the web server a pool, and each arena would otherwise hold memory."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to limit
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def release_free_memory() -> None:
    """Hand the memory malloc holds free back to the system (after a large read)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
