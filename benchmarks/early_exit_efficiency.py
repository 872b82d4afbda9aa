"""Figure 6: early exit that pays (issue 10), as efficiency = measured speed-up / FLOPs ratio.

The FLOPs ratio of a policy is the final output's FLOPs over the mean FLOPs the policy spent
per image (``flops_cumulative`` of the exit each image left at: every segment and every head
evaluated on the way). Each speed-up is measured against the final output alone *in the same
runtime*, the two sides timed per image, interleaved (A B, B A, ...).

- **32 px**: the trained smoke Elastic-MobileNet-0.75 (``results/smoke``, its weights), its
  threshold chosen on validation (``latency.csv``), its first test images, batch 1.
- **224 px**: Elastic-MobileNet-0.75 and Elastic-ResNet50, random init, CIFAR-10 subset (or
  digits) images resized to 224, a fixed max-prob threshold: the median over images of the
  exits' largest confidence, so that images leave at several exits (the exit histogram is listed).
- Runtimes: ``tf.cond``, the compiled staged forward of ``early_exit.StagedModel`` (one
  ``tf.function``, nested ``tf.cond``, Keras sub-models per segment); ``tflite``, the lean staged
  forward ``serving.TFLiteCascade`` (one TensorFlow Lite interpreter per stage with segment and
  head fused, XNNPACK, the exit test on the host).
- **No-exit overhead**: the dynamic policy at a threshold no image reaches over the final output alone.
- **Fixed exits**: every exit alone as a TFLite model, its latency next to the final output's and
  its FLOPs ratio (the edge devices elastic networks are for).
- **Batched** (224 px, batch 64, MobileNet-0.75): ``serving.BatchedEarlyExit`` (images that exit
  leave the batch) against the final output alone on the same batch (one ``tf.function``), images/s.
"""

from __future__ import annotations

import os
import time

import numpy as np

from elastic_lib.control.results import repo_relative

from .common import clear_keras, fmt, load_images, log, median

TARGET_EFF, TARGET_OVERHEAD, TARGET_BATCH_EFF = 0.8, 1.10, 0.7


def _flops_ratio(costs, chosen) -> float:
    return float(costs["flops_to_output"].iloc[-1]) / float(costs["flops_cumulative"].to_numpy()[chosen].mean())


def _per_image(cands: dict, images, warmup: int = 3) -> dict[str, float]:
    """Mean ms per image of each candidate, called per image in alternating order."""
    for fn in cands.values():
        for i in range(warmup):
            fn(images[i % len(images)][None])
    times = {k: [] for k in cands}
    for j, img in enumerate(images):
        for name in list(cands) if j % 2 == 0 else list(reversed(cands)):
            t0 = time.perf_counter()
            cands[name](img[None])
            times[name].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.mean(v)) for k, v in times.items()}


def policy_rows(label: str, model, images, threshold: float, fixed_exits: bool) -> tuple[list[dict], list[dict]]:
    """Efficiency of the dynamic policy in both runtimes, the no-exit overhead, and (optionally)
    every exit alone in TFLite; (policy rows, per-exit rows)."""
    from elastic_lib.early_exit.serving import TFLiteCascade, _convert, _Stage
    from elastic_lib.early_exit.staged import StagedModel
    from elastic_lib.models import complexity

    costs = complexity.complexity_frame(model)
    staged, cascade = StagedModel(model), TFLiteCascade(model)
    never = 1.01
    tf_final = staged.fixed(staged.n_exits)
    chosen = np.array([cascade.predict(img[None], threshold)[0] for img in images])
    same = np.mean([staged.predict_dynamic(img[None], threshold)[0] == c for img, c in zip(images, chosen)])
    ms = _per_image(
        {
            "tf.cond_dynamic": lambda x: staged.predict_dynamic(x, threshold),
            "tf.cond_final_alone": lambda x: np.asarray(tf_final(x)),  # the same runtime: a tf.function
            "tf.cond_never_exit": lambda x: staged.predict_dynamic(x, never),
            "tflite_dynamic": lambda x: cascade.predict(x, threshold),
            "tflite_final_alone": cascade.final_alone,
            "tflite_never_exit": lambda x: cascade.predict(x, never),
        },
        images,
    )
    flops_ratio = _flops_ratio(costs, chosen)
    rows = []
    for rt in ("tf.cond", "tflite"):
        speedup = ms[f"{rt}_final_alone"] / ms[f"{rt}_dynamic"]
        rows.append(
            {
                "case": label,
                "runtime": rt,
                "threshold": threshold,
                "n_images": len(images),
                "mean_exit": float(chosen.mean() + 1),
                "n_exits": staged.n_exits,
                "exit_histogram": np.bincount(chosen, minlength=staged.n_exits + 1).tolist(),
                "dynamic_ms": ms[f"{rt}_dynamic"],
                "final_alone_ms": ms[f"{rt}_final_alone"],
                "speedup": speedup,
                "flops_ratio": flops_ratio,
                "efficiency": speedup / flops_ratio,
                "never_exit_over_final": ms[f"{rt}_never_exit"] / ms[f"{rt}_final_alone"],
                "same_exits_as_tf.cond": float(same),
            }
        )
    per_exit = []
    if fixed_exits:
        stages = {k: _Stage(_convert(staged.fixed(k)), None) for k in range(staged.n_exits + 1)}
        exit_ms = _per_image({k: s for k, s in stages.items()}, images[:20])
        final_ms = exit_ms[staged.n_exits]
        for k, v in exit_ms.items():
            per_exit.append(
                {
                    "case": label,
                    "output": costs["output"].iloc[k],
                    "tflite_ms": v,
                    "speedup_vs_final": final_ms / v,
                    "flops_ratio_vs_final": float(costs["flops_to_output"].iloc[-1])
                    / float(costs["flops_to_output"].iloc[k]),
                }
            )
    staged = cascade = None  # release them (the closures above are done)
    clear_keras()
    return rows, per_exit


