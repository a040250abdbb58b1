"""What machine a figure was measured on: CPU model, cores, the vector ISA that matters here, load.

Benchmarks print this next to their timings: ratios measured on an AVX2-only AMD EPYC and on an
AVX-512 Intel (or Zen 4) machine differ, and a loaded machine slows everything down.
"""

from __future__ import annotations

import os
import platform

#: instruction-set extensions that change how fast numpy, numba and PyTorch kernels run
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def cpu_info() -> dict:
    """CPU model, logical cores, which of ``ISA_FLAGS`` the CPU has, and the 1-minute load average."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == (platform.processor() or platform.machine()):
                    model = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "isa": [f for f in ISA_FLAGS if f in flags],
            "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_workers(size: int, grain: int = 1 << 17) -> int:
    """How many threads a GIL-free kernel over ``size`` items should be split across: one per usable
    core, but none with fewer than ``grain`` items (a thread costs more than it saves there)."""
    return max(1, min(usable_cores(), size // grain))
