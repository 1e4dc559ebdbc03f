"""Certificates and SSH keys match what Docker Machine 0.16 produced, field by field."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pymachine.machine import certs
from pymachine.machine.certs import (
    CertPaths,
    bootstrap_certificates,
    cert_covers_host,
    cert_sans,
    current_user_org,
    generate_ca,
    generate_client_cert,
    generate_server_cert,
    generate_ssh_keypair,
    is_expired,
    validate_pair,
)
from pymachine.machine.errors import MachineError

REPO = Path(__file__).resolve().parents[2]
OPENSSL = shutil.which("openssl")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def fingerprint(path: Path) -> str:
    return load(path).fingerprint(hashes.SHA256()).hex()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


def subject_attrs(cert: x509.Certificate) -> list[tuple[str, str]]:
    return [(a.oid.dotted_string, a.value) for a in cert.subject]


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("USER", "alice")
    return "alice"


@pytest.fixture
def store(tmp_path: Path, user: str) -> CertPaths:
    """A freshly bootstrapped certs dir (CA + client cert)."""
    paths = CertPaths.in_dir(tmp_path / "certs")
    assert bootstrap_certificates(paths, log=lambda _m: None) is True
    return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One CA, client, server and swarm-master cert shared by the read-only tests."""
    root = tmp_path_factory.mktemp("pki")
    old = os.environ.get("USER")
    os.environ["USER"] = "bob"
    try:
        paths = CertPaths.in_dir(root / "certs")
        bootstrap_certificates(paths, log=lambda _m: None)
    finally:
        if old is None:
            del os.environ["USER"]
        else:
            os.environ["USER"] = old
    machine = root / "machines" / "m1"
    machine.mkdir(parents=True)
    generate_server_cert(
        paths, machine / "server.pem", machine / "server-key.pem", "bob.m1",
        ["10.1.2.3", "node.example", "::1", "10.1.2.3", " ", "LOCALHOST", "Node.Example"],
    )
    generate_server_cert(
        paths, machine / "swarm.pem", machine / "swarm-key.pem", "bob.m1",
        ["192.168.99.100"], swarm_master=True,
    )
    return {
        "ca": paths.ca_cert, "ca_key": paths.ca_key,
        "client": paths.client_cert, "client_key": paths.client_key,
        "server": machine / "server.pem", "server_key": machine / "server-key.pem",
        "swarm": machine / "swarm.pem", "swarm_key": machine / "swarm-key.pem",
    }


# --------------------------------------------------------------------------- basics


def test_cert_paths_in_dir(tmp_path: Path) -> None:
    p = CertPaths.in_dir(tmp_path)
    assert (p.ca_cert, p.ca_key, p.client_cert, p.client_key) == (
        tmp_path / "ca.pem", tmp_path / "ca-key.pem", tmp_path / "cert.pem", tmp_path / "key.pem",
    )


def test_current_user_org(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "carol")
    monkeypatch.setenv("USERNAME", "winuser")
    assert current_user_org() == "carol"
    monkeypatch.setenv("USER", "")
    assert current_user_org() == "unknown"
    monkeypatch.delenv("USER")
    assert current_user_org() == "unknown"
    monkeypatch.setattr(certs.os, "name", "nt")
    assert current_user_org() == "winuser"
    monkeypatch.delenv("USERNAME")
    assert current_user_org() == "unknown"


def test_bootstrap_creates_files_logs_and_modes(tmp_path: Path, user: str) -> None:
    paths = CertPaths.in_dir(tmp_path / "store" / "certs")
    logs: list[str] = []
    assert bootstrap_certificates(paths, log=logs.append) is True
    assert logs == [
        f"Creating CA: {paths.ca_cert}",
        f"Creating client certificate: {paths.client_cert}",
    ]
    assert mode(paths.ca_cert.parent) == 0o700
    for key in (paths.ca_key, paths.client_key):
        assert mode(key) == 0o600
        assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----\n")
        assert key.read_text().rstrip().endswith("-----END RSA PRIVATE KEY-----")
    for cert in (paths.ca_cert, paths.client_cert):
        assert cert.read_text().startswith("-----BEGIN CERTIFICATE-----\n")
    # no temp files left behind by the atomic writes
    assert sorted(p.name for p in paths.ca_cert.parent.iterdir()) == [
        ".lock", "ca-key.pem", "ca.pem", "cert.pem", "key.pem",
    ]
    before = (fingerprint(paths.ca_cert), fingerprint(paths.client_cert))
    logs.clear()
    assert bootstrap_certificates(paths, log=logs.append) is False
    assert logs == []
    assert (fingerprint(paths.ca_cert), fingerprint(paths.client_cert)) == before


