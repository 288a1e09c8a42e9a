"""Where a run came from: the code (git commit, and whether the tree had changes), the
versions of the libraries that computed it, the devices and CPU, and the command line.

`train` appends one record to the workdir's run.json each time a process starts (or
resumes) the run, so a run resumed on another machine or with other code says so.
Outside a git checkout (an installed package) the commit is "unknown"; nothing fails.
"""

import importlib.metadata
import json
import pathlib
import platform
import subprocess
import sys
import time

import jax

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def git(directory: pathlib.Path, *args: str) -> str | None:
    """`git args` run in `directory`: its output stripped, or None when git fails or is
    missing."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code(directory: pathlib.Path = PACKAGE_DIR) -> dict:
    """{"commit": 40 hex digits or "unknown", "changed": whether the checkout had
    uncommitted changes (None when unknown)}."""
    commit = git(directory, "rev-parse", "HEAD")
    if not commit:
        return {"commit": "unknown", "changed": None}
    status = git(directory, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "changed": None if status is None else bool(status)}


def versions() -> dict:
    """The Python version and each library's installed version ("missing" if absent)."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def cpu_model() -> str:
    """The CPU's model name, family, model number and widest vector extension, from
    /proc/cpuinfo (Linux; CPU kinds of one name differ in these), else what platform
    reports."""
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", "").split()
    vector = next((f for f in ("avx512f", "avx2", "avx") if f in flags), "none")
    return (
        f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family')}, "
        f"model {fields.get('model')}, {vector}{', amx' if 'amx_tile' in flags else ''})"
    )


def record() -> dict:
    """This process's record: when it started the run, the code, the versions, the
    devices, the CPU and the command line."""
    devices = jax.devices()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **code(),
        "versions": versions(),
        "devices": {"platform": devices[0].platform, "kind": devices[0].device_kind},
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "cpu": cpu_model(),
        "command": sys.argv,
    }


def appended(path: pathlib.Path, new: dict) -> str:
    """run.json's text with `new` appended to the records already at `path`."""
    records = json.loads(path.read_text())["records"] if path.is_file() else []
    return json.dumps({"records": [*records, new]}, indent=2) + "\n"
