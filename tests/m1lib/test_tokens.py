"""Capability tokens: format, keys, limits and the codec built from settings."""

from __future__ import annotations

import base64
import inspect
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS

from m1lib.errors import InputError, SettingsError, TokenRejectedError, UsageError
from m1lib.settings import Settings
from m1lib.signing import JWT_SECRET_FILE
from m1lib.tokens import TOKEN_TYPE, JwtKey, Reason, Scope, TokenCodec, _CheckedHMAC, _FastJWS

SECRET = "s" * 40
OLD_SECRET = "o" * 40


def _codec(key: JwtKey, *verification: JwtKey, ttl_s: int = 300) -> TokenCodec:
    return TokenCodec(
        signing_key=key,
        verification_keys=verification,
        issuer="m1",
        audience="m1-tools",
        ttl_s=ttl_s,
    )


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, *, public: bool = False) -> bytes:
    if public:
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_issued_token_has_the_typed_header_and_every_claim() -> None:
    codec = _codec(JwtKey.hmac(SECRET, kid="k1"))
    token = codec.issue(subject="agent-7", tool_name="log_agent_run", scope=Scope.WRITE)
    assert _header(token) == {"alg": "HS256", "kid": "k1", "typ": TOKEN_TYPE}
    claims = codec.decode(token)
    assert claims["iss"] == "m1"
    assert claims["aud"] == "m1-tools"
    assert claims["sub"] == "agent-7"
    assert claims["toolName"] == "log_agent_run"
    assert claims["scope"] == "write"
    assert uuid.UUID(claims["jti"]).version == 4
    assert claims["iat"] == claims["nbf"]
    assert claims["exp"] - claims["iat"] == 300


def test_every_token_gets_its_own_jti() -> None:
    codec = _codec(JwtKey.hmac(SECRET))
    jtis = {
        codec.decode(codec.issue(subject="a", tool_name="t", scope="read"))["jti"]
        for _ in range(20)
    }
    assert len(jtis) == 20


def test_ttl_may_shorten_the_lifetime() -> None:
    codec = _codec(JwtKey.hmac(SECRET))
    claims = codec.decode(codec.issue(subject="a", tool_name="t", scope="read", ttl_s=30))
    assert claims["exp"] - claims["iat"] == 30


@pytest.mark.parametrize("ttl_s", [0, -5, 301, 10**9])
def test_ttl_outside_one_second_to_the_maximum_is_refused(ttl_s: int) -> None:
    codec = _codec(JwtKey.hmac(SECRET))
    with pytest.raises(InputError) as caught:
        codec.issue(subject="a", tool_name="t", scope="read", ttl_s=ttl_s)
    assert caught.value.path == "ttl"
    assert caught.value.allowed == ["1..300 s"]


@pytest.mark.parametrize("subject", ["", " ", "x" * 256, "a\x00b", "a\nb"])
def test_subject_must_be_1_to_255_characters(subject: str) -> None:
    with pytest.raises(InputError, match="subject"):
        _codec(JwtKey.hmac(SECRET)).issue(subject=subject, tool_name="t", scope="read")


def test_issue_refuses_a_token_over_the_size_limit() -> None:
    codec = TokenCodec(
        signing_key=JwtKey.hmac(SECRET), issuer="m1", audience="m1-tools", max_bytes=512
    )
    with pytest.raises(InputError, match="M1_TOKEN_MAX_BYTES"):
        codec.issue(subject="a" * 255, tool_name="t" * 128, scope="read")


def test_issue_refuses_an_unknown_scope() -> None:
    with pytest.raises(InputError) as caught:
        _codec(JwtKey.hmac(SECRET)).issue(subject="a", tool_name="t", scope="admin")
    assert caught.value.allowed == ["read", "write", "execute"]


def test_scopes_order_by_rank_not_by_text() -> None:
    assert Scope.READ < Scope.WRITE < Scope.EXECUTE
    assert Scope.EXECUTE >= Scope.WRITE
    assert Scope.EXECUTE.covers("read")
    assert not Scope.READ.covers(Scope.WRITE)
    assert max(Scope.EXECUTE, Scope.READ, Scope.WRITE) is Scope.EXECUTE


def test_hmac_key_refuses_a_secret_under_32_bytes() -> None:
    with pytest.raises(InputError, match="too short"):
        JwtKey.hmac("x" * 31)


def test_hmac_key_refuses_a_pem_key_as_secret(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InputError, match="asymmetric"):
        JwtKey.hmac(_pem(rsa_key, public=True))


