"""Channel pruning of a trained VGG-style Keras model (after He et al. 2017, "Channel Pruning for
Accelerating Very Deep Neural Networks", arXiv:1707.06168), elastic or not.

Pruning a conv layer (the *consumer*) at speed-up ratio r keeps ``ceil(c / r)`` of its c input
channels. The model that comes back is a real smaller Keras model: the *producer* (the previous
conv layer) loses the dropped filters, the consumer's kernel loses those input channels, and an
exit head that reads the producer's channels (GAP -> Dropout -> Dense of an elastic model) loses
the matching rows of its Dense kernel. Both layers' kernel MACs fall by about r.

Rules (which channels are kept, and how the consumer's kernel is then set):

==============  ========================================================  ====================
rule            selection                                                  consumer's kernel
==============  ========================================================  ====================
reconstruct     LASSO on the channels' contributions to the consumer's     least squares on the
                output at sampled points (He et al., eq. 3)                sampled points
sparse_vector   the same LASSO selection                                   beta_i * W_i (the
                                                                           LASSO coefficients,
                                                                           no least squares)
first_k         the first k channels                                       least squares
max_response    the k channels whose producer filters have the largest     least squares
                L1 norm (Li et al. 2017's filter norm, as He et al. compare)
==============  ========================================================  ====================

first_k and max_response are reconstructed by least squares as in He et al.'s comparison ("for
fair comparison ... then perform reconstruction"), so the rules differ in selection only;
sparse_vector shows what the least-squares step adds. The least-squares target is the original
model's pre-bias, pre-ReLU response of the consumer at the sampled points; in a whole-model
schedule the inputs come from the model pruned so far (He et al.'s correction of accumulated error).

Whole-model schedules (``SCHEDULES``): every conv of conv1_x..conv4_x (producers block1_conv1 ..
block4_conv3) keeps a fraction of its filters, the consumer after it reconstructed, conv5_x's
channels untouched (block5_conv1 loses input channels only):

- ``x2``: keep 0.5, layer by layer, then all pruned layers jointly against the original's
  feature map at the last pruned layer;
- ``x4``: keep 0.25, iteratively: after pruning layer j, layers 1..j jointly against the
  original's feature map at layer j;
- ``x5``: keep 0.2 rounded up, iteratively as x4 (the study does not say; the iterative order is
  the stronger of the two).

"Jointly" = every conv weight up to that layer fitted by Adam to the mean squared error between the
pruned and the original post-ReLU feature maps on training images (no labels).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pandas as pd

from elastic_lib.control.config import PRUNING_RULES, PruningConfig, default
from elastic_lib.models import keras_compat
from elastic_lib.models.complexity import model_complexity

RULES = PRUNING_RULES
RATIOS = tuple(default("ratios", PruningConfig))
SINGLE_LAYERS = tuple(default("layers", PruningConfig))  # the study's conv3_1, conv4_1, conv4_2
PASS_THROUGH = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.ReLU,
)


@dataclasses.dataclass(frozen=True)
class Schedule:
    keep: float
    order: str  # "layer_by_layer_then_joint" | "iterative"
    producers: tuple[str, ...] = (
        "block1_conv1",
        "block1_conv2",
        "block2_conv1",
        "block2_conv2",
        "block3_conv1",
        "block3_conv2",
        "block3_conv3",
        "block4_conv1",
        "block4_conv2",
        "block4_conv3",
    )


SCHEDULES = {
    "x2": Schedule(0.5, "layer_by_layer_then_joint"),
    "x4": Schedule(0.25, "iterative"),
    "x5": Schedule(0.2, "iterative"),
}


def study_name(layer: str) -> str:
    """Keras' ``block4_conv2`` as the study writes it: ``conv4_2``."""
    b, c = layer.replace("block", "").split("_conv")
    return f"conv{b}_{c}"


def kept_channels(channels: int, ratio: float) -> int:
    """Input channels kept at speed-up ratio ``ratio`` (>= 1): ceil(channels / ratio)."""
    if not ratio >= 1.0:
        raise ValueError(f"speed-up ratio must be >= 1, got {ratio!r}")
    return max(1, math.ceil(channels / ratio - 1e-9))


