"""pgferry.server."""
