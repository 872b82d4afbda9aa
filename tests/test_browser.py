"""A real browser on the interactive path: JupyterLab (this env, the repo's jupyter_config/) in
headless Chromium opens the experiment template unmodified, runs all of it without errors and
renders its figures, and never writes the template: the server reports it read-only, so autosave
skips it silently and Ctrl+S offers "Save as"; a save that reaches the server anyway (REST API) is
refused by the pre-save hook with a message naming the template and the personal-copy folder.

Needs Debian's Chromium and its driver (`apt-get install chromium chromium-driver`) and selenium
(requirements.txt); skips without them. `pytest -s tests/test_browser.py` prints the timings; the
screenshots and the server/kernel log are left in the test's tmp_path.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/elastic_experiment.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")
INSTALL = "install them with `apt-get install chromium chromium-driver`"

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -r requirements.txt)"
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason=f"chromium or chromedriver not found: {INSTALL}"
)

RUN_ALL_TIMEOUT_S = 600
AUTOSAVE_S = 3
# Lab's own settings for the test: no news/update prompts (offline); autosave on, every few seconds,
# so that the test sees it skip the (read-only) template.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": True, "autosaveInterval": AUTOSAVE_S},
}


# ----------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(tmp: Path) -> dict:
    """This env's Python first; repo's jupyter_config/ first; everything Jupyter writes in tmp."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "jupyter_config"), env.get("JUPYTER_CONFIG_PATH")])
    )
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        IPYTHONDIR=str(tmp / "ipython"),
        ELASTIC_INTERACTIVE_DIR=str(tmp / "interactive"),
        TF_ENABLE_ONEDNN_OPTS="0",
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_BACKEND="tensorflow",
        PYTHONHASHSEED="0",
    )
    env.pop("ELASTIC_EDIT_TEMPLATES", None)
    return env


