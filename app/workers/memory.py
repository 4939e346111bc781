"""How a virtdeck process handles memory: glibc's malloc, told to keep less, and Python's
cycle collector, told to run less often."""

import contextlib
import ctypes
import gc

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


# Objects allocated between two runs of the collector's youngest generation (700 by default).
# A worker allocates and frees a few objects per guest it reads (mostly without cycles, which
# reference counting frees at once); at 700 the collector took a tenth of the worker's CPU while
# it read ten hosts of 500 guests (1.10 s, against 0.98 s at 20,000).
COLLECT_EVERY = 20_000


def collect_less() -> None:
    """Run the cycle collector less often, and never again over what is alive now (the modules,
    the app): call once the process has started up."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(COLLECT_EVERY, older, oldest)
