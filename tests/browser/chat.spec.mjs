// Browser tests of the web client (web/) against a real chatd, in Debian's chromium driven by
// playwright-core. Run through run.sh, which installs what is needed and starts the server; or
// alone with `node chat.spec.mjs` (it then starts CHATD itself).
//
// Environment (all optional):
//   CHAT_PORT      port of a chatd already running (run.sh sets it); unset: start one
//   CHATD_PIDFILE  file holding that server's pid; the restart test writes the new pid there
//   CHATD          chatd binary (default $BUILD_DIR/bin/chatd, BUILD_DIR default "build")
//   CHATD_ARGS     server arguments besides --listen/--port-file
//   CHROMIUM       browser binary (default /usr/bin/chromium)
//   ARTIFACTS_DIR  screenshots and server logs (default tests/browser/artifacts)
//   CHAT_WEB_DIR   serve index.html, app.js and style.css from this directory instead of the copies
//                  embedded in chatd at build time (to try web/ changes without a rebuild)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const ARTIFACTS = process.env.ARTIFACTS_DIR || path.join(HERE, 'artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const BUILD_DIR = path.resolve(ROOT, process.env.BUILD_DIR || 'build');
const CHATD = process.env.CHATD || path.join(BUILD_DIR, 'bin', 'chatd');
const JWT_SECRET = process.env.CHAT_TEST_JWT_SECRET || 'browser-test-secret-' + process.pid;
const CHATD_ARGS = (process.env.CHATD_ARGS || `--allow-anonymous --store memory --jwt-secret ${JWT_SECRET}`)
  .split(/\s+/).filter(Boolean);
// CHAT_WEB_DIR relative to the current directory, else to the repository root (CHAT_WEB_DIR=web)
const WEB_DIR = !process.env.CHAT_WEB_DIR ? null
  : [path.resolve(process.env.CHAT_WEB_DIR), path.resolve(ROOT, process.env.CHAT_WEB_DIR)]
    .find((d) => fs.existsSync(path.join(d, 'app.js'))) || path.resolve(process.env.CHAT_WEB_DIR);
const WAIT = 15000;       // one ordinary wait
const LONG_WAIT = 45000;  // waits that span a reconnect

fs.mkdirSync(ARTIFACTS, { recursive: true });

// ------------------------------------------------------------------ server control
const server = {
  port: Number(process.env.CHAT_PORT) || 0,
  pidFile: process.env.CHATD_PIDFILE || null,
  pid: 0,
  child: null,   // set when this process started the server
  starts: 0,
};
if (server.pidFile && fs.existsSync(server.pidFile)) server.pid = Number(fs.readFileSync(server.pidFile, 'utf8').trim());

function processGone(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z'); // exited, not yet reaped
  } catch {
    return true;
  }
}

async function until(what, fn, timeoutMs, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

async function startServer(port) {
  // The port may still be held for a moment after the previous server exited: retry a few times.
  for (let attempt = 1; ; attempt++) {
    server.starts++;
    const portFile = path.join(os.tmpdir(), `chatd-browser-${process.pid}-${server.starts}.port`);
    fs.rmSync(portFile, { force: true });
    const log = fs.openSync(path.join(ARTIFACTS, `chatd-${server.starts}.log`), 'w');
    const child = spawn(CHATD, [...CHATD_ARGS, '--listen', `127.0.0.1:${port}`, '--port-file', portFile],
      { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    let exited = null;
    child.on('exit', (code, sig) => { exited = { code, sig }; });
    try {
      await until('the server to write its port file',
        () => { if (exited) throw new Error(`chatd exited early: ${JSON.stringify(exited)}`);
                return fs.existsSync(portFile) && /^\d+\s*$/.test(fs.readFileSync(portFile, 'utf8')); },
        20000);
    } catch (e) {
      try { child.kill('SIGKILL'); } catch { /* gone */ }
      if (attempt < 10 && port !== 0) { await new Promise((r) => setTimeout(r, 300)); continue; }
      throw e;
    }
    server.port = Number(fs.readFileSync(portFile, 'utf8').trim());
    fs.rmSync(portFile, { force: true });
    server.child = child;
    server.pid = child.pid;
    if (server.pidFile) fs.writeFileSync(server.pidFile, String(child.pid) + '\n');
    return server.port;
  }
}

async function stopServer(signal = 'SIGTERM') {
  const pid = server.pid;
  if (!pid) return;
  try { process.kill(pid, signal); } catch { /* already gone */ }
  try {
    await until('chatd to exit', () => processGone(pid), 15000);
  } catch (e) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    await until('chatd to die', () => processGone(pid), 5000);
  }
  server.pid = 0;
  server.child = null;
}

const baseUrl = () => `http://127.0.0.1:${server.port}/`;
const wsUrl = () => `ws://127.0.0.1:${server.port}/ws`;

// ------------------------------------------------------------------ browser helpers
let browser;
const pageErrors = [];
const dialogs = [];
const contexts = [];

// With CHAT_WEB_DIR: the page's own files come from that directory (the server's headers kept).
async function serveWebDir(ctx) {
  if (!WEB_DIR) return;
  await ctx.route((url) => url.host === `127.0.0.1:${server.port}` && /^\/(index\.html|app\.js|style\.css)?$/.test(url.pathname),
    async (route) => {
      const name = new URL(route.request().url()).pathname.slice(1) || 'index.html';
      const response = await route.fetch();
      await route.fulfill({ response, body: fs.readFileSync(path.join(WEB_DIR, name)) });
    });
}

async function newContext(options = {}) {
  const ctx = await browser.newContext(options);
  contexts.push(ctx);
  await serveWebDir(ctx);
  return ctx;
}

async function openClient(label, viewport = { width: 1100, height: 720 }) {
  const ctx = await newContext({ viewport });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
  page.on('dialog', (d) => { dialogs.push(`${label}: ${d.type()} ${d.message()}`); d.dismiss().catch(() => {}); });
  await page.goto(baseUrl(), { timeout: WAIT });
  return page;
}

const tid = (page, id) => page.locator(`[data-testid="${id}"]`);
const roomItem = (page, room) => page.locator(`[data-testid="room-item"][data-room="${room}"]`);

async function signIn(page, { name, token }) {
  if (token) {
    await page.locator('#token-box summary').click();
    await tid(page, 'token-input').fill(token);
  } else {
    await tid(page, 'name-input').fill(name);
  }
  await tid(page, 'connect-button').click();
  await page.waitForSelector('[data-testid="conn-state"][data-state="online"]', { timeout: WAIT });
  const me = tid(page, 'me');
  return { page, user: await me.getAttribute('data-user'), name: await me.textContent() };
}

async function joinRoom(page, room) {
  await tid(page, 'room-input').fill(room);
  await tid(page, 'join-button').click();
  await page.waitForSelector(`[data-testid="room-item"][data-room="${room}"][data-joined="true"].active`,
    { state: 'attached', timeout: WAIT });
}

async function openRoom(page, room) {
  await roomItem(page, room).click();
  await page.waitForSelector(`[data-testid="room-item"][data-room="${room}"].active`, { state: 'attached', timeout: WAIT });
}

async function sendMessage(page, text) {
  await tid(page, 'composer-input').fill(text);
  await tid(page, 'send-button').click();
}

// Wait until the active room shows a message with exactly this text; return its seq.
async function waitForMessage(page, text, timeout = WAIT) {
  const handle = await page.waitForFunction((t) => {
    for (const li of document.querySelectorAll('[data-testid="message"]')) {
      if (li.querySelector('[data-testid="message-text"]').textContent === t) return li.getAttribute('data-seq');
    }
    return null;
  }, text, { timeout });
  return Number(await handle.jsonValue());
}

// Type into the composer, a key at a time as a person would, until `watcher` shows the typing
// indicator. (Clients send `typing` at most every 2 s and the server may drop some, so one
// burst of keys is not always enough.)
async function typeUntilIndicator(typist, watcher) {
  const composer = tid(typist.page, 'composer-input');
  await composer.click();
  const deadline = Date.now() + WAIT;
  for (;;) {
    await composer.press('x');
    const shown = await watcher.page.waitForFunction(
      (n) => document.querySelector('[data-testid="typing-indicator"]').textContent.includes(n + ' is typing'),
      typist.name, { timeout: 150 }).then(() => true, () => false);
    if (shown) return;
    if (Date.now() > deadline) throw new Error(`no typing indicator for ${typist.name} within ${WAIT} ms`);
  }
}

async function messageSeqs(page) {
  return page.$$eval('[data-testid="message"]', (els) => els.map((e) => Number(e.getAttribute('data-seq'))));
}

// A tiny protocol client inside a blank page (node 20 has no WebSocket): posts n messages, then
// the `extra` sends (objects merged into a `send`, e.g. {text, reply_to}), as `name` (a socket
// that never sends `read`).
async function seedMessages(room, n, extra = [], { name = 'seeder' } = {}) {
  const ctx = await browser.newContext();
  contexts.push(ctx);
  const page = await ctx.newPage();
  // From a page of the server's own origin: chatd refuses browser upgrades from other origins
  // (about:blank's is "null").
  await page.goto(baseUrl() + 'healthz', { timeout: WAIT });
  try {
    return await seedFromPage(page, room, n, extra, name);
  } finally {
    await ctx.close();  // also when a send was refused: its socket goes with the page
  }
}
async function seedFromPage(page, room, n, extra, name) {
  return page.evaluate(async ({ url, room, n, extra, name }) => {
    const deadline = Date.now() + 60000;
    const ws = new WebSocket(url);
    const waiting = new Map();
    let nextId = 1;
    ws.onmessage = (e) => {
      for (const line of String(e.data).split('\n')) {
        if (!line.trim()) continue;
        const m = JSON.parse(line);
        if (m.id != null && waiting.has(m.id)) { waiting.get(m.id)(m); waiting.delete(m.id); }
      }
    };
    await new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error('websocket error')); });
    const req = (o) => new Promise((res, rej) => {
      const id = nextId++;
      const t = setTimeout(() => rej(new Error('no reply to ' + o.type)), 10000);
      waiting.set(id, (m) => { clearTimeout(t); res(m); });
      ws.send(JSON.stringify({ ...o, id }));
    });
    const w = await req({ type: 'hello', name });
    if (w.type !== 'welcome') throw new Error('hello: ' + JSON.stringify(w));
    const j = await req({ type: 'join', room });
    if (j.type !== 'joined') throw new Error('join: ' + JSON.stringify(j));
    let rateLimited = 0;
    for (let i = 1; i <= n; i++) {
      const text = 'history ' + String(i).padStart(3, '0');
      for (;;) {
        if (Date.now() > deadline) throw new Error('seeding took too long');
        const a = await req({ type: 'send', room, text, idempotency_key: 'seed-' + i });
        if (a.type === 'ack') break;
        if (a.code !== 'rate_limited') throw new Error('send: ' + JSON.stringify(a));
        rateLimited++;
        await new Promise((r) => setTimeout(r, 100)); // back off, then retry with the same key
      }
    }
    const acks = [];
    for (const [i, e] of extra.entries()) {
      for (;;) {  // rate limited like the seeds above: back off, same key
        if (Date.now() > deadline) throw new Error('seeding took too long');
        const a = await req({ type: 'send', room, idempotency_key: 'seed-extra-' + i, ...e });
        if (a.type === 'ack') { acks.push(a); break; }
        if (a.code !== 'rate_limited') throw new Error('send: ' + JSON.stringify(a));
        rateLimited++;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    ws.close(1000);
    return { rateLimited, firstSeq: j.seq, acks };
  }, { url: wsUrl(), room, n, extra, name });
}

// ------------------------------------------------------------------ protocol v2 helpers
const msgEl = (page, seq) => page.locator(`[data-testid="message"][data-seq="${seq}"]`);

// The message actions show on hover (as for a person with a mouse): hover, then click.
async function messageAction(page, seq, testid, emoji) {
  const li = msgEl(page, seq);
  await li.hover();
  const sel = emoji ? `[data-testid="${testid}"][data-emoji="${emoji}"]` : `[data-testid="${testid}"]`;
  await li.locator(sel).click();
}

// Wait until the message `seq` shows this text (message-text) in the active room.
async function waitForText(page, seq, text) {
  await page.waitForFunction(({ seq, text }) => {
    const li = document.querySelector(`[data-testid="message"][data-seq="${seq}"]`);
    return !!li && li.querySelector('[data-testid="message-text"]').textContent === text;
  }, { seq, text }, { timeout: WAIT });
}
// Wait until the message `seq` shows the deleted placeholder (and no text) in the active room.
async function waitForDeleted(page, seq) {
  await page.waitForFunction((seq) => {
    const li = document.querySelector(`[data-testid="message"][data-seq="${seq}"]`);
    const ph = li && li.querySelector('[data-testid="message-deleted"]');
    return !!ph && li.getAttribute('data-deleted') === 'true' && ph.textContent === 'message deleted' &&
      li.querySelector('[data-testid="message-text"]').textContent === '' && !li.querySelector('[data-testid="reaction"]');
  }, seq, { timeout: WAIT });
}
const reactionCount = (page, seq, emoji) => page.evaluate(({ seq, emoji }) => {
  const b = document.querySelector(`[data-testid="message"][data-seq="${seq}"] [data-testid="reaction"][data-emoji="${emoji}"]`);
  return b ? Number(b.getAttribute('data-count')) : 0;
}, { seq, emoji });
async function waitForReactionCount(page, seq, emoji, n) {
  await page.waitForFunction(({ seq, emoji, n }) => {
    const b = document.querySelector(`[data-testid="message"][data-seq="${seq}"] [data-testid="reaction"][data-emoji="${emoji}"]`);
    return (b ? Number(b.getAttribute('data-count')) : 0) === n;
  }, { seq, emoji, n }, { timeout: WAIT }).catch(async (e) => {
    throw new Error(`message ${seq}: ${emoji} count is ${await reactionCount(page, seq, emoji)}, wanted ${n}`);
  });
}

// ------------------------------------------------------------------ fixtures
let alice, bob;

before(async () => {
  if (!server.port) await startServer(0);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // a page fulfilled by a route does not count as served from 127.0.0.1: let it open the socket
      ...(WEB_DIR ? ['--disable-features=LocalNetworkAccessChecks'] : [])],
    timeout: 60000,
  });
  if (WEB_DIR) console.log(`# the page's files come from ${WEB_DIR} (CHAT_WEB_DIR), not from chatd`);
  else {
    const served = await fetch(baseUrl() + 'app.js').then((r) => r.text()).catch(() => null);
    const disk = fs.readFileSync(path.join(ROOT, 'web', 'app.js'), 'utf8');
    if (served !== disk) console.log('# warning: chatd serves another app.js than web/app.js (built before the last change? rebuild, or set CHAT_WEB_DIR=web)');
  }
  alice = await signIn(await openClient('alice'), { name: 'alice' });
  bob = await signIn(await openClient('bob'), { name: 'bob' });
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  if (server.child && !process.env.CHAT_PORT) await stopServer();
  else if (server.child) server.child.unref(); // run.sh stops it through the pid file
});

