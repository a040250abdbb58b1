"""Run untrusted generated Python in a separate, limited process.

Each program runs in a fresh temporary directory (its working directory and HOME), in
isolated mode (``python -I``), in its own process group, with resource limits: wall-clock
time (the group is killed), CPU seconds, address space (memory), file size and no core
dumps. Network: when ``unshare -rn`` works the program gets an empty network namespace;
in every case a prelude makes creating an internet socket raise ``PermissionError``.
This stops accidents and runaway code, not a determined attacker: use a container for that.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from ..core.validate import check_number

OUTPUT_LIMIT = 10_000_000  # bytes a program may write to a file (RLIMIT_FSIZE)
KEPT_OUTPUT = 4_000  # characters of stdout/stderr kept in the result
NETWORK_BLOCKED = "network access is disabled in the lmlab sandbox"

_PRELUDE = f'''
import socket, sys, runpy
_real = socket.socket
class _NoNetSocket(_real):
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
            raise PermissionError({NETWORK_BLOCKED!r})
        super().__init__(family, type, proto, fileno)
def _refuse(*args, **kwargs):
    raise PermissionError({NETWORK_BLOCKED!r})
socket.socket = _NoNetSocket
socket.create_connection = socket.getaddrinfo = socket.socketpair = _refuse
sys.argv = ["program.py"]
runpy.run_path("program.py", run_name="__main__")
'''


@dataclass
class ExecutionResult:
    """How a sandboxed run ended: passed, failed, timeout or memory (over the memory limit)."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    network_namespace: bool

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def as_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether ``unshare -rn`` can give a process an empty network namespace here."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _limits(seconds: float, memory_mb: int):
    def apply() -> None:
        cpu = int(seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT, OUTPUT_LIMIT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _tail(path: Path) -> str:
    with open(path, "rb") as fh:
        data = fh.read(OUTPUT_LIMIT)
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= KEPT_OUTPUT else text[:KEPT_OUTPUT // 2] + "\n…\n" + text[-KEPT_OUTPUT // 2:]


def run_python(program: str, *, timeout: float = 5.0, memory_mb: int = 512,
               isolate_network: bool = True) -> ExecutionResult:
    """Run ``program`` (Python source) in the sandbox and say how it ended."""
    check_number("timeout", timeout, low=0, low_inclusive=False)
    check_number("memory_mb", memory_mb, low=32, integer=True)
    use_netns = isolate_network and network_namespace_available()
    with tempfile.TemporaryDirectory(prefix="lmlab-sandbox-") as tmp:
        work = Path(tmp)
        (work / "program.py").write_text(program, encoding="utf-8")
        (work / "prelude.py").write_text(_PRELUDE, encoding="utf-8")
        command = [sys.executable, "-I", "prelude.py"]
        if use_netns:
            command = [shutil.which("unshare") or "unshare", "-rn", *command]
        env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        start = time.monotonic()
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
            proc = subprocess.Popen(command, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    preexec_fn=_limits(timeout, memory_mb), start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        seconds = time.monotonic() - start
        stdout, stderr = _tail(work / "stdout"), _tail(work / "stderr")
    code = proc.returncode
    if timed_out or code == -signal.SIGXCPU:
        status = "timeout"
    elif "MemoryError" in stderr or code in (-signal.SIGSEGV, -signal.SIGKILL):
        status = "memory"
    else:
        status = "passed" if code == 0 else "failed"
    return ExecutionResult(status, None if timed_out else code, stdout, stderr, seconds, use_netns)
