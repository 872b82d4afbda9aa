"""The two tracked notebooks are templates: papermill runs them, nbval compares against their
stored outputs. Nothing done by *using* them may write them:

- ``guarded_contents_manager`` is the Jupyter server's contents manager in ``jupyter_config/``
  (loaded by ``./lab.sh`` and by any ``jupyter lab`` started with ``scripts/env.sh`` sourced): it
  reports the templates as read-only, so JupyterLab never autosaves them and offers *Save As*;
  ``refuse_template_save``, its pre-save hook, refuses any save that still reaches the server
  (another client, the REST API) with a message that says how to make a personal copy.
  ``ELASTIC_EDIT_TEMPLATES=1`` lifts both for a deliberate edit.
- ``kernel_metadata_mismatches`` checks that the templates' kernelspec and language metadata are
  what this environment's kernel reports, so JupyterLab does not mark them modified on open.
- ``python -m elastic_lib.control.templates refresh`` re-executes the templates in place (their stored
  outputs are nbval's reference), with every run output in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from elastic_lib.control.paths import INTERACTIVE_ENV, PERSONAL_DIR, ROOT, STUDY_TEMPLATES, TEMPLATES

# study notebooks: run by ./run_all.sh (a profile's `study:`), guarded the same way, stored without
# outputs and not collected by nbval (tests run them end to end through the driver on a tiny profile)
EDIT_ENV = "ELASTIC_EDIT_TEMPLATES"


def template_paths() -> list[str]:
    return [os.path.realpath(os.path.join(ROOT, t)) for t in TEMPLATES + STUDY_TEMPLATES]


def is_template(os_path: str) -> bool:
    return os.path.realpath(os_path) in template_paths()


def is_guarded(os_path: str) -> bool:
    """A template, and no deliberate edit asked for (``ELASTIC_EDIT_TEMPLATES=1``)."""
    return os.environ.get(EDIT_ENV) != "1" and is_template(os_path)


def refuse_template_save(model=None, path: str = "", contents_manager=None, **_kwargs) -> None:
    """Jupyter server pre-save hook: refuse to overwrite a template (HTTP 403 with the reason)."""
    if contents_manager is None:
        return
    get_os_path = getattr(contents_manager, "_get_os_path", None)
    os_path = get_os_path(path) if get_os_path else os.path.join(contents_manager.root_dir, path)
    if is_guarded(os_path):
        from tornado import web

        name = os.path.basename(path)
        raise web.HTTPError(
            403,
            f"{name} is a template (run_all.sh and nbval use it), so it is not saved. "
            f"Keep your work in a personal copy: File > Save Notebook As... > "
            f"{PERSONAL_DIR}/{name} (git-ignored). To edit the template on purpose, "
            f"start JupyterLab with {EDIT_ENV}=1.",
        )


def guarded_contents_manager():
    """jupyter_server's default contents manager, with the templates reported read-only."""
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

    class TemplateGuardContentsManager(AsyncLargeFileManager):
        def is_writable(self, path):
            return not is_guarded(self._get_os_path(path)) and super().is_writable(path)

    return TemplateGuardContentsManager


def installed_kernel_metadata(kernel_name: str = "python3") -> dict:
    """What JupyterLab writes into a notebook's metadata when this env's kernel starts."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(kernel_name)
    v = sys.version_info
    return {
        "kernelspec": {"display_name": spec.display_name, "language": spec.language, "name": kernel_name},
        "language_info": {"name": "python", "version": f"{v.major}.{v.minor}.{v.micro}"},
    }


def kernel_metadata_mismatches(path: str) -> list[str]:
    """Differences between a notebook's stored kernel metadata and this environment's."""
    import nbformat

    meta = nbformat.read(path, as_version=4).metadata
    want = installed_kernel_metadata(meta.get("kernelspec", {}).get("name", "python3"))
    out = []
    for section, fields in want.items():
        for key, value in fields.items():
            have = meta.get(section, {}).get(key)
            if have != value:
                out.append(f"{section}.{key}: notebook has {have!r}, this environment {value!r}")
    return out


def refresh(names: list[str] | None = None, timeout_s: int = 900) -> list[str]:
    """Re-execute templates in place (cwd ``notebooks/``, as nbval runs them), every run output
    going to a temporary ``$ELASTIC_INTERACTIVE_DIR``; the kernel metadata set to this env's."""
    import nbformat
    from nbclient import NotebookClient

    done = []
    with tempfile.TemporaryDirectory(prefix="elastic-refresh-") as tmp:
        old = os.environ.get(INTERACTIVE_ENV)
        os.environ[INTERACTIVE_ENV] = tmp
        try:
            for rel in names or TEMPLATES:
                path = os.path.join(ROOT, rel)
                nb = nbformat.read(path, as_version=4)
                NotebookClient(
                    nb,
                    timeout=timeout_s,
                    kernel_name="python3",
                    resources={"metadata": {"path": os.path.dirname(path)}},
                ).execute()
                want = installed_kernel_metadata()
                nb.metadata["kernelspec"] = want["kernelspec"]
                nb.metadata.setdefault("language_info", {}).update(want["language_info"])
                nbformat.write(nb, path)
                done.append(rel)
        finally:
            if old is None:
                os.environ.pop(INTERACTIVE_ENV, None)
            else:
                os.environ[INTERACTIVE_ENV] = old
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m elastic_lib.control.templates", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("refresh", help="re-execute the templates in place (nbval's reference outputs)")
    r.add_argument("names", nargs="*", help=f"default: {' '.join(TEMPLATES)}")
    sub.add_parser("check", help="compare the templates' kernel metadata with this environment's")
    a = ap.parse_args(argv)
    if a.cmd == "refresh":
        unknown = [n for n in a.names if n not in TEMPLATES]
        if unknown:
            ap.error(f"not a template: {', '.join(unknown)}; the templates are {', '.join(TEMPLATES)}")
        for rel in refresh(a.names or None):
            print("refreshed", rel)
        return 0
    bad = {rel: kernel_metadata_mismatches(os.path.join(ROOT, rel)) for rel in TEMPLATES + STUDY_TEMPLATES}
    for rel, issues in bad.items():
        print(rel, "ok" if not issues else "\n  " + "\n  ".join(issues))
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
