"""The metrics gateway and its client (SPEC §7).

::

    from pyzdb.metrics import Client, ClientError

    with Client("127.0.0.1", 8765, timeout=5) as metrics:
        metrics.put("palm.cpu", 42.3, 1150864247)
        metrics.get("*")        # {'palm.cpu': [(1150864247, 42.3)]}

Modules: ``protocol`` (the text protocol, no I/O), ``store`` (the layout in
the pyzdb tree), ``gateway`` (the asyncio server), ``client`` (the socket
client); ``python -m pyzdb.metrics`` runs the gateway.  See docs/metrics.md.
"""

from pyzdb.metrics.client import Client, ClientError

__all__ = ["Client", "ClientError"]
