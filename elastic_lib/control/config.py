"""RunConfig: one experiment (one backbone x dataset x variant x seed), its parameters and defaults.

``RunConfig`` is the one place where a run parameter, its type, its default and its meaning
live: the experiment notebook's ``parameters`` cell is generated from it
(``python -m elastic_lib.control.notebook_cells --write``; a test fails when they differ), profiles
(``elastic_lib.control.profiles``) and papermill are checked against it, and the model builder,
the data loader and training read their options from it.

Every key and type is checked once, up front, with errors that name the bad value and the
valid ones. This module is the light control plane's schema: it imports neither TensorFlow
nor Keras (``./run_all.sh --list`` and SLURM tasks load it in well under a second).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field

from elastic_lib.control.datasets import DATASETS, LABEL_MODES, DatasetError, check_data_dir, dataset_label
from elastic_lib.control.paths import ROOT, interactive_dir
from elastic_lib.control.registry import check_image_size, check_weights, get_backbone

VARIANTS = ("elastic", "baseline")
EXIT_CHOICES = ("none", "all", "deeper_half")
FINAL_HEADS = ("flatten", "gap")
HEADS = ("softmax", "am_softmax")
LOSS_WEIGHT_SCHEMES = ("uniform", "depth", "linear")
CRITERIA = ("max_prob", "entropy")
PREPROCESS = ("native", "inception")
FROZEN_BN = ("inference", "batch_stats")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "data_parallel", "mirrored")  # mirrored: data_parallel's old name (TensorFlow)
DETERMINISM = ("strict", "auto", "off")
INPUT_PIPELINES = ("auto", "tf_data", "pydataset")  # elastic_lib.data.pipeline.PIPELINES
CHOICES = {
    "dataset": DATASETS,
    "label_mode": LABEL_MODES,
    "variant": VARIANTS,
    "final_head": FINAL_HEADS,
    "head": HEADS,
    "loss_weights": LOSS_WEIGHT_SCHEMES,
    "exit_criterion": CRITERIA,
    "strategy": STRATEGIES,
    "input_pipeline": INPUT_PIPELINES,
    "preprocess": PREPROCESS,
    "frozen_bn": FROZEN_BN,
    "precision": PRECISIONS,
    "determinism": DETERMINISM,
}  # enumerated parameters


class ConfigError(ValueError):
    """A bad parameter, profile key or type; the message names it and the valid choices."""


_NEW = object()


def _p(default, doc: str, plumbing: bool = False, before=_NEW):
    """A run parameter: its default and the one-line doc shown in the notebook's parameters cell.
    plumbing: where and how the run executes (paths, devices, DONE handling), not what it is;
    params.yaml keeps it apart from the experiment's parameters.
    before: for a parameter added after runs were recorded, the value that reproduces what those
    runs did (``LEGACY``): a recorded run that lacks the parameter is read as having it."""
    meta = {"doc": doc, "plumbing": plumbing}
    if before is not _NEW:
        meta["before"] = before
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def default(name: str, schema=None):
    """The default of ``schema``'s field ``name`` (RunConfig's by default): what a library function
    uses as its own default, so that every default is written once, here."""
    f = {f.name: f for f in dataclasses.fields(schema or RunConfig)}[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@dataclass
class RunConfig:
    backbone: str = _p("mobilenet_0.75", "registry name, see elastic_lib.list_backbones()")
    dataset: str = _p("digits", "digits (embedded) | cifar10 | cifar100")
    label_mode: str = _p("fine", "cifar100 labels: fine (100) | coarse (20)")
    image_size: int = _p(32, "input side in pixels (paper: 224), at least the backbone's minimum")
    variant: str = _p("elastic", "elastic (exits) | baseline (no exits)")
    exits: str = _p("all", "all | deeper_half | comma-separated layer names (elastic only)")
    final_head: str = _p("flatten", "flatten (original: Flatten-Dropout-Dense) | gap")
    weights: str = _p("", '"" random init | imagenet | path to a local no-top weights file')
    extra_exits: str = _p(
        "",
        "comma-separated layer names tapped in addition to `exits` (e.g. paper Fig. 6's equal-depth tap); "
        "a baseline ignores it, as it ignores `exits`",
    )
    dropout: float = _p(0.2, "dropout in every head, the baseline's final head included (original code)")
    head: str = _p("softmax", "every output's classifier: softmax (Dense) | am_softmax (cosine head, AM-softmax loss)")
    am_scale: float = _p(5.0, "am_softmax: the logits are am_scale x cos(theta) (MicroNet entry: 5)")
    am_margin: float = _p(0.0, "am_softmax: additive margin m on the true class's cosine (MicroNet entry: 0)")
    refinery_run: str = _p(
        "",
        "label refinery: train on this finished run's soft predictions (its run directory, "
        "relative to the repo; in a profile @<case> names that case's run)",
    )
    refinery_output: str = _p("final", "label refinery: the teacher's output whose predictions are the targets")
    self_distillation: bool = _p(False, "elastic: every exit also learns the final output's softened predictions")
    distill_temperature: float = _p(3.0, "self-distillation temperature T (the loss is weighted by T^2)")
    distill_weight: float = _p(1.0, "self-distillation weight of each exit's KL term")
    bn_epsilon: float = _p(0.0, "backbone BatchNorm epsilon; 0: the backbone's own (inception_v4: 0.001 | 1e-5)")
    count_include_pad: bool = _p(False, "inception_v4: block average pools count padded zeros (True) or not (Keras)")
    preprocess: str = _p(
        "native", "native (each backbone's preprocess_input) | inception ([-1, 1] for all, original code)"
    )
    loss_weights: str = _p("uniform", "uniform (paper) | depth (original weight-Depth) | linear")
    phase1_epochs: int = _p(1, "phase 1: backbone frozen, heads train")
    phase2_epochs: int = _p(3, "phase 2: all layers train")
    batch_size: int = _p(32, "images per training and evaluation batch")
    learning_rate: float = _p(0.01, "SGD, phase 1 (paper with ImageNet weights: 1e-3)")
    phase2_learning_rate: float = _p(0.01, "SGD, phase 2")
    momentum: float = _p(0.9, "SGD momentum, phase 1")
    phase2_momentum: float = _p(0.9, "SGD momentum, phase 2 (original code: 0, plain SGD)")
    frozen_bn: str = _p(
        "inference", "phase 1 frozen BatchNorm: inference (Keras 3) | batch_stats (Keras 2.1.5, original)"
    )
    bn_momentum: float = _p(0.9, "BatchNorm momentum; 0 keeps Keras' 0.99 (fine for long/pretrained runs)")
    reduce_lr_factor: float = _p(0.1, "ReduceLROnPlateau: learning rate x this factor on a val_loss plateau")
    reduce_lr_patience: int = _p(5, "ReduceLROnPlateau: epochs without val_loss improvement")
    reduce_lr_cooldown: int = _p(0, "ReduceLROnPlateau: epochs to wait after a reduction (original: 1)")
    early_stopping_patience: int = _p(10, "EarlyStopping on val_loss (best weights are kept)")
    early_stopping_min_delta: float = _p(0.0, "EarlyStopping: smallest val_loss decrease that counts (original: 1e-4)")
    min_lr: float = _p(1e-05, "ReduceLROnPlateau floor")
    val_fraction: float = _p(0.2, "validation split of the training data (model selection, thresholds)")
    limit_per_class: int = _p(0, "first N training images per class (0: all)")
    test_limit_per_class: int = _p(0, "first N test images per class (0: all)")
    augment: bool = _p(False, "random flip + translation (paper: off)")
    resize_in_model: bool = _p(False, "upsample to image_size in the model (first layer: Resizing), not on the host")
    seed: int = _p(0, "seeds Python, NumPy and the Keras backend")
    determinism: str = _p(
        "strict",
        "strict (every op deterministic, or an early error naming the ops this device lacks) | auto "
        "(deterministic where the backend can be on this device; the rest named in params.yaml) | off",
        before="strict",
    )
    target_drop_pct: float = _p(1.0, "early exit: allowed top-1 accuracy drop vs. the final output (points)")
    exit_criterion: str = _p("max_prob", "dynamic policy timed in the latency cell: max_prob | entropy")
    exit_analysis: bool = _p(
        True,
        "elastic: keep every output's validation and test probabilities (outputs.npz) and fit the early-exit "
        "policy zoo and diagnostics on them (exit_policies.csv, exit_diagnostics.csv, report.md); a baseline "
        "has one output and records false",
        before=False,
    )
    latency_repeats: int = _p(10, "timed repeats per output after warm-up (0: skip latency)")
    latency_images: int = _p(30, "test images for the dynamic-policy latency")
    compare_depth_of: str = _p("", "e.g. densenet121: this run's exit nearest that network's depth (paper Fig. 6)")
    jit_compile: bool = _p(
        False, "XLA for training steps on TensorFlow (GPU speed option; off on CPU); JAX always compiles"
    )
    precision: str = _p("float32", "float32 | mixed_float16 | mixed_bfloat16 (GPU speed options; outputs stay float32)")
    allow_tf32: bool = _p(
        False, "float32 matmuls and convolutions may run as TF32 on Ampere+ GPUs (off: true float32)", before=False
    )
    data_dir: str = _p(
        "", "folder holding the CIFAR archive (empty: $ELASTIC_DATA_DIR, Keras cache, or download)", plumbing=True
    )
    weights_dir: str = _p(
        "",
        "folder of downloaded no-top ImageNet weights files "
        "(offline nodes; fill it with python -m elastic_lib.models.weights download)",
        plumbing=True,
    )
    strategy: str = _p(
        "default",
        "default | data_parallel (every visible GPU: keras.distribution on JAX, MirroredStrategy on "
        "TensorFlow; batch_size stays the global batch) | mirrored (old name, TensorFlow)",
        plumbing=True,
    )
    loader_workers: int = _p(
        4,
        "threads preparing NumPy batches ahead of the device (pydataset path; one-epoch streams: evaluation)",
        plumbing=True,
    )
    input_pipeline: str = _p(
        "auto", "auto (tf.data on TensorFlow, else pydataset) | tf_data | pydataset: same batches", plumbing=True
    )
    output_dir: str = _p(
        "", "run directory (empty: $ELASTIC_INTERACTIVE_DIR or results/interactive, /<run id>)", plumbing=True
    )
    write_done: bool = _p(
        True, "run_all.sh sets False and writes DONE itself, after saving this notebook", plumbing=True
    )

    def __post_init__(self):
        if self.variant == "baseline":  # one output: no early exit to analyse (recorded as not done)
            self.exit_analysis = False

    # ------------------------------------------------------------ validation
    @classmethod
    def from_dict(cls, params: dict) -> "RunConfig":
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown}; valid parameters: {sorted(valid)}")
        cfg = cls(**params)
        cfg.validate()
        return cfg

    def validate(self) -> "RunConfig":
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            v, t = getattr(self, f.name), hints[f.name]
            ok = (
                isinstance(v, bool)
                if t is bool
                else isinstance(v, (int, float)) and not isinstance(v, bool)
                if t is float
                else isinstance(v, int) and not isinstance(v, bool)
                if t is int
                else isinstance(v, t)
            )
            if not ok:
                raise ConfigError(f"parameter {f.name}={v!r} must be of type {t.__name__}")
        for name, valid in CHOICES.items():
            _choice(name, getattr(self, name), valid)
        try:
            get_backbone(self.backbone)
            check_image_size(self.backbone, self.image_size)
            if self.weights == "imagenet" and self.weights_dir and not os.path.isfile(self.weights_arg):
                raise ValueError(
                    f"weights=imagenet with weights_dir={self.weights_dir!r}: no {self.backbone} file "
                    f"{os.path.basename(self.weights_arg)!r} there; on a machine with internet run "
                    f"python -m elastic_lib.models.weights download --backbones {self.backbone} --dir "
                    f"{self.weights_dir} and copy the folder here (or leave weights_dir empty to "
                    "download)"
                )
            check_weights(self.backbone, self.weights_arg)
            if self.compare_depth_of:
                get_backbone(self.compare_depth_of)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.dataset != "digits" and self.data_dir:
            try:
                check_data_dir(self.dataset, os.path.expanduser(self.data_dir))
            except DatasetError as err:
                raise ConfigError(str(err)) from None
        for name in (
            "phase1_epochs",
            "phase2_epochs",
            "limit_per_class",
            "test_limit_per_class",
            "latency_repeats",
            "latency_images",
            "reduce_lr_patience",
            "early_stopping_patience",
            "reduce_lr_cooldown",
            "loader_workers",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.early_stopping_min_delta < 0 or not 0 <= self.momentum < 1 or not 0 <= self.phase2_momentum < 1:
            raise ConfigError("early_stopping_min_delta must be >= 0 and momenta in [0, 1)")
        if self.batch_size < 1 or self.learning_rate <= 0 or self.phase2_learning_rate <= 0:
            raise ConfigError("batch_size must be >= 1 and learning rates > 0")
        self._validate_tricks()
        self._validate_backend()
        return self

    def _validate_backend(self) -> None:
        """TensorFlow-only options refused early on another Keras backend (``elastic_lib.control.backend``)."""
        from elastic_lib.control.backend import BackendError, require_tensorflow
        from elastic_lib.control.backend import name as backend_name

        try:
            if self.strategy == "mirrored":
                require_tensorflow("strategy='mirrored' (tf.distribute; strategy='data_parallel' works on JAX too)")
            if self.strategy == "data_parallel" and backend_name() == "torch":
                raise BackendError(
                    "strategy='data_parallel' runs on JAX (keras.distribution) and TensorFlow (MirroredStrategy); "
                    "Keras on PyTorch has no data-parallel training: ELASTIC_BACKEND=jax or tensorflow"
                )
            if self.input_pipeline == "tf_data":
                require_tensorflow("input_pipeline='tf_data'")
        except BackendError as err:
            raise ConfigError(str(err)) from None

    def _validate_tricks(self) -> None:
        """The MicroNet options (head, refinery, self-distillation) and the backbone options."""
        if self.am_scale <= 0 or self.am_margin < 0:
            raise ConfigError(f"am_scale must be > 0 and am_margin >= 0, got {self.am_scale}, {self.am_margin}")
        if self.am_margin and self.head != "am_softmax":
            raise ConfigError(f"am_margin={self.am_margin} needs head='am_softmax' (head is {self.head!r})")
        if self.refinery_run and self.am_margin:
            raise ConfigError(
                "refinery_run trains on soft targets, where the AM margin is undefined: use am_margin=0 "
                "(the MicroNet entry's setting)"
            )
        if self.refinery_run.startswith("@"):
            raise ConfigError(
                f"refinery_run={self.refinery_run!r}: @<case> names a case's run only inside a profile's "
                "cases; give a run directory"
            )
        if self.self_distillation and self.variant != "elastic":
            raise ConfigError("self_distillation needs exits: variant='elastic'")
        if self.distill_temperature <= 0 or self.distill_weight < 0:
            raise ConfigError(
                f"distill_temperature must be > 0 and distill_weight >= 0, got "
                f"{self.distill_temperature}, {self.distill_weight}"
            )
        options = get_backbone(self.backbone).options
        for name, default in (("bn_epsilon", 0.0), ("count_include_pad", False)):
            if getattr(self, name) != default and name not in options:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is an option of backbones that have it "
                    f"({', '.join(b for b in _backbones_with(name))}); {self.backbone} has not"
                )
        if self.bn_epsilon < 0:
            raise ConfigError(f"bn_epsilon must be >= 0 (0: the backbone's own), got {self.bn_epsilon}")

    def host_image_size(self, source_size: int) -> int:
        """Side of the images the input path ships for images of side ``source_size``: image_size,
        or with ``resize_in_model`` the source side (the model's ``resize_in_model`` layer upsamples)."""
        return int(source_size) if self.resize_in_model else self.image_size

    @property
    def refinery_dir(self) -> str:
        """``refinery_run`` as a path (relative ones are relative to the repo root); "" if unset."""
        path = os.path.expanduser(self.refinery_run)
        return os.path.join(ROOT, path) if path and not os.path.isabs(path) else path

    @property
    def backbone_options(self) -> dict:
        """The registry builder's options this run sets (``bn_epsilon`` only when not 0)."""
        opts = {"bn_epsilon": self.bn_epsilon, "count_include_pad": self.count_include_pad}
        return {
            k: v
            for k, v in opts.items()
            if k in get_backbone(self.backbone).options and not (k == "bn_epsilon" and v == 0)
        }

    # ------------------------------------------------------------ derived
    @property
    def exit_spec(self):
        if self.variant == "baseline":
            return "none"
        return self.exits if self.exits in EXIT_CHOICES else [s.strip() for s in self.exits.split(",") if s.strip()]

    @property
    def extra_exit_list(self) -> list[str]:
        return [s.strip() for s in self.extra_exits.split(",") if s.strip()] if self.variant == "elastic" else []

    def model_options(self) -> dict:
        """The model builder's keyword arguments this run sets
        (``build_elastic_model(backbone, num_classes, image_size, **options)``; weights and the source
        size are the caller's: they depend on files and on the data)."""
        return {
            "exits": self.exit_spec,
            "final_head": self.final_head,
            "dropout": self.dropout,
            "extra_exits": self.extra_exit_list,
            "head": self.head,
            "am_scale": self.am_scale,
            "backbone_options": self.backbone_options,
        }

    def data_options(self) -> dict:
        """The data loader's keyword arguments this run sets (``load_dataset(dataset, **options)``)."""
        return {
            "data_dir": os.path.expanduser(self.data_dir) or None,
            "label_mode": self.label_mode,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "limit_per_class": self.limit_per_class,
            "test_limit_per_class": self.test_limit_per_class,
        }

    @property
    def weights_arg(self):
        """None (random init), "imagenet" (Keras download) or a local file: ``weights`` itself, or
        for weights=imagenet with a ``weights_dir`` the file ``python -m elastic_lib.models.weights
        download`` put there for this backbone."""
        if self.weights == "imagenet" and self.weights_dir:
            from elastic_lib.control.registry import weights_file

            return weights_file(os.path.expanduser(self.weights_dir), self.backbone)
        return os.path.expanduser(self.weights) if self.weights not in ("", "imagenet") else (self.weights or None)

    @property
    def dataset_label(self) -> str:
        return dataset_label(self.dataset, self.label_mode)

    def run_id(self, with_seed: bool = False) -> str:
        rid = f"{self.backbone}__{self.dataset_label}__{self.variant}"
        return rid + (f"__seed{self.seed}" if with_seed else "")

    def run_dir(self) -> str:
        return self.output_dir or os.path.join(interactive_dir(), self.run_id())

    def to_dict(self) -> dict:
        """Every field (what papermill passes to the notebook)."""
        return dataclasses.asdict(self)

    def experiment_params(self) -> dict:
        """What the experiment is (params.yaml ``parameters``), without the plumbing."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata["plumbing"]}

    def plumbing(self) -> dict:
        """Where and how it ran (params.yaml ``plumbing``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["plumbing"]}


def _backbones_with(option: str) -> list[str]:
    from elastic_lib.control.registry import REGISTRY

    return [name for name, b in REGISTRY.items() if option in b.options]


def _choice(name, value, valid):
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


# ---------------------------------------------------------------- the other notebooks' parameters
@dataclass
class AggregateConfig:
    """The aggregation notebook's parameters (``notebooks/aggregate.ipynb``): a profile's tables and
    figures from its completed runs. ``./run_all.sh`` passes the output folders."""

    profile: str = _p("smoke", "experiments/<profile>.yaml; reads its completed runs from <results_root>/<profile>/")
    results_root: str = _p("", "empty: <repo>/results", plumbing=True)
    tables_dir: str = _p(
        "",
        "where tables go (empty: results/interactive/aggregate/<profile>); run_all.sh: results/<profile>",
        plumbing=True,
    )
    figures_dir: str = _p(
        "", "where figures go (empty: <tables_dir>/figures); run_all.sh: figures/<profile>", plumbing=True
    )


PRUNING_RULES = ("reconstruct", "first_k", "sparse_vector", "max_response")  # channel selection rules
PRUNING_SCHEDULES = ("x2", "x4", "x5")  # whole-model speed-ups (elastic_lib.studies.pruning.channels.SCHEDULES)


@dataclass
class PruningConfig:
    """The channel-pruning study's parameters (``notebooks/channel_pruning.ipynb``); a profile's
    ``study: parameters:`` sets some of them."""

    profile: str = _p("pruning", "experiments/<profile>.yaml: its completed vgg16 runs (baseline, elastic) are pruned")
    results_root: str = _p("", "empty: <repo>/results", plumbing=True)
    tables_dir: str = _p(
        "",
        "where tables go (empty: results/interactive/pruning/<profile>); run_all.sh: results/<profile>",
        plumbing=True,
    )
    figures_dir: str = _p(
        "", "where the figure goes (empty: <tables_dir>/figures); run_all.sh: figures/<profile>", plumbing=True
    )
    layers: list = _p(
        ["block3_conv1", "block4_conv1", "block4_conv2"],
        "single-layer experiment: the study's conv3_1, conv4_1, conv4_2",
    )
    ratios: list = _p(
        [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
        "speed-up ratios of the pruned layer (keeps ceil(c / ratio) input channels)",
    )
    rules: list = _p(list(PRUNING_RULES), "channel selection rules: " + " | ".join(PRUNING_RULES))
    schedules: list = _p(list(PRUNING_SCHEDULES), "whole-model schedules: " + " | ".join(PRUNING_SCHEDULES))
    sample_images: int = _p(1000, "training images the sampled points come from")
    points_per_image: int = _p(10, "sampled output positions per image (He et al.: 10)")
    joint_epochs: int = _p(2, "epochs of each joint feature-map fit in the whole-model schedules")
    fine_tune_epochs: int = _p(2, "epochs of the short fine-tuning run after each schedule (0: none)")
    fine_tune_lr: float = _p(0.001, "its SGD learning rate (momentum 0.9)")
    seed: int = _p(0, "sampled points and fine-tuning order")

    def __post_init__(self):
        for name, valid in (("rules", PRUNING_RULES), ("schedules", PRUNING_SCHEDULES)):
            bad = [v for v in getattr(self, name) if v not in valid]
            if bad:
                raise ConfigError(f"{name} {bad} unknown; valid: {list(valid)}")


# Parameters added after runs were recorded, with the value that reproduces those runs.
LEGACY = {f.name: f.metadata["before"] for f in dataclasses.fields(RunConfig) if "before" in f.metadata}


def as_recorded(params: dict, recorded: dict) -> dict:
    """``params`` as a run recorded before a ``LEGACY`` parameter existed would have recorded them:
    without each such parameter that ``recorded`` lacks and ``params`` sets to its legacy value."""
    return {k: v for k, v in params.items() if k in recorded or k not in LEGACY or v != LEGACY[k]}
