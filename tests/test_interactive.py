"""The interactive path: templates are never written by use, outputs go to their own places,
notebooks open unmodified, results are readable by others, no machine paths in tracked files."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from elastic_lib.control import config, paths, results, templates

ROOT = Path(config.ROOT)


class FakeContentsManager:
    """What the hook uses of jupyter_server's FileContentsManager."""

    def __init__(self, root_dir):
        self.root_dir = str(root_dir)

    def _get_os_path(self, path):
        return os.path.join(self.root_dir, path.strip("/"))


@pytest.mark.parametrize("rel", templates.TEMPLATES + templates.STUDY_TEMPLATES)
def test_saving_a_template_from_jupyter_is_refused_with_the_way_out(rel, monkeypatch):
    from tornado import web

    monkeypatch.delenv(templates.EDIT_ENV, raising=False)
    with pytest.raises(web.HTTPError) as err:
        templates.refuse_template_save({"type": "notebook"}, rel, FakeContentsManager(ROOT))
    assert err.value.status_code == 403
    assert "template" in err.value.log_message and templates.PERSONAL_DIR in err.value.log_message
    # the same file reached from a server rooted elsewhere (notebooks/) is still the template
    with pytest.raises(web.HTTPError):
        templates.refuse_template_save({}, os.path.basename(rel), FakeContentsManager(ROOT / "notebooks"))


def test_personal_copies_and_deliberate_edits_are_saved(monkeypatch):
    monkeypatch.delenv(templates.EDIT_ENV, raising=False)
    templates.refuse_template_save({}, "notebooks/personal/elastic_experiment.ipynb", FakeContentsManager(ROOT))
    templates.refuse_template_save({}, "results/smoke/aggregate.ipynb", FakeContentsManager(ROOT))
    monkeypatch.setenv(templates.EDIT_ENV, "1")
    templates.refuse_template_save({}, templates.TEMPLATES[0], FakeContentsManager(ROOT))


def test_refresh_refuses_a_notebook_that_is_not_a_template(capsys):
    with pytest.raises(SystemExit) as exit_:
        templates.main(["refresh", "notebooks/nope.ipynb"])
    assert exit_.value.code == 2
    assert "not a template: notebooks/nope.ipynb" in capsys.readouterr().err


