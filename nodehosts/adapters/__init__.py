"""Thin I/O adapters, each tested against a real counterpart."""