def test_bootstrap_modes_ignore_permissive_umask(tmp_path: Path, user: str) -> None:
    old = os.umask(0)
    try:
        paths = CertPaths.in_dir(tmp_path / "certs")
        bootstrap_certificates(paths, log=lambda _m: None)
    finally:
        os.umask(old)
    assert mode(paths.ca_cert.parent) == 0o700
    assert mode(paths.ca_key) == 0o600
    assert mode(paths.client_key) == 0o600


# --------------------------------------------------------------------------- fields


def test_ca_fields(pki: dict[str, Path]) -> None:
    ca = load(pki["ca"])
    assert subject_attrs(ca) == [(NameOID.ORGANIZATION_NAME.dotted_string, "bob")]
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)  # self-signed
    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is True
    ku = ext(ca, x509.KeyUsage).value
    assert (ku.digital_signature, ku.key_encipherment, ku.key_agreement, ku.key_cert_sign) == (
        True, True, True, True)
    assert (ku.content_commitment, ku.data_encipherment, ku.crl_sign) == (False, False, False)
    with pytest.raises(x509.ExtensionNotFound):
        ext(ca, x509.ExtendedKeyUsage)
    pub = ca.public_key()
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 2048
    assert 0 < ca.serial_number < 2**128


def test_client_fields(pki: dict[str, Path]) -> None:
    client = load(pki["client"])
    assert subject_attrs(client) == [
        (NameOID.ORGANIZATION_NAME.dotted_string, "bob.<bootstrap>")]
    assert client.issuer == load(pki["ca"]).subject
    client.verify_directly_issued_by(load(pki["ca"]))
    assert list(ext(client, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = ext(client, x509.KeyUsage).value
    assert ku.digital_signature is True
    assert (ku.key_encipherment, ku.key_agreement, ku.key_cert_sign) == (False, False, False)
    assert ext(client, x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        ext(client, x509.SubjectAlternativeName)
    assert client.public_key().key_size == 2048
    assert 0 < client.serial_number < 2**128


def test_server_fields_and_san_types(pki: dict[str, Path]) -> None:
    server = load(pki["server"])
    assert subject_attrs(server) == [(NameOID.ORGANIZATION_NAME.dotted_string, "bob.m1")]
    server.verify_directly_issued_by(load(pki["ca"]))
    assert list(ext(server, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = ext(server, x509.KeyUsage).value
    assert (ku.digital_signature, ku.key_encipherment, ku.key_agreement, ku.key_cert_sign) == (
        True, True, True, False)
    assert ext(server, x509.BasicConstraints).value.ca is False
    san = ext(server, x509.SubjectAlternativeName).value
    ip_values = san.get_values_for_type(x509.IPAddress)
    assert [str(ip) for ip in ip_values] == ["10.1.2.3", "::1"]  # IPs as IPAddress, deduped
    assert san.get_values_for_type(x509.DNSName) == ["node.example", "LOCALHOST"]
    assert len(list(san)) == 4
    assert cert_sans(pki["server"]) == (["10.1.2.3", "::1"], ["node.example", "LOCALHOST"])
    assert server.public_key().key_size == 2048
    assert mode(pki["server_key"]) == 0o600
    assert pki["server_key"].read_text().startswith("-----BEGIN RSA PRIVATE KEY-----\n")


def test_server_always_gets_localhost_and_swarm_master_gets_client_auth(
        pki: dict[str, Path]) -> None:
    swarm = load(pki["swarm"])
    assert list(ext(swarm, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert_sans(pki["swarm"]) == (["192.168.99.100"], ["localhost"])


def test_serials_are_random(pki: dict[str, Path]) -> None:
    serials = {load(pki[k]).serial_number for k in ("ca", "client", "server", "swarm")}
    assert len(serials) == 4
    assert all(0 < s < 2**128 for s in serials)


def test_validity_window_with_injected_clock(tmp_path: Path) -> None:
    now = datetime(2024, 3, 4, 5, 6, 47, 123456, tzinfo=UTC)
    generate_ca(tmp_path / "ca.pem", tmp_path / "ca-key.pem", "org", now=now)
    ca = load(tmp_path / "ca.pem")
    assert ca.not_valid_before_utc == datetime(2024, 3, 4, 5, 1, 0, tzinfo=UTC)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == timedelta(days=1080)


def test_validity_window_with_real_clock(pki: dict[str, Path], tmp_path: Path) -> None:
    before = datetime.now(UTC)
    generate_ca(tmp_path / "ca.pem", tmp_path / "ca-key.pem", "org")
    after = datetime.now(UTC)
    for cert in (load(tmp_path / "ca.pem"), load(pki["server"])):
        nb = cert.not_valid_before_utc
        assert nb.second == 0
        assert cert.not_valid_after_utc - nb == timedelta(days=1080)
    nb = load(tmp_path / "ca.pem").not_valid_before_utc
    lo = before.replace(second=0, microsecond=0) - timedelta(minutes=5)
    hi = after.replace(second=0, microsecond=0) - timedelta(minutes=5)
    assert lo <= nb <= hi


# --------------------------------------------------------------------------- openssl CLI


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_openssl_verify_chain(pki: dict[str, Path], tmp_path: Path) -> None:
    for leaf in ("server", "client", "swarm"):
        out = subprocess.run([OPENSSL, "verify", "-CAfile", str(pki["ca"]), str(pki[leaf])],
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{pki[leaf]}: OK"
    other = tmp_path / "other"
    other.mkdir()
    generate_ca(other / "ca.pem", other / "ca-key.pem", "other")
    bad = subprocess.run([OPENSSL, "verify", "-CAfile", str(other / "ca.pem"), str(pki["server"])],
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode != 0


def _purposes(path: Path) -> dict[str, str]:
    out = subprocess.run([OPENSSL, "x509", "-noout", "-purpose", "-in", str(path)],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    pairs = (line.rsplit(" : ", 1) for line in out.splitlines() if " : " in line)
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_openssl_purposes(pki: dict[str, Path]) -> None:
    server, client, swarm, ca = (_purposes(pki[k]) for k in ("server", "client", "swarm", "ca"))
    assert (server["SSL server"], server["SSL client"]) == ("Yes", "No")
    assert (client["SSL server"], client["SSL client"]) == ("No", "Yes")
    assert (swarm["SSL server"], swarm["SSL client"]) == ("Yes", "Yes")
    assert (ca["SSL server CA"], ca["SSL client CA"]) == ("Yes", "Yes")
    assert (server["SSL server CA"], client["SSL client CA"]) == ("No", "No")


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_openssl_reads_pkcs1_keys(pki: dict[str, Path]) -> None:
    out = subprocess.run([OPENSSL, "rsa", "-check", "-noout", "-in", str(pki["server_key"])],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and "RSA key ok" in out.stdout


# --------------------------------------------------------------------------- queries


def test_cert_covers_host(pki: dict[str, Path]) -> None:
    server = pki["server"]
    assert cert_covers_host(server, "10.1.2.3")
    assert cert_covers_host(server, "::1")
    assert cert_covers_host(server, "[::1]")
    assert cert_covers_host(server, "0:0::1")
    assert cert_covers_host(server, "node.example")
    assert cert_covers_host(server, "NODE.example.")
    assert cert_covers_host(server, "localhost")
    assert not cert_covers_host(server, "10.1.2.4")
    assert not cert_covers_host(server, "127.0.0.1")
    assert not cert_covers_host(server, "other.example")
    assert not cert_covers_host(pki["client"], "localhost")  # no SAN extension at all


def test_is_expired(pki: dict[str, Path]) -> None:
    cert = load(pki["ca"])
    assert not is_expired(pki["ca"])
    assert is_expired(pki["ca"], now=cert.not_valid_after_utc)
    assert not is_expired(pki["ca"], now=cert.not_valid_after_utc - timedelta(seconds=1))
    assert is_expired(pki["ca"], now=cert.not_valid_after_utc - timedelta(days=10),
                      margin=timedelta(days=30))
    assert not is_expired(pki["ca"], margin=timedelta(days=30))


def test_validate_pair(pki: dict[str, Path], tmp_path: Path) -> None:
    validate_pair(pki["server"], pki["server_key"])
    validate_pair(pki["ca"], pki["ca_key"])
    with pytest.raises(MachineError, match="does not match"):
        validate_pair(pki["server"], pki["client_key"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(MachineError, match="not a PEM certificate") as info:
        validate_pair(garbage, pki["server_key"])
    assert "\n" not in str(info.value)
    with pytest.raises(MachineError, match="not a PEM private key"):
        validate_pair(pki["server"], garbage)
    with pytest.raises(MachineError, match="No such file"):
        validate_pair(tmp_path / "missing.pem", pki["server_key"])
    with pytest.raises(MachineError):
        is_expired(garbage)


# --------------------------------------------------------------------------- regeneration


def test_expired_ca_is_regenerated(tmp_path: Path, user: str) -> None:
    paths = CertPaths.in_dir(tmp_path / "certs")
    paths.ca_cert.parent.mkdir(mode=0o700)
    long_ago = datetime.now(UTC) - timedelta(days=1200)
    generate_ca(paths.ca_cert, paths.ca_key, "alice", now=long_ago)
    generate_client_cert(paths, "alice.<bootstrap>", now=long_ago)
    assert is_expired(paths.ca_cert) and is_expired(paths.client_cert)
    old_ca = fingerprint(paths.ca_cert)
    logs: list[str] = []
    assert bootstrap_certificates(paths, log=logs.append) is True
    assert f"Creating CA: {paths.ca_cert}" in logs
    assert f"Creating client certificate: {paths.client_cert}" in logs
    assert fingerprint(paths.ca_cert) != old_ca
    assert not is_expired(paths.ca_cert) and not is_expired(paths.client_cert)
    load(paths.client_cert).verify_directly_issued_by(load(paths.ca_cert))
    validate_pair(paths.ca_cert, paths.ca_key)
    validate_pair(paths.client_cert, paths.client_key)


def test_bootstrap_clock_injection_sees_future_expiry(store: CertPaths) -> None:
    future = datetime.now(UTC) + timedelta(days=1100)
    logs: list[str] = []
    assert bootstrap_certificates(store, log=logs.append, now=future) is True
    assert f"Creating CA: {store.ca_cert}" in logs
    assert not is_expired(store.ca_cert, now=future)


def test_unreadable_ca_regenerates_ca_and_client(store: CertPaths) -> None:
    old_client = fingerprint(store.client_cert)
    store.ca_cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    logs: list[str] = []
    assert bootstrap_certificates(store, log=logs.append) is True
    assert logs == ["CA certificate is unreadable and needs to be regenerated",
                    f"Creating CA: {store.ca_cert}",
                    f"Creating client certificate: {store.client_cert}"]
    # the old client cert was valid but no longer chains to the new CA
    assert fingerprint(store.client_cert) != old_client
    load(store.client_cert).verify_directly_issued_by(load(store.ca_cert))


def test_ca_key_mismatch_is_regenerated(store: CertPaths, tmp_path: Path) -> None:
    generate_ca(tmp_path / "x.pem", tmp_path / "x-key.pem", "x")
    shutil.copy(tmp_path / "x-key.pem", store.ca_key)
    logs: list[str] = []
    assert bootstrap_certificates(store, log=logs.append) is True
    assert f"Creating CA: {store.ca_cert}" in logs
    validate_pair(store.ca_cert, store.ca_key)


def test_expired_client_only_keeps_ca(store: CertPaths) -> None:
    ca_before = fingerprint(store.ca_cert)
    generate_client_cert(store, "alice.<bootstrap>",
                         now=datetime.now(UTC) - timedelta(days=1100))
    logs: list[str] = []
    assert bootstrap_certificates(store, log=logs.append) is True
    assert logs[-1] == f"Creating client certificate: {store.client_cert}"
    assert not any(m.startswith("Creating CA") for m in logs)
    assert fingerprint(store.ca_cert) == ca_before
    assert not is_expired(store.client_cert)


def test_missing_client_key_regenerates_client(store: CertPaths) -> None:
    store.client_key.unlink()
    logs: list[str] = []
    assert bootstrap_certificates(store, log=logs.append) is True
    assert logs == ["Client certificate is unreadable and needs to be regenerated",
                    f"Creating client certificate: {store.client_cert}"]
    validate_pair(store.client_cert, store.client_key)


CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from pymachine.machine.certs import CertPaths, bootstrap_certificates

    certs_dir, start_at = Path(sys.argv[1]), float(sys.argv[2])
    while time.time() < start_at:
        time.sleep(0.002)
    logs = []
    created = bootstrap_certificates(CertPaths.in_dir(certs_dir), log=logs.append)
    ca = x509.load_pem_x509_certificate((certs_dir / "ca.pem").read_bytes())
    print(json.dumps({"created": created, "logs": logs,
                      "fp": ca.fingerprint(hashes.SHA256()).hex()}))
""")


@pytest.mark.timeout(180)
def test_concurrent_bootstrap_makes_one_ca(tmp_path: Path) -> None:
    certs_dir = tmp_path / "store" / "certs"
    start_at = time.time() + 4.0  # all children import first, then race together
    env = {**os.environ, "PYTHONPATH": str(REPO), "USER": "racer"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(certs_dir), str(start_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(10)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    fps = {r["fp"] for r in results}
    assert fps == {fingerprint(certs_dir / "ca.pem")}
    ca_logs = [m for r in results for m in r["logs"] if m.startswith("Creating CA: ")]
    client_logs = [m for r in results for m in r["logs"]
                   if m.startswith("Creating client certificate: ")]
    assert len(ca_logs) == 1 and len(client_logs) == 1
    assert sum(r["created"] for r in results) == 1
    load(certs_dir / "cert.pem").verify_directly_issued_by(load(certs_dir / "ca.pem"))
    assert sorted(p.name for p in certs_dir.iterdir()) == [
        ".lock", "ca-key.pem", "ca.pem", "cert.pem", "key.pem"]


# --------------------------------------------------------------------------- atomic writes


def test_regenerated_key_replaces_loose_permissions(tmp_path: Path) -> None:
    key = tmp_path / "server-key.pem"
    key.write_text("old")
    key.chmod(0o644)
    generate_ca(tmp_path / "server.pem", key, "org")
    assert mode(key) == 0o600
    assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server-key.pem", "server.pem"]


def test_write_failure_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_src: str, _dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(certs.os, "replace", boom)
    with pytest.raises(OSError):
        generate_ssh_keypair(tmp_path / "id_rsa")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- ssh keys


def test_generate_ssh_keypair(tmp_path: Path) -> None:
    private = tmp_path / "machines" / "m1" / "id_rsa"
    private.parent.mkdir(parents=True)
    generate_ssh_keypair(private)
    public = private.with_name("id_rsa.pub")
    assert mode(private) == 0o600 and mode(public) == 0o600
    text = private.read_text()
    assert text.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(text.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    line = public.read_text()
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.startswith("ssh-rsa AAAA")
    assert serialization.load_ssh_public_key(line.encode()) == key.public_key()
    keygen = shutil.which("ssh-keygen")
    if keygen:  # the real OpenSSH tools derive the same public key from our file
        derived = subprocess.run([keygen, "-y", "-f", str(private)], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
        assert derived.split()[:2] == line.split()[:2]
