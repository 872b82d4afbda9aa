"""SLURM for real: a two-run digits profile as the array job of slurm/run_pair.sbatch, then
slurm/aggregate.sbatch, on the cluster that answers `sinfo`.

Skips when SLURM is not installed or no controller answers. As root, with SLURM installed but
not running, it starts the one-node cluster of scripts/slurm_local.sh and stops it afterwards.
Everything (runs, table, figures, job output) goes to tmp_path. Job states come from
`scontrol show job` (the controller keeps finished jobs MinJobAge seconds, 300 by default; the
test polls every 2 s), falling back to `sacct` where the records have aged out, so no accounting
database is needed.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from tiny import BACKBONE, RUNS, TINY

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
HINT = "`sudo scripts/slurm_local.sh start` installs and starts a one-node cluster"
# the templates ask for a GPU, 8 CPUs and 32G: a laptop-sized node gets 1 CPU per task and no GPU
LOCAL = ["--export=ALL", "--parsable", "--cpus-per-task=1", "--mem=4G", "--time=00:20:00"]
FINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def _run(cmd, env=None, timeout=60):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def _answers(env) -> bool:
    try:
        return _run(["sinfo", "-h", "-o", "%a"], env, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def cluster():
    """Environment for the SLURM commands, once a controller answers `sinfo`."""
    if shutil.which("sbatch") is None:
        pytest.skip(f"SLURM is not installed (no sbatch on PATH); {HINT}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    if _answers(env):
        yield env
        return
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        pytest.skip(f"no SLURM controller answers `sinfo`; {HINT}")
    t0 = time.time()
    env["SLURM_CONF"] = os.path.join(os.environ.get("SLURM_LOCAL_DIR", "/tmp/elastic-slurm"), "slurm.conf")
    try:  # stopped again even when the start fails half-way
        out = _run([str(SCRIPT), "start"], env, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        print(f"\n[slurm] started the one-node cluster in {time.time() - t0:.1f} s")
        yield env
    finally:
        print(_run([str(SCRIPT), "stop"], env).stdout.strip())


def _records(jobid, env) -> dict[str, dict]:
    """{task id or job id: scontrol fields}; sacct's JobState/ExitCode when the controller forgot it."""
    out = _run(["scontrol", "-o", "show", "job", jobid], env)
    if out.returncode == 0:
        recs = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.stdout.splitlines() if line.strip()]
        return {r.get("ArrayTaskId") or r["JobId"]: r for r in recs}
    out = _run(["sacct", "-X", "-n", "-P", "-j", jobid, "-o", "JobID,State,ExitCode"], env)
    recs = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not recs:
        raise AssertionError(f"job {jobid}: neither scontrol nor sacct knows it ({out.stderr.strip()})")
    return {r[0].split("_")[-1]: {"JobState": r[1].split()[0], "ExitCode": r[2], "Reason": ""} for r in recs}


def _finished(states: dict) -> bool:
    return len(states) == 3 and all(r["JobState"] in FINAL for r in states.values())


def _sbatch(args, env) -> str:
    out = _run(["sbatch", *args], env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def _logs(folder: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
        for p in sorted(folder.glob("*.out"))
    )


def test_array_then_aggregate_on_slurm(cluster, tmp_path):
    env = dict(cluster)
    profile = tmp_path / "slurm-digits.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "description": "test_slurm: two digits runs",
                "defaults": TINY,
                "grid": {"backbone": [BACKBONE], "dataset": ["digits"], "variant": ["elastic", "baseline"]},
            }
        )
    )
    results_root, figures_root, logs = tmp_path / "results", tmp_path / "figures", tmp_path / "logs"
    logs.mkdir()
    env.update(PROFILE=str(profile), RESULTS_ROOT=str(results_root), FIGURES_ROOT=str(figures_root))

    t0 = time.time()
    array = _sbatch(
        [*LOCAL, "--gres=none", "--array=0-1", f"--output={logs}/%x_%A_%a.out", "slurm/run_pair.sbatch"], env
    )
    agg = _sbatch(
        [*LOCAL, f"--dependency=afterok:{array}", f"--output={logs}/%x_%j.out", "slurm/aggregate.sbatch"], env
    )
    states, done_at = {}, {}
    try:
        while time.time() - t0 < TIMEOUT_S and not _finished(states):
            time.sleep(2)
            states = {f"{array}_{k}": v for k, v in _records(array, env).items()} | {agg: _records(agg, env)[agg]}
            done_at |= {j: time.time() - t0 for j, r in states.items() if r["JobState"] in FINAL and j not in done_at}
            if "DependencyNeverSatisfied" in states[agg].get("Reason", ""):
                break
    finally:  # nothing of ours left queued or running
        if not _finished(states):
            _run(["scancel", array, agg], env)

    summary = {
        j: (r["JobState"], r["ExitCode"], f"{done_at[j]:.0f} s" if j in done_at else "-") for j, r in states.items()
    }
    print(f"\n[slurm] job state, exit code, finished after (submit = 0): {summary}")
    for j, r in states.items():
        if "RunTime" in r:
            print(f"[slurm] {j} {r.get('JobName', '')}: ran {r['RunTime']} from {r.get('StartTime')}")
    assert len(states) == 3 and all(s == "COMPLETED" and code == "0:0" for s, code, _ in summary.values()), (
        f"{summary}\n{_logs(logs)}"
    )

    profile_dir = results_root / profile.stem
    for run in RUNS:
        assert (profile_dir / run / "DONE").exists(), f"{run} not DONE\n{_logs(logs)}"
    assert not list(profile_dir.glob("*/FAILED"))
    table = profile_dir / "table_error_flops.md"
    assert table.exists() and table.read_text().strip()
    figures = list((figures_root / profile.stem).glob("*.png"))
    assert figures, f"no figures in {figures_root / profile.stem}"
    print(f"[slurm] array + aggregate: {time.time() - t0:.0f} s; table {table.name}, {len(figures)} figure(s)")
