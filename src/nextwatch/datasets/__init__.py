"""Data sets nextwatch can train on: the deterministic demo catalog and watch history."""
