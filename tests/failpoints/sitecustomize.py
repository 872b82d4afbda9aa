"""Fault injection for tests/test_faults.py, outside the library's write path.

With this folder first on ``PYTHONPATH`` (``tests/test_faults.py: failpoint_env``), every Python
process of a run (the driver, its notebook runner, the notebook's kernel) imports this module at
start-up. With ``ELASTIC_FAILPOINT_ENOSPC=<glob>`` set, renaming a file onto a name that matches
(the last step of every atomic write, ``elastic_lib.control.results.atomic_write_text``) fails as
on a full disk.
"""

import errno
import fnmatch
import os

_PATTERN = os.environ.get("ELASTIC_FAILPOINT_ENOSPC")

if _PATTERN:
    _replace = os.replace

    def _full_disk_replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(os.path.basename(os.fspath(dst)), _PATTERN):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
        return _replace(src, dst, *args, **kwargs)

    os.replace = _full_disk_replace