// ------------------------------------------------------------------ tests
test('the page is served and signs in anonymously', async () => {
  assert.ok(alice.user, 'welcome gave alice a user id');
  assert.ok(bob.user && bob.user !== alice.user, 'bob is another user');
  assert.equal((await tid(alice.page, 'conn-state').textContent()).trim(), 'online');
});

test('two users chat both ways in a room', async () => {
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
  const hello = 'hello bob 👋';
  await sendMessage(alice.page, hello);
  const s1 = await waitForMessage(bob.page, hello);
  await waitForMessage(alice.page, hello);
  const reply = 'hi alice: ünïcödé 漢字 עברית 🎉👩‍👩‍👧 e\u0301';
  await sendMessage(bob.page, reply);
  const s2 = await waitForMessage(alice.page, reply);
  await waitForMessage(bob.page, reply);
  assert.equal(s2, s1 + 1, 'seq rises by one per message');

  // sender display name and a time from ts
  const last = alice.page.locator('[data-testid="message"]').last();
  assert.equal((await last.locator('[data-testid="message-author"]').textContent()).trim(), bob.name);
  assert.match(await last.locator('[data-testid="message-time"]').textContent(), /\d{1,2}[:.]\d{2}/);
  const iso = await last.locator('[data-testid="message-time"]').getAttribute('datetime');
  assert.ok(Math.abs(Date.parse(iso) - Date.now()) < 5 * 60 * 1000, `time from ts is now-ish: ${iso}`);

  // each message once (dedupe by room+seq), in seq order
  for (const p of [alice.page, bob.page]) {
    const seqs = await messageSeqs(p);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    assert.equal(new Set(seqs).size, seqs.length);
  }
});

test('presence list shows both users and follows joins and leaves', async () => {
  for (const { page } of [alice, bob]) {
    for (const u of [alice.user, bob.user]) {
      await page.waitForSelector(`[data-testid="presence-item"][data-user="${u}"]`, { timeout: WAIT });
    }
  }
  await joinRoom(bob.page, 'side');
  await joinRoom(alice.page, 'side');
  await bob.page.waitForSelector(`[data-testid="presence-item"][data-user="${alice.user}"]`, { timeout: WAIT });
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${bob.user}"]`, { timeout: WAIT });
  await bob.page.locator('[data-testid="room-item"][data-room="side"] [data-testid="leave-button"]').click();
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${bob.user}"]`, { state: 'detached', timeout: WAIT });
  await roomItem(bob.page, 'side').waitFor({ state: 'detached', timeout: WAIT });
  await openRoom(alice.page, 'lobby');
  await openRoom(bob.page, 'lobby');
});

test('typing indicator shows on the other side and fades', async () => {
  const composer = tid(bob.page, 'composer-input');
  await typeUntilIndicator(bob, alice);
  assert.match(await tid(alice.page, 'typing-indicator').textContent(), /is typing…/);
  assert.equal((await tid(bob.page, 'typing-indicator').textContent()).trim(), '', 'no indicator for oneself');
  await alice.page.waitForFunction(() => document.querySelector('[data-testid="typing-indicator"]').textContent === '',
    null, { timeout: 10000 });
  await composer.fill('');
});

test('HTML in a message shows as text and never runs', async () => {
  const evil = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">';
  await sendMessage(alice.page, evil);
  await waitForMessage(bob.page, evil);
  await waitForMessage(alice.page, evil);
  for (const { page } of [alice, bob]) {
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    assert.equal(await page.locator('[data-testid="message-list"] img, [data-testid="message-list"] script').count(), 0);
  }
  assert.deepEqual(dialogs, []);
});

test('history loads older pages when scrolling up', async () => {
  const seeded = await seedMessages('history', 120);
  if (seeded.rateLimited) console.log(`# seeding was rate limited ${seeded.rateLimited} times (retried)`);
  await joinRoom(bob.page, 'history');
  await waitForMessage(bob.page, 'history 120');
  const first = await messageSeqs(bob.page);
  assert.ok(first.length >= 1 && first.length < 120, `a first page only, got ${first.length}`);
  assert.equal(first[first.length - 1], 120);
  // scroll to the top until everything is there (each scroll may load one more page)
  await bob.page.waitForFunction(() => {
    const list = document.querySelector('[data-testid="message-list"]');
    list.scrollTop = 0;
    return list.querySelectorAll('[data-testid="message"]').length >= 120;
  }, null, { timeout: 30000, polling: 250 });
  const seqs = await messageSeqs(bob.page);
  assert.deepEqual(seqs, Array.from({ length: 120 }, (_, i) => i + 1));
  const texts = await bob.page.$$eval('[data-testid="message-text"]', (els) => els.map((e) => e.textContent));
  assert.equal(texts[0], 'history 001');
  assert.equal(texts[119], 'history 120');
  await bob.page.waitForSelector('[data-testid="history-marker"][data-state="start"]', { timeout: WAIT });
  await openRoom(bob.page, 'lobby');
});

test('unread counts per room', async () => {
  await joinRoom(bob.page, 'news');
  await openRoom(bob.page, 'lobby');
  await joinRoom(alice.page, 'news');
  await sendMessage(alice.page, 'news one');
  await sendMessage(alice.page, 'news two');
  await waitForMessage(alice.page, 'news two');
  const badge = roomItem(bob.page, 'news').locator('[data-testid="unread-badge"]');
  await bob.page.waitForFunction(() => {
    const b = document.querySelector('[data-testid="room-item"][data-room="news"] [data-testid="unread-badge"]');
    return b && !b.hidden && b.textContent === '2';
  }, null, { timeout: WAIT });
  await openRoom(bob.page, 'news');
  await waitForMessage(bob.page, 'news two');
  await badge.waitFor({ state: 'hidden', timeout: WAIT });
  await openRoom(bob.page, 'lobby');
  await openRoom(alice.page, 'lobby');
});

test('direct messages work between the two', async () => {
  await alice.page.locator(`[data-testid="presence-item"][data-user="${bob.user}"] [data-testid="dm-button"]`).click();
  const dmRoom = await alice.page.waitForFunction(() => {
    const a = document.querySelector('[data-testid="room-item"].active');
    return a && a.getAttribute('data-room').startsWith('dm:') ? a.getAttribute('data-room') : null;
  }, null, { timeout: WAIT }).then((h) => h.jsonValue());
  assert.equal(dmRoom, 'dm:' + [alice.user, bob.user].sort().join(':'));
  await sendMessage(alice.page, 'psst bob, a secret 🤫');
  await waitForMessage(alice.page, 'psst bob, a secret 🤫');
  // bob gets the room in his list, with an unread badge, without joining anything
  await bob.page.waitForFunction((r) => {
    const b = document.querySelector(`[data-testid="room-item"][data-room="${r}"] [data-testid="unread-badge"]`);
    return b && !b.hidden && b.textContent === '1';
  }, dmRoom, { timeout: WAIT });
  await openRoom(bob.page, dmRoom);
  await waitForMessage(bob.page, 'psst bob, a secret 🤫');
  await sendMessage(bob.page, 'got it 👍');
  await waitForMessage(alice.page, 'got it 👍');
  await waitForMessage(bob.page, 'got it 👍');
  await openRoom(alice.page, 'lobby');
  await openRoom(bob.page, 'lobby');
});

// ------------------------------------------------------------------ protocol v2: edit, delete, react, reply, mention
test('v2: the server speaks protocol 2', async () => {
  for (const { page } of [alice, bob]) {
    assert.equal(await page.locator('#app').getAttribute('data-protocol'), '2', 'welcome says "protocol":2');
  }
  await joinRoom(alice.page, 'v2');
  await joinRoom(bob.page, 'v2');
  await bob.page.waitForSelector(`[data-testid="presence-item"][data-user="${alice.user}"]`, { timeout: WAIT });
});

test('v2: an edit shows on the other page, marked (edited)', async () => {
  await sendMessage(alice.page, 'edit me, typo: teh');
  const seq = await waitForMessage(bob.page, 'edit me, typo: teh');
  await waitForMessage(alice.page, 'edit me, typo: teh');
  // only the author gets edit and delete
  await msgEl(bob.page, seq).hover();
  assert.equal(await msgEl(bob.page, seq).locator('[data-testid="edit-button"], [data-testid="delete-button"]').count(), 0);
  assert.equal(await msgEl(bob.page, seq).locator('[data-testid="reply-button"]').count(), 1);

  await messageAction(alice.page, seq, 'edit-button');
  const input = msgEl(alice.page, seq).locator('[data-testid="edit-input"]');
  assert.equal(await input.inputValue(), 'edit me, typo: teh');
  // Escape cancels without a request
  await input.press('Escape');
  await msgEl(alice.page, seq).locator('[data-testid="edit-input"]').waitFor({ state: 'detached', timeout: WAIT });
  assert.equal(await msgEl(alice.page, seq).locator('[data-testid="message-edited"]').count(), 0);

  await messageAction(alice.page, seq, 'edit-button');
  await msgEl(alice.page, seq).locator('[data-testid="edit-input"]').fill('edited: the ✨ <b>text</b>');
  await msgEl(alice.page, seq).locator('[data-testid="edit-save"]').click();
  for (const { page } of [alice, bob]) {
    await waitForText(page, seq, 'edited: the ✨ <b>text</b>');
    await msgEl(page, seq).locator('[data-testid="message-edited"]').waitFor({ timeout: WAIT });
    assert.equal((await msgEl(page, seq).locator('[data-testid="message-edited"]').textContent()).trim(), '(edited)');
    assert.equal(await msgEl(page, seq).locator('[data-testid="message-text"] b').count(), 0, 'HTML stays text');
  }
  await msgEl(alice.page, seq).locator('[data-testid="edit-input"]').waitFor({ state: 'detached', timeout: WAIT });

  // Enter saves a second edit too
  await messageAction(alice.page, seq, 'edit-button');
  await msgEl(alice.page, seq).locator('[data-testid="edit-input"]').fill('edited twice');
  await msgEl(alice.page, seq).locator('[data-testid="edit-input"]').press('Enter');
  await waitForText(bob.page, seq, 'edited twice');
  await waitForText(alice.page, seq, 'edited twice');
  // the edit events took seqs of their own: no message element for them, each message once
  for (const { page } of [alice, bob]) {
    const seqs = await messageSeqs(page);
    assert.equal(new Set(seqs).size, seqs.length);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  }
});

test('v2: a deleted message shows a placeholder on both pages and after a reload', async () => {
  await sendMessage(alice.page, 'delete me 🗑');
  const seq = await waitForMessage(bob.page, 'delete me 🗑');
  await waitForMessage(alice.page, 'delete me 🗑');
  await sendMessage(bob.page, 'the next one stays');
  const next = await waitForMessage(alice.page, 'the next one stays');

  await messageAction(alice.page, seq, 'delete-button');
  // a confirmation in place (no dialog); Cancel keeps the message
  await msgEl(alice.page, seq).locator('[data-testid="delete-cancel"]').click();
  await msgEl(alice.page, seq).locator('[data-testid="delete-confirm"]').waitFor({ state: 'detached', timeout: WAIT });
  assert.equal(await msgEl(bob.page, seq).getAttribute('data-deleted'), null);

  await messageAction(alice.page, seq, 'delete-button');
  await msgEl(alice.page, seq).locator('[data-testid="delete-confirm"]').click();
  for (const { page } of [alice, bob]) {
    await waitForDeleted(page, seq);
    await msgEl(page, seq).hover();
    assert.equal(await msgEl(page, seq).locator('[data-testid="message-actions"]').count(), 0, 'no actions on a deleted message');
    await waitForText(page, next, 'the next one stays');
  }

  // after a reload bob's page gets the message's current state from history
  await bob.page.reload({ timeout: WAIT });
  bob = await signIn(bob.page, { name: 'bob' });
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="v2"][data-joined="true"].active', { state: 'attached', timeout: WAIT });
  await waitForMessage(bob.page, 'the next one stays');
  await waitForDeleted(bob.page, seq);
  // the edited message of the previous test is still edited
  const edited = await bob.page.locator('[data-testid="message"][data-edited="true"] [data-testid="message-text"]').allTextContents();
  assert.ok(edited.includes('edited twice'), `edited message after reload: ${JSON.stringify(edited)}`);
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${bob.user}"]`, { timeout: WAIT });
});

