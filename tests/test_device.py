import subprocess
import sys

import pytest

# Run in a fresh interpreter: the allocator setting is process-wide and the probe reads malloc's
# own statistics (glibc's mallinfo2), which other tests' allocations would blur.
PROBE = """
import ctypes, torch
from psx.device import reuse_host_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if {reuse}:
    assert reuse_host_memory()
big = 64 * 2**20
tensor = torch.ones(big // 4)  # 64 MB, over glibc's largest mmap threshold
mapped = libc.mallinfo2().hblkhd
del tensor
print(mapped >= big, libc.mallinfo2().fordblks >= big)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("reuse", [False, True])
def test_reuse_host_memory_keeps_large_blocks_in_the_heap(reuse):
    out = subprocess.run([sys.executable, "-c", PROBE.format(reuse=reuse)], capture_output=True, text=True, check=True).stdout
    mapped_separately, kept_after_free = out.split()
    # glibc's default maps a 64 MB block on its own and unmaps it on free; with reuse it comes from
    # the heap and stays there, free for the next allocation.
    assert (mapped_separately, kept_after_free) == (("False", "True") if reuse else ("True", "False"))
