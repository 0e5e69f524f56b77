"""The sandbox: hostile programs are contained, reported with a reason, and the evaluator keeps working."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest

from collapse import sandbox
from collapse.sandbox import Limits, run, run_many

REPO = Path(__file__).resolve().parents[1]
QUICK = Limits(timeout_s=5.0)


def still_works() -> None:
    """After every hostile program the evaluator runs a trivial one as usual."""
    r = run("print('alive')", QUICK)
    assert r.ok and r.status == "passed" and r.stdout == "alive\n", r


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                ppid = int(stat.rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def test_normal_program_passes_with_its_output():
    r = run("import sys\nprint('hello')\nprint('note', file=sys.stderr)", QUICK)
    assert r.ok and r.status == "passed" and r.reason == "" and r.returncode == 0
    assert r.stdout == "hello\n" and r.stderr == "note\n" and not r.truncated
    assert {"rlimits", "audit"} <= set(r.isolation) and sandbox.network_isolation() in ("netns", "socket-disabled")
    # Test code of the kind HumanEval runs needs the usual modules.
    r = run("import math, re, itertools, collections, hashlib, string, random, heapq, functools, fractions\n"
            "from collections import namedtuple\nfrom dataclasses import dataclass\n"
            "assert hashlib.md5(b'a').hexdigest() == '0cc175b9c0f1b6a831c399e269772661'\n"
            "P = namedtuple('P', 'x')\n@dataclass\nclass D:\n    x: int\nprint(P(1), D(2), math.gcd(4, 6))", QUICK)
    assert r.ok and r.stdout == "P(x=1) D(x=2) 2\n", r


def test_exception_and_exit_codes_fail_with_a_one_line_reason():
    r = run("def f():\n    raise ValueError('boom')\nf()", QUICK)
    assert not r.ok and r.status == "failed" and r.reason == "ValueError: boom" and r.returncode == 1
    assert "line 2, in f" in r.stderr and "raise ValueError('boom')" in r.stderr  # the program's own lines
    r = run("assert 1 == 2", QUICK)
    assert r.status == "failed" and r.reason == "AssertionError"
    r = run("import sys; sys.exit(3)", QUICK)
    assert r.status == "failed" and r.returncode == 3 and r.reason == "exit code 3"
    r = run("def f(:\n    pass", QUICK)
    assert r.status == "failed" and r.reason.startswith("SyntaxError")
    still_works()


def test_infinite_loop_times_out_on_wall_clock_and_cpu_time():
    t0 = time.monotonic()
    r = run("while True: pass", Limits(timeout_s=1.0))
    assert r.status == "timeout" and r.reason == "timeout after 1 s" and not r.ok
    assert time.monotonic() - t0 < 4
    r = run("while True: pass", Limits(timeout_s=10.0, cpu_s=1))
    assert r.status == "timeout" and "cpu time" in r.reason and r.wall_s < 5
    still_works()


def test_memory_bomb_is_refused():
    r = run("x = bytearray(8 * 1024 ** 3)", Limits(timeout_s=5.0, memory_mb=256))
    assert r.status == "memory" and r.reason == "MemoryError"
    r = run("blocks = []\nwhile True: blocks.append(bytearray(10 ** 7))", Limits(timeout_s=5.0, memory_mb=256))
    assert not r.ok and r.status == "memory", r
    still_works()


def test_fork_bombs_are_contained():
    before = descendants(os.getpid())
    r = run("import os\nwhile True:\n    os.fork()", QUICK)
    assert r.status == "blocked" and "process creation" in r.reason
    r = run("import subprocess\nwhile True:\n    subprocess.Popen(['sleep', '100'])", QUICK)
    assert r.status == "blocked" and "_posixsubprocess" in r.reason
    r = run("import os\nos.system('sleep 100 &')", QUICK)
    assert r.status == "blocked" and "process creation" in r.reason
    # Threads are allowed, but count against max_procs (RLIMIT_NPROC) where the child has a user of its own.
    if "uid" in sandbox.isolation() or os.geteuid() != 0:
        r = run("import threading, time\nfor _ in range(200):\n    threading.Thread(target=time.sleep, args=(0.3,)).start()",
                Limits(timeout_s=5.0, max_procs=8))
        assert r.status == "failed" and "can't start new thread" in r.reason, r
    assert descendants(os.getpid()) == before
    still_works()


def test_writes_outside_the_working_directory_never_land():
    u = uuid.uuid4().hex
    targets = [Path(f"/tmp/collapse-test-{u}"), REPO / f"collapse-test-{u}"]
    for t in targets:
        r = run(f"open({str(t)!r}, 'w').write('x')", QUICK)
        assert r.status == "blocked" and "outside the working directory" in r.reason, r
        r = run(f"import os\nos.makedirs({str(t)!r})", QUICK)
        assert r.status == "blocked"
        r = run(f"open('../{t.name}', 'w').write('x')", QUICK)
        assert r.status == "blocked"
        assert not t.exists()
    # os.mkfifo raises no audit event: the OS layers alone keep it off the host.
    iso = sandbox.isolation()
    if "mountns" in iso:
        r = run(f"import os\nos.mkfifo({str(targets[0])!r})\nprint(os.path.exists({str(targets[0])!r}))", QUICK)
        assert r.ok and r.stdout == "True\n"  # in the child's private /tmp
        assert not targets[0].exists()
    if "uid" in iso:
        r = run(f"import os\nos.mkfifo({str(targets[1])!r})", QUICK)
        # Permission denied for the throwaway uid; or, for a checkout under /tmp, absent from the private /tmp.
        assert r.status == "failed" and ("Permission denied" in r.reason or "No such file" in r.reason), r
        assert not targets[1].exists()
    # Inside its own directory a program may write as usual.
    r = run("import tempfile, os, pathlib\nopen('a.txt', 'w').write('hi')\n"
            "with tempfile.TemporaryDirectory() as d:\n    pathlib.Path(d, 'b').write_text('x')\n"
            "print(open('a.txt').read(), sorted(os.listdir('.')))", QUICK)
    assert r.ok and r.stdout == "hi ['a.txt']\n", r
    still_works()


def test_the_parent_environment_is_not_visible(monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("COLLAPSE_TEST_SECRET", secret)
    r = run("import os\nprint(dict(os.environ))\n"
            "for p in (os.getppid(), 1):\n"
            "    try:\n        print(open(f'/proc/{p}/environ').read())\n    except OSError as e:\n        print('denied', e.errno)", QUICK)
    assert r.ok and secret not in r.stdout and "COLLAPSE_TEST_SECRET" not in r.stdout
    env = eval(r.stdout.splitlines()[0])
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR"}
    still_works()


def test_sockets_are_refused_and_nothing_connects():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    try:
        r = run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'hi')", QUICK)
        assert r.status == "blocked" and "network" in r.reason
        with pytest.raises(socket.timeout):
            listener.accept()
        if sandbox.network_isolation() == "netns":
            # In its own network namespace the child sees no interface but lo, and not our listener.
            r = run("print(open('/proc/net/dev').read())\nprint(open('/proc/net/tcp').read())", QUICK)
            ifaces = {line.split(":")[0].strip() for line in r.stdout.splitlines() if ":" in line and "|" not in line}
            assert ifaces <= {"lo"} and f":{port:04X}" not in r.stdout
    finally:
        listener.close()
    still_works()


def test_the_parent_cannot_be_signalled():
    me = os.getpid()
    for prog in ["import os\nos.kill(os.getppid(), 9)", f"import os\nos.kill({me}, 9)", f"import os\nos.kill({me}, 15)",
                 f"import os\nos.killpg({os.getpgid(me)}, 9)", "import os\nos.kill(-1, 9)", "import os\nos.kill(0, 9)"]:
        r = run(prog, QUICK)
        assert r.status == "blocked" and "signal" in r.reason, (prog, r)
    r = run("import os\nprint(os.getuid(), os.getpgrp() == os.getpid(), os.getsid(0) == os.getpid())", QUICK)
    uid, own_group, own_session = r.stdout.split()
    assert own_group == own_session == "True"
    if "uid" in sandbox.isolation():
        assert int(uid) not in (0, os.getuid())
    r = run("import os\nos.kill(os.getpid(), 9)", QUICK)  # itself: allowed
    assert r.status == "killed" and r.reason == "killed by SIGKILL"
    still_works()


def test_output_flood_is_cut_at_the_cap():
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = run("while True: print('x' * 10000)", Limits(timeout_s=5.0, max_output_bytes=20000))
    assert r.status in ("output_limit", "timeout") and not r.ok and r.truncated
    assert len(r.stdout) == 20000 and set(r.stdout) <= {"x", "\n"}
    r = run("import sys\nwhile True: sys.stderr.write('e' * 10000)", Limits(timeout_s=5.0, max_output_bytes=20000))
    assert r.status == "output_limit" and len(r.stderr) == 20000
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 50_000  # KiB
    still_works()


def test_run_many_keeps_order_and_runs_in_parallel():
    progs = [f"import time\nt0 = time.time()\ntime.sleep(0.4)\nprint({i}, t0, time.time())" for i in range(6)]
    progs.insert(3, "raise KeyError('k')")
    res = run_many(progs, QUICK, workers=2, progress=False)
    assert [r.status for r in res] == ["passed"] * 3 + ["failed"] + ["passed"] * 3
    assert res[3].reason == "KeyError: 'k'"
    spans = []
    for i, r in enumerate(r for r in res if r.ok):
        idx, t0, t1 = r.stdout.split()
        assert int(idx) == i
        spans.append((float(t0), float(t1)))
    overlapping = sum(1 for a in spans for b in spans if a < b and a[0] < b[1] and b[0] < a[1])
    assert overlapping >= 2  # two workers: sleeps overlap
    assert run_many([], progress=False) == []


def test_the_working_directory_is_fresh_and_removed():
    r = run("import os\nprint(os.getcwd())\nprint(os.listdir('.'))\nprint(os.environ['HOME'] == os.getcwd())", QUICK)
    cwd, listing, home = r.stdout.splitlines()
    assert listing == "[]" and home == "True"
    assert not os.path.exists(cwd)
    r2 = run("import os\nprint(os.getcwd())", QUICK)
    assert r2.stdout.strip() != cwd and not os.path.exists(r2.stdout.strip())


def test_limits_defaults_and_validation():
    assert Limits(timeout_s=2.5).cpu_seconds == 4 and Limits(cpu_s=7).cpu_seconds == 7
    with pytest.raises(ValueError):
        Limits(timeout_s=0)
    with pytest.raises(ValueError):
        Limits(memory_mb=0)


def test_a_program_whose_child_cannot_start_is_an_error_and_the_batch_goes_on(monkeypatch):
    import errno
    import threading

    sandbox.isolation()  # the probe runs before anything is made to fail
    calls, lock = [0], threading.Lock()
    popen, memfd = sandbox.subprocess.Popen, sandbox._memfd

    def flaky_popen(*args, **kwargs):
        with lock:
            calls[0] += 1
            n = calls[0]
        if n == 2:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return popen(*args, **kwargs)

    def flaky_memfd(data):
        if b"NO_FD_FOR_ME" in data:
            raise OSError(errno.EMFILE, "Too many open files")
        return memfd(data)

    monkeypatch.setattr(sandbox.subprocess, "Popen", flaky_popen)
    monkeypatch.setattr(sandbox, "_memfd", flaky_memfd)
    fds_before = len(os.listdir("/proc/self/fd"))
    progs = ["print(0)", "print(1)", "print(2)", "# NO_FD_FOR_ME\nprint(3)", "print(4)"]
    res = run_many(progs, QUICK, workers=1, progress=False)
    assert [r.status for r in res] == ["passed", "error", "passed", "error", "passed"]
    assert [r.stdout for r in res if r.ok] == ["0\n", "2\n", "4\n"]
    assert res[1].reason == "sandbox could not start the program: [Errno 11] Resource temporarily unavailable"
    assert res[3].reason == "sandbox could not start the program: [Errno 24] Too many open files"
    assert all(not r.ok and "\n" not in r.reason and r.returncode is None for r in (res[1], res[3]))
    assert len(os.listdir("/proc/self/fd")) == fds_before  # nothing leaked by the failed starts
    r = run("print('x')", QUICK)  # run() answers the same way
    assert r.ok
    monkeypatch.setattr(sandbox.subprocess, "Popen", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOMEM, "no memory")))
    r = run("print('x')", QUICK)
    assert r.status == "error" and "no memory" in r.reason


def test_limits_of_other_processes_sqlite_and_shared_memory_are_refused():
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    for prog in ["import os, resource\nresource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (1, 1))",
                 "import resource\nresource.prlimit(1, resource.RLIMIT_NOFILE)"]:
        r = run(prog, QUICK)
        assert r.status == "blocked" and "prlimit" in r.reason, (prog, r)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == nofile
    r = run("import os, resource\nresource.prlimit(0, resource.RLIMIT_NOFILE, (32, 32))\n"
            "print(resource.prlimit(os.getpid(), resource.RLIMIT_NOFILE))", QUICK)  # its own limits: allowed
    assert r.ok and r.stdout == "(32, 32)\n", r
    r = run("import sqlite3\nsqlite3.connect(':memory:').execute(\"ATTACH DATABASE 'x.db' AS x\")", QUICK)
    assert r.status == "blocked" and "_sqlite3" in r.reason, r
    r = run("from multiprocessing import shared_memory\nshared_memory.SharedMemory(create=True, size=16)", QUICK)
    assert r.status == "blocked" and "_posixshmem" in r.reason, r
    still_works()



def test_c_modules_that_write_files_without_an_audit_event_are_refused(tmp_path):
    """readline's history file and multiprocessing's named semaphores (a file in /dev/shm) are
    written by C code that raises no audit event: without root nothing else stops them writing the
    parent user's files or leaving files behind, so importing those modules is refused; so is syslog."""
    mark = f"collapse-rt-{uuid.uuid4().hex[:8]}"
    target = tmp_path / "history.sh"
    progs = {
        "readline": f"import readline\nreadline.add_history('echo pwned')\nreadline.write_history_file({str(target)!r})",
        "_multiprocessing": f"import _multiprocessing\n_multiprocessing.SemLock(1, 1, 1, '/{mark}', False)",
        "syslog": "import syslog\nsyslog.syslog('collapse sandbox test')",
    }
    for name, prog in progs.items():
        r = run(prog, QUICK)
        assert r.status == "blocked" and name in r.reason, (name, r)
    assert not target.exists() and not os.path.exists(f"/dev/shm/sem.{mark}")
    r = run("import multiprocessing.synchronize", QUICK)
    assert r.status == "blocked" and "_multiprocessing" in r.reason, r
    still_works()


