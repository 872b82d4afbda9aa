"""Figure 4: the FLOPs walker vs. TensorFlow's profiler.

``elastic_lib.models.complexity.model_complexity(model)['flops']`` walks the Keras graph with one
cost rule per layer type; ``profiler_flops(model)`` traces a batch-1 inference graph and asks
``tf.compat.v1.profiler`` for its float operations. Both on ResNet50 without exits at 224x224:
the wall-clock time of each call (median of several, after one warm-up call) and the
agreement of their counts.
"""

from __future__ import annotations

from .common import clear_keras, fmt, log, median, time_blocks

BACKBONE = "resnet50"
IMAGE_SIZE = 224
NUM_CLASSES = 10
AGREEMENT = 0.05  # counts within 5 %


def run(quick: bool = False) -> dict:
    import keras

    from elastic_lib.models.complexity import model_complexity, profiler_flops
    from elastic_lib.models.exits import build_elastic_model

    keras.utils.set_random_seed(0)
    log(f"complexity: building {BACKBONE} exits='none' at {IMAGE_SIZE}")
    model = build_elastic_model(BACKBONE, NUM_CLASSES, IMAGE_SIZE, exits="none")
    reps_walk, reps_prof = (3, 1) if quick else (7, 3)
    res = {}

    def walk():
        res["walker"] = model_complexity(model)["flops"]

    def prof():
        res["profiler"] = profiler_flops(model)

    log("complexity: timing model_complexity")
    t_walk = time_blocks(walk, warmup=1, repeats=reps_walk)
    log("complexity: timing profiler_flops")
    t_prof = time_blocks(prof, warmup=1, repeats=reps_prof)
    macs = model_complexity(model)["macs"]
    walk_s, prof_s = median(t_walk), median(t_prof)
    agreement = res["walker"] / res["profiler"]
    row = {
        "model": f"{BACKBONE} (exits='none', {IMAGE_SIZE}x{IMAGE_SIZE}, {NUM_CLASSES} classes)",
        "n_layers": len(model.layers),
        "walker_s": walk_s,
        "profiler_s": prof_s,
        "time_ratio_walker_over_profiler": walk_s / prof_s,
        "speedup_walker": prof_s / walk_s,
        "walker_flops": res["walker"],
        "profiler_flops": res["profiler"],
        "flops_agreement": agreement,
        "two_x_macs": 2 * macs,
        "two_x_macs_over_profiler": 2 * macs / res["profiler"],
        "repeats_walker": reps_walk,
        "repeats_profiler": reps_prof,
    }
    model = None  # release it (the closures above are done)
    clear_keras()
    ok = walk_s < prof_s and abs(agreement - 1) <= AGREEMENT
    verdict = (
        ("PASS" if ok else "FAIL") + f": walker {walk_s * 1e3:.0f} ms vs profiler {prof_s * 1e3:.0f} ms "
        f"(time ratio {walk_s / prof_s:.3f}, walker {prof_s / walk_s:.1f}x faster); FLOPs "
        f"{res['walker'] / 1e9:.3f} G vs {res['profiler'] / 1e9:.3f} G (walker/profiler {agreement:.4f}, "
        f"2xMACs/profiler {2 * macs / res['profiler']:.4f}); target: faster and within {AGREEMENT:.0%}"
    )
    return {
        "figure": "4. Complexity walker vs. TF profiler (ResNet50, 224)",
        "data": "-",
        "rows": [row],
        "measured": f"time {fmt(walk_s / prof_s)}x, FLOPs {fmt(agreement, 4)}",
        "target": f"time < 1, FLOPs 1 +/- {AGREEMENT}",
        "pass": ok,
        "verdict": verdict,
    }


if __name__ == "__main__":
    from .common import standalone

    standalone(run)
