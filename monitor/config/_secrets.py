"""Secrets in messages: what of the settings is secret, and text or a URL without it.

String work only (no client library), so that every layer can show a URL safely, the
argument checks of :mod:`monitor.config._args` among them.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["redact", "scrub", "secrets_of"]


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def secrets_of(
    redis_url: str | None,
    kafka_sasl_password: str | None,
    webhook_url: str | None,
    api_token: str | None = None,
) -> list[str]:
    """The secret parts of these settings, as they may appear in text: the Redis URL's
    password (as written and percent-decoded; its whole user part when it has no
    colon, a password given without a user name), the SASL password, the webhook
    URL's credentials, path and query (a chat webhook's token is its path), and the
    HTTP API's token."""
    found: list[str] = [api_token] if api_token else []
    if redis_url:
        userinfo = _netloc(redis_url).rpartition("@")[0]
        password = userinfo.partition(":")[2] if ":" in userinfo else userinfo
        found += [password, unquote(password)]
    if kafka_sasl_password:
        found.append(kafka_sasl_password)
    if webhook_url:
        rest = webhook_url.partition("://")[2]
        path, _, query = rest[len(_netloc(webhook_url)) :].partition("?")
        found += [_netloc(webhook_url).rpartition("@")[0], path.strip("/"), query]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def _netloc(url: str) -> str:
    """The part between ``scheme://`` and the path: string work only, so that a URL too
    malformed to parse (the one a message refuses) is searched as well."""
    rest = url.partition("://")[2]
    end = min(
        (i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest)
    )
    return rest[:end]


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***`` (longest first)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
