"""Training loop and run directories."""
