"""``python -m opgraph``: the same as the ``opgraph`` command."""

from opgraph.cli import main

main()
