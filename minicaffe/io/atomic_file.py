"""Writing a file so that a crash (kill -9, power loss) never leaves a half-written file under
its final name: write a temporary file in the same folder, flush and fsync it, rename it over
the final name (``os.replace``, atomic on POSIX), then fsync the folder so the rename itself
is on disk.

The temporary name, ``.<name>.partial-<pid>``, is hidden and ends in neither ``.caffemodel``
nor ``.solverstate`` nor ``.h5``, so no tool takes it for the real file;
``remove_stale_partials`` deletes those a killed writer left.
"""
import contextlib
import glob
import os

_PARTIAL = ".partial-"


def partial_name(path):
    folder, name = os.path.split(os.fspath(path))
    return os.path.join(folder, f".{name}{_PARTIAL}{os.getpid()}")


def _fsync_path(path, flags=os.O_RDONLY):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write ``path``'s content to; on a clean exit it is synced
    and renamed to ``path``, on an exception removed."""
    path = os.fspath(path)
    tmp = partial_name(path)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):   # not every file system can fsync a folder
        _fsync_path(os.path.dirname(path) or ".")


def write_bytes_atomically(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:        # exists but is not ours to signal
        return True
    return True


def remove_stale_partials(prefix):
    """Delete the temporary files that writers of ``<prefix>...`` files left when killed (those
    of processes still running are kept)."""
    folder, stem = os.path.split(os.fspath(prefix))
    pattern = os.path.join(glob.escape(folder), f".{glob.escape(stem)}*{_PARTIAL}*")
    for tmp in glob.glob(pattern):
        pid = tmp.rsplit(_PARTIAL, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.remove(tmp)
