"""RunConfig (one experiment = one backbone x dataset x variant x seed) and profiles.

``RunConfig`` is the one place where a run parameter, its type, its default and its meaning
live: the experiment notebook's ``parameters`` cell is generated from it
(``python -m elastic_lib.config --write-notebook``; a test fails when they differ), profiles
and papermill are checked against it, and training reads its options from it.

A profile (``experiments/<name>.yaml``) is a grid of runs::

    description: ...
    base: paper                                             # optional: start from another profile
    defaults: {dataset: digits, image_size: 32, ...}       # any RunConfig field
    grid: {backbone: [...], dataset: [...], variant: [elastic, baseline], seed: [0]}
    overrides: {resnet50: {learning_rate: 0.05}}            # per backbone (or per run id)

With ``base``, the base profile's defaults, grid and overrides come first and this file's
entries replace theirs key by key (``paper-dryrun`` is ``paper`` at a small scale).

Every key and type is checked once, up front, with errors that name the bad value and the
valid ones. This module is the light control plane's schema: it imports neither TensorFlow
nor Keras (``./run_all.sh --list`` and SLURM tasks load it in well under a second).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
import typing
from dataclasses import dataclass, field

import yaml

from .backbones import check_image_size, check_weights, get_backbone

# The valid choices of every enumerated parameter (the modules that implement them import these).
DATASETS = ("digits", "cifar10", "cifar100")
LABEL_MODES = ("fine", "coarse")
VARIANTS = ("elastic", "baseline")
EXIT_CHOICES = ("none", "all", "deeper_half")
FINAL_HEADS = ("flatten", "gap")
HEADS = ("softmax", "am_softmax")
LOSS_WEIGHT_SCHEMES = ("uniform", "depth", "linear")
CRITERIA = ("max_prob", "entropy")
PREPROCESS = ("native", "inception")
FROZEN_BN = ("inference", "batch_stats")
PRECISIONS = ("float32", "mixed_float16")
STRATEGIES = ("default", "mirrored")
INPUT_PIPELINES = ("auto", "tf_data", "pydataset")  # elastic_lib.loader.PIPELINES
CHOICES = {"dataset": DATASETS, "label_mode": LABEL_MODES, "variant": VARIANTS, "final_head": FINAL_HEADS,
           "head": HEADS, "loss_weights": LOSS_WEIGHT_SCHEMES, "exit_criterion": CRITERIA, "strategy": STRATEGIES,
           "input_pipeline": INPUT_PIPELINES, "preprocess": PREPROCESS, "frozen_bn": FROZEN_BN, "precision": PRECISIONS}  # enumerated parameters
PROFILE_KEYS = {"description", "base", "requires_gpu", "defaults", "grid", "overrides", "study", "cases"}
STUDY_KEYS = {"notebook", "parameters"}  # a study notebook run once after the profile's runs
GRID_KEYS = {"backbone", "dataset", "variant", "seed", "label_mode", "image_size", "loss_weights", "exits",
             "head", "bn_epsilon", "count_include_pad",
             "phase2_learning_rate"}  # the last for hyperparameter sweeps (elastic_lib.selection)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "elastic_experiment.ipynb")
INTERACTIVE_ENV = "ELASTIC_INTERACTIVE_DIR"


def interactive_dir() -> str:
    """Where runs and aggregations started by hand (JupyterLab, a script) write when no output
    folder is given: ``$ELASTIC_INTERACTIVE_DIR``, else ``results/interactive`` (git-ignored).
    The test session points it at a temporary folder, so nbval never touches a user's runs."""
    return os.path.abspath(os.environ.get(INTERACTIVE_ENV) or os.path.join(ROOT, "results", "interactive"))


def display_path(path: str) -> str:
    """A path as the notebooks print it: inside ``$ELASTIC_INTERACTIVE_DIR`` relative to it,
    inside the repo relative to the repo, else as it is (never the machine's repo path)."""
    path = os.path.abspath(path)
    if os.environ.get(INTERACTIVE_ENV):
        rel = os.path.relpath(path, interactive_dir())
        if not rel.startswith(".."):
            return os.path.join(f"${INTERACTIVE_ENV}", rel) if rel != "." else f"${INTERACTIVE_ENV}"
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


class ConfigError(ValueError):
    """A bad parameter, profile key or type; the message names it and the valid choices."""


