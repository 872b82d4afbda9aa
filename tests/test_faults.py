"""Faults at any point lose nothing and leave nothing running.

The tiny profile (``tests/tiny.py``: tiny_cnn on 100 digits, elastic and baseline, one epoch per
phase, no latency) is run by the real driver (``python -m elastic_lib.control.batch``) in its own session,
and killed: the driver by SIGKILL (nothing of it may survive), the notebook kernel by SIGKILL (as
the out-of-memory killer does), at seeded random moments, followed by a rerun. After every trial:
every run marked DONE is complete and consistent, and the rerun finishes the batch; at the end the
aggregation equals that of an uninterrupted batch. Disk-full and lock faults are injected directly.

The default tier runs ELASTIC_FAULT_TRIALS (default 2: one kernel, one driver) trials on the tiny runs; the deep tier
(``./run_tests.sh --deep``) 20 more on MobileNet-0.75 runs, whose kernels spend their time in
real training (ELASTIC_DEEP_FAULT_TRIALS). ELASTIC_FAULT_SEED (default 0) seeds both.
"""

import json
import os
import random
import signal
import subprocess
import time

import pandas as pd
import psutil
import pytest
import yaml
from tiny import BACKBONE, ROOT, RUNS, TINY, batch_cmd, run_batch

from elastic_lib.control import results

pytestmark = pytest.mark.slow
PROFILE = "tiny"  # the shared tiny_batch's profile
# the deep tier's runs: MobileNet-0.75 at 32x32, whose kernels spend most of their time training
REAL = {"backbone": "mobilenet_0.75", "image_size": 32, "batch_size": 32, "test_limit_per_class": 5}
REAL_RUNS = ["mobilenet_0.75__digits__elastic", "mobilenet_0.75__digits__baseline"]


