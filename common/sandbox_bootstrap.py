"""The program the sandbox's child runs before the user's code: `BOOTSTRAP`, the text common/sandbox.py
passes to `python -I -c`, with these arguments after it:

    memory bytes, CPU seconds, file-size bytes, network (0/1), rofs (0/1), token fd, done fd

In order: with "rofs", remount every mount but the scratch directory read-only and nodev and lock that in
a nested user namespace; set the rlimits; build the audit hook that refuses sockets, process creation,
foreign signals, library loading and writes outside the scratch directory (every name it uses bound as a
parameter, so the program cannot rebind them); stub out the process starters that raise no audit event;
read the per-run token into the sentinel's closure and close its pipe; run `main.py`; and, only when it
returned, raise the audit event on which the sentinel writes the token back. common/sandbox.py's
docstring says what this guarantees and what it does not. The text imports only the standard library:
the isolated child has nothing of ours on its path.
"""

BOOTSTRAP = r"""
import os, sys, resource
scratch = os.path.realpath(os.getcwd())
mem, cpu, fsize, net, rofs, token_fd, done_fd = (int(a) for a in sys.argv[1:8])
if rofs:  # already in new user, mount, net and pid namespaces: make every mount but scratch read-only
    import ctypes, re
    libc = ctypes.CDLL(None, use_errno=True)
    def mount(target, flags, source=None):
        if libc.mount(source, target.encode(), None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), "mount %s" % target)
    KEEP = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
    RDONLY, NODEV, REMOUNT, BIND, REC, PRIVATE = 1, 4, 32, 4096, 16384, 1 << 18
    mount("/", REC | PRIVATE, b"none")
    mount(scratch, BIND, scratch.encode())
    for line in open("/proc/self/mounts").read().splitlines():
        fields = line.split()
        target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        if target == scratch or target == "/proc" or target.startswith("/proc/"):
            continue
        flags = sum(v for k, v in KEEP.items() if k in fields[3].split(","))  # locked flags must be kept
        try:
            mount(target, REMOUNT | BIND | RDONLY | NODEV | flags)  # nodev: no raw disks, /dev/kmsg, ...
        except OSError:
            pass  # e.g. a mount hidden under another; the probe checks the result
    for path in ("/proc/sys", "/proc/sysrq-trigger"):  # global knobs that uid 0 could otherwise write
        if os.path.exists(path):
            mount(path, BIND, path.encode())
            mount(path, REMOUNT | BIND | RDONLY | NODEV | 2 | 8)  # + nosuid, noexec
    os.chdir(scratch)  # enter the bind mount
    # a nested user+mount namespace locks the read-only flags: its "root" cannot remount them writable
    if libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
        with open("/proc/self/" + name, "w") as f:
            f.write(text)
    del libc
for lim, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, fsize)):
    if val > 0:
        resource.setrlimit(lim, (val, val))
code = open("main.py", encoding="utf-8").read()
DONE = "qf.sandbox.done"

# Every name the hooks use is bound here, as a parameter: the program can rebind module globals and builtins,
# and anything it rebinds would run inside a hook, where it could walk up the stack to the sentinel's frame.
def make_guard(scratch, net, boot, me, group, real_open, getframe=sys._getframe, getpgid=os.getpgid,
               fspath=os.fspath, realpath=os.path.realpath, join=os.path.join, isabs=os.path.isabs,
               islink=os.path.islink, isinstance=isinstance, bytes=bytes, int=int, str=str,
               PermissionError=PermissionError, OSError=OSError):
    WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    FRAMED = frozenset(("sys.addaudithook", DONE))  # only this bootstrap may add hooks or say "done"
    REFUSED = frozenset((() if net else ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
                                         "socket.getaddrinfo")) + (
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "pty.spawn", "os.startfile",
        # ways to reach another frame's locals or to run code between the program's lines
        "sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        "sys._current_frames", "sys._current_exceptions"))
    # event -> (path index, dir_fd index or None) of each path it changes
    PATHS = {"os.mkdir": ((0, 2),), "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.rename": ((0, 2), (1, 3)),
             "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
             "os.utime": ((0, 3),), "os.truncate": ((0, None),), "os.mkfifo": ((0, 2),), "os.mknod": ((0, 3),),
             "os.setxattr": ((0, None),), "os.removexattr": ((0, None),), "os.chflags": ((0, None),),
             "os.lchflags": ((0, None),), "shutil.rmtree": ((0, 1),)}

    def refuse(what, path=None):
        raise PermissionError("sandbox: %s is not allowed" % what + ("" if path is None else ": %r" % (path,)))

    def name(path, dir_fd=None):
        # an int is an open descriptor (where it points); a relative path with a dir_fd starts there
        if isinstance(path, int):
            return "/proc/self/fd/%d" % path
        path = fspath(path)
        path = path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path
        if isinstance(dir_fd, int) and dir_fd >= 0 and not isabs(path):  # "no dir_fd" is -1 or AT_FDCWD (-100)
            path = join("/proc/self/fd/%d" % dir_fd, path)
        return path

    def inside(full):
        return full == scratch or full.startswith(scratch + "/") or full == "/dev/null"

    def check_open(path, mode, flags, dir_fd=None):
        if isinstance(path, int):
            return  # wraps a descriptor already open: its mode was checked when it was opened
        text = name(path, dir_fd)
        writing = (isinstance(mode, str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or (
            isinstance(flags, int) and flags & WRITES)
        if writing or "mem" in text or islink(text):  # a read can only reach /proc/*/mem by that name or a link
            full = realpath(text)
            if full.startswith("/proc/") and full.endswith("/mem"):
                refuse("reading process memory", path)
            if writing and not inside(full):
                refuse("writing outside the scratch directory", path)

    def may_signal(pid):  # kill(2)'s pid: > 0 one process, 0 own group, -1 everyone, < -1 the group -pid
        if pid == 0 or pid == me:
            return True
        if pid < 0:
            return pid != -1 and -pid == group
        try:
            return getpgid(pid) == group
        except OSError:
            return False

    def hook(event, args):
        # `event` is always an exact str made by CPython, so these comparisons run no code of the program's
        if event in FRAMED:
            if getframe(1) is not boot:
                refuse(event)
        elif event in REFUSED or (event == "ctypes.dlopen" and args and args[0] is not None):
            refuse(event)
        elif event == "open":
            check_open(*args)
        elif event in PATHS:
            for i, fd_at in PATHS[event]:
                if not inside(realpath(name(args[i], None if fd_at is None else args[fd_at]))):
                    refuse(event + " outside the scratch directory", args[i])
        elif event == "import" and args[0] == "_posixsubprocess":
            refuse("importing _posixsubprocess (fork_exec raises no audit event)")
        elif (event == "os.kill" and not may_signal(args[0])) or (event == "os.killpg" and args[0] not in (0, group)):
            refuse(event + " outside the sandbox's process group", args[0])

    def guarded_open(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is not None:  # the "open" audit event does not carry dir_fd: check here where it is known
            check_open(path, None, flags, dir_fd)
        return real_open(path, flags, mode, dir_fd=dir_fd)
    return hook, guarded_open

def make_sentinel(boot, token_fd, done_fd, getframe=sys._getframe, write=os.write):
    # The token exists only here: read from the parent's pipe, which is closed before the program runs.
    token = os.read(token_fd, 64)
    os.close(token_fd)
    def sentinel(event, args):
        if event == DONE and getframe(1) is boot:
            write(done_fd, token)
    return sentinel

def disarm(guarded_open):
    # Process starters without an audit event: a stub module (subprocess still imports, its Popen is refused
    # by its own event), and pidfd_send_signal (signals any pid, even through a /proc/<pid> directory fd).
    import _posixsubprocess, _signal, signal, posix
    def refused(*args, **kwargs):
        raise PermissionError("sandbox: starting or signalling processes this way is not allowed")
    stub = type(sys)("_posixsubprocess")
    stub.fork_exec = refused
    sys.modules["_posixsubprocess"] = stub
    for module in (_signal, signal):
        if hasattr(module, "pidfd_send_signal"):
            module.pidfd_send_signal = refused
    os.supports_dir_fd.add(guarded_open)
    os.open = posix.open = guarded_open

boot = sys._getframe()
guard, guarded_open = make_guard(scratch, net, boot, os.getpid(), os.getpgrp(), os.open)
disarm(guarded_open)
sys.addaudithook(guard)
sys.addaudithook(make_sentinel(boot, token_fd, done_fd))  # after the guard: it sees only DONE from `boot`
del guard, guarded_open, make_guard, make_sentinel, disarm
sys.argv = ["main.py"]
sys.path.insert(0, scratch)
g = {"__name__": "__main__", "__file__": os.path.join(scratch, "main.py"), "__builtins__": __builtins__}
exec(compile(code, "main.py", "exec"), g)
sys.audit(DONE)  # reached only when the program returned: no exception, no exit, no signal
"""
