"""The container shim: run as `python -I -S sandbox.py CONFIG.json` inside the pod's network namespace.

It does what a container runtime does between "create" and "start", then stays as the
container's parent (as containerd's shim does) to learn its exit status:

* new PID, mount, UTS and IPC namespaces: the container's command is PID 1 of its own PID
  namespace, so that killing it kills every process it started, and `/proc` shows only them;
* the hostname (the pod's name), a private `/dev/shm`, the pod's volumes bind-mounted at their
  `mountPath`s (emptyDir, configMap, ... prepared by the kubelet as host directories; missing
  mount points made in a tmpfs over their parent, with its entries bound back: nothing on the
  machine changes; the image's files that a volume covers bound back inside it, see below), then
  the root file system remounted read-only when `readOnlyRootFilesystem` says so;
* the capability bounding set dropped, the user, group and supplementary groups of the
  security context, `no_new_privs` (allowPrivilegeEscalation: false), the working directory;
* exec of the command with exactly the container's environment (nothing of ours leaks in).

The image's files (`images.exposures`: this Python, the project's sources) are the machine's, where
they happen to be: a pod's volume may cover them (the operator's emptyDir at /tmp, with the
checkout cloned in /tmp). A real image keeps them in /opt/kubeflower, out of the volume's way; here
they are bound back inside the volume, whose directory thus gets the chain of empty directories
down to each of them (their mount points), which the container sees and may not remove.

The parent writes the container's PID (as seen from the root PID namespace) to `pid_file`, waits
for it and exits with its status as a runtime reports it: the exit code, or 128 + the signal.
util-linux `unshare --fork` cannot be used for that: it loses the signal of a killed child here.

Only the standard library is used (the interpreter runs isolated, without site-packages): this
file must stay importable on its own.
"""

import ctypes
import json
import os
import signal
import socket
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
EXIT_START_ERROR = 128
"""Exit code of a container whose command could not be started (as runc's "StartError")."""

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def _prctl(option: int, value: int) -> None:
    _check(libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option}, {value})")


def _overlay(folder: str) -> None:
    """A tmpfs over `folder` that holds the same entries (bound back): new ones go to the tmpfs."""
    entries = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            entries.append((path, "link", os.readlink(path)))
        else:
            entries.append(
                (path, "dir" if stat.S_ISDIR(info.st_mode) else "file", os.open(path, os.O_PATH | os.O_NOFOLLOW))
            )
    mode = stat.S_IMODE(os.stat(folder).st_mode)
    _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode:o}")
    for path, kind, ref in entries:
        if kind == "link":
            os.symlink(ref, path)
            continue
        if kind == "dir":
            os.mkdir(path)
        else:
            open(path, "w").close()
        _mount(f"/proc/self/fd/{ref}", path, None, MS_BIND | MS_REC)
        os.close(ref)


def _bind_back(fd: int, path: str) -> None:
    """The directory open as `fd` (O_PATH, opened before any mount hid it) bound at `path`."""
    umask = os.umask(0o022)  # the directories made on the way must let the container's user in
    try:
        os.makedirs(path, exist_ok=True)
    finally:
        os.umask(umask)
    _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)


def _container(config: dict) -> None:
    """In the child: PID 1 of the new PID namespace. Never returns."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the shim gone (killed): the whole pod goes
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    socket.sethostname(config["hostname"])
    _mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=67108864")
    # Open every source first: a tmpfs over /root or /var/lib, a mount over /tmp, must not hide
    # a source that lives there.
    sources = [os.open(m["source"], os.O_PATH) for m in config["mounts"]]
    # The image's files that sit under a directory others may not enter (a Python installed in
    # /root): an empty tmpfs over that directory, with only those files bound back into it.
    exposures = config.get("expose", [])
    kept = [(os.open(e["keep"], os.O_PATH), e["keep"]) for e in exposures]
    for hidden in dict.fromkeys(e["hide"] for e in exposures if e["hide"]):
        _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for (fd, keep), exposure in zip(kept, exposures, strict=True):
        if exposure["hide"]:
            _bind_back(fd, keep)
    # Mount points that the machine lacks: made in a tmpfs over their parent, in this namespace.
    for folder in config.get("overlays", []):
        _overlay(folder)
    for folder in config.get("mkdirs", []):
        os.makedirs(folder, exist_ok=True)
    for path in config.get("touch", []):
        open(path, "a").close()
    for fd, mount in zip(sources, config["mounts"], strict=True):
        _mount(f"/proc/self/fd/{fd}", mount["target"], None, MS_BIND | MS_REC)
        # The image's files that this volume covers (an emptyDir at /tmp, the checkout under it):
        # bound back in it, before a read-only remount would forbid their mount points.
        inside = mount["target"].rstrip("/") + "/"
        for kept_fd, keep in kept:
            if keep.startswith(inside):
                _bind_back(kept_fd, keep)
        if mount.get("readOnly"):
            _mount(None, mount["target"], None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        os.close(fd)
    for kept_fd, _ in kept:
        os.close(kept_fd)
    if config.get("readOnlyRootFilesystem"):
        _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    if config.get("dropCapabilities"):
        with open("/proc/sys/kernel/cap_last_cap") as cap_last:
            last = int(cap_last.read())
        for cap in range(last + 1):
            _prctl(PR_CAPBSET_DROP, cap)
    os.setgroups(config["groups"])
    os.setresgid(config["gid"], config["gid"], config["gid"])
    os.setresuid(config["uid"], config["uid"], config["uid"])
    if config.get("noNewPrivileges"):
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the change of user: set it again
    os.chdir(config["workingDir"])
    argv, env = config["argv"], config["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        print(f"podrunner: cannot start {argv[0]!r}: {exc}", file=sys.stderr, flush=True)
    os._exit(EXIT_START_ERROR)


def main() -> int:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    # The runner gone (pytest killed): the shim goes, and with it the container (see _container).
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != config["parentPid"]:
        return EXIT_START_ERROR
    _check(libc.unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC), "unshare")
    sys.stdout.flush()
    sys.stderr.flush()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_write)
            # Wait for the pid file to be written: a file open for writing in this mount namespace
            # makes the read-only remount of / fail (EBUSY).
            os.read(ready_read, 1)
            os.close(ready_read)
            _container(config)
        except BaseException as exc:
            print(f"podrunner: cannot create the container: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_START_ERROR)
    os.close(ready_read)
    tmp = config["pidFile"] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, config["pidFile"])
    os.write(ready_write, b"!")
    os.close(ready_write)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the kubelet signals the container, never its shim
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return EXIT_START_ERROR
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
