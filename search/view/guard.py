"""What ``fmnist-search dashboard`` lets through to optuna-dashboard: a WSGI layer in front of it.

optuna-dashboard serves every write of its API to whoever reaches the port: one unauthenticated
``DELETE /api/studies/1`` removes a study and its weights. In front of it:

- **never served**: deleting or renaming a study (a rename copies the trials and deletes the
  original, losing what Optuna does not copy), deleting an artifact (the trials' weights), and
  the schema migration page. People who mean to do these use Optuna's own tools on purpose;
- **bound to loopback** (the default): a request whose Host header is not a loopback name is
  refused, so a web page cannot reach the API through DNS rebinding, and a write whose Origin is
  another site's is refused (a page may send a form to 127.0.0.1 without asking);
- **bound elsewhere**: read-only (GET and HEAD) unless the user allows writes, and then every
  request needs the password (HTTP basic auth, which a browser asks for once).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit

USER = "fmnist"
READS = ("GET", "HEAD", "OPTIONS")

# (method, path pattern, what it would do): refused whatever the settings.
NEVER = (
    ("DELETE", re.compile(r"/api/studies/\d+/?$"), "deleting a study"),
    ("POST", re.compile(r"/api/studies/\d+/rename/?$"), "renaming a study (it deletes the original)"),
    ("DELETE", re.compile(r"/api/artifacts/.*"), "deleting an artifact (a trial's weights)"),
    ("POST", re.compile(r"/incompatible-rdb-schema/?$"), "migrating the storage's schema"),
)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback (``localhost``, 127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _host_name(header: str) -> str:
    """The name in a Host header, without its port (``[::1]:8080`` -> ``::1``)."""
    return urlsplit(f"//{header}").hostname or ""


def _loopback_name(name: str) -> bool:
    """A Host header's name that can only mean this machine (no lookup: a rebound name resolves to
    127.0.0.1 on purpose, so only literal loopback names count)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Policy:
    loopback: bool              # bound to a loopback address only
    writes: bool                # writes (notes, attributes, uploads) are served
    password: str | None = None  # required of every request (basic auth) when set


def _refuse(start_response, status: str, text: str, headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *headers])
    return [body]


def _authorized(environ: dict, password: str) -> bool:
    scheme, _, encoded = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, given = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user.encode(), USER.encode()) & hmac.compare_digest(given.encode(), password.encode())


def _cross_site(environ: dict) -> bool:
    """A write sent by a page of another origin (browsers name it in Origin and Sec-Fetch-Site)."""
    if environ.get("HTTP_SEC_FETCH_SITE", "") == "cross-site":
        return True
    origin = environ.get("HTTP_ORIGIN")
    return origin is not None and urlsplit(origin).netloc != environ.get("HTTP_HOST", "")


def guard(app: Callable, policy: Policy) -> Callable:
    """``app`` behind the rules of the module docstring."""
    def guarded(environ: dict, start_response):
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        if policy.loopback and not _loopback_name(_host_name(environ.get("HTTP_HOST", ""))):
            return _refuse(start_response, "403 Forbidden", "refused: this dashboard answers to loopback "
                           "names only (localhost, 127.0.0.1, [::1]), not to Host "
                           f"{environ.get('HTTP_HOST', '(none)')!r}")
        if policy.password is not None and not _authorized(environ, policy.password):
            return _refuse(start_response, "401 Unauthorized", "log in: user fmnist and the dashboard's password",
                           [("WWW-Authenticate", 'Basic realm="fmnist-search dashboard", charset="UTF-8"')])
        if method not in READS:
            for never, pattern, what in NEVER:
                if method == never and pattern.match(path):
                    return _refuse(start_response, "403 Forbidden", f"refused: {what} is not served by "
                                   "fmnist-search dashboard (use Optuna's own tools for that, on purpose)")
            if not policy.writes:
                return _refuse(start_response, "403 Forbidden", "refused: this dashboard is read-only "
                               "(fmnist-search dashboard --allow-writes serves writes, behind a password)")
            if _cross_site(environ):
                return _refuse(start_response, "403 Forbidden", "refused: a write from another site's page")
        return app(environ, start_response)

    return guarded
