"""The registry over HTTPS, and registry credentials that never reach a terminal."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mesh.config import Settings, redact_url
from mesh.dev.stack import ManagedProcess, free_port, start_registry
from mesh.testing import unique_name

INT = json.dumps({"type": "record", "name": "E", "fields": [{"name": "a", "type": "int"}]})
PASSWORD = "s3cret-pw"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    if not ca:
        address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    """A private CA, and a server and a client certificate it signed (PEM files)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("mesh test CA", ca_key.public_key(), _name("mesh test CA"), ca_key, ca=True)
    files = {"ca": _write(tmp_path, "ca", ca, ca_key)[0]}
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(role, key.public_key(), ca.subject, ca_key, ca=False)
        files[role], files[f"{role}_key"] = _write(tmp_path, role, cert, key)
    return files


def test_a_client_trusting_the_registrys_ca_registers_and_reads_over_https(
    mesh_bootstrap_servers: str,
    certificates: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    eventually: Callable[..., None],
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["ca"]))  # registries trust each other
    topic = unique_name("_schemas")
    registries: list[ManagedProcess] = []
    try:
        for n in range(2):
            registries.append(
                start_registry(
                    bootstrap_servers=mesh_bootstrap_servers,
                    port=free_port(),
                    log_dir=tmp_path / f"registry-{n}",
                    topic=topic,
                    tls=(certificates["server"], certificates["server_key"]),
                )
            )
            eventually(lambda: "this registry is the primary" in registries[0].log_path.read_text())
        primary, other = registries
        assert other.url.startswith("https://")
        settings = Settings(
            bootstrap_servers=mesh_bootstrap_servers,
            registry_url=other.url,
            registry_ssl_ca_location=str(certificates["ca"]),
            registry_ssl_certificate_location=str(certificates["client"]),
            registry_ssl_key_location=str(certificates["client_key"]),
        )
        # written through the other registry: forwarded to the primary over HTTPS
        schema_id = SchemaRegistryClient(settings.registry_config()).register_schema(
            "s", Schema(INT, "AVRO")
        )
        fetched = SchemaRegistryClient(settings.registry_config()).get_schema(schema_id)
        assert json.loads(fetched.schema_str) == json.loads(INT)
        monkeypatch.delenv("SSL_CERT_FILE")
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):  # no CA: not trusted
            SchemaRegistryClient({"url": primary.url}).get_subjects()
    finally:
        for registry in registries:
            registry.stop()


def test_a_registry_url_is_shown_without_its_password() -> None:
    assert redact_url(f"https://alice:{PASSWORD}@registry:8081/x") == (
        "https://alice:**********@registry:8081/x"
    )
    assert redact_url("http://registry:8081") == "http://registry:8081"
    shown = Settings(registry_url=f"http://alice:{PASSWORD}@registry").redacted()
    assert PASSWORD not in json.dumps(shown)


@pytest.mark.parametrize("command", [["config", "show"], ["schema", "list"]])
def test_the_cli_never_prints_the_registry_password(
    command: list[str], mesh_bootstrap_servers: str, mesh_registry_url: str, tmp_path: Path
) -> None:
    with_password = mesh_registry_url.replace("://", f"://alice:{PASSWORD}@", 1)
    env = {
        **os.environ,
        "MESH_BOOTSTRAP_SERVERS": mesh_bootstrap_servers,
        "MESH_REGISTRY_URL": with_password,
    }
    done = subprocess.run(
        [sys.executable, "-m", "mesh", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=tmp_path,  # no mesh.toml
    )
    assert done.returncode == 0, done.stderr
    assert "alice:**********@" in done.stdout + done.stderr
    assert PASSWORD not in done.stdout + done.stderr
