"""Shared fixtures. Environment first: TensorFlow must see it before it is imported."""

import elastic_lib

elastic_lib.setup_environment()  # before any test imports Keras: quiet logs, the backend from ELASTIC_BACKEND

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent
REFERENCE_DIR = TESTS_DIR / "reference"
# CI clones the repo next to shared/; users do not have it, so the CIFAR tests skip there.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_ARCHIVES = {
    "cifar10": Path("cifar10-subset") / "cifar-10-python.tar.gz",
    "cifar100": Path("cifar100-subset") / "cifar-100-python.tar.gz",
}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding the CIFAR subsets (shared/data beside the repo), or skip."""
    if not all((SHARED_DATA / rel).is_file() for rel in CIFAR_ARCHIVES.values()):
        pytest.skip(f"CIFAR subsets not found under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_batch(tmp_path_factory):
    """The tiny profile (``tests/tiny.py``: tiny_cnn elastic and baseline) run once by the real driver,
    aggregation included: (profile file, the root holding results/ and figures/, seconds it took).
    Shared read-only: tests copy it or compare their own batches of the same profile with it."""
    import time

    from tiny import run_batch, write_profile

    folder = tmp_path_factory.mktemp("tiny_batch")
    profile = write_profile(folder, "tiny")
    t0 = time.monotonic()
    out = run_batch(profile, folder)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return profile, folder, time.monotonic() - t0


@pytest.fixture(scope="session")
def mobilenet_elastic():
    """MobileNet-0.75 with every default exit, 32x32 input, 10 classes, briefly trained (plain
    Keras fit, 2 epochs on 256 digits) so that its exits' confidences differ. Shared read-only:
    tests must not train, recompile or change it."""
    import keras

    from elastic_lib.models.backbones import preprocess_input
    from elastic_lib.models.exits import build_elastic_model

    keras.utils.set_random_seed(0)
    model = build_elastic_model("mobilenet_0.75", num_classes=10, image_size=32, exits="all")
    for layer in model.layers:  # follow the batch statistics within a few steps
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.repeat(d.images[:256, :, :, None] * (255.0 / 16.0), 3, axis=-1).astype(np.float32)
    x = preprocess_input("mobilenet_0.75")(keras.ops.convert_to_numpy(keras.ops.image.resize(x, (32, 32))))
    y = d.target[:256]
    n = len(model.outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=["sparse_categorical_crossentropy"] * n)
    model.fit(x, [y] * n, batch_size=32, epochs=2, shuffle=False, verbose=0)
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(0)
