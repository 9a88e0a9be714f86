"""opgraph's language server: values, gradients and diagnostics of a graph server's graphs beside
the code that made them, in any LSP editor. Run it with ``opgraph lsp``; see docs/editors.md."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
