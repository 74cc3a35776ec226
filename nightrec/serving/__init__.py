"""Serving the live lists: the in-memory snapshot, the pointer follower and the HTTP API."""
