#!/usr/bin/env python3
"""What an interpreter lacks for the workbook: the requirements of a group of scripts/supported.txt
that are not installed or are installed at a version outside the supported range.

    python scripts/check_env.py --group run|lab|tests|gpu-check [--backend jax|torch|tensorflow]

prints one missing requirement a line on stdout (nothing when all are met: scripts/env.sh then
calls no pip at all) and says why on stderr. Standard library only (any Python >= 3.10); uses
`packaging` for the version ranges when it is installed, else a small comparison of its own
(release numbers, a/b/rc, post and dev releases; local versions such as +cpu are ignored).
--path DIR (repeatable) reads the installed distributions from DIR instead of sys.path
(tests/test_box_setup.py points it at folders of synthetic .dist-info entries).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path

SUPPORTED = Path(__file__).resolve().with_name("supported.txt")
BACKENDS = ("jax", "torch", "tensorflow")


def canonical(name: str) -> str:
    """PEP 503 name: PyYAML and pyyaml, ml_dtypes and ml-dtypes are the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- versions without `packaging`
_VERSION = re.compile(
    r"^v?(?:\d+!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|alpha|b|beta|rc|c|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:(?:[-_.]?(?:post|rev|r)[-_.]?(?P<post>\d*))|-(?P<post_implicit>\d+))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev>\d*))?"
    r"(?:\+[a-z0-9.]+)?$",
    re.IGNORECASE,
)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "rc": 2, "c": 2, "pre": 2, "preview": 2}
_SPEC = re.compile(r"^\s*(~=|===|==|!=|<=|>=|<|>)\s*([^\s,;]+)\s*$")


