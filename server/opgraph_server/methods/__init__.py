"""The RPC methods, one module per family; importing this package registers them all in
`opgraph_server.dispatch.METHODS`.

Each handler checks its arguments, calls the opgraph API, and returns plain data. Handlers see
the server only through `opgraph_server.dispatch.Host` and import nothing of
`opgraph_server.server`.
"""

# The families in the order their methods are documented (``initialize`` lists them so).
from opgraph_server.methods import session  # isort: skip
from opgraph_server.methods import graphs  # isort: skip
from opgraph_server.methods import nodes  # isort: skip
from opgraph_server.methods import compute  # isort: skip
from opgraph_server.methods import views  # isort: skip
from opgraph_server.methods import subscriptions  # isort: skip
from opgraph_server.dispatch import METHODS  # isort: skip

__all__ = ["METHODS", "compute", "graphs", "nodes", "session", "subscriptions", "views"]