DEEP_TREE = ("import os\nprint(os.getcwd(), flush=True)\nos.mkdir('ro')\nopen('ro/f', 'w').close()\nos.chmod('ro', 0o500)\n"
             "os.mkdir('none')\nos.mkdir('none/a')\nos.chmod('none', 0)\n"
             "for i in range(1100):\n    os.mkdir('d')\n    os.chdir('d')\nopen('f', 'w').close()\nprint('deep')")


def test_a_deep_or_locked_working_directory_is_removed_and_the_batch_goes_on(tmp_path):
    """shutil.rmtree recursed once per level: a working directory 1100 levels deep (where it is on
    the host's disk: without root, or without a mount namespace) raised RecursionError out of
    run_many, and every result of the batch was lost."""
    fd = os.open(tmp_path, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=fd)
        sub = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = sub
    os.close(fd)
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "x").mkdir()
    (tmp_path / "locked").chmod(0)
    sandbox._remove_tree(str(tmp_path))
    assert not tmp_path.exists()
    cfg = dict(sandbox._configure(), mounts=False, drop=False)  # the working directory on the host's disk
    r = sandbox._execute(DEEP_TREE, Limits(timeout_s=20.0), cfg)
    assert r.ok and r.stdout.endswith("deep\n"), r
    assert not os.path.exists(r.stdout.split()[0])
    still_works()