test('v2: reaction counts update on both pages; clicking one\'s own reaction removes it', async () => {
  await sendMessage(alice.page, 'react to this');
  const seq = await waitForMessage(bob.page, 'react to this');
  await waitForMessage(alice.page, 'react to this');

  await messageAction(bob.page, seq, 'react-button', '👍');
  for (const { page } of [alice, bob]) await waitForReactionCount(page, seq, '👍', 1);
  await messageAction(alice.page, seq, 'react-button', '👍');
  await messageAction(alice.page, seq, 'react-button', '🎉');
  for (const { page } of [alice, bob]) {
    await waitForReactionCount(page, seq, '👍', 2);
    await waitForReactionCount(page, seq, '🎉', 1);
  }
  // who reacted: in the tooltip
  const title = await msgEl(alice.page, seq).locator('[data-testid="reaction"][data-emoji="👍"]').getAttribute('title');
  assert.match(title, /you/);
  assert.match(title, /bob/);
  const bobTitle = await msgEl(bob.page, seq).locator('[data-testid="reaction"][data-emoji="👍"]').getAttribute('title');
  assert.match(bobTitle, /alice/);
  assert.equal(await msgEl(bob.page, seq).locator('[data-testid="reaction"][data-emoji="👍"]').getAttribute('data-mine'), 'true');
  assert.equal(await msgEl(bob.page, seq).locator('[data-testid="reaction"][data-emoji="🎉"]').getAttribute('data-mine'), 'false');

  // bob clicks his own 👍: removed, alice's stays
  await msgEl(bob.page, seq).locator('[data-testid="reaction"][data-emoji="👍"]').click();
  for (const { page } of [alice, bob]) await waitForReactionCount(page, seq, '👍', 1);
  assert.equal(await msgEl(bob.page, seq).locator('[data-testid="reaction"][data-emoji="👍"]').getAttribute('data-mine'), 'false');
  // bob's click on alice's 🎉 chip adds his; alice's click on her own 👍 removes the last one
  await msgEl(bob.page, seq).locator('[data-testid="reaction"][data-emoji="🎉"]').click();
  await msgEl(alice.page, seq).locator('[data-testid="reaction"][data-emoji="👍"]').click();
  for (const { page } of [alice, bob]) {
    await waitForReactionCount(page, seq, '🎉', 2);
    await waitForReactionCount(page, seq, '👍', 0);
  }
  assert.equal(await msgEl(alice.page, seq).locator('[data-testid="reaction"][data-emoji="👍"]').count(), 0, 'an empty reaction disappears');
});

test('v2: a reply shows the quoted first line above the composer and above the sent message', async () => {
  await sendMessage(alice.page, 'a question?\nwith a second line');
  const q = await waitForMessage(bob.page, 'a question?\nwith a second line');
  await waitForMessage(alice.page, 'a question?\nwith a second line');

  await messageAction(bob.page, q, 'reply-button');
  await tid(bob.page, 'reply-preview').waitFor({ timeout: WAIT });
  assert.equal(await tid(bob.page, 'reply-preview-text').textContent(), 'a question?');
  assert.match(await tid(bob.page, 'reply-preview').textContent(), new RegExp('Replying to ' + alice.name));
  await sendMessage(bob.page, 'an answer');
  await tid(bob.page, 'reply-preview').waitFor({ state: 'hidden', timeout: WAIT });
  for (const { page } of [alice, bob]) {
    const seq = await waitForMessage(page, 'an answer');
    const quote = msgEl(page, seq).locator('[data-testid="reply-quote"]');
    assert.equal(await quote.getAttribute('data-reply-to'), String(q));
    assert.equal(await quote.locator('[data-testid="reply-quote-text"]').textContent(), 'a question?');
    assert.equal(await quote.locator('[data-testid="reply-quote-author"]').textContent(), alice.name);
  }
  // Escape cancels a reply
  await messageAction(alice.page, q, 'reply-button');
  await tid(alice.page, 'reply-preview').waitFor({ timeout: WAIT });
  await tid(alice.page, 'composer-input').press('Escape');
  await tid(alice.page, 'reply-preview').waitFor({ state: 'hidden', timeout: WAIT });
});

test('v2: a reply to a message that is not loaded says "reply to #seq" until it is', async () => {
  // 61 messages, then a reply to the first: the first page (50) does not hold seq 1
  const seeded = await seedMessages('v2-old', 61, [{ text: 'a late reply', reply_to: 1 }]);
  assert.equal(seeded.firstSeq, 0, 'a new room');
  await joinRoom(alice.page, 'v2-old');
  const seq = await waitForMessage(alice.page, 'a late reply');
  assert.equal(seq, seeded.acks[0].seq);
  const quote = msgEl(alice.page, seq).locator('[data-testid="reply-quote"]');
  assert.equal(await quote.getAttribute('data-reply-to'), '1');
  assert.equal(await msgEl(alice.page, 1).count(), 0, 'seq 1 is not loaded yet');
  assert.equal((await quote.textContent()).trim(), 'reply to #1');
  // clicking... scrolling up loads it, and the quote fills in
  await alice.page.waitForFunction(() => {
    const list = document.querySelector('[data-testid="message-list"]');
    list.scrollTop = 0;
    return !!document.querySelector('[data-testid="message"][data-seq="1"]');
  }, null, { timeout: 30000, polling: 250 });
  await alice.page.waitForFunction((seq) => {
    const t = document.querySelector(`[data-testid="message"][data-seq="${seq}"] [data-testid="reply-quote-text"]`);
    return t && t.textContent === 'history 001';
  }, seq, { timeout: WAIT });
  await openRoom(alice.page, 'v2');
});

test('v2: @-completion sends mentions; the mentioned user sees a highlight and a notification', async () => {
  await openRoom(bob.page, 'lobby');  // bob looks elsewhere when he is mentioned
  const composer = tid(alice.page, 'composer-input');
  await composer.click();
  await composer.pressSequentially('hey @' + bob.name.slice(0, 2));
  const option = alice.page.locator(`[data-testid="mention-suggestions"] [data-testid="mention-option"][data-user="${bob.user}"]`);
  await option.waitFor({ timeout: WAIT });
  assert.equal(await alice.page.locator(`[data-testid="mention-option"][data-user="${alice.user}"]`).count(), 0, 'not oneself');
  // Enter picks the (first, highlighted) suggestion instead of sending
  await alice.page.keyboard.press('ArrowDown');
  await alice.page.keyboard.press('ArrowUp');
  assert.equal(await alice.page.locator('[data-testid="mention-option"].active').getAttribute('data-user'), bob.user);
  await composer.press('Enter');
  await tid(alice.page, 'mention-suggestions').waitFor({ state: 'hidden', timeout: WAIT });
  assert.equal(await composer.inputValue(), `hey @${bob.user} `);
  await composer.pressSequentially('look at this');
  await composer.press('Enter');
  const text = `hey @${bob.user} look at this`;
  const seq = await waitForMessage(alice.page, text);
  // the mention is highlighted in the text (from the stored message's `mentions`)
  await msgEl(alice.page, seq).locator(`[data-testid="mention"][data-user="${bob.user}"]`).waitFor({ timeout: WAIT });
  assert.equal(await msgEl(alice.page, seq).getAttribute('data-mentions-me'), null, 'alice is not mentioned');

  // bob: a highlighted notification, and a mark on the room
  const note = bob.page.locator(`[data-testid="mention-notification"][data-room="v2"][data-seq="${seq}"]`);
  await note.waitFor({ timeout: WAIT });
  assert.match(await note.textContent(), new RegExp(alice.name + ' mentioned you in #v2'));
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="v2"][data-mentioned="true"]', { timeout: WAIT });
  await note.locator('[data-testid="mention-open"]').click();
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="v2"].active', { state: 'attached', timeout: WAIT });
  await note.waitFor({ state: 'detached', timeout: WAIT });
  await waitForMessage(bob.page, text);
  assert.equal(await msgEl(bob.page, seq).getAttribute('data-mentions-me'), 'true');
  assert.ok(await msgEl(bob.page, seq).evaluate((e) => e.classList.contains('mentions-me')));
  assert.equal(await bob.page.locator('[data-testid="room-item"][data-room="v2"][data-mentioned="true"]').count(), 0);
  // an @word that is nobody is no mention
  await sendMessage(alice.page, 'mail me at a@b.example or ping @nobody-here');
  const s2 = await waitForMessage(bob.page, 'mail me at a@b.example or ping @nobody-here');
  assert.equal(await msgEl(bob.page, s2).locator('[data-testid="mention"]').count(), 0);
  assert.equal(await msgEl(bob.page, s2).getAttribute('data-mentions-me'), null);
  // a look at it all: edited, deleted, reactions, a reply, a mention, the actions on hover
  await msgEl(bob.page, seq).hover();
  await bob.page.screenshot({ path: path.join(ARTIFACTS, 'chat-v2.png') });
});

test('v2: a refused edit or delete shows the server\'s error', async () => {
  // hank's page is told (by rewriting what the server sends it) that alice's message is his, and
  // gets a message that does not exist: the server refuses the changes and the page says why
  await joinRoom(alice.page, 'v2-err');
  await sendMessage(alice.page, 'alice owns this');
  const owned = await waitForMessage(alice.page, 'alice owns this');
  const ctx = await newContext({ viewport: { width: 1100, height: 720 } });
  const routes = [];
  let me = null;
  await ctx.routeWebSocket(/\/ws$/, (page) => {
    const srv = page.connectToServer();
    page.onMessage((m) => srv.send(m));
    srv.onMessage((m) => {
      const out = String(m).split('\n').map((line) => {
        if (!line.trim() || !me) return line;
        const o = JSON.parse(line);
        const fix = (x) => { if (x && x.room === 'v2-err' && x.from === alice.user) x.from = me; };
        fix(o);
        if (Array.isArray(o.messages)) o.messages.forEach(fix);
        return JSON.stringify(o);
      });
      page.send(out.join('\n'));
    });
    page.onClose((code, reason) => srv.close({ code, reason }));
    srv.onClose((code, reason) => page.close({ code, reason }));
    routes.push(page);
  });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`hank: ${e.message}`));
  await page.goto(baseUrl(), { timeout: WAIT });
  const hank = await signIn(page, { name: 'hank' });
  me = hank.user;
  await joinRoom(hank.page, 'v2-err');
  await waitForMessage(hank.page, 'alice owns this');
  assert.equal(await msgEl(hank.page, owned).getAttribute('data-from'), hank.user);

  await messageAction(hank.page, owned, 'edit-button');
  await msgEl(hank.page, owned).locator('[data-testid="edit-input"]').fill('not yours');
  await msgEl(hank.page, owned).locator('[data-testid="edit-save"]').click();
  await hank.page.waitForFunction(() => /Could not edit the message: forbidden/.test(document.querySelector('[data-testid="toast"]').textContent),
    null, { timeout: WAIT });
  // the editor stays, with the draft, for another try or Cancel
  assert.equal(await msgEl(hank.page, owned).locator('[data-testid="edit-input"]').inputValue(), 'not yours');
  await msgEl(hank.page, owned).locator('[data-testid="edit-cancel"]').click();
  await waitForText(hank.page, owned, 'alice owns this');
  await waitForText(alice.page, owned, 'alice owns this');
  assert.equal(await msgEl(alice.page, owned).getAttribute('data-edited'), null);

  const ghost = 100000;
  routes.at(-1).send(JSON.stringify({ type: 'message', room: 'v2-err', seq: ghost, ts: Date.now(), from: hank.user,
    name: hank.name, text: 'a message the server never stored' }));
  await waitForMessage(hank.page, 'a message the server never stored');
  await messageAction(hank.page, ghost, 'delete-button');
  await msgEl(hank.page, ghost).locator('[data-testid="delete-confirm"]').click();
  await hank.page.waitForFunction(() => /Could not delete the message: not_found/.test(document.querySelector('[data-testid="toast"]').textContent),
    null, { timeout: WAIT });
  assert.equal(await msgEl(hank.page, ghost).getAttribute('data-deleted'), null);
  await openRoom(alice.page, 'v2');
  await ctx.close();
});

test('v2: edits, reactions and deletes made while disconnected arrive with recovery', async () => {
  const ctx = await newContext({ viewport: { width: 1100, height: 720 } });
  const routes = [];
  const toServer = [];
  const fromServer = [];
  await ctx.routeWebSocket(/\/ws$/, (page) => {
    const srv = page.connectToServer();
    const route = { page, srv, cut: false };
    page.onMessage((m) => { toServer.push(String(m)); srv.send(m); });
    srv.onMessage((m) => { fromServer.push(String(m)); if (!route.cut) page.send(m); });
    page.onClose((code, reason) => { if (!route.cut) srv.close({ code, reason }); });
    srv.onClose((code, reason) => { if (!route.cut) page.close({ code, reason }); });
    routes.push(route);
  });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`gina: ${e.message}`));
  await page.goto(baseUrl(), { timeout: WAIT });
  const gina = await signIn(page, { name: 'gina' });
  await joinRoom(gina.page, 'v2-recover');
  await joinRoom(alice.page, 'v2-recover');
  await sendMessage(alice.page, 'keep me');
  await sendMessage(alice.page, 'drop me');
  await sendMessage(alice.page, 'react to me');
  const keep = await waitForMessage(gina.page, 'keep me');
  const drop = await waitForMessage(gina.page, 'drop me');
  const react = await waitForMessage(gina.page, 'react to me');
  await messageAction(alice.page, react, 'react-button', '😂');
  await waitForReactionCount(gina.page, react, '😂', 1);

  const first = routes.at(-1);
  first.cut = true;
  await first.page.close({ code: 1001, reason: 'retry_ms=1500' });
  await first.srv.close({ code: 1000, reason: 'test cut' });
  await gina.page.waitForSelector('[data-testid="conn-state"][data-state="reconnecting"]', { timeout: WAIT });
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${gina.user}"]`, { state: 'detached', timeout: WAIT });

  await messageAction(alice.page, keep, 'edit-button');
  await msgEl(alice.page, keep).locator('[data-testid="edit-input"]').fill('kept, edited');
  await msgEl(alice.page, keep).locator('[data-testid="edit-save"]').click();
  await waitForText(alice.page, keep, 'kept, edited');
  await messageAction(alice.page, keep, 'react-button', '🎉');
  await waitForReactionCount(alice.page, keep, '🎉', 1);
  await msgEl(alice.page, react).locator('[data-testid="reaction"][data-emoji="😂"]').click();
  await waitForReactionCount(alice.page, react, '😂', 0);
  await messageAction(alice.page, drop, 'delete-button');
  await msgEl(alice.page, drop).locator('[data-testid="delete-confirm"]').click();
  await waitForDeleted(alice.page, drop);
  await sendMessage(alice.page, 'after the drop');
  await waitForMessage(alice.page, 'after the drop');

  await gina.page.waitForSelector('[data-testid="conn-state"][data-state="online"]', { timeout: LONG_WAIT });
  await waitForMessage(gina.page, 'after the drop');
  await waitForText(gina.page, keep, 'kept, edited');
  await msgEl(gina.page, keep).locator('[data-testid="message-edited"]').waitFor({ timeout: WAIT });
  await waitForReactionCount(gina.page, keep, '🎉', 1);
  await waitForReactionCount(gina.page, react, '😂', 0);
  await waitForDeleted(gina.page, drop);
  const seqs = await messageSeqs(gina.page);
  assert.deepEqual(seqs, [keep, drop, react, seqs.at(-1)], 'the messages once each, no element for events');

  const objects = (frames) => frames.flatMap((f) => f.split('\n')).filter(Boolean).map((l) => JSON.parse(l));
  const joins = objects(toServer).filter((o) => o.type === 'join' && o.room === 'v2-recover');
  assert.equal(joins.length, 2);
  // since counts the reaction event seen before the cut, not only messages
  assert.equal(joins[1].since, react + 1);
  const rejoined = objects(fromServer).find((o) => o.type === 'joined' && o.id === joins[1].id);
  assert.equal(rejoined.recovered, true);
  const histories = objects(toServer).filter((o) => o.type === 'history' && o.room === 'v2-recover');
  assert.equal(histories.length, 1, 'recovery, not history, delivered the changes');
  await openRoom(alice.page, 'lobby');
  await openRoom(bob.page, 'lobby');
  await ctx.close();
});