def test_derived_kid_is_stable_and_differs_per_key() -> None:
    assert JwtKey.hmac(SECRET).kid == JwtKey.hmac(SECRET).kid
    assert JwtKey.hmac(SECRET).kid != JwtKey.hmac(OLD_SECRET).kid
    assert JwtKey.hmac(SECRET).kid.startswith("hs256-")


def test_kid_must_be_a_plain_identifier() -> None:
    with pytest.raises(InputError, match="key id"):
        JwtKey.hmac(SECRET, kid="../../etc/passwd")


def test_rs256_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    codec = _codec(JwtKey.from_pem(_pem(rsa_key)))
    token = codec.issue(subject="a", tool_name="t", scope="execute")
    assert _header(token)["alg"] == "RS256"
    assert codec.decode(token)["scope"] == "execute"


def test_eddsa_round_trip() -> None:
    codec = _codec(JwtKey.from_private_key(ed25519.Ed25519PrivateKey.generate()))
    token = codec.issue(subject="a", tool_name="t", scope="write")
    assert _header(token)["alg"] == "EdDSA"
    assert codec.decode(token)["sub"] == "a"


def test_public_pem_verifies_what_the_private_key_signed(rsa_key: rsa.RSAPrivateKey) -> None:
    signer = _codec(JwtKey.from_pem(_pem(rsa_key), kid="rs-1"))
    public = JwtKey.from_pem(_pem(rsa_key, public=True), kid="rs-1")
    assert public.signing_key is None
    other = _codec(JwtKey.hmac(SECRET), public)
    assert other.decode(signer.issue(subject="a", tool_name="t", scope="read"))["sub"] == "a"


def test_codec_needs_a_private_key_to_sign(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InputError, match="cannot sign"):
        _codec(JwtKey.from_pem(_pem(rsa_key, public=True)))


def test_rsa_key_under_2048_bits_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    with pytest.raises(InputError, match="1024 bits"):
        JwtKey.from_private_key(small)


def test_ec_keys_are_refused_naming_what_is_allowed() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(InputError) as caught:
        JwtKey.from_pem(pem)
    assert "RSA (RS256)" in caught.value.allowed


def test_two_keys_with_one_kid_are_refused() -> None:
    with pytest.raises(InputError, match="used by two keys"):
        _codec(JwtKey.hmac(SECRET, kid="k"), JwtKey.hmac(OLD_SECRET, kid="k"))


def test_a_hand_built_key_with_algorithm_none_is_refused() -> None:
    with pytest.raises(InputError, match="'none' is refused"):
        _codec(JwtKey(kid="k", algorithm="none", verifying_key=b"", signing_key=b""))


def test_decode_failure_is_typed_and_never_quotes_the_token() -> None:
    codec = _codec(JwtKey.hmac(SECRET))
    token = codec.issue(subject="a", tool_name="t", scope="read")
    with pytest.raises(TokenRejectedError) as caught:
        codec.decode(token[:-4] + "AAAA")
    assert caught.value.reason is Reason.INVALID_SIGNATURE
    assert token[:-4] not in str(caught.value)


def test_a_signed_lifetime_longer_than_the_maximum_is_refused() -> None:
    now = int(time.time())
    claims = {
        "iss": "m1",
        "aud": "m1-tools",
        "sub": "a",
        "toolName": "t",
        "scope": "read",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    key = JwtKey.hmac(SECRET, kid="k")
    token = jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "k", "typ": TOKEN_TYPE})
    with pytest.raises(TokenRejectedError) as caught:
        _codec(key).decode(token)
    assert caught.value.reason is Reason.MALFORMED


# -- the faster PyJWT: same verdicts as PyJWT 2.15 -------------------------------------------------
#
# m1lib.tokens overrides PyJWS._decode_base64url_segment (private) and HMACAlgorithm.prepare_key.
# pyproject.toml pins PyJWT to 2.15.x; these tests fail loudly if an upgrade moves what they rely on.

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_pyjwt_still_has_the_internals_the_codec_overrides() -> None:
    assert jwt.__version__.startswith("2.15."), (
        f"PyJWT {jwt.__version__}: m1lib.tokens._FastJWS was checked against 2.15 only; "
        "re-check it against the new PyJWS._decode_base64url_segment and move the pin"
    )
    original = inspect.getattr_static(PyJWS, "_decode_base64url_segment", None)
    assert isinstance(original, staticmethod), "PyJWS._decode_base64url_segment is gone or moved"
    assert list(inspect.signature(PyJWS._decode_base64url_segment).parameters) == [
        "segment",
        "name",
    ]
    assert "self._decode_base64url_segment(" in inspect.getsource(PyJWS._load)
    assert isinstance(jwt.PyJWT()._jws, PyJWS)
    assert list(inspect.signature(HMACAlgorithm.prepare_key).parameters) == ["self", "key"]


