"""The snapshot file and the collector: what ``snapshot.load`` and a forked snapshot leave behind.

The collector state is process-wide, so each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import child_env
from pyzdb.storage import snapshot

ENTRIES = 20_000

CHECK = """
import gc, json, sys
from pyzdb.storage import snapshot
from pyzdb.storage.durable import Persistence

path = sys.argv[1]
before = gc.get_freeze_count()
state = snapshot.load(path)
after_load = gc.get_freeze_count()
files = Persistence(path, "no", 0, 0)
files.acquire()
files.load()
files.open_journal()
files.start_snapshot(state)
during = gc.isenabled()
finished = files.poll_snapshot(block=True)
files.close()
print(json.dumps({
    "frozen_by_load": after_load - before,
    "enabled_during_snapshot": during,
    "snapshot_ok": finished,
    "enabled_after_snapshot": gc.isenabled(),
    "frozen_after_snapshot": gc.get_freeze_count() - before,
}))
"""


def test_loaded_store_stays_out_of_the_collectors_walks_across_snapshots(tmp_path):
    path = tmp_path / "db.pkl"
    snapshot.save(path, {"root": {f"u{i}": [i] for i in range(ENTRIES)}})  # lists: always tracked
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(path)], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["frozen_by_load"] >= ENTRIES  # every loaded list is in the permanent generation
    assert facts["enabled_during_snapshot"] is False  # no collector pass while the child shares pages
    assert facts["snapshot_ok"] is True
    assert facts["enabled_after_snapshot"] is True
    assert facts["frozen_after_snapshot"] >= ENTRIES  # reaping the child did not thaw the store


def test_a_damaged_snapshot_stops_start_up_naming_the_file_and_leaves_it(tmp_path):
    from helpers import free_port_base, python_command

    store = tmp_path / "db.pkl"
    damaged = b"\x80\x05\x95garbage that is no pickle"
    store.write_bytes(damaged)
    result = subprocess.run(
        python_command("server", "--db", str(store), "--port-base", str(free_port_base())),
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert result.returncode == 1
    assert f"cannot read the snapshot {store}" in result.stderr
    assert "Traceback" not in result.stderr
    assert store.read_bytes() == damaged
