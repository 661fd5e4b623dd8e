"""Backup retention: the pure policy (``policy``) and applying it to the stores (``stores``)."""
