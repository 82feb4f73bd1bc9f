"""Which PL/pgSQL trigger functions provably return NEW (pgferry.sqltext.plpgsql).

A BEFORE row trigger whose function returns NULL skips the row without an error; the
sync checks every write of a table where one fires, unless the function cannot.
"""

from __future__ import annotations

import pytest

from pgferry.sqltext.plpgsql import never_skips, returns_new


def _fn(body: str) -> tuple[str, str]:
    return (f"CREATE FUNCTION public.g() RETURNS trigger LANGUAGE plpgsql AS $x$ {body} $x$", body)


RETURNS_NEW = [
    "begin return new; end",
    "BEGIN NEW.updated_at := now(); RETURN NEW; END",
    "begin if tg_op = 'INSERT' then new.created := now(); end if; return new; end",
    "begin perform 1; -- return null;\n /* return old; */ return new; end",
    "begin if new.v = 'return null;' then raise exception 'no'; end if; return new; end",
]
MAY_SKIP = [
    "begin return null; end",
    "begin return old; end",
    "begin return (new); end",
    "begin if new.locked then return null; end if; return new; end",
    "begin new := old; return new; end",
    "begin select * into new from b limit 1; return new; end",
    "begin execute 'select 1' into new; return new; end",
    "begin for new in select * from b loop end loop; return new; end",
    "declare n alias for new; begin return n; end",
    "declare r record; begin r := new; return r; end",
    "begin return new; exception when others then return null; end",
    "begin declare new record; begin new := null; return new; end; end",
    "not pl/pgsql at all $$",
]


@pytest.mark.parametrize("body", RETURNS_NEW)
def test_functions_that_return_new_on_every_path(body: str) -> None:
    assert returns_new(*_fn(body))


@pytest.mark.parametrize("body", MAY_SKIP)
def test_functions_that_may_return_something_else_are_watched(body: str) -> None:
    assert not returns_new(*_fn(body))


@pytest.mark.parametrize(
    ("language", "source", "library", "expected"),
    [
        ("c", "moddatetime", "$libdir/moddatetime", True),
        ("internal", "tsvector_update_trigger_byid", "", True),
        ("internal", "suppress_redundant_updates_trigger", "", False),  # returns NULL
        ("c", "moddatetime", "$libdir/not_the_contrib_one", False),
        ("plpython3u", "return 'OK'", "", False),
    ],
)
def test_functions_in_other_languages_are_known_by_name_or_watched(
    language: str, source: str, library: str, expected: bool
) -> None:
    assert never_skips(language, "", source, library) is expected
