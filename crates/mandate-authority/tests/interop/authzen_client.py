"""An independent OpenID AuthZEN 1.0 client against the authority's PDP.

usage: authzen_client.py BASE_URL ENFORCER_TOKEN MANDATE HOLDER_PRIVATE_JWK_JSON

As an enforcement point would: it reads the PDP metadata, passes the agent's
DPoP proof (made with PyJWT) in `context`, and checks the answers' shapes:
a boolean `decision`, `X-Request-ID` echoed, the batch endpoint's
`evaluations` in order, a single evaluation when `evaluations` is absent, a
malformed item answered with an error object, a request without a subject a
400. Prints "ok".
"""
import json
import sys
import urllib.error
import urllib.request

from authlib_exchange import proof as dpop_proof  # the same PyJWT-made DPoP proof

URL = "https://pep.example/search"


def proof(private):
    return dpop_proof(private, "POST", URL)


def post(base, path, token, body, request_id=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    if request_id:
        req.add_header("X-Request-ID", request_id)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


def main() -> int:
    base, enforcer, mandate, private = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    with urllib.request.urlopen(base + "/.well-known/authzen-configuration", timeout=20) as r:
        meta = json.loads(r.read())
    one = meta["access_evaluation_endpoint"][len(meta["policy_decision_point"]):]
    many = meta["access_evaluations_endpoint"][len(meta["policy_decision_point"]):]
    subject = {"type": "agent", "id": "urn:agent:procurement/vendor-sourcing@3.2",
               "properties": {"mandate": mandate}}
    resource = {"type": "vendor_portal", "id": "https://vendor-portal.example.com/search",
                "properties": {"category": "logistics", "region": "north-america",
                               "contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}
    def context():
        return {"agent_instance": "inst-7f2a-b8c4", "dpop": proof(private), "htm": "POST", "htu": URL}

    st, headers, d = post(base, one, enforcer, {"subject": subject, "action": {"name": "search"},
                                                "resource": resource, "context": context()}, "rq-1")
    assert st == 200 and d["decision"] is True, (st, d)
    assert {k.lower(): v for k, v in headers.items()}.get("x-request-id") == "rq-1", headers

    st, _, d = post(base, one, enforcer, {"subject": subject, "action": {"name": "delete_vendor"},
                                          "resource": resource, "context": context()})
    assert st == 200 and d["decision"] is False, d
    assert "action_not_permitted" in d["context"]["reasons"], d

    st, _, d = post(base, many, enforcer, {"subject": subject, "resource": resource, "context": context(),
                                           "evaluations": [{"action": {"name": "search"}},
                                                           {"action": {"name": "delete_vendor"}},
                                                           {"action": "not an object"}]})
    assert st == 200, (st, d)
    got = d["evaluations"]
    assert [e["decision"] for e in got] == [True, False, False], got
    err = got[2]["context"]["error"]
    assert isinstance(err, dict) and err["status"] == 400 and err["message"], err

    st, _, d = post(base, many, enforcer, {"subject": subject, "action": {"name": "search"},
                                           "resource": resource, "context": context()})
    assert st == 200 and d["decision"] is True and "evaluations" not in d, d

    st, _, _ = post(base, one, enforcer, {"action": {"name": "search"}, "resource": resource})
    assert st == 400, st
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
