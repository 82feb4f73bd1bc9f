"""Versioned SQL migrations, Flyway-compatible."""
