"""Google OAuth2 access tokens for the ``google`` driver, from the JSON credentials users already have.

Application Default Credentials as docker-machine's Go client read them:
``$GOOGLE_APPLICATION_CREDENTIALS``, then gcloud's
``application_default_credentials.json`` (``%APPDATA%\\gcloud`` on Windows,
``~/.config/gcloud`` elsewhere).  Two kinds: ``service_account`` (an RS256
JWT assertion, RFC 7523, posted to the key's ``token_uri``) and
``authorized_user`` (the refresh token ``gcloud auth application-default
login`` writes).  The GCE metadata server is never probed: pymachine runs on
workstations, and dialing 169.254.169.254 from anywhere else hangs.

Error messages never carry a private key, client secret or refresh token.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pymachine.machine.errors import MachineError

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute"
ADC_ENV = "GOOGLE_APPLICATION_CREDENTIALS"


class AuthError(MachineError):
    """Credentials missing, unreadable or refused by the token endpoint."""


def adc_path(environ: dict[str, str] | None = None, platform: str = sys.platform) -> Path | None:
    """The credentials file ADC would use, or None."""
    env = os.environ if environ is None else environ
    if env.get(ADC_ENV):
        return Path(env[ADC_ENV]).expanduser()
    if platform == "win32":
        base = Path(env.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "gcloud"
    else:
        base = Path(env.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
    candidate = base / "application_default_credentials.json"
    return candidate if candidate.is_file() else None


def parse_credentials(text: str, where: str) -> dict[str, Any]:
    """The credentials JSON, checked for the fields its type needs (never echoing values)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise AuthError(f"{where} is not a JSON credentials file") from None
    if not isinstance(data, dict):
        raise AuthError(f"{where} is not a JSON credentials file")
    kind = data.get("type")
    need = {"service_account": ("client_email", "private_key"),
            "authorized_user": ("client_id", "client_secret", "refresh_token")}.get(str(kind))
    if need is None:
        raise AuthError(f"{where}: unsupported credentials type {kind!r} "
                        "(use a service-account key or `gcloud auth application-default login`)")
    missing = [k for k in need if not data.get(k)]
    if missing:
        raise AuthError(f"{where}: {kind} credentials lack {', '.join(missing)}")
    return data


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_assertion(creds: dict[str, Any], scope: str, now: float | None = None) -> str:
    """The signed JWT a service account exchanges for a token (RS256, one hour)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    issued = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT"}
    if creds.get("private_key_id"):
        header["kid"] = str(creds["private_key_id"])
    claims = {"iss": creds["client_email"], "scope": scope, "aud": creds.get("token_uri") or GOOGLE_TOKEN_URI,
              "iat": issued, "exp": issued + 3600}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    try:
        key = serialization.load_pem_private_key(str(creds["private_key"]).encode(), password=None)
    except (ValueError, TypeError):
        raise AuthError("the service-account key's private_key is not a PEM RSA key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AuthError("the service-account key's private_key is not an RSA key")
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def fetch_token(creds: dict[str, Any], scope: str = COMPUTE_SCOPE, ca_cert: str = "",
                timeout: float = 30.0) -> str:
    """An access token for ``creds``; AuthError with the endpoint's reason when refused."""
    from pymachine.machine.drivers.restclient import HTTPError, RestClient

    token_uri = str(creds.get("token_uri") or GOOGLE_TOKEN_URI)
    if creds["type"] == "service_account":
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": jwt_assertion(creds, scope)}
    else:
        form = {"grant_type": "refresh_token", "refresh_token": str(creds["refresh_token"]),
                "client_id": str(creds["client_id"]), "client_secret": str(creds["client_secret"])}

    def oauth_error(status: int, payload: Any, raw: bytes) -> tuple[str, str]:
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            return str(payload.get("error_description") or payload["error"]), str(payload["error"])
        return f"HTTP {status}", ""

    client = RestClient(token_uri, ca_cert=ca_cert, timeout=timeout, error_parser=oauth_error,
                        what="the Google token endpoint")
    try:
        payload = client.request("POST", "", form=form)[0]
    except HTTPError as exc:
        who = creds.get("client_email") or "the application default credentials"
        raise AuthError(f"Google refused the credentials of {who}: {exc.api_message}") from None
    token = (payload or {}).get("access_token") if isinstance(payload, dict) else None
    if not token:
        raise AuthError("the Google token endpoint answered without an access_token")
    return str(token)
