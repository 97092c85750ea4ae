"""Replace a folder by a finished one without ever leaving a half-written folder in its place.

Exports (export/pipeline.py, export/hf_export.py) assemble their output in a staging folder beside
the target and call swap_in only when everything is written and checked: until the final rename the
previous folder is intact, and if the rename fails it is put back.
"""

from __future__ import annotations

import os
import shutil
import tempfile


def swap_in(staging: str, out_dir: str) -> None:
    """Replace out_dir by staging (same parent folder); the old folder is kept until the new one is in place."""
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
        os.rmdir(old)
        os.replace(out_dir, old)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    os.chmod(out_dir, 0o755)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
