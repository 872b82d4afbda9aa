"""The GPU check: proves the workbook's GPU path on one box in a few minutes, without Jupyter.

    python -m benchmarks.gpu_check [--cpu] [--data-dir DIR] [--out results/gpu-check] [--epochs 1 2]
                                   [--precisions float32,tf32,bf16] [--seconds-per-measure S]
    ELASTIC_PYTHON=active ELASTIC_WHEELS=wheels/ scripts/gpu_check.sh --data-dir cifar-subset/

It runs the experiment notebook's steps in-process (``elastic_lib.experiment.run``: the library calls
the notebook makes, no papermill), so a box with a backend (JAX, PyTorch or TensorFlow) needs only
Keras beside it. Steps, each timed:

a. machine: the devices and build the backend sees, versions, ``nvidia-smi``, the determinism plan;
b. run: the paper profile's MobileNet-0.75 elastic CIFAR-10 run with 1 + 2 epochs on the given CIFAR
   subset (``scripts/make_cifar_subset.py``; the embedded digits without one), through to ``DONE``;
c. probe: a max-pool gradient under the chosen determinism, twice: did it run, are the gradients
   bitwise equal;
d. throughput: training images/s of that model at the profile's image size and batch (synthetic
   data on the device) in float32 (TF32 off), TF32 and mixed bfloat16, with the GPU's utilisation;
e. projection: the paper profile's GPU-hours on this device from (d), scaled by FLOPs per backbone;
f. ``<out>/report.md`` and ``<out>/gpu_check.json``; exit 1 when the run did not reach DONE or the
   probe errored under strict determinism.

``--cpu`` is a smoke test of the same path on CPU cores (32 px, 20 images per class, short
measurements): its numbers measure nothing about a GPU.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
import traceback

from .common import ROOT

DEFAULT_OUT = os.path.join("results", "gpu-check")
PRECISIONS = {  # name: (Keras dtype policy, float32 matmuls as TF32)
    "float32": ("float32", False),
    "tf32": ("float32", True),
    "bf16": ("mixed_bfloat16", False),
}
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # full CIFAR-10/100 (the projection's)
CPU_LIMIT_PER_CLASS, CPU_TEST_PER_CLASS, CPU_IMAGE_SIZE = 20, 10, 32
CHECK_LATENCY = {"latency_repeats": 10, "latency_images": 100}  # shortened: latency is not what this checks
NVSMI_QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
DATA_NOTE = "CIFAR archives in the official layout (scripts/make_cifar_subset.py); without one: digits"


# ---------------------------------------------------------------- environment (before Keras is imported)
def _choose_backend() -> str:
    """KERAS_BACKEND as ELASTIC_BACKEND / KERAS_BACKEND say; where neither was chosen and TensorFlow is
    not installed (a GPU box with JAX or PyTorch), the first of jax, torch that is."""
    current = os.environ.get("KERAS_BACKEND", "tensorflow")
    if "ELASTIC_BACKEND" not in os.environ and current == "tensorflow" and not importlib.util.find_spec("tensorflow"):
        for name in ("jax", "torch"):
            if importlib.util.find_spec(name):
                os.environ["KERAS_BACKEND"] = os.environ["ELASTIC_BACKEND"] = name
                return name
    return current


def _setup(determinism: str) -> dict:
    """setup_environment for ``determinism`` (its plan: which ops stay nondeterministic here).
    ``benchmarks/__init__`` already set the strict switches; where the plan does not keep them
    (auto with gaps, off), XLA's deterministic-ops flag is taken out again before JAX starts.
    Strict on a device with gaps is recorded (the check goes on, to report what else works)."""
    import elastic_lib
    from elastic_lib.control import environment

    try:
        plan = elastic_lib.setup_environment(determinism=determinism)
    except environment.DeterminismError as err:
        plan = {"mode": determinism, "error": f"DeterminismError: {err}", "strict_kernels": True}
    if not plan.get("strict_kernels", True):
        flag = environment.XLA_DETERMINISTIC
        os.environ["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(flag))
    plan["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return plan


def _nvidia_smi(args: list[str]) -> list[str] | None:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()] if out.returncode == 0 else None


class GpuSampler:
    """``nvidia-smi`` utilisation and memory every ``period`` s in a thread, while measuring."""

    def __init__(self, period: float = 0.5):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self.available = _nvidia_smi(NVSMI_QUERY) is not None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            lines = _nvidia_smi(NVSMI_QUERY) or []
            if lines:
                try:
                    util, mem = (float(v) for v in lines[0].split(",")[:2])
                    self.samples.append((util, mem))
                except ValueError:
                    pass
            self._stop.wait(self.period)

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._thread.join(timeout=30)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean_pct": "n/a", "gpu_util_max_pct": "n/a", "gpu_mem_max_mib": "n/a", "samples": 0}
        util = [u for u, _ in self.samples]
        return {
            "gpu_util_mean_pct": round(sum(util) / len(util), 1),
            "gpu_util_max_pct": max(util),
            "gpu_mem_max_mib": max(m for _, m in self.samples),
            "samples": len(self.samples),
        }


# ---------------------------------------------------------------- the steps
def step_machine(plan: dict) -> dict:
    import keras
    import numpy as np

    from elastic_lib import runtime
    from elastic_lib.control import backend

    out = {
        "backend": keras.backend.backend(),
        "backend_version": backend.version() if hasattr(backend, "version") else "",
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **runtime.backend_details(),
        "nvidia_smi": _nvidia_smi(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit", "--format=csv,noheader"]
        )
        or "not present",
        "determinism_plan": plan,
    }
    if not out["backend_version"]:
        with _suppress():
            out["backend_version"] = __import__(out["backend"]).__version__
    return out


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], Exception)


def paper_run():
    """The paper profile's MobileNet-0.75 elastic CIFAR-10 run (a RunConfig)."""
    from elastic_lib.control.profiles import load_profile

    prof = load_profile("paper")
    return next(
        r for r in prof.runs if r.backbone == "mobilenet_0.75" and r.dataset == "cifar10" and r.variant == "elastic"
    )


