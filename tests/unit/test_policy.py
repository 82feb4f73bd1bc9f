"""pgferry/policy.py: one pure decision for every writer, property-tested.

The rules in their order (input, blackout, protected, lint gate, approval) are
checked as properties over every combination of flags, windows and plans; the
messages the command line shows are checked as examples.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgferry.config import Config
from pgferry.errors import BadInput, Refused
from pgferry.policy import (
    RULES,
    Approval,
    Decision,
    GateFinding,
    Verdict,
    WriteRequest,
    decide,
)

NOW = datetime(2026, 11, 20, 17, tzinfo=UTC)  # a Friday, 17:00 UTC
FREEZE = {"weekly": "Fri 16:00 - Mon 06:00", "envs": ["prod"], "reason": "weekend freeze"}


def config(*windows: Mapping[str, object]) -> Config:
    return Config.model_validate(
        {"environments": {"dev": {}, "prod": {"protected": True}}, "blackout": list(windows)}
    )


finding = st.builds(
    GateFinding,
    script=st.sampled_from(["V1__a.sql", "V2__b.sql"]),
    line=st.integers(1, 99),
    rule=st.sampled_from(["r1", "r2"]),
    message=st.text(max_size=20),
)
reason = st.one_of(st.none(), st.just(""), st.just("  "), st.text(min_size=1, max_size=10))
requests = st.builds(
    WriteRequest,
    command=st.sampled_from(["migrate up", "sync", "backup restore"]),
    env=st.sampled_from(["dev", "prod"]),
    protected=st.booleans(),
    yes=st.booleans(),
    override_blackout=st.booleans(),
    reason=reason,
    rewrites_history=st.booleans(),
    allow_unsafe=st.booleans(),
    unsafe_reason=reason,
    lint_errors=st.one_of(st.none(), st.lists(finding, max_size=4).map(tuple)),
    requires_approval=st.booleans(),
    approval=st.one_of(st.none(), st.builds(Approval, st.just("bob"), st.just("h"))),
)
windows = st.lists(
    st.sampled_from([FREEZE, {"from": "2020-01-01", "reason": "all"}, {"from": "2030-01-01"}]),
    max_size=2,
)
moments = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
)


def blank(text: str | None) -> bool:
    return not (text or "").strip()


@settings(max_examples=400, deadline=None)
@given(requests, windows, moments)
def test_every_request_gets_one_decision_and_a_matching_error(
    req: WriteRequest, ws: list[dict[str, object]], now: datetime
) -> None:
    cfg = config(*ws)
    d = decide(cfg, req, now)
    assert d == decide(cfg, req, now)  # pure: the same question, the same answer
    err = d.error()
    if d.verdict is Verdict.ALLOW:
        assert err is None and d.allowed and d.message == ""
    elif d.verdict is Verdict.BAD_INPUT:
        assert isinstance(err, BadInput) and err.exit_code == 2
    else:
        assert isinstance(err, Refused) and err.exit_code == 4 and err.message == d.message


@settings(max_examples=400, deadline=None)
@given(requests, windows, moments)
def test_the_rules_in_their_order(
    req: WriteRequest, ws: list[dict[str, object]], now: datetime
) -> None:
    cfg = config(*ws)
    d = decide(cfg, req, now)
    bad_input = (req.allow_unsafe and blank(req.unsafe_reason)) or (
        req.override_blackout and blank(req.reason)
    )
    if bad_input:
        assert d.verdict is Verdict.BAD_INPUT
        return
    in_window = decide(cfg, replace(req, override_blackout=False), now, ("blackout",))
    if in_window.verdict is Verdict.REFUSE:
        if not req.override_blackout:  # inside a window: refused, whatever else is asked
            assert d.verdict is Verdict.REFUSE and "blackout window" in d.message
            return
        assert d.window is not None  # overridden with a reason: the window is named
    else:
        assert d.window is None
    if not req.yes and (req.protected or req.rewrites_history):
        assert d.verdict is Verdict.CONFIRM and "--yes" in d.message and d.prompt
        return
    errors = req.lint_errors or ()
    if errors and req.protected and not req.allow_unsafe:
        assert d.verdict is Verdict.REFUSE and d.message.startswith("lint gate:")
        assert len(d.details["findings"]) == len(errors)
        return
    if req.requires_approval and req.approval is None:
        assert d.verdict is Verdict.NEEDS_APPROVAL
        return
    assert d.verdict is Verdict.ALLOW
    assert d.unsafe == (errors if req.protected and req.allow_unsafe else ())


@settings(max_examples=300, deadline=None)
@given(requests, windows, moments)
def test_more_consent_never_refuses_more(
    req: WriteRequest, ws: list[dict[str, object]], now: datetime
) -> None:
    """--yes, an approval, or removing lint errors never turns an allowed write into a
    refused one; a protected or frozen environment never allows more than an open one."""
    cfg = config(*ws)
    before = decide(cfg, req, now)
    for more in (
        replace(req, yes=True),
        replace(req, lint_errors=()),
        replace(req, approval=Approval("bob", "h")),
    ):
        if before.allowed:
            assert decide(cfg, more, now).allowed
    if decide(cfg, replace(req, protected=True), now).allowed:
        assert before.allowed
    if decide(config(*ws, {"from": "2020-01-01"}), req, now).allowed:
        assert before.allowed


@given(requests, moments)
def test_an_open_unprotected_environment_without_findings_is_allowed(
    req: WriteRequest, now: datetime
) -> None:
    req = replace(
        req,
        protected=False,
        rewrites_history=False,
        override_blackout=False,
        allow_unsafe=False,
        requires_approval=False,
    )
    assert decide(config(), req, now).allowed


@given(requests, st.lists(st.sampled_from(RULES), unique=True))
def test_a_subset_of_rules_judges_only_those(req: WriteRequest, rules: list[str]) -> None:
    d = decide(config(FREEZE), req, NOW, rules)
    if not rules:
        assert d.allowed
    full = decide(config(FREEZE), req, NOW)
    if full.allowed:
        assert d.allowed  # fewer rules never refuse more


def test_messages_the_command_line_shows() -> None:
    cfg = config(FREEZE)
    up = WriteRequest("migrate up", "prod", True)
    d = decide(cfg, replace(up, yes=True), NOW)
    assert d.verdict is Verdict.REFUSE and d.message == (
        "environment 'prod' is in a blackout window (weekly Fri 16:00 - Mon 06:00 (UTC): "
        'weekend freeze); wait, or pass --override-blackout --reason "..."'
    )
    assert d.details == {
        "env": "prod",
        "blackout": "weekly Fri 16:00 - Mon 06:00 (UTC): weekend freeze",
    }
    # the window is judged first; what --yes would add is said in the same refusal
    d = decide(cfg, up, NOW)
    assert d.verdict is Verdict.REFUSE and d.message == (
        "environment 'prod' is in a blackout window (weekly Fri 16:00 - Mon 06:00 (UTC): "
        'weekend freeze); wait, or pass --override-blackout --reason "..." and --yes '
        "('prod' is protected)"
    )
    rewrite = WriteRequest("migrate repair", "prod", False, action="repair", rewrites_history=True)
    assert decide(cfg, rewrite, NOW).message.endswith(
        '--reason "..." and --yes (repair rewrites the migration history)'
    )
    d = decide(cfg, replace(up, override_blackout=True, reason="INC-1"), NOW)
    assert d.verdict is Verdict.CONFIRM and d.window_text is not None
    assert d.message == "environment 'prod' is protected: migrate up needs --yes"
    assert d.prompt == "prod is protected. migrate up?"
    later = NOW + timedelta(days=5)
    repair = WriteRequest("migrate repair", "dev", False, action="repair", rewrites_history=True)
    d = decide(cfg, repair, later)
    assert d.message == "repair rewrites the migration history of 'dev': run again with --yes"
    assert d.prompt == "repair in dev?"
    gate = replace(
        up,
        yes=True,
        lint_errors=tuple(
            GateFinding(f"V{i}__x.sql", i, "rule", "bad", {"line": i}) for i in range(1, 5)
        ),
    )
    d = decide(cfg, gate, later)
    assert d.message == (
        "lint gate: 4 error finding(s) on protected prod: V1__x.sql:1 rule: bad; "
        "V2__x.sql:2 rule: bad; V3__x.sql:3 rule: bad; .... Fix them, or pass "
        '--allow-unsafe --reason "..."'
    )
    d = decide(cfg, replace(gate, allow_unsafe=True, unsafe_reason="reviewed"), later)
    assert d.allowed and len(d.unsafe) == 4
    d = decide(cfg, replace(gate, allow_unsafe=True), later)
    assert d.verdict is Verdict.BAD_INPUT and d.message.startswith("--allow-unsafe needs")
    with pytest.raises(ValueError, match="no policy rule"):
        decide(cfg, up, NOW, ("nonsense",))
    assert isinstance(decide(cfg, up, NOW, ()), Decision)


def test_the_policy_imports_no_driver() -> None:
    code = (
        "import sys\nimport pgferry.policy\n"
        "print([m for m in ('psycopg', 'rich', 'typer') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
