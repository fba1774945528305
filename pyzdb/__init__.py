"""pyzdb: nested Python lists and dicts on a server, queried with Python syntax over ZeroMQ."""

from typing import Any

from pyzdb.errors import PyzdbError
from pyzdb.files import File

__version__ = "0.1.0"
__all__ = ["File", "PyzdbError", "TimeSeries", "__version__"]


def __getattr__(name: str) -> Any:
    # TimeSeries needs numpy (about 80 ms to import): loaded on first use, not with every client
    if name == "TimeSeries":
        from pyzdb.timeseries.series import TimeSeries

        return TimeSeries
    raise AttributeError(f"module 'pyzdb' has no attribute {name!r}")
