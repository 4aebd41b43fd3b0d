"""Test and demo support shipped with the package: the fake API server and the simulated cluster."""
