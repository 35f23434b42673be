"""Preprocessing of raw stacks/volumes: foreground mask, N4 bias correction, normalisation."""
