"""The environment of a run: the one setup call, and the one record of the machine and versions.

- ``setup_environment()``: quiet logs, TensorFlow's own oneDNN graph rewrites off, Keras on
  ``ELASTIC_BACKEND``. Called explicitly, before Keras is imported, by the experiment notebook,
  the batch driver and the tests; importing ``elastic_lib`` changes nothing.
- ``machine_info()`` / ``environment_info()``: what params.yaml records about the CPU, the oneDNN
  ISA, threads and the versions that ran (the devices and the backend's build come from
  ``elastic_lib.runtime.backend_details()``, which imports the backend).

Every environment variable the workbook reads is listed in docs/environment-variables.md.
No Keras, TensorFlow, JAX or torch import here (the control plane).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import re
import subprocess
import sys

from elastic_lib.control import backend
from elastic_lib.control.paths import ROOT


def setup_environment(determinism: str | None = None) -> dict:
    """The one environment setup (before Keras or a backend is imported anywhere): quiet logs and
    TensorFlow's own oneDNN graph rewrites off, Keras on ``ELASTIC_BACKEND`` (default TensorFlow)
    unless ``KERAS_BACKEND`` says otherwise, and the backend's determinism switches for
    ``determinism`` (``plan_determinism``; JAX reads its flags only before it starts, so they are
    set here). Existing settings are kept. (``scripts/env.sh`` exports the same for the shell.)
    Returns the determinism plan, which ``elastic_lib.runtime.set_determinism`` records. Without
    ``determinism`` (the driver, the tests, the benchmarks, which train nothing they report) the
    strict switches are set and nothing is probed."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", os.environ.get("ELASTIC_BACKEND", "tensorflow"))
    plan = (
        plan_determinism(determinism)
        if determinism is not None
        else {"mode": None, "strict_kernels": True, "nondeterministic_ops": []}
    )
    if (
        os.environ["KERAS_BACKEND"] == "jax"
        and plan["strict_kernels"]
        and XLA_DETERMINISTIC not in os.environ.get("XLA_FLAGS", "")
    ):
        # JAX on a GPU: reproducible reductions (XLA on CPU is deterministic already)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {XLA_DETERMINISTIC}=true").strip()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # PyTorch deterministic cuBLAS
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing chatter breaks nbval comparisons
    _PLAN.clear()
    _PLAN.update(plan)
    return plan


# ---------------------------------------------------------------- determinism on this device
XLA_DETERMINISTIC = "--xla_gpu_deterministic_ops"
FAKE_NONDETERMINISTIC = "ELASTIC_FAKE_NONDETERMINISTIC"  # tests: ops that act as if this device lacked them
PROBE_OPS = ("conv_grad", "max_pool_grad", "avg_pool_grad", "bilinear_resize_grad", "batch_norm_grad", "reductions")
_PLAN: dict = {}


class DeterminismError(RuntimeError):
    """``determinism='strict'`` on a device whose backend cannot make some op deterministic."""


