"""Verifies a root mandate with PyJWT, the way any JWT consumer would.

usage: pyjwt_verify.py JWKS.json TOKEN_FILE ALG

Prints the decoded `mandate_id` and exits 0, or prints PyJWT's error and exits 1.
"""
import json
import sys

import jwt


def main() -> int:
    jwks_path, token_path, alg = sys.argv[1:4]
    with open(jwks_path, encoding="utf-8") as f:
        jwks = json.load(f)
    with open(token_path, encoding="utf-8") as f:
        token = f.read().strip()
    header = jwt.get_unverified_header(token)
    keys = {k["kid"]: k for k in jwks["keys"]}
    key = jwt.PyJWK(keys[header["kid"]])
    try:
        claims = jwt.decode(token, key, algorithms=[alg], options={"require": ["exp", "iat", "nbf", "jti"]})
    except jwt.PyJWTError as e:
        print(f"rejected: {type(e).__name__}: {e}")
        return 1
    assert claims["jti"] == claims["mandate_id"]
    assert header["typ"] == "mandate+jwt"
    print(claims["mandate_id"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
