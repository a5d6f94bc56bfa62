"""Triggers: waits that run in the triggerer (deferrable sensors and operators)."""
