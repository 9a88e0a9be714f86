"""``python -m opgraph_lsp``: the same as ``opgraph lsp``."""

from opgraph_lsp.main import main

main()
