"""Checks run one SDK at a time, each in a fresh scenario (engine + workers)."""
