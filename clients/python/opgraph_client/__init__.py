"""opgraph client."""