def _p(default, doc: str, plumbing: bool = False):
    """A run parameter: its default and the one-line doc shown in the notebook's parameters cell.
    plumbing: where and how the run executes (paths, devices, DONE handling), not what it is;
    params.yaml keeps it apart from the experiment's parameters."""
    return field(default=default, metadata={"doc": doc, "plumbing": plumbing})


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
    extra_exits: str = _p("", "comma-separated layer names tapped in addition to `exits` (e.g. paper Fig. 6's equal-depth tap); "
                      "a baseline ignores it, as it ignores `exits`")
    dropout: float = _p(0.2, "dropout in every head, the baseline's final head included (original code)")
    head: str = _p("softmax", "every output's classifier: softmax (Dense) | am_softmax (cosine head, AM-softmax loss)")
    am_scale: float = _p(5.0, "am_softmax: the logits are am_scale x cos(theta) (MicroNet entry: 5)")
    am_margin: float = _p(0.0, "am_softmax: additive margin m on the true class's cosine (MicroNet entry: 0)")
    refinery_run: str = _p("", "label refinery: train on this finished run's soft predictions (its run directory, "
                           "relative to the repo; in a profile @<case> names that case's run)")
    refinery_output: str = _p("final", "label refinery: the teacher's output whose predictions are the targets")
    self_distillation: bool = _p(False, "elastic: every exit also learns the final output's softened predictions")
    distill_temperature: float = _p(3.0, "self-distillation temperature T (the loss is weighted by T^2)")
    distill_weight: float = _p(1.0, "self-distillation weight of each exit's KL term")
    bn_epsilon: float = _p(0.0, "backbone BatchNorm epsilon; 0: the backbone's own (inception_v4: 0.001 | 1e-5)")
    count_include_pad: bool = _p(False, "inception_v4: block average pools count padded zeros (True) or not (Keras)")
    preprocess: str = _p("native", "native (each backbone's preprocess_input) | inception ([-1, 1] for all, original code)")
    loss_weights: str = _p("uniform", "uniform (paper) | depth (original weight-Depth) | linear")
    phase1_epochs: int = _p(1, "phase 1: backbone frozen, heads train")
    phase2_epochs: int = _p(3, "phase 2: all layers train")
    batch_size: int = _p(32, "images per training and evaluation batch")
    learning_rate: float = _p(0.01, "SGD, phase 1 (paper with ImageNet weights: 1e-3)")
    phase2_learning_rate: float = _p(0.01, "SGD, phase 2")
    momentum: float = _p(0.9, "SGD momentum, phase 1")
    phase2_momentum: float = _p(0.9, "SGD momentum, phase 2 (original code: 0, plain SGD)")
    frozen_bn: str = _p("inference", "phase 1 frozen BatchNorm: inference (Keras 3) | batch_stats (Keras 2.1.5, original)")
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
    seed: int = _p(0, "seeds Python, NumPy, TensorFlow; op determinism is always on")
    target_drop_pct: float = _p(1.0, "early exit: allowed top-1 accuracy drop vs. the final output (points)")
    exit_criterion: str = _p("max_prob", "dynamic policy timed in the latency cell: max_prob | entropy")
    latency_repeats: int = _p(10, "timed repeats per output after warm-up (0: skip latency)")
    latency_images: int = _p(30, "test images for the dynamic-policy latency")
    compare_depth_of: str = _p("", "e.g. densenet121: this run's exit nearest that network's depth (paper Fig. 6)")
    jit_compile: bool = _p(False, "XLA for training steps on TensorFlow (GPU speed option; off on CPU); JAX always compiles")
    precision: str = _p("float32", "float32 | mixed_float16 (GPU speed option; outputs stay float32)")
    data_dir: str = _p("", "folder holding the CIFAR archive (empty: $ELASTIC_DATA_DIR, Keras cache, or download)",
                       plumbing=True)
    weights_dir: str = _p("", "folder of downloaded no-top ImageNet weights files "
                          "(offline nodes; fill it with python -m elastic_lib.weights download)", plumbing=True)
    strategy: str = _p("default", "default | mirrored (tf.distribute, multi-GPU; TensorFlow only)", plumbing=True)
    input_pipeline: str = _p("auto", "auto (tf.data on TensorFlow, else pydataset) | tf_data | pydataset: same batches",
                             plumbing=True)
    output_dir: str = _p("", "run directory (empty: $ELASTIC_INTERACTIVE_DIR or results/interactive, /<run id>)",
                         plumbing=True)
    write_done: bool = _p(True, "run_all.sh sets False and writes DONE itself, after saving this notebook",
                          plumbing=True)

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
            ok = (isinstance(v, bool) if t is bool else
                  isinstance(v, (int, float)) and not isinstance(v, bool) if t is float else
                  isinstance(v, int) and not isinstance(v, bool) if t is int else isinstance(v, t))
            if not ok:
                raise ConfigError(f"parameter {f.name}={v!r} must be of type {t.__name__}")
        for name, valid in CHOICES.items():
            _choice(name, getattr(self, name), valid)
        try:
            get_backbone(self.backbone)
            check_image_size(self.backbone, self.image_size)
            if self.weights == "imagenet" and self.weights_dir and not os.path.isfile(self.weights_arg):
                raise ValueError(f"weights=imagenet with weights_dir={self.weights_dir!r}: no {self.backbone} file "
                                 f"{os.path.basename(self.weights_arg)!r} there; on a machine with internet run "
                                 f"python -m elastic_lib.weights download --backbones {self.backbone} --dir "
                                 f"{self.weights_dir} and copy the folder here (or leave weights_dir empty to "
                                 "download)")
            check_weights(self.backbone, self.weights_arg)
            if self.compare_depth_of:
                get_backbone(self.compare_depth_of)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.dataset != "digits" and self.data_dir:
            from .data import DatasetError, check_data_dir

            try:
                check_data_dir(self.dataset, os.path.expanduser(self.data_dir))
            except DatasetError as err:
                raise ConfigError(str(err)) from None
        for name in ("phase1_epochs", "phase2_epochs", "limit_per_class", "test_limit_per_class", "latency_repeats",
                     "latency_images", "reduce_lr_patience", "early_stopping_patience", "reduce_lr_cooldown"):
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
        """TensorFlow-only options refused early on another Keras backend (``elastic_lib.backend``)."""
        from .backend import BackendError, require_tensorflow

        try:
            if self.strategy != "default":
                require_tensorflow(f"strategy={self.strategy!r} (tf.distribute)")
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
            raise ConfigError("refinery_run trains on soft targets, where the AM margin is undefined: use am_margin=0 "
                              "(the MicroNet entry's setting)")
        if self.refinery_run.startswith("@"):
            raise ConfigError(f"refinery_run={self.refinery_run!r}: @<case> names a case's run only inside a profile's "
                              "cases; give a run directory")
        if self.self_distillation and self.variant != "elastic":
            raise ConfigError("self_distillation needs exits: variant='elastic'")
        if self.distill_temperature <= 0 or self.distill_weight < 0:
            raise ConfigError(f"distill_temperature must be > 0 and distill_weight >= 0, got "
                              f"{self.distill_temperature}, {self.distill_weight}")
        options = get_backbone(self.backbone).options
        for name, default in (("bn_epsilon", 0.0), ("count_include_pad", False)):
            if getattr(self, name) != default and name not in options:
                raise ConfigError(f"{name}={getattr(self, name)!r} is an option of backbones that have it "
                                  f"({', '.join(b for b in _backbones_with(name))}); {self.backbone} has not")
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
        return {k: v for k, v in opts.items() if k in get_backbone(self.backbone).options
                and not (k == "bn_epsilon" and v == 0)}

    # ------------------------------------------------------------ derived
    @property
    def exit_spec(self):
        if self.variant == "baseline":
            return "none"
        return self.exits if self.exits in EXIT_CHOICES else [s.strip() for s in self.exits.split(",") if s.strip()]

    @property
    def extra_exit_list(self) -> list[str]:
        return [s.strip() for s in self.extra_exits.split(",") if s.strip()] if self.variant == "elastic" else []

    @property
    def weights_arg(self):
        """None (random init), "imagenet" (Keras download) or a local file: ``weights`` itself, or
        for weights=imagenet with a ``weights_dir`` the file ``python -m elastic_lib.weights
        download`` put there for this backbone."""
        if self.weights == "imagenet" and self.weights_dir:
            from .backbones import weights_file

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
    from .backbones import REGISTRY

    return [name for name, b in REGISTRY.items() if option in b.options]


