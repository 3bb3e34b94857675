"""Capability tokens: signed JWTs that approve one tool, up to one scope, for one subject.

The format is fixed (RFC 8725 explicit typing): header ``{"alg", "kid", "typ": "m1-approval+jwt"}``
and claims ``iss``, ``aud``, ``sub``, ``toolName``, ``scope``, ``jti`` (UUID4), ``iat``, ``nbf``,
``exp``, all required. Nothing else passes: no unsigned token, no other ``typ``, no header parameter
beyond alg/kid/typ (so no ``jku``/``jwk``/``x5u``/``crit`` games), and no algorithm other than the one
pinned to the key the ``kid`` names: the header never chooses the algorithm.

A :class:`TokenCodec` is built once per process. It loads the key objects, the ``jwt.PyJWT``
instance and its options up front and remembers the few header segments it has accepted, so
``decode`` is one PyJWT decode plus dictionary lookups: no I/O, no logging, no settings reads.
That PyJWT instance differs from the stock one only in speed, never in what it accepts: its base64url
segment check runs at C speed, and its HS256 algorithm skips re-checking (per call) a secret it has
already checked. Both override PyJWT internals, so ``pyproject.toml`` pins PyJWT's minor version and
``tests/m1lib/test_tokens.py`` checks the overrides against the originals.

``Scope`` and ``Reason`` live in :mod:`m1lib.vocabulary`; they are re-exported here and by
:mod:`m1lib.policy`, where callers look for them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, rsa
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.utils import base64url_decode, base64url_encode

from m1lib.errors import InputError, SettingsError, TokenRejectedError
from m1lib.signing import resolve_jwt_secret
from m1lib.text import JTI_MAX, SUBJECT_MAX, TOOL_MAX, UNSTORABLE_IN_NAME, check_text
from m1lib.vocabulary import SCOPE_RANK, Reason, Scope

if TYPE_CHECKING:
    from jwt.types import Options

    from m1lib.settings import Settings

__all__ = [
    "ALGORITHMS",
    "MIN_HMAC_BYTES",
    "MIN_RSA_BITS",
    "REQUIRED_CLAIMS",
    "SCOPE_RANK",
    "TOKEN_TYPE",
    "JwtKey",
    "Reason",
    "Scope",
    "TokenCodec",
]

TOKEN_TYPE: Final = "m1-approval+jwt"  # noqa: S105 - the typ header value
ALGORITHMS: Final = ("HS256", "RS256", "EdDSA")
MIN_HMAC_BYTES: Final = 32
MIN_RSA_BITS: Final = 2048
REQUIRED_CLAIMS: Final = ("iss", "aud", "sub", "toolName", "scope", "jti", "iat", "nbf", "exp")
_HEADER_PARAMS = frozenset({"alg", "kid", "typ"})
_HEADER_CACHE_SIZE = 64  # a handful of kids; the bound only stops a flood of odd-but-valid headers
_UNSTORABLE = UNSTORABLE_IN_NAME
_KID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


# PyJWT's failures, most specific first is not needed: decode walks each error's MRO.
_REASONS: Final[dict[type[Exception], Reason]] = {
    jwt.ExpiredSignatureError: Reason.EXPIRED,
    jwt.ImmatureSignatureError: Reason.NOT_YET_VALID,
    jwt.InvalidAudienceError: Reason.WRONG_AUDIENCE,
    jwt.InvalidIssuerError: Reason.WRONG_ISSUER,
    jwt.InvalidSignatureError: Reason.INVALID_SIGNATURE,
    jwt.InvalidAlgorithmError: Reason.INVALID_SIGNATURE,
    jwt.InvalidKeyError: Reason.INVALID_SIGNATURE,
}


def _reason_for(error: Exception) -> Reason:
    for cls in type(error).__mro__:
        reason = _REASONS.get(cls)
        if reason is not None:
            return reason
    return Reason.MALFORMED  # missing or ill-typed claims, bad base64/JSON, crit, b64...


def _derive_kid(algorithm: str, material: bytes) -> str:
    """A stable id from the key itself, so a new key never reuses an old key's id by accident.

    For HS256 it is a truncated SHA-256 of the secret: no help to an attacker, who can already
    test secret guesses against any token's signature.
    """
    digest = hashlib.sha256(b"m1-kid\x00" + algorithm.encode() + b"\x00" + material).hexdigest()
    return f"{algorithm.lower()}-{digest[:16]}"


def _checked_kid(kid: str | None, algorithm: str, material: bytes) -> str:
    if kid is None:
        return _derive_kid(algorithm, material)
    if not _KID.match(kid):
        raise InputError("kid", "is not a key id", ["1-64 of A-Z a-z 0-9 . _ : -"])
    return kid


def _algorithm_for(public: object) -> str:
    """The one algorithm a public key may verify with: the key type pins it."""
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise InputError(
                "key", f"RSA key of {public.key_size} bits is too small", [f">= {MIN_RSA_BITS}"]
            )
        return "RS256"
    if isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    raise InputError(
        "key",
        f"{type(public).__name__} keys are not supported",
        ["RSA (RS256)", "Ed25519 or Ed448 (EdDSA)", "an HS256 secret"],
    )


def _spki(public: PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, slots=True)
class JwtKey:
    """One key: its id, its pinned algorithm, the verifying half and, if it signs, the private half.

    Build keys with the constructors, which check them once (HMAC length, RSA size, key type)
    so nothing on the verify path has to:

    >>> JwtKey.hmac(secrets.token_bytes(48)).algorithm
    'HS256'
    >>> JwtKey.from_pem(Path("signing.pem").read_bytes(), kid="2026-11").algorithm
    'EdDSA'
    """

    kid: str
    algorithm: str
    verifying_key: bytes | PublicKey = field(repr=False)
    signing_key: bytes | PrivateKey | None = field(default=None, repr=False)

    @classmethod
    def hmac(cls, secret: str | bytes, *, kid: str | None = None) -> JwtKey:
        """An HS256 key (signs and verifies) from a secret of at least 32 bytes."""
        data = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(data) < MIN_HMAC_BYTES:
            raise InputError(
                "secret",
                f"{len(data)} bytes is too short for HS256",
                [f">= {MIN_HMAC_BYTES} bytes"],
            )
        try:  # PyJWT refuses PEM, SSH and DER keys as HMAC secrets: key confusion, checked once
            HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(data)
        except jwt.InvalidKeyError as exc:
            raise InputError("secret", "is an asymmetric key, not an HMAC secret") from exc
        kid = _checked_kid(kid, "HS256", data)
        return cls(kid=kid, algorithm="HS256", verifying_key=data, signing_key=data)

    @classmethod
    def from_private_key(cls, key: PrivateKey, *, kid: str | None = None) -> JwtKey:
        """A signing key (RSA >= 2048 bits: RS256; Ed25519/Ed448: EdDSA)."""
        public = key.public_key()
        algorithm = _algorithm_for(public)
        kid = _checked_kid(kid, algorithm, _spki(public))
        return cls(kid=kid, algorithm=algorithm, verifying_key=public, signing_key=key)

    @classmethod
    def from_public_key(cls, key: PublicKey, *, kid: str | None = None) -> JwtKey:
        """A verification-only key, e.g. the previous signing key during a rotation."""
        algorithm = _algorithm_for(key)
        kid = _checked_kid(kid, algorithm, _spki(key))
        return cls(kid=kid, algorithm=algorithm, verifying_key=key)

    @classmethod
    def from_pem(cls, pem: bytes, *, kid: str | None = None) -> JwtKey:
        """A private PEM gives a signing key, a public PEM a verification-only key."""
        try:
            if b"PRIVATE KEY" in pem:
                private = serialization.load_pem_private_key(pem, password=None)
                _algorithm_for(private.public_key())  # refuses DSA, EC, DH..., naming the type
                return cls.from_private_key(cast(PrivateKey, private), kid=kid)
            public = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InputError(
                "key",
                "is not an unencrypted PEM key",
                ["PEM (PKCS#8 or SubjectPublicKeyInfo) RSA, Ed25519 or Ed448 key"],
            ) from exc
        _algorithm_for(public)
        return cls.from_public_key(cast(PublicKey, public), kid=kid)

    def public_only(self) -> JwtKey:
        """The same key without its private half (for a verify-only replica)."""
        if self.algorithm == "HS256":
            return self  # a shared secret has no public half
        return JwtKey(kid=self.kid, algorithm=self.algorithm, verifying_key=self.verifying_key)


# -- PyJWT, faster but no more lenient ---------------------------------------------------------------

_BASE64URL_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class _FastJWS(PyJWS):
    """``PyJWS`` with the per-segment base64url check done by C loops instead of a per-byte generator.

    Pinned to PyJWT 2.15 (``_decode_base64url_segment`` is private); the tests compare it with the
    original over generated segments. It accepts and refuses exactly what the original does.
    """

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        # As PyJWT 2.15: at most two trailing '=' and then only on a multiple-of-4 segment; no
        # length of 4n+1; nothing outside the base64url alphabet (GHSA-hxm8-2xgr-2p9m); canonical
        # (the decoded bytes must re-encode to the same text, so no stray trailing bits).
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if (
            padding > 2
            or (padding and len(segment) % 4 != 0)
            or len(stripped) % 4 == 1
            or stripped.translate(None, _BASE64URL_ALPHABET)
        ):
            raise jwt.DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64url_decode(stripped)
        except (TypeError, binascii.Error) as err:
            raise jwt.DecodeError(f"Invalid {name} padding") from err
        if base64url_encode(decoded) != stripped:
            raise jwt.DecodeError(f"Invalid {name} padding")
        return decoded


class _CheckedHMAC(HMACAlgorithm):
    """HS256 that does not re-run ``prepare_key``'s checks (PEM, SSH, DER, JWK: microseconds) on every
    call for the codec's own secrets, which passed them once when the codec was built.

    ``prepare_key`` depends on nothing but the key, so its answer for those exact bytes cannot
    change; any other key goes through the full check.
    """

    def __init__(self, checked: frozenset[bytes]) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._checked = checked

    def prepare_key(self, key: str | bytes) -> bytes:
        if key.__class__ is bytes and key in self._checked:
            return key  # what the full check returns for bytes that pass it
        return super().prepare_key(key)


class _FastJWT(jwt.PyJWT):
    """``jwt.PyJWT`` on :class:`_FastJWS`, knowing only M1's algorithms."""

    def __init__(self, options: Options, hmac_secrets: Iterable[bytes]) -> None:
        super().__init__(options=options)
        self._jws = _FastJWS(algorithms=ALGORITHMS, options=self._get_sig_options())
        checked: set[bytes] = set()
        probe = HMACAlgorithm(HMACAlgorithm.SHA256)
        for secret in hmac_secrets:
            try:
                checked.add(probe.prepare_key(secret))
            except jwt.InvalidKeyError:
                continue  # a hand-built JwtKey: left to the full check, which refuses it each time
        self._jws.unregister_algorithm("HS256")
        self._jws.register_algorithm("HS256", _CheckedHMAC(frozenset(checked)))


