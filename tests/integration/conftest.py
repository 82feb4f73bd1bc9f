"""Fixtures shared by integration tests of one capability (defined beside their helpers)."""

from tests.integration.backup_helpers import bproj, createdb_role  # noqa: F401
from tests.integration.prom import prometheus  # noqa: F401
from tests.integration.zdt_helpers import zproj  # noqa: F401
