"""Training one model: loop, schedules, checkpoints, output files."""
