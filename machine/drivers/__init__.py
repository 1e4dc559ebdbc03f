"""Drivers make a host exist; they know nothing of Docker (see base.py)."""
