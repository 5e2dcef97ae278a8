"""The standalone server: the ``runtime-snapshot-mount`` command and the app it serves.

``settings`` declares every option once; ``cli`` is the command line, ``standalone`` the
ASGI app built from the environment (``create_app_from_env``), ``logging_setup`` and
``log_writer`` its logging, ``prometheus`` its optional metrics.
"""
