"""Issue 22 item 4 in Chromium: sign-in through a real OpenID Connect provider started in the test.

``oidc-provider-mock`` (a Flask OpenID provider built on Authlib: discovery document, authorization
code flow with PKCE, signed ID tokens, userinfo, end-session) runs on a thread of this process; the
app runs as a real Streamlit server whose ``[auth]`` secrets point at it (a temporary secrets.toml
named by ``STREAMLIT_SECRETS_FILES``; ``redirect_uri`` takes Streamlit's ``{port}`` placeholder). The
allowed user signs in on the provider's page, runs the model, exports the mask and records a verdict;
the verdict row carries her identity and the audit table the export; she signs out; a user outside the
allow-list is then refused with the one sentence and sees nothing of the app.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import time

import pytest
from browser import ARTIFACTS, app_server, browser, settled

from medseg_core.auth import REFUSED, SIGN_IN
from medseg_core.store import Store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ALICE = {"email": "alice@hospital.example", "email_verified": True, "name": "Alice Reviewer"}
MALLORY = {"email": "mallory@elsewhere.example", "email_verified": True, "name": "Mallory Outsider"}


def _wait_db(predicate, timeout=30.0):
    """The app writes the store from its own process: poll until the row is there."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    return predicate()


def _sign_in_at_provider(page, url: str, sub: str) -> None:
    """From the app's sign-in prompt through the provider's authorization page and back."""
    page.goto(url)
    page.get_by_text(SIGN_IN).wait_for(timeout=90_000)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/oauth2/authorize.*"), timeout=30_000)  # the provider's own page
    page.get_by_role("button", name=sub, exact=True).click()  # the provider's predefined user
    page.wait_for_url(re.compile(r"^" + re.escape(url) + r"/?($|\?|#).*"), timeout=30_000)


