"""Writes: every change other users can see goes through a function here."""
