import subprocess
import sys

import pytest

from conftest import CODE

# Page faults of training steps 5-8 of a small convolution net in a fresh process, on 8 x 16 x
# 256 x 256 float32 activations (32 MiB: above the largest mmap threshold glibc picks itself).
# Four steps first: the heap may still grow in the first ones.
STEP_FAULTS = f"""
import resource, sys
sys.path.insert(0, {CODE!r})
import torch
from host_memory import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else "default")
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 3, padding=1))
x = torch.rand(8, 1, 256, 256)
for step in range(8):
    if step == 4:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).square().mean().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def step_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", STEP_FAULTS, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_are_reused_without_page_faults():
    # By default glibc unmaps each freed 32 MiB activation and the kernel zero-fills its 8192 pages
    # again at the next step's first touch; kept on the heap, they are reused.
    took, kept = step_faults("keep")
    _, default = step_faults("default")
    assert took == "True"
    assert default > 200_000 and kept < 20_000, (default, kept)
