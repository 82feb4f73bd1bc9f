"""pgferry.jobs."""
