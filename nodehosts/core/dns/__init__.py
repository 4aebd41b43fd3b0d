"""The DNS engine: published records -> pre-encoded replies -> the reply to one query. No I/O."""
