"""Batch payments (批量支付): intake, rules, maker-checker approval, the engine and reports."""
