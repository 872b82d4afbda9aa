"""Faults at any point lose nothing and leave nothing running.

A tiny profile (MobileNet-0.75 on 100 digits, elastic and baseline, one epoch per phase, no
latency) is run by the real driver (``python -m elastic_lib.batch``) in its own session, and
killed: the driver by SIGKILL (nothing of it may survive), the notebook kernel by SIGKILL (as
the out-of-memory killer does), at seeded random moments, followed by a rerun. After every
trial: every run marked DONE is complete and consistent, and the rerun finishes the batch;
at the end the aggregation equals that of an uninterrupted batch. Disk-full and lock faults
are injected directly.

ELASTIC_FAULT_TRIALS (default 20) and ELASTIC_FAULT_SEED (default 0) set the trials.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest
import yaml

from elastic_lib.config import ROOT

pytestmark = pytest.mark.slow
TINY = {"description": "fault-injection test profile",
        "defaults": {"dataset": "digits", "image_size": 32, "limit_per_class": 10, "test_limit_per_class": 5,
                     "phase1_epochs": 1, "phase2_epochs": 1, "batch_size": 32, "latency_repeats": 0},
        "grid": {"backbone": ["mobilenet_0.75"], "variant": ["elastic", "baseline"], "seed": [0]}}
RUNS = ["mobilenet_0.75__digits__elastic", "mobilenet_0.75__digits__baseline"]


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "faults.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return str(path)


def start(profile, root, *extra, env=None):
    """The batch driver in its own session (a signal to it cannot reach pytest)."""
    cmd = [sys.executable, "-m", "elastic_lib.batch", "--profile", profile, "--results-root", str(root / "results"),
           "--figures-root", str(root / "figures"), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


def run(profile, root, *extra, env=None, timeout=600):
    proc = start(profile, root, *extra, env=env)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def descendants(pid: int) -> dict[int, str]:
    try:
        return {p.pid: " ".join(p.cmdline()) for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out


def kernels(procs: dict[int, str]) -> list[int]:
    return [pid for pid, cmd in procs.items() if "ipykernel_launcher" in cmd]


def wait_until(predicate, timeout: float, step: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def run_dir(root, name):
    return root / "results" / "faults" / name


def check_done_runs_are_complete(root) -> int:
    """Every run marked DONE: complete, parseable, mutually consistent files; returns how many."""
    done = 0
    for name in RUNS:
        d = run_dir(root, name)
        if not (d / "DONE").exists():
            continue
        done += 1
        params = yaml.safe_load((d / "params.yaml").read_text())
        assert params["parameters"]["variant"] in ("elastic", "baseline")
        summary = pd.read_csv(d / "summary.csv").iloc[0]
        exits = pd.read_csv(d / "exits.csv")
        assert len(exits) == summary["num_outputs"] == len(pd.read_csv(d / "complexity.csv"))
        assert exits["output"].iloc[-1] == "final"
        assert summary["final_top1_err_pct"] == pytest.approx(exits["top1_err_pct"].iloc[-1])
        assert len(pd.read_csv(d / "history.csv")) == summary["epochs_run"] > 0
        assert json.loads((d / "notebook.ipynb").read_text())["cells"]
        assert not list(d.glob(".tmp_*")) and not (d / "FAILED").exists()
    return done


def check_all_done(root, out):
    assert check_done_runs_are_complete(root) == len(RUNS), out[-3000:]
    assert (root / "results" / "faults" / "table_error_flops.csv").exists(), out[-3000:]


@pytest.fixture(scope="module")
def reference(profile, tmp_path_factory):
    """An uninterrupted batch: its tables, and how long it takes (the window for kill moments)."""
    root = tmp_path_factory.mktemp("reference")
    t0 = time.monotonic()
    code, out = run(profile, root)
    assert code == 0, out[-3000:]
    check_all_done(root, out)
    return root, time.monotonic() - t0


def same_results(root, ref_root):
    """A rerun from scratch equals the uninterrupted reference exactly. A run resumed from its
    last finished epoch (summary.csv ``resumed_from``) is complete and continuous instead: after
    the resume point its data order and dropout draws differ from an uninterrupted run's."""
    resumed = []
    for name in RUNS:
        summary = pd.read_csv(run_dir(root, name) / "summary.csv", keep_default_na=False).iloc[0]
        if summary["resumed_from"]:
            history = pd.read_csv(run_dir(root, name) / "history.csv")
            assert list(history["epoch"]) == list(range(1, len(history) + 1)) and len(history) == 2, history
            resumed.append(name)
            continue
        pd.testing.assert_frame_equal(pd.read_csv(run_dir(root, name) / "exits.csv"),
                                      pd.read_csv(run_dir(ref_root, name) / "exits.csv"), check_exact=True)
    if resumed:
        return resumed
    for table in ("table_error_flops_long.csv", "table_error_flops.csv", "table_error_flops.md"):
        assert (root / "results" / "faults" / table).read_text() == (ref_root / "results" / "faults" / table).read_text()
    return resumed


