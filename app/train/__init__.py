"""Helpers of the Train page: form, values, live panel, charts, runs table, LR finder."""
