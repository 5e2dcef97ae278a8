"""The plugin system and the built-in plugins.

``hookspecs`` is the whole plugin contract, ``plugins`` the manager that calls it (one typed
method per hook), ``protocols`` the same contract as typing protocols; ``memory`` (the
in-memory store) and ``static`` (tokens and accounts from lists or a file) are built in.
"""
