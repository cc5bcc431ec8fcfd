"""Data I/O: the seed h5 format (read, validate, split, write atomically)."""