def test_the_codec_decodes_every_segment_through_the_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = _codec(JwtKey.hmac(SECRET))
    token = codec.issue(subject="a", tool_name="t", scope="read")
    assert type(codec._jwt._jws) is _FastJWS
    seen: list[str] = []
    fast = _FastJWS._decode_base64url_segment

    def spy(segment: bytes, name: str) -> bytes:
        seen.append(name)
        return fast(segment, name)

    monkeypatch.setattr(_FastJWS, "_decode_base64url_segment", staticmethod(spy))
    assert codec.decode(token)["sub"] == "a"
    assert seen == ["header", "payload", "crypto"]


def _outcome(decode: Callable[[bytes, str], bytes], segment: bytes, name: str) -> tuple[Any, ...]:
    try:
        return ("ok", decode(segment, name))
    except Exception as exc:  # any error at all: the comparison is the point
        return ("error", type(exc), str(exc), type(exc.__cause__))


_valid = st.binary(max_size=48).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"="))
_segments = st.one_of(
    _valid,
    st.binary(max_size=48).map(base64.urlsafe_b64encode),  # padded, as AWS ALB sends
    st.tuples(_valid, st.integers(1, 4)).map(lambda v: v[0] + b"=" * v[1]),  # bad padding
    st.binary(max_size=64),  # random bytes
    st.sampled_from([b"!!!!", b"!!!!==", b"AA!!", b"====", b"=", b"AA==AA", b"AA\nA", b""]),
    st.text(alphabet=_B64URL + "=!.+/ \n", max_size=24).map(str.encode),  # near misses
    st.integers(0, 12)
    .flatmap(  # length 4n+1
        lambda n: st.text(alphabet=_B64URL, min_size=4 * n + 1, max_size=4 * n + 1)
    )
    .map(str.encode),
    st.text(alphabet=_B64URL, min_size=1, max_size=24).map(str.encode),  # stray trailing bits
)


@settings(deadline=None, max_examples=300)
@given(segment=_segments, name=st.sampled_from(["header", "payload", "crypto"]))
def test_fast_segment_decode_matches_pyjwt(segment: bytes, name: str) -> None:
    expected = _outcome(PyJWS._decode_base64url_segment, segment, name)
    assert _outcome(_FastJWS._decode_base64url_segment, segment, name) == expected


@pytest.mark.parametrize(
    ("segment", "verdict"),
    [(b"eyJhIjoxfQ", b'{"a":1}'), (b"eyJhIjoxfQ==", b'{"a":1}'), (b"!!!!", None), (b"QR", None)],
)
def test_fast_segment_decode_examples(segment: bytes, verdict: bytes | None) -> None:
    if verdict is None:
        with pytest.raises(jwt.DecodeError, match="Invalid payload padding"):
            _FastJWS._decode_base64url_segment(segment, "payload")
    else:
        assert _FastJWS._decode_base64url_segment(segment, "payload") == verdict


