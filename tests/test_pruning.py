"""Channel pruning (elastic_lib.studies.pruning.channels) on the registry's VGG16 at 32x32 (random weights) and on
a narrow VGG of the same layer names for the whole-model schedules."""

import math
import os

import keras
import numpy as np
import pytest
from keras import layers

from elastic_lib.models import complexity
from elastic_lib.models.exits import build_elastic_model
from elastic_lib.studies.pruning import channels as pruning

LAYER = "block3_conv1"  # its producer block2_conv2 also feeds exit02 (through block2_pool)


@pytest.fixture(scope="module")
def vgg():
    keras.utils.set_random_seed(0)
    return build_elastic_model("vgg16", 10, 32, exits="all")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(160, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def samples(vgg, images):
    return pruning.sample(vgg, vgg, LAYER, images, points_per_image=10, seed=0)


def _kernel(model, name):
    return np.asarray(model.get_layer(name).kernel.numpy(), dtype=np.float64)


@pytest.mark.parametrize("rule", pruning.RULES)
@pytest.mark.parametrize("ratio", [1.5, 3.0, 4.0])
def test_each_rule_keeps_exactly_the_asked_number_of_channels(vgg, images, rule, ratio):
    pruned, info = pruning.prune_layer(vgg, LAYER, ratio, rule, images, points_per_image=4)
    keep = math.ceil(128 / ratio)
    assert info["kept"] == keep and info["channels"] == 128
    assert pruned.get_layer("block2_conv2").filters == keep
    assert tuple(pruned.get_layer(LAYER).kernel.shape) == (3, 3, keep, 256)
    assert tuple(pruned.get_layer("exit_block2_pool_softmax").kernel.shape) == (keep, 10)
    # everything else keeps its shape
    for name in ("block2_conv1", "block3_conv2", "exit_block3_pool_softmax", "final_softmax"):
        assert pruned.get_layer(name).kernel.shape == vgg.get_layer(name).kernel.shape
    assert pruned.predict(images[:4], verbose=0)[-1].shape == (4, 10)


@pytest.mark.parametrize("rule", pruning.RULES)
def test_at_ratio_1_the_pruned_model_gives_the_original_outputs(vgg, images, rule):
    pruned, info = pruning.prune_layer(vgg, LAYER, 1.0, rule, images, points_per_image=2)
    assert pruned is not vgg and info["kept"] == 128  # a rebuilt model, not the same object
    for a, b in zip(vgg.predict(images[:16], verbose=0), pruned.predict(images[:16], verbose=0)):
        np.testing.assert_array_equal(a, b)


def test_reconstruction_is_no_worse_than_the_sparse_vector_at_the_same_selection(vgg, samples):
    kernel = _kernel(vgg, LAYER)
    for keep in (96, 64, 32):
        kept, beta = pruning.lasso_select(samples, kernel, keep)
        assert len(kept) == keep
        sparse = kernel[:, :, kept, :] * beta[kept][None, None, :, None]
        rebuilt = pruning.reconstruct(samples, kept, kernel.shape)
        e_sparse = pruning.response_error(samples, kept, sparse)
        e_rebuilt = pruning.response_error(samples, kept, rebuilt)
        assert e_rebuilt <= e_sparse and e_rebuilt < 0.9 * e_sparse
        # the moment-based error equals the error computed point by point
        direct = np.einsum("pklc,klcn->pn", samples.x[..., kept], rebuilt)
        ref = ((samples.y - direct) ** 2).sum() / (samples.y**2).sum()
        assert e_rebuilt == pytest.approx(ref, rel=1e-6, abs=1e-12)


def test_samples_target_is_the_original_consumer_response(vgg, images, samples):
    """y at a sampled point = the consumer's pre-activation output minus its bias, computed by Keras."""
    pre = keras.Model(vgg.inputs, vgg.get_layer(LAYER).input).predict(images[:1], verbose=0)
    conv = vgg.get_layer(LAYER)
    out = keras.ops.convert_to_numpy(keras.ops.conv(pre, conv.kernel, padding="same"))[0]
    rng = np.random.default_rng(0)  # the same draw as sample(): first image's 10 positions
    flat = rng.choice(8 * 8, 10, replace=False)
    np.testing.assert_allclose(samples.y[:10], out[flat // 8, flat % 8], rtol=1e-4, atol=1e-4)


def test_lasso_finds_the_channels_that_carry_the_response(vgg, samples):
    """Scale down the input activations of every channel but 20 spread live ones (as if they
    barely fired): LASSO picks those 20, whatever the weights' scale (its weights are normalised
    per channel, He et al. eq. 3); first_k (the first 20) does not, and rebuilds the response
    far worse."""
    kernel = _kernel(vgg, LAYER)
    alive = np.flatnonzero((samples.x**2).sum(axis=(0, 1, 2)) > 0)  # ReLU channels that ever fire here
    assert len(alive) >= 40
    strong = alive[:: len(alive) // 20][:20]
    weak = np.setdiff1d(np.arange(128), strong)
    x = samples.x.copy()
    x[..., weak] *= 1e-3
    s = pruning.Samples(x, np.einsum("pklc,klcn->pn", x, kernel))
    kept, _ = pruning.select("reconstruct", s, kernel * np.linspace(0.2, 5, 128)[None, None, :, None], 20)
    np.testing.assert_array_equal(kept, strong)
    first, w_first = pruning.select("first_k", s, kernel, 20)
    np.testing.assert_array_equal(first, np.arange(20))
    assert pruning.response_error(s, first, w_first) > 10 * pruning.response_error(
        s, kept, pruning.reconstruct(s, kept, kernel.shape)
    )


def test_max_response_keeps_the_producer_filters_with_the_largest_l1_norm(vgg, samples):
    kernel = _kernel(vgg, LAYER)
    producer = _kernel(vgg, "block2_conv2").copy()
    big = np.array([5, 17, 40, 99, 127])
    producer[..., big] *= 10.0
    kept, _ = pruning.select("max_response", samples, kernel, 5, producer_kernel=producer)
    np.testing.assert_array_equal(kept, big)
    with pytest.raises(ValueError, match="producer"):
        pruning.select("max_response", samples, kernel, 5)


def test_the_pruned_model_is_smaller_by_the_walker(vgg, images):
    pruned, _ = pruning.prune_layer(vgg, LAYER, 2.0, "first_k", images, points_per_image=2)
    before, after = (complexity.layer_costs(m) for m in (vgg, pruned))
    for name in ("block2_conv2", LAYER):  # both layers' kernel MACs fall by the ratio
        assert before[name].kernel_macs / after[name].kernel_macs == pytest.approx(2.0, rel=0.01)
    assert complexity.model_complexity(pruned)["total_params"] < complexity.model_complexity(vgg)["total_params"]


def test_bad_requests_are_refused_early(vgg, images, samples):
    with pytest.raises(ValueError, match="unknown pruning rule"):
        pruning.select("random", samples, _kernel(vgg, LAYER), 10)
    with pytest.raises(ValueError, match="speed-up ratio must be >= 1"):
        pruning.prune_layer(vgg, LAYER, 0.5, "first_k", images)
    with pytest.raises(ValueError, match="cannot be pruned"):
        pruning.producer_of(vgg, "block1_conv1")
    with pytest.raises(ValueError, match="no layer"):
        pruning.producer_of(vgg, "conv4_2")
    with pytest.raises(ValueError, match="unknown schedule"):
        pruning.prune_model(vgg, "x3", images)


def _narrow_vgg(num_classes=10, size=32):
    """VGG16's layer names and topology, 4-16 filters: the whole-model schedules in seconds."""
    widths = {1: 8, 2: 8, 3: 12, 4: 16, 5: 16}
    x = inp = keras.Input((size, size, 3))
    outputs = []
    for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
        for i in range(1, n + 1):
            x = layers.Conv2D(widths[b], 3, padding="same", activation="relu", name=f"block{b}_conv{i}")(x)
        x = layers.MaxPooling2D(name=f"block{b}_pool")(x)
        if b < 5:
            e = layers.GlobalAveragePooling2D(name=f"exit_block{b}_pool_pool")(x)
            e = layers.Dropout(0.2, name=f"exit_block{b}_pool_dropout")(e)
            outputs.append(layers.Dense(num_classes, activation="softmax", name=f"exit_block{b}_pool_softmax")(e))
    x = layers.Flatten(name="final_flatten")(x)
    outputs.append(layers.Dense(num_classes, activation="softmax", name="final_softmax")(x))
    return keras.Model(inp, outputs)


@pytest.mark.slow  # fine-tunes the pruned model
@pytest.mark.parametrize("schedule", sorted(pruning.SCHEDULES))
def test_whole_model_schedules_keep_their_fractions_and_leave_conv5_alone(images, schedule):
    keras.utils.set_random_seed(1)
    model = _narrow_vgg()
    pruned, log = pruning.prune_model(model, schedule, images[:64], points_per_image=8, joint_epochs=1)
    keep = pruning.SCHEDULES[schedule].keep
    for name in pruning.SCHEDULES[schedule].producers:
        assert pruned.get_layer(name).filters == math.ceil(keep * model.get_layer(name).filters - 1e-9)
    for name in ("block5_conv1", "block5_conv2", "block5_conv3"):
        assert pruned.get_layer(name).filters == 16
    assert pruned.get_layer("block5_conv1").kernel.shape[2] == math.ceil(keep * 16)
    joints = log[log["step"] == "joint"]
    assert len(joints) == (10 if pruning.SCHEDULES[schedule].order == "iterative" else 1)
    assert np.isfinite(joints["feature_rel_mse"]).all()
    assert (log[log["step"] == "reconstruct"]["kept"].to_numpy() > 0).all()
    ev = pruning.evaluate(pruned, images[:32], np.arange(32) % 10)
    assert list(ev["output"]) == ["exit01", "exit02", "exit03", "exit04", "final"]
    assert (ev["kernel_macs"] < complexity.model_complexity(model)["kernel_macs"]).all()


def test_whole_model_table_has_the_study_layout():
    import pandas as pd

    def ev(t1, t3, t5):
        return pd.DataFrame(
            [
                {
                    "top1_correct": t1,
                    "top3_correct": t3,
                    "top5_correct": t5,
                    "top1_err": 1 - t1 / 100,
                    "top3_err": 1 - t3 / 100,
                    "top5_err": 1 - t5 / 100,
                    "params": 10,
                    "kernel_macs": 100,
                }
            ]
        )

    t = pruning.whole_model_table([("ours, no fine-tune", "x2", ev(60, 80, 90))], ev(70, 85, 95))
    assert list(t.columns[:11]) == [
        "model",
        "ratio",
        "top1",
        "top3",
        "top5",
        "top1-e",
        "top3-e",
        "top5-e",
        "top1-e-inc",
        "top3-e-inc",
        "top5-e-inc",
    ]
    assert t.iloc[1]["top1-e-inc"] == pytest.approx(0.1) and t.iloc[1]["top5-e"] == pytest.approx(0.1)


@pytest.mark.slow
def test_pruning_profile_end_to_end_through_the_driver(tmp_path):
    """./run_all.sh on a tiny pruning profile: trains VGG16 baseline and elastic (digits, 32 px,
    1 epoch), aggregates, then runs notebooks/channel_pruning.ipynb, which writes the study's
    tables and figure; a second call without --study does not redo it, --study does."""
    import subprocess
    import sys

    import pandas as pd
    import yaml

    from elastic_lib.control.paths import ROOT
    from elastic_lib.control.profiles import load_profile

    spec = yaml.safe_load(open(f"{ROOT}/experiments/pruning.yaml"))
    assert load_profile("pruning").study["parameters"] == spec["study"].get("parameters", {})
    spec["defaults"] |= dict(
        dataset="digits",
        limit_per_class=6,
        test_limit_per_class=3,
        phase1_epochs=1,
        phase2_epochs=1,
        latency_repeats=0,
        data_dir="",
    )
    spec["overrides"] = {k.replace("__cifar10__", "__digits__"): v for k, v in (spec.get("overrides") or {}).items()}
    # the smallest study that runs every path: one layer, one ratio (ratio 1 is the unit tests'), every
    # rule, one whole-model schedule with its joint step and fine-tuning
    spec["study"]["parameters"] = dict(
        layers=["block4_conv2"],
        ratios=[2.0],
        schedules=["x2"],
        sample_images=12,
        points_per_image=4,
        joint_epochs=1,
        fine_tune_epochs=1,
    )
    prof = tmp_path / "prune.yaml"
    prof.write_text(yaml.safe_dump(spec))
    cmd = [
        sys.executable,
        "-m",
        "elastic_lib.control.batch",
        "--profile",
        str(prof),
        "--results-root",
        str(tmp_path / "results"),
        "--figures-root",
        str(tmp_path / "figures"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1500)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "study channel_pruning" in out.stdout
    tables = tmp_path / "results" / "prune"
    single = pd.read_csv(tables / "single_layer.csv")
    assert len(single) == 4 and set(single["rule"]) == set(pruning.RULES)
    assert set(single[single["ratio"] == 2.0]["kept"]) == {256}
    whole = pd.read_csv(tables / "whole_model.csv", keep_default_na=False)
    assert list(whole["model"].unique()) == ["original", "ours, no fine-tune", "ours, fine-tuned"]
    assert set(whole["run"]) == {"vgg16__digits__baseline", "vgg16__digits__elastic"}
    exits = pd.read_csv(tables / "exits_before_after.csv")
    assert list(exits["output"]) == ["exit01", "exit02", "exit03", "exit04", "exit05", "final"]
    assert list(exits.columns) == ["output", "unpruned", "x2", "x2 fine-tuned"]
    md = (tables / "pruning_study.md").read_text()
    assert "conv4_2" in md and "[2.066]" not in md and "[1.05]" in md  # the study's 2.0x value beside ours
    assert (tmp_path / "figures" / "prune" / "single_layer_error_increase.png").exists()
    assert (tables / "channel_pruning.ipynb").exists()

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and "study channel_pruning" not in again.stdout, again.stdout + again.stderr


def test_committed_pruning_study_is_complete_and_matches_its_runs():
    """results/pruning holds the study's tables and figures/pruning its figure; the study's unpruned
    models (reloaded from the runs' weights and evaluated by the study) have the same final-output
    top-1 error as each training run's own summary.csv, and at ratio 1 every rule changes nothing."""
    import pandas as pd

    from elastic_lib.control.paths import ROOT

    tables, figures = os.path.join(ROOT, "results", "pruning"), os.path.join(ROOT, "figures", "pruning")
    for name in (
        "pruning_study.md",
        "single_layer.csv",
        "rule_ranking.csv",
        "whole_model.csv",
        "whole_model_outputs.csv",
        "exits_before_after.csv",
        "channel_pruning.ipynb",
    ):
        assert os.path.isfile(os.path.join(tables, name)), f"missing {name}: ./run_all.sh --profile pruning --study"
    assert os.path.isfile(os.path.join(figures, "single_layer_error_increase.png"))
    single = pd.read_csv(os.path.join(tables, "single_layer.csv"))
    assert set(single["rule"]) == set(pruning.RULES)
    assert (single[single["ratio"] == 1.0]["top1_err_inc_pct"] == 0).all()
    evals = pd.read_csv(os.path.join(tables, "whole_model_outputs.csv"), keep_default_na=False)
    original = evals[(evals["model"] == "original") & (evals["output"] == "final")]
    assert set(original["run"]) == {"vgg16__cifar10__baseline", "vgg16__cifar10__elastic"}
    for _, row in original.iterrows():
        summary = pd.read_csv(os.path.join(tables, row["run"], "summary.csv")).iloc[0]
        assert 100 * row["top1_err"] == pytest.approx(summary["final_top1_err_pct"], abs=0.01), row["run"]
