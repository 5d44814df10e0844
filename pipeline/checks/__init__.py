"""Is it honest, is it luck: the run-time leak alarms and the significance tests."""