def test_the_hs256_shortcut_covers_only_the_codecs_own_checked_secrets(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    codec = _codec(JwtKey.hmac(SECRET), JwtKey.hmac(OLD_SECRET, kid="old"))
    hs256 = codec._jwt._jws.get_algorithm_by_name("HS256")
    assert isinstance(hs256, _CheckedHMAC)
    assert hs256.prepare_key(SECRET.encode()) == SECRET.encode()
    assert hs256.prepare_key(OLD_SECRET.encode()) == OLD_SECRET.encode()
    for other in (b"", _pem(rsa_key, public=True), b'{"kty":"oct","k":"c2VjcmV0"}'):
        with pytest.raises(jwt.InvalidKeyError):
            hs256.prepare_key(other)
    # A hand-built key that fails the check is not trusted: it is refused on every use.
    pem = _pem(rsa_key, public=True)
    hand_built = JwtKey(kid="pem", algorithm="HS256", verifying_key=pem, signing_key=pem)
    codec = _codec(JwtKey.hmac(SECRET), hand_built)
    with pytest.raises(jwt.InvalidKeyError):
        codec._jwt._jws.get_algorithm_by_name("HS256").prepare_key(pem)


def test_the_codec_knows_only_m1_algorithms() -> None:
    codec = _codec(JwtKey.hmac(SECRET))
    assert sorted(codec._jwt._jws.get_algorithms()) == sorted(["HS256", "RS256", "EdDSA"])


# -- from settings ---------------------------------------------------------------------------------


def test_from_settings_signs_with_the_configured_secret(
    make_settings: Callable[..., Settings],
) -> None:
    codec = TokenCodec.from_settings(
        make_settings(jwt={"secret": SECRET, "issuer": "m1-prod", "audience": "tools"})
    )
    claims = codec.decode(codec.issue(subject="a", tool_name="t", scope="read"))
    assert (claims["iss"], claims["aud"]) == ("m1-prod", "tools")
    assert codec.kid == JwtKey.hmac(SECRET).kid


def test_from_settings_uses_the_generated_secret_file(
    make_settings: Callable[..., Settings], tmp_data_dir: Path
) -> None:
    (tmp_data_dir / JWT_SECRET_FILE).write_text("g" * 48 + "\n")
    assert TokenCodec.from_settings(make_settings()).kid == JwtKey.hmac("g" * 48).kid


def test_from_settings_without_any_secret_is_a_usage_error(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(UsageError, match="M1_JWT_SECRET"):
        TokenCodec.from_settings(make_settings())


def test_from_settings_refuses_a_short_secret_naming_the_variable(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.warns(UserWarning, match="M1_JWT_SECRET"):
        settings = make_settings(jwt={"secret": "short-secret"})
    with pytest.raises(SettingsError, match="M1_JWT_SECRET") as caught:
        TokenCodec.from_settings(settings)
    assert "short-secret" not in str(caught.value)


def test_from_settings_loads_an_rs256_private_key_file(
    make_settings: Callable[..., Settings], tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "signing.pem"
    path.write_bytes(_pem(rsa_key))
    settings = make_settings(jwt={"algorithm": "RS256", "private_key_file": path, "kid": "rs-1"})
    codec = TokenCodec.from_settings(settings)
    token = codec.issue(subject="a", tool_name="t", scope="read")
    assert _header(token) == {"alg": "RS256", "kid": "rs-1", "typ": TOKEN_TYPE}


def test_from_settings_refuses_a_key_of_another_algorithm(
    make_settings: Callable[..., Settings], tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "signing.pem"
    path.write_bytes(_pem(rsa_key))
    settings = make_settings(jwt={"algorithm": "EdDSA", "private_key_file": path})
    with pytest.raises(SettingsError, match=r"M1_JWT_PRIVATE_KEY_FILE: .* RS256.*EdDSA"):
        TokenCodec.from_settings(settings)


@pytest.mark.parametrize(
    ("jwt_settings", "variable"),
    [
        ({"algorithm": "RS256"}, "M1_JWT_PRIVATE_KEY_FILE: required"),
        ({"algorithm": "EdDSA", "private_key_file": "/nonexistent/k.pem"}, "cannot read"),
        ({"secret": SECRET, "private_key_file": "/some/k.pem"}, "M1_JWT_ALGORITHM is HS256"),
    ],
)
def test_from_settings_names_the_variable_of_a_bad_key_setting(
    make_settings: Callable[..., Settings], jwt_settings: dict[str, Any], variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        TokenCodec.from_settings(make_settings(jwt=jwt_settings))


def test_from_settings_adds_verification_keys_from_secrets_and_files(
    make_settings: Callable[..., Settings], tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    (tmp_path / "old.pem").write_bytes(_pem(rsa_key, public=True))
    (tmp_path / "older.secret").write_text("q" * 40 + "\n")
    verify_keys = f"old-hs={OLD_SECRET}, old-rs=file:{tmp_path / 'old.pem'},older=file:{tmp_path / 'older.secret'}"
    codec = TokenCodec.from_settings(
        make_settings(jwt={"secret": SECRET, "kid": "new", "verify_keys": verify_keys})
    )
    assert codec.kids == ("new", "old-hs", "old-rs", "older")
    old_rs = _codec(JwtKey.from_private_key(rsa_key, kid="old-rs"))
    assert codec.decode(old_rs.issue(subject="a", tool_name="t", scope="read"))["sub"] == "a"


@pytest.mark.parametrize(
    "verify_keys", [OLD_SECRET, "old=", "bad kid=" + OLD_SECRET, "old=short", "new=" + OLD_SECRET]
)
def test_bad_verification_keys_name_the_variable_but_not_the_secret(
    make_settings: Callable[..., Settings], verify_keys: str
) -> None:
    settings = make_settings(jwt={"secret": SECRET, "kid": "new", "verify_keys": verify_keys})
    with pytest.raises(SettingsError, match="M1_JWT_VERIFY_KEYS") as caught:
        TokenCodec.from_settings(settings)
    assert OLD_SECRET not in str(caught.value)
