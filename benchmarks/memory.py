"""Figure 3: memory of the 224x224 input pipeline.

A fresh subprocess (so that nothing else this process did counts) loads the CIFAR-10 subset's
train + val images (10,000 uint8 32x32 images; digits if the subset is missing), iterates one
epoch of ``make_pipeline`` at 224x224 (batch 32, MobileNet preprocessing), and reports its
peak RSS (``VmHWM`` from /proc/self/status; ``ru_maxrss`` is also recorded but on Linux it
inherits the parent's RSS through fork + exec, so it is not clean), its RSS just before the epoch
(TensorFlow imported, data loaded, pipeline built) and a 20 ms psutil sample of RSS during the
epoch. These are compared with the size of the resized dataset as float32
(N x 224 x 224 x 3 x 4 bytes), what resizing up front with NumPy would hold in memory. The
pipeline resizes per batch, so its peak should stay far below that.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .common import ROOT, fmt, log

TARGET = 1.0  # peak RSS of the whole process below the resized float32 dataset
IMAGE_SIZE = 224
BATCH = 32


def _vm_hwm() -> int:
    """Peak RSS of this process image (VmHWM, bytes). Unlike ``ru_maxrss``, which Linux carries
    over from the parent through fork + exec (so a child of a 3 GB parent reports >= 3 GB), the
    high-water mark of the mm belongs to this process alone."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(limit: int, image_size: int) -> dict:
    import resource
    import threading
    import time

    import psutil

    proc = psutil.Process()
    rss_start = proc.memory_info().rss
    import tensorflow as tf  # noqa: F401

    from elastic_lib.data.pipeline import make_pipeline
    from elastic_lib.models.backbones import preprocess_input

    from .common import load_images  # imports TensorFlow via elastic_lib

    x, y, source = load_images(limit=limit or None)
    ds = make_pipeline(x, y, image_size, preprocess_input("mobilenet_0.75"), BATCH, 1)
    rss_before = proc.memory_info().rss
    hwm_before = _vm_hwm()
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(proc.memory_info().rss)
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    n = 0
    checksum = 0.0
    t0 = time.perf_counter()
    for xb, _ in ds:
        n += int(xb.shape[0])
        checksum += float(xb[0, 0, 0, 0])  # touch the batch
    seconds = time.perf_counter() - t0
    stop.set()
    th.join()
    return {
        "n_images": n,
        "source": source,
        "image_size": image_size,
        "epoch_s": seconds,
        "rss_start": rss_start,
        "rss_before_epoch": rss_before,
        "peak_rss_before_epoch": hwm_before,
        "peak_rss": max(_vm_hwm(), max(samples, default=0)),
        "ru_maxrss_incl_parent_at_fork": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rss_sampled_during_epoch": max(samples) if samples else rss_before,
        "uint8_dataset_bytes": int(x.nbytes),
    }


def run(quick: bool = False) -> dict:
    limit = 0  # the whole 10,000 images even in --quick mode: one epoch takes seconds
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", "--limit", str(limit)]
    log(f"memory: subprocess {' '.join(cmd[1:])}")
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"memory child failed ({res.returncode}):\n{res.stderr[-3000:]}")
    m = json.loads(res.stdout.strip().splitlines()[-1])
    f32 = m["n_images"] * IMAGE_SIZE * IMAGE_SIZE * 3 * 4
    gb = 1024**3
    m.update(
        {
            "float32_resized_bytes": f32,
            "ratio_peak_rss": m["peak_rss"] / f32,
            "pipeline_delta_bytes": m["peak_rss_sampled_during_epoch"] - m["rss_before_epoch"],
        }
    )
    m["ratio_delta"] = m["pipeline_delta_bytes"] / f32
    ok = m["ratio_peak_rss"] < TARGET
    verdict = (
        ("PASS" if ok else "FAIL") + f": peak RSS {m['peak_rss'] / gb:.2f} GiB for one epoch of "
        f"{m['n_images']} images at 224 vs {f32 / gb:.2f} GiB resized float32 "
        f"(ratio {m['ratio_peak_rss']:.3f}, target < {TARGET}); the epoch itself adds "
        f"{m['pipeline_delta_bytes'] / gb:.2f} GiB over the {m['rss_before_epoch'] / gb:.2f} GiB of "
        f"TensorFlow + data ({m['ratio_delta']:.3f} of the float32 size)"
    )
    return {
        "figure": "3. Memory: one epoch at 224x224 through make_pipeline",
        "data": m["source"],
        "rows": [m],
        "measured": f"{fmt(m['ratio_peak_rss'])} (peak RSS / float32 size)",
        "target": f"< {TARGET}",
        "pass": ok,
        "verdict": verdict,
    }


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", action="store_true", help="internal: the measured subprocess")
    p.add_argument("--limit", type=int, default=0)
    a = p.parse_args()
    if a.child:
        print(json.dumps(_child(a.limit, IMAGE_SIZE)))
    else:
        print(json.dumps(run(a.quick), indent=1, default=str))