// ------------------------------------------------------------------ protocol v2: memberships, read positions, unread, part
// ivy has two pages (two browser contexts, as two devices): ivyA and ivyB, the same user.
let ivyA, ivyB;

const unreadOf = (page, room) => page.evaluate((room) => {
  const li = document.querySelector(`[data-testid="room-item"][data-room="${room}"]`);
  if (!li) return 'no room item';
  const b = li.querySelector('[data-testid="unread-badge"]');
  return { unread: Number(li.getAttribute('data-unread')), badge: b.hidden ? '' : b.textContent };
}, room);
// Wait until the room's item says n unread (the badge shows n, or is hidden for 0).
async function waitForUnread(page, room, n) {
  await page.waitForFunction(({ room, n }) => {
    const li = document.querySelector(`[data-testid="room-item"][data-room="${room}"]`);
    const b = li && li.querySelector('[data-testid="unread-badge"]');
    return !!b && Number(li.getAttribute('data-unread')) === n && b.hidden === (n === 0) && (n === 0 || b.textContent === String(n));
  }, { room, n }, { timeout: WAIT }).catch(async () => {
    throw new Error(`${room}: unread is ${JSON.stringify(await unreadOf(page, room))}, wanted ${n}`);
  });
}
// Wait until the server stored the user's read position in the room at least at seq (the page
// shows the position it was told: the reply to its `read`, a `read` from elsewhere, joined, my_rooms).
async function waitForReadSeq(page, room, seq) {
  await page.waitForFunction(({ room, seq }) => {
    const li = document.querySelector(`[data-testid="room-item"][data-room="${room}"]`);
    return !!li && Number(li.getAttribute('data-read-seq')) >= seq;
  }, { room, seq }, { timeout: WAIT }).catch(async () => {
    const got = await page.locator(`[data-testid="room-item"][data-room="${room}"]`).getAttribute('data-read-seq').catch(() => null);
    throw new Error(`${room}: read position ${got}, wanted at least ${seq}`);
  });
}
async function reloadAs(who, name) {
  await who.page.reload({ timeout: WAIT });
  return signIn(who.page, { name });
}
// The "new messages" line(s) of the active room, with the seqs of the messages around each.
const newLines = (page) => page.$$eval('[data-testid="new-messages-line"]', (els) => els.map((e) => ({
  after: Number(e.getAttribute('data-after-seq')),
  prev: e.previousElementSibling ? Number(e.previousElementSibling.getAttribute('data-seq')) : null,
  next: e.nextElementSibling ? Number(e.nextElementSibling.getAttribute('data-seq')) : null,
  text: e.textContent,
})));

test('v2: my_rooms brings the user\'s rooms (and roles) to a fresh browser profile', async () => {
  ivyA = await signIn(await openClient('ivyA'), { name: 'ivy' });
  // a first page starts in #general; the × in the list parts it (ivy is no member any more)
  await ivyA.page.waitForSelector('[data-testid="room-item"][data-room="general"][data-joined="true"]', { timeout: WAIT });
  await roomItem(ivyA.page, 'general').locator('[data-testid="leave-button"]').click();
  await roomItem(ivyA.page, 'general').waitFor({ state: 'detached', timeout: WAIT });
  await joinRoom(ivyA.page, 'mr-one');            // a new room: ivy owns it
  await joinRoom(alice.page, 'mr-two');           // alice's room: ivy is a member
  await joinRoom(ivyA.page, 'mr-two');
  assert.equal(await tid(ivyA.page, 'room-role').textContent(), 'member');
  await openRoom(ivyA.page, 'mr-one');
  assert.equal(await tid(ivyA.page, 'room-role').textContent(), 'owner');

  // another browser context: nothing saved locally, the same user
  ivyB = await signIn(await openClient('ivyB'), { name: 'ivy' });
  assert.equal(ivyB.user, ivyA.user, 'the same user on both pages');
  for (const room of ['mr-one', 'mr-two']) {
    await ivyB.page.waitForSelector(`[data-testid="room-item"][data-room="${room}"][data-joined="true"]`, { timeout: WAIT });
  }
  assert.deepEqual(await ivyB.page.$$eval('[data-testid="room-item"]', (els) => els.map((e) => e.getAttribute('data-room'))),
    ['mr-one', 'mr-two'], 'the rooms from my_rooms; no default room, not the parted one');
  assert.equal(await roomItem(ivyB.page, 'mr-one').getAttribute('data-role'), 'owner');
  assert.equal(await roomItem(ivyB.page, 'mr-two').getAttribute('data-role'), 'member');
  await openRoom(ivyB.page, 'mr-two');
  assert.equal(await tid(ivyB.page, 'room-role').textContent(), 'member');
  assert.equal(await tid(ivyB.page, 'room-title').textContent(), '#mr-two');
  await openRoom(ivyB.page, 'mr-one');
  assert.equal(await tid(ivyB.page, 'room-role').textContent(), 'owner');
  await openRoom(alice.page, 'lobby');
});

test('v2: unread badges count the messages of others (not own, not deleted) and clear when viewed', async () => {
  await joinRoom(ivyA.page, 'ur');
  await joinRoom(alice.page, 'ur');
  await openRoom(ivyA.page, 'mr-one');             // ivy looks elsewhere
  for (const t of ['u1', 'u2', 'u3']) await sendMessage(alice.page, t);
  await waitForUnread(ivyA.page, 'ur', 3);
  // ivy's own message from another connection (one that never reads) does not count
  await seedMessages('ur', 0, [{ text: 'ivy writes elsewhere' }], { name: 'ivy' });
  await sendMessage(alice.page, 'u4');
  const u2 = await waitForMessage(alice.page, 'u2');
  const u4 = await waitForMessage(alice.page, 'u4');
  await waitForUnread(ivyA.page, 'ur', 4);
  assert.equal(await ivyA.page.title(), '(4) Chat');
  // a deleted message no longer counts
  await messageAction(alice.page, u2, 'delete-button');
  await msgEl(alice.page, u2).locator('[data-testid="delete-confirm"]').click();
  await waitForDeleted(alice.page, u2);
  await waitForUnread(ivyA.page, 'ur', 3);

  // the server counts the same after a reload (from my_rooms and joined)
  ivyA = await reloadAs(ivyA, 'ivy');
  await ivyA.page.waitForSelector('[data-testid="room-item"][data-room="ur"][data-joined="true"]', { timeout: WAIT });
  await waitForUnread(ivyA.page, 'ur', 3);
  assert.equal(await roomItem(ivyA.page, 'mr-one').getAttribute('class').then((c) => c.includes('active')), true);

  // viewing the room clears the badge and stores the read position (the delete's seq is the newest)
  await openRoom(ivyA.page, 'ur');
  await waitForMessage(ivyA.page, 'u4');
  await waitForUnread(ivyA.page, 'ur', 0);
  await waitForReadSeq(ivyA.page, 'ur', u4 + 1);
  assert.equal(await ivyA.page.title(), 'Chat');
  // a message arriving while the room is viewed is read at once
  await sendMessage(alice.page, 'u5 while ivy looks');
  const u5 = await waitForMessage(ivyA.page, 'u5 while ivy looks');
  await waitForReadSeq(ivyA.page, 'ur', u5);
  assert.deepEqual(await unreadOf(ivyA.page, 'ur'), { unread: 0, badge: '' });
  // and stays read after a reload
  await openRoom(ivyA.page, 'mr-one');
  ivyA = await reloadAs(ivyA, 'ivy');
  await ivyA.page.waitForSelector('[data-testid="room-item"][data-room="ur"][data-joined="true"]', { timeout: WAIT });
  assert.equal(Number(await roomItem(ivyA.page, 'ur').getAttribute('data-read-seq')), u5);
  await waitForUnread(ivyA.page, 'ur', 0);
  await openRoom(alice.page, 'lobby');
});

test('v2: a read on one page clears the badge on the other page of the same user', async () => {
  await joinRoom(ivyA.page, 'rc');
  await joinRoom(ivyB.page, 'rc');
  await openRoom(ivyA.page, 'mr-one');
  await openRoom(ivyB.page, 'mr-one');
  await joinRoom(alice.page, 'rc');
  await sendMessage(alice.page, 'rc one');
  await sendMessage(alice.page, 'rc two');
  const two = await waitForMessage(alice.page, 'rc two');
  for (const p of [ivyA.page, ivyB.page]) await waitForUnread(p, 'rc', 2);

  await openRoom(ivyA.page, 'rc');                 // ivy reads on page A...
  await waitForMessage(ivyA.page, 'rc two');
  await waitForUnread(ivyA.page, 'rc', 0);
  await waitForUnread(ivyB.page, 'rc', 0);          // ...and page B follows
  await waitForReadSeq(ivyB.page, 'rc', two);
  assert.equal(await ivyB.page.title(), 'Chat');
  // what A reads while B looks elsewhere does not stay unread on B
  await sendMessage(alice.page, 'rc three');
  const three = await waitForMessage(ivyA.page, 'rc three');
  await waitForReadSeq(ivyB.page, 'rc', three);
  await waitForUnread(ivyB.page, 'rc', 0);
  // B opens the room: nothing new there, so no "new messages" line
  await openRoom(ivyB.page, 'rc');
  await waitForMessage(ivyB.page, 'rc three');
  assert.deepEqual(await newLines(ivyB.page), []);
  await openRoom(ivyA.page, 'mr-one');
  await openRoom(ivyB.page, 'mr-one');
  await openRoom(alice.page, 'lobby');
});

test('v2: the "new messages" line sits above the first unread message after a reload', async () => {
  await joinRoom(ivyA.page, 'nl');
  await joinRoom(alice.page, 'nl');
  await sendMessage(alice.page, 'seen 1');
  await sendMessage(alice.page, 'seen 2');
  const seen2 = await waitForMessage(ivyA.page, 'seen 2');
  await waitForReadSeq(ivyA.page, 'nl', seen2);    // ivy looked at them
  assert.deepEqual(await newLines(ivyA.page), [], 'no line while everything is read');
  await openRoom(ivyA.page, 'mr-one');
  for (const t of ['fresh 1', 'fresh 2', 'fresh 3']) await sendMessage(alice.page, t);
  const fresh1 = await waitForMessage(alice.page, 'fresh 1');
  await waitForMessage(alice.page, 'fresh 3');
  await waitForUnread(ivyA.page, 'nl', 3);

  ivyA = await reloadAs(ivyA, 'ivy');
  await ivyA.page.waitForSelector('[data-testid="room-item"][data-room="nl"][data-joined="true"]', { timeout: WAIT });
  await waitForUnread(ivyA.page, 'nl', 3);
  await openRoom(ivyA.page, 'nl');
  await waitForMessage(ivyA.page, 'fresh 3');
  assert.deepEqual(await newLines(ivyA.page), [{ after: seen2, prev: seen2, next: fresh1, text: 'New messages' }]);
  await waitForUnread(ivyA.page, 'nl', 0);
  await waitForReadSeq(ivyA.page, 'nl', fresh1 + 2);
  // the line stays where it is while the room is open, as more arrives
  await sendMessage(alice.page, 'fresh 4');
  await waitForMessage(ivyA.page, 'fresh 4');
  assert.deepEqual(await newLines(ivyA.page), [{ after: seen2, prev: seen2, next: fresh1, text: 'New messages' }]);
  await ivyA.page.screenshot({ path: path.join(ARTIFACTS, 'chat-unread.png') });
  // opened again with everything read: no line
  await openRoom(ivyA.page, 'mr-one');
  await openRoom(ivyA.page, 'nl');
  await waitForMessage(ivyA.page, 'fresh 4');
  assert.deepEqual(await newLines(ivyA.page), []);
  await openRoom(ivyA.page, 'mr-one');
  await openRoom(alice.page, 'lobby');
});

test('v2: leaving a room (part) on one page removes it on the other page of the same user', async () => {
  await joinRoom(ivyA.page, 'pr');
  await joinRoom(ivyB.page, 'pr');
  await joinRoom(alice.page, 'pr');
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${ivyA.user}"]`, { timeout: WAIT });
  await openRoom(ivyA.page, 'pr');
  await tid(ivyA.page, 'part-button').click();
  await roomItem(ivyA.page, 'pr').waitFor({ state: 'detached', timeout: WAIT });
  await roomItem(ivyB.page, 'pr').waitFor({ state: 'detached', timeout: WAIT });    // told by the server
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${ivyA.user}"]`, { state: 'detached', timeout: WAIT });
  assert.notEqual(await tid(ivyA.page, 'room-title').textContent(), '#pr');
  assert.notEqual(await tid(ivyB.page, 'room-title').textContent(), '#pr');
  // the membership is gone: not back after a reload, nor on a fresh profile (my_rooms)
  ivyA = await reloadAs(ivyA, 'ivy');
  const ivyC = await signIn(await openClient('ivyC'), { name: 'ivy' });
  for (const p of [ivyA.page, ivyC.page]) {
    await p.waitForSelector('[data-testid="room-item"][data-room="nl"][data-joined="true"]', { timeout: WAIT });
    assert.equal(await roomItem(p, 'pr').count(), 0);
  }
  assert.equal(await roomItem(ivyB.page, 'pr').count(), 0);
  for (const p of [ivyA.page, ivyB.page, ivyC.page]) await p.context().close();
  await openRoom(alice.page, 'lobby');
});

