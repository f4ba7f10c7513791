"""API keys checked inside the local Envoy: no call out of the proxy on the request path (ADR 0004).

Two native filters per request, both loaded from files Envoy watches (extension config discovery, ECDS, with a
`path_config_source` and a `watched_directory`), so `keys create|revoke` reach the running gateway within
milliseconds, without a restart, and without touching the listener or the routes (whose per-route
`local_ratelimit` buckets a reload would refill):

- `modelfleet.authn` (Lua): who is calling. For a key it reads the public key id from `x-api-key`, looks it up in a
  table of ids (tenant, scopes, expiry, revoked; no secret, no hash) and refuses malformed, unknown, revoked,
  expired and out-of-scope keys with the same JSON codes as before; for a JWT that `jwt_authn` already verified it
  checks the scope and tenant claims. It sets the tenant and key-id headers (replacing client copies) and the
  audit metadata, and hands the key to the next filter as a Basic credential (`<key id>:<key>`).
- `modelfleet.keys.<scope>` (`basic_auth`, one per scope, enabled only on that scope's routes): the secret itself,
  against `{SHA}` hashes of the scope's live keys (htpasswd). A forged secret fails here; the Lua table alone admits
  nobody.

The files hold hashes and ids only, never a key. `sync` rewrites them from the key file; the gateway calls it at
start with the plan's scopes (kept in `scopes.json` beside them, so `keys create|revoke` know what to write).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from modelfleet.gateway.manifests import scope_slug
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

AUTHN_FILTER = "modelfleet.authn"  # the Lua filter; also the namespace of its route metadata and audit metadata
KEYS_FILTER_PREFIX = "modelfleet.keys."
# Where the Lua filter hands the key to basic_auth; removed on every model route before Triton.
BASIC_HEADER = "x-modelfleet-basic"
JWT_AUTHN = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "jwt_payload"
TYPE = "type.googleapis.com/"
LUA_TYPE = TYPE + "envoy.extensions.filters.http.lua.v3.Lua"
BASIC_AUTH_TYPE = TYPE + "envoy.extensions.filters.http.basic_auth.v3.BasicAuth"
SCOPES_FILE = "scopes.json"
DATA = "..data"
# Envoy rejects an htpasswd it cannot parse; a scope without keys gets this user, whom no key id can name (ids are
# hex) and whose hash no password has (sha1 of nothing is not it).
NOBODY = "-:{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA="


def auth_dir(key_path: Path) -> Path:
    """The files Envoy watches, beside the key file."""
    return key_path.parent / "envoy-auth"


def keys_filter(scope: str) -> str:
    return KEYS_FILTER_PREFIX + scope_slug(scope)


def scope_filters(plan: GatewayPlan) -> dict[str, bool]:
    """{scope: allow_missing} for the plan's API-key scopes. A scope some route also opens to JWTs lets requests
    without a key through basic_auth (the Lua filter has then checked the token); otherwise a missing key stops
    there too."""
    out: dict[str, bool] = {}
    for route in plan.routes:
        if "api-key" in route.auth.methods:
            out[route.auth.scope] = out.get(route.auth.scope, False) or "jwt" in route.auth.methods
    return out


def route_metadata(plan: GatewayPlan, methods: tuple[str, ...], scope: str) -> dict:
    """What the Lua filter reads from a model route (Envoy: the route's metadata under the filter's name)."""
    meta = {"scope": scope, "methods": ",".join(methods)}
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
    return '"' + "".join(chr(b) if chr(b) in _LUA_PLAIN else f"\\{b:03d}" for b in value.encode()) + '"'


_LUA_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:._*-")


def _lua_str(value: str) -> str:
    # Tenants, scopes and ids are validated to plain identifiers; anything else here is a bug upstream.
    if not re.fullmatch(r"[A-Za-z0-9:._*-]*", value):
        raise ValueError(f"not a plain identifier: {value!r}")
    return lua_literal(value)


def lua_source(records: dict[str, KeyRecord]) -> str:
    rows = []
    for r in sorted(records.values(), key=lambda r: r.key_id):
        scopes = ", ".join(f"[{_lua_str(s)}] = true" for s in r.scopes)
        expires = _epoch(r.expires)
        rows.append(f"  [{_lua_str(r.key_id)}] = {{tenant = {_lua_str(r.tenant)}, scopes = {{{scopes}}}, "
                    f"expires = {expires if expires is not None else 'nil'}, revoked = {str(bool(r.revoked)).lower()}, "
                    f"current = {str(r.hash.startswith('{SHA}')).lower()}}},")
    constants = {"API_KEY": API_KEY_HEADER, "BASIC": BASIC_HEADER, "TENANT": TENANT_HEADER, "KEY_ID": KEY_ID_HEADER,
                 "NS": AUTHN_FILTER, "JWT_NS": JWT_AUTHN, "JWT_PAYLOAD": JWT_PAYLOAD,
                 "KEY_PATTERN": f"^{KEY_PREFIX}_([0-9a-f]+)_([%w_%-]+)$"}
    header = "\n".join(f"local {k} = {lua_literal(v)}" for k, v in constants.items())
    return (f"-- generated by modelfleet.gateway.native_auth from the key file: ids and state, never a key\n"
            f"local KEYS = {{\n{chr(10).join(rows)}\n}}\n{header}\n"
            f"local KEY_ID_LEN, SECRET_MIN = {KEY_ID_HEX}, {KEY_SECRET_MIN}\n" + _LUA_BODY)


_LUA_BODY = r"""
-- The audit line reads tenant and key id from the request headers (a refused request's too), and the reason of
-- a refusal from this filter's metadata (envoy_config.audit_loggers).
-- Clients' copies of these headers are gone before any filter (the listener's early header mutation).
local function deny(h, headers, status, reason, message, tenant, key_id)
  if tenant then headers:replace(TENANT, tenant) end
  if key_id then headers:replace(KEY_ID, key_id) end
  h:streamInfo():dynamicMetadata():set(NS, "reason", reason)
  h:respond({[":status"] = tostring(status), ["content-type"] = "application/json"},
            '{"error": "' .. message .. '", "code": "' .. reason .. '"}')
