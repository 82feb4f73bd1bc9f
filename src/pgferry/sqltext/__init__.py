"""The one SQL front end: statements as the PostgreSQL parser sees them.

The migration runner (:mod:`pgferry.migrate.runner`), the lint engine and the lint gate
read SQL through this package only, so they cannot disagree about where a statement
starts, what it is, or whether it runs inside a transaction:

- :mod:`~pgferry.sqltext.parser`: pglast, loaded light (the one place pgferry reaches
  into pglast's packaging; tested to fail loudly when pglast changes it).
- :mod:`~pgferry.sqltext.model`: :func:`~pgferry.sqltext.model.split` turns a file into a
  :class:`~pgferry.sqltext.model.SqlFile` of
  :class:`~pgferry.sqltext.model.Statement` (kind, parse tree, byte offsets, line, text,
  why it cannot run in a transaction, and whether it does).
- :mod:`~pgferry.sqltext.classify`: PostgreSQL's rules: what cannot run in a transaction
  block, transaction control, and the table lock a statement takes.
- :mod:`~pgferry.sqltext.features`: what a statement needs of the target (newer syntax,
  an extension).
- :mod:`~pgferry.sqltext.nodes`: small readers of the parse trees (plain dicts).

Pure: no database, no file system.
"""
