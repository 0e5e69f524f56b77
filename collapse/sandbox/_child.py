"""The child side of :mod:`collapse.sandbox`: run by the parent as a script, by path.

``python -I -S .../_child.py <arguments>`` sets up one run (namespaces,
mounts, cgroup, limits, user, seccomp filter) while still privileged, then
runs the program in this same interpreter; see the package docstring for
the design. It is never imported by the parent (the parent only needs its
path), and it imports nothing but the standard library.

Processes of one run (root path)::

    parent ── P: this script, as started by the parent (host PID namespace)
               └─ I: init of a new PID namespace (pid 1), root, only waits
                   └─ G: joins the run's cgroup, drops to the run's uid,
                         installs the seccomp filter and runs the program

Setup lines go to the *setup* pipe, which only P, I and G's setup code hold
(G closes it before the program starts): ``ok <layers>``, ``error <why>`` and
``signal <n>`` (I: the program was killed by signal n). The program's
outcome goes to the *program* pipe, one line per event, each starting with
the run's token: ``done`` (the program ran to its end), ``blocked <why>``
(the audit hook refused something), ``failed <why>`` / ``memory <why>``
(the program raised).
"""

import os
import sys

# Syscall numbers for the seccomp filter: refused with EPERM for the program.
# Starting any executable (execve, execveat), leaving or changing namespaces
# and mounts, reaching into other processes (ptrace, process_vm_*,
# pidfd_getfd, process_madvise) and kernel attack surface that test code
# never needs (bpf, perf_event_open, userfaultfd, keyrings, io_uring, module
# and kexec loading, the new mount API, file handles).
_SYSCALLS = {
    "x86_64": (0xC000003E, dict(
        execve=59, execveat=322, unshare=272, setns=308, mount=165, umount2=166, pivot_root=155, chroot=161,
        ptrace=101, process_vm_readv=310, process_vm_writev=311, bpf=321, perf_event_open=298, userfaultfd=323,
        keyctl=250, add_key=248, request_key=249, name_to_handle_at=303, open_by_handle_at=304, kexec_load=246,
        kexec_file_load=320, init_module=175, finit_module=313, delete_module=176, swapon=167, swapoff=168,
        reboot=169, acct=163, quotactl=179, clone=56, clone3=435)),
    "aarch64": (0xC00000B7, dict(
        execve=221, execveat=281, unshare=97, setns=268, mount=40, umount2=39, pivot_root=41, chroot=51,
        ptrace=117, process_vm_readv=270, process_vm_writev=271, bpf=280, perf_event_open=241, userfaultfd=282,
        keyctl=219, add_key=217, request_key=218, name_to_handle_at=264, open_by_handle_at=265, kexec_load=104,
        kexec_file_load=294, init_module=105, finit_module=273, delete_module=106, swapon=224, swapoff=225,
        reboot=142, acct=89, quotactl=60, clone=220, clone3=435)),
}
# The same on every architecture (the unified syscall table from 403 on).
_GENERIC = dict(io_uring_setup=425, io_uring_enter=426, io_uring_register=427, open_tree=428, move_mount=429,
                fsopen=430, fsconfig=431, fsmount=432, fspick=433, pidfd_getfd=438, process_madvise=440,
                mount_setattr=442, quotactl_fd=443)
# clone() with any of these flags (a new namespace) is refused; plain clone (fork, threads) is allowed.
_CLONE_NS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_X32_BIT = 0x40000000


