"""``runtime_snapshot_mount.cli:main``, the ``runtime-snapshot-mount`` command; it lives in
:mod:`runtime_snapshot_mount.server.cli`."""

from .server.cli import main

__all__ = ["main"]
