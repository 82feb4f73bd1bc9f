"""Gates: production metrics (PromQL or SQL) that pause, stop or roll back a change."""
