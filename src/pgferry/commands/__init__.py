"""The command layer: one typed function per verb, the API every front end calls.

Contract: each function takes the :class:`~pgferry.config.Config`, an options
dataclass and, where the verb has them, ``progress`` (a
:data:`~pgferry.events.Subscriber` of typed events), ``confirm`` (a
:data:`~pgferry.commands.base.Confirm` a front end supplies when a person can
answer) and ``now``; it returns a result whose ``to_dict()`` is the verb's
``--json`` object, or raises :class:`~pgferry.errors.PgferryError`. It owns
the policy decision (:func:`pgferry.commands.base.authorize`), the journal rows
and the events; it never prints, prompts or exits. The verbs:

- :mod:`.migrate_run`: ``plan``, ``up``, ``undo``
- :mod:`.migrate_watch`: ``up`` (``migrate up --watch``: the gates, then a rollback)
- :mod:`.migrate_info`: ``new``, ``new_expand_contract``, ``number``, ``write_sum``,
  ``status``, ``validate``, ``baseline``, ``repair``
- :mod:`.migrate_test`: ``test``, ``bench``
- :mod:`.backfill`: ``run``, ``revert``, ``status``
- :mod:`.lint`: ``lint``
- :mod:`.sync`: ``sync``, ``verify``, ``revert``
- :mod:`.backup`: ``create``, ``listing``, ``verify``, ``restore``, ``prune``
- :mod:`.health`: ``health``
- :mod:`.journal`: ``show``, ``verify``
- :mod:`.env`: ``check``, ``template``
- :mod:`.project`: ``init``, ``embedded_status``, ``embedded_stop``, ``embedded_url``

Where a new verb goes: docs/architecture.md.
"""
