"""The batch driver behind ./run_all.sh: one papermill-executed notebook per run of a profile.

Skips runs already DONE, continues past failing runs and lists them at the end (exit code 1),
shows progress with elapsed time and ETA, then runs the aggregation notebook. A run directory
is locked while its notebook runs, its CSVs are written atomically, and DONE is written last,
after the executed notebook: killing the batch at any point loses at most the epoch in flight;
the next invocation resumes that run from its last finished epoch (``--force`` starts over).
While a run trains, its phase, epoch, validation accuracy and ETA are printed as they change.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import yaml

from elastic_lib.control import provenance, results
from elastic_lib.control.config import ConfigError
from elastic_lib.control.environment import setup_environment, visible_gpus
from elastic_lib.control.notebook_cells import check_parameters
from elastic_lib.control.paths import AGGREGATE_NOTEBOOK, EXPERIMENT_NOTEBOOK, ROOT
from elastic_lib.control.profiles import list_profiles, load_profile
from elastic_lib.control.results import repo_relative
from elastic_lib.control.runner import notebook_cmd, strip_volatile

TEMPLATE = os.path.join(ROOT, EXPERIMENT_NOTEBOOK)
AGGREGATE = os.path.join(ROOT, AGGREGATE_NOTEBOOK)


PROGRESS_EVERY_S = float(os.environ.get("ELASTIC_PROGRESS_S", "30"))
STOPPING = threading.Event()  # set by SIGTERM/SIGINT: no worker starts another notebook


def progress_line(run_dir: str) -> str | None:
    """The in-flight state of a run, from the progress.json its training writes after every
    epoch: phase, epoch/total, last validation accuracy, ETA of the phase."""
    try:
        with open(os.path.join(run_dir, "progress.json")) as f:
            p = json.load(f)
    except (OSError, ValueError):
        return None
    acc = f", val acc {p['val_accuracy']:.4f}" if p.get("val_accuracy") is not None else ""
    return (
        f"phase {p['phase']} epoch {p['epoch']}/{p['epochs']}{acc}, {_fmt(p['epoch_s'])}/epoch, "
        f"phase ETA {_fmt(p['eta_phase_s'])}"
    )


class Runner:
    def __init__(self, timeout_s: float | None = None, out=None, label: str = ""):
        self.child: subprocess.Popen | None = None
        self.timeout_s = timeout_s
        self.out, self.label = out, label
        self.folder: str | None = None
        self.shown: str | None = None

    def execute(
        self, notebook: str, out: str, params: dict, lock_fd: int | None = None, env: dict | None = None
    ) -> tuple[bool, str]:
        """Run ``notebook`` with papermill into ``out`` (via a .partial file); (ok, log tail).
        ``env``: added to the notebook process's environment."""
        check_parameters(notebook, params)
        if STOPPING.is_set():  # interrupted while this worker was getting ready: start nothing
            return False, "interrupted before the notebook started"
        folder = os.path.dirname(out)
        params_file = os.path.join(folder, ".papermill_params.yaml")
        results.atomic_write_text(params_file, yaml.safe_dump(params, sort_keys=True))
        partial = out[: -len(".ipynb")] + ".partial.ipynb"
        log_path = os.path.join(folder, "papermill.log")
        with open(log_path, "w") as log:
            # the child holds the run directory's lock too (inherited descriptor) and dies with
            # this driver, whatever kills it: the lock is released when the last of them ends
            self.child = subprocess.Popen(
                notebook_cmd(notebook, partial, params_file),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(lock_fd,) if lock_fd is not None else (),
                env={**os.environ, **env} if env else None,
            )
            try:
                code = self._wait(folder)
            except subprocess.TimeoutExpired:
                self.kill()
                code = -1
            finally:
                self.child = None
        os.remove(params_file)
        tail = open(log_path).read()[-3000:]
        if code != 0:
            return False, tail
        strip_volatile(partial)
        os.replace(partial, out)
        return True, tail

    def _wait(self, folder: str) -> int:
        """The child's exit code; meanwhile its progress line whenever it changes."""
        start, self.folder, self.shown = time.monotonic(), folder, None
        while True:
            left = None if self.timeout_s is None else self.timeout_s - (time.monotonic() - start)
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired("notebook", self.timeout_s)
            try:
                return self.child.wait(timeout=min(PROGRESS_EVERY_S, left) if left is not None else PROGRESS_EVERY_S)
            except subprocess.TimeoutExpired:
                self.show_progress()

    def show_progress(self) -> None:
        """Print the run's progress line if it changed since it was last printed (runs in flight only)."""
        child = self.child
        if child is None or child.poll() is not None:
            return
        line = progress_line(self.folder) if self.out is not None and self.folder else None
        if line and line != self.shown:
            print(f"  {self.label}: {line}", file=self.out, flush=True)
            self.shown = line

    def kill(self) -> None:
        child = self.child  # a worker thread may reset self.child meanwhile
        if child is not None and child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


