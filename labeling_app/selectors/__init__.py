"""Reads: query functions, with the authorisation built in where a user is involved."""
