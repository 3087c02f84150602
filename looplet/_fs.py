"""Small file-system checks shared by the command-line entry points."""

from __future__ import annotations

import os
import tempfile


def unwritable(folder: str) -> str | None:
    """Create ``folder`` if needed and prove a file can be written there. Returns None when it can, else
    ``"cannot write to '<folder>' (<reason>); choose a folder you can write to"``."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".looplet-write-test-"):
            pass
    except OSError as exc:
        return f"cannot write to {folder!r} ({exc.strerror or exc}); choose a folder you can write to"
    return None