def _error_summary(log_tail: str) -> str:
    """The cause of a failed run, in one line: the notebook runner's ``ERROR:`` line (kernel
    killed by a signal, no space left on device, the exception), else the last error line."""
    lines = [ln for ln in log_tail.splitlines() if ln.strip()]
    causes = [ln[len("ERROR: ") :] for ln in lines if ln.startswith("ERROR: ")]
    if causes:
        return causes[-1].strip()[:500]
    if "No space left on device" in log_tail:
        return "no space left on device"
    errs = [ln for ln in lines if "Error" in ln or "Exception" in ln or "Diverged" in ln]
    return (errs[-1] if errs else (lines[-1] if lines else "no output")).strip()[:500]


def _os_error_cause(err: OSError) -> str:
    what = "no space left on device" if err.errno == errno.ENOSPC else f"{type(err).__name__}: {err}"
    return f"{what} (while the driver wrote {getattr(err, 'filename', None) or 'a run file'})"


def _mark_failed(run_dir: str, message: str) -> None:
    """FAILED with its cause; on a full disk even that may not be writable (the run stays undone)."""
    try:
        results.mark_failed(run_dir, message)
    except OSError:
        pass


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def select(runs, only: str | None):
    if not only:
        return list(runs)
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [
        r
        for r in runs
        if any(
            fnmatch.fnmatch(r.run_id(), p) if any(ch in p for ch in "*?[") else p in os.path.basename(r.output_dir)
            for p in pats
        )
    ]


def _prepare(
    profile: str, only: str | None, data_dir: str | None, results_root: str | None, weights_dir: str | None = None
):
    """The profile and its selected runs, validated (config and notebook parameters) up front."""
    prof = load_profile(profile, results_root)
    runs = select(prof.runs, only)
    for r in runs:
        if data_dir:  # the profile's runs were validated when it was read; a new data_dir is checked now
            r.data_dir = os.path.abspath(os.path.expanduser(data_dir))
        if weights_dir:  # likewise the offline ImageNet weights (a file per backbone, checked now)
            r.weights_dir = os.path.abspath(os.path.expanduser(weights_dir))
        if data_dir or weights_dir:
            r.validate()
        check_parameters(TEMPLATE, {**r.to_dict(), "write_done": False})
    return prof, runs


def run_one(
    cfg, force: bool, timeout_s: float | None, runners: list, out=None, env: dict | None = None
) -> tuple[str, bool, str]:
    """One run under its directory's lock: (run name, ok, message). DONE is written last.
    ``env``: what the notebook's process gets on top of this one's environment (its GPU)."""
    rid = os.path.basename(cfg.output_dir)
    fd = results.try_lock(cfg.output_dir)
    if fd is None:
        return (
            rid,
            False,
            (f"locked: another ./run_all.sh is running this pair right now ({results.lock_holder(cfg.output_dir)})"),
        )
    try:
        if not force and results.is_done(cfg.output_dir):
            return rid, True, "already DONE"
        results.clear_run(cfg.output_dir)  # keeps resume/: an interrupted run goes on from its last epoch
        if force:  # --force starts over
            results.remove_tree(os.path.join(cfg.output_dir, "resume"))
        runner = Runner(timeout_s, out, rid)
        runners.append(runner)
        # paths relative to the repo root (the notebooks' working directory), so executed notebooks
        # and params.yaml never record this machine's layout
        params = {
            **cfg.to_dict(),
            "write_done": False,
            "output_dir": repo_relative(cfg.output_dir),
            "data_dir": os.path.relpath(cfg.data_dir, ROOT) if cfg.data_dir else "",
            "weights_dir": os.path.relpath(cfg.weights_dir, ROOT)
            if os.path.isabs(cfg.weights_dir)
            else cfg.weights_dir,
        }
        t0 = time.perf_counter()
        ok, tail = runner.execute(TEMPLATE, os.path.join(cfg.output_dir, "notebook.ipynb"), params, fd, env)
        if not ok:
            _mark_failed(cfg.output_dir, f"{_error_summary(tail)}\n\n{tail}")
            return rid, False, _error_summary(tail)
        results.mark_done(cfg.output_dir)
        return rid, True, f"done in {_fmt(time.perf_counter() - t0)}"
    except OSError as err:  # the driver's own writes (disk full): nothing partial is marked DONE
        _mark_failed(cfg.output_dir, _os_error_cause(err))
        return rid, False, _os_error_cause(err)
    finally:
        os.close(fd)


