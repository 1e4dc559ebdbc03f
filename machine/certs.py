"""TLS certificates and SSH keys, laid out and shaped as Docker Machine 0.16 made them.

Every key is RSA 2048 written as PKCS#1 PEM (``RSA PRIVATE KEY``) so that files
are interchangeable with a docker-machine store. Certificates carry only
``O=`` in the subject, a random 128-bit serial, and a validity window of
1080 days starting five minutes before the current minute (VM clock skew).

Files are written atomically (temp file in the same directory, fsync,
``os.replace``) so a crash never leaves a half-written key, and the CA
bootstrap runs under an exclusive lock (``machine.locking``) so concurrent first runs agree
on exactly one CA.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pymachine.machine import layout
from pymachine.machine.atomic import write_atomic
from pymachine.machine.errors import MachineError
from pymachine.machine.locking import exclusive
from pymachine.machine.tlsclient import client_tls_context

__all__ = [
    "KEY_BITS",
    "VALIDITY",
    "CertPaths",
    "bootstrap_certificates",
    "cert_covers_host",
    "cert_sans",
    "client_tls_context",
    "current_user_org",
    "generate_ca",
    "generate_client_cert",
    "generate_server_cert",
    "generate_ssh_keypair",
    "is_expired",
    "validate_pair",
]

KEY_BITS = 2048
VALIDITY = timedelta(days=1080)
CLOCK_SKEW = timedelta(minutes=5)
LOCK_NAME = ".lock"
LOCK_TIMEOUT = 120.0  # seconds; generating two RSA keys takes well under one
CERT_MODE = 0o644
KEY_MODE = 0o600
DIR_MODE = 0o700


@dataclass
class CertPaths:
    """Where the store keeps the global CA and client certificate."""

    ca_cert: Path
    ca_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def in_dir(cls, certs_dir: Path) -> CertPaths:
        certs_dir = Path(certs_dir)
        return cls(
            ca_cert=certs_dir / layout.CA_CERT,
            ca_key=certs_dir / layout.CA_KEY,
            client_cert=certs_dir / layout.CLIENT_CERT,
            client_key=certs_dir / layout.CLIENT_KEY,
        )


def current_user_org() -> str:
    """The CA organisation: ``$USER`` (``$USERNAME`` on Windows), else ``unknown``."""
    name = os.environ.get("USERNAME" if os.name == "nt" else "USER", "")
    return name or "unknown"


# --------------------------------------------------------------------------- files


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1 "RSA PRIVATE KEY"
        serialization.NoEncryption(),
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate,
                key: rsa.RSAPrivateKey) -> None:
    """Key first: a present certificate then always has its key next to it."""
    write_atomic(Path(key_path), _key_pem(key), KEY_MODE)
    write_atomic(Path(cert_path), cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)


def _load_cert(cert_path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except OSError as exc:
        raise MachineError(f"Error reading certificate {cert_path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise MachineError(f"Error reading certificate {cert_path}: not a PEM certificate") from exc


def _load_key(key_path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except OSError as exc:
        raise MachineError(f"Error reading private key {key_path}: {exc.strerror}") from exc
    except TypeError as exc:  # "Password was not given but private key is encrypted"
        raise MachineError(f"Error reading private key {key_path}: it is protected by a passphrase; "
                           "pymachine needs an unencrypted RSA key") from exc
    except ValueError as exc:
        raise MachineError(f"Error reading private key {key_path}: not a PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MachineError(f"Error reading private key {key_path}: not an RSA key "
                           "(docker-machine stores use RSA)")
    return key


# --------------------------------------------------------------------------- certificates


def _validity(now: datetime | None) -> tuple[datetime, datetime]:
    """notBefore = current minute - 5 min (skewed VM clocks); notAfter = +1080 days."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    not_before = now.replace(second=0, microsecond=0) - CLOCK_SKEW
    return not_before, not_before + VALIDITY


def _serial() -> int:
    """Random 128-bit serial, as docker-machine; 0 is not a valid X.509 serial."""
    while True:
        serial = secrets.randbits(128)
        if serial:
            return serial


