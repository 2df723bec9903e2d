// The console in real headless Chromium: sign in, approve a pending request
// and see the mandate active, revoke it and see the cascade, see a denied
// after-end attempt in the timeline, hostile text rendered as text, and a
// cross-site form refused. Screenshots of the main pages go to docs/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = process.env.MANDATE_BIN || join(root, process.env.CARGO_TARGET_DIR || 'target', 'release/mandate');
const work = mkdtempSync(join(tmpdir(), 'mandate-console-'));
// The README's screenshots are rewritten only on request (UPDATE_SCREENSHOTS=1);
// otherwise they go to the scratch directory, so a test run leaves the tree clean.
const shots = process.env.UPDATE_SCREENSHOTS ? join(root, 'docs/screenshots') : join(work, 'screenshots');
const data = join(work, 'data');
let server, base, browser, attacker, attackerBase;

const token = (sub, role) =>
  execFileSync(bin, ['token', '--data-dir', data, '--sub', sub, '--role', role, '--tenant', 'default']).toString().trim();

async function api(method, path, tok, body) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

function request(objective) {
  const c = JSON.parse(readFileSync(join(root, 'testdata/procurement-mandate.json'), 'utf8'));
  return {
    principal: 'vp@example.com',
    agent: { id: c.agent.id, instance: c.agent.instance,
      cnf: { jwk: JSON.parse(readFileSync(join(work, 'agent.pub.jwk'), 'utf8')) } },
    purpose: { objective, business_context: c.purpose.business_context },
    authorization_details: c.authorization_details,
    conditions: c.conditions,
    lifecycle: { hard_expiry: '2099-10-15T17:00:00Z',
      terminal_events: [{ type: 'contingency_program.cancelled', subject: 'program:contingency-q4-2025' }] },
    delegation: c.delegation,
    discovery: { types: ['sanctions_screening'], locations: ['https://screening.example.net/v2'],
      actions: ['screen_entity'], max_lifetime_secs: 300 },
  };
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  execFileSync(bin, ['keygen', '--out', join(work, 'agent.jwk')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pub = execFileSync(bin, ['jwks', join(work, 'agent.jwk')]).toString();
  (await import('node:fs')).writeFileSync(join(work, 'agent.pub.jwk'), JSON.stringify(JSON.parse(pub).keys[0]));
  server = spawn(bin, ['serve', '--data-dir', data, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  base = await new Promise((resolve, reject) => {
    let log = '';
    server.stderr.on('data', (d) => {
      log += d;
      const m = log.match(/listening on (http:\/\/[^ ]+)/);
      if (m) resolve(m[1]);
    });
    server.on('exit', (code) => reject(new Error(`server exited ${code}: ${log}`)));
  });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  // Another origin that tries to drive the console with a form.
  attacker = http.createServer((req, res) => {
    const target = decodeURIComponent(req.url.slice(1));
    res.setHeader('content-type', 'text/html');
    res.end(`<form id="f" method="post" action="${target}"><input name="op" value="revoke"><input name="reason" value="csrf"></form>
      <script>document.getElementById('f').submit()</script>`);
  });
  await new Promise((r) => attacker.listen(0, '127.0.0.1', r));
  attackerBase = `http://localhost:${attacker.address().port}/`;
});

after(async () => {
  await browser?.close();
  server?.kill();
  attacker?.close();
});

async function signIn(page, tok) {
  await page.goto(base + '/console/login');
  await page.getByLabel('Token').fill(tok);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/console/requests');
}

test('a principal approves a pending request, watches it, revokes it with its cascade', async () => {
  const agent = token('agent-7', 'agent');
  const principal = token('vp@example.com', 'principal');
  const admin = token('admin@example.com', 'admin');
  const enforcer = token('gateway-1', 'enforcer');
  const evil = '<script>alert("owned")</script> Source a vendor <img src=x onerror=alert(2)>';
  const r = await api('POST', '/v1/requests', agent, request(evil));
  assert.equal(r.status, 201);

  const page = await browser.newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  await signIn(page, principal);
  await page.screenshot({ path: join(shots, 'requests.png'), fullPage: true });
  await page.getByRole('link', { name: 'Review' }).click();
  await page.waitForURL(`**/console/requests/${r.body.id}`);
  // Hostile text is text.
  assert.ok((await page.textContent('#consent')).includes('<script>alert("owned")</script>'));
  assert.equal(await page.locator('#consent script').count(), 0);
  assert.equal(await page.locator('#consent img').count(), 0);
  assert.ok((await page.textContent('#consent')).includes("procurement.contingency_program.status == 'active'"));
  await page.screenshot({ path: join(shots, 'consent.png'), fullPage: true });
  await page.getByRole('button', { name: 'Approve and sign the mandate' }).click();
  await page.waitForURL('**/console/mandates/mnd-*');
  const mid = page.url().split('/').pop();
  assert.equal(await page.textContent('.state'), 'active');

  // The agent derives a child and registers it; then one decision is allowed.
  await api('PUT', '/v1/facts', admin, { procurement: { contingency_program: { status: 'active' } } });
  const issued = await api('GET', `/v1/mandates/${mid}`, admin);
  // The acting agent is the mandate's holder (testdata/procurement-mandate.json);
  // the enforcement point passes the DPoP proof it sent (a fresh one each time).
  const proof = () => execFileSync(bin, ['dpop', '--key', join(work, 'agent.jwk'), '--method', 'POST',
    '--url', 'https://pep.example/search']).toString().trim();
  const decide = () => api('POST', '/access/v1/evaluation', enforcer, {
    subject: { type: 'agent', id: 'urn:agent:procurement/vendor-sourcing@3.2', properties: { mandate: issued.body.mandate } },
    context: { agent_instance: 'inst-7f2a-b8c4', dpop: proof(), htm: 'POST', htu: 'https://pep.example/search' },
    action: { name: 'search' },
    resource: { type: 'vendor_portal', id: 'https://vendor-portal.example.com/search',
      properties: { category: 'logistics', region: 'north-america', contract_template: 'standard-logistics-v3', spend_tier: 'pre-approved' } },
  });
  assert.equal((await decide()).body.decision, true);
  const g = await api('POST', `/v1/mandates/${mid}/discovery`, agent,
    { type: 'sanctions_screening', location: 'https://screening.example.net/v2/screen', action: 'screen_entity' });
  assert.equal(g.status, 200);

  // Revoke: the confirmation says what will be cascaded.
  await page.reload();
  await page.screenshot({ path: join(shots, 'mandate.png'), fullPage: true });
  await page.getByRole('link', { name: 'Revoke…' }).click();
  assert.ok((await page.textContent('main')).includes('1 descendant mandate(s)'));
  assert.ok((await page.textContent('main')).includes(g.body.mandate_id));
  await page.getByLabel('Reason').fill('deal collapsed');
  await page.getByRole('button', { name: 'Confirm: revoke' }).click();
  await page.waitForURL(`**/console/mandates/${mid}`);
  assert.equal(await page.textContent('.state'), 'revoked');
  const child = await api('GET', `/v1/mandates/${g.body.mandate_id}`, admin);
  assert.equal(child.body.state, 'revoked');

  // An attempt after the end is denied and marked in the timeline.
  assert.deepEqual((await decide()).body.context.reasons, ['revoked']);
  await page.reload();
  assert.ok(await page.locator('tr.after-end').count() >= 1);
  assert.ok((await page.textContent('tr.after-end')).includes('denied: revoked'));
  await page.screenshot({ path: join(shots, 'timeline.png'), fullPage: true });

  await page.goto(base + '/console/audit');
  assert.ok((await page.textContent('main')).includes('Audit chain intact'));
  await page.screenshot({ path: join(shots, 'audit.png'), fullPage: true });
  assert.deepEqual(dialogs, [], 'no script from the agent ran');
  await page.close();
});

test('a form posted from another site is refused and changes nothing', async () => {
  const agent = token('agent-8', 'agent');
  const principal = token('vp@example.com', 'principal');
  const r = await api('POST', '/v1/requests', agent, request('Source a vendor'));
  const a = await api('POST', `/v1/requests/${r.body.id}/approve`, principal);
  assert.equal(a.status, 200);
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, principal);
  await page.goto(attackerBase + encodeURIComponent(`${base}/console/mandates/${a.body.mandate_id}/act`));
  await page.waitForLoadState('networkidle');
  const status = await api('GET', `/v1/mandates/${a.body.mandate_id}`, principal);
  assert.equal(status.body.state, 'active', 'the cross-site form must not revoke');
  await context.close();
});

test('an agent cannot reach any console page', async () => {
  const page = await browser.newPage();
  await page.goto(base + '/console/login');
  await page.getByLabel('Token').fill(token('agent-9', 'agent'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  assert.ok((await page.textContent('main')).includes('cannot use the console'));
  const res = await page.goto(base + '/console/mandates');
  assert.ok(page.url().endsWith('/console/login'));
  assert.equal(res.status(), 200);
  await page.close();
});
