"""Population-based training (AutoLFADS)."""
