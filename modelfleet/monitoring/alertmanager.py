"""Alertmanager's configuration from the specs: one route per model owner, the spec's extra receivers per model.

No secret is in the file: the SMTP password and every webhook URL are read from files (`*_file` fields,
Alertmanager >= 0.25) under one secrets folder — in the clusters the Secret `SECRET_NAME` that the Alertmanager
resource mounts at /etc/alertmanager/secrets/<name>/ (prometheus-operator's `spec.secrets`); locally a folder the
runner creates.
"""

from __future__ import annotations

import re

from modelfleet.monitoring.rules import MonitoringPlan

SECRET_NAME = "modelfleet-alertmanager"
CLUSTER_SECRETS_DIR = f"/etc/alertmanager/secrets/{SECRET_NAME}"
SMTP_PASSWORD_KEY = "smtp-password"
PLATFORM_RECEIVER = "modelfleet-platform"  # alerts without an owner (none today) and the default route
GROUP_BY = ["alertname", "model", "slo"]
REPEAT = {"page": "1h", "ticket": "12h", "warning": "4h"}


def receiver_name(owner: str) -> str:
    return "owner-" + re.sub(r"[^a-z0-9]+", "-", owner.lower()).strip("-")


def _webhook(key: str, secrets_dir: str) -> dict:
    # Slack-compatible incoming webhooks (Slack, Mattermost, Teams connectors): the URL is the secret.
    return {"slack_configs": [{"api_url_file": f"{secrets_dir}/{key}", "send_resolved": True}]}


def secret_keys(plan: MonitoringPlan) -> list[str]:
    """The keys the secret must hold: what an operator fills in before alerts can leave the cluster."""
    keys = {SMTP_PASSWORD_KEY, PLATFORM_RECEIVER}
    for mm in plan.models:
        if "@" not in mm.owner:
            keys.add(receiver_name(mm.owner))
        keys.update(mm.receivers)
    return sorted(keys)


def alertmanager_config(plan: MonitoringPlan, dns_domain: str, secrets_dir: str = CLUSTER_SECRETS_DIR) -> dict:
    receivers: dict[str, dict] = {PLATFORM_RECEIVER: _webhook(PLATFORM_RECEIVER, secrets_dir)}
    routes = []
    for mm in plan.models:
        # The spec's extra receivers first, `continue` so the owner is still paged.
        for extra in mm.receivers:
            receivers.setdefault(extra, _webhook(extra, secrets_dir))
            routes.append({"receiver": extra, "matchers": [f'model="{mm.model}"'], "continue": True})
    for owner in sorted({mm.owner for mm in plan.models}):
        name = receiver_name(owner)
        receivers[name] = ({"email_configs": [{"to": owner, "send_resolved": True}]} if "@" in owner
                           else _webhook(name, secrets_dir))
        routes.append({
            "receiver": name, "matchers": [f'owner="{owner}"'],
            "routes": [{"receiver": name, "matchers": [f'severity="{sev}"'], "repeat_interval": every}
                       for sev, every in REPEAT.items()],
        })
    return {
        "global": {
            "resolve_timeout": "5m",
            "smtp_smarthost": f"smtp.{dns_domain}:587",
            "smtp_from": f"alerts@{dns_domain}",
            "smtp_auth_username": f"alerts@{dns_domain}",
            "smtp_auth_password_file": f"{secrets_dir}/{SMTP_PASSWORD_KEY}",
            "smtp_require_tls": True,
        },
        "route": {"receiver": PLATFORM_RECEIVER, "group_by": GROUP_BY, "group_wait": "30s",
                  "group_interval": "5m", "repeat_interval": "4h", "routes": routes},
        # A page silences the same model's lesser alerts on the same SLO.
        "inhibit_rules": [{"source_matchers": ['severity="page"'], "target_matchers": ['severity=~"ticket|warning"'],
                           "equal": ["model", "slo"]}],
        "receivers": [{"name": n, **cfg} for n, cfg in sorted(receivers.items())],
    }