def run_params(args) -> tuple[dict, list[str]]:
    """The run's parameters: the paper profile's, with the check's overrides (and what was changed, why)."""
    from elastic_lib.control.registry import weights_file

    base = paper_run()
    p = base.to_dict()
    notes = [f"parameters of the paper profile's run {base.run_id()}"]
    p.update(
        phase1_epochs=args.epochs[0],
        phase2_epochs=args.epochs[1],
        output_dir=os.path.abspath(os.path.join(args.out, "run")),
        write_done=True,
        determinism=args.determinism,
        **CHECK_LATENCY,
    )
    notes.append(f"epochs {args.epochs[0]} + {args.epochs[1]}; latency shortened to {CHECK_LATENCY}")
    if args.data_dir:
        p["data_dir"] = os.path.abspath(args.data_dir)
        notes.append(f"data_dir {p['data_dir']} (a CIFAR subset, not the full 50,000 images)")
    else:
        p.update(dataset="digits", data_dir="")
        notes.append("no --data-dir: the embedded digits dataset stands in for CIFAR-10 (8x8 images upsampled)")
    weights_dir = args.weights_dir or p.get("weights_dir", "")
    if p["weights"] == "imagenet":
        have = weights_dir and os.path.isfile(weights_file(os.path.expanduser(weights_dir), p["backbone"]))
        if have:
            p["weights_dir"] = os.path.abspath(os.path.expanduser(weights_dir))
            notes.append(f"ImageNet weights from {p['weights_dir']} (offline)")
        else:
            p.update(weights="", weights_dir="")
            notes.append(
                "weights random: no offline ImageNet weights file (--weights-dir DIR holding "
                f"{os.path.basename(weights_file('', p['backbone']))}); the run checks the path, "
                "not the paper's numbers"
            )
    if args.cpu:
        p.update(
            image_size=CPU_IMAGE_SIZE,
            limit_per_class=CPU_LIMIT_PER_CLASS,
            test_limit_per_class=CPU_TEST_PER_CLASS,
            latency_repeats=3,
            latency_images=20,
        )
        notes.append(
            f"--cpu: {CPU_IMAGE_SIZE} px, {CPU_LIMIT_PER_CLASS} training and {CPU_TEST_PER_CLASS} test images per "
            "class, latency 3 repeats: a smoke test of the path, not a measurement"
        )
    return p, notes