def dataset_label(dataset: str, label_mode: str = "fine") -> str:
    """Dataset name as used in run ids and tables: CIFAR-100 with coarse labels is its own dataset."""
    return dataset if dataset != "cifar100" or label_mode == "fine" else "cifar100coarse"


def _choice(name, value, valid):
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


# ---------------------------------------------------------------- profiles
@dataclass
class Profile:
    name: str
    description: str
    runs: list[RunConfig] = field(default_factory=list)
    requires_gpu: bool = False  # ./run_all.sh refuses it without a GPU unless --allow-cpu
    study: dict | None = None  # {"notebook": path of notebooks/<name>.ipynb, "parameters": {...}}


def profile_path(name: str) -> str:
    return name if name.endswith((".yaml", ".yml")) else os.path.join(ROOT, "experiments", f"{name}.yaml")


def list_profiles() -> list[str]:
    folder = os.path.join(ROOT, "experiments")
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))


def _read_profile(path: str) -> tuple[dict, dict, dict, dict]:
    """(spec, defaults, grid, overrides) of a profile file, with its keys and shapes checked."""
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    where = f"profile {os.path.basename(path)}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {sorted(PROFILE_KEYS)}")
    unknown = sorted(set(spec) - PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(PROFILE_KEYS)}")
    parts = {key: spec.get(key) or {} for key in ("defaults", "grid", "overrides")}
    for key, value in parts.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
    if spec.get("base"):
        base_path = profile_path(str(spec["base"]))
        if not os.path.isfile(base_path) or os.path.abspath(base_path) == os.path.abspath(path):
            raise ConfigError(f"{where}: base {spec['base']!r} is not another profile; valid: {', '.join(list_profiles())}")
        _, b_defaults, b_grid, b_overrides = _read_profile(base_path)
        parts = {"defaults": {**b_defaults, **parts["defaults"]}, "grid": {**b_grid, **parts["grid"]},
                 "overrides": {k: {**b_overrides.get(k, {}), **parts["overrides"].get(k, {})}
                               for k in {**b_overrides, **parts["overrides"]}}}
    bad = sorted(set(parts["grid"]) - GRID_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown grid key(s) {bad}; valid grid keys: {sorted(GRID_KEYS)}")
    return spec, parts["defaults"], parts["grid"], parts["overrides"]


def load_profile(name: str, results_root: str | None = None) -> Profile:
    """Expand ``experiments/<name>.yaml`` into validated RunConfigs with their run directories."""
    path = profile_path(name)
    if not os.path.isfile(path):
        raise ConfigError(f"unknown profile {name!r}; valid profiles: {', '.join(list_profiles())}")
    spec, defaults, grid, overrides = _read_profile(path)
    where = f"profile {os.path.basename(path)}"
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    seeds = axes.get("seed", [defaults.get("seed", 0)])
    # grid axes beyond backbone/dataset/variant/seed that vary are part of the run directory name
    extra_axes = [k for k, v in axes.items() if len(v) > 1 and k not in ("backbone", "dataset", "variant", "seed",
                                                                           "label_mode")]
    prof_name = os.path.splitext(os.path.basename(path))[0]
    root = results_root or os.path.join(ROOT, "results")
    cases = _cases(spec.get("cases"), where)
    runs = []
    for combo in itertools.product(*axes.values()):
        grid_params = dict(zip(axes, combo))
        for case, pinned in cases.items():
            if any(k in grid_params and grid_params[k] != v for k, v in pinned.items()):
                continue  # the case pins a grid axis to another value (e.g. variant: elastic)
            runs.append(_case_run({**defaults, **grid_params, **pinned}, case, cases, overrides, where,
                                  os.path.join(root, prof_name), len(seeds) > 1, extra_axes))
    known = {r.backbone for r in runs} | {r.run_id() for r in runs}
    for key, value in overrides.items():  # a typo in a key would otherwise be silently ignored
        if key not in known:
            raise ConfigError(f"{where}: overrides key {key!r} is neither a backbone nor a run id of the grid; "
                              f"valid: {sorted(known)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: overrides for {key!r} must be a mapping of parameters")
    ids = [r.output_dir for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: two runs of the grid share a run directory; vary only grid axes")
    return Profile(prof_name, str(spec.get("description", "")), runs, bool(spec.get("requires_gpu", False)),
                   _study(spec.get("study"), where))


def _study(study, where: str) -> dict | None:
    """A profile's ``study``: the notebook (``notebooks/<name>.ipynb``) that ./run_all.sh runs once
    after the grid's runs, and its parameters."""
    if study is None:
        return None
    if not isinstance(study, dict) or set(study) - STUDY_KEYS or not isinstance(study.get("notebook"), str):
        raise ConfigError(f"{where}: 'study' must be a mapping with 'notebook' (a name under notebooks/) and "
                          f"optionally 'parameters' (a mapping), got {study!r}")
    path = os.path.join(ROOT, "notebooks", f"{study['notebook']}.ipynb")
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: study notebook {study['notebook']!r} not found: expected {os.path.relpath(path, ROOT)}")
    params = study.get("parameters") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: study 'parameters' must be a mapping, got {type(params).__name__}")
    return {"notebook": path, "parameters": params}


def _case_run(params: dict, case: str, cases: dict, overrides: dict, where: str, folder: str, with_seed: bool,
              extra_axes: list[str]) -> RunConfig:
    """One run of the grid: its parameters with the overrides, its directory under ``folder``
    (the id, the varying extra axes, the case), ``refinery_run: @<case>`` resolved."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    ident = RunConfig(**{k: v for k, v in params.items() if k in fields})  # not validated yet: only its id
    extra = {**overrides.get(ident.backbone, {}), **overrides.get(ident.run_id(), {})}
    name = ident.run_id(with_seed=with_seed)
    name += "".join(f"__{k}-{str(params[k]).replace(',', '+').replace(' ', '')}" for k in extra_axes)
    ref = str(params.get("refinery_run", ""))
    if ref.startswith("@"):  # @<case>: that case's run of the same grid point
        if ref[1:] not in cases or list(cases).index(ref[1:]) >= list(cases).index(case):
            raise ConfigError(f"{where}: case {case!r}: refinery_run {ref!r} must name an earlier case; "
                              f"cases: {list(cases)}")
        params["refinery_run"] = _repo_path(os.path.join(folder, f"{name}__{ref[1:]}"))
    cfg = _checked({**params, **extra}, f"{where}{' (with its overrides)' if extra else ''}")
    cfg.output_dir = os.path.join(folder, name + (f"__{case}" if case else ""))
    return cfg


def _cases(cases, where: str) -> dict[str, dict]:
    """A profile's ``cases``: named parameter sets crossed with the grid (each run directory ends in
    ``__<case>``); a case that pins a grid axis (``variant: elastic``) runs only at that value.
    Without cases, one unnamed case."""
    if cases is None:
        return {"": {}}
    if not isinstance(cases, dict) or not cases or not all(isinstance(v, dict) or v is None for v in cases.values()):
        raise ConfigError(f"{where}: 'cases' must map case names to parameter mappings, got {cases!r}")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for name, params in cases.items():
        bad = sorted(set(params or {}) - fields)
        if bad or not str(name).replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{where}: case {name!r}: a name of letters, digits, - and _, and RunConfig "
                              f"parameters (unknown: {bad})")
    return {str(k): dict(v or {}) for k, v in cases.items()}


def _repo_path(path: str) -> str:
    """``path`` relative to the repo when inside it (no machine paths in params.yaml)."""
    rel = os.path.relpath(os.path.abspath(path), ROOT)
    return path if rel.startswith("..") else rel


def _checked(params: dict, where: str) -> RunConfig:
    try:
        return RunConfig.from_dict(params)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


# ---------------------------------------------------------------- the notebook's parameters cell
def _type_name(f) -> str:
    return typing.get_type_hints(RunConfig)[f.name].__name__


def parameters_cell_source() -> str:
    """The experiment notebook's ``parameters`` cell, generated from RunConfig."""
    lines = ["# Parameters (generated from elastic_lib.config.RunConfig by `python -m elastic_lib.config "
             "--write-notebook`; edit RunConfig, not this cell).",
             "# papermill overrides any of these (-p name value); run_all.sh passes a profile's values."]
    for f in dataclasses.fields(RunConfig):
        default = json.dumps(f.default) if isinstance(f.default, str) else repr(f.default)
        lines.append(f"{f.name}: {_type_name(f)} = {default}  # {f.metadata['doc']}")
    return "\n".join(lines)


def _parameters_cell(nb: dict) -> dict:
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ConfigError(f"{NOTEBOOK} must have exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def notebook_parameters_source(path: str = NOTEBOOK) -> str:
    with open(path) as f:
        return "".join(_parameters_cell(json.load(f))["source"])


def write_notebook_parameters(path: str = NOTEBOOK) -> bool:
    """Rewrite the notebook's parameters cell from RunConfig; True if it changed."""
    with open(path) as f:
        nb = json.load(f)
    cell = _parameters_cell(nb)
    new = parameters_cell_source()
    if "".join(cell["source"]) == new:
        return False
    cell["source"] = new.splitlines(keepends=True)
    with open(path, "w") as f:
        f.write(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m elastic_lib.config", description="RunConfig tools")
    ap.add_argument("--write-notebook", action="store_true", help="regenerate the notebook's parameters cell")
    ap.add_argument("--check-notebook", action="store_true", help="exit 1 if the parameters cell is stale")
    a = ap.parse_args(argv)
    if a.write_notebook:
        print("rewrote" if write_notebook_parameters() else "unchanged", os.path.relpath(NOTEBOOK, ROOT))
    elif a.check_notebook and notebook_parameters_source() != parameters_cell_source():
        print(f"{os.path.relpath(NOTEBOOK, ROOT)}: parameters cell differs from RunConfig; run "
              "python -m elastic_lib.config --write-notebook", file=sys.stderr)
        return 1
    else:
        print(parameters_cell_source())
    return 0


if __name__ == "__main__":
    sys.exit(main())
