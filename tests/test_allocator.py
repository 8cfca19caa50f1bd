"""agentflan.allocator: freed blocks stay in the process (glibc), so a loop that allocates and
frees the same large block faults its pages in once, not every time."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

LOOP = """
import resource, sys
if sys.argv[1] == "keep":
    from agentflan.allocator import keep_freed_memory
    print(keep_freed_memory(), file=sys.stderr)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = bytearray(64 << 20)          # above glibc's adaptive mmap threshold (32 MiB at most)
    block[::4096] = b"x" * len(block[::4096])
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = (64 << 20) // 4096                  # pages of one block


def _faults(mode: str, **env: str) -> int:
    out = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_large_block_is_reused_not_faulted_in_again():
    from agentflan.allocator import keep_freed_memory
    assert keep_freed_memory().startswith("glibc malloc: mmap and trim thresholds")
    plain, kept = _faults("plain"), _faults("keep")
    assert plain > 15 * PAGES, plain        # every one of the 20 blocks faulted in afresh
    assert kept < 3 * PAGES, kept           # the first block's pages, then reuse


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_environment_switch_keeps_glibcs_defaults():
    assert _faults("keep", AGENTFLAN_KEEP_FREED_MEMORY="0") > 15 * PAGES