def _profile(folder, defaults) -> str:
    path = folder / f"{PROFILE}.yaml"
    backbone = defaults.pop("backbone")
    path.write_text(
        yaml.safe_dump(
            {
                "description": "fault-injection test profile",
                "defaults": defaults,
                "grid": {"backbone": [backbone], "variant": ["elastic", "baseline"], "seed": [0]},
            }
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def profile(tiny_batch):
    return tiny_batch[0]


def start(profile, root, *extra, env=None):
    """The batch driver in its own session (a signal to it cannot reach pytest)."""
    return subprocess.Popen(
        batch_cmd(profile, root, *extra),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def failpoint_env(pattern: str) -> dict:
    """A full disk for files named like ``pattern`` in every process of a run (tests/failpoints/)."""
    path = os.pathsep.join(p for p in (str(ROOT / "tests" / "failpoints"), os.environ.get("PYTHONPATH")) if p)
    return {"ELASTIC_FAILPOINT_ENOSPC": pattern, "PYTHONPATH": path}


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
    return root / "results" / PROFILE / name


def check_done_runs_are_complete(root, runs=RUNS) -> int:
    """Every run marked DONE: complete, parseable, mutually consistent files; returns how many."""
    done = 0
    for name in runs:
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


def check_all_done(root, out, runs=RUNS):
    assert check_done_runs_are_complete(root, runs) == len(runs), out[-3000:]
    assert (root / "results" / PROFILE / "table_error_flops.csv").exists(), out[-3000:]


def _reference(profile, root, runs=RUNS):
    """An uninterrupted batch: its tables, and how long it takes (the window for kill moments)."""
    t0 = time.monotonic()
    code, out = run(profile, root)
    assert code == 0, out[-3000:]
    check_all_done(root, out, runs)
    return root, time.monotonic() - t0


@pytest.fixture(scope="module")
def reference(tiny_batch):
    """The uninterrupted tiny batch, and how long it took (the window for kill moments)."""
    _, root, seconds = tiny_batch
    check_all_done(root, "")
    return root, seconds


def same_results(root, ref_root, runs=RUNS):
    """A rerun from scratch equals the uninterrupted reference exactly. A run resumed from its
    last finished epoch (summary.csv ``resumed_from``) is complete and continuous instead: after
    the resume point its data order and dropout draws differ from an uninterrupted run's."""
    resumed = []
    for name in runs:
        summary = pd.read_csv(run_dir(root, name) / "summary.csv", keep_default_na=False).iloc[0]
        if summary["resumed_from"]:
            history = pd.read_csv(run_dir(root, name) / "history.csv")
            assert list(history["epoch"]) == list(range(1, len(history) + 1)) and len(history) == 2, history
            resumed.append(name)
            continue
        pd.testing.assert_frame_equal(
            pd.read_csv(run_dir(root, name) / "exits.csv"),
            pd.read_csv(run_dir(ref_root, name) / "exits.csv"),
            check_exact=True,
        )
    if resumed:
        return resumed
    for table in ("table_error_flops_long.csv", "table_error_flops.csv", "table_error_flops.md"):
        assert (root / "results" / PROFILE / table).read_text() == (ref_root / "results" / PROFILE / table).read_text()
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


# ---------------------------------------------------------------- SIGTERM of the driver
# timing columns legitimately differ between runs; everything else must be identical
VOLATILE = ("latency", "train_s")


def _table(root, profile):
    df = pd.read_csv(root / "results" / profile / "table_error_flops_long.csv")
    return df[[c for c in df.columns if not any(v in c for v in VOLATILE)]]


def test_kill_and_rerun_completes_like_an_uninterrupted_run(tmp_path, tiny_batch):
    profile, clean, _ = tiny_batch  # the uninterrupted batch
    killed = tmp_path / "killed"
    first, second = (killed / "results" / "tiny" / f"{BACKBONE}__digits__{v}" for v in ("elastic", "baseline"))

    proc = run_batch(profile, killed, "--no-aggregate", wait=False)
    deadline = time.time() + 600
    while not results.is_done(str(first)) and time.time() < deadline:
        time.sleep(0.5)
    assert results.is_done(str(first))
    while not (second / "params.yaml").exists() and time.time() < deadline:
        time.sleep(0.05)
    # mid-run: the second run's kernel has started it (params.yaml is its first write)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, log
    assert not results.is_done(str(second))

    again = run_batch(profile, killed)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already DONE" in again.stdout and "1/1" in again.stdout
    for run in (first, second):
        for name in ("exits.csv", "history.csv", "per_class.csv", "summary.csv"):
            df = pd.read_csv(run / name)
            assert not df.duplicated().any(), f"duplicated rows in {run.name}/{name}"
            ref = pd.read_csv(clean / "results" / "tiny" / run.name / name)
            assert len(df) == len(ref)
    # a run killed after an epoch was committed resumes from there (README, "Long runs survive"): complete and
    # continuous, but its later epochs draw other shuffles; a run redone from scratch equals the clean one exactly
    resumed = pd.read_csv(second / "summary.csv", keep_default_na=False).iloc[0]["resumed_from"]
    if resumed:
        hist = pd.read_csv(second / "history.csv")
        assert list(hist["epoch"]) == list(range(1, len(hist) + 1))
        t_clean, t_killed = _table(clean, "tiny"), _table(killed, "tiny")
        keep = t_clean["variant"] != "baseline"
        pd.testing.assert_frame_equal(t_clean[keep], t_killed[keep])
    else:
        pd.testing.assert_frame_equal(_table(clean, "tiny"), _table(killed, "tiny"))
    assert not list(killed.rglob(".tmp_*"))


# ---------------------------------------------------------------- seeded fault injection
def random_kill_trials(profile, ref_root, window, tmp_path, trials, seed, runs=RUNS):
    """``trials`` seeded SIGKILLs of the driver or of the kernel at a random moment of a batch (training,
    evaluation, writing, aggregation, between runs), each followed by a rerun."""
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
            left = wait_until(lambda: not alive(tracked), 10) or alive(tracked)  # noqa: B023 (called here)
            assert left is True, f"trial {k}: left running {[tracked[p] for p in left]}"
        done_after_kill = check_done_runs_are_complete(tmp_path, runs)
        code, rerun_out = run(profile, tmp_path)
        assert code == 0, f"trial {k}: rerun failed\n{rerun_out[-3000:]}"
        check_all_done(tmp_path, rerun_out, runs)
        record.append(
            {
                "trial": k,
                "seed": seed + k,
                "target": target,
                "delay_s": round(delay, 2),
                "killed": victim is not None,
                "exit_code": proc.returncode,
                "done_after_kill": done_after_kill,
                "failed_line": next((ln for ln in out.splitlines() if "FAILED" in ln), ""),
            }
        )
    same_results(tmp_path, ref_root, runs)
    table = pd.DataFrame(record)
    print("\n" + table.to_string(index=False))
    assert table["killed"].sum() >= trials // 2, "most trials should kill something"
    kernel_kills = table[(table["target"] == "kernel") & table["killed"]]
    assert (kernel_kills["exit_code"] == 1).all()  # the batch says a run failed


def test_random_sigkills_of_driver_or_kernel_lose_nothing(profile, reference, tmp_path):
    ref_root, window = reference
    random_kill_trials(
        profile,
        ref_root,
        window,
        tmp_path,
        int(os.environ.get("ELASTIC_FAULT_TRIALS", "2")),
        int(os.environ.get("ELASTIC_FAULT_SEED", "0")),
    )


@pytest.mark.deep
def test_random_sigkills_during_real_training_lose_nothing(tmp_path):
    """The deep tier: 20 trials on MobileNet-0.75 runs, whose kernels spend their time in training."""
    folder = tmp_path / "profile"
    folder.mkdir()
    profile = _profile(folder, {**TINY, **REAL})
    ref_root, window = _reference(profile, tmp_path / "reference", REAL_RUNS)
    random_kill_trials(
        profile,
        ref_root,
        window,
        tmp_path / "trials",
        int(os.environ.get("ELASTIC_DEEP_FAULT_TRIALS", "20")),
        int(os.environ.get("ELASTIC_FAULT_SEED", "0")),
        REAL_RUNS,
    )


# ---------------------------------------------------------------- disk full, out of memory
def test_disk_full_in_the_notebook_marks_the_run_failed_with_its_cause(profile, tmp_path):
    code, out = run(profile, tmp_path, "--only", RUNS[1], "--no-aggregate", env=failpoint_env("exits.csv"))
    assert code == 1
    assert f"{RUNS[1]}: no space left on device" in out, out[-2000:]
    d = run_dir(tmp_path, RUNS[1])
    assert not (d / "DONE").exists() and (d / "FAILED").read_text().startswith("no space left on device")


def test_disk_full_in_the_driver_marks_nothing_done(profile, tmp_path):
    """The driver's own last writes (the DONE marker) fail: the run is not marked DONE."""
    code, out = run(profile, tmp_path, "--only", RUNS[1], "--no-aggregate", env=failpoint_env("DONE"))
    assert code == 1 and "no space left on device (while the driver wrote" in out, out[-2000:]
    assert not (run_dir(tmp_path, RUNS[1]) / "DONE").exists()


def test_a_real_full_filesystem(profile, tmp_path):
    """A 256 KiB tmpfs as the results root (root only; a tiny elastic run writes about 1 MiB): the
    run fails on ENOSPC, nothing is DONE."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mounting a small tmpfs needs root; the injected ENOSPC tests above cover the logic")
    try:
        code, out = run(profile, mnt, "--only", RUNS[0], "--no-aggregate")
        assert code == 1 and "no space left on device" in out, out[-2000:]
        assert not (run_dir(mnt, RUNS[0]) / "DONE").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_kernel_killed_like_the_oom_killer_names_the_cause(profile, tmp_path):
    proc = start(profile, tmp_path, "--only", RUNS[0], "--no-aggregate")
    kernel = wait_until(lambda: kernels(descendants(proc.pid)), 120)
    assert kernel, "no kernel started"
    time.sleep(1.0)
    os.kill(kernel[0], signal.SIGKILL)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1
    assert "kernel killed by signal 9 (SIGKILL), probably out of memory" in out, out[-2000:]
    d = run_dir(tmp_path, RUNS[0])
    assert not (d / "DONE").exists() and "kernel killed by signal 9" in (d / "FAILED").read_text()
