"""opgraph server."""