end

local function allow(headers, tenant, key_id)
  headers:replace(TENANT, tenant)
  headers:replace(KEY_ID, key_id)
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
  local headers = h:headers()
  local route = h:metadata()
  local scope = route:get("scope")
  if scope == nil then return end  -- open routes (health, server metadata) and unrouted paths
  local methods = route:get("methods") or ""
  local by_key = methods:find("api-key", 1, true) ~= nil
  if methods:find("jwt", 1, true) then
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
      return allow(headers, tostring(tenant), key_id)
    end
  end
  local key = headers:get(API_KEY)
  if key and by_key then
    headers:remove(API_KEY)  -- the key stops here: basic_auth gets it in BASIC, which no route forwards
    local key_id, secret = key:match(KEY_PATTERN)
    if key_id == nil or #key_id ~= KEY_ID_LEN or #secret < SECRET_MIN then
      return deny(h, headers, 401, "malformed_key", "the API key is malformed")
    end
    local rec = KEYS[key_id]
    if rec == nil or not rec.current then
      return deny(h, headers, 401, "unknown_key", "the API key is not valid")
    end
    if rec.revoked then
      return deny(h, headers, 401, "revoked_key", "the API key has been revoked", rec.tenant, key_id)
    end
    if rec.expires and rec.expires <= os.time() then
      return deny(h, headers, 401, "expired_key", "the API key has expired", rec.tenant, key_id)
    end
    if not (rec.scopes[scope] or rec.scopes["infer:*"]) then
      return deny(h, headers, 403, "scope_denied", "the API key does not grant " .. scope, rec.tenant, key_id)
    end
    headers:replace(BASIC, "Basic " .. h:base64Escape(key_id .. ":" .. key))
    return allow(headers, rec.tenant, key_id)
  end
  local wanted = "a bearer token"
  if by_key and methods:find("jwt", 1, true) then
    wanted = "an " .. API_KEY .. " header or a bearer token"
  elseif by_key then
    wanted = "an " .. API_KEY .. " header"
  end
  return deny(h, headers, 401, "missing_credentials", "this model needs " .. wanted)
end
"""


def htpasswd(records: dict[str, KeyRecord], scope: str, now: dt.datetime | None = None) -> str:
    """The scope's live keys as `<key id>:{SHA}<hash>` lines (revoked and expired keys left out)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    lines = [f"{r.key_id}:{r.hash}" for r in sorted(records.values(), key=lambda r: r.key_id)
             if r.allows(scope) and not r.revoked and r.hash.startswith("{SHA}")
             and (not r.expires or _epoch(r.expires) > now.timestamp())]
    return "\n".join(lines or [NOBODY]) + "\n"


def _document(name: str, typed_config: dict) -> dict:
    """One extension config as Envoy's path_config_source reads it (a DiscoveryResponse's resources)."""
    return {"resources": [{"@type": TYPE + "envoy.config.core.v3.TypedExtensionConfig", "name": name,
                           "typed_config": typed_config}]}


def documents(records: dict[str, KeyRecord], scopes: dict[str, bool]) -> dict[str, dict]:
    """{file name: content} for the Lua filter and each scope's basic_auth."""
    out = {f"{AUTHN_FILTER}.yaml": _document(AUTHN_FILTER, {
        "@type": LUA_TYPE, "default_source_code": {"inline_string": lua_source(records)}})}
    for scope, allow_missing in sorted(scopes.items()):
        name = keys_filter(scope)
        out[f"{name}.yaml"] = _document(name, {
            "@type": BASIC_AUTH_TYPE,
            "users": {"inline_string": htpasswd(records, scope)},
            "authentication_header": BASIC_HEADER,
            "allow_missing": allow_missing,
        })
    return out


def sync(key_path: Path, scopes: dict[str, bool] | None = None) -> None:
    """Rewrite the watched files from the key file, all at once: each name is a link into `..data`, a link to the
    current version's folder, replaced by one rename (Kubernetes' ConfigMap layout, which Envoy's watched
    directory is made for): one event, after which every filter reads the new version, never a mix. Without
    `scopes`, those of the last gateway start; before any start there is nothing to write."""
    from modelfleet.gateway.keys import load  # keys.save calls sync: import here, not at module load

    folder = auth_dir(key_path)
    if scopes is None:
        try:
            scopes = json.loads((folder / SCOPES_FILE).read_text())
        except FileNotFoundError:
            return
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {SCOPES_FILE: json.dumps(scopes, sort_keys=True)} | {
        name: yaml.safe_dump(doc, sort_keys=False) for name, doc in documents(load(key_path), scopes).items()}
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


def ecds_filter(name: str, folder: Path, type_url: str, disabled: bool = False) -> dict:
    """An HTTP filter whose config Envoy loads from `folder` and reloads when a file is moved in."""
    flt = {"name": name, "config_discovery": {
        "config_source": {"path_config_source": {"path": str(folder / f"{name}.yaml"),
                                                 "watched_directory": {"path": str(folder)}}},
        "type_urls": [type_url]}}
    if disabled:
        flt["disabled"] = True  # enabled only on the routes that name it
    return flt
