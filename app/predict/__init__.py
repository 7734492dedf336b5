"""Helpers of the Predict page: cached predictors and drawing."""
