"""Keeping finished runs current across a change that rewrites code but not what it computes.

A refactor that only moves or renames code leaves every fingerprint as it was
(``elastic_lib.control.codehash``). One that rewrites code (a signature made keyword-only, a default
read from ``RunConfig``, a private Keras attribute read through an adapter) changes the hashes of
what a run executes, and the run turns stale although it would come out the same. Retraining
every committed run to prove that costs hours; DVC's ``dvc commit`` accepts the outputs on the
user's word. This module does neither: it *replays* each run, shortened, on the old code and on
the new code, on this machine, and accepts the run only when both replays write the same bytes::

    python -m elastic_lib.control.attest --base REV results/<profile>/<run> ...

For each run (DONE, and done at ``REV``: every unit it recorded is in REV's code and the notebook
is REV's):

1. the run's recorded parameters, shortened (``REPLAY``: one epoch per phase, a few images per
   class, one latency repeat), are executed through the experiment notebook twice, by papermill:
   once in a git worktree of ``REV``, once in this checkout;
2. every file the two replays write is compared byte for byte, except what records when and where
   a run happened (``VOLATILE``: timings, the machine, the executed notebook) and ``params.yaml``,
   whose parameters and determinism settings are compared instead;
3. when everything matches, the run's fingerprint takes the new code's hashes (those the replay
   on the new code recorded) and ``params.yaml`` keeps an ``attested`` entry: the base, the
   replay settings, the files compared and the units whose code changed.

The replays exercise every code path the run took (same backbone, variant, head, recipe options,
data and backend), at a smaller size; a change that only shows at full size or after more epochs
is not ruled out, and ``attested`` says what was checked. A run whose parameters, data or backend
changed is not attested: that is a different run.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import yaml

from elastic_lib.control import codehash, provenance, results
from elastic_lib.control.config import LEGACY, as_recorded
from elastic_lib.control.paths import EXPERIMENT_NOTEBOOK, ROOT

# The replay: the run's own parameters, shortened.
REPLAY = {
    "phase1_epochs": 1,
    "phase2_epochs": 1,
    "limit_per_class": 10,
    "test_limit_per_class": 3,
    "latency_repeats": 1,
    "latency_images": 2,
}
# What records when and where a run happened, not what it computed.
VOLATILE = {"notebook.ipynb", "params.yaml", "latency.csv", "progress.json", "report.md", "papermill.log"}
VOLATILE_SUFFIXES = (".png", ".svg")  # figures embed the latency table's and the report's timings
VOLATILE_COLUMNS = ("final_latency_ms", "train_s")  # summary.csv: measured times
TIMEOUT_S = 1800


class AttestError(RuntimeError):
    """A run that cannot be attested; the message says why."""


def replay_params(run_dir: str) -> dict:
    """The run's recorded parameters, shortened by ``REPLAY`` (never lengthened); a parameter added
    since the run was made at the value the run had without it (``config.LEGACY``: code that does
    not know the parameter ignores it)."""
    doc = results.read_params_yaml(run_dir)
    params = {**LEGACY, **doc.get("parameters", {})}
    for key, value in REPLAY.items():
        old = params.get(key)
        all_of_them = key.endswith("limit_per_class") and not old  # 0: every image
        params[key] = value if old is None or all_of_them else min(old, value)
    rec = doc.get("fingerprint") or {}
    if rec.get("data_source"):
        params["data_dir"] = os.path.dirname(provenance._resolve(rec["data_source"]))
    return params


def _git(*args: str, cwd: str = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _worktree(rev: str, folder: str) -> str:
    """A worktree of ``rev`` in ``folder``; one kept there by an earlier attestation (``--keep``)
    is used again when it is at that commit, and replaced when it is not."""
    want = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if os.path.isdir(folder):
        try:
            if _git("rev-parse", "HEAD", cwd=folder) == want and not _git("status", "--porcelain", cwd=folder):
                return folder
        except subprocess.CalledProcessError:
            pass
        subprocess.run(["git", "worktree", "remove", "--force", folder], cwd=ROOT, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
        _git("worktree", "prune")
    _git("worktree", "add", "--detach", "-f", folder, want)
    return folder


def hashseed(run_dir: str) -> str:
    """The ``PYTHONHASHSEED`` a run recorded ('' for unset): its replays run under the same one."""
    return str((results.read_params_yaml(run_dir).get("determinism") or {}).get("pythonhashseed", ""))


def _replay(tree: str, params: dict, out_dir: str, seed_env: str) -> None:
    """The experiment notebook of ``tree`` with ``params``, its library first on the path, under the
    ``PYTHONHASHSEED`` the run recorded (``seed_env``)."""
    os.makedirs(out_dir, exist_ok=True)
    params = {**params, "output_dir": out_dir, "write_done": True}
    params_file = os.path.join(out_dir, "replay_params.yaml")
    with open(params_file, "w") as f:
        yaml.safe_dump(params, f)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (tree, os.environ.get("PYTHONPATH")) if p)}
    env.pop("PYTHONHASHSEED", None)
    if seed_env:
        env["PYTHONHASHSEED"] = seed_env
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        os.path.join(tree, EXPERIMENT_NOTEBOOK),
        os.path.join(out_dir, "notebook.ipynb"),
        "-f",
        params_file,
        "--cwd",
        tree,
        "--no-progress-bar",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    os.remove(params_file)
    if proc.returncode != 0 or not os.path.exists(os.path.join(out_dir, results.DONE)):
        raise AttestError(f"the replay in {tree} failed:\n{proc.stderr[-3000:]}")


def _same_but_timings(a: str, b: str) -> bool:
    """Two CSV files equal once the measured-time columns are left out."""
    if not a.endswith(".csv"):
        return False
    import pandas as pd

    fa, fb = pd.read_csv(a, dtype=str), pd.read_csv(b, dtype=str)
    drop = [c for c in VOLATILE_COLUMNS if c in fa.columns]
    return bool(drop) and fa.drop(columns=drop, errors="ignore").equals(fb.drop(columns=drop, errors="ignore"))


def _with_teacher(params: dict, tree: str, out_dir: str) -> dict:
    """A refinery run learns from a teacher run's model, whose weights are not committed: the
    teacher is replayed first, shortened the same way and on the same code, and the replay of the
    run learns from that replay."""
    teacher = params.get("refinery_run")
    if not teacher:
        return params
    teacher_dir = teacher if os.path.isabs(teacher) else os.path.join(ROOT, teacher)
    teacher_out = out_dir + "-teacher"
    if results.is_done(teacher_out) and hashseed(teacher_out) != hashseed(teacher_dir):
        shutil.rmtree(teacher_out)  # kept from a session with another PYTHONHASHSEED
    if not results.is_done(teacher_out):
        shutil.rmtree(teacher_out, ignore_errors=True)
        _replay(tree, replay_params(teacher_dir), teacher_out, hashseed(teacher_dir))
    return {**params, "refinery_run": teacher_out}


def compare(old_dir: str, new_dir: str) -> tuple[list[str], list[str]]:
    """(files compared and equal, differences) between two replays of a run."""
    names = sorted(set(os.listdir(old_dir)) | set(os.listdir(new_dir)))
    same, diff = [], []
    for name in names:
        a, b = os.path.join(old_dir, name), os.path.join(new_dir, name)
        if os.path.isdir(a) or os.path.isdir(b) or name in VOLATILE or name.endswith(VOLATILE_SUFFIXES):
            continue
        if not (os.path.exists(a) and os.path.exists(b)):
            diff.append(f"{name}: only in the {'old' if os.path.exists(a) else 'new'} replay")
        elif not filecmp.cmp(a, b, shallow=False) and not _same_but_timings(a, b):
            diff.append(f"{name}: differs")
        else:
            same.append(name)
    pa, pb = results.read_params_yaml(old_dir), results.read_params_yaml(new_dir)
    for doc, own in ((pa, old_dir), (pb, new_dir)):  # each replay learnt from its own teacher replay
        if doc.get("parameters", {}).get("refinery_run") == own + "-teacher":
            doc["parameters"]["refinery_run"] = "<the teacher's replay>"
    # parameters added since the base, at the value that reproduces the base's runs, are no difference
    pb["parameters"] = as_recorded(pb.get("parameters", {}), pa.get("parameters", {}))
    for key in ("parameters", "determinism"):
        if pa.get(key) != pb.get(key):
            diff.append(f"params.yaml {key}: differs")
    return same, diff


def _opaque_at(rev: str) -> tuple:
    """``provenance.OPAQUE`` as ``rev`` defined it (where its provenance module was then)."""
    for rel in ("elastic_lib/control/provenance.py", "elastic_lib/provenance.py"):
        src = provenance._git_show(rev, rel)
        if src is not None:
            break
    else:
        raise AttestError(f"{rev} has no elastic_lib provenance module")
    scope: dict = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] in (
            ["NOT_RECORDED"],
            ["OPAQUE"],
        ):
            exec(compile(ast.Module([node], []), rel, "exec"), scope)  # two tuple literals
    return scope["OPAQUE"]


def done_at(run_dir: str, rev: str) -> bool:
    """Whether the run's recorded code and notebook are those of ``rev``."""
    rec = results.read_params_yaml(run_dir).get("fingerprint") or {}
    if rec.get("version", 1) < 2:
        return False
    then = codehash.package_hashes(provenance._package_at(rev), _opaque_at(rev))
    nb = provenance._git_show(rev, EXPERIMENT_NOTEBOOK)
    return (
        not codehash.changed(rec["code"], then)
        and nb is not None
        and provenance.notebook_hash(text=nb) == rec["notebook"]
    )


