"""Who may see what (issue 22): the access decision, as pure functions of the signed-in user and the configuration.

No Streamlit here: the pages hand in ``st.user.to_dict()`` (the OpenID Connect ID-token claims that
Streamlit's ``st.login`` stores in its signed identity cookie, plus ``is_logged_in``) and whether an
``[auth]`` section is configured; ``pages/_access.py`` draws the result.

Rules (where the issue is silent, what a careful hospital web application does):

- No ``[auth]`` section (a laptop, ``make run``): the app is open, as before; there is no identity, a
  reviewer types a name on a verdict (recorded with ``signed_in = False``).
- ``[auth]`` configured: every page needs sign-in. A signed-in user gets in when their e-mail is on
  the allow-list (``allowed_users``), its domain is (``allowed_domains``, exact match after the
  ``@``, no subdomains), or they are an admin (``admins``). ``allowed_users = ["*"]`` lets in every
  account the identity provider signs in (an explicit choice; an empty allow-list lets in nobody,
  so a forgotten setting fails closed). Everybody else sees :data:`REFUSED` and nothing else.
- The e-mail claim is the identity: without one, or with ``email_verified`` false, nobody is let in
  (an unverified address could be anyone's). Comparison ignores case and surrounding spaces.
- Configuration: the ``[medseg]`` section of ``secrets.toml`` (keys ``allowed_users``,
  ``allowed_domains``, ``admins``: lists or comma-separated strings), each key replaced by the
  environment variable ``MEDSEG_ALLOWED_USERS`` / ``MEDSEG_ALLOWED_DOMAINS`` / ``MEDSEG_ADMINS``
  when that is set and non-empty (comma-separated), so a container can set them without a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: the one sentence a signed-in user outside the allow-list sees
REFUSED = "Your account does not have access to this medseg server; ask its administrator to add you."
#: what a visitor sees before signing in
SIGN_IN = "Sign in with your hospital account to use medseg."

_KEYS = {
    "allowed_users": "MEDSEG_ALLOWED_USERS",
    "allowed_domains": "MEDSEG_ALLOWED_DOMAINS",
    "admins": "MEDSEG_ADMINS",
}


def _norm_email(value: object) -> str | None:
    """Lower-cased e-mail with exactly one ``@`` and something on both sides, else None."""
    if not isinstance(value, str):
        return None
    e = value.strip().lower()
    local, at, domain = e.partition("@")
    if not at or not local or not domain or "@" in domain or "." not in domain or " " in e:
        return None
    return e


def _items(value: str | Iterable[object] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [str(v).strip().lower() for v in value if str(v).strip()]


@dataclass(frozen=True)
class AccessConfig:
    allowed_users: frozenset = frozenset()
    allowed_domains: frozenset = frozenset()
    admins: frozenset = frozenset()

    @property
    def any_user(self) -> bool:
        return "*" in self.allowed_users


def access_config(section: Mapping | None = None, env: Mapping | None = None) -> AccessConfig:
    """The allow-list and admins from a ``[medseg]`` secrets section and the environment (env wins per key)."""
    env = os.environ if env is None else env
    section = dict(section or {})
    vals = {}
    for key, var in _KEYS.items():
        raw = env.get(var)
        vals[key] = _items(raw) if raw is not None and raw.strip() else _items(section.get(key))
    return AccessConfig(
        allowed_users=frozenset(vals["allowed_users"]),
        allowed_domains=frozenset(d.lstrip("@") for d in vals["allowed_domains"]),
        admins=frozenset(vals["admins"]),
    )


@dataclass(frozen=True)
class Identity:
    """A signed-in user: the name and e-mail recorded with every verdict, export and audit row."""

    name: str
    email: str
    admin: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} <{self.email}>" if self.name and self.name != self.email else self.email


@dataclass(frozen=True)
class Access:
    """``state``: "open" (no sign-in configured), "sign_in" (configured, nobody signed in),
    "allowed" or "refused". ``reason`` says why (for the audit row, never shown to a refused user)."""

    state: str
    identity: Identity | None = None
    reason: str = ""
    email: str | None = None  # what the provider said, also for a refused user (audit)

    @property
    def allowed(self) -> bool:
        return self.state in ("open", "allowed")

    @property
    def signed_in(self) -> bool:
        return self.identity is not None

    @property
    def admin(self) -> bool:
        return self.identity is not None and self.identity.admin


def _false(v: object) -> bool:
    return v is False or (isinstance(v, str) and v.strip().lower() == "false")


def decide(user: Mapping | None, auth_configured: bool, config: AccessConfig) -> Access:
    """Who gets in. ``user``: ``st.user.to_dict()``; ``auth_configured``: an ``[auth]`` section exists."""
    if not auth_configured:
        return Access("open", reason="sign-in not configured")
    user = dict(user or {})
    if not user.get("is_logged_in"):
        return Access("sign_in", reason="not signed in")
    raw_email = user.get("email")
    email = _norm_email(raw_email)
    if email is None:
        return Access(
            "refused",
            reason="the identity provider gave no usable e-mail",
            email=raw_email if isinstance(raw_email, str) else None,
        )
    if _false(user.get("email_verified")):
        return Access("refused", reason="e-mail not verified by the identity provider", email=email)
    domain = email.rsplit("@", 1)[1]
    admin = email in config.admins
    if admin:
        why = "admin"
    elif email in config.allowed_users:
        why = "user on the allow-list"
    elif domain in config.allowed_domains:
        why = f"domain {domain} on the allow-list"
    elif config.any_user:
        why = "every signed-in account allowed"
    else:
        return Access("refused", reason="not on the allow-list", email=email)
    name = next((str(user[k]).strip() for k in ("name", "preferred_username") if str(user.get(k) or "").strip()), email)
    return Access("allowed", Identity(name=name, email=email, admin=admin), reason=why, email=email)
