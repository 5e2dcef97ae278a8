"""The version of runtime-snapshot-mount and of runtime-snapshot-mount-sqlalchemy.

The one place the version is written: both distributions read it when they are built, and
the plugin requires a core of the same minor series.
"""

__version__ = "0.1.0.dev0"