# ---------------------------------------------------------------- no orphans
def test_sigkill_of_the_driver_leaves_no_process_behind(profile, reference, tmp_path):
    proc = start(profile, tmp_path)
    tracked = wait_until(lambda: (lambda d: d if kernels(d) else None)(descendants(proc.pid)), 120)
    assert tracked, "no notebook kernel started"
    time.sleep(1.0)  # the kernel is importing / training
    tracked = {**tracked, **descendants(proc.pid)}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = wait_until(lambda: not alive(tracked), 10) or alive(tracked)
    assert left is True, f"still running 10 s after the driver was killed: {[tracked[p] for p in left]}"
    code, out = run(profile, tmp_path)  # the rerun completes the batch
    assert code == 0, out[-3000:]
    check_all_done(tmp_path, out)
    same_results(tmp_path, reference[0])


# ---------------------------------------------------------------- seeded fault injection
def test_random_sigkills_of_driver_or_kernel_lose_nothing(profile, reference, tmp_path):
    ref_root, window = reference
    trials = int(os.environ.get("ELASTIC_FAULT_TRIALS", "20"))
    seed = int(os.environ.get("ELASTIC_FAULT_SEED", "0"))
    record = []
    for k in range(trials):
        rng = random.Random(seed + k)
        target, delay = rng.choice(["driver", "kernel"]), rng.uniform(0.0, window)
        # --force on every trial: each one starts from finished runs and must redo them
        proc = start(profile, tmp_path, "--force")
        tracked, t0, victim = {}, time.monotonic(), None
        while proc.poll() is None and victim is None:
            tracked.update(descendants(proc.pid))
            if time.monotonic() - t0 >= delay:
                victim = proc.pid if target == "driver" else (kernels(descendants(proc.pid)) or [None])[0]
            time.sleep(0.05)
        if victim is not None and proc.poll() is None:
            os.kill(victim, signal.SIGKILL)
        out = proc.communicate(timeout=600)[0]
        if target == "driver" and victim is not None:
            left = wait_until(lambda: not alive(tracked), 10) or alive(tracked)
            assert left is True, f"trial {k}: left running {[tracked[p] for p in left]}"
        done_after_kill = check_done_runs_are_complete(tmp_path)
        code, rerun_out = run(profile, tmp_path)
        assert code == 0, f"trial {k}: rerun failed\n{rerun_out[-3000:]}"
        check_all_done(tmp_path, rerun_out)
        record.append({"trial": k, "seed": seed + k, "target": target, "delay_s": round(delay, 2),
                       "killed": victim is not None, "exit_code": proc.returncode, "done_after_kill": done_after_kill,
                       "failed_line": next((ln for ln in out.splitlines() if "FAILED" in ln), "")})
    same_results(tmp_path, ref_root)
    table = pd.DataFrame(record)
    print("\n" + table.to_string(index=False))
    assert table["killed"].sum() >= trials // 2, "most trials should kill something"
    kernel_kills = table[(table["target"] == "kernel") & table["killed"]]
    assert (kernel_kills["exit_code"] == 1).all()  # the batch says a run failed


# ---------------------------------------------------------------- disk full, out of memory
def test_disk_full_in_the_notebook_marks_the_run_failed_with_its_cause(profile, tmp_path):
    code, out = run(profile, tmp_path, "--only", "mobilenet_0.75__digits__baseline", "--no-aggregate",
                    env={"ELASTIC_FAILPOINT_ENOSPC": "exits.csv"})
    assert code == 1
    assert "mobilenet_0.75__digits__baseline: no space left on device" in out, out[-2000:]
    d = run_dir(tmp_path, "mobilenet_0.75__digits__baseline")
    assert not (d / "DONE").exists() and (d / "FAILED").read_text().startswith("no space left on device")


def test_disk_full_in_the_driver_marks_nothing_done(profile, tmp_path):
    """The driver's own last writes (the DONE marker) fail: the run is not marked DONE."""
    code, out = run(profile, tmp_path, "--only", "mobilenet_0.75__digits__baseline", "--no-aggregate",
                    env={"ELASTIC_FAILPOINT_ENOSPC": "DONE"})
    assert code == 1 and "no space left on device (while the driver wrote" in out, out[-2000:]
    assert not (run_dir(tmp_path, "mobilenet_0.75__digits__baseline") / "DONE").exists()


def test_a_real_full_filesystem(profile, tmp_path):
    """A 3 MiB tmpfs as the results root (root only): the run fails on ENOSPC, nothing is DONE."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root; the injected ENOSPC tests above cover the logic")
    try:
        code, out = run(profile, mnt, "--only", "mobilenet_0.75__digits__elastic", "--no-aggregate")
        assert code == 1 and "no space left on device" in out, out[-2000:]
        assert not (run_dir(mnt, "mobilenet_0.75__digits__elastic") / "DONE").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_kernel_killed_like_the_oom_killer_names_the_cause(profile, tmp_path):
    proc = start(profile, tmp_path, "--only", "mobilenet_0.75__digits__elastic", "--no-aggregate")
    kernel = wait_until(lambda: kernels(descendants(proc.pid)), 120)
    assert kernel, "no kernel started"
    time.sleep(1.0)
    os.kill(kernel[0], signal.SIGKILL)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1
    assert "kernel killed by signal 9 (SIGKILL), probably out of memory" in out, out[-2000:]
    d = run_dir(tmp_path, "mobilenet_0.75__digits__elastic")
    assert not (d / "DONE").exists() and "kernel killed by signal 9" in (d / "FAILED").read_text()
