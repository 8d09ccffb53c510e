"""medseg_core.auth (who gets in) and its glue in the app (pages/_access.py), headless: issue 22 items 1-3.
The real OpenID Connect sign-in in Chromium is tests/test_signin_browser.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg_core import auth as A
from medseg_core.store import Store

ROOT = Path(__file__).resolve().parents[1]


def cfg(**kw):
    return A.access_config(kw, env={})


def test_no_auth_section_means_open_app():
    a = A.decide({"email": "anyone@x.org", "is_logged_in": True}, False, cfg())
    assert a.state == "open" and a.allowed and a.identity is None and not a.admin


def test_sign_in_required_when_configured():
    for user in (None, {}, {"is_logged_in": False}, {"email": "a@hospital.example"}):
        a = A.decide(user, True, cfg(allowed_domains=["hospital.example"]))
        assert a.state == "sign_in" and not a.allowed


def test_allow_list_by_user_domain_admin_and_star():
    c = cfg(
        allowed_users=["Bob@Partner.example "], allowed_domains=["@hospital.example"], admins=["boss@elsewhere.example"]
    )

    def d(email, **claims):
        return A.decide({"is_logged_in": True, "email": email, **claims}, True, c)

    a = d(" Alice@HOSPITAL.example", name="Alice R")
    assert a.state == "allowed" and a.identity == A.Identity("Alice R", "alice@hospital.example", admin=False)
    assert a.reason == "domain hospital.example on the allow-list"
    assert d("bob@partner.example").identity.name == "bob@partner.example"  # no name claim: the e-mail
    assert d("bob@partner.example", preferred_username="bobby").identity.name == "bobby"
    boss = d("boss@elsewhere.example", name="The Boss")
    assert boss.allowed and boss.admin and boss.identity.label == "The Boss <boss@elsewhere.example>"
    # domains match exactly: no subdomains, no look-alikes, no second @
    for email in (
        "carol@sub.hospital.example",
        "carol@hospital.example.evil.org",
        "carol@evilhospital.example",
        "alice@hospital.example@evil.org",
        "eve@partner.example",
    ):
        r = d(email)
        assert r.state == "refused" and not r.allowed and r.identity is None, email
    # an e-mail the provider says is unverified, or none at all, is nobody's
    assert d("alice@hospital.example", email_verified=False).state == "refused"
    assert d("alice@hospital.example", email_verified="false").reason == "e-mail not verified by the identity provider"
    assert d("alice@hospital.example", email_verified=True).allowed
    assert A.decide({"is_logged_in": True, "name": "No Mail"}, True, c).state == "refused"
    # an empty allow-list lets nobody in (fails closed); "*" lets in every signed-in account, explicitly
    assert A.decide({"is_logged_in": True, "email": "a@b.org"}, True, cfg()).state == "refused"
    star = A.decide({"is_logged_in": True, "email": "a@b.org"}, True, cfg(allowed_users=["*"]))
    assert star.allowed and not star.admin


def test_config_from_secrets_section_and_environment():
    section = {"allowed_users": ["a@x.org"], "allowed_domains": "x.org, y.org", "admins": ["root@x.org"]}
    c = A.access_config(section, env={})
    assert c.allowed_users == {"a@x.org"} and c.allowed_domains == {"x.org", "y.org"} and c.admins == {"root@x.org"}
    # an environment variable that is set replaces its key; empty ones are ignored
    c = A.access_config(
        section,
        env={
            "MEDSEG_ALLOWED_DOMAINS": "Hospital.example",
            "MEDSEG_ADMINS": " ",
            "MEDSEG_ALLOWED_USERS": "p@q.org,r@s.org",
        },
    )
    assert c.allowed_domains == {"hospital.example"} and c.admins == {"root@x.org"}
    assert c.allowed_users == {"p@q.org", "r@s.org"}
    assert A.access_config(None, env={}) == A.AccessConfig()


def test_refusal_is_one_sentence():
    assert A.REFUSED.count(".") == 1 and A.REFUSED.endswith(".") and len(A.REFUSED) < 120


# ------------------------------------------------------------------------------------ the gate in the app (AppTest)
AUTH = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "k" * 40,
        "client_id": "medseg",
        "client_secret": "s",
        "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
    },
    "medseg": {"allowed_domains": ["hospital.example"], "admins": ["boss@hospital.example"]},
}


@pytest.fixture()
def fresh_db(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_DB", str(tmp_path / "app.db"))
    return Store()


def _app(user: dict | None, secrets: dict | None = AUTH):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if secrets:
        at.secrets = secrets
    if user is not None:
        at.user = user
    return at.run()


def _texts(at) -> list[str]:
    return [m.value for m in at.markdown] + [m.value for m in at.sidebar.markdown] + [t.value for t in at.title]


def test_app_asks_to_sign_in_and_shows_nothing_else(fresh_db):
    at = _app({"is_logged_in": False})
    assert not at.exception
    assert A.SIGN_IN in _texts(at) and [b.label for b in at.button] == ["Sign in"]
    assert "volume" not in at.session_state  # no case was opened for a visitor
    assert len(at.sidebar) == 0 and fresh_db.audit_rows() == []


def test_app_refuses_a_user_outside_the_allow_list(fresh_db):
    at = _app({"is_logged_in": True, "email": "eve@evil.example", "name": "Eve"})
    assert not at.exception
    assert [m.value for m in at.markdown] == [A.REFUSED] and [b.label for b in at.button] == ["Sign out"]
    assert len(at.sidebar) == 0 and not at.title and "volume" not in at.session_state
    rows = fresh_db.audit_rows()
    assert [(r["action"], r["email"], r["detail"]) for r in rows] == [
        ("refused", "eve@evil.example", "not on the allow-list")
    ]


def test_allowed_user_identity_in_sidebar_verdict_and_audit(fresh_db):
    at = _app({"is_logged_in": True, "email": "Alice@hospital.example", "name": "Alice R", "email_verified": True})
    assert not at.exception
    assert "**Signed in:** Alice R" in [m.value for m in at.sidebar.markdown]
    assert "alice@hospital.example" in [c.value for c in at.sidebar.caption]
    assert "Sign out" in [b.label for b in at.sidebar.button]
    case = at.session_state["case_key"]
    assert [(r["action"], r["user"], r["email"]) for r in reversed(fresh_db.audit_rows())] == [
        ("sign_in", "Alice R", "alice@hospital.example"),
        ("open_case", "Alice R", "alice@hospital.example"),
    ]
    # the Audit page is for admins only: not in Alice's navigation
    assert "Audit" not in [p["page_name"] for p in at._registered_pages.values()]
    # run the model, then record a verdict: the identity comes from sign-in, no name field is offered
    at.session_state["model_pick"] = at.session_state["model_name"] = "ovary_unet"
    at.run()
    [b for b in at.button if b.label == "Run model"][0].click().run()
    assert not at.exception
    assert not [t for t in at.text_input if t.label == "Your name"]
    at.radio(key="verdict_choice").set_value("needs_correction")
    at.text_input(key="verdict_note").set_value("left ovary missed")
    [b for b in at.button if b.label == "Save verdict"][0].click().run()
    assert not at.exception
    v = fresh_db.verdicts(case)
    assert len(v) == 1
    assert (
        v[0]["verdict"],
        v[0]["reviewer_name"],
        v[0]["reviewer_email"],
        v[0]["signed_in"],
        v[0]["note"],
        v[0]["model"],
    ) == ("needs_correction", "Alice R", "alice@hospital.example", True, "left ovary missed", "ovary_unet")
    assert (
        v[0]["options"]["threshold"]
        == at.session_state["predictions"].get(at.session_state["current"]).options.threshold
    )
    actions = [r["action"] for r in reversed(fresh_db.audit_rows())]
    assert actions == ["sign_in", "open_case", "run_model", "verdict"]


def test_without_sign_in_a_typed_name_is_recorded(fresh_db):
    at = _app(None, secrets=None)
    assert not at.exception and "Sign out" not in [b.label for b in at.sidebar.button]
    at.session_state["model_pick"] = at.session_state["model_name"] = "ovary_unet"
    at.run()
    [b for b in at.button if b.label == "Run model"][0].click().run()
    [b for b in at.button if b.label == "Save verdict"][0].click().run()
    assert "Type your name to save a verdict." in [e.value for e in at.error] and fresh_db.verdicts() == []
    at.text_input(key="reviewer_name").set_value("Dr Typed")
    [b for b in at.button if b.label == "Save verdict"][0].click().run()
    v = fresh_db.verdicts()
    assert [(r["reviewer_name"], r["reviewer_email"], r["signed_in"], r["verdict"]) for r in v] == [
        ("Dr Typed", None, False, "accept")
    ]


def test_audit_page_for_admins_only(fresh_db):
    boss = {"is_logged_in": True, "email": "boss@hospital.example", "name": "The Boss"}
    at = _app(boss)
    assert not at.exception and "boss@hospital.example · admin" in [c.value for c in at.sidebar.caption]
    at.switch_page("pages/audit.py").run()
    assert not at.exception and at.title[0].value == "Audit"
    labels = [b.label for b in at.get("download_button")]
    assert "Export audit (CSV)" in labels and "Export all verdicts (JSON)" in labels
    # for anybody else the page is not even registered (and the page checks the admin list itself)
    alice = _app({"is_logged_in": True, "email": "alice@hospital.example", "name": "Alice R"})
    assert "Audit" not in [p["page_name"] for p in alice._registered_pages.values()]
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        alice.switch_page("pages/audit.py")
