"""Run untrusted Python programs (model-generated code) in a contained child process.

Every execution of generated code in the project goes through :func:`run` or
:func:`run_many`::

    r = run("print(1 + 1)", Limits(timeout_s=2.0))
    r.ok, r.status, r.reason, r.stdout     # True, "passed", "", "2\n"

Each program runs in a fresh ``python -I -S`` interpreter (standard library
only, no site-packages) started with ``subprocess``. A result is ``passed``
only when the program exits 0 within the limits; otherwise its ``status`` is
``failed`` (an exception or a non-zero exit), ``blocked`` (it tried something
the sandbox refuses), ``timeout`` (wall clock or CPU time), ``memory``,
``killed`` (a signal), ``output_limit`` or ``error`` (the sandbox itself could
not start it: out of processes, file descriptors or memory; in
:func:`run_many` that program alone, the others still run), and ``reason``
says why in one line.

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
  child's whole process group.
* **Own user** (``uid``, when the parent is root): the child drops to a
  fresh unprivileged uid/gid drawn at random for each run, with no
  supplementary groups, so it cannot signal, trace or read the memory or
  environment of the parent or of any other process, cannot write where
  only owners may, and ``RLIMIT_NPROC`` counts its own processes alone.
  After the run every process left with that uid is killed, so nothing
  outlives the run even after leaving its process group. ``no_new_privs`` is
  set, so set-uid programs grant nothing.
* **No network** (``netns``): a new, empty network namespace (as non-root,
  inside a new user namespace): no interface but a loopback that is down.
  Where the kernel refuses, only the audit hook blocks sockets
  (``socket-disabled``).
* **Private scratch space** (``mountns``, when the parent is root): in a new
  mount namespace the working directory and the world-writable directories
  (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``) are fresh
  size-limited tmpfs mounts that vanish with the child, so what it writes
  never reaches the host. A directory that hides the Python installation
  from other users (e.g. ``/root`` for a pyenv under it) is covered by an
  empty tmpfs that shows only the installation, read-only (this also hides
  the rest of that directory). Without a mount namespace such an
  installation cannot be run as another user, and the ``uid`` layer is off.
* **Session and I/O**: the child starts in its own session and process
  group, with stdin closed and an environment of ``PATH``, ``LANG``,
  ``LC_ALL``, ``HOME`` and ``TMPDIR`` only (nothing of the parent's), in a
  fresh temporary working directory removed afterwards. stdout and stderr are
  read with a cap each (``max_output_bytes``): a flood is cut at the cap, the
  child killed and the result marked ``truncated``, so the parent never holds
  more than the cap.
* **Audit hook** (``audit``, defense in depth): a prelude installs a
  ``sys.addaudithook`` hook (which Python code cannot remove) and then runs
  the program with fresh globals as ``__main__``. The hook refuses sockets,
  ``ctypes``, process creation (``fork``, ``exec``, ``subprocess``,
  ``os.system``, ``posix_spawn``), signals to other processes (``os.kill``
  of another pid, ``killpg``), ``resource.prlimit`` on another process,
  creating, changing or removing files outside
  the working directory (``/dev/null`` aside; ``os.open`` for writing needs
  an absolute path, as the hook cannot see its ``dir_fd``), changing to
  another directory, symbolic links, importing ``_posixsubprocess`` (it
  forks without an audit event), ``_ctypes``, ``_sqlite3`` (``ATTACH`` and
  ``VACUUM INTO`` create database files with no audit event),
  ``_posixshmem`` (``shm_open`` creates files in ``/dev/shm``) and CPython's
  test modules,
  building code objects, sub-interpreters and ``gc`` object enumeration. A
  refused operation raises ``SandboxViolation`` (a ``PermissionError``) and
  the run is reported ``blocked``. Reading files, imports, threads, signals
  to itself and ``os.devnull`` stay allowed, so test code (``math``, ``re``,
  ``itertools``, ``collections``, ``hashlib``, ``random``, ...) runs as usual.

What it does NOT protect against
--------------------------------
* Kernel and CPU vulnerabilities (namespaces and a uid are not a virtual
  machine), and side channels (timing, caches, CPU time) between the child
  and the host.
* Reading: the child can read every world-readable file on the host and see
  the host's process list and command lines under ``/proc``.
* Memory and disk: ``RLIMIT_AS`` bounds the child's address space, but the
  scratch tmpfs mounts (four times ``max_file_mb`` each) live in RAM until
  the run ends. Without the mount namespace the child can fill its working
  directory and the host's world-writable directories with many files of up
  to ``max_file_mb`` each until it times out.
* CPU contention: runs share the cores with each other and the host; only
  the time limits bound them.
* The audit hook alone is not a boundary: a program that corrupts the
  interpreter (crafted bytecode through ``marshal``, known CPython crash
  bugs) gets past it, and some operations raise no audit event at all
  (``os.mkfifo``, ``os.mknod``, C modules that open files themselves, such
  as the ``dbm`` backends where they are built). The OS layers above are
  what holds then.
* Without root the guarantees above do not all hold; they hold in full only
  when the parent runs as root (as this project's CI does). Without root
  there is no user of its own per run and no mount namespace (and there is
  no PID namespace in either case): the child runs as the parent's user,
  and only the audit hook stands between it and the parent, which it does
  not fully cover. In particular the child can signal the parent with
  ``signal.pidfd_send_signal`` on a pidfd from ``os.pidfd_open`` (neither
  raises an audit event in Python 3.11), read the parent's environment
  from ``/proc/<ppid>/environ``, and use the other calls that raise no
  audit event (``os.mkfifo``, ``os.mknod``, C modules that open files
  themselves) on whatever that user may touch. ``RLIMIT_NPROC`` then
  counts all of that user's processes (the child may be unable to start a
  thread when the user already runs as many). For code that may be
  hostile, run as root, or inside a container or VM of its own.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
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


# --- the child's two stages --------------------------------------------------
#
# Stage 1 (still privileged) sets up namespaces, mounts, limits and the user,
# then exec's stage 2, so nothing of the setup (ctypes in particular) is left
# in the interpreter that runs the program. Stage 2 reads the program from an
# inherited file descriptor, installs the audit hook and runs it.

_STAGE1 = r'''
import os, sys, resource
(_, workdir, uid, mounts, binds, scratch_mb, cpu, mem, nproc, fsize, nofile, prog_fd, status_fd, exe, prelude) = sys.argv
uid, scratch_mb, status_fd = int(uid), int(scratch_mb), int(status_fd)
done = []
def report(msg, code=None):
    os.write(status_fd, (msg + "\n").encode())
    if code is not None:
        os._exit(code)
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
except Exception:
    libc = None
def unshare(flags):
    return libc is not None and libc.unshare(flags) == 0
def mount(src, tgt, fs, flags, data):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(tgt), enc(fs), flags, enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "mount %s: %s" % (tgt, os.strerror(e)))
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x20000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
root = os.geteuid() == 0
if unshare(CLONE_NEWNET if root else CLONE_NEWUSER | CLONE_NEWNET):
    done.append("netns")
if root and mounts == "1":
    try:
        if not unshare(CLONE_NEWNS):
            raise OSError("unshare(CLONE_NEWNS) failed")
        mount(None, "/", None, MS_REC | MS_PRIVATE, None)
        pairs = [b.split("\t") for b in binds.split("\n") if b]  # (hidden ancestor, path to show)
        fds = [(p, os.open(p, os.O_PATH)) for _, p in pairs]
        for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
            if os.path.isdir(d) and not os.path.islink(d):
                mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,nr_inodes=1024,mode=1777" % scratch_mb)
        for a in sorted({a for a, _ in pairs}):
            mount("tmpfs", a, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=256,mode=755")
        for p, fd in fds:
            os.makedirs(p, mode=0o755, exist_ok=True)
            mount("/proc/self/fd/%d" % fd, p, None, MS_BIND | MS_REC, None)
            mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
            os.close(fd)
        os.makedirs(workdir, mode=0o755, exist_ok=True)
        opts = "size=%dm,nr_inodes=4096,mode=700" % scratch_mb
        if uid >= 0:
            opts += ",uid=%d,gid=%d" % (uid, uid)
        mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, opts)
        done.append("mountns")
    except Exception as e:
        report("error mount namespace: %s" % e, 125)
elif uid >= 0:
    os.chown(workdir, uid, uid)
try:
    R = resource
    cpu = int(cpu)
    R.setrlimit(R.RLIMIT_CPU, (cpu, cpu + 1))
    for lim, val in ((R.RLIMIT_AS, int(mem)), (R.RLIMIT_NPROC, int(nproc)), (R.RLIMIT_FSIZE, int(fsize)),
                     (R.RLIMIT_NOFILE, int(nofile)), (R.RLIMIT_CORE, 0)):
        R.setrlimit(lim, (val, val))
    done.append("rlimits")
except Exception as e:
    report("error rlimits: %s" % e, 125)
if libc is not None and libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS
    done.append("no_new_privs")
libc = None
if uid >= 0:
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        done.append("uid")
    except Exception as e:
        report("error dropping privileges: %s" % e, 125)
os.chdir(workdir)
os.umask(0o077)
report("ok " + " ".join(done))
os.close(status_fd)
try:
    os.execv(exe, [exe, "-I", "-S", "-c", prelude, workdir, prog_fd])
except Exception as e:
    sys.stderr.write("sandbox: cannot start the interpreter: %s\n" % e)
    os._exit(126)
'''

# Stage 2. The hook uses nothing but its parameters (bound at install time),
# constants and methods of exact built-in types, so neither rebinding
# builtins or module attributes nor a frame seen in a traceback changes what
# it decides.
_PRELUDE = r'''
import sys, os, builtins
class SandboxViolation(PermissionError):
    """An operation the sandbox refuses."""
def _install(W, pid):
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    def hook(event, args, _W=W, _WS=W + "/", _pid=pid, _WRITE=WRITE, _exc=SandboxViolation, _type=type,
             _str=str, _bytes=bytes, _int=int, _tuple=tuple, _issub=issubclass, _getcwd=os.getcwd,
             _fspath=os.fspath, _readlink=os.readlink, _len=len):
        if event == "import":
            name = args[0]
            if not _issub(_type(name), _str):
                raise _exc("blocked: import of a module named by a " + _type(name).__name__)
            # The last component names the extension's init function, whatever the package.
            if _str.__str__(name).rpartition(".")[2] in {
                    "_posixsubprocess", "_ctypes", "_xxsubinterpreters", "_testcapi", "_testinternalcapi",
                    "_testmultiphase", "_testbuffer", "_testimportmultiple", "_testsinglephase",
                    "_sqlite3", "_posixshmem"}:
                raise _exc("blocked: import of " + _str.__str__(name))
            return
        if event in {"exec", "compile", "object.__getattr__", "object.__setattr__", "object.__delattr__",
                     "sys._getframe", "marshal.loads", "os.listdir", "os.scandir", "builtins.id", "time.sleep"}:
            return
        what = None
        paths = ()  # (path, dir_fd or -1) pairs that the operation creates, changes or removes
        if event == "open":
            if _type(args) is not _tuple or _len(args) != 3:
                what = "open"
            else:
                p, mode, flags = args
                if _type(flags) is not _int or flags & _WRITE:
                    if _type(p) is _int:
                        return
                    # os.open (mode None) does not report its dir_fd: only absolute paths are judged.
                    if mode is None and not (_type(p) is _str and p[:1] == "/" or _type(p) is _bytes and p[:1] == b"/"):
                        what = "os.open for writing needs an absolute path"
                    paths = ((p, -1),)
        elif event in {"os.rename", "os.link"}:
            paths = ((args[0], args[2]), (args[1], args[3]))
        elif event in {"os.remove", "os.rmdir"}:
            paths = ((args[0], args[1]),)
        elif event in {"os.mkdir", "os.chmod", "os.chown", "os.utime"}:
            if _type(args[0]) is _int:
                return
            paths = ((args[0], args[-1]),)
        elif event in {"os.truncate", "os.setxattr", "os.removexattr", "os.chflags", "os.lchflags"}:
            if _type(args[0]) is _int:
                return
            paths = ((args[0], -1),)
        elif event == "os.chdir":
            if _type(args[0]) is _int:
                what = "os.fchdir"
            paths = ((args[0], -1),)
        elif event == "sqlite3.connect":
            p = args[0]
            if _type(p) is _str and (p == ":memory:" or p == ""):
                return
            if _type(p) is _str and p[:5] == "file:":
                what = "sqlite3 URI"
            paths = ((p, -1),)
        elif event == "os.kill":
            if _type(args[0]) is _int and args[0] == _pid:
                return
            what = "signal to another process (os.kill)"
        elif event == "resource.prlimit":
            if _type(args[0]) is _int and (args[0] == 0 or args[0] == _pid):
                return
            what = "limits of another process (resource.prlimit)"
        elif event in {"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                       "subprocess.Popen", "pty.spawn", "os.startfile"}:
            what = "process creation (" + event + ")"
        elif event in {"os.killpg", "signal.pidfd_send_signal"}:
            what = "signal to another process (" + event + ")"
        elif event in {"os.symlink", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__",
                       "cpython.PyInterpreterState_New", "sys._current_frames", "sys.remote_exec"}:
            what = event
        elif event[:7] == "socket.":
            what = "network (" + event + ")"
        elif event[:7] == "ctypes.":
            what = "ctypes (" + event + ")"
        if what is None:
            for p, dfd in paths:
                t = _type(p)
                if t is not _str and t is not _bytes:
                    p = _fspath(p)  # audit events carry converted paths; this is for the odd one out
                    t = _type(p)
                if _issub(t, _bytes):
                    p = _bytes.decode(p, "utf-8", "surrogateescape")
                elif _issub(t, _str):
                    p = _str.__str__(p)
                else:
                    what = "write to a path of type " + t.__name__
                    break
                if p[:1] != "/":
                    if _type(dfd) is not _int:
                        what = event + " with an unknown dir_fd"
                        break
                    if dfd == -1:
                        base = _getcwd()
                    else:  # the directory a dir_fd refers to (shutil.rmtree works this way)
                        try:
                            base = _readlink("/proc/self/fd/" + _str(dfd))
                        except OSError:
                            what = event + " with an unknown dir_fd"
                            break
                    p = base + "/" + p
                parts = []
                for seg in p.split("/"):
                    if seg == "" or seg == ".":
                        continue
                    if seg == "..":
                        if parts:
                            parts.pop()
                        continue
                    parts.append(seg)
                p = "/" + "/".join(parts)
                if not (p == _W or p[:_len(_WS)] == _WS or p == "/dev/null"):
                    what = ("chdir" if event == "os.chdir" else "write") + " outside the working directory (" + p + ")"
                    break
        if what is not None:
            raise _exc("blocked: " + what)
    sys.addaudithook(hook)
def _main():
    workdir, fd = sys.argv[1], int(sys.argv[2])
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    src = b"".join(chunks).decode("utf-8", "replace")
    _install(workdir, os.getpid())
    sys.argv[:] = ["<program>"]
    mod = type(sys)("__main__")
    mod.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = mod
    try:
        exec(compile(src, "<program>", "exec"), mod.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        tb = e.__traceback__
        tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb
        try:
            import linecache, traceback
            linecache.cache["<program>"] = (len(src), None, src.splitlines(True), "<program>")
            traceback.print_exception(type(e), e.with_traceback(tb), tb)
        except BaseException:
            sys.__excepthook__(type(e), e.with_traceback(tb), tb)
        raise SystemExit(1)
_main()
'''


# --- the parent ----------------------------------------------------------------

_UID_BASE, _UID_SPAN = 0x70000000, 1 << 24
_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()
_probe_lock = threading.Lock()
_config: dict | None = None  # {"mounts": bool, "drop": bool, "isolation": tuple}


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
    """Live processes (zombies aside: they run nothing) whose real uid is ``uid``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                zombie = False
                for line in f:
                    if line.startswith(b"State:"):
                        zombie = line.split()[1] in (b"Z", b"X")
                    elif line.startswith(b"Uid:"):
                        if int(line.split()[1]) == uid and not zombie:
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


