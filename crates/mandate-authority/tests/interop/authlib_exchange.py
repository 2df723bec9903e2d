"""An independent OAuth client and resource server against the authority.

usage: authlib_exchange.py BASE_URL MANDATE HOLDER_PRIVATE_JWK_JSON

1. Reads the RFC 8414 metadata.
2. Makes a DPoP proof (RFC 9449) with PyJWT from the holder key.
3. Performs the RFC 8693 token exchange with Authlib's OAuth2Session.
4. As a resource server: verifies the access token with PyJWT against the
   authority's JWKS (typ at+jwt, iss, exp), and checks its cnf.jkt against
   the RFC 7638 thumbprint of the key in a proof made for the resource call.

Prints one JSON object; exits 0 when every check passed.
"""
import base64
import hashlib
import json
import sys
import time
import uuid

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: dict) -> str:
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y") if k in jwk}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode("utf-8")).digest())


def proof(private: dict, method: str, url: str, token: str | None = None) -> str:
    public = {k: private[k] for k in ("kty", "crv", "x", "y") if k in private}
    claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time())}
    if token is not None:
        claims["ath"] = b64(hashlib.sha256(token.encode("ascii")).digest())
    alg = "EdDSA" if private["kty"] == "OKP" else "ES256"
    return jwt.encode(claims, jwt.PyJWK(private).key, algorithm=alg,
                      headers={"typ": "dpop+jwt", "jwk": public})


def main() -> int:
    base, mandate, private = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
    token_endpoint = meta["token_endpoint"]
    # The authority names its public URL; this test reaches it on loopback.
    path = token_endpoint[len(meta["issuer"]):]
    client = OAuth2Session(client_id="agent-runtime", token_endpoint_auth_method="none")
    subject_type = ("urn:mandate:params:oauth:token-type:mandate-chain" if "~" in mandate
                    else "urn:ietf:params:oauth:token-type:jwt")
    token = client.fetch_token(
        f"{base}{path}",
        grant_type=EXCHANGE,
        subject_token=mandate,
        subject_token_type=subject_type,
        headers={"DPoP": proof(private, "POST", token_endpoint)},
    )
    access = token["access_token"]
    assert token["token_type"] == "DPoP", token
    header = jwt.get_unverified_header(access)
    assert header["typ"] == "at+jwt", header
    jwks = requests.get(f"{base}/.well-known/jwks.json", timeout=10).json()
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = jwt.decode(access, key, algorithms=[header["alg"]], issuer=meta["issuer"],
                        options={"verify_aud": False, "require": ["exp", "iat", "jti", "sub"]})
    # The resource server's binding check: the proof that comes with the
    # token is signed by the key the token names.
    resource_proof = proof(private, "GET", "https://vendor-portal.example.com/search", access)
    proof_key = jwt.get_unverified_header(resource_proof)["jwk"]
    jwt.decode(resource_proof, jwt.PyJWK(proof_key).key, algorithms=["EdDSA", "ES256"])
    assert claims["cnf"]["jkt"] == thumbprint(proof_key), (claims["cnf"], thumbprint(proof_key))
    assert claims["exp"] - claims["iat"] <= 300, claims
    print(json.dumps({"mandate_id": claims["mandate_id"], "jkt": claims["cnf"]["jkt"],
                      "access_token": access}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
