"""Evaluation: metrics and figures."""
