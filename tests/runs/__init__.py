"""Runs and the daemon: batches, crashes, races, readiness, deadlines, healing."""