# ---------------------------------------------------------------- graph
def _conv(model: keras.Model, name: str):
    try:
        layer = model.get_layer(name)
    except ValueError:
        raise ValueError(f"no layer {name!r} in {model.name}; conv layers: {conv_layers(model)}") from None
    if (
        not isinstance(layer, keras.layers.Conv2D)
        or layer.groups != 1
        or tuple(layer.strides) != (1, 1)
        or layer.padding != "same"
        or tuple(layer.dilation_rate) != (1, 1)
        or any(k % 2 == 0 for k in layer.kernel_size)
    ):
        raise ValueError(
            f"{name} is not a stride-1, 'same'-padded, undilated Conv2D with an odd kernel: only "
            "VGG-style convs are pruned here"
        )
    return layer


def conv_layers(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def _consumers(model: keras.Model, layer) -> list:
    """Layers reading ``layer``'s output channels, through channel-wise layers (pooling, dropout)."""
    found, todo = [], [layer]
    while todo:
        node = todo.pop()
        for nxt in model.layers:
            if isinstance(nxt, keras.layers.InputLayer):
                continue
            if any(keras_compat.producer(t) is node for t in keras.tree.flatten(nxt.input)):
                if isinstance(nxt, PASS_THROUGH):
                    todo.append(nxt)
                else:
                    found.append(nxt)
    return found


def producer_of(model: keras.Model, consumer: str) -> str:
    """The conv layer whose filters are the consumer's input channels."""
    layer = _conv(model, consumer)
    node = keras_compat.producer(layer.input)
    while isinstance(node, PASS_THROUGH):
        node = keras_compat.producer(node.input)
    if not isinstance(node, keras.layers.Conv2D):
        raise ValueError(
            f"{consumer}'s input channels do not come from a conv layer ({node.name}): "
            "the first conv's input (the image) cannot be pruned"
        )
    return node.name


def consumer_of(model: keras.Model, producer: str) -> str:
    convs = [c for c in _consumers(model, _conv(model, producer)) if isinstance(c, keras.layers.Conv2D)]
    if len(convs) != 1:
        raise ValueError(f"{producer} feeds {len(convs)} conv layers; only a chain (VGG) is pruned here")
    return convs[0].name


# ---------------------------------------------------------------- sampling
@dataclasses.dataclass
class Samples:
    """Sampled points of a consumer conv: ``x`` its input patches (N, kh, kw, c) from the model
    being pruned, ``y`` the original model's pre-bias response there (N, n). The second moments
    (``xtx`` = X^T X over the flattened patches, ``xty``, ``yty``) are computed once and shared by
    every rule and ratio: selection and least squares only need them."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        flat = self.x.reshape(len(self.x), -1)
        self.xtx, self.xty, self.yty = flat.T @ flat, flat.T @ self.y, float((self.y**2).sum())

    def index(self, kept: np.ndarray) -> np.ndarray:
        """Rows of ``xtx`` of the kept channels, in the (kh, kw, kept) layout of a kernel."""
        c = self.x.shape[-1]
        return (np.arange(len(self.xtx) // c)[:, None] * c + np.asarray(kept)[None, :]).ravel()


def _patches(fmap: np.ndarray, kernel: tuple[int, int], where: np.ndarray) -> np.ndarray:
    """(N, kh, kw, c) float64 patches of a 'same'-padded stride-1 conv's input (odd kernel) at the
    (image, row, col) ``where``; the map itself stays float32."""
    kh, kw = kernel
    pad = np.pad(fmap, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
    rows = where[:, 1][:, None] + np.arange(kh)[None, :]
    cols = where[:, 2][:, None] + np.arange(kw)[None, :]
    return pad[where[:, 0][:, None, None], rows[:, :, None], cols[:, None, :]].astype(np.float64)


def _input_of(model: keras.Model, layer: str, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    sub = keras.Model(model.inputs, model.get_layer(layer).input)
    return np.asarray(sub.predict(images, batch_size=batch_size, verbose=0), dtype=np.float32)


def sample(
    model: keras.Model,
    original: keras.Model,
    consumer: str,
    images: np.ndarray,
    points_per_image: int = 10,
    seed: int = 0,
) -> Samples:
    """``points_per_image`` random output positions of ``consumer`` per image (He et al.: 10):
    the input patches from ``model``, the target from ``original``'s unpruned consumer."""
    layer = _conv(model, consumer)
    fmap = _input_of(model, consumer, images)
    rng = np.random.default_rng(seed)
    n, h, w = fmap.shape[:3]
    per = min(points_per_image, h * w)
    flat = np.concatenate([rng.choice(h * w, per, replace=False) for _ in range(n)])
    where = np.stack([np.repeat(np.arange(n), per), flat // w, flat % w], axis=1)
    x = _patches(fmap, layer.kernel_size, where)
    orig_layer = _conv(original, consumer)
    x_orig = x if original is model else _patches(_input_of(original, consumer, images), layer.kernel_size, where)
    w_orig = np.asarray(orig_layer.kernel.numpy(), dtype=np.float64)
    return Samples(x, np.einsum("pklc,klcn->pn", x_orig, w_orig))


# ---------------------------------------------------------------- selection
def _contribution_gram(samples: Samples, kernel: np.ndarray):
    """G = A^T A and b = A^T y of the LASSO design, A[:, i] = vec(X_i W_i) (channel i's
    contribution to the consumer's response at every sampled point and output channel), from the
    patches' second moments: G_ij = sum over pairs of kernel positions of (X^T X) o (W W^T), so
    that A (N*n x c) is never formed."""
    c = kernel.shape[2]
    w2 = kernel.reshape(-1, kernel.shape[-1])
    taps = len(w2) // c
    gram = (samples.xtx * (w2 @ w2.T)).reshape(taps, c, taps, c).sum(axis=(0, 2))
    rhs = (samples.xty * w2).sum(axis=1).reshape(taps, c).sum(axis=0)
    return gram, rhs


def lasso_select(samples: Samples, kernel: np.ndarray, keep: int, iters: int = 60):
    """He et al.'s channel selection (eq. 3): min_beta ||y - sum_i beta_i X_i W_i||^2 + alpha |beta|_1
    with every channel's W_i scaled to unit Frobenius norm (so the penalty does not favour channels
    with large weights), alpha found by bisection (log scale) so that ``keep`` coefficients are
    non-zero; if no alpha gives exactly ``keep``, the ``keep`` largest |beta| at the smallest count
    above it. Returns (kept channel indices, sorted; per-channel coefficients on the *original*
    kernel: beta_i / ||W_i||). Solved with scikit-learn's Lasso on the equivalent c x c problem
    ||L^T beta - L^-1 b||^2 (G = L L^T)."""
    from sklearn.linear_model import Lasso

    c = kernel.shape[2]
    if keep >= c:
        return np.arange(c), np.ones(c)
    norms = np.maximum(np.sqrt((kernel**2).sum(axis=(0, 1, 3))), 1e-30)
    gram, rhs = _contribution_gram(samples, kernel / norms[None, None, :, None])
    gram = gram + np.eye(c) * 1e-9 * max(np.trace(gram) / c, 1e-12)  # dead channels: G singular
    chol = np.linalg.cholesky(gram)
    design, target = chol.T, np.linalg.solve(chol, rhs)
    # sklearn's objective is 1/(2 c) ||target - design beta||^2 + alpha |beta|_1: all zero above alpha_max
    hi = np.log(np.abs(design.T @ target).max() / c)
    lo = hi - np.log(1e7)
    best = None
    lasso = Lasso(fit_intercept=False, max_iter=20000, tol=1e-6, warm_start=True)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        beta = lasso.set_params(alpha=float(np.exp(mid))).fit(design, target).coef_.copy()
        nnz = int(np.count_nonzero(beta))
        if nnz >= keep and (best is None or nnz < best[0]):
            best = (nnz, beta)
        if nnz == keep:
            break
        lo, hi = (mid, hi) if nnz > keep else (lo, mid)
    if best is None:  # even the smallest alpha keeps fewer: fall back to least squares' |beta|
        best = (c, np.linalg.solve(gram, rhs))
    beta = best[1]
    kept = np.sort(np.argsort(-np.abs(beta), kind="stable")[:keep])
    return kept, beta / norms


def select(
    rule: str,
    samples: Samples,
    kernel: np.ndarray,
    keep: int,
    producer_kernel: np.ndarray | None = None,
    cache: dict | None = None,
):
    """(kept input channels, sorted; the consumer's new kernel (kh, kw, keep, n)) by ``rule``.
    ``producer_kernel``: the previous conv's kernel (``max_response`` ranks its filters);
    ``cache``: a dict shared across calls on the same samples and kernel (one LASSO per ``keep``)."""
    if rule not in RULES:
        raise ValueError(f"unknown pruning rule {rule!r}; valid: {RULES}")
    c = kernel.shape[2]
    if not 1 <= keep <= c:
        raise ValueError(f"keep must be in 1..{c}, got {keep}")
    if keep == c:  # speed-up 1: nothing dropped, nothing to rebuild
        return np.arange(c), kernel
    if rule == "first_k":
        kept = np.arange(keep)
    elif rule == "max_response":  # Li et al. 2017: the filters (of the producer) with the largest L1 norm
        if producer_kernel is None or producer_kernel.shape[-1] != c:
            raise ValueError(f"max_response needs the producer's kernel with {c} filters")
        kept = np.sort(np.argsort(-np.abs(producer_kernel).sum(axis=(0, 1, 2)), kind="stable")[:keep])
    else:
        cache = {} if cache is None else cache
        if ("lasso", keep) not in cache:
            cache[("lasso", keep)] = lasso_select(samples, kernel, keep)
        kept, coef = cache[("lasso", keep)]
        if rule == "sparse_vector":
            return kept, kernel[:, :, kept, :] * coef[kept][None, None, :, None]
    return kept, reconstruct(samples, kept, kernel.shape)


def reconstruct(samples: Samples, kept: np.ndarray, shape) -> np.ndarray:
    """Least squares: the kernel on the kept channels that best rebuilds the target response
    at the sampled points (a tiny ridge keeps it defined when channels are dead)."""
    kh, kw, _, n = shape
    idx = samples.index(kept)
    gram = samples.xtx[np.ix_(idx, idx)]
    gram = gram + np.eye(len(gram)) * 1e-8 * max(np.trace(gram) / len(gram), 1e-12)
    w = np.linalg.solve(gram, samples.xty[idx])
    return w.reshape(kh, kw, len(kept), n)


def response_error(samples: Samples, kept: np.ndarray, kernel: np.ndarray) -> float:
    """Relative squared error of the consumer's response at the sampled points,
    ||y - X_S W'||^2 / ||y||^2 (``kernel``: the new kernel on the kept channels)."""
    idx = samples.index(kept)
    w = kernel.reshape(len(idx), -1)
    sq = samples.yty - 2 * float((w * samples.xty[idx]).sum()) + float((w * (samples.xtx[np.ix_(idx, idx)] @ w)).sum())
    return max(sq, 0.0) / max(samples.yty, 1e-30)


# ---------------------------------------------------------------- the smaller model
def apply(model: keras.Model, consumer: str, kept: np.ndarray, new_kernel: np.ndarray) -> keras.Model:
    """A new, smaller model: the producer keeps the filters ``kept``, the consumer gets
    ``new_kernel`` on those input channels, exit heads reading the producer's channels keep the
    matching Dense rows. Every other weight is copied; layer names are unchanged."""
    producer = producer_of(model, consumer)
    readers = [r for r in _consumers(model, model.get_layer(producer)) if r.name != consumer]
    heads = {}
    for r in readers:
        if isinstance(r, keras.layers.GlobalAveragePooling2D):
            dense = [d for d in _consumers(model, r) if isinstance(d, keras.layers.Dense)]
            if len(dense) != 1:
                raise ValueError(f"{r.name} feeds {len(dense)} Dense layers; expected an exit head")
            heads[dense[0].name] = r.name
        else:
            raise ValueError(
                f"{producer}'s channels are read by {r.name} ({type(r).__name__}); only exit "
                "heads (GAP -> Dense) and the next conv can be adjusted"
            )
    config = model.get_config()
    for spec in config["layers"]:
        if spec["config"]["name"] == producer:
            spec["config"]["filters"] = int(len(kept))
        if spec["class_name"] != "InputLayer":
            spec.pop("build_config", None)  # input shapes change downstream: each layer builds on its call
    pruned = model.__class__.from_config(config)
    for layer in model.layers:
        weights = layer.get_weights()
        if layer.name == producer:
            weights = [weights[0][..., kept], *(w[kept] for w in weights[1:])]
        elif layer.name == consumer:
            weights = [new_kernel.astype(weights[0].dtype), *weights[1:]]
        elif layer.name in heads:
            weights = [weights[0][kept], *weights[1:]]
        pruned.get_layer(layer.name).set_weights(weights)
    return pruned


def _producer_kernel(model: keras.Model, consumer: str) -> np.ndarray:
    return np.asarray(model.get_layer(producer_of(model, consumer)).kernel.numpy(), dtype=np.float64)


def prune_layer(
    model: keras.Model,
    consumer: str,
    ratio: float,
    rule: str,
    images: np.ndarray,
    original: keras.Model | None = None,
    points_per_image: int = 10,
    seed: int = 0,
    cache: dict | None = None,
):
    """Prune ``consumer``'s input channels to 1/ratio with ``rule``; (pruned model, info dict).
    ``cache``: a dict reused across calls on the same model and layer (ratios, rules): the sampled
    points and each LASSO are then computed once."""
    original = original or model
    cache = {} if cache is None else cache
    kernel = np.asarray(_conv(model, consumer).kernel.numpy(), dtype=np.float64)
    keep = kept_channels(kernel.shape[2], ratio)
    if "samples" not in cache:
        cache["samples"] = sample(model, original, consumer, images, points_per_image, seed)
    samples = cache["samples"]
    kept, new_kernel = select(rule, samples, kernel, keep, _producer_kernel(model, consumer), cache)
    info = {
        "layer": consumer,
        "rule": rule,
        "ratio": ratio,
        "channels": kernel.shape[2],
        "kept": len(kept),
        "response_rel_err": response_error(samples, kept, new_kernel),
    }
    return apply(model, consumer, kept, new_kernel), info


# ---------------------------------------------------------------- evaluation
def topk_correct(probs: np.ndarray, y: np.ndarray, ks=(1, 3, 5)) -> dict:
    order = np.argsort(-probs, axis=1)
    return {f"top{k}": int((order[:, :k] == y[:, None]).any(axis=1).sum()) for k in ks}


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> pd.DataFrame:
    """Per output: correct counts and errors at top-1/3/5, params and kernel MACs of the whole model."""
    from elastic_lib.models.exits import short_output_names

    probs = model.predict(images, batch_size=batch_size, verbose=0)
    probs = probs if isinstance(probs, list) else [probs]
    cost = model_complexity(model)
    rows = []
    for name, p in zip(short_output_names(model), probs):
        c = topk_correct(np.asarray(p), labels)
        rows.append(
            {
                "output": name,
                "images": len(labels),
                **{f"{k}_correct": v for k, v in c.items()},
                **{f"{k}_err": 1 - v / len(labels) for k, v in c.items()},
                "params": cost["total_params"],
                "kernel_macs": cost["kernel_macs"],
            }
        )
    return pd.DataFrame(rows)


def single_layer_table(
    model: keras.Model,
    train_images: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    layers=SINGLE_LAYERS,
    ratios=RATIOS,
    rules=RULES,
    points_per_image: int = 10,
    seed: int = 0,
    progress=None,
) -> pd.DataFrame:
    """The study's single-layer experiment: each layer pruned alone at each speed-up ratio by each
    rule; the final output's increased top-1 and top-5 error (percentage points) over the
    unpruned model on the test images, the response error on the sampled points, and the
    model's kernel MACs."""
    base = evaluate(model, test_images, test_labels).iloc[-1]
    rows = []
    total = len(layers) * len(ratios) * len(rules)
    for layer in layers:
        cache = {}  # one set of sampled points and one LASSO per keep for every ratio and rule
        for ratio in ratios:
            for rule in rules:
                pruned, info = prune_layer(
                    model, layer, ratio, rule, train_images, points_per_image=points_per_image, seed=seed, cache=cache
                )
                ev = evaluate(pruned, test_images, test_labels).iloc[-1]
                rows.append(
                    {
                        **info,
                        "study_layer": study_name(layer),
                        "top1_err_inc_pct": 100 * (ev["top1_err"] - base["top1_err"]),
                        "top5_err_inc_pct": 100 * (ev["top5_err"] - base["top5_err"]),
                        "top1_err_pct": 100 * ev["top1_err"],
                        "kernel_macs": ev["kernel_macs"],
                    }
                )
                if progress:
                    progress(len(rows), total, rows[-1])
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- whole model
def joint_fit(
    pruned: keras.Model,
    original: keras.Model,
    layer: str,
    images: np.ndarray,
    epochs: int = 2,
    learning_rate: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """Every weight of ``pruned`` up to ``layer`` fitted jointly (Adam, mean squared error) to
    ``original``'s post-ReLU feature map at ``layer`` on ``images``; returns the final MSE
    relative to the target's mean square. The weights are updated in place."""
    target = original.get_layer(layer).output
    y = keras.Model(original.inputs, target).predict(images, batch_size=batch_size, verbose=0)
    sub = keras.Model(pruned.inputs, pruned.get_layer(layer).output)
    sub.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    keras.utils.set_random_seed(seed)
    sub.fit(images, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return float(sub.evaluate(images, y, batch_size=batch_size, verbose=0) / max(float(np.mean(y**2)), 1e-30))


def prune_model(
    model: keras.Model,
    schedule: str | Schedule,
    images: np.ndarray,
    points_per_image: int = 10,
    joint_epochs: int = 2,
    seed: int = 0,
    progress=None,
):
    """A whole-model schedule (``SCHEDULES``) with the ``reconstruct`` rule; (pruned model, log
    DataFrame: one row per pruned layer and per joint fit)."""
    if isinstance(schedule, str) and schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {sorted(SCHEDULES)}")
    sch = SCHEDULES[schedule] if isinstance(schedule, str) else schedule
    pruned, log = model, []
    for producer in sch.producers:
        consumer = consumer_of(model, producer)
        channels = _conv(model, producer).filters
        keep = math.ceil(sch.keep * channels - 1e-9)
        pruned, info = prune_layer(
            pruned,
            consumer,
            channels / keep,
            "reconstruct",
            images,
            original=model,
            points_per_image=points_per_image,
            seed=seed,
        )
        log.append({**info, "producer": producer, "step": "reconstruct"})
        if sch.order == "iterative":
            err = joint_fit(pruned, model, consumer, images, joint_epochs, seed=seed)
            log.append({"layer": consumer, "producer": producer, "step": "joint", "feature_rel_mse": err})
        if progress:
            progress(len(log), log[-1])
    if sch.order == "layer_by_layer_then_joint":
        last = consumer_of(model, sch.producers[-1])
        err = joint_fit(pruned, model, last, images, joint_epochs, seed=seed)
        log.append({"layer": last, "step": "joint", "feature_rel_mse": err})
    return pruned, pd.DataFrame(log)


def whole_model_table(rows: list[tuple[str, str, pd.DataFrame]], original: pd.DataFrame) -> pd.DataFrame:
    """The study's layout for the final output: #top-1/#top-3/#top-5 correct, errors and
    increased errors over the original. ``rows``: (model label, ratio, ``evaluate`` frame)."""
    o = original.iloc[-1]
    out = [{"model": "original", "ratio": "-", **_study_cols(o, None)}]
    for label, ratio, ev in rows:
        out.append({"model": label, "ratio": ratio, **_study_cols(ev.iloc[-1], o)})
    return pd.DataFrame(out)


def _study_cols(r, o) -> dict:
    cols = {"top1": int(r["top1_correct"]), "top3": int(r["top3_correct"]), "top5": int(r["top5_correct"])}
    for k in (1, 3, 5):
        cols[f"top{k}-e"] = round(float(r[f"top{k}_err"]), 5)
    for k in (1, 3, 5):
        cols[f"top{k}-e-inc"] = round(float(r[f"top{k}_err"] - o[f"top{k}_err"]), 5) if o is not None else np.nan
    cols["params"] = int(r["params"])
    cols["kernel_macs"] = int(r["kernel_macs"])
    return cols
