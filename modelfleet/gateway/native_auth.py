"""API keys and tokens checked inside the local Envoy: no call out of the proxy on the request path (ADR 0004).

- `modelfleet.keys` (a dynamic module in C, `native/authn.c`, compiled here by `module_path`): the API key. It
  reads `x-api-key` (`mf_<key id>_<secret>`), finds the id in a table (tenant, scopes, expiry, revoked and the
  `{SHA}` hash as hex; never a key), compares the key's SHA-1 with the hash, and refuses malformed, unknown or
  forged, revoked, expired and out-of-scope keys with JSON codes. It sets the tenant and key-id headers (replacing
  client copies), removes the key and puts a refusal's reason in the audit metadata. The table is the filter's
  config, loaded from a file Envoy watches (extension config discovery, ECDS, with a `path_config_source` and a
  `watched_directory`), so `keys create|revoke` reach the running gateway within milliseconds, without a restart
  and without touching the listener or the routes (whose per-route `local_ratelimit` buckets a reload would
  refill).
- `modelfleet.authn` (Lua, only when the plan takes JWTs, only on routes that do): a token `jwt_authn` already
  verified (signature, issuer, audience, expiry) must carry the route's scope and a tenant claim. It marks the
  request as authenticated for the key check, or refuses it; without a token the key check decides, or, on
  token-only routes, it refuses.

Why C for the key: the Lua filter that did it, handing the key to `basic_auth` for the hash, cost about 10 us of
Envoy CPU per request, most of it Lua's per-request set-up; the module costs about 2 (bench/gateway.py, ADR 0006).

The watched file holds ids and hashes only. `sync` rewrites it from the key file; the gateway calls it at start.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from modelfleet.gateway.plan import (
    API_KEY_HEADER,
    KEY_ID_HEADER,
    KEY_ID_HEX,
    KEY_PREFIX,
    KEY_SECRET_MIN,
    TENANT_HEADER,
    GatewayPlan,
    KeyRecord,
)

# The namespace of both checks' route metadata and audit metadata, and the token check's name: Envoy's Lua filter
# reads route metadata under its own name (h:metadata()); the module names the namespace itself.
AUTHN_FILTER = "modelfleet.authn"
KEYS_FILTER = "modelfleet.keys"  # the key check
MODULE_NAME = "modelfleet_authn"  # the module's filter name (authn.c checks it)
JWT_AUTHN = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "jwt_payload"
TYPE = "type.googleapis.com/"
LUA_TYPE = TYPE + "envoy.extensions.filters.http.lua.v3.Lua"
MODULE_TYPE = TYPE + "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
TABLE_MAGIC = "modelfleet-authn-keys v1"  # authn.c refuses a table without it
DATA = "..data"
NATIVE = Path(__file__).resolve().parent / "native"
# OpenSSL for SHA-1 (libcrypto.so.3 is in every Debian; the headers come from libssl-dev, scripts/install_build_tools.sh).
CC = ["cc", "-O2", "-Wall", "-Werror", "-shared", "-fPIC"]


def _defines() -> list[str]:
    """The constants authn.c shares with Python, as -D flags: the key format and header names are defined once,
    in plan.py and here."""
    values = {"MF_KEY_PREFIX": f"{KEY_PREFIX}_", "MF_KEY_ID_HEX": KEY_ID_HEX, "MF_SECRET_MIN": KEY_SECRET_MIN,
              "MF_API_KEY": API_KEY_HEADER, "MF_TENANT": TENANT_HEADER, "MF_KEY_ID": KEY_ID_HEADER,
              "MF_NS": AUTHN_FILTER, "MF_TABLE_MAGIC": TABLE_MAGIC, "MF_MODULE_NAME": MODULE_NAME}
    return [f"-D{name}={_c_literal(value)}" for name, value in values.items()]


def _c_literal(value: str | int) -> str:
    """A C literal: an int, or printable ASCII with nothing to escape (no quote, no backslash)."""
    if isinstance(value, int):
        return str(value)
    if not all(" " <= c <= "~" and c not in '"\\' for c in value):
        raise ValueError(f"not a plain C string: {value!r}")
    return f'"{value}"'


class ModuleBuildError(RuntimeError):
    """The key check could not be compiled; the message says what to install."""


def module_path(cache: Path | None = None) -> Path:
    """The compiled key check, built once per version of its source (the file name carries the source's hash, so a
    changed source never loads a stale build, and concurrent builds each rename a complete file into place)."""
    sources = [NATIVE / "authn.c", NATIVE / "envoy_abi.h"]
    flags = [*CC, *_defines()]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + " ".join(flags).encode()).hexdigest()[:16]
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelfleet" / "envoy-modules"
    target = cache / f"lib{MODULE_NAME}-{digest}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".lib{MODULE_NAME}-", suffix=".so")
    os.close(fd)
    try:
        built = subprocess.run([*flags, "-o", tmp, str(sources[0]), "-lcrypto"], capture_output=True, text=True)
    except FileNotFoundError:
        built = None
    if built is None or built.returncode != 0:
        Path(tmp).unlink(missing_ok=True)
        detail = built.stderr.strip()[-1500:] if built is not None else "no C compiler (cc) on PATH"
        raise ModuleBuildError(
            f"could not compile the gateway's key check ({sources[0]}): {detail}\n"
            "fix: install a C compiler and OpenSSL's headers (`bash scripts/install_build_tools.sh`, run by "
            "`make setup`; on Debian: apt-get install gcc libc6-dev libssl-dev)")
    os.replace(tmp, target)
    return target


def auth_dir(key_path: Path) -> Path:
    """The files Envoy watches, beside the key file."""
    return key_path.parent / "envoy-auth"


def route_metadata(plan: GatewayPlan, methods: tuple[str, ...], scope: str) -> dict:
    """What the key check and the token check read from a model route (the route's metadata under AUTHN_FILTER)."""
    meta = {"scope": _plain(scope), "methods": ",".join(methods)}
    if plan.jwt is not None:
        meta |= {"tenant_claim": plan.jwt.tenant_claim, "scope_claim": plan.jwt.scope_claim}
    return meta


def _epoch(iso: str | None) -> int | None:
    if not iso:
        return None
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def lua_literal(value: str) -> str:
    """Any string as a Lua (5.1 / LuaJIT) string literal: its UTF-8 bytes, every one outside plain ASCII letters,
    digits and `:._*-` written as a decimal escape. Not json.dumps: LuaJIT has no `\\u` escape, and a tensor name
    like `tëxt` made Envoy refuse the whole script."""
    return '"' + "".join(chr(b) if chr(b) in _PLAIN else f"\\{b:03d}" for b in value.encode()) + '"'


_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:._*-")


def _plain(value: str) -> str:
    # Tenants, scopes and ids are validated to plain identifiers (keys.TENANT, keys.SCOPE); the key table separates
    # its fields with spaces and commas, and the module writes scopes into JSON unescaped. Anything else is a bug.
    if not value or not set(value) <= _PLAIN:
        raise ValueError(f"not a plain identifier: {value!r}")
    return value


def key_table(records: dict[str, KeyRecord]) -> str:
    """The module's config: one line per key, `<id> <sha1 hex> <tenant> <expires> <revoked> <scope,...>`. Keys
    stored before the `{SHA}` form are left out (unknown: they must be re-created, plan.key_hash)."""
    lines = [TABLE_MAGIC, "# key id, SHA-1 of the key, tenant, expiry (unix seconds, 0: none), revoked, scopes"]
    for r in sorted(records.values(), key=lambda r: r.key_id):
        if not r.hash.startswith("{SHA}"):
            continue
        digest = base64.b64decode(r.hash.removeprefix("{SHA}")).hex()
        expires = _epoch(r.expires)
        # 0 means never: an expiry at or before 1970 is written as long past (1), not as never or as a negative.
        expiry = "0" if expires is None else str(max(expires, 1))
        lines.append(" ".join([_plain(r.key_id), digest, _plain(r.tenant), expiry, "1" if r.revoked else "0",
                               ",".join(_plain(s) for s in r.scopes)]))
    return "\n".join(lines) + "\n"


def _document(name: str, typed_config: dict) -> dict:
    """One extension config as Envoy's path_config_source reads it (a DiscoveryResponse's resources)."""
    return {"resources": [{"@type": TYPE + "envoy.config.core.v3.TypedExtensionConfig", "name": name,
                           "typed_config": typed_config}]}


def documents(records: dict[str, KeyRecord], module: Path | None = None) -> dict[str, dict]:
    """{file name: content}: the key check with its table."""
    return {f"{KEYS_FILTER}.yaml": _document(KEYS_FILTER, {
        "@type": MODULE_TYPE,
        # Kept loaded across table updates: each update is a new config of the same module.
        "dynamic_module_config": {"module": {"local": {"filename": str(module or module_path())}},
                                  "do_not_close": True},
        "filter_name": MODULE_NAME,
        "filter_config": {"@type": TYPE + "google.protobuf.StringValue", "value": key_table(records)},
    })}


def jwt_filter(plan: GatewayPlan) -> dict:
    """The token check (Lua; static: it reads no key). Only routes that take tokens turn it on (jwt_route_config)."""
    constants = {"API_KEY": API_KEY_HEADER, "TENANT": TENANT_HEADER, "KEY_ID": KEY_ID_HEADER, "NS": AUTHN_FILTER,
                 "JWT_NS": JWT_AUTHN, "JWT_PAYLOAD": JWT_PAYLOAD}
    header = "\n".join(f"local {k} = {lua_literal(v)}" for k, v in constants.items())
    return {"name": AUTHN_FILTER, "typed_config": {"@type": LUA_TYPE, "default_source_code": {
        "inline_string": f"-- generated by modelfleet.gateway.native_auth\n{header}\n" + _JWT_LUA}}}


def jwt_route_config(methods: tuple[str, ...]) -> dict | None:
    """The token check's per-route switch: off where a route takes no tokens (a Lua filter costs even when it returns
    at once)."""
    if "jwt" in methods:
        return None
    return {"@type": TYPE + "envoy.extensions.filters.http.lua.v3.LuaPerRoute", "disabled": True}


_JWT_LUA = r"""
-- The audit line reads tenant and key id from the request headers (a refused request's too), and the reason of
-- a refusal from the AUTHN_FILTER metadata (envoy_config.audit_loggers). Clients' copies of these headers are gone
-- before any filter (the listener's early header mutation).
local function deny(h, headers, status, reason, message, tenant, key_id)
  if tenant then headers:replace(TENANT, tenant) end
  if key_id then headers:replace(KEY_ID, key_id) end
  h:streamInfo():dynamicMetadata():set(NS, "reason", reason)
  h:respond({[":status"] = tostring(status), ["content-type"] = "application/json"},
            '{"error": "' .. message .. '", "code": "' .. reason .. '"}')
end

local function granted(claim, scope)
  if type(claim) == "string" then
    for s in claim:gmatch("%S+") do
      if s == scope or s == "infer:*" then return true end
    end
  elseif type(claim) == "table" then
    for _, s in ipairs(claim) do
      if s == scope or s == "infer:*" then return true end
    end
  end
  return false
end

function envoy_on_request(h)
  local route = h:metadata()
  local scope = route:get("scope")
  if scope == nil then return end  -- open routes (health, server metadata) and unrouted paths
  local methods = route:get("methods") or ""
  local headers = h:headers()
  local verified = h:streamInfo():dynamicMetadata():get(JWT_NS)
  local claims = verified and verified[JWT_PAYLOAD]
  if claims then  -- jwt_authn has checked signature, issuer, audience and expiry
    local tenant = claims[route:get("tenant_claim")]
    local key_id = "jwt:" .. tostring(claims["jti"] or "-")
    if tenant == nil or tenant == "" then
      return deny(h, headers, 401, "no_tenant_claim", "the token has no " .. route:get("tenant_claim") .. " claim")
    end
    if not granted(claims[route:get("scope_claim")], scope) then
      return deny(h, headers, 403, "scope_denied", "the token lacks scope " .. scope, tostring(tenant), key_id)
    end
    headers:remove(API_KEY)
    headers:replace(TENANT, tostring(tenant))
    headers:replace(KEY_ID, key_id)
    h:streamInfo():dynamicMetadata():set(NS, "principal", "jwt")  -- the key check lets it through
    return
  end
  if methods:find("api-key", 1, true) then return end  -- no token: the key check decides
  return deny(h, headers, 401, "missing_credentials", "this model needs a bearer token")
end
"""


def sync(key_path: Path, start: bool = False) -> None:
    """Rewrite the watched files from the key file, all at once: each name is a link into `..data`, a link to the
    current version's folder, replaced by one rename (Kubernetes' ConfigMap layout, which Envoy's watched
    directory is made for): one event, after which Envoy reads the new version, never a mix. A gateway's `start`
    creates them; before any start there is nothing to keep up to date."""
    from modelfleet.gateway.keys import load  # keys.save calls sync: import here, not at module load

    folder = auth_dir(key_path)
    if not start and not (folder / DATA).is_symlink():
        return
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A running gateway keeps the module it loaded (and `keys create` needs no compiler); a start takes the current.
    module = None if start else _loaded_module(folder)
    files = {name: yaml.safe_dump(doc, sort_keys=False) for name, doc in documents(load(key_path), module).items()}
    version = Path(tempfile.mkdtemp(dir=folder, prefix=".v-"))
    for name, text in files.items():
        fd = os.open(version / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    link = folder / f".{DATA}-{version.name}"
    link.symlink_to(version.name)
    previous = os.readlink(folder / DATA) if (folder / DATA).is_symlink() else None
    os.replace(link, folder / DATA)
    for name in files:
        if not (folder / name).is_symlink():
            (folder / name).unlink(missing_ok=True)
            (folder / name).symlink_to(f"{DATA}/{name}")
    if previous:
        shutil.rmtree(folder / previous, ignore_errors=True)


def _loaded_module(folder: Path) -> Path | None:
    try:
        doc = yaml.safe_load((folder / f"{KEYS_FILTER}.yaml").read_text())
        return Path(doc["resources"][0]["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return None


def ecds_filter(folder: Path) -> dict:
    """The key check, its config loaded from `folder` and reloaded when a file is moved in."""
    return {"name": KEYS_FILTER, "config_discovery": {
        "config_source": {"path_config_source": {"path": str(folder / f"{KEYS_FILTER}.yaml"),
                                                 "watched_directory": {"path": str(folder)}}},
        "type_urls": [MODULE_TYPE]}}
