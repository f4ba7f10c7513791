"""The local API-key file: one JSON document of `KeyRecord`s (hashes only), mode 0600.

`create` returns the key once; nothing else ever sees it again. Every change also rewrites the files the running
Envoy watches (`native_auth.sync`: key ids, tenants, scopes, state and `{SHA}` hashes), so `keys create|revoke`
take effect within milliseconds without a restart. In the cloud the same records drive the secret Envoy Gateway's
SecurityPolicy reads (client id `tenant.key_id`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import secrets
import tempfile
import threading
from dataclasses import asdict, replace
from pathlib import Path

from modelfleet.gateway import native_auth
from modelfleet.gateway.plan import KEY_ID_HEX, KEY_PREFIX, KeyRecord, key_hash

TENANT = re.compile(r"^[a-z0-9][-a-z0-9_.]{0,62}$")
SCOPE = re.compile(r"^infer:(\*|[a-z][-a-z0-9:.]{0,62})$")


class KeyError_(ValueError):
    """A bad tenant, scope or key id; the message says which and how to fix it."""


def key_file(root: Path, stack: str) -> Path:
    """Where the local stack keeps its key hashes (outside the repository's tracked files)."""
    return root / ".modelfleet" / stack / "api-keys.json"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


_HELD: dict[tuple[Path, int], int] = {}  # (key file, thread) holding its lock, and how deep


@contextlib.contextmanager
def locked(path: Path):
    """One writer of the key file (and of the files Envoy watches) at a time. Every change is read, modify, write:
    two `keys create` at once would each save the file they read, and one new key would vanish after it was
    printed. An advisory lock on a file beside it, held until the change is saved and synced; the kernel drops it
    if the process dies. Re-entrant within a process (a second flock on another descriptor would wait for the
    first forever), so a caller may hold it around a check and the `create` that follows."""
    key = (path.resolve(), threading.get_ident())  # another thread's flock on its own descriptor waits, as it should
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD[key] = 1
        yield
    finally:
        _HELD.pop(key, None)
        os.close(fd)


def load(path: Path) -> dict[str, KeyRecord]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {r["key_id"]: KeyRecord(**{**r, "scopes": tuple(r["scopes"])}) for r in data.get("keys", [])}


def save(path: Path, records: dict[str, KeyRecord]) -> None:
    """Atomically, 0600 from the first byte (the hashes are not secrets, but the file says who may call what)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".api-keys-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": [asdict(r) for r in sorted(records.values(), key=lambda r: r.key_id)]}, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    native_auth.sync(path)


def create(path: Path, tenant: str, scopes: list[str], expires: str | None = None) -> tuple[str, KeyRecord]:
    if not TENANT.match(tenant):
        raise KeyError_(f"tenant {tenant!r}: use lowercase letters, digits, '-', '_' or '.', at most 63 characters")
    bad = [s for s in scopes if not SCOPE.match(s)]
    if bad or not scopes:
        raise KeyError_(f"scope {bad[0] if bad else '(none)'!r}: write infer:<model> or infer:*")
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    api_key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    record = KeyRecord(key_id=key_id, tenant=tenant, scopes=tuple(scopes), hash=key_hash(api_key),
                       created=_now(), expires=expires)
    with locked(path):
        records = load(path)
        records[key_id] = record
        save(path, records)
    return api_key, record


def revoke(path: Path, key_id: str, tenant: str | None = None) -> KeyRecord:
    with locked(path):
        records = load(path)
        record = records.get(key_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            raise KeyError_(f"no key {key_id!r}" + (f" for tenant {tenant!r}" if tenant else "") + f" in {path}")
        records[key_id] = replace(record, revoked=record.revoked or _now())
        save(path, records)
    return records[key_id]