NONROOT_SCRIPT = """
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from collapse.sandbox import run, Limits
progs = {"proc": "import os\\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
         "readline": "import readline\\nreadline.add_history('x')\\nreadline.write_history_file(sys.argv[1] + '/h')"}
out = {}
for name, prog in progs.items():
    r = run(prog.replace("sys.argv[1]", repr(sys.argv[1])), Limits(timeout_s=10.0))
    out[name] = [r.status, r.reason, r.stdout, list(r.isolation)]
# Past the audit hook (a private switch): the memory of the namespace's init, which runs outside the
# seccomp filter as the same user, is not writable.
from collapse import sandbox
r = sandbox._execute("import os\\ntry:\\n    os.open('/proc/1/mem', os.O_RDWR)\\n    print('open')\\n"
                     "except OSError as e:\\n    print(e.errno)", Limits(timeout_s=10.0), dict(sandbox._configure(), audit=False))
out["init_mem"] = [r.status, r.reason, r.stdout, list(r.isolation)]
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser") or not os.path.exists("/usr/bin/python3"),
                    reason="needs root to start a non-root parent, runuser and /usr/bin/python3")
def test_without_root_the_child_sees_only_its_own_processes_and_writes_no_files_of_the_user():
    """As a plain user (no cgroup, no uid of its own, no scratch mounts) the child used to see the
    host's /proc (the parent's environment and memory, which the same user may read and, past the
    audit hook, write), could write that user's files through readline's history file, and, past
    the audit hook, could write the memory of its PID namespace's init (same user, no seccomp
    filter, every capability in the run's user namespace) and so start any program."""
    import json
    import subprocess
    import tempfile

    d = tempfile.mkdtemp(prefix="collapse-rt-")
    try:
        shutil.copytree(REPO / "collapse" / "sandbox", os.path.join(d, "collapse", "sandbox"))
        Path(d, "collapse", "__init__.py").write_text("")
        owned = os.path.join(d, "owned")
        os.mkdir(owned)
        shutil.chown(owned, "nobody")
        for root, dirs, files in os.walk(d):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        script = os.path.join(d, "nonroot.py")
        Path(script).write_text(NONROOT_SCRIPT)
        os.chmod(script, 0o644)
        p = subprocess.run([shutil.which("runuser"), "-u", "nobody", "--", "/usr/bin/python3", "-I", "-S", script, owned],
                           capture_output=True, text=True, timeout=120, cwd=d, env={"PATH": "/usr/bin:/bin"})
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout.strip().splitlines()[-1])
        status, _, stdout, iso = out["proc"]
        if "proc" in iso:  # the kernel let the child mount a /proc of its own
            assert status == "passed" and len(json.loads(stdout)) <= 3, out
        assert out["readline"][0] == "blocked" and not os.path.exists(os.path.join(owned, "h")), out
        if "pidns" in out["init_mem"][3]:
            assert out["init_mem"][0] == "passed" and out["init_mem"][2] != "open\n", out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_ptys_are_the_runs_own():
    """/dev/ptmx is world-writable: a run allocated its ptys in the host's /dev/pts (and saw the host's)."""
    if "mountns" not in sandbox.isolation() or not os.path.isdir("/dev/pts"):
        pytest.skip("no mount namespace")
    m, s = os.openpty()  # a pty of the host's, open during the run
    try:
        r = run("import os\nm, s = os.openpty()\nprint(os.ttyname(s), sorted(os.listdir('/dev/pts')))", QUICK)
    finally:
        os.close(m)
        os.close(s)
    assert r.ok and r.stdout == "/dev/pts/0 ['0', 'ptmx']\n", r
    still_works()

