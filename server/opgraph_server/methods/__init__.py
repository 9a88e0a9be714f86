"""The RPC methods, one module per family; importing this package registers them all in
`opgraph_server.dispatch.METHODS`.

Each handler checks its arguments, calls the opgraph API, and returns plain data. Handlers see
the server only through `opgraph_server.dispatch.Host` and import nothing of
`opgraph_server.server`.
"""

from opgraph_server.dispatch import METHODS
from opgraph_server.methods import compute, graphs, nodes, session, subscriptions, views

__all__ = ["METHODS", "compute", "graphs", "nodes", "session", "subscriptions", "views"]
