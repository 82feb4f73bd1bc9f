"""pgferry.lint.rules."""