def _run_all(todo, jobs: int, force: bool, timeout_s: float | None, out, redo=frozenset()) -> list[tuple[str, str]]:
    """Every run of ``todo`` (in parallel when jobs > 1), progress with ETA; the failures.
    ``redo``: run directories done over although DONE (stale ones). SIGTERM/SIGINT stop the run
    in flight; finished runs stay DONE."""
    failures: list[tuple[str, str]] = []
    runners: list[Runner] = []
    start = time.perf_counter()

    def on_signal(signum, _frame):
        STOPPING.set()
        for rn in runners:
            rn.show_progress()  # where it stood, even if the last poll had not shown it yet
            rn.kill()
        print(f"\ninterrupted by signal {signum}: finished runs are kept; rerun to complete the rest", file=out)
        sys.exit(128 + signum)

    STOPPING.clear()
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        slots = queue.Queue()  # each parallel job takes a GPU (round robin) and gives it back
        for env in gpu_slots(jobs):
            slots.put(env)

        def one(cfg):
            env = slots.get()
            try:
                return run_one(cfg, force or cfg.output_dir in redo, timeout_s, runners, out, env)
            finally:
                slots.put(env)

        if jobs <= 1:
            iterator = map(one, todo)
        else:
            from concurrent.futures import ThreadPoolExecutor

            iterator = ThreadPoolExecutor(max_workers=jobs).map(one, todo)
        for finished, (rid, ok, msg) in enumerate(iterator, 1):
            elapsed = time.perf_counter() - start
            eta = elapsed / finished * (len(todo) - finished)
            print(
                f"[{finished}/{len(todo)}] {rid}: {'ok' if ok else 'FAILED'}, {msg} | elapsed {_fmt(elapsed)}"
                f", ETA {_fmt(eta)}",
                file=out,
                flush=True,
            )
            if not ok:
                failures.append((rid, msg))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return failures


def _aggregate(prof, profile_dir: str, figures_root: str | None, timeout_s: float | None, out) -> str | None:
    """The aggregation notebook over the profile's completed runs; an error summary or None."""
    done = [r for r in prof.runs if results.is_done(r.output_dir)]
    if not done:
        return None
    print(
        f"aggregating {len(done)} completed run(s) -> {repo_relative(profile_dir)}/ (tables) and "
        f"figures/{os.path.basename(profile_dir)}/",
        file=out,
        flush=True,
    )
    params = {
        "profile": prof.name,
        "results_root": repo_relative(os.path.dirname(profile_dir)),
        "tables_dir": repo_relative(profile_dir),
        "figures_dir": repo_relative(os.path.join(figures_root or os.path.join(ROOT, "figures"), prof.name)),
    }
    ok, tail = Runner(timeout_s).execute(AGGREGATE, os.path.join(profile_dir, "aggregate.ipynb"), params)
    return None if ok else _error_summary(tail)


def _study(prof, profile_dir: str, figures_root: str | None, timeout_s: float | None, out) -> str | None:
    """The profile's study notebook (``study:`` in its YAML) over its completed runs, with the
    profile's study parameters; executed into ``results/<profile>/<notebook>.ipynb``."""
    nb = prof.study["notebook"]
    name = os.path.splitext(os.path.basename(nb))[0]
    print(f"study {name}: {repo_relative(nb)} -> {repo_relative(profile_dir)}/", file=out, flush=True)
    params = {
        **prof.study["parameters"],
        "profile": prof.name,
        "results_root": repo_relative(os.path.dirname(profile_dir)),
        "tables_dir": repo_relative(profile_dir),
        "figures_dir": repo_relative(os.path.join(figures_root or os.path.join(ROOT, "figures"), prof.name)),
    }
    ok, tail = Runner(timeout_s).execute(nb, os.path.join(profile_dir, f"{name}.ipynb"), params)
    return None if ok else _error_summary(tail)


