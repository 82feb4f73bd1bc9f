"""Where the login sends a browser next: a path of this dashboard, never another host."""

from __future__ import annotations

import pytest

from pgferry.server.dashboard.session import safe_next


@pytest.mark.parametrize(
    "asked",
    [
        "/",
        "/runs?state=failed",
        "/migrations?env=prod",
        "/runs/0a51b99640fa",
        "/journal?env=dev&limit=100",
    ],
)
def test_a_path_of_this_site_is_kept(asked: str) -> None:
    assert safe_next(asked) == asked


@pytest.mark.parametrize(
    "asked",
    [
        "//evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "https://evil.example/",
        "evil",
        "",
        None,
        "javascript:alert(1)",
    ],
)
def test_anything_else_goes_home(asked: str | None) -> None:
    assert safe_next(asked) == "/"