def _api(server, path: str, method: str = "GET", body: dict | None = None):
    req = urllib.request.Request(
        f"{server['url']}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {server['token']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


def _log_tail(server, n: int = 3000) -> str:
    return Path(server["log"]).read_text(errors="replace")[-n:]


def _stop(proc, api):
    """Shut the kernels down, stop the server, then kill whatever of its process tree is left."""
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    try:
        for kernel in api("/api/kernels"):
            api(f"/api/kernels/{kernel['id']}", "DELETE")
    except Exception:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def lab_server(tmp_path):
    """JupyterLab from this env, rooted at the repo; yields {url, token, log}; always stopped."""
    settings = tmp_path / "lab-settings"
    for rel, values in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    server = {"url": f"http://127.0.0.1:{port}", "token": token, "log": tmp_path / "server.log"}
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        "--ServerApp.allow_root=True",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
    ]  # window.jupyterapp: the notebook model, for diagnostics
    t0 = time.monotonic()
    with open(server["log"], "w") as log:
        proc = subprocess.Popen(cmd, env=_server_env(tmp_path), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"jupyter lab exited ({proc.returncode}):\n{_log_tail(server)}"
            try:
                _api(server, "/api/status")
                break
            except OSError:
                assert time.monotonic() < deadline, f"jupyter lab did not answer in 120 s:\n{_log_tail(server)}"
                time.sleep(0.25)
        server["start_s"] = time.monotonic() - t0
        yield server
    finally:
        _stop(proc, lambda path, method="GET": _api(server, path, method))


# ----------------------------------------------------------------------------- browser


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _prompts(driver) -> list[str]:
    """The code cells' input prompts: '[3]:' executed, '[*]:' queued or running, '[ ]:' not run."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))"
        ".map(e => e.textContent.trim())"
    )


def _kernel_idle(driver, server) -> bool:
    """Idle both for the server (REST) and for Lab's kernel indicator."""
    sessions = [s for s in _api(server, "/api/sessions") if s["path"] == NOTEBOOK]
    if not sessions or sessions[0]["kernel"]["execution_state"] != "idle":
        return False
    return bool(driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"))


def _wait_kernel_info_applied(driver):
    """Lab writes the kernel's metadata into the notebook when its kernel_info reply arrives."""
    driver.set_script_timeout(60)
    driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.info
            .then(() => setTimeout(() => done(true), 0));""")


def _click_menu(driver, menu: str, command: str):
    """Open a top menu by its label and click the item bound to a command (data-command)."""
    bar = WebDriverWait(driver, 30).until(
        EC.element_to_be_clickable(
            (By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')][.//div[normalize-space()='{menu}']]")
        )
    )
    bar.click()
    WebDriverWait(driver, 10).until(
        EC.element_to_be_clickable((By.CSS_SELECTOR, f".lm-Menu li.lm-Menu-item[data-command='{command}']"))
    ).click()


def _tab_is_dirty(driver) -> bool:
    tab = driver.find_element(By.CSS_SELECTOR, "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
    return "jp-mod-dirty" in tab.get_attribute("class").split()


def _metadata_changes(driver) -> str:
    """What Lab changed in the notebook metadata compared with the file on disk."""
    lab = driver.execute_script("return window.jupyterapp.shell.currentWidget.context.model.toJSON().metadata")
    disk = json.loads((ROOT / NOTEBOOK).read_text())["metadata"]
    lines = []
    for key in sorted(set(lab) | set(disk)):
        if lab.get(key) != disk.get(key):
            lines.append(f"metadata.{key}: file {json.dumps(disk.get(key))} -> Lab {json.dumps(lab.get(key))}")
    return "\n".join(lines) or "(metadata identical; cells changed)"


def _error_outputs(driver) -> list[str]:
    """Error outputs of the notebook model, and rendered outputs showing a traceback (Lab renders
    errors like stderr, data-mime-type application/vnd.jupyter.stderr)."""
    model_errors = driver.execute_script("""
        const cells = window.jupyterapp.shell.currentWidget.context.model.toJSON().cells;
        return cells.flatMap(c => (c.outputs || []).filter(o => o.output_type === 'error')
                                                  .map(o => o.ename + ': ' + o.evalue));""")
    rendered = [
        e.text[:500]
        for e in driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
        if "Traceback (most recent call last)" in e.text
    ]
    return model_errors + rendered


def _figures(driver):
    return driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-RenderedImage img")


# ----------------------------------------------------------------------------- the test


@pytest.mark.slow
def test_template_runs_in_jupyterlab_and_is_never_saved(lab_server, browser, tmp_path):
    template = ROOT / NOTEBOOK
    before = template.read_bytes()
    user_runs = ROOT / "results" / "interactive"
    user_runs_before = sorted(os.listdir(user_runs)) if user_runs.is_dir() else []
    print(f"\n[browser] server up in {lab_server['start_s']:.1f} s")

    # open: the kernel starts, the notebook is not marked modified
    t0 = time.monotonic()
    browser.get(f"{lab_server['url']}/lab/tree/{NOTEBOOK}?reset&token={lab_server['token']}")
    WebDriverWait(browser, 120).until(
        lambda d: _prompts(d) and _kernel_idle(d, lab_server), "the notebook did not open with an idle kernel"
    )
    print(f"[browser] notebook open, kernel idle in {time.monotonic() - t0:.1f} s")
    _wait_kernel_info_applied(browser)
    assert not _tab_is_dirty(browser), "Lab marks the template modified on open:\n" + _metadata_changes(browser)

    # clear the stored outputs, so that counts and figures below are this run's; then run all
    _click_menu(browser, "Edit", "editmenu:clear-all")
    WebDriverWait(browser, 30).until(
        lambda d: set(_prompts(d)) == {"[ ]:"} and not _figures(d), "outputs were not cleared"
    )
    t0 = time.monotonic()
    _click_menu(browser, "Run", "runmenu:run-all")
    WebDriverWait(browser, RUN_ALL_TIMEOUT_S, poll_frequency=1).until(
        lambda d: (
            any(re.fullmatch(r"\[\d+\]:", p) for p in _prompts(d))
            and "[*]:" not in _prompts(d)
            and _kernel_idle(d, lab_server)
        ),
        f"Run All did not finish in {RUN_ALL_TIMEOUT_S} s",
    )
    print(f"[browser] run all cells in {time.monotonic() - t0:.1f} s")
    browser.save_screenshot(str(tmp_path / "lab.png"))

    assert not _error_outputs(browser), "cells raised errors:\n" + "\n".join(_error_outputs(browser))
    prompts = _prompts(browser)
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), f"code cells not executed: {prompts}"
    figures = _figures(browser)
    assert len(figures) >= 3, f"expected the notebook's figures, found {len(figures)} images"
    widths = [browser.execute_script("return arguments[0].naturalWidth", img) for img in figures]
    assert all(w > 0 for w in widths), f"figures that did not render (naturalWidth): {widths}"
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", figures[-1])
    figures[-1].screenshot(str(tmp_path / "figure.png"))
    browser.save_screenshot(str(tmp_path / "lab_figure.png"))
    print(f"[browser] {len(figures)} figures (naturalWidth {widths}); screenshots in {tmp_path}")
    interactive = tmp_path / "interactive"
    assert interactive.is_dir() and any(interactive.iterdir()), "the run wrote nothing to $ELASTIC_INTERACTIVE_DIR"
    assert (sorted(os.listdir(user_runs)) if user_runs.is_dir() else []) == user_runs_before, (
        "the run wrote to results/interactive instead of $ELASTIC_INTERACTIVE_DIR"
    )

    # the template is read-only for Lab: autosave skips it without a word, Ctrl+S says "Save as"
    assert _tab_is_dirty(browser)
    time.sleep(3 * AUTOSAVE_S)  # several autosave intervals with a modified notebook
    assert not browser.find_elements(By.CSS_SELECTOR, ".jp-Dialog"), "autosave raised a dialog"
    assert template.read_bytes() == before, f"autosave wrote {NOTEBOOK}"
    browser.find_element(By.CSS_SELECTOR, "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current").click()
    webdriver.ActionChains(browser).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    toast = WebDriverWait(browser, 30).until(
        lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".Toastify__toast") if "read-only" in e.text],
        "no read-only notice after Ctrl+S",
    )
    print(f"[browser] Ctrl+S: {toast[0]!r}")
    assert _tab_is_dirty(browser), "Lab shows the template as saved"

    # a save that reaches the server anyway is refused by the pre-save hook, with the way out
    model = json.loads(before)
    with pytest.raises(urllib.error.HTTPError) as refused:
        _api(lab_server, f"/api/contents/{NOTEBOOK}", "PUT", {"type": "notebook", "format": "json", "content": model})
    reason = json.loads(refused.value.read())["message"]
    print(f"[browser] REST save refused ({refused.value.code}): {reason!r}")
    assert refused.value.code == 403 and "template" in reason and "notebooks/personal" in reason, reason
    assert _api(lab_server, f"/api/contents/{NOTEBOOK}?content=0")["writable"] is False

    assert template.read_bytes() == before, f"{NOTEBOOK} was written"
