"""An MCP client (the official Python SDK, PyPI `mcp`) that presents a
mandate to the Mandate MCP proxy and proves possession of its holder key:
over Streamable HTTP with a fresh DPoP proof (PyJWT) on every HTTP request,
over stdio by launching `mandate mcp ... -- server` with the mandate
configured once for the session.

    python3 mcp_client.py http URL MANDATE HOLDER_JWK INSTANCE STEPS
    python3 mcp_client.py stdio CONFIG MANDATE_BIN SERVER_ARGS_JSON STEPS

STEPS is a JSON list of ["list"] or ["call", name, arguments] or
["call_meta", name, arguments, meta] or ["until_denied", name, arguments,
seconds]; the result of each is printed as one JSON line.
"""

import asyncio
import json
import sys
import time
import uuid

import httpx
import jwt
from jwt.algorithms import OKPAlgorithm
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError


def proof(private_jwk, method, url):
    key = OKPAlgorithm.from_jwk(json.dumps(private_jwk))
    public = {k: private_jwk[k] for k in ("kty", "crv", "x")}
    return jwt.encode(
        {"jti": uuid.uuid4().hex, "htm": method, "htu": url.split("?")[0], "iat": int(time.time())},
        key,
        algorithm="EdDSA",
        headers={"typ": "dpop+jwt", "jwk": public},
    )


class DPoP(httpx.Auth):
    """A fresh proof on every request, as RFC 9449 asks."""

    def __init__(self, private_jwk):
        self.private_jwk = private_jwk

    def auth_flow(self, request):
        request.headers["DPoP"] = proof(self.private_jwk, request.method, str(request.url))
        yield request


async def run_steps(session, steps):
    await session.initialize()
    for step in steps:
        kind = step[0]
        try:
            if kind == "list":
                tools = await session.list_tools()
                print(json.dumps({"tools": sorted(t.name for t in tools.tools)}), flush=True)
            elif kind in ("call", "call_meta"):
                meta = step[3] if kind == "call_meta" else None
                r = await session.call_tool(step[1], step[2], meta=meta)
                print(json.dumps({"ok": not r.isError, "content": [c.text for c in r.content if hasattr(c, "text")]}), flush=True)
            elif kind == "until_denied":
                deadline = time.time() + step[3]
                while True:
                    try:
                        await session.call_tool(step[1], step[2])
                    except McpError as e:
                        raise e
                    if time.time() > deadline:
                        print(json.dumps({"ok": True, "still_allowed": True}), flush=True)
                        break
                    await asyncio.sleep(0.02)
        except McpError as e:
            print(json.dumps({"error": {"code": e.error.code, "message": e.error.message, "data": e.error.data}}), flush=True)


async def main():
    mode = sys.argv[1]
    if mode == "http":
        url, mandate, holder, instance, steps = sys.argv[2:7]
        headers = {"Mandate": mandate, "Mandate-Agent-Instance": instance}
        auth = DPoP(json.loads(holder))
        async with streamablehttp_client(url, headers=headers, auth=auth) as (read, write, _):
            async with ClientSession(read, write) as session:
                await run_steps(session, json.loads(steps))
    else:
        config, binary, server_args, steps = sys.argv[2:6]
        params = StdioServerParameters(
            command=binary,
            args=["mcp", "--config", config, "--"] + json.loads(server_args),
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await run_steps(session, json.loads(steps))


asyncio.run(main())
