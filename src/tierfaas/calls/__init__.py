"""Asynchronous calls: accepted durably, run at least once, retried, called back, scheduled."""
