"""The standalone app as a module attribute, for servers that take an app object but cannot
call a factory (daphne): ``daphne runtime_snapshot_mount.asgi:app``.

Importing this module calls :func:`~runtime_snapshot_mount.standalone.create_app_from_env`,
so it reads the environment variables then, and fails with a one-line
:class:`~runtime_snapshot_mount.ConfigurationError` on a bad one. Servers that can call the
factory themselves should be given the factory instead (``uvicorn --factory
runtime_snapshot_mount.standalone:create_app_from_env``).
"""

from __future__ import annotations

from .server.standalone import StandaloneApp, create_app_from_env

__all__ = ["app"]

app: StandaloneApp = create_app_from_env()
