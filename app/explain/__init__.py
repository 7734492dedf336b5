"""Helpers of the Explain page: loaders, attribution methods, adversarial panel, charts."""
