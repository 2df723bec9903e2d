"""An independent Shared Signals receiver, written from SSF 1.0, RFC 8417
(SETs) and RFC 8936 (poll delivery), run against the authority.

usage: ssf_receiver.py BASE_URL ENFORCER_TOKEN PRINCIPAL_TOKEN MANDATE_ID

Every SET is verified with PyJWT against the transmitter's JWKS (typ
secevent+jwt, iss, aud, iat, a jti never seen before). Checks:
- the verification event has the SSF type, names the stream in sub_id,
  echoes state, and arrives only on the stream that asked for it;
- events_requested is honoured (a kind not requested never arrives);
- acknowledgements are per jti: acking a later SET alone does not drop an
  earlier one; `sets` lists SETs in the order they happened;
- a status change keeps the receiver's reason.
Prints "ok" and exits 0, or fails with an assertion.
"""
import json
import sys
import urllib.request

import jwt

PREFIX = "https://schemas.mandate.dev/secevent/v1/"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
POLL = "urn:ietf:rfc:8936"


def call(base, method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=20) as r:
        text = r.read().decode()
        return r.status, (json.loads(text) if text else None)


class Receiver:
    def __init__(self, base, token, meta, jwks):
        self.base, self.token, self.meta = base, token, meta
        self.keys = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}
        self.seen = set()

    def path(self, url):
        return url[len(self.meta["issuer"]):]

    def create(self, events):
        st, s = call(self.base, "POST", self.path(self.meta["configuration_endpoint"]), self.token,
                     {"delivery": {"method": POLL}, "events_requested": events})
        assert st in (200, 201), st
        return s

    def poll(self, stream, ack=()):
        url = self.path(stream["delivery"]["endpoint_url"])
        st, body = call(self.base, "POST", url, self.token,
                        {"ack": list(ack), "returnImmediately": True, "maxEvents": 50})
        assert st == 200, st
        out = []
        for jti, set_ in body["sets"].items():  # in the order the transmitter listed them
            header = jwt.get_unverified_header(set_)
            assert header["typ"] == "secevent+jwt", header
            claims = jwt.decode(set_, self.keys[header["kid"]], algorithms=[header["alg"]],
                                audience=stream["aud"], issuer=self.meta["issuer"],
                                options={"require": ["iat", "jti", "iss", "aud"]})
            assert claims["jti"] == jti, (claims["jti"], jti)
            assert jti not in self.seen, f"jti {jti} delivered twice"
            self.seen.add(jti)
            (uri, event), = claims["events"].items()
            out.append((jti, uri, event, claims))
        return out


def main() -> int:
    base, enforcer, principal, mandate = sys.argv[1:5]
    _, meta = call(base, "GET", "/.well-known/ssf-configuration", enforcer)
    _, jwks = call(base, "GET", "/.well-known/jwks.json", enforcer)
    rx = Receiver(base, enforcer, meta, jwks)
    wanted = [PREFIX + "suspended", PREFIX + "revoked", VERIFICATION]
    one = rx.create(wanted)
    two = rx.create(wanted)
    assert VERIFICATION in one["events_supported"]
    assert sorted(one["events_delivered"]) == sorted(wanted), one["events_delivered"]

    # Verification: on the stream that asked, with its state; not on the other.
    st, _ = call(base, "POST", rx.path(meta["verification_endpoint"]), enforcer,
                 {"stream_id": one["stream_id"], "state": "state-7f3a"})
    assert st == 204, st
    got = rx.poll(one)
    assert [g[1] for g in got] == [VERIFICATION], got
    _, _, event, claims = got[0]
    assert event == {"state": "state-7f3a"}, event
    assert claims["sub_id"] == {"format": "opaque", "id": one["stream_id"]}, claims["sub_id"]
    assert rx.poll(two) == [], "the verification went to another stream"

    # Suspend, resume, revoke: `resumed` was not requested.
    for op in ("suspend", "resume", "revoke"):
        st, _ = call(base, "POST", f"/v1/mandates/{mandate}/{op}", principal, {})
        assert st == 200, (op, st)
    got = rx.poll(one)
    kinds = [g[1][len(PREFIX):] for g in got]
    assert kinds == ["suspended", "revoked"], kinds
    (first, _, _, _), (second, _, _, _) = got
    # Acknowledge only the later one: the earlier one is still owed.
    rx.seen -= {first, second}
    again = rx.poll(one, ack=[second])
    assert [g[0] for g in again] == [first], again
    rx.seen.discard(first)
    assert rx.poll(one, ack=[first]) == []
    assert rx.poll(one) == []

    # A status change keeps the reason the receiver gave.
    status = rx.path(meta["status_endpoint"])
    st, _ = call(base, "POST", status, enforcer,
                 {"stream_id": two["stream_id"], "status": "paused", "reason": "maintenance window"})
    assert st == 200, st
    _, s = call(base, "GET", f"{status}?stream_id={two['stream_id']}", enforcer)
    assert s["status"] == "paused" and s["reason"] == "maintenance window", s
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