class _Verifier(NamedTuple):
    key: bytes | PublicKey
    algorithms: list[str]  # one element: pinned


class TokenCodec:
    """Issues and verifies capability tokens: one signing key, any number of verification keys.

    Use one per process, built at start-up (``TokenCodec.from_settings``); ``decode`` is safe to
    call from many threads. Rotation: sign with the new key and keep the old one among
    ``verification_keys`` until its last token has expired (``M1_TOKEN_TTL_S`` + leeway).

    >>> codec = TokenCodec(signing_key=JwtKey.hmac(secret), issuer="m1", audience="m1-tools")
    >>> token = codec.issue(subject="agent-7", tool_name="log_agent_run", scope=Scope.WRITE)
    >>> codec.decode(token)["toolName"]
    'log_agent_run'
    """

    def __init__(
        self,
        *,
        signing_key: JwtKey,
        verification_keys: Iterable[JwtKey] = (),
        issuer: str,
        audience: str,
        ttl_s: int = 300,
        leeway_s: int = 5,
        max_bytes: int = 4096,
    ) -> None:
        if signing_key.signing_key is None:
            raise InputError("signing_key", "has no private half; it cannot sign")
        if not issuer or not audience:
            raise InputError("issuer" if not issuer else "audience", "must not be empty")
        if ttl_s < 1 or leeway_s < 0 or max_bytes < 256:
            raise InputError(
                "ttl_s/leeway_s/max_bytes",
                "out of range",
                ["ttl_s >= 1, leeway_s >= 0, max >= 256"],
            )
        keys: dict[str, JwtKey] = {}
        for key in (signing_key, *verification_keys):
            if key.kid in keys:
                raise InputError("verification_keys", f"kid {key.kid!r} is used by two keys")
            if key.algorithm not in ALGORITHMS:  # a JwtKey built by hand, past the constructors
                raise InputError("key", f"algorithm {key.algorithm!r} is refused", ALGORITHMS)
            keys[key.kid] = key
        self.kid = signing_key.kid
        self.algorithm = signing_key.algorithm
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self.leeway_s = leeway_s
        self.max_bytes = max_bytes
        self.kids = tuple(keys)
        self._signing = signing_key.signing_key
        self._headers = {"kid": signing_key.kid, "typ": TOKEN_TYPE}
        self._verifiers = {
            kid: _Verifier(key.verifying_key, [key.algorithm]) for kid, key in keys.items()
        }
        self._accepted_headers: dict[str, _Verifier] = {}
        # Everything the hot path needs, resolved now: PyJWT merges no options per call.
        self._jwt = _FastJWT(
            {
                "require": list(REQUIRED_CLAIMS),
                "strict_aud": True,
                "enforce_minimum_key_length": True,
            },
            hmac_secrets=(
                key.verifying_key
                for key in keys.values()
                if key.algorithm == "HS256" and isinstance(key.verifying_key, bytes)
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenCodec:
        """The codec of ``M1_JWT_*`` and ``M1_TOKEN_*``; a bad key fails here, naming the variable."""
        signing = _signing_key_from(settings)
        verification = _verification_keys_from(settings)
        with _naming("M1_JWT_VERIFY_KEYS"):
            return cls(
                signing_key=signing,
                verification_keys=verification,
                issuer=settings.jwt.issuer,
                audience=settings.jwt.audience,
                ttl_s=settings.token.ttl_s,
                leeway_s=settings.token.leeway_s,
                max_bytes=settings.token.max_bytes,
            )

    def issue(self, *, subject: str, tool_name: str, scope: str, ttl_s: int | None = None) -> str:
        """A signed token for ``subject`` to use ``tool_name`` up to ``scope``, for ``ttl_s`` seconds.

        ``ttl_s`` defaults to and may not exceed ``M1_TOKEN_TTL_S``: revocation records are kept
        only that long, so a longer-lived token could outlive its revocation.
        """
        lifetime = self.ttl_s if ttl_s is None else ttl_s
        if lifetime.__class__ is not int or not 1 <= lifetime <= self.ttl_s:
            raise InputError(
                "ttl", f"{lifetime!r} s is not a lifetime M1 issues", [f"1..{self.ttl_s} s"]
            )
        check_text("subject", subject, SUBJECT_MAX, required=True)
        check_text("tool_name", tool_name, TOOL_MAX, required=True)
        if scope.__class__ not in (str, Scope) or scope not in SCOPE_RANK:
            raise InputError("scope", f"{scope!r} is not a scope", list(Scope))
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "toolName": tool_name,
            "scope": str(scope),
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
        }
        token = self._jwt.encode(
            claims, self._signing, algorithm=self.algorithm, headers=self._headers
        )
        if len(token) > self.max_bytes:
            raise InputError(
                "subject",
                f"too long: the token would be {len(token)} bytes",
                [f"<= {self.max_bytes} bytes in all (M1_TOKEN_MAX_BYTES)"],
            )
        return token

    def decode(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; raises :class:`TokenRejectedError` with the Reason.

        Order: size (before any decoding), header (typ, kid, the kid's pinned alg), then PyJWT
        (signature, then exp/nbf/iat with leeway, iss, aud, required claims), then M1's own
        claim shapes and the lifetime bound.
        """
        if token.__class__ is not str:
            raise TokenRejectedError(Reason.MALFORMED, "a token is text")
        if len(token) > self.max_bytes:
            raise TokenRejectedError(Reason.MALFORMED, f"longer than {self.max_bytes} bytes")
        if not token.isascii():
            raise TokenRejectedError(Reason.MALFORMED, "not ASCII")
        verifier = self._accepted_headers.get(token.partition(".")[0])
        if verifier is None:
            verifier = self._check_header(token)
        try:
            claims = self._jwt.decode(
                token,
                verifier.key,
                algorithms=verifier.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
            )
        except jwt.PyJWTError as exc:
            raise TokenRejectedError(_reason_for(exc), str(exc)) from exc
        scope, tool, sub, jti = claims["scope"], claims["toolName"], claims["sub"], claims["jti"]
        if scope.__class__ is not str or scope not in SCOPE_RANK:
            raise TokenRejectedError(Reason.MALFORMED, "scope is not read, write or execute")
        # Only what revocation and audit can store is accepted: a token M1 takes can be revoked.
        if (
            jti.__class__ is not str
            or tool.__class__ is not str
            or sub.__class__ is not str
            or not 0 < len(jti) <= JTI_MAX
            or not 0 < len(tool) <= TOOL_MAX
            or not 0 < len(sub) <= SUBJECT_MAX
            or _UNSTORABLE.search(jti + tool + sub) is not None
            or jti.isspace()
            or tool.isspace()
            or sub.isspace()
        ):
            raise TokenRejectedError(
                Reason.MALFORMED,
                f"jti (1-{JTI_MAX}), toolName (1-{TOOL_MAX}) and sub (1-{SUBJECT_MAX}) must be "
                "non-blank text without control characters",
            )
        iat, exp = claims["iat"], claims["exp"]
        if (
            iat.__class__ is not int
            or exp.__class__ is not int
            or claims["nbf"].__class__ is not int
        ):
            raise TokenRejectedError(Reason.MALFORMED, "iat, nbf and exp must be whole seconds")
        if exp - iat > self.ttl_s:
            raise TokenRejectedError(Reason.MALFORMED, "lifetime longer than M1 issues")
        return claims

    def _check_header(self, token: str) -> _Verifier:
        """The slow path, once per distinct header: typ, kid and the kid's pinned algorithm."""
        segment = token.partition(".")[0]
        try:
            header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        except (ValueError, RecursionError) as exc:  # binascii and Unicode errors are ValueErrors
            raise TokenRejectedError(Reason.MALFORMED, "header is not base64url JSON") from exc
        if not isinstance(header, dict):
            raise TokenRejectedError(Reason.MALFORMED, "header is not a JSON object")
        if not header.keys() <= _HEADER_PARAMS:
            raise TokenRejectedError(Reason.MALFORMED, "header may hold only alg, kid and typ")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") != TOKEN_TYPE:
            raise TokenRejectedError(Reason.WRONG_TYPE, f"typ is not {TOKEN_TYPE}")
        kid = header.get("kid")
        verifier = self._verifiers.get(kid) if isinstance(kid, str) else None
        if verifier is None:
            raise TokenRejectedError(Reason.UNKNOWN_KEY, "kid names no verification key")
        if header.get("alg") != verifier.algorithms[0]:
            raise TokenRejectedError(
                Reason.INVALID_SIGNATURE, f"alg is not {verifier.algorithms[0]}, pinned to this kid"
            )
        if len(self._accepted_headers) < _HEADER_CACHE_SIZE:
            self._accepted_headers[segment] = verifier
        return verifier


# -- keys from settings: errors name the variable, never the secret ----------------------------------


@contextmanager
def _naming(variable: str) -> Iterator[None]:
    try:
        yield
    except InputError as exc:
        allowed = f"; allowed: {', '.join(exc.allowed)}" if exc.allowed else ""
        raise SettingsError(f"{variable}: {exc.path} {exc.problem}{allowed}") from exc


def _read_key_file(path: Path, variable: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from exc


def _signing_key_from(settings: Settings) -> JwtKey:
    algorithm, kid, path = settings.jwt.algorithm, settings.jwt.kid, settings.jwt.private_key_file
    if algorithm == "HS256":
        if path is not None:
            raise SettingsError(
                "M1_JWT_PRIVATE_KEY_FILE: set, but M1_JWT_ALGORITHM is HS256; "
                "allowed: M1_JWT_ALGORITHM=RS256 or EdDSA with a key file, or no key file"
            )
        with _naming("M1_JWT_SECRET"):
            return JwtKey.hmac(resolve_jwt_secret(settings).get_secret_value(), kid=kid)
    if path is None:
        raise SettingsError(
            f"M1_JWT_PRIVATE_KEY_FILE: required when M1_JWT_ALGORITHM is {algorithm}"
        )
    with _naming("M1_JWT_PRIVATE_KEY_FILE"):
        key = JwtKey.from_pem(_read_key_file(path, "M1_JWT_PRIVATE_KEY_FILE"), kid=kid)
    if key.signing_key is None:
        raise SettingsError(
            f"M1_JWT_PRIVATE_KEY_FILE: {path} holds a public key; a private key signs"
        )
    if key.algorithm != algorithm:
        raise SettingsError(
            f"M1_JWT_PRIVATE_KEY_FILE: {path} holds a key for {key.algorithm}, "
            f"but M1_JWT_ALGORITHM is {algorithm}"
        )
    return key


def _verification_keys_from(settings: Settings) -> list[JwtKey]:
    """``kid=secret`` or ``kid=file:<path>`` entries; each key's own type pins its algorithm."""
    if settings.jwt.verify_keys is None:
        return []
    variable = "M1_JWT_VERIFY_KEYS"
    keys: list[JwtKey] = []
    entries = [e.strip() for e in settings.jwt.verify_keys.get_secret_value().split(",")]
    for number, entry in enumerate((e for e in entries if e), start=1):
        kid, sep, value = (part.strip() for part in entry.partition("="))
        if not sep or not value or not _KID.match(kid):
            raise SettingsError(
                f"{variable}: entry {number} is not kid=value; "
                "allowed: kid=<HS256 secret> or kid=file:<path>, kid of 1-64 of A-Z a-z 0-9 . _ : -"
            )
        with _naming(f"{variable} ({kid})"):
            if not value.startswith("file:"):
                keys.append(JwtKey.hmac(value, kid=kid))
                continue
            data = _read_key_file(Path(value.removeprefix("file:")), variable)
            if data.lstrip().startswith(b"-----BEGIN"):
                keys.append(JwtKey.from_pem(data, kid=kid).public_only())
            else:
                keys.append(JwtKey.hmac(data.strip(), kid=kid))
    return keys