def visible_gpus() -> list[str]:
    """NVIDIA GPUs that ``nvidia-smi -L`` lists (the test scripts/tf_flavour.sh makes too), limited
    to ``CUDA_VISIBLE_DEVICES`` when it is set; no backend import."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = [ln.strip() for ln in listing.splitlines() if ln.startswith("GPU ")]
    chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is None:
        return found
    keep = {c.strip() for c in chosen.split(",") if c.strip() and c.strip() != "-1"}
    return [g for g in found if g.split(":")[0].removeprefix("GPU ").strip() in keep or any(k in g for k in keep)]


def nondeterministic_ops() -> list[str]:
    """The ops of ``PROBE_OPS`` the backend cannot run deterministically on this machine's devices.
    On CPUs every backend is deterministic: none, without a probe. With a GPU, a fresh process runs
    each op forward and backward under the backend's strict switches
    (``elastic_lib.runtime.probe_determinism``) and reports those that fail or differ between two
    runs. ``$ELASTIC_FAKE_NONDETERMINISTIC`` (comma-separated op names) stands in for the probe:
    how the tests give a CPU a GPU's gaps."""
    fake = os.environ.get(FAKE_NONDETERMINISTIC)
    if fake is not None:
        ops = [o.strip() for o in fake.split(",") if o.strip()]
        unknown = sorted(set(ops) - set(PROBE_OPS))
        if unknown:
            raise ValueError(f"{FAKE_NONDETERMINISTIC}: unknown ops {unknown}; valid: {', '.join(PROBE_OPS)}")
        return ops
    if not visible_gpus():
        return []
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + f" {XLA_DETERMINISTIC}=true").strip()}
    code = "import json, elastic_lib.runtime as r; print(json.dumps(r.probe_determinism()))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        raise DeterminismError(f"the determinism probe failed to run:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan_determinism(mode: str = "strict") -> dict:
    """What ``determinism=mode`` does on this machine: ``strict_kernels`` (the backend's strict
    switches on: TensorFlow op determinism, PyTorch deterministic algorithms, XLA's deterministic
    GPU ops) and ``nondeterministic_ops`` (ops that stay nondeterministic). strict: every op
    deterministic, else a ``DeterminismError`` now, before any data is read; auto: the strict
    switches where they hold, else the backend's per-op determinism that remains (cuDNN's
    deterministic algorithms on TensorFlow, PyTorch's ``warn_only``), the failing ops named;
    off: nothing switched (the seeds still hold)."""
    from elastic_lib.control.config import DETERMINISM

    if mode not in DETERMINISM:
        raise ValueError(f"determinism={mode!r}; valid: {', '.join(DETERMINISM)}")
    if mode == "off":
        return {"mode": mode, "strict_kernels": False, "nondeterministic_ops": ["all (determinism off)"]}
    ops = nondeterministic_ops()
    if ops and mode == "strict":
        raise DeterminismError(
            f"determinism='strict': on this device the {backend.name()} backend has no deterministic kernel for "
            f"{', '.join(ops)}; set determinism='auto' (deterministic wherever it can be, these ops named in "
            "params.yaml) or 'off'"
        )
    return {"mode": mode, "strict_kernels": not ops, "nondeterministic_ops": ops}


def determinism_plan(mode: str) -> dict:
    """The plan ``setup_environment`` made, when it was made for ``mode``; else made now (on JAX
    the XLA flags are then those already set)."""
    return dict(_PLAN) if _PLAN.get("mode") == mode else plan_determinism(mode)


