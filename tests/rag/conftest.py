"""Both store backends for the store and index tests: the embedded LanceDB table and a real PostgreSQL
server (`pg_dsn`, tests/conftest.py)."""

import pytest

BACKENDS = ["lancedb", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The --store value of the backend under test: None (LanceDB, the default) or a PostgreSQL URL."""
    return request.getfixturevalue("pg_dsn") if request.param == "postgresql" else None
