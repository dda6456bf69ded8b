"""Small calls of every CUDA kernel, for `compute-sanitizer --tool memcheck` (gpu_check.sh)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bfdkern.ops import multitask_loss, perturb_pair
from bfdkern.tasks import blades_spec
from tests.helpers import random_inputs


def main() -> None:
    spec = blades_spec()
    for b in (1, 2, 37, 256):
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            logits, targets, weights = random_inputs(spec, b, dtype=dtype, device="cuda")
            x = logits.requires_grad_(True)
            per_task, _ = multitask_loss(x, targets, spec, weights, backend="cuda")
            per_task.backward(torch.rand(spec.num_tasks, device="cuda", dtype=per_task.dtype))
    for n in (1, 3, 1000, 1 << 20, (1 << 20) + 7):
        for dtype in (torch.float32, torch.bfloat16):
            perturb_pair(torch.randn(n, device="cuda", dtype=dtype), torch.randn(n, device="cuda"), backend="cuda")
    torch.cuda.synchronize()
    print("sanitize_ops: all CUDA kernels ran")


if __name__ == "__main__":
    main()
