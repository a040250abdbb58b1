"""Peak memory of this process: the CUDA allocator's, or the resident-set high-water mark on CPU.

``reset_peak_memory`` starts a fresh measurement (Linux resets VmHWM through ``clear_refs``), so a
phase (a training run, a generation) can be measured after the model is already loaded;
``release_free_memory`` first hands back what earlier phases freed but the C allocator kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys

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


def release_free_memory(collect_cycles: bool = True) -> None:
    """Return freed heap memory to the operating system (glibc's ``malloc_trim``) after a phase that
    allocated and freed a lot, such as dequantising a model: glibc keeps such memory resident, so
    the process's size, and any peak measured after it, would count memory no tensor holds.
    ``collect_cycles`` first runs a full garbage collection, for memory only a reference cycle held;
    leave it off when reference counting freed everything (a full collection in a long-lived process,
    a server or a test run, costs up to seconds)."""
    if collect_cycles:
        gc.collect()
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to hand back
        ctypes.CDLL("libc.so.6").malloc_trim(0)
