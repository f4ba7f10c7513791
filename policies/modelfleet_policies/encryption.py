"""Encryption: Kubernetes secrets under a customer-managed key that rotates, encrypted node disks, TLS on every
public listener."""

from __future__ import annotations

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation, ResourceValidationArgs,
                           ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy)

from ._util import annotations_of, config, get, items, present, short, truthy

# ---------------------------------------------------------------- secrets encrypted with a customer key


def _secrets_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    if t == "aws:eks/cluster:Cluster":
        configs = items(get(p, "encryptionConfig"))
        ok = any(present(c, "provider", "keyArn") and "secrets" in [str(r) for r in items(get(c, "resources"))]
                 for c in configs)
        if not ok:
            report(f"{who}: Kubernetes secrets are not envelope-encrypted with a customer-managed KMS key "
                   "(encryptionConfig with provider.keyArn and resources ['secrets'] is missing). Fix: create an "
                   "aws.kms.Key (enable_key_rotation=True) and pass encryption_config={'provider': {'key_arn': "
                   "key.arn}, 'resources': ['secrets']}.")
    elif t == "gcp:container/cluster:Cluster":
        enc = get(p, "databaseEncryption")
        if str(get(enc, "state", default="DECRYPTED")).upper() != "ENCRYPTED" or not present(enc, "keyName"):
            report(f"{who}: application-layer secrets encryption is off (databaseEncryption must be state ENCRYPTED "
                   "with a Cloud KMS keyName). Fix: create a gcp.kms.CryptoKey, grant the GKE service agent "
                   "roles/cloudkms.cryptoKeyEncrypterDecrypter on it, and set database_encryption={'state': "
                   "'ENCRYPTED', 'key_name': key.id}.")


secrets_encrypted = ResourceValidationPolicy(
    name="secrets-encrypted-with-customer-key",
    description="EKS and GKE clusters encrypt Kubernetes secrets with a customer-managed KMS key.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_secrets_encrypted,
)

# ---------------------------------------------------------------- encrypted disks


def _encrypted_disks(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    if t == "aws:ec2/launchTemplate:LaunchTemplate":
        mappings = items(get(p, "blockDeviceMappings"))
        if not mappings:
            report(f"{who}: no blockDeviceMappings, so the root volume takes the AMI's default and is unencrypted "
                   "unless the account enables EBS encryption by default. Fix: block_device_mappings=[{'device_name':"
                   " '/dev/xvda', 'ebs': {'encrypted': 'true', 'volume_type': 'gp3', ...}}].")
        for i, m in enumerate(mappings):
            ebs = get(m, "ebs")
            if ebs is not None and not truthy(get(ebs, "encrypted")):
                report(f"{who}: blockDeviceMappings[{i}] ({get(m, 'deviceName', default='?')}) is not encrypted. "
                       "Fix: set ebs.encrypted='true' (optionally kms_key_id to use a customer key).")
    elif t == "aws:eks/nodeGroup:NodeGroup":
        if not present(p, "launchTemplate") and not truthy(config(args, "account_ebs_encryption_by_default", False)):
            report(f"{who}: the node group has no launch template, so its disks use the account's EBS default, which "
                   "is unencrypted unless enabled. Fix: give it a launch template with encrypted block devices, or "
                   "enable aws.ebs.EncryptionByDefault in every region and set account_ebs_encryption_by_default: "
                   "true for this policy in policies/config/<stack>.json.")
    elif t == "aws:ec2/instance:Instance":
        devices = [("rootBlockDevice", get(p, "rootBlockDevice"))] + [
            (f"ebsBlockDevices[{i}]", d) for i, d in enumerate(items(get(p, "ebsBlockDevices")))]
        for where, device in devices:
            if device is None and where == "rootBlockDevice":
                device = {}
            if not truthy(get(device, "encrypted")):
                report(f"{who}: {where} is not encrypted. Fix: set encrypted=True on it.")
    elif t == "aws:ebs/volume:Volume":
        if not truthy(get(p, "encrypted")):
            report(f"{who}: the EBS volume is not encrypted. Fix: encrypted=True (and kms_key_id for a customer key).")
    elif t == "gcp:container/nodePool:NodePool" and truthy(config(args, "require_cmek_on_gcp_disks", False)):
        if not present(p, "nodeConfig", "bootDiskKmsKey"):
            report(f"{who}: boot disks use Google-managed keys, but this stack requires customer-managed keys. "
                   "Fix: node_config boot_disk_kms_key=<Cloud KMS key id>.")


encrypted_disks = ResourceValidationPolicy(
    name="encrypted-node-disks",
    description="Node and instance disks are encrypted (EBS encryption on AWS; optionally CMEK boot disks on GCP).",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "account_ebs_encryption_by_default": {
            "type": "boolean", "default": False,
            "description": "The AWS accounts enforce EBS encryption by default, so node groups may omit a launch template."},
        "require_cmek_on_gcp_disks": {"type": "boolean", "default": False,
                                      "description": "Require customer-managed keys on GKE boot disks."},
    }),
    validate=_encrypted_disks,
)

