"""pgferry benchmarks against peer tools (``./run bench``)."""
