"""The daemon: sources -> one pure record set -> sinks, supervised as named asyncio tasks.

`daemon` is the supervisor (start, stop, tasks, the control socket's answers); what it
publishes and how is in `publisher`, live reloads in `reloader`, the view of every Node
behind a label selector in `clusterview`; the state it reports is the
pure value `nodehosts.core.status.Status`.
"""
