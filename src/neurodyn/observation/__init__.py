"""Observation models: how observed data are distributed given the model's output."""
