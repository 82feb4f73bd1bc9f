"""pgferry: move schema and data between PostgreSQL environments, and prove it."""

__version__ = "0.1.0"
