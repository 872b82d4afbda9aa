"""RunConfig (one experiment = one backbone x dataset x variant x seed) and profiles.

A profile (``experiments/<name>.yaml``) is a grid of runs::

    description: ...
    defaults: {dataset: digits, image_size: 32, ...}       # any RunConfig field
    grid: {backbone: [...], dataset: [...], variant: [elastic, baseline], seed: [0]}
    overrides: {resnet50: {learning_rate: 0.05}}            # per backbone (or per run id)

Every key and type is checked once, up front, with errors that name the bad value and the
valid ones.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import typing
from dataclasses import dataclass, field

import yaml

from .backbones import check_image_size, get_backbone
from .data import DATASETS, LABEL_MODES
from .early_exit import CRITERIA
from .exits import EXIT_CHOICES, FINAL_HEADS
from .training import LOSS_WEIGHT_SCHEMES

VARIANTS = {"elastic": "all", "baseline": "none"}
PROFILE_KEYS = {"description", "defaults", "grid", "overrides"}
GRID_KEYS = {"backbone", "dataset", "variant", "seed", "label_mode", "image_size", "loss_weights", "exits"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConfigError(ValueError):
    """A bad parameter, profile key or type; the message names it and the valid choices."""


@dataclass
class RunConfig:
    backbone: str = "mobilenet_0.75"   # registry name, see elastic_lib.list_backbones()
    dataset: str = "digits"            # digits | cifar10 | cifar100
    data_dir: str = ""                 # local folder with the CIFAR archive ("" = Keras cache / download)
    label_mode: str = "fine"           # cifar100: fine (100) | coarse (20)
    image_size: int = 32               # paper: 224
    variant: str = "elastic"           # elastic (exits) | baseline (no exits)
    exits: str = "all"                 # all | deeper_half | comma-separated layer names (elastic only)
    final_head: str = "flatten"        # flatten (original) | gap
    weights: str = ""                  # "" (random init) | imagenet | path to a weights file
    dropout: float = 0.2
    loss_weights: str = "uniform"      # uniform (paper) | depth | linear
    phase1_epochs: int = 1             # backbone frozen
    phase2_epochs: int = 6             # everything trainable
    batch_size: int = 32
    learning_rate: float = 0.01        # phase 1 (paper, pretrained: 1e-3)
    phase2_learning_rate: float = 0.01
    momentum: float = 0.9
    bn_momentum: float = 0.9           # 0 keeps Keras' 0.99; 0.9 for short from-scratch runs
    reduce_lr_patience: int = 5
    early_stopping_patience: int = 10
    min_lr: float = 1e-5
    val_fraction: float = 0.2
    limit_per_class: int = 0           # first N train images per class (0 = all)
    test_limit_per_class: int = 0      # first N test images per class (0 = all)
    augment: bool = False              # paper: no augmentation
    seed: int = 0
    target_drop_pct: float = 1.0       # early exit: allowed accuracy drop vs. the final output
    exit_criterion: str = "max_prob"   # dynamic exit for the latency run: max_prob | entropy
    latency_repeats: int = 20
    latency_images: int = 50
    compare_depth_of: str = ""         # e.g. densenet121: report this run's exit nearest its depth
    strategy: str = "default"          # default | mirrored (tf.distribute, multi-GPU)
    jit_compile: bool = False
    output_dir: str = ""               # run directory ("" = results/interactive/<run id>)
    write_done: bool = True            # False when run_all.sh writes DONE itself, after the notebook

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
        _choice("dataset", self.dataset, DATASETS)
        _choice("label_mode", self.label_mode, LABEL_MODES)
        _choice("variant", self.variant, tuple(VARIANTS))
        _choice("final_head", self.final_head, FINAL_HEADS)
        _choice("loss_weights", self.loss_weights, LOSS_WEIGHT_SCHEMES)
        _choice("exit_criterion", self.exit_criterion, CRITERIA)
        _choice("strategy", self.strategy, ("default", "mirrored"))
        try:
            get_backbone(self.backbone)
            check_image_size(self.backbone, self.image_size)
            if self.compare_depth_of:
                get_backbone(self.compare_depth_of)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.dataset != "digits" and self.data_dir and not os.path.isdir(os.path.expanduser(self.data_dir)):
            raise ConfigError(f"data_dir {self.data_dir!r} does not exist; point it at the folder holding the "
                              f"official {self.dataset} python archive")
        for name in ("phase1_epochs", "phase2_epochs", "limit_per_class", "test_limit_per_class", "latency_repeats",
                     "latency_images", "reduce_lr_patience", "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1 or self.learning_rate <= 0 or self.phase2_learning_rate <= 0:
            raise ConfigError("batch_size must be >= 1 and learning rates > 0")
        if self.weights not in ("", "imagenet") and not os.path.isfile(os.path.expanduser(self.weights)):
            raise ConfigError(f"weights file {self.weights!r} not found; use '' (random init), 'imagenet' or a file path")
        return self

    # ------------------------------------------------------------ derived
    @property
    def exit_spec(self):
        if self.variant == "baseline":
            return "none"
        return self.exits if self.exits in EXIT_CHOICES else [s.strip() for s in self.exits.split(",") if s.strip()]

    @property
    def weights_arg(self):
        return self.weights or None

    @property
    def dataset_label(self) -> str:
        return dataset_label(self.dataset, self.label_mode)

    def run_id(self, with_seed: bool = False) -> str:
        rid = f"{self.backbone}__{self.dataset_label}__{self.variant}"
        return rid + (f"__seed{self.seed}" if with_seed else "")

    def run_dir(self) -> str:
        return self.output_dir or os.path.join(ROOT, "results", "interactive", self.run_id())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def profile_path(name: str) -> str:
    return name if name.endswith((".yaml", ".yml")) else os.path.join(ROOT, "experiments", f"{name}.yaml")


def list_profiles() -> list[str]:
    folder = os.path.join(ROOT, "experiments")
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))


def load_profile(name: str, results_root: str | None = None) -> Profile:
    """Expand ``experiments/<name>.yaml`` into validated RunConfigs with their run directories."""
    path = profile_path(name)
    if not os.path.isfile(path):
        raise ConfigError(f"unknown profile {name!r}; valid profiles: {', '.join(list_profiles())}")
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    where = f"profile {os.path.basename(path)}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {sorted(PROFILE_KEYS)}")
    unknown = sorted(set(spec) - PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(PROFILE_KEYS)}")
    defaults = spec.get("defaults") or {}
    grid = spec.get("grid") or {}
    overrides = spec.get("overrides") or {}
    for key, value in (("defaults", defaults), ("grid", grid), ("overrides", overrides)):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
    bad = sorted(set(grid) - GRID_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown grid key(s) {bad}; valid grid keys: {sorted(GRID_KEYS)}")
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    seeds = axes.get("seed", [defaults.get("seed", 0)])
    # grid axes beyond backbone/dataset/variant/seed that vary are part of the run directory name
    extra_axes = [k for k, v in axes.items() if len(v) > 1 and k not in ("backbone", "dataset", "variant", "seed",
                                                                           "label_mode")]
    prof_name = os.path.splitext(os.path.basename(path))[0]
    root = results_root or os.path.join(ROOT, "results")
    runs = []
    for combo in itertools.product(*axes.values()):
        params = {**defaults, **dict(zip(axes, combo))}
        fields = {f.name for f in dataclasses.fields(RunConfig)}
        ident = RunConfig(**{k: v for k, v in params.items() if k in fields})  # not validated yet: only its id
        extra = {**overrides.get(ident.backbone, {}), **overrides.get(ident.run_id(), {})}
        cfg = _checked({**params, **extra}, f"{where}{' (with its overrides)' if extra else ''}")
        name = cfg.run_id(with_seed=len(seeds) > 1)
        name += "".join(f"__{k}-{str(params[k]).replace(',', '+').replace(' ', '')}" for k in extra_axes)
        cfg.output_dir = os.path.join(root, prof_name, name)
        runs.append(cfg)
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
    return Profile(prof_name, str(spec.get("description", "")), runs)


def _checked(params: dict, where: str) -> RunConfig:
    try:
        return RunConfig.from_dict(params)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None
