"""Runtimes driving the FedML trainer classes: single process (``sp``); results folder."""
