"""pyzdb: nested Python lists and dicts on a server, queried with Python syntax over ZeroMQ."""

from pyzdb.errors import PyzdbError
from pyzdb.files import File

__version__ = "0.1.0"
__all__ = ["File", "PyzdbError", "__version__"]
