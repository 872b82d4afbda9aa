# Jupyter server settings for this repo, loaded through JUPYTER_CONFIG_PATH (./lab.sh, or any
# `jupyter lab` started with scripts/env.sh sourced).
# The tracked notebooks are templates (papermill and nbval use them). The contents manager reports
# them read-only, so JupyterLab does not autosave them and offers "Save As"; the pre-save hook
# refuses any save that still reaches the server, saying how to make a personal copy
# (elastic_lib/control/templates.py; ELASTIC_EDIT_TEMPLATES=1 lifts both).
from elastic_lib.control.templates import guarded_contents_manager

c.ServerApp.contents_manager_class = guarded_contents_manager()  # noqa: F821 (c is Jupyter's config)
c.ContentsManager.pre_save_hook = "elastic_lib.control.templates.refuse_template_save"  # noqa: F821
