"""pgferry.sync."""