# --- issue 11, part 2: no other executable, every kind of memory counted, nothing outlives a run,
# no forged pass, printable reasons --------------------------------------------------------------

MARK_CMD = "echo $((6*7))XY"  # prints 42XY only if a shell ran; the program's text never holds "42XY"
EXEC_ROUTES = {
    "os.execv": f"import os\nos.execv('/bin/sh', ['sh', '-c', {MARK_CMD!r}])",
    "os.execve of a copy written out": f"import os, shutil\nshutil.copy('/bin/sh', 'x')\nos.chmod('x', 0o755)\n"
                                       f"os.execve('./x', ['x', '-c', {MARK_CMD!r}], {{}})",
    "the dynamic loader": f"import os, glob\nld = sorted(glob.glob('/lib*/ld-linux*'))[0]\n"
                          f"os.execv(ld, [ld, '/bin/sh', '-c', {MARK_CMD!r}])",
    "os.posix_spawn": f"import os\npid = os.posix_spawn('/bin/sh', ['sh', '-c', {MARK_CMD!r}], {{}})\nprint(os.waitpid(pid, 0))",
    "os.posix_spawnp": f"import os\npid = os.posix_spawnp('sh', ['sh', '-c', {MARK_CMD!r}], {{}})\nprint(os.waitpid(pid, 0))",
    "subprocess": f"import subprocess\nprint(subprocess.run(['/bin/sh', '-c', {MARK_CMD!r}]))",
    "os.system": f"import os\nprint(os.system({MARK_CMD!r}))",
    "os.popen": f"import os\nprint(os.popen({MARK_CMD!r}).read())",
    "perl": "import os\nprint(os.system('perl -e \"print 6*7, qq(XY)\"'))",
    "fork then exec": f"import os\npid = os.fork()\nif pid == 0:\n    try:\n        os.execv('/bin/sh', ['sh', '-c', {MARK_CMD!r}])\n"
                      f"    finally:\n        os._exit(3)\nprint(os.waitpid(pid, 0))",
    "pty.spawn": f"import pty\nprint(pty.spawn(['/bin/sh', '-c', {MARK_CMD!r}]))",
    "tkinter Tcl exec": "import tkinter\nprint(tkinter.Tcl().eval('exec /bin/sh -c {echo $((6*7))XY}'))",
    "tkinter Tcl open |": "import tkinter\nprint(tkinter.Tcl().eval('set f [open {|/bin/sh -c {echo $((6*7))XY}}]; read $f'))",
    "tkinter call": f"import tkinter\nprint(tkinter.Tcl().tk.call('exec', '/bin/sh', '-c', {MARK_CMD!r}))",
    "multiprocessing spawn": "import multiprocessing as mp\nif __name__ == '__main__':\n"
                             "    p = mp.get_context('spawn').Process(target=print, args=('4' + '2XY',))\n"
                             "    p.start()\n    p.join()\n    print(p.exitcode)",
    "_posixsubprocess by another name": "import importlib\nm = importlib.import_module('_posix' + 'subprocess')\nprint(m)",
    "ctypes system()": f"import ctypes\nprint(ctypes.CDLL(None).system({MARK_CMD!r}.encode()))",
    "ctypes unshare of a user namespace": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                          "r = libc.unshare(0x10000000 | 0x20000)\nprint('4' + '2XY' if r == 0 else r)",
}


