"""Reconciliation: channel settlement statements read, written and matched against the ledger."""
