"""How db.pkl and db.pkl.journal.1 here were made: metrics stored by pyzdb 67d8c6c (the tree layout).

    git archive 67d8c6c | tar -x -C /tmp/oldpyzdb
    python tests/data/legacy-metrics/make_store.py /tmp/oldpyzdb /tmp/legacy

It starts that version's server and metrics gateway, puts points (some
before a save, some after, so both the snapshot and the journal hold
metrics), and SIGKILLs the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

CLIENT = """
from pyzdb.client import Connection
from pyzdb.metrics import Client
with Client("127.0.0.1", int(sys.argv[1]), timeout=10) as c:
    c.put("palm.cpu", 42.3, 1150864247)
    c.put("palm.cpu", 4.0, 1150864248)
    c.put("eardrum.memory", 1024, 1150864250)
    with Connection(sys.argv[2], timeout=10) as conn:
        conn.db["other"] = {"kept": True}
        conn.db.save()
    c.put("eardrum.memory", 2048, 1150864251)  # in the journal only
    c.put("solo", 7, 100)
    print(c.get("*"))
"""


def main(old_checkout: str, folder: str, base: int = 47310, gateway_port: int = 47320) -> None:
    """Write the store into ``folder`` with the code of ``old_checkout``."""
    env = dict(os.environ, PYTHONPATH=old_checkout)
    uri = f"tcp://127.0.0.1:{base + 1}"
    server = subprocess.Popen(
        [sys.executable, "-m", "pyzdb", "server", "--db", f"{folder}/db.pkl", "--port-base", str(base)],
        env=env,
        cwd=folder,
    )
    time.sleep(1.5)
    gateway = subprocess.Popen(
        [sys.executable, "-m", "pyzdb.metrics", "--port", str(gateway_port), "--db", uri], env=env, cwd=folder
    )
    time.sleep(1.5)
    try:
        code = "import sys\n" + CLIENT
        subprocess.run([sys.executable, "-c", code, str(gateway_port), uri], env=env, check=True, timeout=60)
    finally:
        gateway.terminate()
        gateway.wait(10)
        server.kill()
        server.wait(10)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
