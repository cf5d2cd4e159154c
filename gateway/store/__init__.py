"""Backing stores behind one interface (see base.Store)."""
