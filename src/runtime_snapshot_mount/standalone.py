"""``runtime_snapshot_mount.standalone:create_app_from_env``, the ASGI factory for process
managers (uvicorn ``--factory``, gunicorn, hypercorn, granian); it lives in
:mod:`runtime_snapshot_mount.server.standalone`."""

from .server.settings import DEFAULT_STORE, ENVIRONMENT, Settings
from .server.standalone import StandaloneApp, create_app_from_env

__all__ = ["DEFAULT_STORE", "ENVIRONMENT", "Settings", "StandaloneApp", "create_app_from_env"]
