"""Local "regions": a gateway that fails over to a peer region's gateway, and the peer certificates it needs.

The certificates are made here for the local machine only (a throwaway CA under the run's folder); in the cloud
the peer CA and each region's certificate are secrets like the gateway's TLS certificate
(docs/adr/0003-global-routing.md).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelfleet.gateway.envoy_config import envoy_bootstrap
from modelfleet.gateway.local import LocalGateway
from modelfleet.routing.envoy_failover import PeerTls, peer_name, with_failover

CERT_DAYS = 2


def _write(path: Path, data: bytes, private: bool = False) -> str:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return str(path)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def peer_certificates(folder: Path, regions: list[str]) -> dict[str, PeerTls]:
    """A fleet peer CA and one certificate per region (SAN `<region>.peer.modelfleet`, server and client use)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelfleet peer CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_file = _write(folder / "peer-ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    out = {}
    for region in regions:
        key = _key()
        name = peer_name(region)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        key_name = region.replace(":", "-")
        out[region] = PeerTls(ca=ca_file,
                              cert=_write(folder / f"{key_name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                              key=_write(folder / f"{key_name}-key.pem", _pem_key(key), private=True))
    return out


class RegionalGateway(LocalGateway):
    """A LocalGateway whose Triton clusters fail over to `peer_region`'s gateway (its peer listener)."""

    def __init__(self, *args, peer_listen_port: int, peer_port: int, peer_region: str, tls: PeerTls, **kwargs):
        super().__init__(*args, **kwargs)
        self.peer_listen_port, self.peer_port, self.peer_region, self.tls = peer_listen_port, peer_port, peer_region, tls

    def write_config(self) -> Path:
        self.write_auth()
        config = with_failover(envoy_bootstrap(self.plan, self.ports, str(self.audit_path), self.jwks_file,
                                               self.auth_folder),
                               peer_listen_port=self.peer_listen_port, peer_port=self.peer_port,
                               peer_region=self.peer_region, tls=self.tls)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return self.config_path
