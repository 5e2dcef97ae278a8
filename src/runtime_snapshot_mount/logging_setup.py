"""``log_config``, the standalone server's logging as a ``logging.config.dictConfig``
dictionary; it lives in :mod:`runtime_snapshot_mount.server.logging_setup`."""

from .server.logging_setup import log_config

__all__ = ["log_config"]
