"""Old path of the DNS engine, kept only until app.py imports nodehosts.core.dns (issue 14).

Remove this file once nothing imports `nodehosts.core.answer`.
"""

from nodehosts.core.dns.zone import ZoneConfig

__all__ = ["ZoneConfig"]
