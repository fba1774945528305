"""``pyzdb-keygen`` and the key files it makes (SPEC §11); no server needed."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
import zmq.auth

from helpers import child_env
from pyzdb import keys
from pyzdb.server.auth import KeyRing


def keygen(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m pyzdb keygen ...`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "pyzdb", "keygen", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
    )


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_pair_and_role_folders(tmp_path):
    keydir = tmp_path / "keys"
    result = keygen(str(keydir))
    assert result.returncode == 0, result.stderr
    assert str(keydir / "server.key") in result.stdout
    assert mode(keydir / "server.key_secret") == 0o600
    public, secret = zmq.auth.load_certificate(keydir / "server.key_secret")
    assert zmq.auth.load_certificate(keydir / "server.key") == (public, None)
    assert secret is not None
    for folder in ("clients/rw", "clients/ro", "replicas"):
        assert (keydir / folder).is_dir()


def test_client_pairs_by_role(tmp_path):
    keydir = tmp_path / "keys"
    assert keygen(str(keydir)).returncode == 0
    for name, role, folder in (
        ("alice", "rw", "clients/rw"),
        ("bob", "ro", "clients/ro"),
        ("r1", "replica", "replicas"),
    ):
        result = keygen(str(keydir), "--client", name, "--role", role)
        assert result.returncode == 0, result.stderr
        secret = keydir / "private" / f"{name}.key_secret"
        assert str(secret) in result.stdout  # it says where the secret key is
        assert mode(secret) == 0o600
        assert keys.load_public(keydir / folder / f"{name}.key") == keys.load_pair(secret)[0]
    assert mode(keydir / "private") == 0o700
    ring = KeyRing.load(keydir)
    assert sorted(ring.clients.values()) == ["ro", "rw"] and len(ring.replicas) == 1


def test_never_overwrites_a_key(tmp_path):
    keydir = tmp_path / "keys"
    keys.make_server_keys(keydir)
    keys.make_client_keys(keydir, "alice", "rw")
    before = {path: path.read_bytes() for path in keydir.rglob("*") if path.is_file()}
    again = keygen(str(keydir))
    assert again.returncode == 1 and "already exists" in again.stderr
    same_name = keygen(str(keydir), "--client", "alice", "--role", "ro")
    assert same_name.returncode == 1 and "already exists" in same_name.stderr
    after = {path: path.read_bytes() for path in keydir.rglob("*") if path.is_file()}
    assert after == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--client", "../evil", "--role", "rw"], "bad client name"),
        (["--client", "alice"], "--client and --role go together"),
        (["--client", "alice", "--role", "admin"], "invalid choice"),
    ],
)
def test_bad_arguments_change_nothing(tmp_path, args, message):
    keydir = tmp_path / "keys"
    keys.make_server_keys(keydir)
    before = sorted(keydir.rglob("*"))
    result = keygen(str(keydir), *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert sorted(keydir.rglob("*")) == before


def test_client_key_before_the_server_key_is_refused(tmp_path):
    result = keygen(str(tmp_path / "keys"), "--client", "alice", "--role", "rw")
    assert result.returncode == 1
    assert "run 'pyzdb-keygen" in result.stderr
    assert not (tmp_path / "keys").exists()


def test_loading_refuses_files_that_hold_no_valid_key(tmp_path):
    keydir = tmp_path / "keys"
    keys.make_server_keys(keydir)
    with pytest.raises(keys.KeyFileError, match="holds no secret key"):
        keys.load_pair(keydir / "server.key")
    bad = keydir / "clients" / "rw" / "short.key"
    bad.write_text('public-key = "abc"\n')
    with pytest.raises(keys.KeyFileError, match="short.key"):
        KeyRing.load(keydir)
    with pytest.raises(keys.KeyFileError, match="cannot read"):
        keys.load_public(tmp_path / "missing.key")
    with pytest.raises(ValueError, match="needs both"):
        keys.client_keys(str(keydir / "server.key"), None)


def test_a_key_in_two_roles_is_refused(tmp_path):
    keydir = tmp_path / "keys"
    keys.make_server_keys(keydir)
    keys.make_client_keys(keydir, "alice", "rw")
    (keydir / "clients" / "ro" / "alice-too.key").write_bytes(
        (keydir / "clients" / "rw" / "alice.key").read_bytes()
    )
    with pytest.raises(keys.KeyFileError, match="read-write .* and read-only"):
        KeyRing.load(keydir)
