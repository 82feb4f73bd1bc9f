"""pgferry.backup."""
