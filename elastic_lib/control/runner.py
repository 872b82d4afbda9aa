"""The process the batch driver starts for one notebook: papermill in-process, tied to its driver.

    python -m elastic_lib.control.runner NOTEBOOK OUT PARAMS_YAML --cwd DIR --parent-pid PID

- **No orphans.** It asks the Linux kernel to SIGKILL it when its parent (the driver) dies, by
  any signal, SIGKILL included (``prctl(PR_SET_PDEATHSIG)``; elsewhere a watchdog thread polls
  the parent pid). Its notebook kernel is its own child and ipykernel's parent poller ends the
  kernel within a second of this process ending, so nothing of a run outlives its driver.
- **Causes, not tracebacks.** When the kernel dies (the out-of-memory killer sends SIGKILL), the
  last line of the log says so: ``ERROR: kernel killed by signal 9 (SIGKILL), probably out of
  memory``; a full disk shows as ``ERROR: no space left on device``.

It imports papermill and jupyter_client (no TensorFlow: that lives in the kernel). The driver's side
of it is here too: the command that starts it and the clean-up of the notebook it writes.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import signal
import sys
import threading
import time

from elastic_lib.control.paths import ROOT
from elastic_lib.control.results import atomic_write_text

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> str:
    """Make this process end when ``parent_pid`` (its parent) does; returns the mechanism."""
    how = "watchdog"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            how = "prctl"
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(128 + signal.SIGKILL)
    if how == "watchdog":

        def watch():
            while os.getppid() == parent_pid:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
    return how


def kernel_death_cause(km) -> str | None:
    """How the kernel process ended, if a signal ended it (None while it runs or exited normally)."""
    proc = getattr(getattr(km, "provisioner", None), "process", None)
    code = proc.poll() if proc is not None else None
    if code is None or code >= 0:
        return None
    sig = -code
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    cause = f"kernel killed by signal {sig} ({name})"
    return cause + (", probably out of memory (the OOM killer sends SIGKILL)" if sig == signal.SIGKILL else "")


def error_line(err: BaseException) -> str:
    """One line for an exception; a notebook cell's own exception (papermill's ``ename``,
    ``evalue``) rather than papermill's wrapper."""
    name, value = getattr(err, "ename", None), getattr(err, "evalue", None)
    text = f"{name}: {value}" if name else f"{type(err).__name__}: {err}"
    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in text:
        return f"no space left on device ({text.splitlines()[0][:300]})"
    return text.strip().splitlines()[0][:500] if text.strip() else type(err).__name__


def run(notebook: str, out: str, params: dict, cwd: str) -> int:
    import asyncio

    import papermill
    from jupyter_client import AsyncKernelManager

    # our own manager (nbclient's kind, asynchronous) so that after a failure we can still ask
    # how the kernel process ended; nbclient then leaves its shutdown to us
    km = AsyncKernelManager(kernel_name="python3")
    try:
        papermill.execute_notebook(
            notebook, out, parameters=params, cwd=cwd, km=km, progress_bar=False, log_output=False
        )
        return 0
    except Exception as err:
        import traceback

        traceback.print_exc()
        print(f"ERROR: {kernel_death_cause(km) or error_line(err)}", file=sys.stderr, flush=True)
        return 1
    finally:
        if km.has_kernel:
            asyncio.run(km.shutdown_kernel(now=True))


def main(argv=None) -> int:
    import yaml

    ap = argparse.ArgumentParser(prog="python -m elastic_lib.control.runner", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook")
    ap.add_argument("out")
    ap.add_argument("params_yaml")
    ap.add_argument("--cwd", default=os.getcwd())
    ap.add_argument("--parent-pid", type=int, default=None, help="end when this process (the driver) ends")
    a = ap.parse_args(argv)
    if a.parent_pid is not None:
        die_with_parent(a.parent_pid)
    with open(a.params_yaml) as f:
        params = yaml.safe_load(f) or {}
    return run(a.notebook, a.out, params, a.cwd)


VOLATILE_CELL_KEYS = ("execution",)


def strip_volatile(path: str) -> None:
    """Drop per-cell execution timestamps and papermill durations from an executed notebook."""
    with open(path) as f:
        nb = json.load(f)
    for cell in nb.get("cells", []):
        md = cell.get("metadata", {})
        if "injected-parameters" in md.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill gives it a random id on every execution
        for key in VOLATILE_CELL_KEYS:
            md.pop(key, None)
        pm = md.get("papermill")
        if isinstance(pm, dict):
            for key in ("duration", "start_time", "end_time"):
                pm.pop(key, None)
    pm = nb.get("metadata", {}).get("papermill")
    if isinstance(pm, dict):
        for key in ("duration", "start_time", "end_time", "input_path", "output_path"):
            pm.pop(key, None)
    atomic_write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def notebook_cmd(notebook: str, out: str, params_file: str) -> list[str]:
    """papermill in a child that dies with this driver (elastic_lib.control.runner)."""
    return [
        sys.executable,
        "-m",
        "elastic_lib.control.runner",
        notebook,
        out,
        params_file,
        "--cwd",
        ROOT,
        "--parent-pid",
        str(os.getpid()),
    ]


if __name__ == "__main__":
    sys.exit(main())