def test_no_other_executable_starts_by_any_route():
    """No route starts another program: the audit hook refuses the ones it sees; and with the hook
    off altogether (a private switch for this test), the kernel's seccomp filter still refuses
    execve and namespaces, so every route fails."""
    assert "seccomp" in sandbox.isolation() or os.uname().machine not in ("x86_64", "aarch64")
    for name, prog in EXEC_ROUTES.items():
        r = run(prog, QUICK)
        assert "42XY" not in r.stdout + r.stderr, (name, r)
        assert r.status in ("blocked", "failed"), (name, r)
    if "seccomp" not in sandbox.isolation():
        return
    no_hook = dict(sandbox._configure(), audit=False)
    for name, prog in EXEC_ROUTES.items():
        r = sandbox._execute(prog, QUICK, no_hook)
        assert "42XY" not in r.stdout + r.stderr, (name, r)
        assert "audit" not in r.isolation and r.status != "blocked", (name, r)
    # clone3 answers ENOSYS (libc falls back to clone, whose flags the filter sees): threads still start.
    r = sandbox._execute("import threading\nt = threading.Thread(target=print, args=('t',))\nt.start()\nt.join()",
                         QUICK, no_hook)
    assert r.ok and r.stdout == "t\n", r
    still_works()


def test_the_seccomp_filter_knows_both_architectures():
    from collapse.sandbox._child import seccomp_program

    for machine, arch, execve in (("x86_64", 0xC000003E, 59), ("aarch64", 0xC00000B7, 221)):
        prog = seccomp_program(machine)
        assert prog[1] == (0x15, 1, 0, arch) and prog[2] == (0x06, 0, 0, 0x80000000)  # another arch: killed
        assert (0x15, 0, 1, execve) in prog and prog[-1] == (0x06, 0, 0, 0x7FFF0000)
        assert all(0 <= jt < 256 and 0 <= jf < 256 for _, jt, jf, _ in prog) and len(prog) < 200
    assert seccomp_program("riscv64") is None  # unknown: no filter, and the layer is not listed


