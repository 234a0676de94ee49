"""Deliveries in: verified and parsed (pure), payload fields, the router handlers register on, the
/ka comment grammar.
"""
