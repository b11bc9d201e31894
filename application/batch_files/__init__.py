"""Batch files: parsing what arrives (JSON, CSV, ISO 20022 pain.001) into one neutral shape, and
writing what leaves (ISO 20022 pain.002 status reports). No database, no rules: those are the
batch handlers' (application/batches/)."""