def seccomp_program(machine):
    """The classic-BPF seccomp filter for ``machine`` (``os.uname().machine``), as
    (code, jt, jf, k) tuples, or None for an architecture it does not know.

    Another architecture's syscalls (i386 through ``int 0x80``, arm32 compat)
    kill the process; on x86_64 the x32 ABI is refused. clone3 answers
    ENOSYS, so libc falls back to clone, whose flags the filter can read.
    """
    if machine not in _SYSCALLS:
        return None
    arch, nrs = _SYSCALLS[machine]
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, KILL, ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
    EPERM, ENOSYS = ERRNO | 1, ERRNO | 38
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, KILL), (LD, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(JGE, 0, 1, _X32_BIT), (RET, 0, 0, EPERM)]
    denied = {**nrs, **_GENERIC}
    clone, clone3 = denied.pop("clone"), denied.pop("clone3")
    for nr in sorted(set(denied.values())):
        prog += [(JEQ, 0, 1, nr), (RET, 0, 0, EPERM)]
    prog += [(JEQ, 0, 1, clone3), (RET, 0, 0, ENOSYS),
             (JEQ, 0, 3, clone), (LD, 0, 0, 16), (JSET, 0, 1, _CLONE_NS), (RET, 0, 0, EPERM),
             (RET, 0, 0, ALLOW)]
    return prog


def _install_seccomp(ctypes, libc, prog):
    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    arr = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), arr)
    # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    if libc.prctl(ctypes.c_int(22), ctypes.c_ulong(2), ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "seccomp: " + os.strerror(e))


