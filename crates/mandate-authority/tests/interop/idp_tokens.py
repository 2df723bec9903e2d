"""Tokens shaped as mainstream identity providers issue them, made with
PyJWT and cryptography (an independent implementation), plus the forgeries
an attacker would try. Writes OUT/jwks.json (the providers' public keys,
with keys the authority must skip) and prints one JSON object: case name ->
token.

usage: idp_tokens.py OUT NOW
"""

import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

out, now = sys.argv[1], int(sys.argv[2])

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key, kid, **extra):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())
                     if isinstance(key, rsa.RSAPrivateKey)
                     else jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = kid
    jwk.update(extra)
    return jwk


jwks = {"keys": [
    public_jwk(rsa_key, "rsa-1", use="sig"),
    public_jwk(ec_key, "ec-1", use="sig", alg="ES256"),
    # An encryption key and a symmetric key: skipped, not fatal.
    public_jwk(other_rsa, "rsa-enc", use="enc"),
    {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"},
]}
with open(f"{out}/jwks.json", "w") as f:
    json.dump(jwks, f)

ENTRA = "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
OKTA = "https://acme.okta.com/oauth2/default"
KEYCLOAK = "http://127.0.0.1:1/realms/acme"


def sign(claims, key=rsa_key, alg="RS256", kid="rsa-1", typ="JWT", **headers):
    h = {"kid": kid, **headers}
    if typ is not None:
        h["typ"] = typ
    else:
        h["typ"] = None
    base = {"iat": now, "nbf": now, "exp": now + 600}
    base.update(claims)
    token = jwt.encode(base, key, algorithm=alg, headers=h)
    return token


entra = {"iss": ENTRA, "aud": ["api://mandate", "00000003-0000-0000-c000-000000000000"],
         "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ", "oid": "u-1",
         "tid": "9188040d-6c67-4c5b-b112-36a304b66dad", "roles": ["Mandate.Approver"]}
okta = {"iss": OKTA, "aud": "api://mandate", "sub": "00u1abcd", "cid": "0oa1",
        "groups": ["Everyone", "mandate-admins"], "org": "acme"}
keycloak = {"iss": KEYCLOAK, "aud": ["account", "mandate"], "sub": "f:kc:gw-1",
            "azp": "gateway-1", "tenant": "acme",
            "realm_access": {"roles": ["offline_access", "uma_authorization", "enforcer"]}}

tokens = {
    # Entra ID: RS256, aud a list, roles as app roles, tenant fixed by config.
    "entra_principal": sign(entra),
    # Okta: PS256 (RSASSA-PSS), an access token typed at+jwt (RFC 9068), groups.
    "okta_admin": sign(okta, alg="PS256", typ="at+jwt"),
    # Keycloak: ES256, no typ at all, nested realm roles.
    "keycloak_enforcer": sign(keycloak, key=ec_key, alg="ES256", kid="ec-1", typ=None),
    # --- what an attacker tries ---
    # Algorithm confusion: HMAC keyed with the RSA public key everyone can read.
    "hs256_with_public_key": None,
    # No signature at all.
    "alg_none": jwt.encode({**entra, "iat": now, "exp": now + 600}, None, algorithm="none",
                           headers={"kid": "rsa-1"}),
    # Signed by a key the provider never published, under a published kid.
    "foreign_key": sign(entra, key=other_rsa),
    # The encryption key's kid (skipped, so unknown).
    "enc_kid": sign(entra, key=other_rsa, kid="rsa-enc"),
    # RS256 claimed for the EC key.
    "rs256_on_ec_kid": sign(entra, kid="ec-1"),
    # The header names its own key.
    "jku_header": sign(entra, jku="https://evil.example/jwks.json"),
    "expired": sign({**entra, "iat": now - 4000, "nbf": now - 4000, "exp": now - 3600}),
    "not_yet_valid": sign({**entra, "nbf": now + 3600}),
    "issued_in_the_future": sign({**entra, "iat": now + 3600, "nbf": now}),
    "wrong_audience": sign({**entra, "aud": "api://someone-else"}),
    "untrusted_issuer": sign({**entra, "iss": "https://evil.example"}),
    "id_token_typed_as_dpop": sign(entra, typ="dpop+jwt"),
    "group_without_role": sign({**okta, "groups": ["Everyone"]}, alg="PS256"),
    "two_kinds_of_role": sign({**okta, "groups": ["mandate-admins", "mandate-bots"]}, alg="PS256"),
    "no_tenant": sign({k: v for k, v in okta.items() if k != "org"}, alg="PS256"),
}

# PyJWT refuses to HMAC with a PEM public key; the forgery is made by hand.
import base64
import hashlib
import hmac


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
body = b64(json.dumps({**entra, "iat": now, "exp": now + 600}).encode())
mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
tokens["hs256_with_public_key"] = f"{head}.{body}.{b64(mac)}"

print(json.dumps(tokens))