// ------------------------------------------------------------------ protocol v2: search
// Search in the open room (the box in the top bar) and wait for its answer.
async function runSearch(page, query) {
  await tid(page, 'search-input').fill(query);
  await tid(page, 'search-input').press('Enter');
  await page.waitForFunction((q) => {
    const p = document.querySelector('[data-testid="search-panel"]');
    return !!p && !p.hidden && p.getAttribute('data-query') === q.trim() && p.getAttribute('data-state') !== 'loading';
  }, query, { timeout: WAIT });
}
const searchResults = (page) => page.$$eval('[data-testid="search-result"]', (els) => els.map((e) => ({
  seq: Number(e.getAttribute('data-seq')),
  author: e.querySelector('[data-testid="search-result-author"]').textContent,
  text: e.querySelector('[data-testid="search-result-text"]').textContent,
})));
const searchStatus = (page) => tid(page, 'search-status').evaluate((e) => ({ state: e.getAttribute('data-state'), text: e.textContent }));
// Click "Older results" and wait until n results are shown.
async function searchMore(page, n) {
  await tid(page, 'search-more').click();
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="search-result"]').length === n &&
    document.querySelector('[data-testid="search-panel"]').getAttribute('data-state') === 'done', n, { timeout: WAIT });
}

test('v2: search finds a message of the room, not a deleted one; pages back; opens a result', async () => {
  const seeded = await seedMessages('find', 60);          // "history 001" … "history 060", seqs 1..60
  assert.equal(seeded.firstSeq, 0, 'a new room');
  await joinRoom(alice.page, 'find');
  await waitForMessage(alice.page, 'history 060');
  await sendMessage(alice.page, 'deploy failed on staging 🚨');
  await sendMessage(alice.page, 'the deploy worked');
  await sendMessage(alice.page, 'Deploy FAILED again, delete me');
  const kept = await waitForMessage(alice.page, 'deploy failed on staging 🚨');
  const gone = await waitForMessage(alice.page, 'Deploy FAILED again, delete me');
  await messageAction(alice.page, gone, 'delete-button');
  await msgEl(alice.page, gone).locator('[data-testid="delete-confirm"]').click();
  await waitForDeleted(alice.page, gone);

  // a result that is not loaded in the timeline (the first page holds seqs 15..64) is only marked
  await runSearch(alice.page, 'history 001');
  assert.deepEqual(await searchResults(alice.page), [{ seq: 1, author: 'seeder', text: 'history 001' }]);
  assert.equal(await msgEl(alice.page, 1).count(), 0, 'seq 1 is not loaded');
  await alice.page.locator('[data-testid="search-result"][data-seq="1"][data-in-timeline="false"]').click();
  await alice.page.waitForSelector('[data-testid="search-result"][data-seq="1"][data-selected="true"]', { timeout: WAIT });
  assert.equal(await msgEl(alice.page, 1).count(), 0, 'no history was loaded for it');

  // every word, any case; the deleted message never matches
  await runSearch(alice.page, 'deploy failed');
  assert.deepEqual(await searchResults(alice.page), [{ seq: kept, author: alice.name, text: 'deploy failed on staging 🚨' }]);
  assert.match(await tid(alice.page, 'search-result-time').textContent(), new RegExp(`^#${kept} · \\d{1,2}[:.]\\d{2}`));
  assert.deepEqual(await alice.page.$$eval('[data-testid="search-result-text"] mark', (els) => els.map((e) => e.textContent)),
    ['deploy', 'failed'], 'the words are marked');
  assert.equal(await tid(alice.page, 'search-more').isHidden(), true);
  // a click on a result loaded in the timeline scrolls there and flashes it
  await alice.page.evaluate(() => { document.querySelector('[data-testid="message-list"]').scrollTop = 0; });
  await alice.page.locator(`[data-testid="search-result"][data-seq="${kept}"]`).click();
  await alice.page.waitForFunction((seq) => {
    const li = document.querySelector(`[data-testid="message"][data-seq="${seq}"]`);
    const list = document.querySelector('[data-testid="message-list"]').getBoundingClientRect();
    const r = li && li.getBoundingClientRect();
    return !!r && li.classList.contains('flash') && r.top >= list.top - 1 && r.bottom <= list.bottom + 1;
  }, kept, { timeout: WAIT });
  assert.equal(await alice.page.locator(`[data-testid="search-result"][data-seq="${kept}"]`).getAttribute('data-selected'), 'true');
  await alice.page.screenshot({ path: path.join(ARTIFACTS, 'chat-search.png') });

  // nothing found
  await runSearch(alice.page, 'zebra unicorn');
  assert.deepEqual(await searchResults(alice.page), []);
  assert.deepEqual(await searchStatus(alice.page), { state: 'empty', text: 'no messages found' });

  // newest first, 20 at a time; "Older results" asks with before = the lowest seq shown
  await runSearch(alice.page, 'HISTORY');
  let seqs = (await searchResults(alice.page)).map((x) => x.seq);
  assert.deepEqual(seqs, Array.from({ length: 20 }, (_, i) => 60 - i));
  await searchMore(alice.page, 40);
  await searchMore(alice.page, 60);
  seqs = (await searchResults(alice.page)).map((x) => x.seq);
  assert.deepEqual(seqs, Array.from({ length: 60 }, (_, i) => 60 - i));
  await tid(alice.page, 'search-more').waitFor({ state: 'hidden', timeout: WAIT });

  // the server's refusal shows in the panel
  await runSearch(alice.page, 'x'.repeat(600));
  const refused = await searchStatus(alice.page);
  assert.equal(refused.state, 'error');
  assert.match(refused.text, /^too_large/);

  // closed with ×; another room closes it too
  await tid(alice.page, 'search-close').click();
  await tid(alice.page, 'search-panel').waitFor({ state: 'hidden', timeout: WAIT });
  await runSearch(alice.page, 'deploy');
  await joinRoom(alice.page, 'lobby');   // joined already (in the whole suite): opens it
  await tid(alice.page, 'search-panel').waitFor({ state: 'hidden', timeout: WAIT });
  assert.equal(await tid(alice.page, 'search-input').inputValue(), '');
});