def step_run(args) -> dict:
    from elastic_lib import experiment
    from elastic_lib.control import results

    params, notes = run_params(args)
    out = {"parameters": {k: params[k] for k in sorted(params)}, "notes": notes, "run_dir": params["output_dir"]}
    t0 = time.perf_counter()
    try:
        exp = experiment.run(params)
        out["timings"] = {k: round(v, 2) for k, v in exp.timings.items()}
        out["determinism"] = exp.determinism
        s = exp.summary().iloc[0]
        out["summary"] = {
            k: (v.item() if hasattr(v, "item") else v)
            for k, v in s.items()
            if k in ("num_outputs", "final_top1_err_pct", "best_output", "epochs_run", "train_s", "final_latency_ms")
        }
        out["test_images"] = int(len(exp.y_test))
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc()[-4000:]
    out["seconds_in_run"] = round(time.perf_counter() - t0, 2)
    out["done"] = results.is_done(params["output_dir"])
    return out


def step_probe(args, plan: dict) -> dict:
    """A tiny model with an overlapping MaxPooling2D (the op XLA has no deterministic GPU gradient
    for), the input's gradient from the same weights and input, twice (``runtime.input_gradient``)
    under the switches the chosen determinism left on."""
    import keras
    import numpy as np

    from elastic_lib import runtime

    keras.utils.set_random_seed(0)
    shape = (8, 16, 16, 4) if args.cpu else (64, 64, 64, 16)
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    model = keras.Sequential(
        [
            keras.Input(shape[1:]),
            keras.layers.Conv2D(shape[-1], 3, padding="same"),
            keras.layers.MaxPooling2D(3, 2, padding="same"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    out = {"determinism": args.determinism, "input_shape": list(shape), "switches": plan.get("xla_flags", "")}
    try:
        first, second = (runtime.input_gradient(model, x) for _ in range(2))
        out["ran"] = True
        out["bitwise_equal"] = bool(np.array_equal(first, second))
        out["max_abs_diff"] = float(np.max(np.abs(first - second)))
    except Exception as err:
        out.update(ran=False, bitwise_equal=None, error=f"{type(err).__name__}: {str(err)[:1500]}")
    out["nondeterministic_ops_planned"] = plan.get("nondeterministic_ops")
    return out


def _on_gpu() -> bool:
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if name == "torch":
        import torch

        return torch.cuda.is_available()
    import jax

    return any(d.platform == "gpu" for d in jax.devices())


def measure(cfg, precision: str, seconds: float, size: int, batch: int) -> dict:
    """Training images/s of cfg's model under ``precision``: train_on_batch on one synthetic batch
    held on the device (warm-up steps first, compile included there), for ``seconds``."""
    import keras
    import numpy as np

    from elastic_lib import runtime
    from elastic_lib.models.exits import build_elastic_model
    from elastic_lib.train.training import compile_model

    policy, tf32 = PRECISIONS[precision]
    out = {"precision": precision, "dtype_policy": policy, **runtime.set_float32_matmul(tf32)}
    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(0)
    source = size if not cfg.resize_in_model else 32  # CIFAR's 32 px shipped, upsampled in the model
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_elastic_model(
            cfg.backbone, 10, size, weights=None, source_size=cfg.host_image_size(source), **cfg.model_options()
        )
    finally:
        keras.config.set_dtype_policy(before)
    compile_model(model, cfg.learning_rate, cfg)
    rng = np.random.default_rng(0)
    host = cfg.host_image_size(source)
    x = keras.ops.convert_to_tensor(rng.uniform(-1, 1, (batch, host, host, 3)).astype("float32"))
    y = keras.ops.convert_to_tensor(rng.integers(0, 10, batch).astype("int32"))
    ys = [y] * len(model.outputs)
    t0 = time.perf_counter()
    for _ in range(3):
        model.train_on_batch(x, ys)
    out["warmup_s"] = round(time.perf_counter() - t0, 2)
    steps, t0 = 0, time.perf_counter()
    with GpuSampler() as sampler:
        while steps < 5 or time.perf_counter() - t0 < seconds:
            model.train_on_batch(x, ys)  # returns the losses as floats: each step is waited for
            steps += 1
    elapsed = time.perf_counter() - t0
    out.update(
        steps=steps,
        batch_size=batch,
        image_size=size,
        host_image_size=host,
        seconds=round(elapsed, 2),
        images_per_s=round(steps * batch / elapsed, 2),
        **sampler.summary(),
    )
    del model
    keras.backend.clear_session()
    gc.collect()
    return out


def step_throughput(args, started: float) -> dict:
    params, _ = run_params(args)
    params.update(dataset="cifar10", data_dir="", weights="", weights_dir="", limit_per_class=0)
    from elastic_lib import runtime
    from elastic_lib.control.config import RunConfig

    cfg = RunConfig.from_dict(params)
    gpu = _on_gpu()
    size = cfg.image_size
    rows, last_cost = [], 0.0
    for precision in args.precisions:
        if precision not in PRECISIONS:
            rows.append({"precision": precision, "status": f"unknown precision; valid: {', '.join(PRECISIONS)}"})
            continue
        if precision == "tf32" and not gpu:
            rows.append({"precision": precision, "status": "not applicable on CPU (no TF32 units)"})
            continue
        if time.perf_counter() - started + last_cost > args.budget_s:
            rows.append({"precision": precision, "status": f"skipped: the check's {args.budget_s:.0f} s budget"})
            continue
        t0 = time.perf_counter()
        try:
            rows.append({**measure(cfg, precision, args.seconds_per_measure, size, cfg.batch_size), "status": "ok"})
        except Exception as err:
            rows.append({"precision": precision, "status": f"error: {type(err).__name__}: {str(err)[:800]}"})
        last_cost = time.perf_counter() - t0
    runtime.set_float32_matmul(False)
    return {"device": "GPU" if gpu else "CPU", "backbone": cfg.backbone, "variant": cfg.variant, "rows": rows}


def _golden_flops() -> dict:
    with open(os.path.join(ROOT, "tests", "reference", "registry_complexity.json")) as f:
        return json.load(f)["default_size"]


def flops_at(gold: dict, backbone: str, variant: str, size: int) -> float:
    """The final output's FLOPs of ``backbone`` (``variant``) at ``size`` px, from the registry's golden
    complexity at the backbone's default size, scaled by the pixel count."""
    entry = gold[backbone]
    return entry[variant]["flops_to_final"] * (size / entry["image_size"]) ** 2


def step_projection(throughput: dict) -> dict:
    """GPU-hours of every paper-profile run on this device, per measured precision."""
    from elastic_lib.control.profiles import load_profile

    gold = _golden_flops()
    measured = {r["precision"]: r for r in throughput["rows"] if r.get("status") == "ok"}
    ref = paper_run()
    ref_flops = flops_at(gold, ref.backbone, ref.variant, ref.image_size)
    rows = []
    for cfg in load_profile("paper").runs:
        n_train = CIFAR_TRAIN - math.ceil(cfg.val_fraction * CIFAR_TRAIN)
        epochs = cfg.phase1_epochs + cfg.phase2_epochs
        ratio = flops_at(gold, cfg.backbone, cfg.variant, cfg.image_size) / ref_flops
        row = {
            "run": cfg.run_id(),
            "backbone": cfg.backbone,
            "dataset": cfg.dataset_label,
            "variant": cfg.variant,
            "image_size": cfg.image_size,
            "batch_size": cfg.batch_size,
            "epochs": epochs,
            "train_images": n_train,
            "flops_ratio_to_mobilenet": round(ratio, 3),
        }
        for name, m in measured.items():
            # measured at the measurement's size; a CPU smoke measures at 32 px: scaled to the run's size
            ips = m["images_per_s"] * (m["image_size"] / cfg.image_size) ** 2 / ratio
            row[f"images_per_s_{name}"] = round(ips, 2)
            row[f"hours_{name}"] = round(n_train * epochs / ips / 3600, 2)
        rows.append(row)
    totals = {name: round(sum(r[f"hours_{name}"] for r in rows), 1) for name in measured}
    return {
        "rows": rows,
        "total_hours": totals,
        "assumptions": [
            "a projection, not a measurement: only MobileNet-0.75 elastic was timed (step d)",
            "every other backbone's images/s = MobileNet's x (MobileNet FLOPs / its FLOPs), the final output's "
            "FLOPs from tests/reference/registry_complexity.json scaled by pixel count to the run's image size; "
            "MobileNet's depthwise convolutions use a GPU less fully than VGG or ResNet, so this likely "
            "overstates the larger backbones' hours",
            f"every run trains its maximum epochs (phase 1 + phase 2 = {epochs}; early stopping ends runs sooner) "
            f"on {n_train:,} images (full CIFAR minus the validation fraction), batch {ref.batch_size}",
            "every epoch at the full-training (phase 2) speed: phase 1's frozen backbone is cheaper",
            "not counted: each epoch's validation and test passes (20,000 images forward, roughly a sixth more), "
            "the early-exit and latency measurements, start-up and compilation",
        ],
    }


# Dense peak throughput in TFLOPS (no structured sparsity) from NVIDIA's datasheets; None: no such unit.
GPU_PEAKS_TFLOPS = {
    "V100 SXM2": {"float32": 15.7, "tf32": None, "bf16": None},
    "A100 SXM": {"float32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "L40S": {"float32": 91.6, "tf32": 183.0, "bf16": 362.0},
    "H100 SXM / H200": {"float32": 67.0, "tf32": 494.7, "bf16": 989.4},
}
ASSUMED_UTILISATION = 0.3  # of peak, for the table's second set of columns: an assumption, not a measurement


def paper_flops() -> dict:
    """The paper profile's compute if every run trains its maximum epochs: per run, phase 1 (backbone
    frozen: forward only) and phase 2 (forward + backward = 3x forward) over the training images,
    plus each epoch's validation and test forward passes; FLOPs from the registry's golden file."""
    from elastic_lib.control.profiles import load_profile

    gold = _golden_flops()
    total, rows = 0.0, []
    for cfg in load_profile("paper").runs:
        n_val = math.ceil(cfg.val_fraction * CIFAR_TRAIN)
        n_train, n_eval = CIFAR_TRAIN - n_val, n_val + CIFAR_TEST
        f = flops_at(gold, cfg.backbone, cfg.variant, cfg.image_size)
        run = f * (cfg.phase1_epochs * (n_train + n_eval) + cfg.phase2_epochs * (3 * n_train + n_eval))
        rows.append({"run": cfg.run_id(), "forward_gflops": round(f / 1e9, 3), "pflops": round(run / 1e15, 2)})
        total += run
    return {"runs": rows, "total_pflops": round(total / 1e15, 1)}


def projection_table() -> str:
    """The paper profile's GPU-hours per GPU type from FLOPs and datasheet peaks (markdown): at 100 %
    of peak, a floor no run can beat, and at ``ASSUMED_UTILISATION``. docs/gpus.md carries it."""
    total = paper_flops()["total_pflops"] * 1e15
    pct = f"{ASSUMED_UTILISATION * 100:.0f} %"
    head = ["GPU", *(f"{p} floor (100 %)" for p in PRECISIONS), *(f"{p} at {pct}" for p in PRECISIONS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for gpu, peaks in GPU_PEAKS_TFLOPS.items():

        def hours(util, peaks=peaks):
            return [f"{total / (peaks[p] * 1e12 * util) / 3600:,.0f}" if peaks[p] else "—" for p in PRECISIONS]

        lines.append("| " + " | ".join([gpu, *hours(1.0), *hours(ASSUMED_UTILISATION)]) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- report
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]


def write_report(out_dir: str, doc: dict) -> None:
    s, lines = doc["steps"], []
    mode = "CPU smoke (a test of the path, no GPU measurement)" if doc["cpu"] else "GPU"
    lines += [
        "# GPU check",
        "",
        f"- verdict: **{doc['verdict']}** (exit code {doc['exit_code']})",
        f"- mode: {mode}; determinism: {doc['determinism']}",
        f"- command: `{doc['command']}`",
        f"- date: {doc['date']}; total {doc['total_s']:.1f} s",
        "",
        "| step | seconds | result |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {st['seconds']:.1f} | {_fmt(st.get('result', ''))} |" for name, st in s.items()]
    m = s.get("a_machine", {}).get("data", {})
    if m:
        lines += ["", "## a. Machine", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in m.items() if k != "determinism_plan"]
        lines += [f"- determinism plan: `{json.dumps(m.get('determinism_plan'), default=str)}`"]
    r = s.get("b_run", {}).get("data", {})
    if r:
        lines += ["", "## b. The paper profile's MobileNet-0.75 elastic run, shortened", ""]
        lines += [f"- {n}" for n in r.get("notes", [])]
        lines += [f"- reached DONE: **{r.get('done')}** ({r.get('run_dir')})"]
        if "summary" in r:
            lines += [f"- {k}: {_fmt(v)}" for k, v in r["summary"].items()]
            lines += [f"- test images: {r.get('test_images')}; step timings: {r.get('timings')}"]
        if "error" in r:
            lines += ["", "```", r.get("traceback", r["error"]), "```"]
    p = s.get("c_probe", {}).get("data", {})
    if p:
        lines += ["", "## c. Max-pool gradient probe", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in p.items()]
    t = s.get("d_throughput", {}).get("data", {})
    if t:
        lines += [
            "",
            f"## d. Training images/s ({t['backbone']} {t['variant']}, synthetic data on the {t['device']})",
            "",
        ]
        keys = ["precision", "status", "float32_matmul", "image_size", "batch_size", "warmup_s", "steps", "seconds"]
        keys += ["images_per_s", "gpu_util_mean_pct", "gpu_util_max_pct", "gpu_mem_max_mib"]
        lines += _table(t["rows"], keys)
    pr = s.get("e_projection", {}).get("data", {})
    if pr:
        lines += ["", "## e. Projection of the paper profile's GPU-hours on this device", ""]
        if doc["cpu"]:
            lines += ["**CPU smoke: these numbers project nothing about a GPU.**", ""]
        lines += [f"- {a}" for a in pr["assumptions"]]
        lines += [
            "",
            "Total hours per precision: " + ", ".join(f"{k} {v:,.1f} h" for k, v in pr["total_hours"].items()),
        ]
        keys = ["run", "epochs", "train_images", "flops_ratio_to_mobilenet"]
        keys += [f"hours_{k}" for k in pr["total_hours"]]
        lines += [""] + _table(pr["rows"], keys)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="a CPU smoke of the same path (small, not a measurement)")
    ap.add_argument("--data-dir", default="", help=DATA_NOTE)
    ap.add_argument("--weights-dir", default="", help="offline ImageNet no-top weights (elastic_lib.models.weights)")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    ap.add_argument("--epochs", type=int, nargs=2, default=[1, 2], metavar=("PHASE1", "PHASE2"))
    ap.add_argument("--precisions", default="float32,tf32,bf16", help="of float32, tf32, bf16 (comma-separated)")
    ap.add_argument("--seconds-per-measure", type=float, default=None, help="per precision (GPU 15, CPU 4)")
    ap.add_argument(
        "--determinism", default=None, choices=("strict", "auto", "off"), help="default: the paper profile's"
    )
    ap.add_argument("--budget-s", type=float, default=390.0, help="skip throughput measurements past it (390)")
    ap.add_argument(
        "--projection-table", action="store_true", help="print the FLOPs-based GPU-hours table (docs/gpus.md) and stop"
    )
    args = ap.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if args.seconds_per_measure is None:
        args.seconds_per_measure = 4.0 if args.cpu else 15.0
    return args


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.projection_table:
        print(projection_table(), end="")
        return 0
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # before any backend starts
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # memory.used then shows what is used
    _choose_backend()
    if args.determinism is None:
        args.determinism = paper_run().determinism
    os.makedirs(args.out, exist_ok=True)
    doc = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "benchmarks.gpu_check", *sys.argv[1:]])
        if argv is None
        else "python -m benchmarks.gpu_check " + " ".join(shlex.quote(a) for a in argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": args.cpu,
        "determinism": args.determinism,
        "steps": {},
    }
    steps = doc["steps"]

    def timed(name, fn, summarize):
        t0 = time.perf_counter()
        print(f"[gpu-check] {name} ...", flush=True)
        try:
            data = fn()
            steps[name] = {"data": data, "result": summarize(data)}
        except Exception as err:
            steps[name] = {"data": {}, "result": f"error: {type(err).__name__}: {err}", "error": traceback.format_exc()}
        steps[name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"[gpu-check] {name}: {steps[name]['result']} ({steps[name]['seconds']:.1f} s)", flush=True)
        return steps[name]["data"]

    plan = timed("setup", lambda: _setup(args.determinism), lambda p: f"determinism plan {p}")
    timed("a_machine", lambda: step_machine(plan), lambda m: f"{m['backend']} {m['backend_version']}: {m['devices']}")
    run = timed("b_run", lambda: step_run(args), lambda r: "DONE" if r["done"] else f"not DONE: {r.get('error')}")
    probe = timed(
        "c_probe",
        lambda: step_probe(args, plan),
        lambda p: f"ran={p['ran']} bitwise_equal={p['bitwise_equal']}" + (f" ({p['error']})" if "error" in p else ""),
    )
    thr = timed(
        "d_throughput",
        lambda: step_throughput(args, started),
        lambda t: ", ".join(f"{r['precision']}: {r.get('images_per_s', r['status'])}" for r in t["rows"]),
    )
    timed(
        "e_projection",
        lambda: step_projection(thr),
        lambda p: "total hours " + ", ".join(f"{k} {v:,.1f}" for k, v in p["total_hours"].items()),
    )
    failures = []
    if not run.get("done"):
        failures.append("the run did not reach DONE")
    if args.determinism == "strict" and not probe.get("ran"):
        failures.append("the max-pool gradient probe errored under strict determinism")
    doc["failures"] = failures
    doc["exit_code"] = 1 if failures else 0
    doc["verdict"] = "PASS" if not failures else "FAIL: " + "; ".join(failures)
    doc["total_s"] = round(time.perf_counter() - started, 2)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    write_report(args.out, doc)
    print(f"[gpu-check] {doc['verdict']} in {doc['total_s']:.1f} s: {os.path.join(args.out, 'report.md')}", flush=True)
    return doc["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
