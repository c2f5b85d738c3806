// Web client for the chat server (protocol: docs / shared PROTOCOL.md, version 1).
// Plain JS, no build step. All user-provided text goes through textContent / createElement:
// never innerHTML.
'use strict';
(() => {
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 30000;
  const PING_EVERY_MS = 20000;
  const DEAD_AFTER_MS = 50000; // nothing received for this long: the socket is dead
  const TYPING_SEND_EVERY_MS = 2000;
  const TYPING_SHOW_MS = 3000;
  const PAGE_SIZE = 50;
  const REQUEST_TIMEOUT_MS = 15000;
  const MAX_TEXT_CODEPOINTS = 4096;
  const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
  // Close codes after which reconnecting cannot help: say why instead.
  const FINAL_CLOSES = {
    4001: 'Sign-in refused',
    4002: 'Your token expired: sign in again',
    4003: 'You were removed from the server',
    4009: 'This session was replaced by a newer connection',
  };

  // ---------------------------------------------------------------- DOM helpers
  const byId = (id) => document.getElementById(id);
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === 'text') e.textContent = String(v);
        else if (k === 'class') e.className = v;
        else if (k === 'hidden') e.hidden = !!v;
        else e.setAttribute(k, String(v));
      }
    }
    for (const c of children) if (c != null) e.append(c); // strings become text nodes
    return e;
  }
  const ui = {
    login: byId('login'), loginForm: byId('login-form'), nameInput: byId('name-input'),
    tokenInput: byId('token-input'), tokenBox: byId('token-box'), connectButton: byId('connect-button'),
    loginError: byId('login-error'), app: byId('app'), roomTitle: byId('room-title'),
    conn: byId('conn-state'), me: byId('me'), logout: byId('logout-button'),
    toggleRooms: byId('toggle-rooms'), togglePeople: byId('toggle-people'),
    joinForm: byId('join-form'), roomInput: byId('room-input'), roomList: byId('room-list'),
    dmList: byId('dm-list'), notice: byId('notice'), noticeText: byId('notice-text'),
    noticeReconnect: byId('notice-reconnect'), scroller: byId('message-list'),
    historyMarker: byId('history-marker'), messages: byId('messages'), pending: byId('pending'),
    typing: byId('typing'), composer: byId('composer'), composerInput: byId('composer-input'),
    sendButton: byId('send-button'), peopleTitle: byId('people-title'),
    presence: byId('presence-list'), toast: byId('toast'),
  };

  // ---------------------------------------------------------------- state
  const S = {
    creds: null,          // {name} or {token}
    me: null,             // user id from welcome
    myName: null,
    ws: null,
    gen: 0,               // bumps on every connect/close; stale async work checks it
    state: 'offline',
    everOnline: false,
    attempt: 0,
    retryAt: 0,
    retryTimer: null,
    tickTimer: null,
    pingTimer: null,
    lastRx: 0,
    onlineSince: 0,
    helloError: null,
    loggingOut: false,
    nextId: 1,
    pending: new Map(),   // request id -> {resolve, reject, sync, timer, quiet}
    rooms: new Map(),     // name -> room
    active: null,
    names: new Map(),     // user id -> display name
    outbox: [],           // messages not yet acked
    els: new Map(),       // seq -> <li> for the active room
    renderedRoom: null,   // the room whose messages are in the DOM
    final: false,         // closed for good (4001/4002/4003/4009): no automatic reconnect
    keyPrefix: randomHex(8),
    keyCounter: 0,
  };

  function randomHex(bytes) {
    const a = new Uint8Array(bytes);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // ---------------------------------------------------------------- storage (best effort)
  const store = {
    get(k) { try { return JSON.parse(localStorage.getItem('chat.' + k)); } catch { return null; } },
    set(k, v) { try { localStorage.setItem('chat.' + k, JSON.stringify(v)); } catch { /* ignore */ } },
  };
  function saveRooms() {
    if (!S.me) return;
    store.set('rooms.' + S.me, { rooms: [...S.rooms.keys()], active: S.active ? S.active.name : null });
  }

  // ---------------------------------------------------------------- rooms
  const isDmName = (name) => name.startsWith('dm:');
  function utf8Compare(a, b) {
    const enc = new TextEncoder();
    const x = enc.encode(a), y = enc.encode(b);
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  }
  function dmRoomName(a, b) {
    return 'dm:' + (utf8Compare(a, b) <= 0 ? a + ':' + b : b + ':' + a);
  }
  function dmPeer(name) {
    const rest = name.slice(3);
    if (S.me != null) {
      if (rest === S.me + ':' + S.me) return S.me;
      if (rest.startsWith(S.me + ':')) return rest.slice(S.me.length + 1);
      if (rest.endsWith(':' + S.me)) return rest.slice(0, rest.length - S.me.length - 1);
    }
    return rest.split(':')[1] || rest;
  }
  function roomLabel(r) {
    if (!r.dm) return '#' + r.name;
    return '@' + (S.names.get(r.peer) || r.peer);
  }
  function addRoom(name) {
    let r = S.rooms.get(name);
    if (r) return r;
    r = {
      name, dm: isDmName(name), peer: null,
      msgs: [], seqs: new Set(), seq: 0, epoch: null, more: true, loaded: false,
      loadingOlder: false, joined: false, joining: false, joinable: true,
      unread: 0, members: new Map(), memberCount: 0, typing: new Map(),
      lastTypingSent: 0, noTyping: false,
    };
    if (r.dm) r.peer = dmPeer(name);
    S.rooms.set(name, r);
    renderRoomList();
    saveRooms();
    return r;
  }
  function removeRoom(r) {
    S.rooms.delete(r.name);
    S.outbox = S.outbox.filter((m) => m.room !== r.name);
    if (S.active === r) {
      const next = S.rooms.values().next().value || null;
      setActive(next);
    }
    renderRoomList();
    saveRooms();
  }
  function clearMessages(r) {
    r.msgs = [];
    r.seqs = new Set();
    r.seq = 0;
    r.more = true;
    if (S.active === r) renderMessages();
  }

  // ---------------------------------------------------------------- connection
  function wsUrl() {
    const override = new URLSearchParams(location.search).get('ws');
    if (override) return override;
    const u = new URL('ws', location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    u.search = '';
    u.hash = '';
    return u.href;
  }

  function connect() {
    clearTimeout(S.retryTimer);
    S.retryTimer = null;
    if (S.ws || !S.creds) return;
    S.final = false;
    const gen = ++S.gen;
    setState(S.everOnline ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      S.ws = null;
      onClosed(1006, String(e && e.message));
      return;
    }
    S.ws = ws;
    ws.onopen = () => { if (gen === S.gen) { S.lastRx = Date.now(); hello(gen); } };
    ws.onmessage = (ev) => { if (gen === S.gen) { S.lastRx = Date.now(); onFrame(ev.data); } };
    ws.onclose = (ev) => { if (gen === S.gen) onClosed(ev.code, ev.reason); };
    ws.onerror = () => { /* a close event follows */ };
  }

  // Give up on the current socket without waiting for a close handshake (dead network).
  function dropSocket(code, reason) {
    const ws = S.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(1000, reason.slice(0, 100)); } catch { /* ignore */ }
    onClosed(code, reason);
  }

  function send(obj) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    S.ws.send(JSON.stringify(obj));
    return true;
  }

  class RequestError extends Error {
    constructor(code, message, reply) { super(message || code); this.code = code; this.reply = reply; }
  }

  // Send a request with a fresh integer id; the reply with the same id settles the promise.
  // `sync` runs synchronously when the reply is dispatched (before later objects of the same frame).
  // `quiet`: the request has no reply on success (typing): resolve with null on timeout.
  function request(obj, { sync, quiet, timeout = REQUEST_TIMEOUT_MS } = {}) {
    return new Promise((resolve, reject) => {
      const id = S.nextId++;
      const msg = Object.assign({}, obj, { id });
      if (!send(msg)) { reject(new RequestError('disconnected', 'not connected')); return; }
      const timer = setTimeout(() => {
        S.pending.delete(id);
        if (quiet) resolve(null); else reject(new RequestError('timeout', 'no reply from server'));
      }, timeout);
      S.pending.set(id, { resolve, reject, sync, timer });
    });
  }

  async function hello(gen) {
    const msg = { type: 'hello' };
    if (S.creds.token) msg.token = S.creds.token; else msg.name = S.creds.name;
    let w;
    try {
      w = await request(msg);
    } catch (e) {
      if (gen !== S.gen) return;
      S.helloError = e.message || e.code;
      if (e.code === 'timeout') dropSocket(1006, 'no welcome from server'); // try again later
      return; // a refused hello: the server closes with 4001 and onClosed says why
    }
    if (gen !== S.gen) return;
    if (S.me != null && String(w.user) !== S.me) resetSession(); // a different user: start over
    S.me = String(w.user);
    S.myName = w.name || S.me;
    S.names.set(S.me, S.myName);
    S.helloError = null;
    S.onlineSince = Date.now();
    const first = !S.everOnline;
    S.everOnline = true;
    ui.me.textContent = S.myName;
    ui.me.setAttribute('data-user', S.me);
    ui.me.title = 'Signed in as ' + S.myName + ' (' + S.me + ')';
    setState('online');
    hideNotice();
    showApp();
    startPing(gen);
    if (first && S.rooms.size === 0) {
      const saved = store.get('rooms.' + S.me);
      const names = saved && Array.isArray(saved.rooms) && saved.rooms.length ? saved.rooms : ['general'];
      for (const n of names) if (typeof n === 'string' && ROOM_RE.test(n)) addRoom(n);
      const act = saved && saved.active && S.rooms.get(saved.active);
      setActive(act || S.rooms.values().next().value || null);
    }
    for (const r of S.rooms.values()) joinRoom(r, gen, true);
    for (const m of S.outbox) if (m.status === 'queued') trySend(m);
    renderAll();
  }

  function onClosed(code, reason) {
    S.ws = null;
    S.gen++;
    stopPing();
    for (const p of S.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new RequestError('disconnected', 'connection closed'));
    }
    S.pending.clear();
    for (const r of S.rooms.values()) {
      r.joined = false;
      r.joining = false;
      r.loadingOlder = false;
      r.typing.clear();
    }
    for (const m of S.outbox) if (m.status === 'sending') m.status = 'queued';
    ui.conn.setAttribute('data-close-code', String(code));
    ui.conn.setAttribute('data-close-reason', reason || '');
    renderAll();
    if (S.loggingOut || !S.creds) return;

    if (FINAL_CLOSES[code]) {
      let why = FINAL_CLOSES[code];
      if (code === 4001 && S.helloError) why += ': ' + S.helloError;
      else if (reason) why += ' (' + reason + ')';
      S.final = true;
      setState('offline', why);
      if (!S.everOnline) {
        showLogin(why);
      } else {
        showNotice(why);
      }
      return;
    }
    // Reconnect: full jitter exponential backoff, or the server's hint.
    if (S.onlineSince && Date.now() - S.onlineSince > 10000) S.attempt = 0;
    S.onlineSince = 0;
    const hint = /retry_ms=(\d+)/.exec(reason || '');
    let delay;
    if (hint) {
      const n = Math.min(Number(hint[1]), 10 * 60 * 1000);
      delay = n + Math.random() * Math.min(n, BACKOFF_CAP_MS) / 2; // spread the herd after the hint
    } else {
      delay = Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** S.attempt);
    }
    S.attempt = Math.min(S.attempt + 1, 16);
    scheduleReconnect(delay);
  }

  function scheduleReconnect(delay) {
    clearTimeout(S.retryTimer);
    S.retryAt = Date.now() + delay;
    S.retryTimer = setTimeout(() => {
      if (!navigator.onLine) { setState('offline', 'waiting for the network'); return; }
      connect();
    }, delay);
    setState('reconnecting');
  }

  function startPing(gen) {
    stopPing();
    S.pingTimer = setInterval(() => {
      if (gen !== S.gen) return;
      if (Date.now() - S.lastRx > DEAD_AFTER_MS) { dropSocket(1006, 'no answer from server'); return; }
      send({ type: 'ping' });
    }, PING_EVERY_MS);
  }
  function stopPing() { clearInterval(S.pingTimer); S.pingTimer = null; }

  function setState(state, detail) {
    S.state = state;
    clearInterval(S.tickTimer);
    S.tickTimer = null;
    const render = () => {
      let text = state;
      if (state === 'connecting') text = 'connecting…';
      else if (state === 'reconnecting') {
        if (S.retryTimer) {
          const s = Math.max(1, Math.ceil((S.retryAt - Date.now()) / 1000));
          text = 'reconnecting in ' + s + ' s';
        } else text = 'reconnecting…';
      } else if (state === 'offline' && detail) text = 'offline: ' + detail;
      ui.conn.textContent = text;
    };
    ui.conn.setAttribute('data-state', state);
    ui.conn.title = state === 'reconnecting' ? 'Click to reconnect now' : 'Connection state';
    render();
    if (state === 'reconnecting' && S.retryTimer) S.tickTimer = setInterval(render, 250);
    ui.app.classList.toggle('is-offline', state !== 'online');
    renderPending();
  }

  // ---------------------------------------------------------------- incoming
  function onFrame(data) {
    if (typeof data !== 'string') return;
    for (const line of data.split('\n')) {
      if (!line.trim()) continue;
      let m;
      try { m = JSON.parse(line); } catch { console.warn('chat: unparsable object from server', line); continue; }
      if (!m || typeof m !== 'object') continue;
      try { dispatch(m); } catch (e) { console.error('chat: handler failed', e, m); }
    }
  }

  function dispatch(m) {
    const key = m.id == null ? null : S.pending.has(m.id) ? m.id : Number(m.id);
    if (key != null && S.pending.has(key)) {
      const p = S.pending.get(key);
      S.pending.delete(key);
      clearTimeout(p.timer);
      if (m.type === 'error') { p.reject(new RequestError(m.code || 'error', m.message, m)); return; }
      if (p.sync) { try { p.sync(m); } catch (e) { console.error(e); } }
      p.resolve(m);
      return;
    }
    switch (m.type) {
      case 'message': onMessage(m, true); break;
      case 'member_joined': memberJoined(m.room, m.user, m.name); break;
      case 'member_left': memberLeft(m.room, m.user); break;
      case 'presence_diff': {
        for (const j of m.joins || []) {
          if (typeof j === 'string') memberJoined(m.room, j, null); else if (j) memberJoined(m.room, j.user, j.name);
        }
        for (const l of m.leaves || []) memberLeft(m.room, typeof l === 'string' ? l : l && l.user);
        // A truncated diff (a crowd joined at once) names only some: trust the count.
        const r = S.rooms.get(m.room);
        if (r && typeof m.member_count === 'number') {
          r.memberCount = Math.max(m.member_count, 0);
          if (r === S.active) renderPresence();
        }
        break;
      }
      case 'presence': {
        const r = S.rooms.get(m.room);
        if (r && Array.isArray(m.members)) { setMembers(r, m.members, m.member_count); renderPresence(); }
        break;
      }
      case 'typing': onTyping(m); break;
      case 'pong': break;
      case 'error':
        if (m.code === 'token_expired' || S.state !== 'online') S.helloError = m.message || m.code;
        toast((m.code ? m.code + ': ' : '') + (m.message || 'error'));
        break;
      default: break; // welcome etc. without a pending request, or newer types: ignore
    }
  }

  function onMessage(m, live) {
    if (typeof m.room !== 'string' || typeof m.seq !== 'number') return;
    let r = S.rooms.get(m.room);
    if (!r) {
      if (!isDmName(m.room)) return; // a room we left
      r = addRoom(m.room);           // an incoming DM opens its room
      if (S.state === 'online') joinRoom(r, S.gen, false);
    }
    if (m.from != null && m.name) S.names.set(String(m.from), String(m.name));
    if (!insertMessages(r, [m])) return;
    if (!live) return;
    if (m.from != null && r.typing.delete(String(m.from)) && r === S.active) renderTyping();
    if (String(m.from) !== S.me && (r !== S.active || document.hidden)) {
      r.unread++;
      renderRoomList();
      updateTitle();
    }
  }

  function normMsg(m) {
    return {
      seq: m.seq, ts: typeof m.ts === 'number' ? m.ts : null,
      from: m.from != null ? String(m.from) : '', name: m.name != null ? String(m.name) : '',
      text: typeof m.text === 'string' ? m.text : '', data: m.data,
    };
  }

  // Merge messages into a room, deduplicated by seq; renders into the active room.
  // Returns how many were new.
  function insertMessages(r, list) {
    const fresh = [];
    for (const m of list) {
      if (!m || typeof m.seq !== 'number' || r.seqs.has(m.seq)) continue;
      r.seqs.add(m.seq);
      fresh.push(normMsg(m));
      if (m.seq > r.seq) r.seq = m.seq;
      if (m.from != null && m.name && !S.names.has(String(m.from))) S.names.set(String(m.from), String(m.name));
    }
    if (!fresh.length) return 0;
    const last = r.msgs.length ? r.msgs[r.msgs.length - 1].seq : -Infinity;
    fresh.sort((a, b) => a.seq - b.seq);
    const appendOnly = fresh[0].seq > last;
    r.msgs = appendOnly ? r.msgs.concat(fresh) : r.msgs.concat(fresh).sort((a, b) => a.seq - b.seq);
    // pending copies of our own messages disappear once the stored message is here
    let pendingChanged = false;
    S.outbox = S.outbox.filter((o) => {
      if (o.ackRoom === r.name && r.seqs.has(o.ackSeq)) { pendingChanged = true; return false; }
      return true;
    });
    if (r === S.active) {
      const sc = ui.scroller;
      const atBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < 48;
      const fromBottom = sc.scrollHeight - sc.scrollTop;
      if (appendOnly) {
        const frag = document.createDocumentFragment();
        for (const m of fresh) frag.append(messageEl(r, m));
        ui.messages.append(frag);
        if (atBottom || fresh.some((m) => m.from === S.me)) sc.scrollTop = sc.scrollHeight;
      } else {
        let next = null; // walk backwards inserting the missing elements before their successor
        for (let i = r.msgs.length - 1; i >= 0; i--) {
          const m = r.msgs[i];
          let e = S.els.get(m.seq);
          if (!e) { e = messageEl(r, m); ui.messages.insertBefore(e, next); }
          next = e;
        }
        sc.scrollTop = atBottom ? sc.scrollHeight : sc.scrollHeight - fromBottom;
      }
      if (pendingChanged) renderPending();
    }
    return fresh.length;
  }

  function setMembers(r, members, count) {
    r.members = new Map();
    for (const u of members || []) {
      if (!u) continue;
      const id = typeof u === 'string' ? u : u.user;
      if (id == null) continue;
      const name = typeof u === 'string' ? u : (u.name || u.user);
      r.members.set(String(id), String(name));
      S.names.set(String(id), String(name));
    }
    r.memberCount = Math.max(typeof count === 'number' ? count : 0, r.members.size);
  }
  function memberJoined(room, user, name) {
    const r = S.rooms.get(room);
    if (!r || user == null) return;
    user = String(user);
    if (!r.members.has(user)) r.memberCount = Math.max(r.memberCount + 1, r.members.size + 1);
    r.members.set(user, String(name || S.names.get(user) || user));
    if (name) S.names.set(user, String(name));
    if (r === S.active) renderPresence();
  }
  function memberLeft(room, user) {
    const r = S.rooms.get(room);
    if (!r || user == null) return;
    user = String(user);
    if (r.members.delete(user)) r.memberCount = Math.max(r.memberCount - 1, r.members.size);
    r.typing.delete(user);
    if (r === S.active) { renderPresence(); renderTyping(); }
  }

  function onTyping(m) {
    const r = S.rooms.get(m.room);
    if (!r || m.user == null || String(m.user) === S.me) return;
    r.typing.set(String(m.user), Date.now() + TYPING_SHOW_MS);
    if (r === S.active) renderTyping();
    setTimeout(() => { if (r === S.active) renderTyping(); }, TYPING_SHOW_MS + 50);
  }

  // ---------------------------------------------------------------- requests
  async function joinRoom(r, gen, recover) {
    if (r.joining || r.joined || gen !== S.gen) return;
    r.joining = true;
    const req = { type: 'join', room: r.name };
    if (recover && r.epoch != null && r.seq > 0) { req.since = r.seq; req.epoch = r.epoch; }
    let recovered = false;
    let reset = false;
    try {
      await request(req, {
        sync: (res) => {
          // runs before any later object of the same frame: reset the room before new-epoch messages land
          reset = (r.epoch != null && res.epoch != null && res.epoch !== r.epoch) ||
                  (typeof res.seq === 'number' && res.seq < r.seq) ||
                  (req.since != null && res.recovered === false);
          recovered = req.since != null && res.recovered === true && !reset;
          if (reset) clearMessages(r);
          r.epoch = res.epoch != null ? res.epoch : r.epoch;
          r.joined = true;
          setMembers(r, res.members, res.member_count);
        },
      });
    } catch (e) {
      r.joining = false;
      if (gen !== S.gen || e.code === 'disconnected') return;
      if (r.dm) { // DMs arrive without a join; history still works
        r.joinable = false;
        await loadLatest(r, gen);
        return;
      }
      toast('Could not join ' + r.name + ': ' + (e.message || e.code));
      if (!r.msgs.length) removeRoom(r);
      return;
    }
    r.joining = false;
    if (gen !== S.gen) return;
    if (r === S.active) renderPresence();
    renderRoomList();
    if (!recovered) await loadLatest(r, gen);
  }

  async function loadLatest(r, gen) {
    try {
      const res = await request({ type: 'history', room: r.name, limit: PAGE_SIZE });
      if (gen !== S.gen) return;
      const got = Array.isArray(res.messages) ? res.messages : [];
      // No epoch without a join: history that ends before what we saw means it was reset.
      const top = got.reduce((a, m) => Math.max(a, typeof m.seq === 'number' ? m.seq : 0), 0);
      if (!r.joined && r.seq > 0 && top < r.seq) clearMessages(r);
      insertMessages(r, got);
      applyMore(r, res);
    } catch (e) {
      if (e.code === 'disconnected' || gen !== S.gen) return;
      if (!r.dm) toast('History of ' + r.name + ': ' + (e.message || e.code));
      r.more = false;
    }
    r.loaded = true;
    if (r === S.active) { renderHistoryMarker(); fillViewport(r); }
  }

  function applyMore(r, res) {
    const got = Array.isArray(res.messages) ? res.messages.length : 0;
    const oldest = r.msgs.length ? r.msgs[0].seq : 0;
    r.more = !!res.more && got > 0 && oldest > 1;
  }

  async function loadOlder(r) {
    if (!r || r.loadingOlder || !r.more || S.state !== 'online' || !r.loaded) return;
    if (!r.msgs.length) return;
    r.loadingOlder = true;
    if (r === S.active) renderHistoryMarker();
    const gen = S.gen;
    try {
      const res = await request({ type: 'history', room: r.name, before: r.msgs[0].seq, limit: PAGE_SIZE });
      if (gen !== S.gen) return;
      insertMessages(r, res.messages || []);
      applyMore(r, res);
    } catch (e) {
      if (e.code !== 'disconnected') toast('Could not load older messages: ' + (e.message || e.code));
    } finally {
      r.loadingOlder = false;
      if (r === S.active) renderHistoryMarker();
    }
    if (r === S.active) fillViewport(r);
  }

  // Keep loading while the list does not fill the view (no scrollbar means no scroll event).
  function fillViewport(r) {
    const sc = ui.scroller;
    if (r === S.active && r.more && !r.loadingOlder && sc.scrollHeight <= sc.clientHeight + 8) loadOlder(r);
  }

  function newKey() { return S.keyPrefix + '-' + (++S.keyCounter); }

  function submitMessage() {
    const r = S.active;
    const text = ui.composerInput.value;
    if (!r || !text.trim()) return;
    if ([...text].length > MAX_TEXT_CODEPOINTS) { toast('Message too long (at most 4096 characters)'); return; }
    const item = { key: newKey(), room: r.name, to: r.dm ? r.peer : null, text, status: 'queued', error: null };
    S.outbox.push(item);
    ui.composerInput.value = '';
    autosize();
    renderPending();
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
    trySend(item);
  }

  function trySend(item) {
    if (S.state !== 'online' || item.status !== 'queued') return;
    item.status = 'sending';
    const msg = item.to != null
      ? { type: 'dm', to: item.to, text: item.text, idempotency_key: item.key }
      : { type: 'send', room: item.room, text: item.text, idempotency_key: item.key };
    request(msg).then((ack) => {
      item.status = 'acked';
      item.ackRoom = ack.room || item.room;
      item.ackSeq = ack.seq;
      const r = S.rooms.get(item.ackRoom);
      if (!r || r.seqs.has(ack.seq) || typeof ack.seq !== 'number') {
        S.outbox = S.outbox.filter((o) => o !== item);
      } else {
        // the message event normally follows at once; do not keep a ghost if it never does
        setTimeout(() => {
          if (S.outbox.includes(item)) { S.outbox = S.outbox.filter((o) => o !== item); renderPending(); }
        }, 5000);
      }
      renderPending();
    }, (e) => {
      if (e.code === 'disconnected') { item.status = 'queued'; }
      else if (e.code === 'rate_limited' || e.code === 'timeout' || e.code === 'unavailable') {
        item.status = 'queued';
        setTimeout(() => trySend(item), e.code === 'rate_limited' ? 1000 : 2000);
      } else { item.status = 'failed'; item.error = e.message || e.code; }
      renderPending();
    });
  }

  function sendTyping() {
    const r = S.active;
    if (!r || S.state !== 'online' || r.noTyping || !ui.composerInput.value.trim()) return;
    const now = Date.now();
    if (now - r.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    r.lastTypingSent = now;
    request({ type: 'typing', room: r.name }, { quiet: true, timeout: 10000 })
      .catch((e) => { if (e.code !== 'disconnected') r.noTyping = true; });
  }

  function joinByName(raw) {
    const name = raw.trim().replace(/^#/, '');
    if (!ROOM_RE.test(name)) { toast('Room names: 1–64 of A–Z a–z 0–9 _ - . :'); return false; }
    if (isDmName(name)) { toast('Names starting with dm: are for direct messages'); return false; }
    const r = addRoom(name);
    setActive(r);
    if (S.state === 'online') joinRoom(r, S.gen, false);
    return true;
  }

  function leaveRoom(r) {
    if (!r.dm && (r.joined || r.joining) && S.state === 'online') request({ type: 'leave', room: r.name }).catch(() => {});
    removeRoom(r);
  }

  function openDm(user) {
    if (!S.me) return;
    const r = addRoom(dmRoomName(S.me, user));
    r.peer = user;
    setActive(r);
    if (S.state === 'online' && !r.joined && !r.joining && !r.loaded) joinRoom(r, S.gen, false);
    closeDrawers();
  }

  // ---------------------------------------------------------------- rendering
  function setActive(r) {
    S.active = r;
    if (r) r.unread = 0;
    renderAll();
    saveRooms();
    if (r && r.loaded) fillViewport(r);
  }

  function renderAll() {
    renderRoomList();
    renderHeader();
    if (S.renderedRoom !== S.active) renderMessages(); else { renderPending(); renderHistoryMarker(); }
    renderPresence();
    renderTyping();
    updateTitle();
  }

  function renderHeader() {
    const r = S.active;
    ui.roomTitle.textContent = r ? roomLabel(r) : 'No room';
    ui.composerInput.disabled = !r;
    ui.sendButton.disabled = !r;
    ui.composerInput.placeholder = r ? 'Message ' + roomLabel(r) : 'Join a room to chat';
  }

  function renderRoomList() {
    const rooms = [], dms = [];
    for (const r of S.rooms.values()) (r.dm ? dms : rooms).push(r);
    const item = (r) => {
      const badge = h('span', { class: 'badge', 'data-testid': 'unread-badge', hidden: r.unread === 0,
        'aria-label': r.unread + ' unread', text: r.unread > 99 ? '99+' : String(r.unread) });
      const close = h('button', { class: 'leave', type: 'button', 'data-testid': 'leave-button',
        title: r.dm ? 'Close' : 'Leave ' + r.name, 'aria-label': 'Leave', text: '×' });
      close.addEventListener('click', (ev) => { ev.stopPropagation(); leaveRoom(r); });
      const li = h('li', { class: 'room-item' + (r === S.active ? ' active' : '') + (r.unread ? ' has-unread' : ''),
        'data-testid': 'room-item', 'data-room': r.name, 'data-unread': r.unread,
        'data-joined': r.joined ? 'true' : 'false', tabindex: 0, role: 'button',
        'aria-current': r === S.active ? 'true' : null },
      h('span', { class: 'room-name', dir: 'auto', text: roomLabel(r) }), badge, close);
      li.addEventListener('click', () => { setActive(r); closeDrawers(); });
      li.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); setActive(r); closeDrawers(); } });
      return li;
    };
    ui.roomList.replaceChildren(...rooms.map(item));
    ui.dmList.replaceChildren(...dms.map(item));
    if (!dms.length) ui.dmList.append(h('li', { class: 'empty', text: 'Pick someone under People' }));
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dateTimeFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  function fmtTime(ts) {
    if (ts == null) return '';
    const d = new Date(ts);
    if (isNaN(d)) return '';
    return new Date().toDateString() === d.toDateString() ? timeFmt.format(d) : dateTimeFmt.format(d);
  }

  function hue(s) { let x = 0; for (const c of s) x = (x * 31 + c.codePointAt(0)) >>> 0; return x % 360; }
  function initial(s) { const c = [...(s || '?').trim()][0] || '?'; return c.toUpperCase(); }

  function messageEl(r, m) {
    const display = m.name || S.names.get(m.from) || m.from || '?';
    const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true', text: initial(display) });
    avatar.style.backgroundColor = 'hsl(' + hue(m.from || display) + ' 55% 45%)';
    const time = h('time', { class: 'time', 'data-testid': 'message-time', text: fmtTime(m.ts),
      datetime: m.ts != null ? new Date(m.ts).toISOString() : null,
      title: m.ts != null ? new Date(m.ts).toLocaleString() : null });
    const li = h('li', { class: 'msg' + (m.from === S.me ? ' mine' : ''), 'data-testid': 'message',
      'data-seq': m.seq, 'data-room': r.name, 'data-from': m.from },
    avatar,
    h('div', { class: 'body' },
      h('div', { class: 'meta' }, h('span', { class: 'author', 'data-testid': 'message-author', dir: 'auto', text: display }), time),
      h('div', { class: 'text', 'data-testid': 'message-text', dir: 'auto', text: m.text })));
    S.els.set(m.seq, li);
    return li;
  }

  function renderMessages() {
    const r = S.active;
    S.renderedRoom = r;
    S.els = new Map();
    const frag = document.createDocumentFragment();
    if (r) for (const m of r.msgs) frag.append(messageEl(r, m));
    ui.messages.replaceChildren(frag);
    renderPending();
    renderHistoryMarker();
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
  }

  function renderHistoryMarker() {
    const r = S.active;
    let text = '', state = 'none';
    if (r) {
      if (r.loadingOlder || (!r.loaded && S.state === 'online')) { text = 'Loading…'; state = 'loading'; }
      else if (r.loaded && !r.more) { text = r.msgs.length ? 'Beginning of ' + roomLabel(r) : 'No messages yet. Say hi!'; state = 'start'; }
      else if (r.more) { text = 'Scroll up for older messages'; state = 'more'; }
    }
    ui.historyMarker.textContent = text;
    ui.historyMarker.setAttribute('data-state', state);
  }

  function renderPending() {
    const r = S.active;
    const items = S.outbox.filter((o) => r && o.room === r.name && o.status !== 'acked');
    ui.pending.replaceChildren(...items.map((o) => {
      const status = o.status === 'failed' ? 'not sent: ' + o.error : (S.state === 'online' ? 'sending…' : 'waiting for connection…');
      const li = h('li', { class: 'msg mine pending' + (o.status === 'failed' ? ' failed' : ''), 'data-testid': 'pending-message' },
        h('span', { class: 'avatar', 'aria-hidden': 'true', text: initial(S.myName) }),
        h('div', { class: 'body' },
          h('div', { class: 'meta' }, h('span', { class: 'author', text: S.myName || '' }), h('span', { class: 'time', text: status })),
          h('div', { class: 'text', dir: 'auto', text: o.text })));
      if (o.status === 'failed') {
        const retry = h('button', { type: 'button', class: 'link', text: 'Retry' });
        retry.addEventListener('click', () => { o.status = 'queued'; o.error = null; renderPending(); trySend(o); });
        const drop = h('button', { type: 'button', class: 'link', text: 'Discard' });
        drop.addEventListener('click', () => { S.outbox = S.outbox.filter((x) => x !== o); renderPending(); });
        li.querySelector('.body').append(h('div', { class: 'actions' }, retry, drop));
      }
      return li;
    }));
  }

  function renderPresence() {
    const r = S.active;
    const list = [];
    if (r && r.dm) {
      ui.peopleTitle.textContent = 'Direct message';
      list.push([r.peer, S.names.get(r.peer) || r.peer]);
      if (r.peer !== S.me) list.push([S.me, S.myName]);
    } else if (r) {
      ui.peopleTitle.textContent = 'In #' + r.name + ' · ' + Math.max(r.memberCount, r.members.size);
      list.push(...r.members.entries());
      list.sort((a, b) => (a[0] === S.me ? -1 : b[0] === S.me ? 1 : a[1].localeCompare(b[1])));
    } else {
      ui.peopleTitle.textContent = 'People';
    }
    ui.presence.replaceChildren(...list.map(([user, name]) => {
      const li = h('li', { class: 'person', 'data-testid': 'presence-item', 'data-user': user },
        h('span', { class: 'dot', 'aria-hidden': 'true' }),
        h('span', { class: 'pname', dir: 'auto', text: name }),
        user === S.me ? h('span', { class: 'you', text: '(you)' }) : null);
      if (user !== S.me && !(r && r.dm)) {
        const b = h('button', { type: 'button', class: 'dm', 'data-testid': 'dm-button', title: 'Message ' + name, text: 'Message' });
        b.addEventListener('click', () => openDm(user));
        li.append(b);
      }
      return li;
    }));
    if (r && !r.dm && r.memberCount > r.members.size) {
      ui.presence.append(h('li', { class: 'empty', text: '…and ' + (r.memberCount - r.members.size) + ' more' }));
    }
  }

  function renderTyping() {
    const r = S.active;
    const now = Date.now();
    const names = [];
    if (r) {
      for (const [u, until] of r.typing) {
        if (until <= now) r.typing.delete(u);
        else names.push(S.names.get(u) || (r.members.get(u)) || u);
      }
    }
    let text = '';
    if (names.length === 1) text = names[0] + ' is typing…';
    else if (names.length === 2) text = names[0] + ' and ' + names[1] + ' are typing…';
    else if (names.length > 2) text = names.length + ' people are typing…';
    ui.typing.textContent = text;
    ui.typing.setAttribute('data-active', names.length ? 'true' : 'false');
  }

  function updateTitle() {
    let n = 0;
    for (const r of S.rooms.values()) n += r.unread;
    document.title = n ? '(' + n + ') Chat' : 'Chat';
  }

  let toastTimer = null;
  function toast(text) {
    ui.toast.textContent = text;
    ui.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { ui.toast.hidden = true; }, 5000);
  }
  function showNotice(text) { ui.noticeText.textContent = text; ui.notice.hidden = false; }
  function hideNotice() { ui.notice.hidden = true; }

  function showApp() { ui.login.hidden = true; ui.app.hidden = false; }
  function showLogin(error) {
    ui.app.hidden = true;
    ui.login.hidden = false;
    ui.connectButton.disabled = false;
    ui.connectButton.textContent = 'Connect';
    ui.loginError.textContent = error || '';
    ui.loginError.hidden = !error;
  }
  function closeDrawers() { ui.app.classList.remove('show-rooms', 'show-people'); }

  function autosize() {
    const t = ui.composerInput;
    t.style.height = 'auto';
    t.style.height = Math.min(t.scrollHeight, 160) + 'px';
  }

  function resetSession() {
    S.rooms = new Map();
    S.active = null;
    S.outbox = [];
    S.names = new Map();
    S.everOnline = false;
    S.me = null;
  }

  // ---------------------------------------------------------------- events
  ui.loginForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = ui.tokenInput.value.trim();
    const name = ui.nameInput.value.trim();
    if (!token && !name) { showLogin('Pick a name (or paste a token).'); ui.nameInput.focus(); return; }
    S.creds = token ? { token } : { name };
    if (!token) store.set('name', name);
    S.loggingOut = false;
    S.attempt = 0;
    ui.loginError.hidden = true;
    ui.connectButton.disabled = true;
    ui.connectButton.textContent = 'Connecting…';
    showApp();
    renderAll();
    connect();
  });

  ui.logout.addEventListener('click', () => {
    S.loggingOut = true;
    S.creds = null;
    clearTimeout(S.retryTimer);
    S.retryTimer = null;
    dropSocket(1000, 'signed out');
    resetSession();
    setState('offline');
    hideNotice();
    renderAll();
    showLogin('');
  });

  ui.conn.addEventListener('click', () => {
    if (S.state === 'reconnecting' && S.retryTimer) { S.attempt = 0; connect(); }
  });
  ui.noticeReconnect.addEventListener('click', () => {
    if (!S.creds) return;
    hideNotice();
    S.attempt = 0;
    connect();
  });
  window.addEventListener('online', () => {
    if (S.creds && !S.ws && !S.loggingOut && !S.final) { S.attempt = 0; connect(); }
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && S.active && S.active.unread) { S.active.unread = 0; renderRoomList(); updateTitle(); }
  });

  ui.joinForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (joinByName(ui.roomInput.value)) { ui.roomInput.value = ''; closeDrawers(); }
  });

  ui.composer.addEventListener('submit', (ev) => { ev.preventDefault(); submitMessage(); ui.composerInput.focus(); });
  ui.composerInput.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); submitMessage(); }
  });
  ui.composerInput.addEventListener('input', () => { autosize(); sendTyping(); });

  ui.scroller.addEventListener('scroll', () => {
    if (ui.scroller.scrollTop < 80) loadOlder(S.active);
  }, { passive: true });

  ui.toggleRooms.addEventListener('click', () => {
    ui.app.classList.toggle('show-rooms');
    ui.app.classList.remove('show-people');
  });
  ui.togglePeople.addEventListener('click', () => {
    ui.app.classList.toggle('show-people');
    ui.app.classList.remove('show-rooms');
  });

  // ---------------------------------------------------------------- start
  const savedName = store.get('name');
  if (typeof savedName === 'string') ui.nameInput.value = savedName;
  setState('offline');
  renderAll();
})();