def batched_row(model, images, threshold: float, batch: int, repeats: int) -> dict:
    """Images/s of the batched early exit and of the final output alone on the same batches."""
    import tensorflow as tf

    from elastic_lib.early_exit.serving import BatchedEarlyExit
    from elastic_lib.models import complexity

    costs = complexity.complexity_frame(model)
    dyn = BatchedEarlyExit(model)
    staged = dyn.staged

    @tf.function(input_signature=[tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)])
    def final(x):
        h = x
        for seg in staged.segments:
            h = seg(h, training=False)
        return staged.tail(h, training=False)

    x = images[:batch]
    _, chosen = dyn.predict(x, threshold)
    times = {"dynamic": [], "final": []}
    for fn in (lambda: dyn.predict(x, threshold), lambda: final(x).numpy()):
        fn()  # trace + warm-up
    for r in range(repeats):
        for name in ("dynamic", "final") if r % 2 == 0 else ("final", "dynamic"):
            t0 = time.perf_counter()
            dyn.predict(x, threshold) if name == "dynamic" else final(x).numpy()
            times[name].append(time.perf_counter() - t0)
    speedup = median(times["final"]) / median(times["dynamic"])
    flops_ratio = _flops_ratio(costs, chosen)
    return {
        "case": f"{model.name} 224 px, batch {batch}",
        "threshold": threshold,
        "images_per_s_dynamic": batch / median(times["dynamic"]),
        "images_per_s_final": batch / median(times["final"]),
        "speedup": speedup,
        "flops_ratio": flops_ratio,
        "efficiency": speedup / flops_ratio,
        "mean_exit": float(chosen.mean() + 1),
        "repeats": repeats,
    }


def _smoke_run() -> str | None:
    from .early_exit_bench import completed_runs

    runs = [d for d in completed_runs() if os.path.basename(d) == "mobilenet_0.75__digits__elastic"]
    return runs[0] if runs else None


def _spread_threshold(model, images) -> float:
    """The median over images of the exits' largest max-prob: images leave at several exits."""
    probs = model.predict(images, verbose=0)[:-1]
    return float(np.median(np.max([p.max(axis=1) for p in probs], axis=0)))


def _images_224(n: int):
    import tensorflow as tf

    x, _, label = load_images(n)
    return (tf.image.resize(tf.cast(x, tf.float32), (224, 224)).numpy() / 127.5 - 1.0).astype(np.float32), label


