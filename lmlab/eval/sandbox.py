"""Run untrusted generated Python in a separate, limited process — and know whether it ran to its end.

Each program runs in a fresh temporary directory (its working directory and HOME), in isolated
mode (``python -I``), in its own process group, under a small supervisor (the *prelude*) that:

* reads a random nonce from a pipe before any program code runs, runs the program, then runs the
  ``check`` code (e.g. HumanEval's ``check(candidate)``) itself, and writes the nonce to a second
  pipe only when both returned normally. A run passes only when the nonce arrives — never on the
  exit code alone, so ``sys.exit(0)`` or ``os._exit(0)`` in a wrong completion fails;
* installs an audit hook (PEP 578; it cannot be removed from Python code) that refuses: creating
  processes (fork, exec, spawn, ``subprocess``, ``os.system``: a fork bomb stops at its first
  fork), internet sockets (also when created through ``_socket``), writing, deleting, renaming
  or changing permissions outside the temporary directory, signalling other processes,
  ``ctypes``, and the introspection that would find the nonce (``gc.get_objects`` and friends,
  ``sys._current_frames``).

Around it, resource limits: CPU seconds, address space (memory), file size, open files, number
of processes (for non-root users), no core dumps; a wall-clock limit kills the whole process
group; with ``unshare -rn`` available the program also gets an empty network namespace.

What it does not stop (use a container or a VM for hostile code): native code — a C extension
already installed in the interpreter can do anything the user can; reading files outside the
temporary directory (only writes are refused); a program that walks its own stack frames up into
the supervisor to find the nonce (frames are not audited); denial of service within the limits.
"""

from __future__ import annotations

import os
import resource
import secrets
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
OPEN_FILES = 64  # RLIMIT_NOFILE
PROCESSES = 64  # RLIMIT_NPROC (ignored for root; the audit hook refuses process creation anyway)
KEPT_OUTPUT = 4_000  # characters of stdout/stderr kept in the result
NETWORK_BLOCKED = "network access is disabled in the lmlab sandbox"

_PRELUDE = r'''
import os, sys


def _supervise():
    nonce_fd, done_fd = int(sys.argv[1]), int(sys.argv[2])
    nonce = os.read(nonce_fd, 64)
    os.close(nonce_fd)
    home = os.path.realpath(os.getcwd())
    forbidden = ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                 "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "pty.spawn",
                 "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames",
                 "ctypes.", "_ctypes.", "os.chroot", "os.setuid", "os.setgid", "resource.setrlimit",
                 "resource.prlimit")
    writes = ("os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
              "os.link", "os.truncate", "os.utime", "os.chdir", "shutil.rmtree", "shutil.move", "shutil.copyfile")

    def inside(path):
        try:
            path = os.fsdecode(path) if isinstance(path, (str, bytes)) else None
        except Exception:
            return False
        if path is None:
            return True  # a file descriptor: already open, so already checked
        real = os.path.realpath(path)
        return real == home or real.startswith(home + os.sep) or real in ("/dev/null",)

    def hook(event, args):
        if event.startswith(forbidden):
            raise PermissionError(f"the lmlab sandbox refuses {event}")
        if event == "socket.__new__" and args and args[1] not in (1,):  # AF_UNIX is 1; inet families refused
            raise PermissionError(NETWORK_BLOCKED)
        if event in ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto"):
            raise PermissionError(NETWORK_BLOCKED)
        if event == "open" and len(args) > 1:
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            if writing and not inside(args[0]):
                raise PermissionError(f"the lmlab sandbox refuses writing outside its directory: {args[0]}")
        if event in writes and args and not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes))):
            raise PermissionError(f"the lmlab sandbox refuses {event} outside its directory")

    sys.addaudithook(hook)
    sys.argv = ["program.py"]
    import runpy
    namespace = runpy.run_path("program.py", run_name="__main__")
    with open("check.py", encoding="utf-8") as fh:
        check = fh.read()
    if check:
        exec(compile(check, "check.py", "exec"), namespace)
    os.write(done_fd, nonce)


_supervise()
'''

_NETWORK = f"NETWORK_BLOCKED = {NETWORK_BLOCKED!r}\n"


@dataclass
class ExecutionResult:
    """How a sandboxed run ended: passed (ran to its end), failed, timeout or memory."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    network_namespace: bool
    completed: bool = False  # the supervisor saw the program and its check return normally

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
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
        resource.setrlimit(resource.RLIMIT_NPROC, (PROCESSES, PROCESSES))
    return apply


def _tail(path: Path) -> str:
    with open(path, "rb") as fh:
        data = fh.read(OUTPUT_LIMIT)
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= KEPT_OUTPUT else text[:KEPT_OUTPUT // 2] + "\n…\n" + text[-KEPT_OUTPUT // 2:]


def run_python(program: str, *, check: str = "", timeout: float = 5.0, memory_mb: int = 512,
               isolate_network: bool = True) -> ExecutionResult:
    """Run ``program`` (Python source), then ``check`` (Python run in the program's namespace, e.g.
    ``check(candidate)``), in the sandbox; passed only if both ran to their end."""
    check_number("timeout", timeout, low=0, low_inclusive=False)
    check_number("memory_mb", memory_mb, low=32, integer=True)
    use_netns = isolate_network and network_namespace_available()
    nonce = secrets.token_hex(16).encode()
    with tempfile.TemporaryDirectory(prefix="lmlab-sandbox-") as tmp:
        work = Path(tmp)
        (work / "program.py").write_text(program, encoding="utf-8")
        (work / "check.py").write_text(check, encoding="utf-8")
        prelude = work.parent / f"{work.name}-prelude.py"  # outside the program's directory: read-only to it
        prelude.write_text(_NETWORK + _PRELUDE, encoding="utf-8")
        nonce_read, nonce_write = os.pipe()
        done_read, done_write = os.pipe()
        command = [sys.executable, "-I", str(prelude), str(nonce_read), str(done_write)]
        if use_netns:
            command = [shutil.which("unshare") or "unshare", "-rn", *command]
        env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        start = time.monotonic()
        try:
            with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
                proc = subprocess.Popen(command, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        preexec_fn=_limits(timeout, memory_mb), start_new_session=True,
                                        pass_fds=(nonce_read, done_write))
                os.close(nonce_read)
                os.close(done_write)
                nonce_read = done_write = -1
                os.write(nonce_write, nonce)
                os.close(nonce_write)
                nonce_write = -1
                timed_out = False
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                try:  # the whole group: children too, whatever the program left behind
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
            completed = _read_all(done_read) == nonce
        finally:
            for fd in (nonce_read, nonce_write, done_write, done_read):
                if fd >= 0:
                    os.close(fd)
            prelude.unlink(missing_ok=True)
        seconds = time.monotonic() - start
        stdout, stderr = _tail(work / "stdout"), _tail(work / "stderr")
    code = proc.returncode
    if timed_out or code == -signal.SIGXCPU:
        status = "timeout"
    elif "MemoryError" in stderr or code in (-signal.SIGSEGV, -signal.SIGKILL):
        status = "memory"
    else:
        status = "passed" if completed and code == 0 else "failed"
    if status == "failed" and code == 0 and not completed:
        stderr += "\n[lmlab sandbox] the program exited before its end (sys.exit or os._exit): not passed"
    return ExecutionResult(status, None if timed_out else code, stdout, stderr, seconds, use_netns, completed)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