def version_key(version: str) -> tuple:
    """A sort key for a PEP 440 version (the common forms); ValueError for anything else."""
    m = _VERSION.match(version.strip())
    if not m:
        raise ValueError(f"not a version: {version!r}")
    release = [int(x) for x in m["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    post = m["post"] if m["post"] is not None else m["post_implicit"]
    if m["pre"]:
        pre = (_PRE_RANK[m["pre"].lower()], int(m["pre_n"] or 0))
    elif m["dev"] is not None and post is None:
        pre = (-1, 0)  # 1.0.dev1 < 1.0a1
    else:
        pre = (3, 0)  # a final release
    return (
        tuple(release),
        pre,
        -1 if post is None else int(post or 0),
        float("inf") if m["dev"] is None else int(m["dev"] or 0),
    )


def _release(version: str) -> list[int]:
    return [int(x) for x in _VERSION.match(version.strip())["release"].split(".")]


def _satisfies_one(version: str, op: str, target: str) -> bool:
    if op == "===":
        return version.strip() == target
    if op in ("==", "!=") and target.endswith(".*"):
        prefix = [int(x) for x in target[:-2].split(".")]
        mine = _release(version) + [0] * len(prefix)
        return (mine[: len(prefix)] == prefix) == (op == "==")
    if op in ("==", "!=") and "+" not in target:
        version = version.split("+")[0]
    v, t = version_key(version), version_key(target)
    if op == "~=":  # ~=2.2 means >=2.2, ==2.*
        prefix = _release(target)[:-1]
        return v >= t and (_release(version) + [0] * len(prefix))[: len(prefix)] == prefix
    if op == "<" and t[1:] == ((3, 0), -1, float("inf")) and v[0] == t[0]:
        return False  # PEP 440: <4 leaves out 4.0rc1 (a prerelease of 4)
    if op == ">" and t[2] == -1 and v[0] == t[0]:
        return False  # PEP 440: >1.0 leaves out 1.0.post1
    return {"==": v == t, "!=": v != t, ">=": v >= t, "<=": v <= t, ">": v > t, "<": v < t}[op]


def satisfies(version: str, specifier: str) -> bool:
    """Whether `version` is inside `specifier` (">=3.8,<4"; "" is anything). Prereleases count
    as installed: a range's job here is to catch what is too old or too new."""
    if not specifier.strip():
        return True
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        try:
            return SpecifierSet(specifier).contains(Version(version), prereleases=True)
        except InvalidVersion:
            pass
    except ImportError:
        pass
    return _fallback_satisfies(version, specifier)


def _fallback_satisfies(version: str, specifier: str) -> bool:
    for part in filter(None, specifier.split(",")):
        m = _SPEC.match(part)
        if not m:
            raise ValueError(f"cannot read the version range {specifier!r}")
        try:
            if not _satisfies_one(version, m[1], m[2]):
                return False
        except ValueError:
            return False  # an installed version we cannot read is not known to be in range
    return True


# ---------------------------------------------------------------- supported.txt
_REQ = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*?)\s*(?:;.*)?$")


def parse_requirement(text: str) -> tuple[str, str]:
    """("keras>=3.8,<4") -> ("keras", ">=3.8,<4"); extras and markers are dropped."""
    m = _REQ.match(text)
    if not m:
        raise ValueError(f"cannot read the requirement {text!r}")
    return m["name"], m["spec"].replace(" ", "")


def parse_supported(text: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The groups ({name: lines}, each group's own lines plus those of the groups it extends, in
    order) and what each group extends."""
    own: dict[str, list[str]] = {}
    extends: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        header = re.fullmatch(r"\[\s*([\w-]+)\s*(?::\s*([\w\s,-]*))?\]", line)
        if header:
            current = header[1]
            own.setdefault(current, [])
            extends[current] = [g.strip() for g in (header[2] or "").split(",") if g.strip()]
            continue
        if current is None:
            raise ValueError(f"a requirement before any [group]: {line!r}")
        own[current].append(line)
    return own, extends


def group_lines(text: str, group: str, backend: str | None = None) -> list[str]:
    """Every requirement line `group` needs (its own and those of the groups it extends), plus the
    backend's line of [backends] when `backend` is given."""
    own, extends = parse_supported(text)
    if group not in own or group == "backends":
        raise KeyError(f"no group {group!r} (groups: {', '.join(g for g in own if g != 'backends')})")
    lines: list[str] = []
    seen: set[str] = set()

    def add(g: str) -> None:
        if g in seen:
            return
        seen.add(g)
        for parent in extends.get(g, []):
            add(parent)
        lines.extend(ln for ln in own[g] if ln not in lines)

    add(group)
    if backend:
        mine = [ln for ln in own.get("backends", []) if canonical(parse_requirement(ln.split("|")[0])[0]) == backend]
        if not mine:
            raise KeyError(f"no line for the backend {backend!r} in [backends]")
        lines.extend(mine)
    return lines


# ---------------------------------------------------------------- what is installed
def installed_versions(paths: list[str] | None = None) -> dict[str, str]:
    """{canonical name: version} of the distributions on sys.path (or in `paths`); the first one
    found wins, as for imports."""
    found: dict[str, str] = {}
    dists = importlib.metadata.distributions(path=paths) if paths else importlib.metadata.distributions()
    for dist in dists:
        name = dist.metadata["Name"] if dist.metadata else None
        if name and canonical(name) not in found:
            found[canonical(name)] = dist.version
    return found


def problems(lines: list[str], installed: dict[str, str]) -> list[tuple[str, str]]:
    """(requirement to install, why) for every line not met by `installed`. A line with
    alternatives ("tensorflow>=2.16 | tensorflow-cpu>=2.16") is met by any of them; its first
    alternative is the one to install."""
    out = []
    for line in lines:
        alternatives = [a.strip() for a in line.split("|")]
        reasons = []
        for alt in alternatives:
            name, spec = parse_requirement(alt)
            have = installed.get(canonical(name))
            if have is None:
                reasons.append(f"{name}: not installed")
            elif not satisfies(have, spec):
                reasons.append(f"{name} {have} is out of the supported range {spec}")
            else:
                break
        else:
            out.append((alternatives[0], "; ".join(reasons)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", default="run", help="gpu-check, run, lab or tests (default run)")
    ap.add_argument("--backend", choices=BACKENDS, help="add the backend's line of [backends]")
    ap.add_argument("--supported", default=str(SUPPORTED), help="the ranges file (default scripts/supported.txt)")
    ap.add_argument("--path", action="append", help="read installed distributions from this folder instead")
    ap.add_argument("-q", "--quiet", action="store_true", help="no explanation on stderr")
    args = ap.parse_args(argv)
    try:
        lines = group_lines(Path(args.supported).read_text(), args.group, args.backend)
    except (KeyError, ValueError, OSError) as e:
        print(f"check_env: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    missing = problems(lines, installed_versions(args.path))
    for requirement, why in missing:
        print(requirement)
        if not args.quiet:
            print(f"[check_env] {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