def test_jupyter_server_loads_the_hook_from_the_repo_config():
    """The server config that ./lab.sh (JUPYTER_CONFIG_PATH) loads names the hook, and it imports."""
    from jupyter_server.services.contents.manager import ContentsManager
    from traitlets.config import PyFileConfigLoader

    cfg = PyFileConfigLoader("jupyter_server_config.py", path=str(ROOT / "jupyter_config")).load_config()
    cm = ContentsManager(config=cfg)
    assert cm.pre_save_hook is templates.refuse_template_save
    assert (
        f"{ROOT}/jupyter_config"
        in subprocess.run(
            ["bash", "-c", "source scripts/env.sh >/dev/null && echo $JUPYTER_CONFIG_PATH"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout
    )


@pytest.mark.parametrize("rel", templates.TEMPLATES + templates.STUDY_TEMPLATES)
def test_templates_open_unmodified_in_this_environment(rel):
    """JupyterLab marks a notebook modified when the kernel it starts reports other metadata."""
    assert templates.kernel_metadata_mismatches(str(ROOT / rel)) == [], (
        "run `python -m elastic_lib.control.templates refresh` in this environment"
    )


def test_interactive_runs_and_aggregations_go_to_their_own_place(monkeypatch, tmp_path):
    from elastic_lib.analysis import aggregate

    monkeypatch.setenv(paths.INTERACTIVE_ENV, str(tmp_path))
    assert config.RunConfig().run_dir() == str(tmp_path / "mobilenet_0.75__digits__elastic")
    assert aggregate.output_dirs("smoke") == (
        str(tmp_path / "aggregate" / "smoke"),
        str(tmp_path / "aggregate" / "smoke" / "figures"),
    )
    assert aggregate.output_dirs("smoke", "results/smoke", "figures/smoke") == ("results/smoke", "figures/smoke")
    assert config.RunConfig(output_dir="results/smoke/x").run_dir() == "results/smoke/x"
    monkeypatch.delenv(paths.INTERACTIVE_ENV)
    assert config.interactive_dir() == str(ROOT / "results" / "interactive")
    assert "results/interactive/" in (ROOT / ".gitignore").read_text()


def test_lab_script_starts_jupyterlab_from_the_project_env():
    out = subprocess.run(["./lab.sh", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    import jupyterlab

    assert out.returncode == 0 and out.stdout.strip() == jupyterlab.__version__, out.stderr[-2000:]


def test_test_session_keeps_interactive_outputs_out_of_the_repo():
    """The root conftest points the notebooks' interactive place at a temporary folder."""
    assert not config.interactive_dir().startswith(str(ROOT))


def test_display_paths_never_show_the_machine(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.INTERACTIVE_ENV, str(tmp_path))
    assert paths.display_path(str(tmp_path / "run" / "a.csv")) == "$ELASTIC_INTERACTIVE_DIR/run/a.csv"
    assert paths.display_path(str(ROOT / "results" / "smoke")) == "results/smoke"
    monkeypatch.delenv(paths.INTERACTIVE_ENV)
    assert paths.display_path(str(ROOT / "results" / "interactive" / "r")) == "results/interactive/r"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_results_are_written_with_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert results.current_umask() == umask
        path = results.write_csv(str(tmp_path), "x.csv", pd.DataFrame({"a": [1]}))
        results.atomic_write_text(str(tmp_path / "DONE"), "ok\n")
    finally:
        os.umask(old)
    for p in (path, tmp_path / "DONE"):
        assert stat.S_IMODE(os.stat(p).st_mode) == mode, oct(os.stat(p).st_mode)


# where a machine keeps files (a home, a temporary folder, a checkout); results quote repo-relative paths
MACHINE_PATH = re.compile(rb"(?<![\w.])(/home/|/Users/|/root/|/work/|/tmp/|/private/|/var/folders/)")
RESULT_TEXT = (".md", ".csv", ".yaml", ".json", ".ipynb", ".svg", ".txt")


def test_no_tracked_file_holds_a_path_of_this_machine():
    """No tracked file holds this checkout's absolute path; the committed results, figures and
    benchmark reports hold no machine path at all (their paths are repo-relative)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    needle = str(ROOT).encode()
    holders, made, found = [], 0, {}
    for f in files.decode().split("\0"):
        if not (f and (ROOT / f).is_file()):
            continue
        data = (ROOT / f).read_bytes()
        if needle in data:
            holders.append(f)
        if f.split("/")[0] in ("results", "figures", "benchmarks") and os.path.splitext(f)[1] in RESULT_TEXT:
            made += 1
            if m := MACHINE_PATH.search(data):
                found[f] = m.group(0).decode()
    assert holders == [], f"absolute repo path {ROOT} in tracked files: {holders}"
    assert made > 100 and not found, found


def test_show_outputs_lists_every_file_by_kind(tmp_path, monkeypatch, capsys):
    from elastic_lib.analysis import show

    monkeypatch.setenv(paths.INTERACTIVE_ENV, str(tmp_path))
    run = tmp_path / "r"
    run.mkdir()
    for name in ("exits.csv", "history.csv", "a.png", "a.svg", "params.yaml", "DONE", ".tmp_x"):
        (run / name).write_text("")
    show.outputs(run_directory=str(run))
    assert capsys.readouterr().out.splitlines() == [
        "run_directory: $ELASTIC_INTERACTIVE_DIR/r/",
        "  other: DONE",
        "  figures: a.png, a.svg",
        "  CSVs: exits.csv, history.csv",
        "  parameters: params.yaml",
    ]


def test_wide_tables_are_shown_split(monkeypatch):
    from elastic_lib.analysis import show

    shown = []
    monkeypatch.setattr(show, "_display", shown.append)
    summary = pd.DataFrame(
        {
            "policy": ["final", "max_prob"],
            "threshold": [float("nan"), 0.9],
            "test_acc": [0.95, 0.94],
            "expected_kernel_macs": [1e6, 4e5],
        }
    )
    show.split(summary, "policy", ["threshold", "test_acc"], ["expected_kernel_macs"])
    assert [list(t.columns) for t in shown] == [["threshold", "test_acc"], ["expected_kernel_macs"]]
    assert list(shown[-1].index) == ["final", "max_prob"] and shown[0]["test_acc"].dtype == float
    lat = pd.DataFrame(
        {
            "output": ["exit01", "final", "dynamic(max_prob)"],
            "latency_ms": [0.3, 1.0, 0.6],
            "latency_std_ms": [0.1, 0.1, 0.1],
            "speedup_vs_final": [3.3, 1.0, 1.6],
            "flops_ratio_vs_final": [12.0, 1.0, 2.7],
            "threshold": [None, None, 0.9],
            "mean_exit": [None, None, 4.2],
            "n_images": [None, None, 30],
        }
    )
    show.latency(lat)
    per_output, dynamic = shown[-2], shown[-1]
    assert list(per_output.index) == ["exit01", "final"] and "threshold" not in per_output.columns
    assert list(dynamic.index) == ["dynamic(max_prob)"] and dynamic.loc["dynamic(max_prob)", "threshold"] == 0.9
    assert dynamic["n_images"].dtype.kind == "i"