# oneDNN's x64 ISA ladder: (name as ONEDNN_MAX_CPU_ISA takes it, /proc/cpuinfo flags it needs,
# the ISA line ONEDNN_VERBOSE prints). oneDNN dispatches to the highest level the CPU supports
# and the cap allows.
ISA_LADDER = [
    ("SSE41", {"sse4_1"}, "Intel SSE4.1"),
    ("AVX", {"avx"}, "Intel AVX"),
    ("AVX2", {"avx2", "fma"}, "Intel AVX2"),
    ("AVX2_VNNI", {"avx_vnni"}, "Intel AVX2 with Intel DL Boost"),
    ("AVX2_VNNI_2", {"avx_vnni_int8", "avx_ne_convert"}, "Intel AVX2 with Intel DL Boost and bfloat16 support"),
    (
        "AVX512_CORE",
        {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
        "Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions",
    ),
    ("AVX512_CORE_VNNI", {"avx512_vnni"}, "Intel AVX-512 with Intel DL Boost"),
    ("AVX512_CORE_BF16", {"avx512_bf16"}, "Intel AVX-512 with Intel DL Boost and bfloat16 support"),
    ("AVX10_1_512", {"avx512_fp16"}, "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support"),
    (
        "AVX512_CORE_AMX",
        {"amx_tile", "amx_int8", "amx_bf16"},
        "Intel AVX-512 with Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit integer support",
    ),
    (
        "AVX10_1_512_AMX",
        {"avx512_fp16"},  # Sapphire Rapids: AMX and AVX-512 float16 (oneDNN's avx10_1_512_amx)
        "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit integer "
        "support",
    ),
    (
        "AVX10_1_512_AMX_FP16",
        {"amx_fp16"},
        "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with bfloat16, float16 "
        "and 8-bit integer support",
    ),
]


ISA_NAMES = [name for name, _, _ in ISA_LADDER]


VECTOR_FLAGS = sorted(set().union(*(flags for _, flags, _ in ISA_LADDER)))


# ---------------------------------------------------------------- the machine
def _cpuinfo() -> dict:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return {}
    first = text.split("\n\n")[0]
    return dict((k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in first.splitlines()) if k.strip())


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def effective_onednn_isa(flags: set[str] | None = None, cap: str | None = None) -> str:
    """The ISA oneDNN dispatches to: the highest rung whose flags the CPU has (each rung also
    needs every rung below it), limited by ``cap`` (default: ``$ONEDNN_MAX_CPU_ISA``).
    Checked against ``probe_onednn_isa()`` by the tests."""
    flags = cpu_flags() if flags is None else flags
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA", "") if cap is None else cap).upper()
    if cap and cap not in ISA_NAMES and cap != "ALL":
        raise ValueError(f"unknown ONEDNN_MAX_CPU_ISA {cap!r}; valid: {', '.join(ISA_NAMES)}, ALL")
    limit = ISA_NAMES.index(cap) if cap in ISA_NAMES else len(ISA_NAMES) - 1
    best = "none"
    for i, (name, needs, _) in enumerate(ISA_LADDER):
        if i > limit:
            break
        if not needs <= flags:
            # side rungs: AVX2 with VNNI (client CPUs) below AVX-512, float16 (AVX10.1) below AMX;
            # a CPU without them still climbs on
            if name.startswith("AVX2_VNNI") or name == "AVX10_1_512":
                continue
            break
        best = name
    return best


def probe_onednn_isa(cap: str | None = None) -> str:
    """Ask oneDNN itself (a TensorFlow matmul in a fresh process with ONEDNN_VERBOSE=1)."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    code = "import tensorflow as tf; a = tf.ones((64, 64)); print(float(tf.reduce_sum(tf.matmul(a, a))))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"onednn_verbose,.*?,info,cpu,isa:(.+)", out)
    if not m:
        raise RuntimeError("oneDNN printed no ISA line; is this TensorFlow built with oneDNN?")
    line = m.group(1).strip()
    for name, _, text in ISA_LADDER:
        if text == line:
            return name
    return line


def machine_info(backend_details: dict | None = None) -> dict:
    """What made the numbers: CPU, the oneDNN ISA, threads; with ``backend_details``
    (``elastic_lib.runtime.backend_details()``: devices, the backend's build) when a run has them."""
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "cpu_vector_flags": " ".join(f for f in VECTOR_FLAGS if f in cpu_flags()),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "onednn_isa": effective_onednn_isa(),
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
    }
    return {**info, **(backend_details or {})}


def machine_label(info: dict) -> str:
    """Short name of a machine for captions: CPU model, the oneDNN ISA and the core count."""
    return f"{info.get('cpu_model', '?')} ({info.get('onednn_isa', '?')}, {info.get('cpu_count', '?')} cores)"


def environment_info() -> dict:
    """Versions of what ran (the Keras backend and its version included) and the git state."""
    return {
        "python": platform.python_version(),
        "keras_backend": backend.name(),
        "backend_version": backend.version(),
        "keras": importlib.metadata.version("keras"),
        "numpy": importlib.metadata.version("numpy"),
        "pandas": importlib.metadata.version("pandas"),
        **git_state(),
    }


def record(backend_details: dict | None = None) -> dict:
    """params.yaml's ``environment``: versions, the commit, and the machine."""
    return {**environment_info(), "machine": machine_info(backend_details)}


def git_state() -> dict:
    """The commit of the code that ran, and whether the library, notebooks or profiles differed
    from it (``git_dirty``: uncommitted changes under elastic_lib/, notebooks/, experiments/)."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD") or "unknown"
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "elastic_lib", "notebooks", "experiments")
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(changed)}
