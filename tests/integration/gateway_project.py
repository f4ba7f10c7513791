"""A throwaway project for the gateway tests: the example models plus `notes` (a text-answering fixture model,
PII masked) and `notes-block` (PII blocked), with gateway settings small enough to hit in a test, and a JWT issuer
whose keys the test holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.project import copy_project

ROOT = Path(__file__).resolve().parents[2]
NOTES_ARTEFACTS = ROOT / "tests" / "fixtures" / "gateway" / "notes"
ISSUER, AUDIENCE = "https://auth.example.com/", "modelfleet-test"
# Small on purpose: a test reaches each limit in a few requests. Each test uses its own tenant, so their
# buckets never meet.
FRAUD_BURST = 20
NOTES_PER_DAY = 8
SENTIMENT_MAX_BODY = 65536
SENTIMENT_MAX_ELEMENT = 2048

NOTES = """name: {name}
owner: test@example.com
source: {{local: {source}}}
backend: python
inputs: [{{name: text, dtype: BYTES, dims: [1]}}]
outputs: [{{name: reply, dtype: BYTES, dims: [1]}}]
max_batch_size: 8
hardware: {{gpu_class: cpu, gpus_per_replica: 0}}
slo: {{p99_ms: 100}}
gateway:
  rate_limit: {{requests_per_second: 100, requests_per_day: {per_day}}}
  pii: {{mode: {mode}}}
  audit: {{payloads: {payloads}}}
"""


def make_project(root: Path) -> dict:
    copy_project(root, link_artefacts=True)
    fraud = root / "models" / "fraud-detector.yaml"
    text = fraud.read_text()
    fraud.write_text(text[:text.index("gateway:")] + f"""gateway:
  rate_limit: {{requests_per_second: 1, burst: {FRAUD_BURST}}}
  pii: {{mode: "off"}}
  fail_mode: open
""")
    sentiment = root / "models" / "sentiment.yaml"
    sentiment.write_text(sentiment.read_text().replace("gateway:\n", f"""gateway:
  auth: [api-key, jwt]
  rate_limit: {{requests_per_second: 1000}}
  max_request_bytes: {SENTIMENT_MAX_BODY}
"""))
    for name, mode, payloads in (("notes", "mask", "true"), ("notes-block", "block", "false")):
        (root / "models" / f"{name}.yaml").write_text(
            NOTES.format(name=name, source=NOTES_ARTEFACTS, per_day=NOTES_PER_DAY, mode=mode, payloads=payloads))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (root / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "test", "alg": "RS256", "use": "sig"}]}))
    (root / "stacks" / "Pulumi.local.yaml").write_text(f"""config:
  modelfleet:environment: local
  modelfleet:models: [fraud-detector, sentiment, notes, notes-block]
  modelfleet:budget_monthly_usd: 1
  modelfleet:dns_domain: localhost.localdomain
  modelfleet:gateway:
    jwt: {{issuer: "{ISSUER}", audiences: [{AUDIENCE}], jwks_file: jwks.json}}
""")
    return {"root": root, "signing_key": key}


def token(signing_key, scope: str, tenant: str = "jwt-tenant", expires_in: int = 300, audience: str = AUDIENCE,
          issuer: str = ISSUER) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "sub": tenant, "scope": scope, "iat": now, "exp": now + expires_in,
              "jti": f"t{now}"}
    return pyjwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": "test"})
