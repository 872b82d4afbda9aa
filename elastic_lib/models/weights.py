"""ImageNet weights for offline compute nodes: download once where there is internet, copy the
folder, point runs at it.

    python -m elastic_lib.models.weights download --profile paper --dir ~/elastic-weights   # or --backbones a,b
    ./run_all.sh --profile paper ...   with  weights_dir: ~/elastic-weights  in the profile (or -p in papermill)

``download`` builds each backbone's no-top model with ``weights="imagenet"`` (Keras downloads the
file into its cache) and saves its weights as ``<dir>/<backbone>_imagenet_notop.weights.h5``
(``control.registry.weights_file``), with ``MANIFEST.csv`` (file, bytes, sha256). A no-top convolutional
backbone's weights do not depend on the input size, so one file serves every ``image_size``. A run
with ``weights: imagenet`` and a ``weights_dir`` loads that file and never touches the network;
a missing file is a clear error naming this command.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
from typing import Callable

from elastic_lib.control.config import ConfigError
from elastic_lib.control.profiles import load_profile
from elastic_lib.control.registry import check_weights, weights_file
from elastic_lib.models.backbones import build_backbone

BUILD_SIZE = 224  # every registry backbone accepts it (resnet50_legacy needs >= 197)


def _imagenet_backbone(name: str):
    return build_backbone(name, (BUILD_SIZE, BUILD_SIZE, 3), "imagenet")


def profile_backbones(profile: str) -> list[str]:
    """The backbones of a profile's runs with ``weights: imagenet``, in grid order."""
    return list(dict.fromkeys(r.backbone for r in load_profile(profile).runs if r.weights == "imagenet"))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(
    backbones: list[str],
    folder: str,
    force: bool = False,
    build: Callable[[str], object] = _imagenet_backbone,
    out=sys.stdout,
) -> list[str]:
    """Save each backbone's ImageNet no-top weights into ``folder``; returns the files. ``build``
    (name -> Keras model with the weights loaded) is Keras' download by default."""
    for name in backbones:
        check_weights(name, "imagenet")  # unknown names and backbones without ImageNet weights fail before any download
    os.makedirs(folder, exist_ok=True)
    files = []
    for name in backbones:
        path = weights_file(folder, name)
        if os.path.isfile(path) and not force:
            print(f"{name}: {os.path.basename(path)} already there", file=out)
        else:
            print(f"{name}: downloading ImageNet weights ...", file=out, flush=True)
            tmp = path[: -len(".weights.h5")] + ".tmp.weights.h5"
            build(name).save_weights(tmp)
            os.replace(tmp, path)
            print(f"{name}: saved {os.path.basename(path)} ({os.path.getsize(path) / 1e6:.1f} MB)", file=out)
        files.append(path)
    rows = {}
    manifest = os.path.join(folder, "MANIFEST.csv")
    if os.path.isfile(manifest):
        with open(manifest) as f:
            rows = {r["file"]: r for r in csv.DictReader(f)}
    for path in files:
        rows[os.path.basename(path)] = {
            "file": os.path.basename(path),
            "bytes": os.path.getsize(path),
            "sha256": _sha256(path),
        }
    with open(manifest + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "bytes", "sha256"])
        w.writeheader()
        w.writerows(rows[k] for k in sorted(rows))
    os.replace(manifest + ".tmp", manifest)
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m elastic_lib.models.weights", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="save ImageNet no-top weights into a folder (needs internet)")
    which = d.add_mutually_exclusive_group(required=True)
    which.add_argument("--profile", help="every backbone of this profile that uses weights: imagenet")
    which.add_argument("--backbones", help="comma-separated registry names")
    d.add_argument("--dir", required=True, help="folder to fill (copy it to the offline nodes)")
    d.add_argument("--force", action="store_true", help="download again files that are there")
    a = ap.parse_args(argv)
    try:
        names = profile_backbones(a.profile) if a.profile else [b.strip() for b in a.backbones.split(",") if b.strip()]
        if not names:
            print(f"profile {a.profile!r} has no run with weights: imagenet; nothing to download", file=sys.stderr)
            return 2
        download(names, os.path.expanduser(a.dir), a.force)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        print(
            f"error: {type(err).__name__}: {err}\nThis command needs internet access to Keras' weight files "
            "(storage.googleapis.com); run it on a machine that has it and copy the folder.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