def test_signin_identity_on_verdict_audit_of_export_and_refusal(tmp_path, monkeypatch):
    oidc = pytest.importorskip(
        "oidc_provider_mock", reason="oidc-provider-mock (requirements-dev.txt) is not installed"
    )
    # the provider serves plain http on localhost in this test; Authlib refuses that unless told
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    users = [oidc.User(sub="alice", claims=ALICE), oidc.User(sub="mallory", claims=MALLORY)]
    db_path = tmp_path / "medseg.db"
    with oidc.run_server_in_thread(user_claims=users) as idp:
        issuer = f"http://localhost:{idp.server_port}"
        secrets_file = tmp_path / "secrets.toml"
        secrets_file.write_text(
            "[auth]\n"
            'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            f'cookie_secret = "{secrets.token_hex(32)}"\n'
            'client_id = "medseg-test"\n'
            'client_secret = "test-client-secret"\n'
            f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n'
            "\n[medseg]\n"
            'allowed_domains = ["hospital.example"]\n'
            'admins = ["alice@hospital.example"]\n'
        )
        env = {
            "STREAMLIT_SECRETS_FILES": str(secrets_file),
            "MEDSEG_DB": str(db_path),
            "AUTHLIB_INSECURE_TRANSPORT": "1",
        }
        with app_server(env=env) as url, browser() as b:
            store = Store(str(db_path))
            # ---------------------------------------------------------------- an allowed user
            ctx = b.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
            page = ctx.new_page()
            page.goto(url)
            page.get_by_text(SIGN_IN).wait_for(timeout=90_000)
            assert page.locator("[data-testid=stSidebar]").count() == 0  # nothing of the app before sign-in
            assert page.get_by_text("Segment & review").count() == 0
            _sign_in_at_provider(page, url, "alice")
            sidebar = page.locator("[data-testid=stSidebar]")
            sidebar.get_by_text("Alice Reviewer").wait_for(timeout=90_000)
            assert sidebar.get_by_text("alice@hospital.example").count() >= 1
            page.get_by_role("button", name="Run model").click()
            page.get_by_text("Results").first.wait_for(timeout=180_000)
            with page.expect_download(timeout=60_000) as dl:
                page.get_by_role("button", name="Export mask (NIfTI, source affine)").click()
            assert dl.value.suggested_filename.endswith("_mask.nii.gz")
            settled(page)  # the download reran the app: wait for the new page before clicking on it
            page.locator("[data-testid=stExpander] summary").filter(has_text="Verdict").click()
            page.get_by_text("Needs correction").click()
            page.get_by_label("Note").fill("left ovary missed")
            page.get_by_role("button", name="Save verdict").click()
            page.get_by_text("Saved: Needs correction by Alice Reviewer").wait_for(timeout=30_000)
            if ARTIFACTS.exists():
                page.screenshot(path=str(ARTIFACTS / "signin_verdict.png"))

            verdicts = _wait_db(lambda: store.verdicts())
            assert len(verdicts) == 1
            v = verdicts[0]
            assert (v["verdict"], v["note"], v["reviewer_name"], v["reviewer_email"], v["signed_in"]) == (
                "needs_correction",
                "left ovary missed",
                "Alice Reviewer",
                "alice@hospital.example",
                True,
            )
            exports = _wait_db(lambda: store.audit_rows(action="export"))
            assert [(r["user"], r["email"], r["detail"], r["case_key"]) for r in exports] == [
                ("Alice Reviewer", "alice@hospital.example", "mask NIfTI", v["case_key"])
            ]
            actions = [r["action"] for r in reversed(store.audit_rows())]
            assert actions[:2] == ["sign_in", "open_case"] and {"run_model", "export", "verdict"} <= set(actions)
            assert "refused" not in actions

            # the admin's Audit page shows and exports the trail
            page.locator("[data-testid=stSidebar]").get_by_role("link", name="Audit").click()
            page.get_by_role("heading", name="Audit").wait_for(timeout=60_000)
            with page.expect_download(timeout=60_000) as dl:
                page.get_by_role("button", name="Export audit (CSV)").click()
            rows = list(csv.DictReader(io.StringIO(open(dl.value.path(), encoding="utf-8").read())))
            assert ("Alice Reviewer", "alice@hospital.example", "export", "mask NIfTI") in [
                (r["user"], r["email"], r["action"], r["detail"]) for r in rows
            ]
            assert _wait_db(lambda: store.audit_rows(action="export")[0]["detail"] == "audit trail CSV")

            # sign out: through the provider's end-session page back to the sign-in prompt
            page.locator("[data-testid=stSidebar]").get_by_role("button", name="Sign out").click()
            page.wait_for_url(re.compile(r".*/oauth2/end_session.*"), timeout=30_000)  # the provider's end-session page
            page.get_by_role("button", name="End session").click()
            page.get_by_text(SIGN_IN).wait_for(timeout=60_000)
            assert page.locator("[data-testid=stSidebar]").count() == 0
            ctx.close()

            # ---------------------------------------------------------------- a user outside the allow-list
            ctx = b.new_context(viewport={"width": 1280, "height": 720})
            page = ctx.new_page()
            _sign_in_at_provider(page, url, "mallory")
            page.get_by_text(REFUSED).wait_for(timeout=90_000)
            if ARTIFACTS.exists():
                page.screenshot(path=str(ARTIFACTS / "signin_refused.png"))
            assert page.locator("[data-testid=stSidebar]").count() == 0
            main = page.locator("[data-testid=stMain]").inner_text()
            assert REFUSED in main and "Segment" not in main and "Research use" not in main and "pelvic" not in main
            refused = _wait_db(lambda: store.audit_rows(action="refused"))
            assert [(r["email"], r["detail"]) for r in refused] == [
                ("mallory@elsewhere.example", "not on the allow-list")
            ]
            # she opened nothing: every case-bearing row is Alice's
            assert {r["email"] for r in store.audit_rows() if r["case_key"]} == {"alice@hospital.example"}
            ctx.close()