def main():
    (workdir, uid, mounts, binds, scratch_mb, cpu, mem, nproc, fsize, nofile, prog_fd, setup_fd, out_fd, cgroups,
     want_seccomp, want_audit) = sys.argv[1:]
    uid, scratch_mb, setup_fd, out_fd, prog_fd = int(uid), int(scratch_mb), int(setup_fd), int(out_fd), int(prog_fd)
    chunks = []
    while True:
        b = os.read(prog_fd, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(prog_fd)
    token, _, src = b"".join(chunks).partition(b"\n")
    del chunks[:]  # the token lives on in one string only (see _run)
    token, src = token.decode(), src.decode("utf-8", "replace")
    done = []

    def fail(msg):
        os.write(setup_fd, ("error " + " ".join(str(msg).split()) + "\n").encode("utf-8", "backslashreplace"))
        os._exit(125)

    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
    except Exception:
        ctypes = libc = None

    def unshare(flags):
        return libc is not None and libc.unshare(flags) == 0

    def mount(src, tgt, fs, flags, data):
        enc = lambda s: None if s is None else s.encode()
        if libc.mount(enc(src), enc(tgt), enc(fs), flags, enc(data)) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "mount %s: %s" % (tgt, os.strerror(e)))

    CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWIPC = (
        0x20000, 0x10000000, 0x40000000, 0x20000000, 0x08000000)
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
        1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
    root = os.geteuid() == 0
    # Without root, P, I and G share the parent's user: P and I (no seccomp filter, all
    # capabilities in the run's user namespace) are made non-dumpable, so that G, even past the
    # audit hook, cannot write their memory through /proc/<pid>/mem and run code outside the filter.
    # (With root, G's uid of its own keeps it out of theirs.)
    if not root and libc is not None:
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    userns = False
    if unshare(CLONE_NEWNET if root else CLONE_NEWUSER | CLONE_NEWNET):
        done.append("netns")
        userns = not root
    if unshare(CLONE_NEWIPC):  # System V IPC objects and POSIX message queues die with the run
        done.append("ipcns")
    mountns = False
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
            # ptys of its own: /dev/ptmx (world-writable) would allocate them in the host's /dev/pts
            if os.path.isdir("/dev/pts"):
                try:
                    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=600")
                    mount("/dev/pts/ptmx", "/dev/ptmx", None, MS_BIND, None)
                except Exception:
                    pass
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
            mountns = True
        except Exception as e:
            fail("mount namespace: %s" % e)
    elif uid >= 0:
        os.chown(workdir, uid, uid)
    # Without root, in a user namespace of its own: a mount namespace only for a /proc of the
    # run's PID namespace (the host's /proc shows the parent's environment and memory, which the
    # same user may read and, past the audit hook, write). Where the kernel refuses, /proc stays the host's.
    own_proc = False
    if userns and not mountns and unshare(CLONE_NEWNS):
        try:
            mount(None, "/", None, MS_REC | MS_PRIVATE, None)
            own_proc = True
        except Exception:
            pass
    if cgroups:
        done.append("cgroup")

    # A PID namespace of its own: P forks I, the namespace's init; when I exits
    # (right after the program's process G), the kernel kills every process left in it.
    if unshare(CLONE_NEWPID):
        init = os.fork()
        if init:  # P: wait for I and exit as it did
            os.close(out_fd)
            _, st = os.waitpid(init, 0)
            os._exit(os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))
        if mountns:  # I: a /proc that shows this namespace's processes only
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
            except Exception as e:
                fail("/proc: %s" % e)
        elif own_proc:
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
                done.append("proc")
            except Exception:
                pass
        done.append("pidns")
        prog = os.fork()
        if prog:  # I: reap orphans until the program's process ends, then report how it ended
            os.close(out_fd)
            while True:
                pid, st = os.wait()
                if pid == prog:
                    break
            if os.WIFSIGNALED(st):
                os.write(setup_fd, b"signal %d\n" % os.WTERMSIG(st))
                os._exit(128 + os.WTERMSIG(st))
            os._exit(os.waitstatus_to_exitcode(st))

    # G: the program's own process.
    for d in cgroups.split("\n") if cgroups else ():
        try:
            with open(d + "/cgroup.procs", "w") as f:
                f.write("0")
        except OSError as e:
            fail("joining cgroup %s: %s" % (d, e))
    if os.getsid(0) != os.getpid():
        os.setsid()
    try:
        import resource as R
        cpu = int(cpu)
        R.setrlimit(R.RLIMIT_CPU, (cpu, cpu + 1))
        for lim, val in ((R.RLIMIT_AS, int(mem)), (R.RLIMIT_NPROC, int(nproc)), (R.RLIMIT_FSIZE, int(fsize)),
                         (R.RLIMIT_NOFILE, int(nofile)), (R.RLIMIT_CORE, 0)):
            R.setrlimit(lim, (val, val))
        done.append("rlimits")
    except Exception as e:
        fail("rlimits: %s" % e)
    if uid >= 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            done.append("uid")
        except Exception as e:
            fail("dropping privileges: %s" % e)
    if not root and libc is not None:
        libc.prctl(4, 1, 0, 0, 0)  # G itself dumpable again, as before: its /proc/self stays its own
    if libc is not None and libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS
        done.append("no_new_privs")
        if want_seccomp == "1":
            prog = seccomp_program(os.uname().machine)
            if prog is not None:
                try:
                    _install_seccomp(ctypes, libc, prog)
                    done.append("seccomp")
                except OSError as e:
                    fail(e)
    os.chdir(workdir)
    os.umask(0o077)
    if want_audit == "1":
        done.append("audit")
    os.write(setup_fd, ("ok " + " ".join(done) + "\n").encode())
    os.close(setup_fd)
    # Nothing of the setup is left for the program: no ctypes module (the audit
    # hook refuses importing _ctypes again), no file descriptor but 0, 1, 2 and
    # the program pipe.
    libc = ctypes = None
    for name in list(sys.modules):
        if name in ("ctypes", "_ctypes", "resource") or name.startswith("ctypes."):
            del sys.modules[name]
    os.closerange(3, out_fd)
    os.closerange(out_fd + 1, 1 << 16)
    box = [token]
    del token
    _run(src, box, out_fd, workdir, want_audit == "1")


# --- the program's run -----------------------------------------------------------
#
# The hook uses nothing but its parameters (bound at install time), constants
# and methods of exact built-in types, so neither rebinding builtins or module
# attributes nor a frame seen in a traceback changes what it decides.

class SandboxViolation(PermissionError):
    """An operation the sandbox refuses."""


