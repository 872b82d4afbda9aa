"""The GPU check (benchmarks/gpu_check.py) as a CPU smoke, and the CIFAR subset it carries
(scripts/make_cifar_subset.py)."""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


def _subset_module():
    spec = importlib.util.spec_from_file_location("make_cifar_subset", ROOT / "scripts" / "make_cifar_subset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_projection_has_one_row_per_paper_run():
    from benchmarks.gpu_check import step_projection
    from elastic_lib.control.profiles import load_profile

    runs = load_profile("paper").runs
    thr = {"rows": [{"precision": "bf16", "status": "ok", "images_per_s": 1000.0, "image_size": 224}]}
    proj = step_projection(thr)
    assert [r["run"] for r in proj["rows"]] == [r.run_id() for r in runs]
    mobilenet = next(r for r in proj["rows"] if r["run"] == "mobilenet_0.75__cifar10__elastic")
    assert mobilenet["flops_ratio_to_mobilenet"] == 1.0
    assert mobilenet["hours_bf16"] == pytest.approx(40_000 * 200 / 1000 / 3600, rel=1e-3)
    vgg = next(r for r in proj["rows"] if r["backbone"] == "vgg16")
    assert vgg["hours_bf16"] > 10 * mobilenet["hours_bf16"]  # ~46x the FLOPs
    assert proj["total_hours"]["bf16"] == pytest.approx(sum(r["hours_bf16"] for r in proj["rows"]), abs=0.1)


def test_flops_projection_and_the_docs_table():
    """The FLOPs projection by hand for one run (forward-only phase 1, 3x forward phase 2, the
    validation and test passes each epoch), the floor from a datasheet peak, and docs/gpus.md
    carrying the table the code prints."""
    from benchmarks.gpu_check import GPU_PEAKS_TFLOPS, paper_flops, projection_table

    gold = json.loads((ROOT / "tests" / "reference" / "registry_complexity.json").read_text())["default_size"]
    f = gold["mobilenet_0.75"]["elastic"]["flops_to_final"]  # at 224 px, the paper's size
    by_hand = f * (100 * (40_000 + 20_000) + 100 * (3 * 40_000 + 20_000))
    flops = paper_flops()
    mobilenet = next(r for r in flops["runs"] if r["run"] == "mobilenet_0.75__cifar10__elastic")
    assert mobilenet["pflops"] == pytest.approx(by_hand / 1e15, abs=0.01)
    assert len(flops["runs"]) == 24
    table = projection_table()
    h100 = next(line for line in table.splitlines() if line.startswith("| H100"))
    floor_bf16 = flops["total_pflops"] * 1e15 / (GPU_PEAKS_TFLOPS["H100 SXM / H200"]["bf16"] * 1e12) / 3600
    assert h100.split(" | ")[3] == f"{floor_bf16:,.0f}"
    docs = (ROOT / "docs" / "gpus.md").read_text()
    start = docs.index("<!-- projection-table")
    block = docs[docs.index("\n", start) + 1 : docs.index("<!-- /projection-table -->")]
    assert block == table, "docs/gpus.md: paste `python -m benchmarks.gpu_check --projection-table`"


def test_make_cifar_subset(shared_data, tmp_path):
    from elastic_lib.data.arrays import load_cifar_arrays

    mod = _subset_module()
    out = tmp_path / "subset"
    p10 = mod.make_subset(str(shared_data / "cifar10-subset" / "cifar-10-python.tar.gz"), str(out), 3000, 500, 0)
    p100 = mod.make_subset(str(shared_data / "cifar100-subset" / "cifar-100-python.tar.gz"), str(out), 1000, 200, 1)
    assert os.path.basename(p10) == "cifar-10-python.tar.gz" and os.path.basename(p100) == "cifar-100-python.tar.gz"
    assert os.path.getsize(p10) <= 12 * MiB
    with tarfile.open(p10) as tar:
        names = sorted(tar.getnames())
        batch = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_1"), encoding="bytes")
    expected = [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta", "readme.html", "test_batch"]
    assert names == sorted(f"cifar-10-batches-py/{n}" for n in expected)
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (600, 3072) and batch[b"data"].dtype == np.uint8
    with tarfile.open(p100) as tar:
        assert sorted(tar.getnames()) == [f"cifar-100-python/{n}" for n in ("meta", "readme.html", "test", "train")]
    # the workbook's loader reads both (the SHA256SUMS written beside them included)
    (x, y), (xt, yt), names10 = load_cifar_arrays("cifar10", str(out))
    assert x.shape == (3000, 32, 32, 3) and xt.shape == (500, 32, 32, 3) and len(names10) == 10
    assert set(np.bincount(y)) == {300} and set(np.bincount(yt)) == {50}  # stratified
    assert len(np.unique(y[:20])) > 1  # shuffled
    (x, y), (xt, yt), names100 = load_cifar_arrays("cifar100", str(out))
    assert len(y) == 1000 and len(yt) == 200 and len(names100) == 100
    assert set(np.bincount(y, minlength=100)) == {10} and set(np.bincount(yt, minlength=100)) == {2}
    # reproducible: same seed, same bytes
    again = mod.make_subset(str(shared_data / "cifar10-subset" / "cifar-10-python.tar.gz"), str(tmp_path / "b"))
    assert Path(again).read_bytes() == Path(p10).read_bytes()


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    """``python -m benchmarks.gpu_check --cpu`` end to end (~1 min on 2 cores): on a subset made by
    make_cifar_subset when shared/data has CIFAR, else on the embedded digits."""
    from conftest import CIFAR_ARCHIVES, SHARED_DATA

    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--out", str(tmp_path / "out")]
    cmd += ["--seconds-per-measure", "2"]
    source = SHARED_DATA / CIFAR_ARCHIVES["cifar10"]
    if source.is_file():
        _subset_module().make_subset(str(source), str(tmp_path / "data"))
        cmd += ["--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "run" / "DONE").is_file() and (out / "report.md").is_file()
    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["exit_code"] == 0 and doc["cpu"] is True
    steps = doc["steps"]
    assert set(steps) == {"setup", "a_machine", "b_run", "c_probe", "d_throughput", "e_projection"}
    assert all(s["seconds"] >= 0 for s in steps.values())
    assert steps["a_machine"]["data"]["devices"]
    assert steps["b_run"]["data"]["done"] is True
    assert steps["c_probe"]["data"]["ran"] is True and steps["c_probe"]["data"]["bitwise_equal"] is True
    rows = {r["precision"]: r for r in steps["d_throughput"]["data"]["rows"]}
    assert rows["float32"]["images_per_s"] > 0 and rows["bf16"]["images_per_s"] > 0
    assert rows["tf32"]["status"].startswith("not applicable on CPU")
    from elastic_lib.control.profiles import load_profile

    proj = steps["e_projection"]["data"]
    assert len(proj["rows"]) == len(load_profile("paper").runs)
    assert set(proj["total_hours"]) == {"float32", "bf16"}
    report = (out / "report.md").read_text()
    assert "**PASS**" in report and "not a measurement" in report and "projection" in report
