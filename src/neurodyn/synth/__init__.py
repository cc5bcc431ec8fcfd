"""Synthetic benchmark data: the Lorenz system and datasets driven by it."""