def _kill_uid(uid: int) -> None:
    """SIGKILL every process running as ``uid`` (the run's own uid), until none is left."""
    for _ in range(200):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:  # a pidfd pins the process, so a recycled pid is never hit
                pfd = os.pidfd_open(pid)
            except (AttributeError, OSError) as e:
                if isinstance(e, OSError) and e.errno != errno.ENOSYS:
                    continue  # gone already
                try:  # no pidfds on this kernel: plain kill, after checking the uid once more
                    if _uid_of(pid) == uid:
                        os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                continue
            try:
                if _uid_of(pid) == uid:
                    signal.pidfd_send_signal(pfd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(pfd)
        time.sleep(0.001)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
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
            line = line.strip()
            return line if len(line) <= 240 else line[:237] + "..."
    return ""


def _classify(rc: int, stderr: str, limits: Limits) -> tuple[str, str]:
    last = _last_line(stderr)
    if rc == 0:
        return "passed", ""
    if rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU:
            return "timeout", f"cpu time limit of {limits.cpu_seconds} s"
        if "MemoryError" in last or "memory" in last.lower():
            return "memory", last
        return "killed", f"killed by {_signal_name(sig)}"
    if last.startswith("SandboxViolation:"):
        return "blocked", last.split(":", 1)[1].strip()  # "blocked: network (socket.__new__)"
    if last.startswith("MemoryError") or "Cannot allocate memory" in last or "out of memory" in last.lower():
        return "memory", last
    return "failed", last or f"exit code {rc}"


def _spawn(argv: list[str], env: dict[str, str], cwd: str, fds: tuple[int, ...]) -> subprocess.Popen:
    """Start the child's stage 1 in a session of its own, with only ``fds`` inherited."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=cwd, start_new_session=True, close_fds=True, pass_fds=fds)


def _not_started(e: BaseException, t0: float) -> Result:
    """The result of a program whose child could not be set up (out of processes, file descriptors, memory)."""
    why = " ".join(str(e).split()) or type(e).__name__
    return Result(ok=False, status="error", reason=f"sandbox could not start the program: {why}", returncode=None,
                  stdout="", stderr="", wall_s=time.monotonic() - t0)


def _execute(program: str, limits: Limits, cfg: dict) -> Result:
    """Run one program; a failure to set up its child (``OSError``: EAGAIN, EMFILE, ENOMEM, ...) is
    that program's ``error`` result, never an exception (a batch goes on with the other programs)."""
    t0 = time.monotonic()
    cap = limits.max_output_bytes
    base, uid, fds = None, -1, []
    try:
        base = tempfile.mkdtemp(prefix="collapse-sandbox-")
        workdir = os.path.realpath(base)
        uid = _new_uid() if cfg["drop"] else -1
        fds.append(_memfd(program.encode("utf-8", "surrogatepass")))
        fds.extend(os.pipe())
    except OSError as e:
        for fd in fds:
            os.close(fd)
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
        if uid >= 0:
            with _uid_lock:
                _uids_in_use.discard(uid)
        return _not_started(e, t0)
    prog_fd, status_r, status_w = fds
    scratch_mb = 4 * limits.max_file_mb
    binds = "\n".join(f"{a}\t{p}" for a, p in _hidden_binds()) if cfg["mounts"] else ""
    exe = _interpreter()
    argv = [exe, "-I", "-S", "-c", _STAGE1, workdir, str(uid), "1" if cfg["mounts"] else "0", binds, str(scratch_mb),
            str(limits.cpu_seconds), str(limits.memory_mb << 20), str(limits.max_procs), str(limits.max_file_mb << 20),
            str(limits.max_open_files), str(prog_fd), str(status_w), exe, _PRELUDE]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    out = {"stdout": bytearray(), "stderr": bytearray()}
    truncated = timed_out = flooded = False
    proc = None
    failure: BaseException | None = None
    try:
        try:
            proc = _spawn(argv, env, workdir, (prog_fd, status_w))
        finally:
            os.close(prog_fd)
            os.close(status_w)
        deadline = time.monotonic() + limits.timeout_s
        exited_at = None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
            sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
            while sel.get_map():
                now = time.monotonic()
                if now >= deadline:
                    timed_out = exited_at is None
                    break
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                    deadline = min(deadline, now + 0.5)  # pipes held open by a straggler
                    _kill_group(proc.pid)
                    if uid >= 0:
                        _kill_uid(uid)
                for key, _ in sel.select(min(deadline - now, 0.1)):
                    chunk = os.read(key.fileobj.fileno(), 1 << 16)
                    if not chunk:
                        sel.unregister(key.fileobj)
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
            if uid >= 0:
                _kill_uid(uid)
            proc.stdout.close()
            proc.stderr.close()
        status_line = b""
        try:
            os.set_blocking(status_r, False)
            status_line = os.read(status_r, 4096)
        except OSError:
            pass
        os.close(status_r)
        shutil.rmtree(base, ignore_errors=True)
        if uid >= 0:
            with _uid_lock:
                _uids_in_use.discard(uid)
    if failure is not None:
        if proc is None:
            return _not_started(failure, t0)
        why = " ".join(str(failure).split()) or type(failure).__name__
        return Result(ok=False, status="error", reason=f"sandbox error while running the program: {why}",
                      returncode=proc.returncode, stdout=out["stdout"].decode("utf-8", "replace"),
                      stderr=out["stderr"].decode("utf-8", "replace"), wall_s=time.monotonic() - t0,
                      truncated=truncated)
    wall = time.monotonic() - t0
    stdout = out["stdout"].decode("utf-8", "replace")
    stderr = out["stderr"].decode("utf-8", "replace")
    status_text = status_line.decode("utf-8", "replace").strip()
    iso = tuple(status_text.split()[1:]) + ("audit",) if status_text.startswith("ok") else ()
    rc = proc.returncode
    if timed_out:
        status, reason = "timeout", f"timeout after {limits.timeout_s:g} s"
    elif flooded:
        status, reason = "output_limit", f"output limit of {cap} bytes exceeded"
    elif not status_text.startswith("ok"):
        status, reason = "error", "sandbox setup failed: " + (status_text.removeprefix("error ") or _last_line(stderr) or f"exit code {rc}")
    else:
        status, reason = _classify(rc, stderr, limits)
    return Result(ok=status == "passed", status=status, reason=reason, returncode=rc, stdout=stdout, stderr=stderr,
                  wall_s=wall, truncated=truncated, isolation=iso)


def _configure() -> dict:
    """Find once per process which layers this machine allows, by running a
    trivial program with everything on and falling back step by step."""
    global _config
    with _probe_lock:
        if _config is not None:
            return _config
        root = os.geteuid() == 0
        candidates = [{"mounts": True, "drop": True}, {"mounts": False, "drop": True}] if root else []
        candidates.append({"mounts": False, "drop": False})
        limits = Limits(timeout_s=30.0)
        for cfg in candidates:
            if cfg["drop"] and not cfg["mounts"] and _hidden_binds():
                continue  # the unprivileged user could not start the interpreter
            r = _execute("print('ok')", limits, cfg)
            if r.ok and r.stdout == "ok\n":
                _config = dict(cfg, isolation=r.isolation)
                if root and not cfg["drop"]:
                    warnings.warn("collapse.sandbox: generated programs run as root on this machine (no user of "
                                  f"their own); isolation: {', '.join(r.isolation)}", RuntimeWarning, stacklevel=3)
                return _config
        r = _execute("print('ok')", limits, candidates[-1])
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