def gpus() -> list[str]:
    """NVIDIA GPUs that ``nvidia-smi -L`` lists (the same test scripts/tf_flavour.sh makes to
    install the CUDA build of TensorFlow), within ``CUDA_VISIBLE_DEVICES``; no TensorFlow import."""
    return visible_gpus()


def gpu_slots(jobs: int) -> list[dict]:
    """The environment of each of ``jobs`` parallel runs: with more than one job and NVIDIA GPUs
    here, each job sees one GPU (``CUDA_VISIBLE_DEVICES``, round robin over the visible ones), and
    jobs that share a GPU split its memory (JAX preallocates 75 % of every GPU it sees, so a
    second process would run out: ``XLA_PYTHON_CLIENT_MEM_FRACTION`` = 0.9 / jobs per GPU;
    TensorFlow allocates as it grows). Variables the user set are kept. One job: the run sees
    every GPU (``strategy: data_parallel`` uses them all)."""
    found = [g.split(":")[0].removeprefix("GPU").strip() for g in gpus()] if jobs > 1 else []
    if not found:
        return [{} for _ in range(max(1, jobs))]
    per_gpu = -(-jobs // len(found))
    slots = []
    for i in range(jobs):
        env = {"CUDA_VISIBLE_DEVICES": found[i % len(found)], "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
        if per_gpu > 1:
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / per_gpu:.2f}"
        slots.append({k: v for k, v in env.items() if k not in os.environ or k == "CUDA_VISIBLE_DEVICES"})
    return slots


def cpu_estimate(runs, dryrun_dir: str = os.path.join(ROOT, "results", "paper-dryrun")) -> str:
    """A rough CPU time for ``runs`` at their full size, from the batch-1 final-output latency that
    results/paper-dryrun measured per backbone and dataset on a 2-core CPU: per epoch, 3 forward
    passes' worth per training image plus one per validation and test image (CIFAR: 40k/10k/10k)."""
    import csv

    lat = {}
    for r in runs:
        path = os.path.join(dryrun_dir, os.path.basename(r.output_dir), "summary.csv")
        if os.path.isfile(path):
            with open(path) as f:
                lat[r.output_dir] = float(next(csv.DictReader(f))["final_latency_ms"]) / 1000
    if len(lat) < len(runs):
        return "no estimate: results/paper-dryrun lacks some of these runs"
    per_epoch = sum(lat.values()) * (40_000 * 3 + 10_000 + 10_000)
    max_epochs = max(r.phase1_epochs + r.phase2_epochs for r in runs)
    return (
        f"roughly {per_epoch / 86400:.1f} days per epoch of every run, up to {per_epoch * max_epochs / 86400:.0f} "
        f"days for {max_epochs} epochs (batch-1 latencies measured by results/paper-dryrun on a 2-core CPU)"
    )


def _check_study(prof, study: bool | None) -> None:
    """The profile's study notebook declares the parameters the profile gives it; --study needs one."""
    if prof.study:
        plumbing = {"profile": prof.name, "results_root": "", "tables_dir": "", "figures_dir": ""}
        taken = sorted(set(prof.study["parameters"]) & set(plumbing))
        if taken:
            raise ConfigError(f"profile {prof.name!r}: study parameters {taken} are set by ./run_all.sh itself")
        check_parameters(prof.study["notebook"], {**prof.study["parameters"], **plumbing})
    elif study:
        raise ConfigError(f"profile {prof.name!r} has no study notebook (a 'study:' key in its YAML)")


def _plan(runs, force: bool, rerun_stale: bool, out) -> tuple[list, set]:
    """The runs to do (todo, never run, and stale ones with --rerun-stale; all with --force) and
    the stale ones among them; one line per run that is kept or skipped."""
    todo, redo = [], set()
    for r in runs:
        state, why = ("todo", []) if force else provenance.status(r.output_dir, r, r.data_dir or None)
        if force or state == "todo" or (state == "stale" and rerun_stale):
            todo.append(r)
            if state == "stale":
                print(f"  redo {os.path.basename(r.output_dir)}: stale ({'; '.join(why)})", file=out)
                redo.add(r.output_dir)
        elif state == "stale":
            print(
                f"  keep {os.path.basename(r.output_dir)}: DONE but stale ({'; '.join(why)}); --rerun-stale redoes it",
                file=out,
            )
        else:
            print(f"  skip {os.path.basename(r.output_dir)}: already DONE (use --force to redo)", file=out)
    return todo, redo


def run_profile(
    profile: str,
    only: str | None = None,
    jobs: int = 1,
    force: bool = False,
    data_dir: str | None = None,
    results_root: str | None = None,
    figures_root: str | None = None,
    aggregate: bool = True,
    timeout_s: float | None = None,
    out=sys.stdout,
    allow_cpu: bool = False,
    rerun_stale: bool = False,
    study: bool | None = None,
    weights_dir: str | None = None,
) -> int:
    """``study``: run the profile's study notebook after aggregating (None: when this call
    (re)made a run; the trained weights it needs are not committed)."""
    prof, runs = _prepare(profile, only, data_dir, results_root, weights_dir)
    _check_study(prof, study)
    if prof.requires_gpu and not allow_cpu and runs:
        found = gpus()
        if not found:
            print(
                f"error: profile {prof.name!r} is meant for a GPU box (ImageNet weights, 224 px, up to "
                f"{max(r.phase1_epochs + r.phase2_epochs for r in runs)} epochs over the full CIFAR sets) and "
                f"`nvidia-smi -L` lists no NVIDIA GPU here. On this CPU it would take {cpu_estimate(runs)}. "
                "Run it on a GPU box (./run_all.sh installs tensorflow[and-cuda] there), or its CPU rehearsal "
                "--profile paper-dryrun, or pass --allow-cpu to train on the CPU anyway.",
                file=sys.stderr,
            )
            return 2
        print(f"GPU: {'; '.join(found)}", file=out)
    if not runs:
        print(
            f"no run of profile {profile!r} matches --only {only!r}; runs: {', '.join(r.run_id() for r in prof.runs)}",
            file=out,
        )
        return 2
    print(
        f"profile {prof.name}: {len(runs)} run(s){' (' + prof.description + ')' if prof.description else ''}", file=out
    )
    todo, redo = _plan(runs, force, rerun_stale, out)
    start = time.perf_counter()
    failures = _run_all(todo, jobs, force, timeout_s, out, redo)
    if aggregate:
        err = _aggregate(prof, os.path.dirname(runs[0].output_dir), figures_root, timeout_s, out)
        if err:
            failures.append(("aggregate", err))
    made = any(results.is_done(r.output_dir) for r in todo)
    if prof.study and (study or (study is None and made)):
        if failures:
            print("study not run: a run or the aggregation failed (fix it, then --study)", file=out)
        else:  # the per-run --timeout does not apply: the study is one long notebook
            err = _study(prof, os.path.dirname(runs[0].output_dir), figures_root, None, out)
            if err:
                failures.append(("study", err))
    if failures:
        print(f"\n{len(failures)} failure(s):", file=out)
        for rid, msg in failures:
            print(f"  {rid}: {msg}", file=out)
        return 1
    print(f"all {len(runs)} run(s) complete in {_fmt(time.perf_counter() - start)}", file=out)
    return 0


def _data_unchecked(run_dir: str, data_dir: str | None) -> bool:
    """The run recorded its data's hash, but the data is not found here (nothing to compare)."""
    fp = (
        results.read_params_yaml(run_dir).get("fingerprint") or {}
        if os.path.isfile(os.path.join(run_dir, "params.yaml"))
        else {}
    )
    return fp.get("data") is not None and not provenance.data_checked(run_dir, data_dir)


def list_runs(
    profile: str, only: str | None = None, results_root: str | None = None, data_dir: str | None = None, out=sys.stdout
) -> int:
    """Each run of the profile: done, stale (and what changed since it was made) or todo."""
    runs = select(load_profile(profile, results_root).runs, only)
    if data_dir:
        data_dir = os.path.abspath(os.path.expanduser(data_dir))
    counts = {"done": 0, "stale": 0, "todo": 0}
    unchecked = 0
    for r in runs:
        state, why = provenance.status(r.output_dir, r, data_dir)
        counts[state] += 1
        if state != "todo" and _data_unchecked(r.output_dir, data_dir):
            unchecked += 1
        print(f"{os.path.basename(r.output_dir)}\t{state}" + (f"\t{'; '.join(why)}" if why else ""), file=out)
    # the tally goes to stderr: stdout stays one line per run (slurm/run_pair.sbatch counts and indexes them)
    out.flush()
    print(
        f"# {', '.join(f'{v} {k}' for k, v in counts.items())}"
        + (f"; data not checked for {unchecked} run(s) (not found here: pass --data-dir)" if unchecked else ""),
        file=sys.stderr if out is sys.stdout else out,
    )
    return 0


def aggregate_profile(
    profile: str,
    results_root: str | None = None,
    figures_root: str | None = None,
    timeout_s: float | None = None,
    out=sys.stdout,
) -> int:
    """The aggregation notebook alone (tables into results/<profile>/, figures into figures/<profile>/)."""
    prof = load_profile(profile, results_root)
    profile_dir = os.path.dirname(prof.runs[0].output_dir)
    if not any(results.is_done(r.output_dir) for r in prof.runs):
        print(f"no completed run of profile {profile!r} in {repo_relative(profile_dir)}", file=out)
        return 1
    err = _aggregate(prof, profile_dir, figures_root, timeout_s, out)
    if err:
        print(f"aggregate: {err}", file=out)
    return 1 if err else 0


def main(argv=None) -> int:
    setup_environment()  # the notebooks' kernels inherit it (each notebook makes the same call)
    ap = argparse.ArgumentParser(
        prog="./run_all.sh",
        description="Run every backbone/dataset/variant of a profile as a papermill-executed notebook "
        "(results/<profile>/<run>/), then aggregate tables and figures.",
        epilog=f"profiles: {', '.join(list_profiles())}. Finished runs (DONE marker) are skipped; failures are "
        "listed at the end with exit code 1.",
    )
    ap.add_argument("--profile", default="smoke", help="experiments/<NAME>.yaml (default: smoke)")
    ap.add_argument(
        "--only",
        default=None,
        help="run ids to run: substring or glob, comma-separated (e.g. mobilenet_0.75 or '*__cifar10__elastic')",
    )
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1; each uses all cores)")
    ap.add_argument("--force", action="store_true", help="redo runs that are already DONE")
    ap.add_argument("--data-dir", default=None, help="folder with the CIFAR archives (overrides the profile)")
    ap.add_argument(
        "--weights-dir",
        default=None,
        help="folder of offline no-top ImageNet weights (python -m elastic_lib.models.weights download; "
        "overrides the profile)",
    )
    ap.add_argument("--results-root", default=None, help="folder for <profile>/<run>/ (default: results/)")
    ap.add_argument("--figures-root", default=None, help="folder for <profile>/ figures (default: figures/)")
    ap.add_argument("--no-aggregate", action="store_true", help="skip the aggregation notebook")
    ap.add_argument(
        "--aggregate-only",
        action="store_true",
        help="only the aggregation notebook over the completed runs (e.g. after a SLURM array)",
    )
    ap.add_argument(
        "--study",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the profile's study notebook (e.g. channel pruning) after aggregating; default: "
        "when this call trained a run (it needs the trained weights, which are not committed)",
    )
    ap.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed")
    ap.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run a profile marked requires_gpu (paper) on a machine without an NVIDIA GPU",
    )
    ap.add_argument(
        "--rerun-stale",
        action="store_true",
        help="also redo DONE runs that are stale (their code, notebook, parameters or data changed)",
    )
    ap.add_argument(
        "--list",
        action="store_true",
        help="list the runs of the profile as done, stale (with what changed) or todo, and exit",
    )
    a = ap.parse_args(argv)
    try:
        if a.list:
            return list_runs(a.profile, a.only, a.results_root, a.data_dir)
        if a.aggregate_only:
            return aggregate_profile(a.profile, a.results_root, a.figures_root, a.timeout)
        return run_profile(
            a.profile,
            a.only,
            a.jobs,
            a.force,
            a.data_dir,
            a.results_root,
            a.figures_root,
            not a.no_aggregate,
            a.timeout,
            allow_cpu=a.allow_cpu,
            rerun_stale=a.rerun_stale,
            study=a.study,
            weights_dir=a.weights_dir,
        )
    except (ConfigError, results.LockUnsupportedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