def _held_memory_programs():
    hold_memfd = ("import os\nfds, b = [], b'x' * (1 << 20)\nfor i in range(12):\n    fd = os.memfd_create('m')\n"
                  "    for _ in range(15):\n        os.write(fd, b)\n    fds.append(fd)\nprint('held')")
    # Files in the private working directory (a tmpfs: RAM) under the scratch cap but past memory_mb.
    fill_cwd = ("b = b'x' * (1 << 20)\nfor i in range(6):\n    with open(f'f{i}', 'wb') as f:\n"
                "        for _ in range(15):\n            f.write(b)\nprint('held')")
    return {"memfd": hold_memfd, "working directory": fill_cwd}


def test_every_kind_of_memory_counts_against_the_limit():
    limits = Limits(timeout_s=10.0, memory_mb=64, max_file_mb=32)
    for name, prog in _held_memory_programs().items():
        r = run(prog, limits)
        assert r.status == "memory" and "held" not in r.stdout, (name, r)
    if "cgroup" not in sandbox.isolation():
        return
    assert "memory limit of 64 MB" in r.reason
    # With the audit hook off, the scratch tmpfs mounts (/tmp, /dev/shm, /var/tmp) and System V
    # shared memory count too.
    no_hook = dict(sandbox._configure(), audit=False)
    fill_tmp = ("b = b'x' * (1 << 20)\nfor d in ('/tmp', '/dev/shm', '/var/tmp'):\n    for i in range(3):\n"
                "        with open(f'{d}/f{i}', 'wb') as f:\n            for _ in range(15):\n                f.write(b)\n"
                "print('held')")
    sysv = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.shmat.restype = ctypes.c_void_p\n"
            "libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]\nlibc.shmdt.argtypes = [ctypes.c_void_p]\n"
            "for i in range(6):  # detached segments stay, outside the address space\n"
            "    sid = libc.shmget(0, 30 << 20, 0o1600)\n    addr = libc.shmat(sid, None, 0)\n"
            "    assert sid >= 0 and addr not in (None, 2 ** 64 - 1)\n"
            "    ctypes.memset(addr, 1, 30 << 20)\n    libc.shmdt(addr)\nprint('held')")
    for name, prog in {"scratch tmpfs": fill_tmp, "System V shm": sysv}.items():
        r = sandbox._execute(prog, limits, no_hook)
        assert r.status == "memory" and "held" not in r.stdout, (name, r)
    assert "ipcns" in sandbox.isolation()  # and what a program leaves in System V IPC dies with the run
    still_works()


