"""Batched backfills: ``backfills/NAME.sql`` run in keyset batches, paced and resumable."""
