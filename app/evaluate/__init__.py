"""Helpers of the Evaluate page: loaders, binary and multi-label panels, galleries, charts."""
