// The console's sign-in with a real OpenID provider (panva/oidc-provider,
// OpenID certified) in real headless Chromium: the full authorization code
// flow with PKCE, the ID token signed RS256 and verified with the keys of
// the provider's JWKS, the role and tenant taken from its claims. A user the
// provider says is an agent is not let in; the provider's endpoints come
// from its discovery document.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import Provider from 'oidc-provider';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = process.env.MANDATE_BIN || join(root, process.env.CARGO_TARGET_DIR || 'target', 'release/mandate');
const work = mkdtempSync(join(tmpdir(), 'mandate-oidc-'));
let server, op, browser, base;

// Free ports, all held open until every one is chosen: taken one after the
// other, the second could be the first again.
const freePorts = async (n) => {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
};

// Who the provider's users are, in Mandate's terms.
const people = {
  'vp@example.com': { role: 'principal', tenant: 'default' },
  'bot@example.com': { role: 'agent', tenant: 'default' },
};

before(async () => {
  const [opPort, port] = await freePorts(2);
  base = `http://127.0.0.1:${port}`;
  const issuer = `http://127.0.0.1:${opPort}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'mandate-console',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [`${base}/console/oidc/callback`],
    }],
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'op-rsa-1', use: 'sig', alg: 'RS256' }] },
    claims: { openid: ['sub', 'role', 'tenant'] },
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    findAccount: (_ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id, ...(people[id] || {}) }),
    }),
  });
  op = provider.listen(opPort, '127.0.0.1');
  // The authority knows only the issuer: endpoints come from discovery.
  writeFileSync(join(work, 'mandate.toml'), `
[[trusted_issuer]]
iss = "${issuer}"
jwks_url = "${issuer}/jwks"

[console_oidc]
issuer = "${issuer}"
client_id = "mandate-console"
redirect_uri = "${base}/console/oidc/callback"
`);
  server = spawn(bin, ['serve', '--config', join(work, 'mandate.toml'), '--data-dir', join(work, 'data'),
    '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise((resolve, reject) => {
    let log = '';
    server.stderr.on('data', (d) => { log += d; if (/listening on/.test(log)) resolve(); });
    server.on('exit', (code) => reject(new Error(`server exited ${code}: ${log}`)));
  });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    const gone = new Promise((r) => server.on('exit', r));
    server.kill('SIGTERM');
    await gone;
  }
  await new Promise((r) => (op ? op.close(r) : r()));
});

async function signInAt(page, login) {
  await page.goto(`${base}/console/login`);
  await page.getByRole('link', { name: "Sign in with your organisation's identity provider" }).click();
  // The provider's own sign-in and consent pages.
  await page.locator('input[name=login]').fill(login);
  await page.locator('input[name=password]').fill('any password');
  await page.locator('button[type=submit]').click();
  await page.locator('button[type=submit]', { hasText: 'Continue' }).click();
}

test('a principal signs in through the identity provider with PKCE and lands on the console', async () => {
  const page = await browser.newPage();
  await signInAt(page, 'vp@example.com');
  await page.waitForURL('**/console/requests');
  assert.ok((await page.textContent('body')).includes('vp@example.com'));
  await page.close();
});

test('someone the provider calls an agent is not let into the console', async () => {
  const page = await browser.newPage();
  await signInAt(page, 'bot@example.com');
  await page.waitForLoadState('domcontentloaded');
  assert.ok(!page.url().endsWith('/console/requests'), page.url());
  assert.ok((await page.textContent('body')).includes('only principals and administrators'));
  await page.close();
});
