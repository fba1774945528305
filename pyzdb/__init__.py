"""pyzdb: nested Python lists and dicts on a server, queried with Python syntax over ZeroMQ."""

from pyzdb.errors import PyzdbError
from pyzdb.files import File

__version__ = "0.1.0"
__all__ = ["File", "PyzdbError", "TimeSeries", "__version__"]
_LAZY = ("TimeSeries",)
"""Public names imported on first use: TimeSeries needs numpy (about 80 ms), not every client does."""


def __getattr__(name: str) -> object:
    if name == "TimeSeries":
        from pyzdb.timeseries.series import TimeSeries

        globals()[name] = TimeSeries
        return TimeSeries
    raise AttributeError(f"module 'pyzdb' has no attribute {name!r}")
