"""Makes a DPoP proof (RFC 9449) with PyJWT, as an agent written in Python
would, from the holder's private JWK; prints it.

usage: pyjwt_dpop.py HOLDER_PRIVATE_JWK_JSON METHOD URL [ACCESS_TOKEN]
"""
import base64
import hashlib
import json
import sys
import time
import uuid

import jwt


def main() -> int:
    private = json.loads(sys.argv[1])
    method, url = sys.argv[2], sys.argv[3]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    key = jwt.PyJWK(private)
    public = {k: private[k] for k in ("kty", "crv", "x", "y") if k in private}
    claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time())}
    if token is not None:
        digest = hashlib.sha256(token.encode("ascii")).digest()
        claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    alg = "EdDSA" if private["kty"] == "OKP" else "ES256"
    proof = jwt.encode(claims, key.key, algorithm=alg, headers={"typ": "dpop+jwt", "jwk": public})
    print(proof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