# ---------------------------------------------------------------- TLS on public listeners

_INTERNAL_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-internal": ("true", "0.0.0.0/0"),
    "service.beta.kubernetes.io/aws-load-balancer-scheme": ("internal",),
    "networking.gke.io/load-balancer-type": ("internal",),
    "cloud.google.com/load-balancer-type": ("internal",),
    "alb.ingress.kubernetes.io/scheme": ("internal",),
    "kubernetes.io/ingress.class": ("gce-internal",),
}


def _internal(annotations: dict) -> bool:
    return any(str(annotations.get(k, "")).lower() in v for k, v in _INTERNAL_ANNOTATIONS.items())


def _tls(args: StackValidationArgs, report: ReportViolation) -> None:
    passthrough = {int(x) for x in config(args, "allow_tcp_passthrough_ports", [])}
    for r in args.resources:
        t, p, who = r.resource_type, r.props, short(r.urn)
        if t in ("aws:lb/listener:Listener", "aws:alb/listener:Listener"):
            protocol = str(get(p, "protocol", default="HTTP")).upper()
            lbs = [d for d in r.dependencies if d.resource_type in ("aws:lb/loadBalancer:LoadBalancer",
                                                                   "aws:alb/loadBalancer:LoadBalancer")]
            if any(truthy(get(lb.props, "internal")) for lb in lbs) or protocol in ("HTTPS", "TLS"):
                continue
            actions = items(get(p, "defaultActions"))
            if protocol == "HTTP" and actions and all(
                    get(a, "type") == "redirect" and str(get(a, "redirect", "protocol", default="")).upper() == "HTTPS"
                    for a in actions):
                continue
            if protocol in ("TCP", "TCP_UDP") and int(get(p, "port", default=0)) in passthrough:
                continue
            report(f"{who}: a public load balancer listener on port {get(p, 'port', default='?')} speaks {protocol}, "
                   "not TLS. Fix: protocol 'HTTPS' (ALB) or 'TLS' (NLB) with an ACM certificate_arn and a "
                   "TLS 1.2+ ssl_policy; keep port 80 only as a redirect to HTTPS.", r.urn)
        elif t == "kubernetes:networking.k8s.io/v1:Ingress":
            ann = annotations_of(p)
            if _internal(ann) or get(p, "spec", "ingressClassName") == "gce-internal":
                continue
            tls = items(get(p, "spec", "tls"))
            hosts = {str(h) for h in (get(rule, "host") for rule in items(get(p, "spec", "rules"))) if h}
            covered = {str(h) for entry in tls for h in items(get(entry, "hosts"))}
            if not tls:
                report(f"{who}: the public Ingress has no spec.tls, so it serves plain HTTP. Fix: add spec.tls with "
                       "the hosts and a certificate secret (or the cloud's managed certificate annotation).", r.urn)
            elif hosts - covered and covered:
                report(f"{who}: hosts {', '.join(sorted(hosts - covered))} are not covered by spec.tls. Fix: list "
                       "them under spec.tls[].hosts.", r.urn)
        elif t == "kubernetes:core/v1:Service" and get(p, "spec", "type") == "LoadBalancer":
            ann = annotations_of(p)
            if _internal(ann) or "service.beta.kubernetes.io/aws-load-balancer-ssl-cert" in ann:
                continue
            report(f"{who}: a public LoadBalancer Service passes traffic without TLS. Fix: annotate it internal "
                   "(service.beta.kubernetes.io/aws-load-balancer-scheme: internal, networking.gke.io/"
                   "load-balancer-type: Internal) and expose it through the TLS gateway, or terminate TLS with "
                   "service.beta.kubernetes.io/aws-load-balancer-ssl-cert.", r.urn)
        elif t == "gcp:compute/targetHttpProxy:TargetHttpProxy":
            maps = [d for d in r.dependencies if d.resource_type == "gcp:compute/uRLMap:URLMap"]
            if maps and all(truthy(get(m.props, "defaultUrlRedirect", "httpsRedirect")) for m in maps):
                continue
            report(f"{who}: a target HTTP proxy serves plain HTTP. Fix: serve through a TargetHttpsProxy with a "
                   "managed SSL certificate; keep an HTTP proxy only with a URL map whose default_url_redirect has "
                   "https_redirect=True.", r.urn)


