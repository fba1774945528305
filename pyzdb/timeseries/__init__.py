"""Time-series collections (SPEC §8): rows of metadata with a series each, indexed, queried on the server.

The modules, each without I/O:

* :mod:`~pyzdb.timeseries.series`: :class:`TimeSeries`, the storable value (numpy arrays).
* :mod:`~pyzdb.timeseries.calls`: the names of the calls and which of them write (no numpy).

Importing this package does not import numpy; its modules that need it do.
"""
