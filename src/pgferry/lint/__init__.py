"""pgferry.lint."""
