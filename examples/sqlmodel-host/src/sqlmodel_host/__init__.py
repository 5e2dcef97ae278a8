"""A SQLModel host that mounts runtime-snapshot-mount on its own users (see README.md)."""
