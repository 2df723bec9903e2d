// The official MCP TypeScript SDK (@modelcontextprotocol/sdk) as a client of
// the Mandate MCP proxy over Streamable HTTP: the mandate in the `Mandate`
// header, a fresh DPoP proof (RFC 9449, Ed25519 with node:crypto) on every
// HTTP request through the transport's `fetch`.
//
//   node client.mjs URL MANDATE HOLDER_JWK INSTANCE
//
// Prints one JSON line: the tools listed, a search's result, and the error
// of a delete.
import { createPrivateKey, randomUUID, sign } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, mandate, holderJwk, instance] = process.argv.slice(2);
const jwk = JSON.parse(holderJwk);
const key = createPrivateKey({ key: jwk, format: "jwk" });
const b64 = (x) => Buffer.from(x).toString("base64url");

function proof(method, target) {
  const header = { typ: "dpop+jwt", alg: "EdDSA", jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x } };
  const claims = { jti: randomUUID(), htm: method, htu: target.split("?")[0], iat: Math.floor(Date.now() / 1000) };
  const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
  return `${input}.${b64(sign(null, Buffer.from(input), key))}`;
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Mandate: mandate, "Mandate-Agent-Instance": instance } },
  fetch: (input, init = {}) => {
    const headers = new Headers(init.headers);
    headers.set("DPoP", proof(init.method ?? "GET", String(input)));
    return fetch(input, { ...init, headers });
  },
});
const client = new Client({ name: "mandate-ts-peer", version: "1.0.0" });
await client.connect(transport);
const out = {};
out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
const search = await client.callTool({ name: "search_vendors", arguments: { category: "logistics", region: "north-america" } });
out.search = search.content.map((c) => c.text);
try {
  await client.callTool({ name: "delete_vendor", arguments: { vendor_id: "v-17" } });
  out.delete = "allowed";
} catch (e) {
  out.delete = { code: e.code, data: e.data };
}
console.log(JSON.stringify(out));
await client.close();
