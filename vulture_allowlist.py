"""What vulture (``./run lint``) cannot see used, each with why; keep it short.

Run: ``vulture src tests vulture_allowlist.py --min-confidence 60`` (with the decorators
``./run lint`` names: Typer commands and pydantic validators are called by their frameworks).
"""

# ruff: noqa
from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# fields of records written whole (asdict, vars, JSON, a table row), never read by name
_.tool_version  # backup manifest
_.manifest_version
_.taken_at  # lint catalog snapshot
_.old_description  # migrate repair's realign (to_dict)
_.history_schema  # migrate progress row
_.updated_at
_.estimated_rows  # sync result and plan
_.estimated_bytes
_.ranges_differing  # sync verify result
_.last_batch_size  # backfill run result (to_dict)
_.table_name  # backfill state row
_.key_column
_.approver  # policy.Approval: the slot the admin service fills (issue 14)
_.plan_hash

# read by a framework or the interpreter
_.model_config  # pydantic
_.list_commands  # click's group interface
_.http_status  # errors: the HTTP status the admin service answers with (issue 14)
_.Storage  # backup storage: the Protocol a second backend implements
_.__class__  # sqltext/parser: the placeholder module pglast's import needs
_.__loader__
_.__path__
_.__package__
_.if_not_exists  # migrate/leftovers: set on a pglast node
_.concurrent
_.idxname

# dead, in modules other open work is rewriting: to go with that work
_.verify_table  # sync/compare.py (issue 16)
_.as_bytes  # sync/mask_sql.py (issue 16)

# read by name through a string (HealthThresholds.seconds("cache_interval"), ...)
_.cache_interval
_.long_transaction_warn
_.long_transaction_critical
_.idle_in_transaction_warn
_.idle_in_transaction_critical

# API used by tests (and next by the admin service)
_.all_commands  # cli/app: every command, imported (docs and tests)
_.of  # events.Collector
_.set_key  # sync/masking

# read by the dashboard's templates (jinja2), not by Python
_.nonce  # server/dashboard/views.Action: the form's idempotency nonce
