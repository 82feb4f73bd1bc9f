"""pgferry.health."""
