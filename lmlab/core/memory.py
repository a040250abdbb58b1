"""Peak memory of this process: the CUDA allocator's, or the resident-set high-water mark on CPU.

``reset_peak_memory`` starts a fresh measurement (Linux resets VmHWM through ``clear_refs``), so a
phase (a training run, a generation) can be measured after the model is already loaded.
"""

from __future__ import annotations

import torch


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak-memory measurement (CUDA allocator, or Linux's VmHWM via clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory since ``reset_peak_memory``: CUDA allocations, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
