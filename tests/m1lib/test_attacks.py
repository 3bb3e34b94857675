"""The attack suite: every forged, replayed or misused token is denied, with the right reason.

Attack tokens are built by hand (``forge``) so nothing in M1's own issuing code can soften them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m1lib.policy import PolicyEngine, Reason, Scope
from m1lib.settings import Settings
from m1lib.tokens import TOKEN_TYPE, JwtKey, TokenCodec

SECRET = "a" * 40
KID = "k-current"
TOOL = "log_agent_run"  # write: needs an approval
SUBJECT = "agent-x"


class Revocations:
    """A RevocationCheck fake: revoked jtis, not-before rules by subject, and a freshness flag."""

    def __init__(self) -> None:
        self.jtis: set[str] = set()
        self.subjects_revoked_before: dict[str, int] = {}
        self.fresh = True

    def denial(self, claims: Mapping[str, Any]) -> Reason | None:
        if claims["jti"] in self.jtis:
            return Reason.REVOKED
        if claims["iat"] < self.subjects_revoked_before.get(claims["sub"], 0):
            return Reason.REVOKED
        return None if self.fresh else Reason.REVOCATION_STATE_STALE


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def make_claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for TOOL and SUBJECT; an override of None removes the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "m1",
        "aud": "m1-tools",
        "sub": SUBJECT,
        "toolName": TOOL,
        "scope": "write",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 120,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def forge(
    claims: Mapping[str, Any] | None = None,
    *,
    header: Mapping[str, Any] | None = None,
    secret: bytes = SECRET.encode(),
) -> str:
    """An HS256 token signed by hand; ``header`` replaces the default one entirely."""
    head = {"alg": "HS256", "kid": KID, "typ": TOKEN_TYPE} if header is None else header
    signing_input = f"{_json(head)}.{_json(make_claims() if claims is None else claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.fixture
def revocations() -> Revocations:
    return Revocations()


@pytest.fixture
def make_engine(
    make_settings: Callable[..., Settings], revocations: Revocations
) -> Callable[..., PolicyEngine]:
    def factory(
        signing_key: JwtKey | None = None, *verification: JwtKey, max_bytes: int = 4096
    ) -> PolicyEngine:
        codec = TokenCodec(
            signing_key=signing_key or JwtKey.hmac(SECRET, kid=KID),
            verification_keys=verification,
            issuer="m1",
            audience="m1-tools",
            ttl_s=300,
            leeway_s=5,
            max_bytes=max_bytes,
        )
        return PolicyEngine(settings=make_settings(), codec=codec, revocation=revocations)

    return factory


@pytest.fixture
def engine(make_engine: Callable[..., PolicyEngine]) -> PolicyEngine:
    return make_engine()


def _reason(
    engine: PolicyEngine, token: str, tool: str = TOOL, scope: Scope = Scope.WRITE
) -> Reason:
    decision = engine.verify(token, tool, scope, subject=SUBJECT)
    assert decision.allowed is (decision.reason is Reason.OK)
    return decision.reason


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_the_forge_makes_tokens_the_engine_accepts(engine: PolicyEngine) -> None:
    """The control: a hand-made token with nothing wrong passes, so each denial below is the attack."""
    assert _reason(engine, forge()) is Reason.OK


def test_alg_none_is_denied(engine: PolicyEngine) -> None:
    header = {"alg": "none", "kid": KID, "typ": TOKEN_TYPE}
    unsigned = f"{_json(header)}.{_json(make_claims())}."
    assert _reason(engine, unsigned) is Reason.INVALID_SIGNATURE
    assert _reason(engine, forge(header=header)) is Reason.INVALID_SIGNATURE


def test_hs256_signed_with_the_rs256_public_key_is_denied(
    make_engine: Callable[..., PolicyEngine], rsa_key: rsa.RSAPrivateKey
) -> None:
    engine = make_engine(JwtKey.from_private_key(rsa_key, kid="rs"))
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": "rs", "typ": TOKEN_TYPE}
    assert _reason(engine, forge(header=header, secret=public_pem)) is Reason.INVALID_SIGNATURE


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "", None, 7])
def test_wrong_or_missing_typ_is_denied(engine: PolicyEngine, typ: Any) -> None:
    header = {"alg": "HS256", "kid": KID, "typ": typ}
    if typ is None:
        del header["typ"]
    assert _reason(engine, forge(header=header)) is Reason.WRONG_TYPE


def test_typ_is_compared_as_a_media_type(engine: PolicyEngine) -> None:
    header = {"alg": "HS256", "kid": KID, "typ": "application/M1-Approval+JWT"}
    assert _reason(engine, forge(header=header)) is Reason.OK


def test_expired_token_is_denied(engine: PolicyEngine) -> None:
    past = int(time.time()) - 600
    claims = make_claims(iat=past, nbf=past, exp=past + 60)
    assert _reason(engine, forge(claims)) is Reason.EXPIRED


def test_expiry_within_the_leeway_is_still_accepted(engine: PolicyEngine) -> None:
    now = int(time.time())
    assert _reason(engine, forge(make_claims(iat=now - 60, nbf=now - 60, exp=now - 2))) is Reason.OK


def test_nbf_in_the_future_is_denied(engine: PolicyEngine) -> None:
    now = int(time.time())
    claims = make_claims(nbf=now + 60, exp=now + 120)
    assert _reason(engine, forge(claims)) is Reason.NOT_YET_VALID


def test_iat_in_the_future_is_denied(engine: PolicyEngine) -> None:
    now = int(time.time())
    claims = make_claims(iat=now + 60, nbf=now, exp=now + 120)
    assert _reason(engine, forge(claims)) is Reason.NOT_YET_VALID


@pytest.mark.parametrize("aud", ["other-service", ["other-service"], ["m1-tools", "other"]])
def test_wrong_audience_is_denied(engine: PolicyEngine, aud: Any) -> None:
    assert _reason(engine, forge(make_claims(aud=aud))) is Reason.WRONG_AUDIENCE


def test_wrong_issuer_is_denied(engine: PolicyEngine) -> None:
    assert _reason(engine, forge(make_claims(iss="evil"))) is Reason.WRONG_ISSUER


@pytest.mark.parametrize(
    "claim", ["jti", "exp", "sub", "iat", "nbf", "aud", "iss", "toolName", "scope"]
)
def test_missing_claim_is_denied(engine: PolicyEngine, claim: str) -> None:
    assert _reason(engine, forge(make_claims(**{claim: None}))) is Reason.MALFORMED


@pytest.mark.parametrize(
    "overrides",
    [
        {"scope": "admin"},
        {"scope": ["write"]},
        {"toolName": ""},
        {"toolName": 1},
        {"sub": ""},
        {"sub": 5},
        {"jti": 5},
        {"jti": ""},
        {"jti": "   "},
        {"jti": "j" * 65},
        {"jti": "a\x00b"},
        {"jti": "a\nb"},
        {"jti": "\ud800"},
        {"sub": " "},
        {"sub": "s" * 256},
        {"sub": "agent\x00x"},
        {"toolName": "t" * 129},
        {"toolName": "log\x00agent_run"},
        {"exp": "9999999999"},
        {"iat": True},
        {"exp": int(time.time()) + 3600},  # a lifetime M1 never issues
    ],
)
def test_validly_signed_but_ill_shaped_claims_are_denied(
    engine: PolicyEngine, overrides: dict[str, Any]
) -> None:
    assert _reason(engine, forge(make_claims(**overrides))) is Reason.MALFORMED


def test_longest_storable_jti_and_subject_are_accepted(engine: PolicyEngine) -> None:
    token = forge(make_claims(jti="j" * 64, sub="s" * 255))
    assert engine.verify(token, TOOL, Scope.WRITE).reason is Reason.OK


def test_tampered_payload_is_denied(engine: PolicyEngine) -> None:
    head, _, signature = forge(make_claims(scope="read")).split(".")
    tampered = f"{head}.{_json(make_claims(scope='execute'))}.{signature}"
    assert _reason(engine, tampered) is Reason.INVALID_SIGNATURE


def test_token_signed_with_another_secret_is_denied(engine: PolicyEngine) -> None:
    assert _reason(engine, forge(secret=b"b" * 40)) is Reason.INVALID_SIGNATURE


@pytest.mark.parametrize("kid", ["k-unknown", "", 3, None])
def test_unknown_or_missing_kid_is_denied(engine: PolicyEngine, kid: Any) -> None:
    header = {"alg": "HS256", "kid": kid, "typ": TOKEN_TYPE}
    if kid is None:
        del header["kid"]
    assert _reason(engine, forge(header=header)) is Reason.UNKNOWN_KEY


@pytest.mark.parametrize(
    "extra",
    [
        {"jku": "https://evil.example/keys.json"},
        {"jwk": {"kty": "oct", "k": "AAAA"}},
        {"x5u": "https://evil.example/cert.pem"},
        {"crit": ["exp"]},
        {"b64": False, "crit": ["b64"]},
    ],
)
def test_header_parameters_beyond_alg_kid_typ_are_denied(
    engine: PolicyEngine, extra: dict[str, Any]
) -> None:
    header = {"alg": "HS256", "kid": KID, "typ": TOKEN_TYPE, **extra}
    assert _reason(engine, forge(header=header)) is Reason.MALFORMED


def test_oversized_token_is_denied_before_it_is_decoded(
    make_engine: Callable[..., PolicyEngine],
) -> None:
    engine = make_engine(max_bytes=1024)
    padded = forge(make_claims(note="x" * 2000))  # correctly signed: only the size is wrong
    assert len(padded) > 1024
    assert _reason(engine, padded) is Reason.MALFORMED
    assert _reason(make_engine(max_bytes=8192), padded) is Reason.OK


def test_token_for_tool_a_is_denied_for_tool_b(engine: PolicyEngine) -> None:
    token = engine.issue_token("request_approval", Scope.EXECUTE, subject=SUBJECT)
    assert _reason(engine, token, tool=TOOL) is Reason.TOOL_MISMATCH
    assert _reason(engine, token, "tool_registry_list", Scope.READ) is Reason.TOOL_MISMATCH


def test_read_token_is_denied_for_write(engine: PolicyEngine) -> None:
    token = engine.issue_token("tool_registry_list", Scope.READ, subject=SUBJECT)
    assert _reason(engine, token, "tool_registry_list", Scope.READ) is Reason.OK
    assert _reason(engine, token, "tool_registry_list", Scope.WRITE) is Reason.INSUFFICIENT_SCOPE


def test_token_for_subject_x_presented_as_subject_y_is_denied(engine: PolicyEngine) -> None:
    token = engine.issue_token(TOOL, Scope.WRITE, subject="agent-y")
    assert _reason(engine, token) is Reason.SUBJECT_MISMATCH


def test_revoked_jti_is_denied(engine: PolicyEngine, revocations: Revocations) -> None:
    token = engine.issue_token(TOOL, Scope.WRITE, subject=SUBJECT)
    claims = engine.verify(token, TOOL, Scope.WRITE).claims
    assert claims is not None
    revocations.jtis.add(claims["jti"])
    assert _reason(engine, token) is Reason.REVOKED


def test_not_before_rule_denies_older_tokens_only(
    engine: PolicyEngine, revocations: Revocations
) -> None:
    now = int(time.time())
    old = forge(make_claims(iat=now - 30, nbf=now - 30))
    revocations.subjects_revoked_before[SUBJECT] = now - 10
    assert _reason(engine, old) is Reason.REVOKED
    assert _reason(engine, forge()) is Reason.OK


def test_stale_revocation_state_denies(engine: PolicyEngine, revocations: Revocations) -> None:
    revocations.fresh = False
    assert _reason(engine, forge()) is Reason.REVOCATION_STATE_STALE


def test_rotation_keeps_old_tokens_valid_while_their_kid_is_listed(
    make_engine: Callable[..., PolicyEngine],
) -> None:
    old_key, new_key = JwtKey.hmac(SECRET, kid="2026-10"), JwtKey.hmac("n" * 40, kid="2026-11")
    old_token = make_engine(old_key).issue_token(TOOL, Scope.WRITE, subject=SUBJECT)
    rotated = make_engine(new_key, old_key)
    new_token = rotated.issue_token(TOOL, Scope.WRITE, subject=SUBJECT)
    assert json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))["kid"] == "2026-11"
    assert _reason(rotated, old_token) is Reason.OK
    assert _reason(rotated, new_token) is Reason.OK
    assert _reason(make_engine(new_key), old_token) is Reason.UNKNOWN_KEY


def test_rotation_across_algorithms_pins_each_kid_to_its_own(
    make_engine: Callable[..., PolicyEngine],
) -> None:
    """An HS256 key retired in favour of EdDSA: its kid still means HS256, and only HS256."""
    old_key = JwtKey.hmac(SECRET, kid=KID)
    engine = make_engine(JwtKey.from_private_key(ed25519.Ed25519PrivateKey.generate()), old_key)
    assert _reason(engine, forge()) is Reason.OK
    assert _reason(engine, engine.issue_token(TOOL, Scope.WRITE, subject=SUBJECT)) is Reason.OK
    wrong_alg = forge(header={"alg": "HS512", "kid": KID, "typ": TOKEN_TYPE})
    assert _reason(engine, wrong_alg) is Reason.INVALID_SIGNATURE


def test_rs256_and_eddsa_tokens_pass_the_whole_policy(
    make_engine: Callable[..., PolicyEngine], rsa_key: rsa.RSAPrivateKey
) -> None:
    for key in (
        JwtKey.from_private_key(rsa_key),
        JwtKey.from_private_key(ed25519.Ed25519PrivateKey.generate()),
    ):
        engine = make_engine(key)
        token = engine.issue_token(TOOL, Scope.EXECUTE, subject=SUBJECT)
        assert _reason(engine, token) is Reason.OK, key.algorithm


def test_rs256_token_from_another_key_pair_is_denied(
    make_engine: Callable[..., PolicyEngine], rsa_key: rsa.RSAPrivateKey
) -> None:
    engine = make_engine(JwtKey.from_private_key(rsa_key, kid="rs"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        make_claims(), other, algorithm="RS256", headers={"kid": "rs", "typ": TOKEN_TYPE}
    )
    assert _reason(engine, token) is Reason.INVALID_SIGNATURE


# -- garbage never raises -------------------------------------------------------------------------

TOKEN_FAILURES = {
    Reason.MALFORMED,
    Reason.INVALID_SIGNATURE,
    Reason.UNKNOWN_KEY,
    Reason.WRONG_TYPE,
}
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
segments = st.text(alphabet=B64URL, max_size=200)


@settings(
    deadline=None, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        st.builds(lambda a, b, c: f"{a}.{b}.{c}", segments, segments, segments),
        st.builds(
            lambda header, c: f"{_json(header)}.{_json(make_claims())}.{c}",
            st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit"]), st.text(max_size=20)),
            segments,
        ),
    )
)
def test_garbage_is_always_denied_and_never_raises(engine: PolicyEngine, garbage: Any) -> None:
    decision = engine.verify(garbage, TOOL, Scope.WRITE, subject=SUBJECT)
    assert not decision.allowed
    assert decision.reason in TOKEN_FAILURES
    assert decision.claims is None


@settings(
    deadline=None, max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_one_character_change_to_a_valid_token_is_denied(
    engine: PolicyEngine, data: st.DataObject
) -> None:
    token = forge()
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from(B64URL + ".=").filter(lambda c: c != token[position]))
    changed = token[:position] + replacement + token[position + 1 :]
    decision = engine.verify(changed, TOOL, Scope.WRITE, subject=SUBJECT)
    assert not decision.allowed
    assert decision.reason in TOKEN_FAILURES
