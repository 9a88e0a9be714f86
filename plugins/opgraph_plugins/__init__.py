"""opgraph's default plugins: the usual scalar ops, each module one plugin.

They are registered through the ``opgraph`` entry-point group in opgraph's own
``pyproject.toml``, exactly as a third-party plugin would be.
"""
