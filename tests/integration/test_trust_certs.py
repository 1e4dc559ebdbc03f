"""Issue 13, item 1: a user's CA is never overwritten, and nothing lands beside it.

The user's files are made here with ``cryptography`` (an RSA CA, an encrypted
key, an EC key, a key of another pair) and handed to the real ``pymachine``
through ``--tls-ca-cert/--tls-ca-key`` and ``MACHINE_TLS_CA_*``.
"""

from __future__ import annotations

import hashlib
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

URL = "tcp://127.0.0.1:1"


def tree(root: Path) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        if path.name == "pymachine-state.json":
            continue
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), digest)
    return out


def _ca(key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "user-ca")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _key(key, password: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, enc)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (cert, key) in one directory per case, as a user keeps them."""
    root = tmp_path_factory.mktemp("user-pki")
    rsa_a = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_b = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "good": (_ca(rsa_a), _key(rsa_a)),
        "passphrase": (_ca(rsa_a), _key(rsa_a, b"secret")),
        "mismatched": (_ca(rsa_a), _key(rsa_b)),
        "ec": (_ca(ec_key), ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())),
    }
    out = {}
    for name, (cert, key) in cases.items():
        d = root / name
        d.mkdir()
        (d / "ca.pem").write_bytes(cert)
        (d / "ca-key.pem").write_bytes(key)
        out[name] = (d / "ca.pem", d / "ca-key.pem")
    (root / "dir" / "ca.pem").mkdir(parents=True)
    (root / "dir" / "ca-key.pem").mkdir()
    out["directory"] = (root / "dir" / "ca.pem", root / "dir" / "ca-key.pem")
    return out


@pytest.fixture
def store_with_ca(pm):
    pm.ok("create", "-d", "none", "--url", URL, "first")
    return pm


@pytest.mark.parametrize("case,expected", [
    ("passphrase", "protected by a passphrase"),
    ("mismatched", "does not match private key"),
    ("ec", "not an RSA key"),
    ("directory", "is a directory"),
])
@pytest.mark.parametrize("via", ["flags", "env"])
def test_unusable_user_ca_is_refused_and_never_replaced(store_with_ca, user_files, case, expected, via):
    pm = store_with_ca
    cert, key = user_files[case]
    user_before, store_before = tree(cert.parent), tree(pm.store)
    if via == "flags":
        res = pm("--tls-ca-cert", str(cert), "--tls-ca-key", str(key), "create", "-d", "none", "--url", URL, "m")
    else:
        res = pm("create", "-d", "none", "--url", URL, "m",
                 env={"MACHINE_TLS_CA_CERT": str(cert), "MACHINE_TLS_CA_KEY": str(key)})
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert "Creating CA" not in res.stdout
    assert tree(cert.parent) == user_before  # not replaced, no .lock or temp file beside it
    assert tree(pm.store) == store_before  # the store's own ca-key.pem is untouched too


def test_user_ca_cert_with_the_store_key_is_refused(store_with_ca, user_files):
    """``--tls-ca-cert`` alone pairs the user's certificate with the store's key: refuse."""
    pm = store_with_ca
    cert, _ = user_files["good"]
    user_before, store_before = tree(cert.parent), tree(pm.store)
    res = pm("--tls-ca-cert", str(cert), "create", "-d", "none", "--url", URL, "m")
    assert res.returncode != 0 and "does not match" in res.stderr
    assert tree(cert.parent) == user_before
    assert tree(pm.store) == store_before


def test_good_user_ca_is_used_as_is_with_nothing_beside_it(pm, user_files):
    cert, key = user_files["good"]
    before = tree(cert.parent)
    pm.ok("--tls-ca-cert", str(cert), "--tls-ca-key", str(key), "create", "-d", "none", "--url", URL, "m")
    assert tree(cert.parent) == before
    assert (pm.store / "machines" / "m" / "ca.pem").read_bytes() == cert.read_bytes()
    assert not (pm.store / "certs" / "ca.pem").exists()  # no store CA was made in its place
    # regenerate-certs --client-certs remakes only pymachine's own client cert, never the user's CA.
    pm.ok("regenerate-certs", "-f", "--client-certs", "m")
    assert tree(cert.parent) == before
    assert (pm.store / "machines" / "m" / "ca.pem").read_bytes() == cert.read_bytes()


def test_missing_user_ca_is_not_created_there(pm, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    res = pm("--tls-ca-cert", str(target / "ca.pem"), "--tls-ca-key", str(target / "ca-key.pem"),
             "create", "-d", "none", "--url", URL, "m")
    assert res.returncode != 0 and "does not exist" in res.stderr
    assert list(target.iterdir()) == []
    assert not (pm.store / "machines" / "m").exists()
