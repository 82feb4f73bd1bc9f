"""The in-place restore's script filter (pure): which statements it leaves out."""

from __future__ import annotations

import pytest

from pgferry.backup.clean import Script

ROLES = {"app", "postgres", "Odd Role"}
INHERITED = {("public", "events_us_pkey"), ("odd Schema", "Events EU_pkey")}
CASES = [
    # a partition's constraint its partitioned table's stands for: dropped with its table
    (
        b"ALTER TABLE IF EXISTS ONLY public.events_us DROP CONSTRAINT IF EXISTS events_us_pkey;",
        True,
    ),
    (
        b'ALTER TABLE IF EXISTS ONLY "odd Schema"."Events EU" DROP CONSTRAINT IF EXISTS '
        b'"Events EU_pkey";',
        True,
    ),
    (b"ALTER TABLE IF EXISTS ONLY public.events DROP CONSTRAINT IF EXISTS events_pkey;", False),
    (b"ALTER TABLE IF EXISTS ONLY public.items DROP CONSTRAINT IF EXISTS items_fkey;", False),
    # privileges: left out only where a role they name is missing
    (b"GRANT SELECT ON TABLE public.orders TO reporting_x;", True),
    (b"REVOKE ALL ON TABLE public.orders FROM reporting_x;", True),
    (b"GRANT SELECT ON TABLE public.orders TO app;", False),
    (b'GRANT ALL ON TABLE public.orders TO "Odd Role";', False),
    (b"GRANT SELECT ON TABLE public.orders TO PUBLIC;", False),
    (b"GRANT EXECUTE ON FUNCTION public.f(a integer, b text) TO app WITH GRANT OPTION;", False),
    (
        b"ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO x;",
        True,
    ),
    (b"ALTER DEFAULT PRIVILEGES FOR ROLE gone IN SCHEMA public GRANT ALL ON TABLES TO app;", True),
    (b"ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON TABLES TO app;", False),
    # anything else stays
    (b"CREATE POLICY p ON public.orders TO reporting_x USING (true);", False),
    (b"SELECT pg_catalog.setval('public.orders_id_seq', 10, true);", False),
]


@pytest.mark.parametrize(("line", "left_out"), CASES)
def test_what_the_script_leaves_out(line: bytes, left_out: bool) -> None:
    s = Script(INHERITED, ROLES)
    assert s.skip(line + b"\n") is left_out
    # the privileges left out are named, without the terminator; the drops are not
    named = line.startswith((b"GRANT", b"REVOKE", b"ALTER DEFAULT")) and left_out
    assert s.left_out == ([line.decode().rstrip(";")] if named else [])
