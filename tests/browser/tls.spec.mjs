// TLS and Origin checks of the web client in Debian's chromium against real chatd processes:
// the page served over https:// connects with wss:// and chats; a page of another origin is
// refused (403) by default and accepted once --allowed-origins lists it. Starts its own servers
// (a certificate for 127.0.0.1 made with the `openssl` command). Run by run.sh, or alone:
// `node tests/browser/tls.spec.mjs` (CHATD, BUILD_DIR, CHROMIUM as for chat.spec.mjs).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const ARTIFACTS = process.env.ARTIFACTS_DIR || path.join(HERE, 'artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHATD = process.env.CHATD || path.join(path.resolve(ROOT, process.env.BUILD_DIR || 'build'), 'bin', 'chatd');
const WAIT = 15000;

fs.mkdirSync(ARTIFACTS, { recursive: true });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-tls-browser-'));
const cert = path.join(dir, 'cert.pem');
const key = path.join(dir, 'key.pem');

async function until(what, fn, timeoutMs = WAIT, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const servers = [];
async function startServer(label, args) {
  const portFile = path.join(dir, `${label}.port`);
  const log = fs.openSync(path.join(ARTIFACTS, `chatd-tls-${label}.log`), 'w');
  const child = spawn(CHATD, ['--allow-anonymous', '--store', 'memory', '--listen', '127.0.0.1:0',
    '--port-file', portFile, ...args], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  let exited = null;
  child.on('exit', (code, sig) => { exited = { code, sig }; });
  servers.push(child);
  await until(`${label} to listen`, () => {
    if (exited) throw new Error(`chatd ${label} exited: ${JSON.stringify(exited)}`);
    return fs.existsSync(portFile) && /^\d+\s*$/.test(fs.readFileSync(portFile, 'utf8'));
  }, 20000);
  return { child, port: Number(fs.readFileSync(portFile, 'utf8').trim()) };
}

async function stopServer(s) {
  if (s.child.exitCode !== null) return;
  const gone = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGTERM');
  await Promise.race([gone, new Promise((r) => setTimeout(r, 10000))]);
}

// /metrics of a TLS server, verified against the test certificate.
function metrics(port) {
  return new Promise((resolve, reject) => {
    https.get({ host: '127.0.0.1', port, path: '/metrics', ca: fs.readFileSync(cert) }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}
const originRefusals = async (port) =>
  Number(((await metrics(port)).match(/chat_edge_refused_total\{reason="origin"\} (\d+)/) || [])[1]);

let browser, tlsServer, plainServer;
const contexts = [];

async function page(url) {
  // The certificate is self-signed: the browser is told to accept it (the C++ tests verify it).
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  contexts.push(ctx);
  const p = await ctx.newPage();
  await p.goto(url, { timeout: WAIT });
  return p;
}
const tid = (p, id) => p.locator(`[data-testid="${id}"]`);
const state = (p) => tid(p, 'conn-state').getAttribute('data-state');

before(async () => {
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  assert.equal(r.status, 0, 'openssl made the test certificate');
  tlsServer = await startServer('tls', ['--tls-cert', cert, '--tls-key', key]);
  plainServer = await startServer('plain', []);  // only to serve the page from another origin
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60000,
  });
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  for (const s of servers) if (s.exitCode === null) s.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('over https:// the page connects with wss:// and chats', async () => {
  const p = await page(`https://127.0.0.1:${tlsServer.port}/`);
  assert.equal(await p.evaluate(() => location.protocol), 'https:');
  // The page's own WebSocket: watch which URL it opens.
  const opened = new Promise((r) => p.on('websocket', (ws) => r(ws.url())));
  await tid(p, 'name-input').fill('tina');
  await tid(p, 'connect-button').click();
  assert.equal(await opened, `wss://127.0.0.1:${tlsServer.port}/ws`);
  await p.waitForSelector('[data-testid="conn-state"][data-state="online"]', { timeout: WAIT });
  await tid(p, 'room-input').fill('secure');
  await tid(p, 'join-button').click();
  await p.waitForSelector('[data-testid="room-item"][data-room="secure"][data-joined="true"]',
    { state: 'attached', timeout: WAIT });
  await tid(p, 'composer-input').fill('over TLS 🔒');
  await tid(p, 'send-button').click();
  await p.waitForFunction(() => [...document.querySelectorAll('[data-testid="message-text"]')]
    .some((e) => e.textContent === 'over TLS 🔒'), null, { timeout: WAIT });
  await p.screenshot({ path: path.join(ARTIFACTS, 'chat-tls.png') });
});

test('a page of another origin is refused by default, accepted when listed', async () => {
  const wss = `wss://127.0.0.1:${tlsServer.port}/ws`;
  const foreign = `http://127.0.0.1:${plainServer.port}`;
  const before = await originRefusals(tlsServer.port);
  const p = await page(`${foreign}/?ws=${encodeURIComponent(wss)}`);
  await tid(p, 'name-input').fill('mallory');
  await tid(p, 'connect-button').click();
  await until('the TLS server to refuse the origin', async () => (await originRefusals(tlsServer.port)) > before);
  assert.notEqual(await state(p), 'online');
  await p.context().close();

  // The same page once the operator allows that origin.
  await stopServer(tlsServer);
  tlsServer = await startServer('tls-allowed',
    ['--tls-cert', cert, '--tls-key', key, '--allowed-origins', `${foreign},https://chat.example.com`]);
  const allowed = `wss://127.0.0.1:${tlsServer.port}/ws`;
  const q = await page(`${foreign}/?ws=${encodeURIComponent(allowed)}`);
  await tid(q, 'name-input').fill('olivia');
  await tid(q, 'connect-button').click();
  await q.waitForSelector('[data-testid="conn-state"][data-state="online"]', { timeout: WAIT });
  assert.equal(await originRefusals(tlsServer.port), 0);
});