def run(quick: bool = False) -> dict:
    import pandas as pd

    from elastic_lib.experiment import Experiment
    from elastic_lib.models.exits import build_elastic_model

    n = 10 if quick else 40
    rows, per_exit, notes = [], [], []
    run_dir = _smoke_run()
    if run_dir is None:
        notes.append("no trained smoke run with weights: run ./run_all.sh first; the 32 px row is missing")
    else:
        exp = Experiment.from_run_dir(run_dir)
        images = np.concatenate([b[0].numpy() for b in exp.pipeline("test").take(-(-n // exp.cfg.batch_size))])[:n]
        lat = pd.read_csv(os.path.join(run_dir, "latency.csv")).set_index("output")
        threshold = float(lat.loc["dynamic_max_prob", "threshold"])
        log(f"early-exit efficiency: 32 px, {repo_relative(run_dir)}, threshold {threshold:g}")
        r, e = policy_rows(
            "mobilenet_0.75 32 px (trained smoke run, validation threshold)",
            exp.model,
            images,
            threshold,
            fixed_exits=True,
        )
        rows += r
        per_exit += e
    x224, data_label = _images_224(64 if not quick else 8)
    for backbone in ("mobilenet_0.75",) if quick else ("mobilenet_0.75", "resnet50"):
        model = build_elastic_model(backbone, 10, 224, exits="all", final_head="gap")
        threshold = _spread_threshold(model, x224[:n])
        log(f"early-exit efficiency: 224 px, {backbone} (random init), threshold {threshold:.4g}")
        r, e = policy_rows(
            f"{backbone} 224 px (random init, spread threshold)", model, x224[:n], threshold, fixed_exits=not quick
        )
        rows += r
        per_exit += e
        if backbone == "mobilenet_0.75":
            batch = batched_row(model, x224, threshold, len(x224), 3 if quick else 7)
        del model
        clear_keras()
    return summarise(rows, per_exit, batch, notes, data_label)


def summarise(rows, per_exit, batch, notes, data_label) -> dict:
    lean = [r for r in rows if r["runtime"] == "tflite"]
    ok = (
        all(r["efficiency"] >= TARGET_EFF for r in lean)
        and all(r["never_exit_over_final"] <= TARGET_OVERHEAD for r in lean)
        and all(e["speedup_vs_final"] >= 1.0 for e in per_exit)
        and batch["efficiency"] >= TARGET_BATCH_EFF
    )
    slow = [f"{e['case'].split(' (')[0]} {e['output']}" for e in per_exit if e["speedup_vs_final"] < 1.0]
    text = "; ".join(
        f"{r['case'].split(' (')[0]} {r['runtime']}: efficiency {fmt(r['efficiency'], 2)} "
        f"(speed-up {fmt(r['speedup'])}x / FLOPs {fmt(r['flops_ratio'])}x), no-exit overhead "
        f"{fmt(r['never_exit_over_final'])}x"
        for r in rows
    )
    verdict = (
        ("PASS" if ok else "FAIL") + f": {text}; batched: efficiency {fmt(batch['efficiency'], 2)} "
        f"({fmt(batch['images_per_s_dynamic'])} vs {fmt(batch['images_per_s_final'])} images/s); fixed exits "
        f"slower than the final output in TFLite: {', '.join(slow) or 'none'}; targets: efficiency >= "
        f"{TARGET_EFF} (lean runtime), no-exit overhead <= {TARGET_OVERHEAD}, every exit at least as fast as the "
        f"final output, batched efficiency >= {TARGET_BATCH_EFF}" + "".join(f"; NOTE: {x}" for x in notes)
    )
    measured = ", ".join(f"{r['case'].split(' (')[0]} efficiency {fmt(r['efficiency'], 2)}" for r in lean)
    summary_rows = [
        {
            "figure": f"6. Early exit, batch 1, {r['case'].split(' (')[0]}, {r['runtime']}",
            "measured": f"efficiency {r['efficiency']:.2f} (speed-up {fmt(r['speedup'])}x / FLOPs ratio "
            f"{fmt(r['flops_ratio'])}x, mean exit {fmt(r['mean_exit'])} of {r['n_exits'] + 1})",
            "target": f">= {TARGET_EFF}",
            "pass": r["efficiency"] >= TARGET_EFF,
        }
        for r in rows
    ]
    summary_rows += [
        {
            "figure": f"6. No-exit overhead, {r['case'].split(' (')[0]}, {r['runtime']}",
            "measured": f"{r['never_exit_over_final']:.2f}x the final output alone",
            "target": f"<= {TARGET_OVERHEAD}",
            "pass": r["never_exit_over_final"] <= TARGET_OVERHEAD,
        }
        for r in rows
    ]
    summary_rows.append(
        {
            "figure": f"6. Batched early exit, {batch['case']}",
            "measured": f"efficiency {batch['efficiency']:.2f} ({fmt(batch['images_per_s_dynamic'])} vs "
            f"{fmt(batch['images_per_s_final'])} images/s, FLOPs ratio {fmt(batch['flops_ratio'])}x)",
            "target": f">= {TARGET_BATCH_EFF}",
            "pass": batch["efficiency"] >= TARGET_BATCH_EFF,
        }
    )
    summary_rows.append(
        {
            "figure": "6. Every fixed exit at least as fast as the final output (TFLite)",
            "measured": f"slower: {', '.join(slow) or 'none'} of {len(per_exit)} outputs",
            "target": "none slower",
            "pass": not slow,
        }
    )
    return {
        "summary_rows": summary_rows,
        "figure": "6. Early exit efficiency (speed-up / FLOPs ratio), lean TFLite cascade",
        "data": data_label,
        "rows": rows + [batch] + per_exit,
        "measured": f"{measured}; batched efficiency {fmt(batch['efficiency'], 2)}",
        "target": f"efficiency >= {TARGET_EFF}, overhead <= {TARGET_OVERHEAD}, batched >= {TARGET_BATCH_EFF}",
        "pass": ok,
        "verdict": verdict,
        "notes": notes,
    }


if __name__ == "__main__":
    from .common import standalone

    standalone(run)
