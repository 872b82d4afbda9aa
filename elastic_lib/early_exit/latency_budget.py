"""A latency budget in milliseconds for the policy zoo, measured on the exported model.

``zoo``'s per-output costs are usually kernel MACs; on a device what counts is time. Here each
output's cumulative latency is measured on the run's TensorFlow Lite cascade
(``serving.TFLiteCascade``, batch 1, the exit test on the host): every image is stopped at that
output, and the mean over images is the output's cost (a mean, because a budget on the mean
latency per image is what a policy is fitted to). A per-exit policy (``zoo``'s ``per_exit``
family: MSDNet's budgeted thresholds, refined on validation) is then fitted on validation to a
budget in ms, and run on the cascade, where its realised mean latency is measured the same way.

    cascade = serving.TFLiteCascade(exp.model, "max_prob", threads=1)
    ms = latency_budget.output_latencies(cascade, x_test[:100])
    policy = latency_budget.fit(val, ms, budget_ms=0.2 * ms[-1])
    realised_ms, exits = latency_budget.policy_latency(cascade, policy, x_test)

Time the per-output latencies and the policy in interleaved rounds when comparing them (as
``benchmarks/early_exit_zoo.py`` does): a change of machine load or clock between the two would
otherwise pass for an error of the latency model.
"""

from __future__ import annotations

import time

import numpy as np

from elastic_lib.early_exit import zoo

UNIT = "ms (TFLite cascade, batch 1)"


def run_image(cascade, x, thresholds) -> tuple[float, int]:
    """(seconds, output index) of one image (a batch of one) through ``cascade``: it stops at the
    first exit whose largest probability reaches that exit's threshold (``thresholds``: one per
    output; the final output's is not read), else runs the tail."""
    t0 = time.perf_counter()
    h = x
    for i, stage in enumerate(cascade.stages):
        h, p = stage(h)
        if p.max() >= thresholds[i]:
            return time.perf_counter() - t0, i
    cascade.tail(h)
    return time.perf_counter() - t0, cascade.n_exits


def stop_at(num_outputs: int, output: int) -> np.ndarray:
    """Thresholds that stop every image at ``output`` (0-based)."""
    t = np.full(num_outputs, np.inf)
    t[output:] = -np.inf
    return t


def output_latencies(cascade, images, rounds: int = 1) -> np.ndarray:
    """Each output's cumulative latency in ms: the mean over ``images`` (and ``rounds``) of the time
    an image takes when stopped at that output. Made non-decreasing (timing noise can dip)."""
    k = cascade.n_exits + 1
    ms = []
    for out in range(k):
        t = stop_at(k, out)
        ms.append(1000 * float(np.mean([run_image(cascade, x[None], t)[0] for _ in range(rounds) for x in images])))
    return np.maximum.accumulate(np.asarray(ms))


def with_latency(outputs: zoo.ExitOutputs, ms) -> zoo.ExitOutputs:
    """``outputs`` with the measured per-output latencies as their costs."""
    return zoo.with_cost(outputs, np.asarray(ms, dtype=np.float64), UNIT)


def fit(val: zoo.ExitOutputs, ms, budget_ms: float) -> zoo.Policy | None:
    """The per-exit policy fitted on ``val`` whose mean latency (from ``ms``) is within
    ``budget_ms`` and most accurate there; None when even the first exit costs more."""
    ms = np.asarray(ms, dtype=np.float64)
    if budget_ms <= 0:
        raise ValueError(f"budget_ms must be positive (got {budget_ms}); the final output takes {ms[-1]:.3g} ms")
    return zoo.fit("per_exit", with_latency(val, ms), budget=budget_ms / ms[-1])


def predicted_ms(policy: zoo.Policy, outputs: zoo.ExitOutputs, ms) -> float:
    """The mean latency per image that the per-output latencies ``ms`` predict for ``policy`` on ``outputs``."""
    out = with_latency(outputs, ms)
    return float(zoo.outcome(policy.decide(out), out)["mean_cost"])


def policy_latency(cascade, policy: zoo.Policy, images) -> tuple[float, np.ndarray]:
    """(mean ms per image, the output each image left at) of ``policy`` run on ``cascade``."""
    if policy.family != "per_exit":
        raise ValueError(f"the cascade runs per-exit max-probability thresholds; got a {policy.family!r} policy")
    t = np.asarray(policy.params["thresholds"], dtype=np.float64)
    runs = [run_image(cascade, x[None], t) for x in images]
    return 1000 * float(np.mean([r[0] for r in runs])), np.array([r[1] for r in runs])
