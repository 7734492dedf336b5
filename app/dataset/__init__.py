"""Helpers of the Dataset page."""