def _reporter(token, fd):
    """``report(kind, message)``: one token-authenticated line on the program pipe.

    Each line starts with a newline (a partial line the program left on the pipe cannot
    swallow it) and is written in one ``write`` (under ``PIPE_BUF``: never interleaved). ``done``
    carries the number of lines reported before it, so the parent knows when one never reached
    it (the program swapped the descriptor, made it non-blocking, ...) and then reports no pass."""
    sent = [0]

    def report(kind, msg="", _prefix="\n" + token + " ", _enc=str.encode, _str=str, _write=os.write, _len=len,
               _sent=sent):
        if kind == "done":
            msg = _str(_sent[0])
        msg = " ".join(_str.split(_str.__str__(msg)))
        if _len(msg) > 1000:
            msg = msg[:1000]
        _sent[0] += 1
        try:
            _write(fd, _enc(_prefix + kind + " " + msg + "\n", "utf-8", "backslashreplace"))
        except OSError:
            pass
    return report


def _install(W, pid, report):
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def hook(event, args, _W=W, _WS=W + "/", _pid=pid, _WRITE=WRITE, _exc=SandboxViolation, _type=type,
             _str=str, _bytes=bytes, _int=int, _tuple=tuple, _issub=issubclass, _getcwd=os.getcwd,
             _fspath=os.fspath, _readlink=os.readlink, _len=len, _report=report):
        if event == "import":
            name = args[0]
            if not _issub(_type(name), _str):
                what = "import of a module named by a " + _type(name).__name__
                _report("blocked", what)
                raise _exc("blocked: " + what)
            # The last component names the extension's init function, whatever the package.
            if _str.__str__(name).rpartition(".")[2] in {
                    "_posixsubprocess", "_ctypes", "_xxsubinterpreters", "_testcapi", "_testinternalcapi",
                    "_testmultiphase", "_testbuffer", "_testimportmultiple", "_testsinglephase",
                    "_sqlite3", "_posixshmem", "_tkinter", "readline", "_multiprocessing", "_dbm", "_gdbm",
                    "ossaudiodev"}:
                what = "import of " + _str.__str__(name)
                _report("blocked", what)
                raise _exc("blocked: " + what)
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
        elif event[:7] == "syslog.":
            what = "the host's system log (" + event + ")"
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
            # Reported at the moment of refusal: catching the exception does not hide it.
            _report("blocked", what)
            raise _exc("blocked: " + what)

    sys.addaudithook(hook)


def _flush():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass


def _exit_status(e):
    """The exit status ``raise SystemExit(code)`` asks for, as the interpreter would set it."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def _failed(e, tb, src, report):
    """Report how the program failed, print its traceback and exit 1."""
    memory = isinstance(e, MemoryError) or isinstance(e, OSError) and e.errno == 12  # ENOMEM
    try:
        import traceback
        line = traceback.format_exception_only(type(e), e)[-1]
    except BaseException:
        traceback, line = None, type(e).__name__
    report("memory" if memory else "failed", line)
    try:
        import linecache
        linecache.cache["<program>"] = (len(src), None, src.splitlines(True), "<program>")
        traceback.print_exception(type(e), e.with_traceback(tb), tb)
    except BaseException:
        try:
            sys.__excepthook__(type(e), e.with_traceback(tb), tb)
        except BaseException:
            pass
    _flush()
    os._exit(1)


def _run(src, box, fd, workdir, audit):
    """Run the program as ``__main__``; ``done`` is reported only once all of it ran without raising.
    ``box`` holds the run's token; it is emptied, so that the token lives on in ``report``'s closure only."""
    report = _reporter(box.pop(), fd)
    if audit:
        _install(workdir, os.getpid(), report)
    import builtins
    sys.argv[:] = ["<program>"]
    mod = type(sys)("__main__")
    mod.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = mod
    try:
        code = compile(src, "<program>", "exec")
    except BaseException as e:  # SyntaxError, ValueError (null bytes), MemoryError, RecursionError
        _failed(e, None, src, report)
    try:
        exec(code, mod.__dict__)
    except SystemExit as e:  # an exit, whatever its status, is not the end of the program
        status = _exit_status(e)
        _flush()
        os._exit(status)
    except BaseException as e:
        tb = e.__traceback__
        _failed(e, tb.tb_next if tb is not None and tb.tb_next is not None else tb, src, report)
    _flush()
    report("done")
    os._exit(0)


if __name__ == "__main__":
    main()
