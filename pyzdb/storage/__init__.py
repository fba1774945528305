"""Everything pyzdb writes to disk: snapshots (and, later, the journal)."""