def _builder(org: str, public_key: rsa.RSAPublicKey, issuer: x509.Name | None,
             now: datetime | None) -> x509.CertificateBuilder:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    not_before, not_after = _validity(now)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _key_usage(*, digital_signature: bool, key_encipherment: bool, key_agreement: bool,
               key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _base_usage(key_cert_sign: bool = False) -> x509.KeyUsage:
    return _key_usage(digital_signature=True, key_encipherment=True, key_agreement=True,
                      key_cert_sign=key_cert_sign)


def generate_ca(cert_path: Path, key_path: Path, org: str, *,
                now: datetime | None = None) -> None:
    """Self-signed CA: base key usages + certSign, BasicConstraints CA:TRUE.

    A SubjectKeyIdentifier is added (modern Go adds it too) so strict
    verifiers (Python 3.13's VERIFY_X509_STRICT) accept the chain.
    """
    key = _new_key()
    cert = (
        _builder(org, key.public_key(), None, now)
        .add_extension(_base_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(cert_path, key_path, cert, key)


def _signed_leaf(paths: CertPaths, cert_path: Path, key_path: Path, org: str,
                 usage: x509.KeyUsage, eku: list[x509.ObjectIdentifier],
                 san: x509.SubjectAlternativeName | None, now: datetime | None) -> None:
    ca_cert = _load_cert(paths.ca_cert)
    ca_key = _load_key(paths.ca_key)
    key = _new_key()
    builder = (
        _builder(org, key.public_key(), ca_cert.subject, now)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    _write_pair(cert_path, key_path, builder.sign(ca_key, hashes.SHA256()), key)


def generate_client_cert(paths: CertPaths, org: str, *, now: datetime | None = None) -> None:
    """Client cert for ``paths.client_cert``: clientAuth, digitalSignature only."""
    usage = _key_usage(digital_signature=True, key_encipherment=False, key_agreement=False,
                       key_cert_sign=False)
    _signed_leaf(paths, paths.client_cert, paths.client_key, org, usage,
                 [ExtendedKeyUsageOID.CLIENT_AUTH], None, now)


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def check_sans(sans: Sequence[str]) -> None:
    """Refuse a ``--tls-san`` that cannot go into a certificate, before anything is made.

    X.509 DNS names are ASCII: an internationalised name must be given in its
    IDNA (``xn--``) form, which the error message spells out.
    """
    for raw in sans:
        value = str(raw).strip()
        if not value or _parse_ip(value) is not None:
            continue
        if value.isascii() and all(c.isalnum() or c in "-.*_" for c in value):
            continue
        hint = ""
        with contextlib.suppress(UnicodeError):
            hint = f" (its IDNA form is {value.encode('idna').decode('ascii')!r})"
        raise MachineError(f"--tls-san {value!r} is not an IP address or an ASCII DNS name{hint}")


def _san_extension(sans: Sequence[str]) -> x509.SubjectAlternativeName:
    """IPs become IPAddress entries, anything else DNSName; order kept, duplicates dropped."""
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for raw in [*sans, "localhost"]:
        value = raw.strip()
        if not value:
            continue
        ip = _parse_ip(value)
        if ip is not None:
            if ip not in ips:
                ips.append(ip)
        elif value.lower() not in (d.lower() for d in dns):
            dns.append(value)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ip) for ip in ips]
    return x509.SubjectAlternativeName(names)


def generate_server_cert(paths: CertPaths, cert_path: Path, key_path: Path, org: str,
                         sans: Sequence[str], swarm_master: bool = False, *,
                         now: datetime | None = None) -> None:
    """Server cert signed by the store CA.

    ``sans`` is the ``--tls-san`` values plus the machine IP; ``localhost`` is
    always added, as docker-machine did. A swarm master also gets clientAuth so
    it can dial the swarm agents.
    """
    eku = [ExtendedKeyUsageOID.SERVER_AUTH]
    if swarm_master:
        eku.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    _signed_leaf(paths, Path(cert_path), Path(key_path), org, _base_usage(), eku,
                 _san_extension(sans), now)


def cert_sans(cert_path: Path) -> tuple[list[str], list[str]]:
    """(IP addresses, DNS names) in the certificate's SubjectAlternativeName."""
    cert = _load_cert(cert_path)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return ips, list(ext.get_values_for_type(x509.DNSName))


def cert_covers_host(cert_path: Path, host: str) -> bool:
    """True when ``host`` (IP or DNS name) is literally present in the SANs.

    This is what tells ``env``/``ls`` that a machine changed IP since its
    server cert was made (the most common docker-machine complaint).
    """
    ips, dns = cert_sans(cert_path)
    ip = _parse_ip(host)
    if ip is not None:
        return any(_parse_ip(v) == ip for v in ips)
    wanted = host.strip().rstrip(".").lower()
    return any(d.rstrip(".").lower() == wanted for d in dns)


def is_expired(cert_path: Path, now: datetime | None = None,
               margin: timedelta = timedelta(0)) -> bool:
    """True when the certificate is past notAfter (or will be within ``margin``)."""
    cert = _load_cert(cert_path)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now + margin >= _not_after(cert)


def _not_after(cert: x509.Certificate) -> datetime:
    """notAfter as an aware UTC datetime (``*_utc`` only exists in cryptography >= 42)."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=UTC)


def validate_pair(cert_path: Path, key_path: Path) -> None:
    """Raise MachineError unless both files parse and the key belongs to the cert."""
    cert = _load_cert(cert_path)
    key = _load_key(key_path)
    # public numbers, not the key objects: keys compare equal only from cryptography 40 (Debian 12 has 38)
    cert_key = cert.public_key()
    if not isinstance(cert_key, rsa.RSAPublicKey) or cert_key.public_numbers() != key.public_key().public_numbers():
        raise MachineError(f"Certificate {cert_path} does not match private key {key_path}")


# --------------------------------------------------------------------------- bootstrap


def _ca_problem(paths: CertPaths, now: datetime | None) -> str | None:
    """Why the CA must be (re)made, or None when it is usable."""
    if not paths.ca_cert.exists():
        return "missing"
    try:
        validate_pair(paths.ca_cert, paths.ca_key)
        if is_expired(paths.ca_cert, now):
            return "outdated"
    except MachineError:
        return "unreadable"
    return None


def _verify_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    """Raise unless ``ca`` signed ``cert`` (``verify_directly_issued_by`` is cryptography >= 40;
    Debian 12 has 38: there, check the issuer name and the RSA PKCS#1 v1.5 signature we make)."""
    verify = getattr(cert, "verify_directly_issued_by", None)
    if verify is not None:
        verify(ca)
        return
    from cryptography.hazmat.primitives.asymmetric import padding

    if cert.issuer != ca.subject:
        raise ValueError("issuer does not match the CA's subject")
    public = ca.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or cert.signature_hash_algorithm is None:
        raise TypeError("not an RSA-signed certificate")
    public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)


def _client_problem(paths: CertPaths, now: datetime | None) -> str | None:
    """Why the client cert must be (re)made; it must also chain to the current CA."""
    if not paths.client_cert.exists():
        return "missing"
    try:
        validate_pair(paths.client_cert, paths.client_key)
        if is_expired(paths.client_cert, now):
            return "outdated"
        _verify_issued_by(_load_cert(paths.client_cert), _load_cert(paths.ca_cert))
    except MachineError:
        return "unreadable"
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by the current CA"
    return None


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Lock the CA bootstrap (machine.locking), so concurrent first runs agree on one CA."""
    busy = f"Timed out after {timeout:.0f}s waiting for certificate lock {lock_path}"
    with exclusive(lock_path, timeout=timeout, busy_message=busy, poll=0.02):
        yield


def _ensure_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise MachineError(
            f"Error creating machine certificate dir {directory}: {exc.strerror}"
        ) from exc


def check_user_files(paths: CertPaths, user_files: Collection[Path],
                     now: datetime | None = None) -> tuple[bool, bool]:
    """Validate the CA and client pairs the user named; (CA is theirs, client is theirs).

    A pair with either file named by the user (``--tls-ca-cert``/``--tls-ca-key``,
    ``--tls-client-*`` or ``MACHINE_TLS_*``) is the user's: it must be usable as it
    is, because pymachine never writes, regenerates or locks beside a user's file.
    """
    user = {Path(p) for p in user_files}
    ca_user = paths.ca_cert in user or paths.ca_key in user
    client_user = paths.client_cert in user or paths.client_key in user
    pairs = [("CA", paths.ca_cert, paths.ca_key, "--tls-ca-cert", "--tls-ca-key")] if ca_user else []
    if client_user:
        pairs.append(("client", paths.client_cert, paths.client_key, "--tls-client-cert", "--tls-client-key"))
    for what, cert, key, cert_flag, key_flag in pairs:
        for path, flag in ((cert, cert_flag), (key, key_flag)):
            if path.is_dir():
                raise MachineError(f"{flag} {path} is a directory, not a file")
            if not path.exists():
                raise MachineError(f"{flag} {path} does not exist (pymachine does not create a {what} "
                                   "where you point it; omit the flag to use the store's own)")
        try:
            validate_pair(cert, key)
        except MachineError as exc:
            raise MachineError(f"{exc} (your {what} files are left as they are)") from None
        if is_expired(cert, now):
            raise MachineError(f"{what} certificate {cert} has expired (your {what} files are left as they are)")
    if client_user:
        try:
            _verify_issued_by(_load_cert(paths.client_cert), _load_cert(paths.ca_cert))
        except (MachineError, ValueError, TypeError, InvalidSignature):
            raise MachineError(f"client certificate {paths.client_cert} is not signed by the CA "
                               f"{paths.ca_cert}") from None
    return ca_user, client_user


def _sweep_temp_files(directory: Path) -> None:
    """Temp files a killed writer left in the certs dir (only ever called under its lock)."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(".") and ".pem.tmp" in entry:
            with contextlib.suppress(OSError):
                os.unlink(directory / entry)


def bootstrap_certificates(paths: CertPaths, log: Callable[[str], None] = print, *,
                           now: datetime | None = None, lock_dir: Path | None = None,
                           user_files: Collection[Path] = ()) -> bool:
    """Create the CA and client cert if missing; remake pymachine's own if expired or unreadable.

    Logs ``Creating CA: <path>`` and ``Creating client certificate: <path>``
    like docker-machine. Returns True if anything was written. A client cert
    that no longer chains to the CA (because the CA was remade) is remade too.
    Files in ``user_files`` are the user's: checked (one-line error if unusable),
    never written; the lock lives in ``lock_dir`` (the store's certs dir), never
    beside a user's file.
    """
    ca_user, client_user = check_user_files(paths, user_files, now)
    ca_problem = None if ca_user else _ca_problem(paths, now)
    client_problem = None if client_user else _client_problem(paths, now)
    if ca_problem is None and client_problem is None:
        return False  # fast path: no lock needed to read good files
    lock_dir = Path(lock_dir) if lock_dir is not None else paths.ca_cert.parent
    _ensure_dir(lock_dir)
    if not ca_user:
        _ensure_dir(paths.ca_cert.parent)
    if not client_user:
        _ensure_dir(paths.client_cert.parent)
    org = current_user_org()
    created = False
    with _exclusive_lock(lock_dir / LOCK_NAME):
        _sweep_temp_files(lock_dir)
        # Re-check under the lock: another process may have just done the work.
        problem = None if ca_user else _ca_problem(paths, now)
        if problem is not None:
            if problem != "missing":
                log(f"CA certificate is {problem} and needs to be regenerated")
            log(f"Creating CA: {paths.ca_cert}")
            try:
                generate_ca(paths.ca_cert, paths.ca_key, org, now=now)
            except OSError as exc:
                raise MachineError(f"Error generating CA certificate {paths.ca_cert}: "
                                   f"{exc.strerror or exc}") from exc
            created = True
        problem = None if client_user else _client_problem(paths, now)
        if problem is not None:
            if problem != "missing" and not created:  # after a new CA it is self-evident
                log(f"Client certificate is {problem} and needs to be regenerated")
            log(f"Creating client certificate: {paths.client_cert}")
            try:
                generate_client_cert(paths, f"{org}.<bootstrap>", now=now)
            except OSError as exc:
                raise MachineError(f"Error generating client certificate {paths.client_cert}: "
                                   f"{exc.strerror or exc}") from exc
            created = True
    return created


# --------------------------------------------------------------------------- ssh keys


def generate_ssh_keypair(private_path: str | Path) -> None:
    """``id_rsa`` (PKCS#1 PEM, 0600) and ``id_rsa.pub`` (one OpenSSH line, 0600 as Go wrote it)."""
    private_path = Path(private_path)
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_atomic(private_path, _key_pem(key), KEY_MODE)
    write_atomic(private_path.with_name(private_path.name + ".pub"), public + b"\n", KEY_MODE)