def _made_by_checkout(replay_dir: str) -> bool:
    """Whether a kept replay was made by this checkout's code and experiment notebook as they are
    now (a replay kept by an attestation that ran before the code changed again is not)."""
    rec = results.read_params_yaml(replay_dir).get("fingerprint") or {}
    return (
        bool(rec.get("code"))
        and not codehash.changed(rec["code"], provenance.library_hashes())
        and rec.get("notebook") == provenance.notebook_hash()
    )


def reusable(replay_dir: str, run_dir: str, rev: str | None = None) -> bool:
    """Whether a finished replay kept by an earlier attestation (``--keep``) stands for this one: it
    ran under the run's ``PYTHONHASHSEED``, on the code as it is now (the checkout's side) or on the
    code of ``rev`` (the base's side: a replay kept from an attestation against another base is not)."""
    return (
        hashseed(replay_dir) == hashseed(run_dir)
        and not _resumed(replay_dir)
        and (_made_by_checkout(replay_dir) if rev is None else done_at(replay_dir, rev))
    )


def _resumed(replay_dir: str) -> bool:
    """Whether a replay finished by resuming an interrupted one (its summary says so): not a replay
    of the run as it was made, which trained without interruption."""
    import pandas as pd

    path = os.path.join(replay_dir, "summary.csv")
    if not os.path.exists(path):
        return False
    column = pd.read_csv(path).get("resumed_from")
    return column is not None and column.notna().any() and (column.astype(str).str.strip() != "").any()


