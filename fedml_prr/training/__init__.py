"""Local training and per-client state: the message protocol and shared loops (no fedml)."""