def _live_pids_of_uid(uid: int) -> list[int]:
    """Processes of ``uid``, counting a zombie leader that still has a live thread."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                status = Path(f"/proc/{name}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            zombie = fields["State"].split()[0] in ("Z", "X")
            if int(fields["Uid"].split()[0]) == uid and (not zombie or int(fields["Threads"]) > 1):
                out.append(int(name))
    return out


# A process in a new session whose main thread exits while another thread lives on: a zombie
# leader that killpg misses and that a scan for live processes skips.
ZOMBIE_LEADER = (
    "import ctypes, os, sys, threading, time\n"
    "if os.fork():\n    os._exit(0)\n"
    "os.setsid()\n"
    "threading.Thread(target=time.sleep, args=(30,)).start()\n"
    "ctypes.CDLL(None).syscall({'x86_64': 60, 'aarch64': 93}[os.uname().machine], 0)\n")
OUTLIVE = ("import os, sys, time\nprint(os.getuid(), flush=True)\nimport tkinter\n"
           f"tkinter.Tcl().tk.call('exec', sys.executable, '-I', '-S', '-c', {ZOMBIE_LEADER!r}, '&')\n"
           "time.sleep(0.5)")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a uid of its own per run to find the run's processes")
def test_no_process_outlives_its_run():
    r = run(OUTLIVE, QUICK)
    uid = int(r.stdout.split()[0])
    time.sleep(0.3)
    assert _live_pids_of_uid(uid) == [], r
    # The kernel walls (pidns, cgroup) on their own: with the audit hook and the seccomp filter off
    # (private switches for this test) the zombie leader is made, and still dies with the run.
    iso = sandbox.isolation()
    if "pidns" in iso and "cgroup" in iso:
        r = sandbox._execute(OUTLIVE + "\nprint('started')", QUICK, dict(sandbox._configure(), audit=False, seccomp=False))
        assert r.ok and "seccomp" not in r.isolation and r.stdout.endswith("started\n"), r
        uid = int(r.stdout.split()[0])
        time.sleep(0.3)
        assert _live_pids_of_uid(uid) == [], r
        # and the run's cgroups are gone
        import glob

        pattern = f"collapse-sandbox/run-{os.getpid()}-*"
        assert glob.glob(f"/sys/fs/cgroup/{pattern}") + glob.glob(f"/sys/fs/cgroup/*/{pattern}") == []
    still_works()


FORGED = {
    "os._exit(0)": "import os\nos._exit(0)\nassert False",
    "raise SystemExit(0)": "raise SystemExit(0)\nassert False",
    "sys.exit(0) in a function": "import sys\ndef f():\n    sys.exit(0)\nf()\nassert False",
    "sys.exit() with no status": "import sys\nsys.exit()",
    "atexit os._exit(0)": "import atexit, os\natexit.register(os._exit, 0)\nassert False",
    "a thread's os._exit(0)": "import os, threading, time\nthreading.Timer(0.05, os._exit, (0,)).start()\n"
                              "time.sleep(2)\nassert False",
    "excepthook": "import sys\nsys.excepthook = lambda *a: None\nassert False",
    "a fake done line on every descriptor": "import os\nfor fd in range(3, 64):\n    for line in (b'done\\n', b'x done\\n', b'ok done\\n'):\n"
                                            "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\n"
                                            "os._exit(0)",
    "SIGKILL to itself after a fake line": "import os, sys\nprint('done', flush=True)\nos.kill(os.getpid(), 9)",
}


def test_an_exit_or_printed_text_is_never_a_pass():
    for name, prog in FORGED.items():
        r = run(prog, QUICK)
        assert not r.ok and r.status in ("failed", "killed"), (name, r)
    r = run("import os\nos._exit(0)", QUICK)
    assert r.reason == "exited before the end of the program (exit status 0)" and r.returncode == 0
    # Text on stderr that imitates the harness changes nothing: the status comes from what the harness saw.
    r = run("import sys\nprint('SandboxViolation: blocked: network', file=sys.stderr)\n"
            "print('MemoryError', file=sys.stderr)", QUICK)
    assert r.ok and r.status == "passed", r
    for fake in ("SandboxViolation: blocked: network (socket.__new__)", "MemoryError", "Cannot allocate memory"):
        r = run(f"import sys\nsys.stderr.write({fake + chr(10)!r})\nsys.exit(1)", QUICK)
        assert r.status == "failed" and r.reason == "exit code 1", (fake, r)
        r = run(f"raise ValueError({fake!r})", QUICK)
        assert r.status == "failed" and r.reason == f"ValueError: {fake}", (fake, r)
    # A refused operation counts even when the program catches it and goes on to the end.
    r = run("try:\n    open('/etc/collapse-test', 'w')\nexcept PermissionError:\n    pass\n"
            "try:\n    import socket\n    socket.socket()\nexcept OSError:\n    pass\nprint('end')", QUICK)
    assert r.status == "blocked" and "outside the working directory" in r.reason and r.stdout == "end\n", r
    still_works()



STATUS_FD = "import os\nfd = max(int(x) for x in os.listdir('/proc/self/fd') if 2 < int(x) < 60)\n"  # the status pipe
HIDDEN_REFUSALS = {
    "a partial line parked on the status pipe": STATUS_FD + "os.write(fd, b'x')\n",
    "the status pipe swapped for /dev/null": STATUS_FD + "saved = os.dup(fd)\nos.dup2(os.open('/dev/null', os.O_WRONLY), fd)\n",
    "the status pipe closed": STATUS_FD + "saved = os.dup(fd)\nos.close(fd)\n",
}


def test_a_refusal_cannot_be_hidden_from_the_harness_and_the_status_pipe_cannot_be_flooded():
    """The program holds the status pipe's write end: garbage glued in front of the harness's
    line, or the descriptor swapped away while it refuses and swapped back for ``done``, would hide
    a refusal and turn a ``blocked`` run into a pass."""
    refuse = "try:\n    open('/etc/collapse-test', 'w')\nexcept PermissionError:\n    pass\n"
    for name, prog in HIDDEN_REFUSALS.items():
        restore = "os.dup2(saved, fd)\n" if "saved" in prog else ""
        r = run(prog + refuse + restore + "print('end')", QUICK)
        assert r.status == "blocked" and r.stdout == "end\n", (name, r)
    r = run(STATUS_FD + "os.write(fd, b'x')\nprint('end')", QUICK)  # garbage alone changes nothing
    assert r.ok, r
    t0 = time.monotonic()
    r = run(STATUS_FD + "b = b'\\n' * 65536\nwhile True:\n    os.write(fd, b)", Limits(timeout_s=10.0))
    assert r.status == "output_limit" and "status pipe" in r.reason and time.monotonic() - t0 < 5, r
    still_works()

def test_the_execution_gate_takes_no_forged_pass():
    from collapse.gates import ExecutionGate

    gate = ExecutionGate(limits=QUICK)
    texts = ["def f():\n    return 1\n", "def f():\n    return 2\nimport os\nos._exit(0)\n",
             "def f():\n    return 2\nraise SystemExit(0)\n"]
    assert gate.check(texts, {"tests": ["assert f() == 1"] * 3}) == [None, "exec_failed", "exec_failed"]


def test_reasons_hold_no_control_characters_or_escapes():
    r = run("raise ValueError('\\x1b[31mred\\x1b[0m \\x1b]0;title\\x07ok\\x08\\r\\x00\\x9b2J\\u202eend')", QUICK)
    assert r.status == "failed" and r.reason == "ValueError: red ok end", r
    r = run("import os\nos.open('/etc/\\x1b[2J\\x1bcx', os.O_WRONLY | os.O_CREAT)", QUICK)
    assert r.status == "blocked" and r.reason == "write outside the working directory (/etc/x)", r
    assert sandbox.clean_reason("a\x1bP1;2|secret\x1b\\b\tc\n\x7fd") == "ab c d"
    still_works()