tls_on_public_listeners = StackValidationPolicy(
    name="tls-on-public-listeners",
    description="Every public listener (AWS LB listeners, Kubernetes Ingresses and LoadBalancer Services, GCP HTTP "
                "proxies) terminates TLS; plain HTTP only redirects to HTTPS.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "allow_tcp_passthrough_ports": {
            "type": "array", "items": {"type": "integer"}, "default": [],
            "description": "NLB TCP listener ports whose backends terminate TLS themselves."},
    }),
    validate=_tls,
)

# ---------------------------------------------------------------- key rotation

_SECONDS_PER_DAY = 86_400


def _gcp_period_days(period: str) -> float | None:
    """Cloud KMS rotation periods are seconds with an `s` suffix ("7776000s")."""
    try:
        return float(str(period).strip().removesuffix("s")) / _SECONDS_PER_DAY
    except ValueError:
        return None


def _rotation(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    max_days = int(config(args, "max_rotation_days", 365))
    if t == "aws:kms/key:Key":
        spec = str(get(p, "customerMasterKeySpec", default=get(p, "keySpec", default="SYMMETRIC_DEFAULT")))
        if spec != "SYMMETRIC_DEFAULT" or str(get(p, "keyUsage", default="ENCRYPT_DECRYPT")) != "ENCRYPT_DECRYPT":
            return  # AWS rotates only symmetric encryption keys automatically
        if not truthy(get(p, "enableKeyRotation")):
            report(f"{who}: enableKeyRotation is not true, so the key material never changes (AWS's default is off). "
                   f"Fix: enable_key_rotation=True, rotation_period_in_days<={max_days}.")
        elif int(get(p, "rotationPeriodInDays", default=365)) > max_days:
            report(f"{who}: rotationPeriodInDays is {get(p, 'rotationPeriodInDays')}, above this stack's "
                   f"{max_days}. Fix: rotation_period_in_days<={max_days}.")
    elif t == "gcp:kms/cryptoKey:CryptoKey":
        if str(get(p, "purpose", default="ENCRYPT_DECRYPT")) != "ENCRYPT_DECRYPT":
            return  # Cloud KMS rotates only symmetric encryption keys automatically
        period = get(p, "rotationPeriod")
        days = _gcp_period_days(period) if period is not None else None
        if period is None:
            report(f"{who}: no rotationPeriod, so Cloud KMS never rotates the key. Fix: "
                   f"rotation_period='{min(max_days, 90) * _SECONDS_PER_DAY}s' (at most {max_days} days).")
        elif days is None or days > max_days:
            report(f"{who}: rotationPeriod {period} is above this stack's {max_days} days. Fix: "
                   f"rotation_period='{max_days * _SECONDS_PER_DAY}s' or less.")


kms_key_rotation = ResourceValidationPolicy(
    name="kms-key-rotation",
    description="Customer-managed encryption keys rotate automatically (AWS enable_key_rotation, GCP "
                "rotation_period), at most every max_rotation_days.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "max_rotation_days": {"type": "integer", "default": 365, "minimum": 1,
                              "description": "Longest rotation period allowed, in days."},
    }),
    validate=_rotation,
)

POLICIES = [secrets_encrypted, encrypted_disks, tls_on_public_listeners, kms_key_rotation]
