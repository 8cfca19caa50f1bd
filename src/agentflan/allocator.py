"""Keep freed memory in the process: glibc's malloc settings for the jobs' allocation pattern.

Why: a training step allocates and frees the same large blocks (activations, logits, gradients:
hundreds of KiB to tens of MiB) every step. glibc serves blocks above its mmap threshold with a
fresh ``mmap`` and unmaps them on ``free``, and gives the top of its heap back to the kernel once
more than the trim threshold is free. Its threshold adapts upwards only to blocks it has seen
freed. So every step faulted in and zeroed fresh pages: a 200-step pretraining run of the
miniature's ``xs`` model took 1.0 million minor page faults and 2.9-3.4 s of system time
(16.4-17.5 s of steps), against 0.2 million, 1.0 s and 14.2-15.9 s with the settings below,
the same weights byte for byte (docs/benchmarks.md).

:func:`keep_freed_memory` raises the mmap threshold to 1 GiB (blocks below it come from the heap
and are reused) and, only when that was accepted, the trim threshold to 1 GiB (at most that much
free memory stays at the heap's top). A trim threshold alone would be worse than nothing: setting
either turns off glibc's adaptive mmap threshold. Allocations do not change what is computed, only
where the memory comes from. Not glibc (macOS, musl): nothing is done. The cost is host memory
that glibc would have returned: a job's peak RSS is about the same, but freed memory stays with
the job until it ends. ``AGENTFLAN_KEEP_FREED_MEMORY=0`` in the environment keeps glibc's defaults
(a memory-tight node).
"""
from __future__ import annotations

import os
import sys

ENV_SWITCH = "AGENTFLAN_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30

_done: list[str] = []


def keep_freed_memory() -> str:
    """Apply the settings once per process (a forked child inherits them); returns what is in
    force, for a log line."""
    if _done:
        return _done[0]
    state = "system allocator unchanged (not glibc)"
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        state = f"glibc defaults kept ({ENV_SWITCH}=0)"
    elif sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None)
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            if mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1:
                mallopt(M_TRIM_THRESHOLD, THRESHOLD)
                state = "glibc malloc: mmap and trim thresholds 1 GiB"
            else:
                state = "glibc malloc: thresholds left as they were (mallopt refused 1 GiB)"
    _done.append(state)
    return state
