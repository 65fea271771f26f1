"""Process memory: give the heap that freed tensors leave back to the operating system."""

from __future__ import annotations

import ctypes

_malloc_trim = None  # glibc's malloc_trim once looked up; False where there is none


def release_free_memory() -> None:
    """Hand the heap memory that tensors freed back to the OS (glibc's malloc_trim; nothing elsewhere).

    Each phase of an iteration frees large tensors of other sizes than the next phase allocates; glibc keeps
    them, and the process's resident memory grows towards the sum of the phases' peaks instead of the largest.
    The price: the next phase's first touch of that memory page-faults again (~1.4 M faults an iteration on
    the bundled model, ~3 CPU-seconds), so PPO does it only with ``PPOConfig.trim_memory`` (off).
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)
