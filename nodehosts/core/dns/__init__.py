"""The DNS engine: published records -> pre-encoded replies -> the reply to one query. No I/O.

- wire.py: numbers and names of types, classes and RCODEs, name encoding, the question parser.
- zone.py: the zone's settings (`ZoneConfig`) and SOA serials.
- table.py: `AnswerTable`, every reply the zone can give, pre-encoded; built from a RecordSet
  or updated from the table it replaces.
- answer.py: `Answerer`, the reply to one query from a table (or "forward it"), and counters.
"""
