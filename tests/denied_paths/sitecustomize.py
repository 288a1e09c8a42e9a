"""Put this folder on a child process's PYTHONPATH and the paths listed in $DENIED_PATHS
(absolute, os.pathsep-separated) read as permission denied: `open` raises PermissionError
and `os.access` says no, as for a file or folder the user may not read. Root reads
anything whatever its mode, so chmod cannot make that case; this can, for every user."""

import builtins
import os

DENIED = {p for p in os.environ.get("DENIED_PATHS", "").split(os.pathsep) if p}
real_open, real_access = builtins.open, os.access


def is_denied(path) -> bool:
    return isinstance(path, str | os.PathLike) and os.path.abspath(os.fspath(path)) in DENIED


def open_denied(path, *args, **kwargs):
    if is_denied(path):
        raise PermissionError(13, "Permission denied", os.fspath(path))
    return real_open(path, *args, **kwargs)


def access_denied(path, mode, *args, **kwargs):
    return not is_denied(path) and real_access(path, mode, *args, **kwargs)


builtins.open = open_denied
os.access = access_denied