def attest(run_dir: str, rev: str, old_tree: str, scratch: str) -> str:
    """Replay ``run_dir`` on ``old_tree`` (``rev``) and on this checkout; on identical outputs,
    move its fingerprint to this checkout's code. Returns a one-line verdict."""
    name = os.path.relpath(run_dir, ROOT)
    if not results.is_done(run_dir):
        raise AttestError(f"{name}: not DONE")
    other = [c for c in provenance.changes(run_dir) if not c.startswith(("code:", "notebook:"))]
    if other:
        raise AttestError(f"{name}: changed beyond code ({'; '.join(other)}): rerun it instead")
    if not provenance.changes(run_dir):
        return f"{name}: current already"
    if not done_at(run_dir, rev):
        raise AttestError(f"{name}: not made by the code of {rev}")
    params = replay_params(run_dir)
    key = run_dir.strip(os.sep).replace(os.sep, "_")
    old_out, new_out = os.path.join(scratch, key, "old"), os.path.join(scratch, key, "new")
    for tree, out in ((old_tree, old_out), (ROOT, new_out)):
        if results.is_done(out) and not reusable(out, run_dir, None if tree == ROOT else rev):
            for folder in (out, out + "-teacher"):
                shutil.rmtree(folder, ignore_errors=True)
        if not results.is_done(out):  # a finished replay kept (--keep) by an interrupted attestation counts;
            shutil.rmtree(out, ignore_errors=True)  # an unfinished one starts over (a resumed run records it)
            _replay(tree, _with_teacher(params, tree, out), out, hashseed(run_dir))
    same, diff = compare(old_out, new_out)
    if diff:
        raise AttestError(f"{name}: the replays differ: {'; '.join(diff)}")
    doc = results.read_params_yaml(run_dir)
    rec, new = doc["fingerprint"], results.read_params_yaml(new_out)["fingerprint"]
    changed = codehash.changed(rec["code"], provenance.library_hashes())
    doc.setdefault("attested", []).append(
        {
            "base": rev,
            "date": datetime.date.today().isoformat(),
            "method": "replay on the base's code and on the new code, outputs compared byte for byte",
            "replay": {k: params[k] for k in REPLAY},
            "files_identical": same,
            "changed_units": changed,
        }
    )
    doc["fingerprint"] = {**rec, "code": new["code"], "notebook": new["notebook"]}
    results.atomic_write_text(os.path.join(run_dir, "params.yaml"), yaml.safe_dump(doc, sort_keys=True))
    if provenance.changes(run_dir):
        raise AttestError(f"{name}: still stale after the new fingerprint: {provenance.changes(run_dir)}")
    return f"{name}: attested ({len(same)} files identical, {len(changed)} changed units)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m elastic_lib.control.attest", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="+", help="finished run directories")
    ap.add_argument("--base", required=True, help="the commit (or ref) whose code made the runs")
    ap.add_argument("--jobs", type=int, default=1, help="runs replayed in parallel")
    ap.add_argument("--keep", default=None, help="keep the replays in this folder (default: a temporary one)")
    a = ap.parse_args(argv)
    scratch = a.keep or tempfile.mkdtemp(prefix="attest_")
    tree = os.path.join(scratch, "base")
    _worktree(a.base, tree)
    failed = 0
    try:

        def one(run_dir):
            try:
                return attest(os.path.abspath(run_dir), a.base, tree, scratch)
            except (AttestError, subprocess.SubprocessError, OSError) as err:
                return f"FAILED {err}"

        with ThreadPoolExecutor(max(1, a.jobs)) as pool:
            for line in pool.map(one, a.run_dirs):
                failed += line.startswith("FAILED")
                print(line, flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, capture_output=True)
        if not a.keep:
            with contextlib.suppress(OSError):
                shutil.rmtree(scratch)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