// ------------------------------------------------------------------ protocol v2: room settings, read-only, slow mode, private rooms, invites
// Open the settings dialog of the open room, change the given fields, save; wait until it closes.
async function changeSettings(page, { topic, priv, readOnly, slowMode }) {
  await tid(page, 'settings-button').click();
  await tid(page, 'settings-dialog').waitFor({ timeout: WAIT });
  if (topic !== undefined) await tid(page, 'settings-topic').fill(topic);
  if (priv !== undefined) await tid(page, 'settings-private').setChecked(priv);
  if (readOnly !== undefined) await tid(page, 'settings-read-only').setChecked(readOnly);
  if (slowMode !== undefined) await tid(page, 'settings-slow-mode').fill(String(slowMode));
  await tid(page, 'settings-save').click();
  await tid(page, 'settings-dialog').waitFor({ state: 'hidden', timeout: WAIT }).catch(async (e) => {
    throw new Error(`the settings dialog stayed open: ${await tid(page, 'settings-error').textContent()} (${e.message})`);
  });
}
// A user as a page names them: the display name, or the user id when the page has not met them.
const reEscape = (t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const known = (u) => `(?:${reEscape(u.name)}|${reEscape(u.user)})`;
const roomBadges = (page) => page.$$eval('[data-testid="room-badge"]', (els) => els.map((e) => e.getAttribute('data-badge')));
const systemLines = (page) => page.$$eval('[data-testid="system-line"] [data-testid="system-text"]', (els) => els.map((e) => e.textContent));
async function waitForSystemLine(page, text) {
  await page.waitForFunction((t) => [...document.querySelectorAll('[data-testid="system-line"] [data-testid="system-text"]')]
    .some((e) => e.textContent === t), text, { timeout: WAIT }).catch(async () => {
    throw new Error(`no system line "${text}"; there are ${JSON.stringify(await systemLines(page))}`);
  });
}
// Wait until the header shows this topic ('' = none).
async function waitForTopic(page, topic) {
  await page.waitForFunction((t) => {
    const e = document.querySelector('[data-testid="room-topic"]');
    return e.getAttribute('data-topic') === t && (t === '' || (!e.closest('[hidden]') && e.textContent === t));
  }, topic, { timeout: WAIT }).catch(async () => {
    throw new Error(`topic is "${await tid(page, 'room-topic').getAttribute('data-topic')}", wanted "${topic}"`);
  });
}

test('v2: the owner sets a topic: the other user sees it live and after a reload', async () => {
  await joinRoom(alice.page, 'topic-room');      // a new room: alice owns it
  await joinRoom(bob.page, 'topic-room');
  assert.equal(await tid(alice.page, 'room-role').textContent(), 'owner');
  assert.equal(await tid(bob.page, 'room-role').textContent(), 'member');
  await tid(alice.page, 'settings-button').waitFor({ timeout: WAIT });
  assert.equal(await tid(bob.page, 'settings-button').isHidden(), true, 'a member gets no settings button');
  assert.equal(await tid(bob.page, 'room-topic').isHidden(), true, 'no topic yet');
  await sendMessage(bob.page, 'before the topic');
  await waitForMessage(alice.page, 'before the topic');

  const topic = 'Deploys & incidents 🚀 <b>not bold</b>';
  await changeSettings(alice.page, { topic });
  await waitForTopic(bob.page, topic);
  await waitForTopic(alice.page, topic);
  assert.equal(await bob.page.locator('[data-testid="room-topic"] b').count(), 0, 'HTML stays text');
  await waitForSystemLine(bob.page, `${alice.name} set the topic to “${topic}”`);
  await waitForSystemLine(alice.page, `You set the topic to “${topic}”`);
  // the moderation event took a seq: no message element for it, the messages once each
  for (const { page } of [alice, bob]) {
    const seqs = await messageSeqs(page);
    assert.equal(new Set(seqs).size, seqs.length);
  }
  await sendMessage(bob.page, 'after the topic');
  await waitForMessage(alice.page, 'after the topic');

  // after a reload: the topic from joined, the line from history
  bob = await reloadAs(bob, 'bob');
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="topic-room"][data-joined="true"].active', { state: 'attached', timeout: WAIT });
  await waitForTopic(bob.page, topic);
  await waitForMessage(bob.page, 'after the topic');
  await waitForSystemLine(bob.page, `${alice.name} set the topic to “${topic}”`);
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${bob.user}"]`, { timeout: WAIT });

  // cleared
  await changeSettings(alice.page, { topic: '' });
  await waitForTopic(bob.page, '');
  await tid(bob.page, 'room-topic').waitFor({ state: 'hidden', timeout: WAIT });
  await waitForSystemLine(bob.page, `${alice.name} cleared the topic`);
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

test('v2: a read-only room disables the composer of a member; reactions still work', async () => {
  await joinRoom(alice.page, 'ro-room');
  await joinRoom(bob.page, 'ro-room');
  await sendMessage(bob.page, 'bob writes while he may');
  await waitForMessage(alice.page, 'bob writes while he may');

  await changeSettings(alice.page, { readOnly: true });
  await tid(bob.page, 'read-only-note').waitFor({ timeout: WAIT });
  assert.equal(await tid(bob.page, 'read-only-note').textContent(), 'Only the owner and moderators can write here');
  assert.equal(await tid(bob.page, 'composer-input').isDisabled(), true);
  assert.equal(await tid(bob.page, 'send-button').isDisabled(), true);
  assert.deepEqual(await roomBadges(bob.page), ['read-only']);
  await waitForSystemLine(bob.page, `${alice.name} made the room read-only`);
  // the owner writes on
  assert.equal(await tid(alice.page, 'composer-input').isDisabled(), false);
  assert.equal(await tid(alice.page, 'read-only-note').isHidden(), true);
  await sendMessage(alice.page, 'announcement: this room is read-only now');
  const seq = await waitForMessage(bob.page, 'announcement: this room is read-only now');
  // bob still reacts, but gets no reply button
  await messageAction(bob.page, seq, 'react-button', '👍');
  for (const { page } of [alice, bob]) await waitForReactionCount(page, seq, '👍', 1);
  assert.equal(await msgEl(bob.page, seq).locator('[data-testid="reply-button"]').isHidden(), true);
  // the server refuses bob's send from another connection all the same
  await assert.rejects(seedMessages('ro-room', 0, [{ text: 'sneaking past the page' }], { name: 'bob' }), /forbidden/);
  // still locked after a reload (joined carries the settings)
  bob = await reloadAs(bob, 'bob');
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="ro-room"][data-joined="true"].active', { state: 'attached', timeout: WAIT });
  await tid(bob.page, 'read-only-note').waitFor({ timeout: WAIT });
  assert.equal(await tid(bob.page, 'composer-input').isDisabled(), true);
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${bob.user}"]`, { timeout: WAIT });

  await changeSettings(alice.page, { readOnly: false });
  await tid(bob.page, 'read-only-note').waitFor({ state: 'hidden', timeout: WAIT });
  assert.equal(await tid(bob.page, 'composer-input').isDisabled(), false);
  assert.deepEqual(await roomBadges(bob.page), []);
  await waitForSystemLine(bob.page, `${alice.name} let everyone write again`);
  await sendMessage(bob.page, 'bob writes again');
  await waitForMessage(alice.page, 'bob writes again');
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

test('v2: slow mode: a member\'s early send waits with a countdown and keeps its text', async () => {
  await joinRoom(alice.page, 'slow-room');
  await joinRoom(bob.page, 'slow-room');
  await changeSettings(alice.page, { slowMode: 60 });
  await bob.page.waitForSelector('[data-testid="room-badge"][data-badge="slow-mode"]', { timeout: WAIT });
  assert.equal(await bob.page.locator('[data-testid="room-badge"][data-badge="slow-mode"]').textContent(), 'slow mode 60s');
  await waitForSystemLine(bob.page, `${alice.name} set slow mode to 60 s`);

  await sendMessage(bob.page, 'first in slow mode');
  await waitForMessage(alice.page, 'first in slow mode');
  await tid(bob.page, 'slow-mode-note').waitFor({ timeout: WAIT });
  assert.match(await tid(bob.page, 'slow-mode-note').textContent(), /^Slow mode: you can send again in \d+s$/);
  await tid(bob.page, 'composer-input').fill('too soon');
  await tid(bob.page, 'composer-input').press('Enter');
  assert.equal(await tid(bob.page, 'composer-input').inputValue(), 'too soon', 'the text stays');
  assert.equal(await tid(bob.page, 'pending-message').count(), 0);
  // the countdown counts down
  const s0 = Number(await tid(bob.page, 'slow-mode-note').getAttribute('data-seconds'));
  await bob.page.waitForFunction((s0) => Number(document.querySelector('[data-testid="slow-mode-note"]').getAttribute('data-seconds')) < s0,
    s0, { timeout: WAIT });

  // another page of bob's knows nothing of the wait: the server refuses (rate_limited, retry_ms)
  const bob2 = await signIn(await openClient('bob2'), { name: 'bob' });
  await bob2.page.waitForSelector('[data-testid="room-item"][data-room="slow-room"][data-joined="true"]', { timeout: WAIT });
  await openRoom(bob2.page, 'slow-room');
  await sendMessage(bob2.page, 'refused by the server');
  await tid(bob2.page, 'slow-mode-note').waitFor({ timeout: WAIT });
  assert.match(await tid(bob2.page, 'slow-mode-note').textContent(), /^Slow mode: you can send again in \d+s$/);
  const left = Number(await tid(bob2.page, 'slow-mode-note').getAttribute('data-seconds'));
  assert.ok(left >= 1 && left <= 60, `the server's retry_ms as seconds: ${left}`);
  await bob2.page.waitForFunction(() => document.querySelector('[data-testid="composer-input"]').value === 'refused by the server',
    null, { timeout: WAIT });
  assert.equal(await tid(bob2.page, 'pending-message').count(), 0);
  // the owner is not bound by it
  await sendMessage(alice.page, 'owner one');
  await sendMessage(alice.page, 'owner two');
  await waitForMessage(bob.page, 'owner two');
  assert.equal(await tid(alice.page, 'slow-mode-note').isHidden(), true);
  // turned off: both of bob's pages may send at once
  await changeSettings(alice.page, { slowMode: 0 });
  for (const p of [bob.page, bob2.page]) await tid(p, 'slow-mode-note').waitFor({ state: 'hidden', timeout: WAIT });
  await waitForSystemLine(bob.page, `${alice.name} turned slow mode off`);
  await tid(bob2.page, 'send-button').click();
  await waitForMessage(alice.page, 'refused by the server');
  await tid(bob.page, 'send-button').click();
  await waitForMessage(alice.page, 'too soon');
  await bob2.page.context().close();
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

test('v2: a private room: bob cannot join; alice invites him, he sees the notice and joins', async () => {
  await joinRoom(alice.page, 'vault');           // a new room: alice owns it
  await changeSettings(alice.page, { priv: true, topic: 'secret plans' });
  await alice.page.waitForSelector('[data-testid="room-badge"][data-badge="private"]', { timeout: WAIT });
  await roomItem(alice.page, 'vault').locator('[data-testid="room-lock"]').waitFor({ timeout: WAIT });
  await waitForSystemLine(alice.page, 'You set the topic to “secret plans” and made the room private');
  await sendMessage(alice.page, 'for members only');
  await waitForMessage(alice.page, 'for members only');

  // bob is no member: his join is refused and the page says so
  await tid(bob.page, 'room-input').fill('vault');
  await tid(bob.page, 'join-button').click();
  await bob.page.waitForFunction(() => /^Could not join #vault: forbidden/.test(document.querySelector('[data-testid="toast"]').textContent),
    null, { timeout: WAIT });
  await roomItem(bob.page, 'vault').waitFor({ state: 'detached', timeout: WAIT });
  assert.equal(await tid(bob.page, 'invite-form').isHidden(), true);

  // the owner invites him (the form shows in private rooms only)
  await tid(alice.page, 'invite-form').waitFor({ timeout: WAIT });
  await tid(alice.page, 'invite-input').fill(bob.user);
  await tid(alice.page, 'invite-button').click();
  await alice.page.waitForSelector('[data-testid="invite-status"][data-state="ok"]', { timeout: WAIT });
  assert.match(await tid(alice.page, 'invite-status').textContent(), new RegExp(`^Invited ${known(bob)} to #vault$`));
  assert.equal(await tid(alice.page, 'invite-input').inputValue(), '');

  // bob: a notice with a Join button, and the room (with its lock) in his list
  const note = bob.page.locator('[data-testid="invite-notification"][data-room="vault"]');
  await note.waitFor({ timeout: WAIT });
  assert.match(await note.locator('.mention-note-text').textContent(), new RegExp(`^${known(alice)} invited you to #vault$`));
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="vault"][data-invited="true"][data-private="true"]', { timeout: WAIT });
  await roomItem(bob.page, 'vault').locator('[data-testid="room-lock"]').waitFor({ timeout: WAIT });
  await note.locator('[data-testid="invite-join"]').click();
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="vault"][data-joined="true"].active', { state: 'attached', timeout: WAIT });
  await note.waitFor({ state: 'detached', timeout: WAIT });
  assert.equal(await roomItem(bob.page, 'vault').getAttribute('data-invited'), null);
  await waitForMessage(bob.page, 'for members only');
  await waitForTopic(bob.page, 'secret plans');
  assert.deepEqual(await roomBadges(bob.page), ['private']);
  await waitForSystemLine(bob.page, `${alice.name} set the topic to “secret plans” and made the room private`);
  assert.equal(await tid(bob.page, 'invite-form').isHidden(), true, 'a member does not invite');
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${bob.user}"]`, { timeout: WAIT });
  await sendMessage(bob.page, 'thanks for having me');
  await waitForMessage(alice.page, 'thanks for having me');
  // a member may search it
  await runSearch(bob.page, 'members');
  assert.deepEqual((await searchResults(bob.page)).map((x) => x.text), ['for members only']);
  await alice.page.screenshot({ path: path.join(ARTIFACTS, 'chat-settings.png') });
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

// ------------------------------------------------------------------ protocol v2: moderation (roles, kick, ban, mute)
// Wait until the active room shows a system line matching `re`.
async function waitForSystemLineLike(page, re) {
  await page.waitForFunction(({ src, flags }) => {
    const re = new RegExp(src, flags);
    return [...document.querySelectorAll('[data-testid="system-line"] [data-testid="system-text"]')].some((e) => re.test(e.textContent));
  }, { src: re.source, flags: re.flags }, { timeout: WAIT }).catch(async () => {
    throw new Error(`no system line like ${re}; there are ${JSON.stringify(await systemLines(page))}`);
  });
}
// The moderation panel for `user`: from their ⋯ in the people pane, or by id (`byId`, for a user
// who is not here). Runs `action` (kick, ban, unban, mute, unmute, role) and returns the panel's
// status once the server answered: {state: 'ok' | 'error', text}.
async function moderate(page, user, action, { reason, duration, role, byId = false } = {}) {
  const panel = tid(page, 'mod-panel');
  if (await panel.isVisible()) await tid(page, 'mod-close').click();
  await panel.waitFor({ state: 'hidden', timeout: WAIT });
  if (byId) {
    await tid(page, 'mod-open').click();
    await panel.waitFor({ timeout: WAIT });
    await tid(page, 'mod-user').fill(user);
  } else {
    await page.locator(`[data-testid="presence-item"][data-user="${user}"] [data-testid="mod-button"]`).click();
    await panel.waitFor({ timeout: WAIT });
    assert.equal(await tid(page, 'mod-user').inputValue(), user);
  }
  if (reason !== undefined) await tid(page, 'mod-reason').fill(reason);
  if (duration !== undefined) await tid(page, action === 'ban' ? 'mod-ban-duration' : 'mod-mute-duration').selectOption(duration);
  const button = action === 'role' ? panel.locator(`[data-testid="mod-role"][data-role="${role}"]`) : tid(page, 'mod-' + action);
  await button.click();
  if (action === 'role' && role === 'owner') await button.click(); // the second click confirms
  const status = page.locator('[data-testid="mod-status"]:not([hidden])');
  await status.waitFor({ timeout: WAIT });
  return { state: await status.getAttribute('data-state'), text: await status.textContent() };
}
async function moderateOk(page, user, action, opts) {
  const st = await moderate(page, user, action, opts);
  assert.equal(st.state, 'ok', `${action} ${user}: ${st.text}`);
  return st;
}
const presenceOf = (page, user) => page.locator(`[data-testid="presence-item"][data-user="${user}"]`);

test('v2: the owner kicks a member: he is told why, both see the line, he may join again', async () => {
  await joinRoom(alice.page, 'kick-room');       // a new room: alice owns it
  await joinRoom(bob.page, 'kick-room');
  await sendMessage(bob.page, 'bob was here');
  await waitForMessage(alice.page, 'bob was here');
  await presenceOf(alice.page, bob.user).waitFor({ timeout: WAIT });
  await presenceOf(bob.page, alice.user).waitFor({ timeout: WAIT });
  assert.equal(await bob.page.locator('[data-testid="mod-button"]').count(), 0, 'a member gets no moderation menu');
  assert.equal(await tid(bob.page, 'mod-open').isHidden(), true);

  const st = await moderateOk(alice.page, bob.user, 'kick', { reason: 'spam' });
  assert.match(st.text, new RegExp(`^Kicked ${known(bob)}$`));
  // bob: the notice in the room, which is no longer joined here
  await tid(bob.page, 'kicked-notice').waitFor({ timeout: WAIT });
  assert.match(await tid(bob.page, 'kicked-text').textContent(), new RegExp(`^You were kicked from #kick-room by ${known(alice)}: spam$`));
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="kick-room"][data-left="kick"][data-joined="false"]', { state: 'attached', timeout: WAIT });
  assert.equal(await tid(bob.page, 'send-button').isDisabled(), true);
  assert.equal(await tid(bob.page, 'rejoin-button').textContent(), 'Join again');
  // the line for both; bob is gone from alice's people pane
  await waitForSystemLineLike(alice.page, new RegExp(`^You kicked ${known(bob)}: spam$`));
  await waitForSystemLineLike(bob.page, new RegExp(`^${known(alice)} kicked you: spam$`));
  await presenceOf(alice.page, bob.user).waitFor({ state: 'detached', timeout: WAIT });
  // the kicked room is not saved for rejoining after a reload
  const saved = await bob.page.evaluate((u) => JSON.parse(localStorage.getItem('chat.rooms.' + u)), bob.user);
  assert.ok(!saved.rooms.includes('kick-room'), `saved rooms: ${JSON.stringify(saved.rooms)}`);
  // a kick is not a ban: Join again works, and what was said meanwhile arrives
  await sendMessage(alice.page, 'said while bob was out');
  await waitForMessage(alice.page, 'said while bob was out');
  await tid(bob.page, 'rejoin-button').click();
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="kick-room"][data-joined="true"]:not([data-left])', { state: 'attached', timeout: WAIT });
  await tid(bob.page, 'kicked-notice').waitFor({ state: 'hidden', timeout: WAIT });
  await waitForMessage(bob.page, 'said while bob was out');
  await presenceOf(alice.page, bob.user).waitFor({ timeout: WAIT });
  await sendMessage(bob.page, 'bob is back');
  await waitForMessage(alice.page, 'bob is back');
  for (const { page } of [alice, bob]) {
    const seqs = await messageSeqs(page);
    assert.equal(new Set(seqs).size, seqs.length, 'each message once');
  }
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

test('v2: the owner bans a member: his joins are refused with a clear message until unban', async () => {
  await joinRoom(alice.page, 'ban-room');
  await joinRoom(bob.page, 'ban-room');
  await sendMessage(bob.page, 'bob before the ban');
  await waitForMessage(alice.page, 'bob before the ban');
  await presenceOf(alice.page, bob.user).waitFor({ timeout: WAIT });

  await moderateOk(alice.page, bob.user, 'ban', { reason: 'flooding', duration: '3600' });
  await tid(bob.page, 'kicked-notice').waitFor({ timeout: WAIT });
  assert.match(await tid(bob.page, 'kicked-text').textContent(),
    new RegExp(`^You were banned from #ban-room by ${known(alice)} until .+: flooding$`));
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="ban-room"][data-left="ban"]', { state: 'attached', timeout: WAIT });
  await waitForSystemLineLike(alice.page, new RegExp(`^You banned ${known(bob)} for 1 h: flooding$`));
  await waitForSystemLineLike(bob.page, new RegExp(`^${known(alice)} banned you for 1 h: flooding$`));
  await presenceOf(alice.page, bob.user).waitFor({ state: 'detached', timeout: WAIT });

  // trying again: refused, and the notice says why
  await tid(bob.page, 'rejoin-button').click();
  await tid(bob.page, 'kicked-error').waitFor({ timeout: WAIT });
  assert.equal(await tid(bob.page, 'kicked-error').textContent(), 'Join refused: you are banned from this room');
  assert.equal(await roomItem(bob.page, 'ban-room').getAttribute('data-joined'), 'false');
  // after a reload the room is not joined again by itself; joining by name is refused
  bob = await reloadAs(bob, 'bob');
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="lobby"][data-joined="true"]', { state: 'attached', timeout: WAIT });
  assert.equal(await roomItem(bob.page, 'ban-room').count(), 0, 'no ban-room after the reload');
  await tid(bob.page, 'room-input').fill('ban-room');
  await tid(bob.page, 'join-button').click();
  await bob.page.waitForFunction(() => document.querySelector('[data-testid="toast"]').textContent ===
    'Could not join #ban-room: forbidden: you are banned from this room', null, { timeout: WAIT });
  await roomItem(bob.page, 'ban-room').waitFor({ state: 'detached', timeout: WAIT });

  // lifted by id (bob is not in the room to pick from the people pane)
  const st = await moderate(alice.page, bob.user, 'unban', { byId: true });
  assert.equal(st.state, 'ok', st.text);
  assert.match(st.text, new RegExp(`^Unbanned ${known(bob)}$`));
  await waitForSystemLineLike(alice.page, new RegExp(`^You unbanned ${known(bob)}$`));
  await tid(alice.page, 'mod-close').click();
  await joinRoom(bob.page, 'ban-room');
  await waitForMessage(bob.page, 'bob before the ban');
  await waitForSystemLineLike(bob.page, new RegExp(`^${known(alice)} unbanned you$`));
  await sendMessage(bob.page, 'bob after the unban');
  await waitForMessage(alice.page, 'bob after the unban');
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

test('v2: the owner mutes a member: his send is refused with the muted note, text kept; after unmute it goes', async () => {
  await joinRoom(alice.page, 'mute-room');
  await joinRoom(bob.page, 'mute-room');
  await presenceOf(alice.page, bob.user).waitFor({ timeout: WAIT });

  await moderateOk(alice.page, bob.user, 'mute', { duration: '600' });
  await waitForSystemLineLike(alice.page, new RegExp(`^You muted ${known(bob)} for 10 min$`));
  await waitForSystemLineLike(bob.page, new RegExp(`^${known(alice)} muted you for 10 min$`));
  await tid(bob.page, 'muted-note').waitFor({ timeout: WAIT });
  assert.match(await tid(bob.page, 'muted-note').textContent(), /^You are muted in this room until .+$/);
  // the send goes to the server, which refuses it: the text comes back into the composer
  await sendMessage(bob.page, 'can anyone hear me?');
  await bob.page.waitForFunction(() => document.querySelector('[data-testid="composer-input"]').value === 'can anyone hear me?' &&
    !document.querySelector('[data-testid="pending-message"]'), null, { timeout: WAIT });
  assert.equal(await tid(bob.page, 'muted-note').isVisible(), true);
  // a reaction is refused too (toast), and bob still reads
  await sendMessage(alice.page, 'the owner speaks');
  const seq = await waitForMessage(bob.page, 'the owner speaks');
  await messageAction(bob.page, seq, 'react-button', '👍');
  await bob.page.waitForFunction(() => /^Could not react: forbidden: you are muted in this room$/.test(document.querySelector('[data-testid="toast"]').textContent),
    null, { timeout: WAIT });
  assert.equal(await reactionCount(alice.page, seq, '👍'), 0);

  await moderateOk(alice.page, bob.user, 'unmute');
  await waitForSystemLineLike(bob.page, new RegExp(`^${known(alice)} unmuted you$`));
  await tid(bob.page, 'muted-note').waitFor({ state: 'hidden', timeout: WAIT });
  await tid(bob.page, 'send-button').click();
  await waitForMessage(alice.page, 'can anyone hear me?');
  const texts = await alice.page.$$eval('[data-testid="message-text"]', (els) => els.map((e) => e.textContent));
  assert.equal(texts.filter((t) => t === 'can anyone hear me?').length, 1, 'stored once, after the unmute');
  await tid(alice.page, 'mod-close').click();
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

test('v2: the owner makes a member a moderator: he gets the settings button and may write in a read-only room', async () => {
  await joinRoom(alice.page, 'role-room');
  await joinRoom(bob.page, 'role-room');
  await presenceOf(alice.page, bob.user).waitFor({ timeout: WAIT });
  await changeSettings(alice.page, { readOnly: true });
  await tid(bob.page, 'read-only-note').waitFor({ timeout: WAIT });
  assert.equal(await tid(bob.page, 'settings-button').isHidden(), true);

  await moderateOk(alice.page, bob.user, 'role', { role: 'moderator' });
  await waitForSystemLineLike(alice.page, new RegExp(`^You made ${known(bob)} a moderator$`));
  await waitForSystemLineLike(bob.page, new RegExp(`^${known(alice)} made you a moderator$`));
  await bob.page.waitForSelector('[data-testid="room-role"][data-role="moderator"]', { timeout: WAIT });
  await tid(bob.page, 'settings-button').waitFor({ timeout: WAIT });
  await tid(bob.page, 'read-only-note').waitFor({ state: 'hidden', timeout: WAIT });
  assert.equal(await tid(bob.page, 'composer-input').isDisabled(), false);
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${bob.user}"][data-role="moderator"]`, { timeout: WAIT });
  await sendMessage(bob.page, 'a moderator writes');
  await waitForMessage(alice.page, 'a moderator writes');
  // the new moderator has the menu too; the server refuses what his role does not allow
  await presenceOf(bob.page, alice.user).locator('[data-testid="mod-button"]').waitFor({ timeout: WAIT });
  assert.equal(await tid(bob.page, 'mod-roles').isHidden(), true);
  const refused = await moderate(bob.page, alice.user, 'kick');
  assert.deepEqual(refused, { state: 'error', text: 'Refused: forbidden: a moderator cannot act on the owner or another moderator' });
  await tid(bob.page, 'mod-close').click();
  await alice.page.screenshot({ path: path.join(ARTIFACTS, 'chat-moderation.png') });

  // back to member: the settings button goes, the read-only composer comes back
  await moderateOk(alice.page, bob.user, 'role', { role: 'member' });
  await waitForSystemLineLike(bob.page, new RegExp(`^${known(alice)} made you a member$`));
  await bob.page.waitForSelector('[data-testid="room-role"][data-role="member"]', { timeout: WAIT });
  await tid(bob.page, 'settings-button').waitFor({ state: 'hidden', timeout: WAIT });
  await tid(bob.page, 'read-only-note').waitFor({ timeout: WAIT });
  assert.equal(await bob.page.locator('[data-testid="mod-button"]').count(), 0);
  await tid(alice.page, 'mod-close').click();
  await changeSettings(alice.page, { readOnly: false });
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

// ------------------------------------------------------------------ protocol v2: the moderation log
// The entries of the open moderation log, top to bottom.
const modLogItems = (page) => page.$$eval('[data-testid="modlog-item"]', (els) => els.map((e) => {
  const text = (id) => { const x = e.querySelector(`[data-testid="${id}"]`); return x ? x.textContent : null; };
  return {
    seq: Number(e.getAttribute('data-seq')), action: e.getAttribute('data-action'), by: e.getAttribute('data-by'),
    user: e.getAttribute('data-user'), until: e.getAttribute('data-until') == null ? null : Number(e.getAttribute('data-until')),
    time: text('modlog-time'), byName: text('modlog-by'), actionText: text('modlog-action'), userName: text('modlog-user'),
    detail: text('modlog-detail'), untilText: text('modlog-until'), reason: text('modlog-reason'),
  };
}));
// Open the moderation log of the active room; wait until its first load is done.
async function openModLog(page) {
  await tid(page, 'modlog-button').click();
  await page.waitForSelector('[data-testid="modlog-panel"][data-state="done"]', { timeout: WAIT });
}
// Wait until the open log lists `n` entries with `action` on top.
async function waitForModLogTop(page, n, action) {
  await page.waitForFunction(({ n, action }) => {
    const items = document.querySelectorAll('[data-testid="modlog-item"]');
    return items.length === n && items[0].getAttribute('data-action') === action;
  }, { n, action }, { timeout: WAIT }).catch(async () => {
    throw new Error(`moderation log: wanted ${n} entries with ${action} on top, got ${JSON.stringify(await modLogItems(page))}`);
  });
}
// Requests over a socket of `name`'s own (in a blank page of the server's origin), in order, each
// tried again while rate_limited; returns the replies.
async function requestsAs(name, room, requests) {
  const ctx = await browser.newContext();
  contexts.push(ctx);
  const page = await ctx.newPage();
  await page.goto(baseUrl() + 'healthz', { timeout: WAIT });
  try {
    return await page.evaluate(async ({ url, name, room, requests }) => {
      const ws = new WebSocket(url);
      const waiting = new Map();
      let nextId = 1;
      ws.onmessage = (e) => {
        for (const line of String(e.data).split('\n')) {
          if (!line.trim()) continue;
          const m = JSON.parse(line);
          if (m.id != null && waiting.has(m.id)) { waiting.get(m.id)(m); waiting.delete(m.id); }
        }
      };
      await new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error('websocket error')); });
      const req = (o) => new Promise((res, rej) => {
        const id = nextId++;
        const t = setTimeout(() => rej(new Error('no reply to ' + o.type)), 10000);
        waiting.set(id, (m) => { clearTimeout(t); res(m); });
        ws.send(JSON.stringify({ ...o, id }));
      });
      const w = await req({ type: 'hello', name });
      if (w.type !== 'welcome') throw new Error('hello: ' + JSON.stringify(w));
      const j = await req({ type: 'join', room });
      if (j.type !== 'joined') throw new Error('join: ' + JSON.stringify(j));
      const replies = [];
      const deadline = Date.now() + 60000;
      for (const o of requests) {
        for (;;) {
          if (Date.now() > deadline) throw new Error('the requests took too long');
          const a = await req({ room, ...o });
          if (a.type === 'error' && a.code === 'rate_limited') { await new Promise((r) => setTimeout(r, 100)); continue; }
          if (a.type === 'error') throw new Error(o.type + ': ' + JSON.stringify(a));
          replies.push(a);
          break;
        }
      }
      ws.close(1000);
      return replies;
    }, { url: wsUrl(), name, room, requests });
  } finally {
    await ctx.close();
  }
}

test('v2: the owner\'s moderation log lists the room\'s actions newest first, and a new one on top live', async () => {
  await joinRoom(alice.page, 'log-room');        // a new room: alice owns it
  await joinRoom(bob.page, 'log-room');
  await presenceOf(alice.page, bob.user).waitFor({ timeout: WAIT });
  await tid(alice.page, 'modlog-button').waitFor({ timeout: WAIT });
  await changeSettings(alice.page, { topic: 'audited' });
  await waitForSystemLine(alice.page, 'You set the topic to “audited”');
  await sendMessage(bob.page, 'a message is no moderation');
  await waitForMessage(alice.page, 'a message is no moderation');
  const before = Date.now();
  await moderateOk(alice.page, bob.user, 'mute', { reason: 'shouting <b>in caps</b>', duration: '600' });
  await waitForSystemLineLike(alice.page, new RegExp(`^You muted ${known(bob)} for 10 min: shouting <b>in caps</b>$`));
  await tid(alice.page, 'mod-close').click();

  await openModLog(alice.page);
  await waitForModLogTop(alice.page, 2, 'mute');
  const [mute, topic] = await modLogItems(alice.page);
  assert.ok(mute.seq > topic.seq, `newest first: ${mute.seq}, ${topic.seq}`);
  assert.deepEqual({ ...mute, time: null, until: null, untilText: null }, {
    seq: mute.seq, action: 'mute', by: alice.user, user: bob.user, until: null, time: null, byName: alice.name,
    actionText: 'mute', userName: bob.name, detail: null, untilText: null, reason: 'shouting <b>in caps</b>' });
  assert.match(mute.untilText, /^for 10 min, until .+$/);
  assert.ok(mute.until >= before + 600000 - 5000 && mute.until <= Date.now() + 600000 + 5000, `until ${mute.until}`);
  assert.ok(mute.time, 'a time');
  assert.equal(await alice.page.locator('[data-testid="modlog-reason"] b').count(), 0, 'HTML stays text');
  assert.deepEqual({ ...topic, time: null }, {
    seq: topic.seq, action: 'settings', by: alice.user, user: null, until: null, time: null, byName: alice.name,
    actionText: 'settings', userName: null, detail: 'set the topic to “audited”', untilText: null, reason: null });
  assert.equal(await tid(alice.page, 'modlog-more').isHidden(), true, 'the whole history was read: nothing older');
  assert.match(await tid(alice.page, 'modlog-summary').textContent(), /^Moderation log of #log-room · 2 entries$/);
  assert.equal(await tid(alice.page, 'modlog-button').getAttribute('aria-expanded'), 'true');

  // a kick while the log is open: on top, live
  await moderateOk(alice.page, bob.user, 'kick', { reason: 'enough' });
  await waitForModLogTop(alice.page, 3, 'kick');
  const [kick, ...rest] = await modLogItems(alice.page);
  assert.deepEqual(rest.map((x) => x.seq), [mute.seq, topic.seq]);
  assert.ok(kick.seq > mute.seq);
  assert.deepEqual([kick.by, kick.user, kick.userName, kick.reason, kick.untilText], [alice.user, bob.user, bob.name, 'enough', null]);
  await tid(alice.page, 'mod-close').click();
  await alice.page.screenshot({ path: path.join(ARTIFACTS, 'chat-modlog.png') });
  // Escape closes it; so does another room
  await tid(alice.page, 'modlog-close').focus();
  await alice.page.keyboard.press('Escape');
  await tid(alice.page, 'modlog-panel').waitFor({ state: 'hidden', timeout: WAIT });
  assert.equal(await tid(alice.page, 'modlog-button').getAttribute('aria-expanded'), 'false');
  await openModLog(alice.page);
  await waitForModLogTop(alice.page, 3, 'kick');
  await joinRoom(alice.page, 'lobby');
  await tid(alice.page, 'modlog-panel').waitFor({ state: 'hidden', timeout: WAIT });

  await tid(bob.page, 'kicked-notice').waitFor({ timeout: WAIT });
  await tid(bob.page, 'rejoin-button').click();
  await bob.page.waitForSelector('[data-testid="room-item"][data-room="log-room"][data-joined="true"]:not([data-left])', { state: 'attached', timeout: WAIT });
  await joinRoom(bob.page, 'lobby');
});

test('v2: a member gets no moderation log; made a moderator he does, and loses it again as a member', async () => {
  await joinRoom(alice.page, 'log-room2');
  await joinRoom(bob.page, 'log-room2');
  await presenceOf(alice.page, bob.user).waitFor({ timeout: WAIT });
  await tid(alice.page, 'modlog-button').waitFor({ timeout: WAIT });
  assert.equal(await tid(bob.page, 'room-role').textContent(), 'member');
  assert.equal(await tid(bob.page, 'modlog-button').isHidden(), true, 'a member gets no moderation log button');
  assert.equal(await tid(bob.page, 'modlog-panel').isHidden(), true);

  await moderateOk(alice.page, bob.user, 'role', { role: 'moderator' });
  await tid(alice.page, 'mod-close').click();
  await bob.page.waitForSelector('[data-testid="room-role"][data-role="moderator"]', { timeout: WAIT });
  await openModLog(bob.page);
  await waitForModLogTop(bob.page, 1, 'role');
  const [role] = await modLogItems(bob.page);
  assert.deepEqual([role.by, role.user, role.detail], [alice.user, bob.user, 'new role: moderator']);

  // a member again: the log closes and its button goes
  await moderateOk(alice.page, bob.user, 'role', { role: 'member' });
  await tid(alice.page, 'mod-close').click();
  await bob.page.waitForSelector('[data-testid="room-role"][data-role="member"]', { timeout: WAIT });
  await tid(bob.page, 'modlog-panel').waitFor({ state: 'hidden', timeout: WAIT });
  await tid(bob.page, 'modlog-button').waitFor({ state: 'hidden', timeout: WAIT });
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

test('v2: the moderation log pages back through history with "Load older"', async () => {
  await joinRoom(alice.page, 'log-room3');       // a new room: alice owns it
  await joinRoom(bob.page, 'log-room3');
  await presenceOf(alice.page, bob.user).waitFor({ timeout: WAIT });
  // the oldest entry, then more topic changes than one page of history holds
  const changes = 110;
  const replies = await requestsAs('alice', 'log-room3', [
    { type: 'mute', user: bob.user, reason: 'the oldest entry', seconds: 60 },
    ...Array.from({ length: changes }, (_, i) => ({ type: 'room_set', topic: 'topic ' + (i + 1) })),
  ]);
  await waitForTopic(alice.page, 'topic ' + changes);
  await openModLog(alice.page);
  // the first load stops after a page that found enough entries; older ones wait for the button
  await tid(alice.page, 'modlog-more').waitFor({ timeout: WAIT });
  let items = await modLogItems(alice.page);
  assert.ok(items.length >= 50 && items.length < changes, `a first batch: ${items.length}`);
  assert.equal(items[0].detail, `set the topic to “topic ${changes}”`);
  assert.ok(items.every((x, i) => i === 0 || x.seq < items[i - 1].seq), 'newest first');
  assert.ok(!items.some((x) => x.action === 'mute'));
  assert.match(await tid(alice.page, 'modlog-summary').textContent(), new RegExp(`^Moderation log of #log-room3 · ${items.length}\\+ entries$`));
  await tid(alice.page, 'modlog-more').click();
  await alice.page.waitForSelector('[data-testid="modlog-panel"][data-state="done"][data-more="false"]', { timeout: WAIT });
  await tid(alice.page, 'modlog-more').waitFor({ state: 'hidden', timeout: WAIT });
  items = await modLogItems(alice.page);
  assert.equal(items.length, changes + 1);
  assert.equal(new Set(items.map((x) => x.seq)).size, items.length, 'each entry once');
  assert.ok(items.every((x, i) => i === 0 || x.seq < items[i - 1].seq), 'newest first');
  const oldest = items[items.length - 1];
  assert.deepEqual([oldest.action, oldest.user, oldest.reason, oldest.seq], ['mute', bob.user, 'the oldest entry', replies[0].seq]);
  assert.match(oldest.untilText, /^for 1 min, until .+$/);
  // the first topic change says what it changed from (the defaults: the log reached the start)
  assert.equal(items[items.length - 2].detail, 'set the topic to “topic 1”');
  await tid(alice.page, 'modlog-close').click();
  await joinRoom(alice.page, 'lobby');
  await joinRoom(bob.page, 'lobby');
});

test('sign in with a token from `chatd token`', async (t) => {
  const out = spawnSync(CHATD, ['--jwt-secret', JWT_SECRET, 'token', '--user', 'carol', '--name', 'Carol', '--ttl', '1h'],
    { encoding: 'utf8', timeout: 10000, env: { ...process.env, CHAT_JWT_SECRET: JWT_SECRET } });
  const token = (out.stdout || '').trim().split('\n').pop() || '';
  if (out.status !== 0 || !/^[\w-]+\.[\w-]+\.[\w-]*$/.test(token)) {
    t.skip(`chatd token not usable here (exit ${out.status}: ${(out.stderr || '').trim().slice(0, 200)})`);
    return;
  }
  const carol = await signIn(await openClient('carol'), { token });
  assert.equal(carol.user, 'carol');
  assert.equal(carol.name, 'Carol');
  await joinRoom(carol.page, 'lobby');
  await alice.page.waitForSelector('[data-testid="presence-item"][data-user="carol"]', { timeout: WAIT });
  await sendMessage(carol.page, 'carol here, signed in with a token');
  await waitForMessage(alice.page, 'carol here, signed in with a token');
  await carol.page.context().close();
  await alice.page.waitForSelector('[data-testid="presence-item"][data-user="carol"]', { state: 'detached', timeout: WAIT });
});

test('screenshots (desktop and narrow)', async () => {
  await sendMessage(bob.page, 'Screenshot time 📸 — Ça va? Привет! مرحبا');
  await waitForMessage(alice.page, 'Screenshot time 📸 — Ça va? Привет! مرحبا');
  const composer = tid(bob.page, 'composer-input');
  await typeUntilIndicator(bob, alice);
  await alice.page.screenshot({ path: path.join(ARTIFACTS, 'chat.png') });
  await composer.fill('');

  const dave = await signIn(await openClient('dave', { width: 390, height: 760 }), { name: 'dave' });
  await dave.page.locator('[data-testid="toggle-rooms"]').click();
  await joinRoom(dave.page, 'lobby');
  await waitForMessage(dave.page, 'Screenshot time 📸 — Ça va? Привет! مرحبا');
  const overflow = await dave.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling in a narrow viewport (overflow ${overflow}px)`);
  await dave.page.screenshot({ path: path.join(ARTIFACTS, 'chat-narrow.png') });
  await dave.page.context().close();
  assert.ok(fs.statSync(path.join(ARTIFACTS, 'chat.png')).size > 0);
});

test('after a dropped connection the page rejoins with since/epoch and gets the missed messages', async () => {
  // frank's socket goes through Playwright, which records frames and can cut the connection
  const ctx = await newContext({ viewport: { width: 1100, height: 720 } });
  const routes = [];
  const toServer = [];
  const fromServer = [];
  await ctx.routeWebSocket(/\/ws$/, (page) => {
    const srv = page.connectToServer();
    const route = { page, srv, cut: false };
    page.onMessage((m) => { toServer.push(String(m)); srv.send(m); });
    srv.onMessage((m) => { fromServer.push(String(m)); if (!route.cut) page.send(m); });
    page.onClose((code, reason) => { if (!route.cut) srv.close({ code, reason }); });
    srv.onClose((code, reason) => { if (!route.cut) page.close({ code, reason }); });
    routes.push(route);
  });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`frank: ${e.message}`));
  await page.goto(baseUrl(), { timeout: WAIT });
  const frank = await signIn(page, { name: 'frank' });
  await joinRoom(frank.page, 'recover');
  await joinRoom(alice.page, 'recover');
  await sendMessage(alice.page, 'before the drop');
  await waitForMessage(frank.page, 'before the drop');

  // several objects in one frame, split on "\n"
  routes.at(-1).page.send(JSON.stringify({ type: 'typing', room: 'recover', user: 'ghost1' }) + '\n' +
                          JSON.stringify({ type: 'typing', room: 'recover', user: 'ghost2' }));
  await frank.page.waitForFunction(() => document.querySelector('[data-testid="typing-indicator"]').textContent === 'ghost1 and ghost2 are typing…',
    null, { timeout: WAIT });

  // the "server" goes away with a hint; the real connection is cut too
  const first = routes.at(-1);
  first.cut = true;
  await first.page.close({ code: 1001, reason: 'retry_ms=1500' });
  await first.srv.close({ code: 1000, reason: 'test cut' });
  await frank.page.waitForSelector('[data-testid="conn-state"][data-state="reconnecting"]', { timeout: WAIT });
  const stateText = await tid(frank.page, 'conn-state').textContent();
  assert.match(stateText, /^reconnecting in \d+ s$/);
  await alice.page.waitForSelector(`[data-testid="presence-item"][data-user="${frank.user}"]`, { state: 'detached', timeout: WAIT });
  for (const t of ['missed one', 'missed two', 'missed three']) await sendMessage(alice.page, t);
  await waitForMessage(alice.page, 'missed three');

  await frank.page.waitForSelector('[data-testid="conn-state"][data-state="online"]', { timeout: LONG_WAIT });
  for (const t of ['missed one', 'missed two', 'missed three']) await waitForMessage(frank.page, t);
  const seqs = await messageSeqs(frank.page);
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => seqs[0] + i), 'contiguous, each once');

  // the rejoin carried since and epoch, and the server recovered
  const objects = (frames) => frames.flatMap((f) => f.split('\n')).filter(Boolean).map((l) => JSON.parse(l));
  const joins = objects(toServer).filter((o) => o.type === 'join' && o.room === 'recover');
  assert.equal(joins.length, 2);
  const firstJoined = objects(fromServer).find((o) => o.type === 'joined' && o.id === joins[0].id);
  assert.equal(joins[1].epoch, firstJoined.epoch);
  assert.equal(joins[1].since, seqs[0]);
  const rejoined = objects(fromServer).find((o) => o.type === 'joined' && o.id === joins[1].id);
  assert.equal(rejoined.recovered, true);
  // the history was not fetched again: recovery delivered the gap
  const histories = objects(toServer).filter((o) => o.type === 'history' && o.room === 'recover');
  assert.equal(histories.length, 1);
  // ids are increasing integers
  const ids = objects(toServer).filter((o) => o.id != null).map((o) => o.id);
  assert.ok(ids.every((id, i) => Number.isInteger(id) && (i === 0 || id > ids[i - 1])), 'increasing integer ids');
  await openRoom(alice.page, 'lobby');
  await ctx.close();
});

test('a refused sign-in (4001) shows why and does not reconnect', async () => {
  const page = await openClient('mallory');
  await page.locator('#token-box summary').click();
  await tid(page, 'token-input').fill('not.a.valid-token');
  await tid(page, 'connect-button').click();
  await page.waitForSelector('[data-testid="login-error"]:not([hidden])', { timeout: WAIT });
  assert.match(await tid(page, 'login-error').textContent(), /refused/i);
  assert.equal(await tid(page, 'conn-state').getAttribute('data-state'), 'offline');
  assert.equal(await tid(page, 'conn-state').getAttribute('data-close-code'), '4001');
  await page.context().close();
});

test('a session replaced by newer connections (4009) says so and stays offline', async () => {
  const erin = await signIn(await openClient('erin'), { name: 'erin' });
  await joinRoom(erin.page, 'lobby');
  // open more connections of the same user from a bare page until the server's per-user cap
  // closes the oldest one: the page's
  const ctx = await browser.newContext();
  contexts.push(ctx);
  const raw = await ctx.newPage();
  await raw.goto(baseUrl() + 'healthz', { timeout: WAIT });  // the server's origin, as above
  let opened = 0;
  while ((await tid(erin.page, 'conn-state').getAttribute('data-state')) !== 'offline') {
    assert.ok(opened < 40, 'the server never closed the oldest of 40 connections of one user');
    await raw.evaluate(async ({ url }) => {
      const ws = new WebSocket(url);
      (window.socks ||= []).push(ws);
      await new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no welcome')), 10000);
        ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', id: 1, name: 'erin' }));
        ws.onmessage = (e) => { if (String(e.data).includes('"welcome"')) { clearTimeout(t); resolve(); } };
        ws.onclose = (e) => { clearTimeout(t); reject(new Error('closed ' + e.code)); };
      });
    }, { url: wsUrl() });
    opened++;
    await erin.page.waitForFunction(() => document.querySelector('[data-testid="conn-state"]').dataset.state === 'offline',
      null, { timeout: 1000 }).catch(() => {});
  }
  console.log(`# the page was replaced after ${opened} more connections`);
  assert.equal(await tid(erin.page, 'conn-state').getAttribute('data-close-code'), '4009');
  await erin.page.waitForSelector('[data-testid="notice"]:not([hidden])', { timeout: WAIT });
  assert.match(await tid(erin.page, 'notice').textContent(), /replaced/);
  assert.match(await tid(erin.page, 'conn-state').textContent(), /offline/);
  await ctx.close();
  await erin.page.context().close();
});

test('the page reconnects after the server restarts', async () => {
  const port = server.port;
  await stopServer('SIGTERM');
  for (const { page } of [alice, bob]) {
    await page.waitForSelector('[data-testid="conn-state"][data-state="reconnecting"]', { timeout: WAIT });
  }
  const closeCode = Number(await tid(alice.page, 'conn-state').getAttribute('data-close-code'));
  const closeReason = await tid(alice.page, 'conn-state').getAttribute('data-close-reason');
  console.log(`# the page saw close ${closeCode} "${closeReason}"; state text: ${await tid(alice.page, 'conn-state').textContent()}`);
  await startServer(port);
  assert.equal(server.port, port, 'restarted on the same port');
  for (const { page } of [alice, bob]) {
    await page.waitForSelector('[data-testid="conn-state"][data-state="online"]', { timeout: LONG_WAIT });
    await page.waitForSelector('[data-testid="room-item"][data-room="lobby"][data-joined="true"].active', { timeout: WAIT });
  }
  // the memory store lost everything: the room starts again at seq 1 under a new epoch,
  // and the client must not drop those messages as duplicates of the old seqs
  await sendMessage(alice.page, 'back after the restart');
  await waitForMessage(bob.page, 'back after the restart');
  await sendMessage(bob.page, 'me too');
  await waitForMessage(alice.page, 'me too');
  for (const { page } of [alice, bob]) {
    const seqs = await messageSeqs(page);
    assert.equal(new Set(seqs).size, seqs.length, 'no duplicate seqs after recovery');
  }
  assert.ok([1001, 1012].includes(closeCode), `server going away closes with 1001 or 1012, got ${closeCode}`);
  assert.match(closeReason || '', /retry_ms=\d+/, 'close reason carries retry_ms');
});

test('no script errors in the pages', () => {
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(dialogs, []);
});
