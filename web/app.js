// Web client for the chat server (protocol: docs/protocol.md, version 1; version 2 adds edits,
// deletes, reactions, replies, mentions, memberships (my_rooms, read positions, unread counts,
// part), search, room settings (topic, private, read-only, slow mode), invites and moderation
// (roles, kick, ban, mute and their lifting), used when `welcome` says "protocol":2).
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
  const QUICK_EMOJI = ['👍', '❤️', '😂', '🎉', '😮'];
  const MAX_MENTIONS = 50;
  const MAX_SUGGESTIONS = 8;
  const MAX_MENTION_NOTES = 5;
  const MENTION_NOTE_MS = 30000;
  const READ_DEBOUNCE_MS = 400;     // `read` goes out at most this often per room
  const MY_ROOMS_TIMEOUT_MS = 5000; // no my_rooms by then: go on with the saved list
  const AT_BOTTOM_PX = 48;
  const SEARCH_LIMIT = 20;
  const MAX_SLOW_MODE = 24 * 3600;  // seconds (the server's limit)
  const MAX_INVITE_NOTES = 5;
  const MOD_LOG_PAGE = 100;         // history's largest page
  const MOD_LOG_PAGES = 10;         // pages read back per load of the moderation log at most
  const MOD_LOG_BATCH = 50;         // ...or until this many entries were found
  const DEFAULT_SETTINGS = Object.freeze({ topic: '', private: false, read_only: false, slow_mode: 0 });
  // Objects that take a room's seq (protocol v2: changes to a message are events of their own).
  const ROOM_EVENTS = new Set(['message_edited', 'message_deleted', 'reaction', 'moderation']);
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
    roomRole: byId('room-role'), partButton: byId('part-button'),
    conn: byId('conn-state'), me: byId('me'), logout: byId('logout-button'),
    toggleRooms: byId('toggle-rooms'), togglePeople: byId('toggle-people'),
    joinForm: byId('join-form'), roomInput: byId('room-input'), roomList: byId('room-list'),
    dmList: byId('dm-list'), notice: byId('notice'), noticeText: byId('notice-text'),
    noticeReconnect: byId('notice-reconnect'), scroller: byId('message-list'),
    historyMarker: byId('history-marker'), messages: byId('messages'), pending: byId('pending'),
    typing: byId('typing'), composer: byId('composer'), composerInput: byId('composer-input'),
    sendButton: byId('send-button'), peopleTitle: byId('people-title'),
    presence: byId('presence-list'), toast: byId('toast'),
    replyPreview: byId('reply-preview'), replyPreviewText: byId('reply-preview-text'),
    replyCancel: byId('reply-cancel'), suggestions: byId('mention-suggestions'),
    mentionNotes: byId('mention-notes'),
    roomBadges: byId('room-badges'), topicRow: byId('topic-row'), roomTopic: byId('room-topic'),
    settingsButton: byId('settings-button'), searchForm: byId('search-form'), searchInput: byId('search-input'),
    searchPanel: byId('search-panel'), searchSummary: byId('search-summary'), searchClose: byId('search-close'),
    searchResults: byId('search-results'), searchStatus: byId('search-status'), searchMore: byId('search-more'),
    readOnlyNote: byId('read-only-note'), slowNote: byId('slow-mode-note'),
    inviteForm: byId('invite-form'), inviteInput: byId('invite-input'), inviteButton: byId('invite-button'),
    inviteStatus: byId('invite-status'), inviteUsers: byId('invite-users'),
    settingsDialog: byId('settings-dialog'), settingsForm: byId('settings-form'), settingsTopic: byId('settings-topic'),
    settingsPrivate: byId('settings-private'), settingsReadOnly: byId('settings-read-only'),
    settingsSlow: byId('settings-slow-mode'), settingsNote: byId('settings-note'), settingsError: byId('settings-error'),
    settingsSave: byId('settings-save'), settingsCancel: byId('settings-cancel'),
    leftNote: byId('left-note'), leftNoteText: byId('left-note-text'), rejoinButton: byId('rejoin-button'),
    leftNoteError: byId('left-note-error'), mutedNote: byId('muted-note'),
    modPanel: byId('mod-panel'), modTitle: byId('mod-title'), modClose: byId('mod-close'), modUser: byId('mod-user'),
    modReason: byId('mod-reason'), modBanDuration: byId('mod-ban-duration'), modMuteDuration: byId('mod-mute-duration'),
    modRoles: byId('mod-roles'), modStatus: byId('mod-status'), modOpen: byId('mod-open'),
    modLogButton: byId('modlog-button'), modLogPanel: byId('modlog-panel'), modLogSummary: byId('modlog-summary'),
    modLogClose: byId('modlog-close'), modLogList: byId('modlog-list'), modLogStatus: byId('modlog-status'),
    modLogMore: byId('modlog-more'),
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
    protocol: 1,          // from welcome: 2 enables edit/delete/react/reply/mentions
    replyTo: null,        // {room, seq}: the message the composer answers
    editing: null,        // {room, seq, draft, busy}: the message being edited in place
    confirmDelete: null,  // {room, seq}: the message whose delete awaits a confirmation
    mentionSeen: new Set(), // room + '\n' + seq of mention notifications shown
    jumpTo: null,         // {room, seq}: scroll there once that message is loaded
    suggest: null,        // {start, end, items, index}: the open @-completion
    partQueue: new Set(), // v2: rooms left while offline; `part` goes out on the next welcome
    newLine: null,        // the "new messages" <li> in the active room, when shown
    search: null,         // v2: {room, query, results, seqs, more, loading, error, selected}: the open search
    settingsForm: null,   // v2: {room, base, touched, busy}: the open settings dialog
    slowTimer: null,      // ticks the slow mode countdown of the active room
    modPanel: null,       // v2: {room, busy, confirmOwner}: the open moderation panel
    muteTimer: null,      // re-renders the composer when the active room's mute of this user ends
    modLog: null,         // v2: {room, items, seqs, before, more, loading, error, done, scanned, flash}: the open moderation log
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
    // a room this user was kicked or banned from is not joined again by itself after a reload
    const rooms = [...S.rooms.values()].filter((r) => !r.left).map((r) => r.name);
    store.set('rooms.' + S.me, { rooms, active: S.active && !S.active.left ? S.active.name : null });
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
      bySeq: new Map(), minSeq: Infinity, mentioned: false,
      loadingOlder: false, joined: false, joining: false, joinable: true,
      unread: 0, members: new Map(), memberCount: 0, typing: new Map(),
      lastTypingSent: 0, noTyping: false,
      // Protocol v2 memberships. unread = unreadBase (the server's count of the messages up to
      // baseSeq) + unreadSeqs (messages of others after baseSeq counted here). Without a server
      // count (v1, dm rooms) baseSeq stays Infinity and only live messages count.
      member: false, role: null, readKnown: false, readSeq: 0, readSent: 0, readWant: 0, readTimer: null,
      unreadBase: 0, baseSeq: Infinity, unreadSeqs: new Set(),
      marker: null,         // the read position the "new messages" line follows (null: no line)
      markerPending: false, // opened before its read position was known: decide on `joined`
      // Protocol v2 room settings, as of the room's seq settingsSeq (null: not known yet); the
      // role as of roleSeq (moderation events after it change it).
      settings: null, settingsSeq: 0, roleSeq: 0,
      invitedBy: null,      // an `invited` not followed by a join yet: who invited the user
      slowUntil: 0,         // slow mode: the next send is allowed from this time (ms)
      // Protocol v2 moderation. left: {ban, by, reason, until, error}: this user was kicked or
      // banned (the room is no longer joined here and is not rejoined by itself). mute: {until}
      // (ms, Infinity: until unmuted) as of muteSeq. knownRoles: user -> {role, seq} from `role` events.
      left: null, mute: null, muteSeq: 0, knownRoles: new Map(),
    };
    if (r.dm) r.peer = dmPeer(name);
    S.rooms.set(name, r);
    renderRoomList();
    saveRooms();
    return r;
  }
  function removeRoom(r) {
    clearTimeout(r.readTimer);
    r.readTimer = null;
    S.rooms.delete(r.name);
    S.outbox = S.outbox.filter((m) => m.room !== r.name);
    if (S.search && S.search.room === r.name) closeSearch();
    if (S.settingsForm && S.settingsForm.room === r.name) closeSettings();
    if (S.modLog && S.modLog.room === r.name) closeModLog();
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
    r.bySeq = new Map();
    r.minSeq = Infinity;
    r.seq = 0;
    r.more = true;
    r.readWant = 0;
    r.readSent = 0;
    r.unreadSeqs = new Set();
    r.marker = null;
    r.settingsSeq = 0; // a new epoch numbers from 1 again: its `joined` brings the settings
    r.roleSeq = 0;
    r.muteSeq = 0;
    r.knownRoles = new Map();
    if (S.search && S.search.room === r.name) renderSearch();
    if (S.modLog && S.modLog.room === r.name) { S.modLog = newModLog(r.name); renderModLog(); } // read again once joined
    if (S.replyTo && S.replyTo.room === r.name) { S.replyTo = null; renderReplyPreview(); }
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
    const protocol = typeof w.protocol === 'number' ? w.protocol : 1;
    if (protocol !== S.protocol) S.renderedRoom = undefined; // the message actions depend on it
    S.protocol = protocol;
    ui.app.setAttribute('data-protocol', String(S.protocol));
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
    // Protocol v2: the rooms this user is a member of, from any device, with their unread counts.
    let mine = null;
    if (S.protocol >= 2) {
      const parting = new Set(S.partQueue);
      for (const name of parting) partRequest(name);
      try {
        const res = await request({ type: 'my_rooms' }, { timeout: MY_ROOMS_TIMEOUT_MS });
        if (Array.isArray(res.rooms)) mine = res.rooms.filter((x) => x && typeof x.room === 'string' &&
          ROOM_RE.test(x.room) && !isDmName(x.room) && !parting.has(x.room) && !S.partQueue.has(x.room));
      } catch (e) {
        if (gen !== S.gen) return;
        console.warn('chat: my_rooms failed', e);
      }
      if (gen !== S.gen) return;
    }
    const saved = first ? store.get('rooms.' + S.me) : null;
    if (first) {
      const names = saved && Array.isArray(saved.rooms) ? saved.rooms : [];
      for (const n of names) if (typeof n === 'string' && (ROOM_RE.test(n) || (n.startsWith('dm:') && n.length <= 600))) addRoom(n);
    }
    if (mine) {
      for (const x of mine) {
        const r = addRoom(x.room);
        if (r.left) { r.left = null; saveRooms(); } // a member again (invited, or joined elsewhere)
        applyMembership(r, x);
        // my_rooms names the topic and whether the room is private (not read_only, slow_mode)
        applySettings(r, { topic: x.topic, private: x.private }, typeof x.last_seq === 'number' ? x.last_seq : 0);
      }
    }
    if (first && S.rooms.size === 0) addRoom('general');
    if (first && !S.active) {
      const act = saved && saved.active && S.rooms.get(saved.active);
      setActive(act || S.rooms.values().next().value || null);
    }
    for (const r of S.rooms.values()) if (!r.left) joinRoom(r, gen, true); // not kicked/banned rooms
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
      case 'message_edited': case 'message_deleted': case 'reaction': case 'moderation':
        onRoomEvent(m);
        break;
      case 'mention': onMention(m); break;
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
      case 'read': onReadElsewhere(m); break;
      case 'parted': onPartedElsewhere(m); break;
      case 'invited': onInvited(m); break;
      case 'kicked': onKicked(m); break;
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
    if (!insertMessages(r, [m], live)) return;
    if (!live) return;
    if (m.from != null && r.typing.delete(String(m.from)) && r === S.active) renderTyping();
  }

  // A change to a message (protocol v2), live or replayed in recovery: it takes a seq of the
  // room like a message, so it counts for dedupe and for `since`; it never opens a room.
  function onRoomEvent(m) {
    if (typeof m.room !== 'string' || typeof m.seq !== 'number') return;
    const r = S.rooms.get(m.room);
    if (!r) return;
    const deletes = m.type === 'message_deleted' || (m.type === 'message_edited' && m.deleted === true);
    const t = deletes ? r.bySeq.get(m.target) : null;
    const wasDeleted = !!(t && t.deleted);
    if (insertMessages(r, [m]) && deletes && !wasDeleted) uncountDeleted(r, m);
    // the open moderation log of the room: a new entry at the top
    if (m.type === 'moderation' && S.modLog && S.modLog.room === r.name && addModLogItem(S.modLog, m, true)) renderModLog();
  }

  // ---------------------------------------------------------------- v2: room settings, moderation events
  const isStaff = (r) => !!r && !r.dm && (r.role === 'owner' || r.role === 'moderator');
  // A plain member in a read-only room: the composer is off (reactions stay on).
  const writeLocked = (r) => !!r && !r.dm && !!r.settings && r.settings.read_only && !isStaff(r);
  const slowApplies = (r) => !!r && !r.dm && !!r.settings && r.settings.slow_mode > 0 && !isStaff(r);

  // The settings of `s` over those of `base` (a field that is absent stays, but an absent topic
  // means none: every message that carries settings leaves out an empty topic).
  function normSettings(s, base) {
    const b = base || DEFAULT_SETTINGS;
    if (!s || typeof s !== 'object') return null;
    return {
      topic: typeof s.topic === 'string' ? s.topic : '',
      private: typeof s.private === 'boolean' ? s.private : b.private,
      read_only: typeof s.read_only === 'boolean' ? s.read_only : b.read_only,
      slow_mode: typeof s.slow_mode === 'number' && s.slow_mode >= 0 ? Math.floor(s.slow_mode) : b.slow_mode,
    };
  }
  const sameSettings = (a, b) => !!a && !!b && a.topic === b.topic && a.private === b.private &&
    a.read_only === b.read_only && a.slow_mode === b.slow_mode;

  // Settings as of the room's seq `seq` (joined, room, my_rooms, a moderation event): older news
  // than what the room already knows is dropped. Returns whether anything changed.
  function applySettings(r, s, seq) {
    if (r.dm || !s || typeof s !== 'object') return false;
    if (r.settings && typeof seq === 'number' && seq < r.settingsSeq) return false;
    const next = normSettings(s, r.settings);
    if (typeof seq === 'number' && seq > r.settingsSeq) r.settingsSeq = seq;
    if (sameSettings(next, r.settings)) return false;
    r.settings = next;
    if (!slowApplies(r)) r.slowUntil = 0;
    renderRoomList();
    if (r === S.active) { renderHeader(); renderPresence(); }
    if (S.settingsForm && S.settingsForm.room === r.name) refillSettings(r);
    return true;
  }

  // The system line of a `moderation` event (no side effects: the moderation log uses it too).
  function normModeration(r, m) {
    const settings = normSettings(m.settings || (m.data && typeof m.data === 'object' ? m.data.settings : null), r.settings);
    return {
      kind: 'system', seq: m.seq, ts: typeof m.ts === 'number' ? m.ts : null,
      from: '', name: '', text: '', deleted: false, reactions: [], mentions: [], replyTo: null, editedTs: null,
      action: typeof m.action === 'string' ? m.action : '', by: m.by != null ? String(m.by) : '',
      user: m.user != null ? String(m.user) : null, role: typeof m.role === 'string' ? m.role : null,
      until: typeof m.until === 'number' ? m.until : null, reason: typeof m.reason === 'string' ? m.reason : null,
      settings, prev: null, v: m.seq,
    };
  }
  // A `moderation` event (live, replayed or from history): a system line in the timeline; a newer
  // one than the room knows also changes its settings, or the user's role.
  function onModeration(r, m) {
    const item = normModeration(r, m);
    const { by, settings } = item;
    if (item.action === 'settings' && settings) {
      if (r.settings && m.seq > r.settingsSeq) item.prev = r.settings; // what this event changed
      applySettings(r, settings, m.seq);
    } else if (item.action === 'role' && item.role) {
      // what the page knows of others' roles (a handed-on ownership leaves a moderator behind)
      const learn = (u, role) => {
        const k = r.knownRoles.get(u);
        if (u && (!k || m.seq > k.seq)) r.knownRoles.set(u, { role, seq: m.seq });
      };
      if (item.user) learn(item.user, item.role);
      if (item.role === 'owner' && by) learn(by, 'moderator');
      if (m.seq > r.roleSeq) {
        r.roleSeq = m.seq;
        let role = null;
        if (item.user === S.me) role = item.role;
        else if (item.role === 'owner' && by === S.me) role = 'moderator'; // the owner handed it on
        if (role && role !== r.role) { r.role = role; roleChanged(r); }
      }
      if (r === S.active) renderPresence();
    } else if ((item.action === 'mute' || item.action === 'unmute') && item.user === S.me && m.seq > r.muteSeq) {
      r.muteSeq = m.seq;
      r.mute = item.action === 'mute' ? { until: item.until != null ? item.until : Infinity } : null;
      if (r === S.active) renderComposerState();
    }
    return item;
  }

  // What the settings line `m` changed: against the settings before it (the previous settings
  // line loaded, or the defaults when the room's whole history is loaded), else what they are now.
  function settingsBefore(r, m) {
    if (m.prev) return m.prev;
    let prev = null;
    for (const x of r.msgs) {
      if (x.seq >= m.seq) break;
      if (x.kind === 'system' && x.action === 'settings' && x.settings) prev = x.settings;
    }
    if (!prev && !r.more) prev = DEFAULT_SETTINGS; // nothing older: it changed the defaults
    if (prev) m.prev = prev;
    return prev;
  }
  function joinWords(parts) {
    if (parts.length <= 1) return parts.join('');
    return parts.slice(0, -1).join(', ') + ' and ' + parts[parts.length - 1];
  }
  const quoted = (t) => '“' + t + '”';
  function settingsText(r, m) {
    const now = m.settings;
    if (!now) return 'changed the room settings';
    const prev = settingsBefore(r, m);
    if (!prev) {
      const parts = [now.topic ? 'topic ' + quoted(now.topic) : 'no topic', now.private ? 'private' : 'public'];
      if (now.read_only) parts.push('read-only');
      if (now.slow_mode) parts.push('slow mode ' + now.slow_mode + ' s');
      return 'changed the room settings: ' + parts.join(', ');
    }
    const parts = [];
    if (now.topic !== prev.topic) parts.push(now.topic ? 'set the topic to ' + quoted(now.topic) : 'cleared the topic');
    if (now.private !== prev.private) parts.push(now.private ? 'made the room private' : 'made the room public');
    if (now.read_only !== prev.read_only) parts.push(now.read_only ? 'made the room read-only' : 'let everyone write again');
    if (now.slow_mode !== prev.slow_mode) parts.push(now.slow_mode ? 'set slow mode to ' + now.slow_mode + ' s' : 'turned slow mode off');
    return parts.length ? joinWords(parts) : 'changed the room settings';
  }
  // "1 h", "1 day", "10 min", "90 s": how long a ban or mute lasts.
  function durationText(ms) {
    const s = Math.round(ms / 1000);
    const unit = (n, one, many) => n + ' ' + (n === 1 ? one : many);
    if (s >= 86400 && s % 86400 === 0) return unit(s / 86400, 'day', 'days');
    if (s >= 3600 && s % 3600 === 0) return s / 3600 + ' h';
    if (s >= 60 && s % 60 === 0) return s / 60 + ' min';
    return s + ' s';
  }
  // " for 1 h" (the event's `until` minus its time: the seconds asked for), or " until <time>".
  function forHowLong(m) {
    if (typeof m.until !== 'number') return '';
    if (typeof m.ts === 'number' && m.until > m.ts) return ' for ' + durationText(m.until - m.ts);
    return ' until ' + fmtDateTime(m.until);
  }
  function moderationText(r, m) {
    const who = (u) => (u === S.me ? 'you' : S.names.get(u) || u || 'someone');
    const by = m.by === S.me ? 'You' : S.names.get(m.by) || m.by || 'Someone';
    const user = who(m.user);
    const why = m.reason ? ': ' + m.reason : '';
    let what;
    switch (m.action) {
      case 'settings': what = settingsText(r, m); break;
      case 'kick': what = 'kicked ' + user + why; break;
      case 'ban': what = 'banned ' + user + forHowLong(m) + why; break;
      case 'unban': what = 'unbanned ' + user; break;
      case 'mute': what = 'muted ' + user + forHowLong(m) + why; break;
      case 'unmute': what = 'unmuted ' + user; break;
      case 'role':
        what = m.role === 'owner' ? 'made ' + user + ' the owner'
          : m.role === 'moderator' ? 'made ' + user + ' a moderator'
            : 'made ' + user + ' a ' + (m.role || 'member');
        break;
      default: what = (m.action || 'moderated') + (m.user ? ' ' + user : '') + why;
    }
    return by + ' ' + what;
  }
  function systemEl(r, m) {
    const li = h('li', { class: 'sys-line', 'data-testid': 'system-line', 'data-seq': m.seq, 'data-room': r.name,
      'data-action': m.action, 'data-by': m.by, 'data-user': m.user, 'data-role': m.role, 'data-until': m.until,
      title: m.until != null ? 'until ' + new Date(m.until).toLocaleString() : null, role: 'note' },
    h('span', { class: 'sys-text', 'data-testid': 'system-text', dir: 'auto', text: moderationText(r, m) }),
    h('time', { class: 'time', text: fmtTime(m.ts), datetime: m.ts != null ? new Date(m.ts).toISOString() : null,
      title: m.ts != null ? new Date(m.ts).toLocaleString() : null }));
    S.els.set(m.seq, li);
    return li;
  }
  // Settings lines rendered before what came before them was loaded say more once it is.
  function refreshSystemLines(r) {
    if (r !== S.active) return;
    for (const m of r.msgs) {
      if (m.kind !== 'system' || m.action !== 'settings' || m.prev) continue;
      if (settingsBefore(r, m)) rerenderMessage(r, m.seq, true);
    }
  }

  // This user's role in the room changed (joined, a `role` event, a kick): what the page offers
  // follows (the settings button, the composer of a read-only room, moderation, invites).
  function roleChanged(r) {
    if (!slowApplies(r)) r.slowUntil = 0;
    if (!isStaff(r)) {
      if (S.settingsForm && S.settingsForm.room === r.name) closeSettings();
      if (S.modPanel && S.modPanel.room === r.name) closeModPanel();
      if (S.modLog && S.modLog.room === r.name) closeModLog();
    }
    renderRoomList();
    if (r === S.active) { renderHeader(); renderPresence(); renderModPanel(); }
  }

  // `{"type":"kicked","room","by","reason"?,"ban"?,"until"?}`: this user was kicked or banned from
  // the room. It is no longer joined on this connection; it stays in the list with a notice (and
  // its messages), and is not joined again by itself: the user may click Join again.
  function onKicked(m) {
    if (typeof m.room !== 'string') return;
    const by = m.by != null ? String(m.by) : '';
    const left = { ban: m.ban === true, by, reason: typeof m.reason === 'string' && m.reason ? m.reason : null,
      until: typeof m.until === 'number' ? m.until : null, error: null };
    const r = S.rooms.get(m.room);
    S.partQueue.delete(m.room);
    if (!r || r.dm) { toast(leftText(m.room, left)); return; }
    r.left = left;
    r.joined = false;
    r.member = false;
    r.role = null;
    r.mute = null;
    r.invitedBy = null;
    clearTimeout(r.readTimer);
    r.readTimer = null;
    r.typing.clear();
    r.members = new Map();
    r.memberCount = 0;
    removeInviteNote(r.name);
    roleChanged(r);
    saveRooms();
    if (r !== S.active) toast(leftText(r.name, left));
    else { renderComposerState(); renderTyping(); }
  }
  function leftText(room, left) {
    const who = left.by ? S.names.get(left.by) || left.by : 'a moderator';
    let t = 'You were ' + (left.ban ? 'banned' : 'kicked') + ' from #' + room + ' by ' + who;
    if (left.ban && left.until != null) t += ' until ' + fmtDateTime(left.until);
    if (left.reason) t += ': ' + left.reason;
    return t;
  }

  // ---------------------------------------------------------------- v2: unread counts, read positions
  function recount(r) { r.unread = Math.max(0, r.unreadBase) + r.unreadSeqs.size; }

  // The membership facts of a my_rooms entry or a `joined` (not for dm rooms: they keep none).
  // `top`: the room's seq the server's unread count covers.
  function applyMembership(r, x, top) {
    if (r.dm || typeof x.read_seq !== 'number') return;
    r.member = true;
    if (typeof x.role === 'string') r.role = x.role;
    r.readSeq = x.read_seq;
    r.readSent = x.read_seq;
    r.readKnown = true;
    r.unreadBase = typeof x.unread === 'number' ? Math.max(0, x.unread) : 0;
    r.baseSeq = typeof top === 'number' ? top : typeof x.last_seq === 'number' ? x.last_seq : r.seq;
    r.unreadSeqs = new Set();
    recount(r);
    if (r.markerPending) decideMarker(r);
    renderRoomList();
    if (r === S.active) renderHeader();
    updateTitle();
    noteViewed(r);
  }

  // Newly loaded messages of others after what the server counted (or, without a server count,
  // those that arrived live) are unread unless the user is looking at them.
  function countFresh(r, fresh, live) {
    const seqs = [];
    for (const m of fresh) {
      if (m.kind === 'system' || m.from === S.me || m.deleted || r.unreadSeqs.has(m.seq)) continue;
      if (isFinite(r.baseSeq) ? m.seq <= r.baseSeq : !live) continue;
      if (r.readKnown && m.seq <= r.readSeq) continue;
      seqs.push(m.seq);
    }
    if (!seqs.length) return;
    if (isViewing(r)) { noteViewed(r); return; }
    for (const seq of seqs) r.unreadSeqs.add(seq);
    recount(r);
    // the open room, not looked at (window in the background, scrolled up): mark where new begins
    if (r === S.active && r.marker == null) { r.marker = seqs[0] - 1; updateNewLine(); }
    renderRoomList();
    updateTitle();
  }

  // A message deleted after the server counted: it no longer counts (the author is a guess from
  // `by` when the message is not loaded: mostly authors delete their own messages).
  function uncountDeleted(r, ev) {
    const target = ev.target;
    if (typeof target !== 'number') return;
    if (r.unreadSeqs.delete(target)) {
      // counted here
    } else if (isFinite(r.baseSeq) && ev.seq > r.baseSeq && target <= r.baseSeq && r.unreadBase > 0 &&
               !(r.readKnown && target <= r.readSeq)) {
      const t = r.bySeq.get(target);
      const author = t ? t.from : ev.by != null ? String(ev.by) : '';
      if (author === S.me) return;
      r.unreadBase--;
    } else {
      return;
    }
    recount(r);
    renderRoomList();
    updateTitle();
    if (r === S.active) updateNewLine();
  }

  // The user looks at the newest messages of the room: the open room, the window focused and
  // visible, the list scrolled to the bottom, its first page loaded.
  function isViewing(r) {
    if (!r || r !== S.active || !r.loaded || document.hidden || !document.hasFocus()) return false;
    const sc = ui.scroller;
    return sc.scrollHeight - sc.scrollTop - sc.clientHeight < AT_BOTTOM_PX;
  }

  // When the user looks at the room: nothing is unread any more, and (v2) `read` with the newest
  // seq seen goes out a little later, only when it moves the stored position forward.
  function noteViewed(r) {
    if (!isViewing(r)) return;
    if (r.unread || r.mentioned || r.unreadBase || r.unreadSeqs.size) {
      r.unreadBase = 0;
      r.unreadSeqs.clear();
      r.unread = 0;
      r.mentioned = false;
      renderRoomList();
      updateTitle();
    }
    if (S.protocol < 2 || r.dm || !r.member) return;
    if (r.seq > r.readWant) r.readWant = r.seq;
    if (r.readWant > Math.max(r.readSeq, r.readSent) && !r.readTimer) {
      r.readTimer = setTimeout(() => sendRead(r), READ_DEBOUNCE_MS);
    }
  }

  async function sendRead(r) {
    r.readTimer = null;
    const seq = r.readWant;
    if (S.rooms.get(r.name) !== r || S.state !== 'online' || !r.member || seq <= Math.max(r.readSeq, r.readSent)) return;
    r.readSent = seq;
    try {
      const res = await request({ type: 'read', room: r.name, seq });
      if (typeof res.seq === 'number' && res.seq > r.readSeq) { r.readSeq = res.seq; renderRoomList(); }
    } catch (e) {
      r.readSent = r.readSeq; // not stored: the next look sends it again
      if (e.code === 'not_member') r.member = false;
      else if (e.code !== 'disconnected') console.warn('chat: read', r.name, e.code, e.message);
    }
  }

  // `{"type":"read","room","seq"}` without an id: another connection of this user (a tab, a
  // device) read the room up to seq. What is loaded after it stays unread here.
  function onReadElsewhere(m) {
    const r = S.rooms.get(m.room);
    if (!r || r.dm || typeof m.seq !== 'number') return;
    if (r.readKnown && m.seq <= r.readSeq) return; // nothing moved
    r.readSeq = m.seq;
    r.readKnown = true;
    if (r.readSent < r.readSeq) r.readSent = r.readSeq;
    r.unreadBase = 0;
    r.unreadSeqs = new Set(r.msgs.filter((x) => x.kind !== 'system' && x.seq > r.readSeq && x.from !== S.me && !x.deleted)
      .map((x) => x.seq));
    recount(r);
    if (!r.unread) r.mentioned = false;
    if (r.marker != null && r.marker < r.readSeq) {
      r.marker = r.readSeq;
      if (r === S.active) updateNewLine();
    }
    renderRoomList();
    updateTitle();
    noteViewed(r);
  }

  // `{"type":"parted","room"}` without an id: this user left the room on another connection.
  function onPartedElsewhere(m) {
    const r = S.rooms.get(m.room);
    S.partQueue.delete(m.room);
    if (!r || r.dm) return;
    removeRoom(r);
    toast('You left #' + m.room + ' elsewhere');
  }

  // The "new messages" line goes above the first message of someone else after r.marker.
  function decideMarker(r) {
    r.markerPending = false;
    if (r.readKnown) r.marker = r.unread > 0 ? r.readSeq : null;
    else if (r.unreadSeqs.size) r.marker = Math.min(...r.unreadSeqs) - 1;
    else { r.marker = null; r.markerPending = S.protocol >= 2 && !r.dm; }
  }
  function placeNewLine() {
    const r = S.active;
    let target = null;
    if (r && r.marker != null) {
      for (const m of r.msgs) if (m.kind !== 'system' && m.seq > r.marker && m.from !== S.me && !m.deleted) { target = m; break; }
    }
    const el = target && S.els.get(target.seq);
    if (!el) { if (S.newLine) { S.newLine.remove(); S.newLine = null; } return; }
    if (!S.newLine) {
      S.newLine = h('li', { class: 'new-line', 'data-testid': 'new-messages-line', role: 'separator',
        'aria-label': 'New messages' }, h('span', { text: 'New messages' }));
    }
    S.newLine.setAttribute('data-after-seq', String(r.marker));
    S.newLine.setAttribute('data-before-seq', String(target.seq));
    if (el.previousSibling !== S.newLine) ui.messages.insertBefore(S.newLine, el);
  }
  // The same, keeping a list scrolled to the bottom at the bottom.
  function updateNewLine() {
    const sc = ui.scroller;
    const atBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < AT_BOTTOM_PX;
    placeNewLine();
    if (atBottom) sc.scrollTop = sc.scrollHeight;
  }

  // `{"type":"mention","room","seq","from"}`: delivered to every connection of the mentioned user.
  function onMention(m) {
    if (typeof m.room !== 'string' || m.seq == null) return;
    const key = m.room + '\n' + m.seq;
    if (S.mentionSeen.has(key)) return;
    S.mentionSeen.add(key);
    const from = m.from != null ? String(m.from) : '';
    if (from && from === S.me) return;
    const r = S.rooms.get(m.room);
    if (r && !isViewing(r)) { r.mentioned = true; renderRoomList(); }
    showMentionNote(m.room, Number(m.seq), from);
  }

  const isEvent = (m) => typeof m.type === 'string' && ROOM_EVENTS.has(m.type);

  function normReactions(list) {
    const out = [];
    if (!Array.isArray(list)) return out;
    for (const x of list) {
      if (!x || typeof x.emoji !== 'string' || !x.emoji) continue;
      const users = Array.isArray(x.users) ? [...new Set(x.users.filter((u) => u != null).map(String))] : [];
      const count = Math.max(typeof x.count === 'number' ? x.count : 0, users.length);
      if (count > 0) out.push({ emoji: x.emoji, count, users });
    }
    return out;
  }

  // `v`: the highest seq of the room this state already reflects. A message object carries its
  // current state (history, recovery), so changes with a seq up to `v` are already in it.
  function normMsg(m, v) {
    const deleted = m.deleted === true;
    return {
      seq: m.seq, ts: typeof m.ts === 'number' ? m.ts : null,
      from: m.from != null ? String(m.from) : '', name: m.name != null ? String(m.name) : '',
      text: !deleted && typeof m.text === 'string' ? m.text : '', data: deleted ? undefined : m.data,
      replyTo: typeof m.reply_to === 'number' && m.reply_to > 0 ? m.reply_to : null,
      mentions: Array.isArray(m.mentions) ? m.mentions.filter((u) => u != null).map(String) : [],
      editedTs: !deleted && typeof m.edited_ts === 'number' && m.edited_ts > 0 ? m.edited_ts : null,
      deleted,
      reactions: deleted ? [] : normReactions(m.reactions),
      v: Math.max(v, m.seq),
    };
  }

  // Applies a change event to the message it targets, if that message is loaded and does not
  // already reflect it. Reactions are sets keyed by (emoji, user): replaying one is harmless.
  // Returns the changed message or null.
  function applyEvent(r, ev) {
    const t = r.bySeq.get(ev.target);
    if (!t || t.kind === 'system' || ev.seq <= t.v) return null;
    t.v = ev.seq;
    switch (ev.type) {
      case 'message_edited':
        if (t.deleted) return null;
        if (ev.deleted === true) { markDeleted(t); return t; }
        if (typeof ev.text !== 'string') return null;
        t.text = ev.text;
        t.data = ev.data;
        t.editedTs = typeof ev.ts === 'number' ? ev.ts : Date.now();
        return t;
      case 'message_deleted':
        if (t.deleted) return null;
        markDeleted(t);
        return t;
      case 'reaction': {
        if (t.deleted || typeof ev.emoji !== 'string' || !ev.emoji || ev.user == null) return null;
        return applyReaction(t, ev.emoji, String(ev.user), ev.on !== false, true) ? t : null;
      }
      default:
        return null;
    }
  }
  function markDeleted(t) {
    t.deleted = true;
    t.text = '';
    t.data = undefined;
    t.editedTs = null;
    t.reactions = [];
  }
  // counted: the server counted this change (an event); false: only what we learnt about our own
  // reaction from a no-op ack (users lists stop at 20, so ours may be missing from a long one).
  function applyReaction(t, emoji, user, on, counted) {
    let e = t.reactions.find((x) => x.emoji === emoji);
    if (on) {
      if (e && e.users.includes(user)) return false;
      if (!e) { e = { emoji, count: 0, users: [] }; t.reactions.push(e); }
      e.users.push(user);
      if (counted || e.count < e.users.length) e.count = Math.max(e.count + (counted ? 1 : 0), e.users.length);
      return true;
    }
    if (!e) return false;
    const i = e.users.indexOf(user);
    if (i >= 0) e.users.splice(i, 1);
    else if (!(counted && e.count > e.users.length)) return false; // not there: nothing to remove
    if (counted) e.count--;
    e.count = Math.max(e.count, e.users.length);
    if (e.count <= 0) t.reactions = t.reactions.filter((x) => x !== e);
    return true;
  }

  // Merge messages (and v2 change events) into a room, deduplicated by seq; renders into the
  // active room. Returns how many new objects there were.
  function insertMessages(r, list, live) {
    const fresh = [];
    const events = [];
    let top = r.seq;
    for (const m of list) if (m && typeof m.seq === 'number' && m.seq > top) top = m.seq;
    const sorted = list.filter((m) => m && typeof m.seq === 'number').sort((a, b) => a.seq - b.seq);
    for (const m of sorted) {
      if (r.seqs.has(m.seq)) continue;
      if (m.type != null && m.type !== 'message' && !isEvent(m)) continue;
      r.seqs.add(m.seq);
      if (m.seq > r.seq) r.seq = m.seq;
      if (m.seq < r.minSeq) r.minSeq = m.seq;
      if (m.type === 'moderation') { fresh.push(onModeration(r, m)); continue; }
      if (isEvent(m)) { events.push(m); continue; }
      fresh.push(normMsg(m, top));
      if (m.from != null && m.name && !S.names.has(String(m.from))) S.names.set(String(m.from), String(m.name));
    }
    if (!fresh.length && !events.length) return 0;
    if (fresh.length) addToRoom(r, fresh);
    const changed = new Set();
    for (const ev of events) { const t = applyEvent(r, ev); if (t) changed.add(t.seq); }
    if (r === S.active) for (const seq of changed) rerenderMessage(r, seq);
    if (r === S.active && changed.size) updateNewLine();
    if (fresh.length) countFresh(r, fresh, live);
    if (S.search && S.search.room === r.name && (changed.size || fresh.length)) renderSearch();
    noteViewed(r); // the newest seq seen moved
    return fresh.length + events.length;
  }

  function addToRoom(r, fresh) {
    for (const m of fresh) r.bySeq.set(m.seq, m);
    const last = r.msgs.length ? r.msgs[r.msgs.length - 1].seq : -Infinity;
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
      const atBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < AT_BOTTOM_PX;
      const fromBottom = sc.scrollHeight - sc.scrollTop;
      if (appendOnly) {
        const frag = document.createDocumentFragment();
        for (const m of fresh) frag.append(messageEl(r, m));
        ui.messages.append(frag);
        placeNewLine();
        if (atBottom || fresh.some((m) => m.from === S.me)) sc.scrollTop = sc.scrollHeight;
      } else {
        let next = null; // walk backwards inserting the missing elements before their successor
        for (let i = r.msgs.length - 1; i >= 0; i--) {
          const m = r.msgs[i];
          let e = S.els.get(m.seq);
          if (!e) { e = messageEl(r, m); ui.messages.insertBefore(e, next); }
          next = e;
        }
        placeNewLine();
        sc.scrollTop = atBottom ? sc.scrollHeight : sc.scrollHeight - fromBottom;
      }
      // replies shown before the message they quote was loaded now have their quote
      const added = new Set(fresh.map((m) => m.seq));
      for (const m of r.msgs) {
        if (m.replyTo != null && added.has(m.replyTo) && !added.has(m.seq)) rerenderMessage(r, m.seq, true);
      }
      if (pendingChanged || S.outbox.some((o) => o.room === r.name && o.replyTo != null && added.has(o.replyTo))) renderPending();
      renderHistoryMarker(); // "No messages yet" no longer holds
      if (S.replyTo && S.replyTo.room === r.name && added.has(S.replyTo.seq)) renderReplyPreview();
      if (S.jumpTo && S.jumpTo.room === r.name && added.has(S.jumpTo.seq)) jumpToMessage(r.name, S.jumpTo.seq);
    }
  }

  // Re-render one message in place (its state changed), and the replies quoting it.
  function rerenderMessage(r, seq, quoteOnly) {
    if (r !== S.active) return;
    const old = S.els.get(seq);
    const m = r.bySeq.get(seq);
    if (!old || !m) return;
    const sc = ui.scroller;
    const atBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < AT_BOTTOM_PX;
    const focusEdit = document.activeElement && old.contains(document.activeElement) &&
      document.activeElement.getAttribute('data-testid') === 'edit-input';
    const e = messageEl(r, m);
    old.replaceWith(e);
    if (focusEdit) {
      const input = e.querySelector('[data-testid="edit-input"]');
      if (input) { input.focus(); input.selectionStart = input.selectionEnd = input.value.length; }
    }
    if (!quoteOnly) {
      for (const x of r.msgs) if (x.replyTo === seq) rerenderMessage(r, x.seq, true);
      if (S.outbox.some((o) => o.room === r.name && o.replyTo === seq)) renderPending();
      if (S.replyTo && S.replyTo.room === r.name && S.replyTo.seq === seq) renderReplyPreview();
    }
    if (atBottom) sc.scrollTop = sc.scrollHeight;
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
          applyMembership(r, res, typeof res.seq === 'number' ? res.seq : undefined); // v2: role, read_seq, unread
          if (typeof res.seq === 'number' && res.seq > r.roleSeq) r.roleSeq = res.seq;
          // v2: the settings as of this seq (topic may be left out when empty)
          if (res.settings && typeof res.settings === 'object') applySettings(r, res.settings, typeof res.seq === 'number' ? res.seq : 0);
          if (r.invitedBy != null) { r.invitedBy = null; removeInviteNote(r.name); }
          if (r.left) { r.left = null; saveRooms(); } // back after a kick or a ban
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
      reqError('Could not join #' + r.name, e); // a private room, a ban: forbidden
      if (r.left) {
        // kicked or banned before: the room stays with its notice, which says why the join failed
        if (/\bbanned\b/i.test(e.message || '')) r.left.ban = true;
        r.left.error = 'Join refused: ' + (e.message || e.code);
        renderRoomList();
        if (r === S.active) renderComposerState();
        return;
      }
      if (!r.msgs.length) removeRoom(r);
      return;
    }
    r.joining = false;
    if (gen !== S.gen) return;
    if (r === S.active) { renderPresence(); renderHeader(); renderModPanel(); }
    renderRoomList();
    // the open moderation log: read (again) when it was cut off, or the room started over
    const ml = S.modLog;
    if (ml && ml.room === r.name && !ml.loading && (ml.error || !ml.done)) loadModLog(ml);
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
      refreshSystemLines(r); // with the start of the room loaded, the first settings line knows what it changed
    } catch (e) {
      if (e.code === 'disconnected' || gen !== S.gen) return;
      if (!r.dm) toast('History of ' + r.name + ': ' + (e.message || e.code));
      r.more = false;
    }
    r.loaded = true;
    if (r === S.active) { renderHistoryMarker(); fillViewport(r); }
    noteViewed(r);
  }

  function applyMore(r, res) {
    const got = Array.isArray(res.messages) ? res.messages.length : 0;
    const oldest = isFinite(r.minSeq) ? r.minSeq : 0; // the oldest seq seen: a message or an event
    r.more = !!res.more && got > 0 && oldest > 1;
  }

  async function loadOlder(r) {
    if (!r || r.loadingOlder || !r.more || S.state !== 'online' || !r.loaded || r.left) return;
    if (!isFinite(r.minSeq)) return;
    r.loadingOlder = true;
    if (r === S.active) renderHistoryMarker();
    const gen = S.gen;
    try {
      const res = await request({ type: 'history', room: r.name, before: r.minSeq, limit: PAGE_SIZE });
      if (gen !== S.gen) return;
      insertMessages(r, res.messages || []);
      applyMore(r, res);
      refreshSystemLines(r);
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
    if (S.suggest) closeSuggestions();
    const text = ui.composerInput.value;
    if (!r || !text.trim()) return;
    if (writeLocked(r)) { toast('Only the owner and moderators can write here'); return; }
    if (r.left) { renderComposerState(); return; } // kicked or banned: the text stays
    if (r.slowUntil > Date.now()) { renderComposerState(); return; } // slow mode: the text stays
    if ([...text].length > MAX_TEXT_CODEPOINTS) { toast('Message too long (at most 4096 characters)'); return; }
    const item = { key: newKey(), room: r.name, to: r.dm ? r.peer : null, text, status: 'queued', error: null,
      replyTo: null, mentions: [] };
    if (S.protocol >= 2) {
      if (S.replyTo && S.replyTo.room === r.name) item.replyTo = S.replyTo.seq;
      item.mentions = mentionsIn(text, mentionCandidates(r));
    }
    S.replyTo = null;
    renderReplyPreview();
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
    if (item.replyTo != null) msg.reply_to = item.replyTo;
    if (item.mentions && item.mentions.length) msg.mentions = item.mentions;
    request(msg).then((ack) => {
      item.status = 'acked';
      item.ackRoom = ack.room || item.room;
      item.ackSeq = ack.seq;
      const r = S.rooms.get(item.ackRoom);
      if (r && slowApplies(r) && typeof ack.seq === 'number') {
        // slow mode: the next message may go once the room's interval has passed since this one
        r.slowUntil = Math.max(r.slowUntil, Date.now() + r.settings.slow_mode * 1000);
        if (r === S.active) renderComposerState();
      }
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
      else if (e.code === 'rate_limited' && isSlowRefusal(item, e)) { slowRefused(item, e.reply.retry_ms); return; }
      else if (item.to == null && isMutedRefusal(e)) { mutedRefused(item); return; }
      else if (e.code === 'rate_limited' || e.code === 'timeout' || e.code === 'unavailable') {
        item.status = 'queued';
        setTimeout(() => trySend(item), e.code === 'rate_limited' ? 1000 : 2000);
      } else { item.status = 'failed'; item.error = e.message || e.code; }
      renderPending();
    });
  }

  // Slow mode (v2): a member's send too soon after their last one is refused `rate_limited` with
  // `retry_ms`. Nothing was stored: the text goes back into the composer, and a countdown says
  // when it may go.
  function isSlowRefusal(item, e) {
    if (item.to != null || !e.reply || typeof e.reply.retry_ms !== 'number') return false;
    const r = S.rooms.get(item.room);
    return !!(r && r.settings && r.settings.slow_mode > 0) || /slow/i.test(e.message || '');
  }
  // A refused send that stored nothing: in the open room its text goes back
  // into the composer (with its reply); elsewhere it stays pending as failed.
  function giveBack(item, r, why) {
    if (r && r === S.active) {
      S.outbox = S.outbox.filter((o) => o !== item);
      const cur = ui.composerInput.value;
      ui.composerInput.value = cur.trim() ? cur + '\n' + item.text : item.text;
      if (item.replyTo != null && !S.replyTo) { S.replyTo = { room: item.room, seq: item.replyTo }; renderReplyPreview(); }
      autosize();
    } else {
      item.status = 'failed';
      item.error = why;
    }
  }
  function slowRefused(item, retryMs) {
    const r = S.rooms.get(item.room);
    if (r) r.slowUntil = Math.max(r.slowUntil, Date.now() + Math.max(0, retryMs));
    giveBack(item, r, 'slow mode: try again in ' + Math.max(1, Math.ceil(retryMs / 1000)) + 's');
    renderPending();
    renderComposerState();
  }

  // Muted (v2): `send`, `edit`, `react` are refused `forbidden` "you are muted in this room".
  // Nothing was stored: the unsent text goes back into the composer and the note says why.
  const isMutedRefusal = (e) => !!e && e.code === 'forbidden' && /\bmuted\b/i.test(e.message || '');
  function noteMuted(roomName) {
    const r = S.rooms.get(roomName);
    if (!r) return;
    if (!r.mute || r.mute.until <= Date.now()) r.mute = { until: Infinity }; // the server knows better than we did
    if (r === S.active) renderComposerState();
  }
  function mutedRefused(item) {
    const r = S.rooms.get(item.room);
    noteMuted(item.room);
    giveBack(item, r, 'you are muted in this room');
    renderPending();
  }
  const isMuted = (r) => !!r && !!r.mute && r.mute.until > Date.now();

  // ---------------------------------------------------------------- v2: edit, delete, react
  // A change request; one refused as rate_limited stored nothing: try again a little later.
  async function changeRequest(obj) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await request(obj);
      } catch (e) {
        if (e.code !== 'rate_limited' || attempt >= 4) throw e;
        await new Promise((res) => setTimeout(res, 500 * attempt));
      }
    }
  }
  function reqError(what, e) {
    toast(what + ': ' + (e.code && e.code !== e.message ? e.code + ': ' : '') + (e.message || e.code));
  }

  function startEdit(r, m) {
    if (m.deleted || m.from !== S.me) return;
    S.editing = { room: r.name, seq: m.seq, draft: m.text, busy: false };
    S.confirmDelete = null;
    rerenderMessage(r, m.seq, true);
    const input = S.els.get(m.seq) && S.els.get(m.seq).querySelector('[data-testid="edit-input"]');
    if (input) { input.focus(); input.selectionStart = input.selectionEnd = input.value.length; }
  }
  function stopEdit(r, seq) {
    if (!S.editing || S.editing.room !== r.name || S.editing.seq !== seq) return;
    S.editing = null;
    rerenderMessage(r, seq, true);
  }
  async function saveEdit(r, m) {
    const ed = S.editing;
    if (!ed || ed.room !== r.name || ed.seq !== m.seq || ed.busy) return;
    const text = ed.draft;
    if (text === m.text) { stopEdit(r, m.seq); return; }
    if (!text.trim()) { toast('A message cannot be empty: delete it instead'); return; }
    if ([...text].length > MAX_TEXT_CODEPOINTS) { toast('Message too long (at most 4096 characters)'); return; }
    ed.busy = true;
    rerenderMessage(r, m.seq, true);
    try {
      await changeRequest({ type: 'edit', room: r.name, seq: m.seq, text });
      if (S.editing === ed) { S.editing = null; rerenderMessage(r, m.seq, true); }
    } catch (e) {
      if (isMutedRefusal(e)) noteMuted(r.name);
      reqError('Could not edit the message', e);
      if (S.editing === ed) { ed.busy = false; rerenderMessage(r, m.seq, true); }
    }
  }

  async function deleteMessage(r, m) {
    S.confirmDelete = null;
    rerenderMessage(r, m.seq, true);
    try {
      await changeRequest({ type: 'delete', room: r.name, seq: m.seq });
    } catch (e) {
      reqError('Could not delete the message', e);
    }
  }

  async function toggleReaction(r, m, emoji) {
    if (m.deleted) return;
    const e = m.reactions.find((x) => x.emoji === emoji);
    const on = !(e && e.users.includes(S.me));
    try {
      const ack = await changeRequest({ type: 'react', room: r.name, seq: m.seq, emoji, on });
      // nothing changed: the server already had it so (our name may be missing from a long list)
      if (ack && ack.noop && applyReaction(m, emoji, S.me, on, false)) rerenderMessage(r, m.seq, true);
    } catch (err) {
      if (isMutedRefusal(err)) noteMuted(r.name);
      reqError('Could not react', err);
    }
  }

  // ---------------------------------------------------------------- v2: mentions
  // Users one can mention here: the room's members first, then everyone else we know of.
  function mentionCandidates(r) {
    const out = new Map();
    if (r && r.dm && r.peer != null) out.set(r.peer, S.names.get(r.peer) || r.peer);
    if (r) for (const [u, n] of r.members) out.set(u, n);
    for (const [u, n] of S.names) if (!out.has(u)) out.set(u, n);
    if (r) for (const m of r.msgs) if (m.from && !out.has(m.from)) out.set(m.from, m.name || m.from);
    return out;
  }

  const WORDISH = /[\p{L}\p{N}\p{M}_]/u;
  // The known user ids written as @id in the text (at a word start, and not followed by more of a
  // word), longest first, each once: the `mentions` of a send.
  function mentionsIn(text, candidates) {
    const ids = [...candidates.keys()].filter((u) => u).sort((a, b) => b.length - a.length);
    const found = [];
    for (let i = text.indexOf('@'); i >= 0; i = text.indexOf('@', i + 1)) {
      if (i > 0 && WORDISH.test(text[i - 1])) continue;
      for (const id of ids) {
        if (!text.startsWith(id, i + 1)) continue;
        const after = text.slice(i + 1 + id.length);
        const next = [...after.slice(0, 2)][0];
        if (next && WORDISH.test(next)) continue;
        if (!found.includes(id)) found.push(id);
        break;
      }
      if (found.length >= MAX_MENTIONS) break;
    }
    return found;
  }

  // Text with the @mentions of `mentions` wrapped in highlighted spans (text nodes only).
  function textWithMentions(text, mentions) {
    const frag = document.createDocumentFragment();
    if (!mentions.length || !text.includes('@')) { frag.append(text); return frag; }
    const ids = [...mentions].sort((a, b) => b.length - a.length);
    let from = 0;
    for (let i = text.indexOf('@'); i >= 0; i = text.indexOf('@', i + 1)) {
      if (i > 0 && WORDISH.test(text[i - 1])) continue;
      const id = ids.find((u) => text.startsWith(u, i + 1) && !WORDISH.test([...text.slice(i + 1 + u.length, i + 3 + u.length)][0] || ' '));
      if (!id) continue;
      if (i > from) frag.append(text.slice(from, i));
      frag.append(h('span', { class: 'mention' + (id === S.me ? ' mention-me' : ''), 'data-testid': 'mention',
        'data-user': id, title: S.names.get(id) || id, text: '@' + id }));
      from = i + 1 + id.length;
      i = from - 1;
    }
    if (from < text.length) frag.append(text.slice(from));
    return frag;
  }

  // @-completion in the composer: the word being typed before the caret.
  function updateSuggestions() {
    const t = ui.composerInput;
    const r = S.active;
    if (S.protocol < 2 || !r || t.selectionStart !== t.selectionEnd) { closeSuggestions(); return; }
    const before = t.value.slice(0, t.selectionStart);
    const mt = /(^|[^\p{L}\p{N}\p{M}_])@([^\s@]{0,64})$/u.exec(before);
    if (!mt) { closeSuggestions(); return; }
    const q = mt[2].toLowerCase();
    const scored = [];
    for (const [u, n] of mentionCandidates(r)) {
      if (u === S.me) continue;
      const ul = u.toLowerCase(), nl = String(n).toLowerCase();
      let score = -1;
      if (ul.startsWith(q) || nl.startsWith(q)) score = 0;
      else if (ul.includes(q) || nl.includes(q)) score = 1;
      if (score < 0) continue;
      scored.push({ user: u, name: String(n), score: score + (r.members.has(u) || u === r.peer ? 0 : 2) });
    }
    scored.sort((a, b) => a.score - b.score || a.name.localeCompare(b.name));
    const items = scored.slice(0, MAX_SUGGESTIONS);
    if (!items.length) { closeSuggestions(); return; }
    const prev = S.suggest && S.suggest.items[S.suggest.index];
    const keep = prev ? items.findIndex((x) => x.user === prev.user) : -1;
    S.suggest = { start: before.length - mt[2].length - 1, end: t.selectionStart, items, index: Math.max(keep, 0) };
    renderSuggestions();
  }
  function renderSuggestions() {
    const sg = S.suggest;
    ui.suggestions.hidden = !sg;
    if (!sg) { ui.suggestions.replaceChildren(); ui.composerInput.removeAttribute('aria-activedescendant'); return; }
    ui.suggestions.replaceChildren(...sg.items.map((it, i) => {
      const li = h('li', { class: 'suggestion' + (i === sg.index ? ' active' : ''), role: 'option',
        id: 'mention-option-' + i, 'aria-selected': i === sg.index ? 'true' : 'false',
        'data-testid': 'mention-option', 'data-user': it.user },
      h('span', { class: 'sname', dir: 'auto', text: it.name }),
      it.name !== it.user ? h('span', { class: 'suser', dir: 'auto', text: '@' + it.user }) : null);
      // mousedown: choose before the textarea loses focus
      li.addEventListener('mousedown', (ev) => { ev.preventDefault(); chooseSuggestion(i); });
      return li;
    }));
    ui.composerInput.setAttribute('aria-activedescendant', 'mention-option-' + sg.index);
  }
  function closeSuggestions() {
    if (!S.suggest && ui.suggestions.hidden) return;
    S.suggest = null;
    renderSuggestions();
  }
  function chooseSuggestion(i) {
    const sg = S.suggest;
    if (!sg || !sg.items[i]) return;
    const t = ui.composerInput;
    const ins = '@' + sg.items[i].user + ' ';
    t.value = t.value.slice(0, sg.start) + ins + t.value.slice(sg.end);
    const caret = sg.start + ins.length;
    t.focus();
    t.selectionStart = t.selectionEnd = caret;
    closeSuggestions();
    autosize();
  }

  // The highlighted notification of a `mention` (with a button that opens the message).
  const mentionNotes = [];
  function showMentionNote(room, seq, from) {
    const who = S.names.get(from) || from || 'Someone';
    const where = isDmName(room) ? 'a direct message' : '#' + room;
    const close = h('button', { type: 'button', class: 'icon', 'data-testid': 'mention-dismiss', 'aria-label': 'Dismiss', text: '×' });
    const open = h('button', { type: 'button', class: 'link', 'data-testid': 'mention-open', text: 'Show' });
    const note = h('div', { class: 'mention-note', role: 'alert', 'data-testid': 'mention-notification',
      'data-room': room, 'data-seq': seq, 'data-from': from },
    h('span', { class: 'mention-note-text', dir: 'auto', text: who + ' mentioned you in ' + where }), open, close);
    const entry = { note, timer: null };
    const remove = () => {
      clearTimeout(entry.timer);
      note.remove();
      const i = mentionNotes.indexOf(entry);
      if (i >= 0) mentionNotes.splice(i, 1);
    };
    close.addEventListener('click', remove);
    open.addEventListener('click', () => { remove(); openMention(room, seq, from); });
    entry.timer = setTimeout(remove, MENTION_NOTE_MS);
    mentionNotes.unshift(entry);
    ui.mentionNotes.prepend(note);
    while (mentionNotes.length > MAX_MENTION_NOTES) { const old = mentionNotes.pop(); clearTimeout(old.timer); old.note.remove(); }
  }
  function openMention(room, seq, from) {
    let r = S.rooms.get(room);
    if (!r) {
      if (isDmName(room)) { if (from) openDm(from); }
      else if (!joinByName(room)) return;
      r = S.rooms.get(room);
      if (!r) return;
    } else {
      setActive(r);
    }
    closeDrawers();
    jumpToMessage(room, seq);
  }
  // Scroll to a message of the active room and flash it; if it is not loaded yet, as soon as it is.
  function jumpToMessage(room, seq) {
    const r = S.active;
    if (!r || r.name !== room) return;
    const e = S.els.get(seq);
    if (!e) {
      S.jumpTo = { room, seq };
      if (r.loaded && r.more && isFinite(r.minSeq) && seq < r.minSeq) loadOlder(r);
      return;
    }
    S.jumpTo = null;
    e.scrollIntoView({ block: 'center' });
    e.classList.remove('flash');
    void e.offsetWidth; // restart the animation
    e.classList.add('flash');
  }

  // ---------------------------------------------------------------- v2: search
  // One search at a time, in one room: every word must occur (the server's rule), newest first;
  // "Older results" pages back with `before` = the lowest seq shown.
  function startSearch(query) {
    const r = S.active;
    const q = query.trim();
    if (!r || S.protocol < 2) return;
    if (!q) { closeSearch(); return; }
    closeModLog(); // one panel above the timeline at a time
    S.search = { room: r.name, query: q, results: [], seqs: new Set(), more: false, loading: false,
      error: null, done: false, selected: null };
    searchPage(S.search);
  }
  async function searchPage(sr) {
    if (sr.loading) return;
    sr.loading = true;
    sr.error = null;
    renderSearch();
    const req = { type: 'search', room: sr.room, query: sr.query, limit: SEARCH_LIMIT };
    if (sr.results.length) req.before = sr.results[sr.results.length - 1].seq;
    try {
      const res = await changeRequest(req); // rate_limited stored nothing either: tried again
      if (S.search !== sr) return;
      const got = Array.isArray(res.messages) ? res.messages.filter((m) => m && typeof m.seq === 'number') : [];
      for (const m of got) {
        if (sr.seqs.has(m.seq)) continue;
        sr.seqs.add(m.seq);
        sr.results.push(normMsg(m, m.seq));
        if (m.from != null && m.name && !S.names.has(String(m.from))) S.names.set(String(m.from), String(m.name));
      }
      sr.results.sort((a, b) => b.seq - a.seq);
      sr.more = !!res.more && got.length > 0;
      sr.done = true;
    } catch (e) {
      if (S.search !== sr) return;
      sr.error = e;
    }
    sr.loading = false;
    renderSearch();
  }
  function clearSearchInput() {
    ui.searchInput.value = '';
    ui.searchForm.classList.remove('has-query');
  }
  function closeSearch() {
    if (!S.search && ui.searchPanel.hidden) return;
    S.search = null;
    renderSearch();
  }
  // Scroll to a result's message when the timeline holds it; else only mark the result.
  function openSearchResult(seq) {
    const sr = S.search;
    if (!sr) return;
    sr.selected = seq;
    renderSearch();
    const r = S.active;
    if (r && r.name === sr.room && S.els.get(seq)) jumpToMessage(r.name, seq);
  }

  // The text with each occurrence of the query's words marked (text nodes and <mark> only).
  function highlighted(text, words) {
    const frag = document.createDocumentFragment();
    const low = text.toLowerCase();
    if (low.length !== text.length || !words.length) { frag.append(text); return frag; }
    const hit = new Uint8Array(text.length);
    for (const w of words) {
      const lw = w.toLowerCase();
      if (!lw || lw.length !== w.length) continue;
      for (let i = low.indexOf(lw); i >= 0; i = low.indexOf(lw, i + lw.length)) hit.fill(1, i, i + lw.length);
    }
    for (let i = 0; i < text.length;) {
      let j = i;
      while (j < text.length && hit[j] === hit[i]) j++;
      const piece = text.slice(i, j);
      frag.append(hit[i] ? h('mark', { text: piece }) : piece);
      i = j;
    }
    return frag;
  }

  function searchResultEl(r, sr, found, words) {
    const cur = r && r.bySeq.get(found.seq);
    const m = cur && cur.kind !== 'system' ? cur : found; // the message as it is now, when loaded
    const inTimeline = !!(r && r === S.active && S.els.get(found.seq));
    const selected = sr.selected === found.seq;
    const text = h('div', { class: 'search-text', 'data-testid': 'search-result-text', dir: 'auto' });
    if (m.deleted) text.append(h('span', { class: 'deleted-text', text: 'message deleted' }));
    else text.append(highlighted(m.text, words));
    const li = h('li', { class: 'search-result' + (selected ? ' selected' : ''), 'data-testid': 'search-result',
      'data-seq': found.seq, 'data-from': m.from, 'data-in-timeline': inTimeline ? 'true' : 'false',
      'data-selected': selected ? 'true' : null, 'data-deleted': m.deleted ? 'true' : null, tabindex: 0, role: 'button',
      title: inTimeline ? 'Show it in the conversation' : 'Not loaded in the conversation (scroll up to load older messages)' },
    h('div', { class: 'meta' },
      h('span', { class: 'author', 'data-testid': 'search-result-author', dir: 'auto', text: displayName(m) }),
      h('span', { class: 'time', 'data-testid': 'search-result-time',
        title: m.ts != null ? new Date(m.ts).toLocaleString() : null,
        text: '#' + found.seq + (m.ts != null ? ' · ' + fmtTime(m.ts) : '') })),
    text);
    li.addEventListener('click', () => openSearchResult(found.seq));
    li.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); openSearchResult(found.seq); }
    });
    return li;
  }

  function renderSearch() {
    const sr = S.search;
    ui.searchPanel.hidden = !sr;
    if (!sr) {
      ui.searchResults.replaceChildren();
      ui.searchStatus.textContent = '';
      ui.searchStatus.removeAttribute('data-state');
      ui.searchMore.hidden = true;
      return;
    }
    const r = S.rooms.get(sr.room);
    const label = r ? roomLabel(r) : '#' + sr.room;
    ui.searchPanel.setAttribute('data-room', sr.room);
    ui.searchPanel.setAttribute('data-query', sr.query);
    ui.searchPanel.setAttribute('data-state', sr.loading ? 'loading' : sr.error ? 'error' : 'done');
    const n = sr.results.length;
    ui.searchSummary.textContent = (n ? n + (sr.more ? '+' : '') + (n === 1 ? ' result' : ' results') : 'Search') +
      ' for ' + quoted(sr.query) + ' in ' + label;
    const words = sr.query.split(/\s+/).filter(Boolean);
    ui.searchResults.replaceChildren(...sr.results.map((m) => searchResultEl(r, sr, m, words)));
    let text = '', state = 'done';
    if (sr.loading) { text = 'Searching…'; state = 'loading'; }
    else if (sr.error) {
      const e = sr.error;
      text = (e.code && e.code !== e.message ? e.code + ': ' : '') + (e.message || e.code);
      state = 'error';
    } else if (sr.done && !n) { text = 'no messages found'; state = 'empty'; }
    ui.searchStatus.textContent = text;
    ui.searchStatus.setAttribute('data-state', state);
    ui.searchMore.hidden = !sr.more || sr.loading;
  }

  // ---------------------------------------------------------------- v2: the settings dialog
  // Owners change everything, moderators the topic and slow mode; a room_set carries only the
  // fields that differ from the settings the form was filled with.
  function openSettings() {
    const r = S.active;
    if (!r || r.dm || S.protocol < 2 || !isStaff(r)) return;
    const sf = { room: r.name, base: r.settings || DEFAULT_SETTINGS, touched: false, busy: false };
    S.settingsForm = sf;
    fillSettings(r, sf.base);
    if (!ui.settingsDialog.open) ui.settingsDialog.showModal();
    ui.settingsTopic.focus();
    // the settings as the room has them now (a moderator elsewhere may have changed them)
    request({ type: 'room', room: r.name }).then((res) => {
      if (S.rooms.get(r.name) === r) applySettings(r, res, typeof res.last_seq === 'number' ? res.last_seq : undefined);
    }, (e) => {
      if (S.settingsForm === sf && e.code !== 'disconnected') console.warn('chat: room', r.name, e.code, e.message);
    });
  }
  function fillSettings(r, st) {
    const owner = r.role === 'owner';
    ui.settingsDialog.setAttribute('data-room', r.name);
    ui.settingsTopic.value = st.topic;
    ui.settingsPrivate.checked = st.private;
    ui.settingsReadOnly.checked = st.read_only;
    ui.settingsSlow.value = String(st.slow_mode);
    ui.settingsPrivate.disabled = !owner;
    ui.settingsReadOnly.disabled = !owner;
    ui.settingsNote.hidden = owner;
    ui.settingsSave.disabled = false;
    ui.settingsSave.textContent = 'Save';
    showSettingsError('');
  }
  // Newer settings while the dialog is open: shown, unless the user started editing.
  function refillSettings(r) {
    const sf = S.settingsForm;
    if (!sf || sf.touched || sf.busy || !r.settings) return;
    sf.base = r.settings;
    fillSettings(r, sf.base);
  }
  function showSettingsError(text) {
    ui.settingsError.textContent = text;
    ui.settingsError.hidden = !text;
  }
  function closeSettings() {
    S.settingsForm = null;
    if (ui.settingsDialog.open) ui.settingsDialog.close();
  }
  async function saveSettings() {
    const sf = S.settingsForm;
    if (!sf || sf.busy) return;
    const r = S.rooms.get(sf.room);
    if (!r) { closeSettings(); return; }
    const topic = ui.settingsTopic.value.trim();
    const slowRaw = ui.settingsSlow.value.trim();
    const slow = slowRaw === '' ? 0 : Number(slowRaw);
    if (!Number.isInteger(slow) || slow < 0 || slow > MAX_SLOW_MODE) {
      showSettingsError('Slow mode: a whole number of seconds from 0 to ' + MAX_SLOW_MODE);
      return;
    }
    if (/[\u0000-\u001f\u007f]/.test(topic)) { showSettingsError('The topic is one line of text'); return; }
    const b = sf.base;
    const req = { type: 'room_set', room: r.name };
    if (topic !== b.topic) req.topic = topic;
    if (r.role === 'owner') {
      if (ui.settingsPrivate.checked !== b.private) req.private = ui.settingsPrivate.checked;
      if (ui.settingsReadOnly.checked !== b.read_only) req.read_only = ui.settingsReadOnly.checked;
    }
    if (slow !== b.slow_mode) req.slow_mode = slow;
    if (Object.keys(req).length === 2) { closeSettings(); return; } // nothing changed
    sf.busy = true;
    ui.settingsSave.disabled = true;
    ui.settingsSave.textContent = 'Saving…';
    showSettingsError('');
    try {
      const res = await changeRequest(req);
      // an ack; the moderation event that follows it brings the new settings (a reply with the
      // settings themselves is applied as well)
      if (res && res.type === 'room') applySettings(r, res, typeof res.last_seq === 'number' ? res.last_seq : undefined);
      if (S.settingsForm === sf) closeSettings();
    } catch (e) {
      if (S.settingsForm !== sf) return;
      sf.busy = false;
      ui.settingsSave.disabled = false;
      ui.settingsSave.textContent = 'Save';
      showSettingsError('Not saved: ' + (e.code && e.code !== e.message ? e.code + ': ' : '') + (e.message || e.code));
    }
  }

  // ---------------------------------------------------------------- v2: invites
  // In a private room the owner and moderators invite users by id; the invited user's pages get
  // `invited`: a notice with a Join button, and the room in the list.
  function renderInviteForm() {
    const r = S.active;
    const show = S.protocol >= 2 && !!r && !r.dm && !!r.settings && r.settings.private && isStaff(r);
    ui.inviteForm.hidden = !show;
    if (!show) return;
    if (ui.inviteForm.getAttribute('data-room') !== r.name) {
      ui.inviteForm.setAttribute('data-room', r.name);
      ui.inviteInput.value = '';
      setInviteStatus('', '');
    }
    const opts = [];
    for (const [u, n] of S.names) {
      if (u === S.me || r.members.has(u) || opts.length >= 50) continue;
      opts.push(h('option', { value: u, label: n !== u ? n : null }));
    }
    ui.inviteUsers.replaceChildren(...opts);
  }
  function setInviteStatus(text, state) {
    ui.inviteStatus.textContent = text;
    ui.inviteStatus.hidden = !text;
    ui.inviteStatus.setAttribute('data-state', state);
  }
  async function sendInvite() {
    const r = S.active;
    const user = ui.inviteInput.value.trim().replace(/^@/, '');
    if (!r || r.dm || !user) return;
    ui.inviteButton.disabled = true;
    setInviteStatus('', '');
    try {
      await request({ type: 'invite', room: r.name, user });
      if (S.active === r) {
        setInviteStatus('Invited ' + (S.names.get(user) || user) + ' to #' + r.name, 'ok');
        if (ui.inviteInput.value.trim().replace(/^@/, '') === user) ui.inviteInput.value = '';
      }
    } catch (e) {
      if (S.active === r) setInviteStatus('Could not invite ' + user + ': ' + (e.code && e.code !== e.message ? e.code + ': ' : '') + (e.message || e.code), 'error');
    } finally {
      ui.inviteButton.disabled = false;
    }
  }

  // `{"type":"invited","room","by"}`: this user was made a member of a (private) room.
  function onInvited(m) {
    if (typeof m.room !== 'string' || !ROOM_RE.test(m.room) || isDmName(m.room)) return;
    const by = m.by != null ? String(m.by) : '';
    S.partQueue.delete(m.room);
    const had = S.rooms.get(m.room);
    if (had && (had.joined || had.joining)) return; // here already
    const r = addRoom(m.room);
    r.invitedBy = by;
    renderRoomList();
    // a member may read the settings: the topic, the lock in the list
    request({ type: 'room', room: m.room }).then((res) => {
      if (S.rooms.get(m.room) === r) applySettings(r, res, typeof res.last_seq === 'number' ? res.last_seq : undefined);
    }, () => {});
    showInviteNote(m.room, by);
  }
  const inviteNotes = [];
  function showInviteNote(room, by) {
    removeInviteNote(room);
    const who = by ? S.names.get(by) || by : 'Someone';
    const join = h('button', { type: 'button', class: 'link', 'data-testid': 'invite-join', text: 'Join' });
    const close = h('button', { type: 'button', class: 'icon', 'data-testid': 'invite-dismiss', 'aria-label': 'Dismiss', text: '×' });
    const note = h('div', { class: 'mention-note invite-note', role: 'alert', 'data-testid': 'invite-notification',
      'data-room': room, 'data-by': by },
    h('span', { class: 'mention-note-text', dir: 'auto', text: who + ' invited you to #' + room }), join, close);
    close.addEventListener('click', () => removeInviteNote(room));
    join.addEventListener('click', () => { removeInviteNote(room); joinInvited(room); });
    inviteNotes.unshift({ room, note });
    ui.mentionNotes.prepend(note);
    while (inviteNotes.length > MAX_INVITE_NOTES) inviteNotes.pop().note.remove();
  }
  function removeInviteNote(room) {
    for (let i = inviteNotes.length - 1; i >= 0; i--) {
      if (room == null || inviteNotes[i].room === room) { inviteNotes[i].note.remove(); inviteNotes.splice(i, 1); }
    }
  }
  function joinInvited(room) {
    S.partQueue.delete(room);
    openRoomItem(addRoom(room));
  }

  // ---------------------------------------------------------------- v2: moderation
  // One panel in the people pane, opened from a person's ⋯ button (or empty, "by id", to lift a
  // ban or mute of someone who is not here): kick, ban and mute with their durations, unban,
  // unmute, and for the owner the roles. The server decides what is allowed; its errors show.
  function openModPanel(user) {
    const r = S.active;
    if (!r || r.dm || r.left || S.protocol < 2 || !isStaff(r)) return;
    S.modPanel = { room: r.name, busy: false, confirmOwner: null };
    ui.modUser.value = user || '';
    ui.modReason.value = '';
    setModStatus('', '');
    renderModPanel();
    renderPresence();
    (user ? ui.modReason : ui.modUser).focus();
  }
  function closeModPanel() {
    if (!S.modPanel && ui.modPanel.hidden) return;
    S.modPanel = null;
    renderModPanel();
    renderPresence();
  }
  const modTarget = () => ui.modUser.value.trim().replace(/^@/, '');
  function renderModPanel() {
    const mp = S.modPanel;
    const r = S.active;
    const show = !!mp && !!r && r.name === mp.room && isStaff(r) && !r.left;
    ui.modPanel.hidden = !show;
    if (!show) return;
    const user = modTarget();
    const name = user ? S.names.get(user) || user : '';
    ui.modPanel.setAttribute('data-room', r.name);
    ui.modPanel.setAttribute('data-user', user);
    ui.modTitle.textContent = user ? 'Moderate ' + name : 'Moderate a user in #' + r.name;
    ui.modTitle.title = user ? name + ' (' + user + ') in #' + r.name : '';
    ui.modRoles.hidden = r.role !== 'owner';
    for (const b of ui.modPanel.querySelectorAll('.mod-act')) b.disabled = mp.busy;
    const ownerButton = ui.modRoles.querySelector('[data-role="owner"]');
    const confirming = mp.confirmOwner != null && mp.confirmOwner === user;
    ownerButton.textContent = confirming ? 'Click again to make ' + name + ' the owner' : 'Make owner';
    ownerButton.classList.toggle('confirm', confirming);
  }
  function setModStatus(text, state) {
    ui.modStatus.textContent = text;
    ui.modStatus.hidden = !text;
    ui.modStatus.setAttribute('data-state', state);
  }
  async function moderate(action, role) {
    const mp = S.modPanel;
    const r = S.active;
    if (!mp || mp.busy || !r || r.name !== mp.room) return;
    const user = modTarget();
    if (!user) { setModStatus('Which user? Give their user id', 'error'); ui.modUser.focus(); return; }
    if (action === 'role' && role === 'owner' && mp.confirmOwner !== user) {
      mp.confirmOwner = user; // handing the room on: a second click confirms
      renderModPanel();
      return;
    }
    mp.confirmOwner = null;
    const req = { type: action, room: r.name, user };
    const reason = ui.modReason.value.trim();
    if ((action === 'kick' || action === 'ban' || action === 'mute') && reason) req.reason = reason;
    const secs = action === 'ban' ? ui.modBanDuration.value : action === 'mute' ? ui.modMuteDuration.value : '';
    if (secs) req.seconds = Number(secs);
    if (action === 'role') req.role = role;
    mp.busy = true;
    setModStatus('', '');
    renderModPanel();
    const name = S.names.get(user) || user;
    try {
      await changeRequest(req);
      if (S.modPanel !== mp) return;
      const done = { kick: 'Kicked ' + name, ban: 'Banned ' + name, unban: 'Unbanned ' + name, mute: 'Muted ' + name,
        unmute: 'Unmuted ' + name,
        role: name + (role === 'owner' ? ' is now the owner' : role === 'moderator' ? ' is now a moderator' : ' is now a member') };
      setModStatus(done[action] || 'Done', 'ok');
      if (action === 'kick' || action === 'ban' || action === 'mute') ui.modReason.value = '';
    } catch (e) {
      if (S.modPanel !== mp) return;
      setModStatus('Refused: ' + (e.code && e.code !== e.message ? e.code + ': ' : '') + (e.message || e.code), 'error');
    } finally {
      if (S.modPanel === mp) { mp.busy = false; renderModPanel(); }
    }
  }

  // ---------------------------------------------------------------- v2: the moderation log
  // For the owner and moderators: the room's moderation events (its audit trail, which `history`
  // keeps among everything else), newest first. A load pages back through history with `before`
  // = the oldest seq seen, at most MOD_LOG_PAGES pages or until MOD_LOG_BATCH entries were found;
  // "Load older" goes on from there. A moderation event arriving meanwhile goes on top.
  function newModLog(room) {
    return { room, items: [], seqs: new Set(), before: null, more: true, loading: false, error: null,
      done: false, scanned: 0, flash: new Set() };
  }
  function openModLog() {
    const r = S.active;
    if (!r || r.dm || r.left || S.protocol < 2 || !isStaff(r)) return;
    if (S.search) { closeSearch(); clearSearchInput(); } // one panel above the timeline at a time
    S.modLog = newModLog(r.name);
    renderModLog();
    renderHeader();
    loadModLog(S.modLog);
  }
  function closeModLog() {
    if (!S.modLog && ui.modLogPanel.hidden) return;
    S.modLog = null;
    renderModLog();
    renderHeader();
  }
  // Adds a moderation event to the log (newest first, each seq once); returns whether it was new.
  function addModLogItem(ml, m, live) {
    const r = S.rooms.get(ml.room);
    if (!r || typeof m.seq !== 'number' || ml.seqs.has(m.seq)) return false;
    ml.seqs.add(m.seq);
    const item = normModeration(r, m);
    const items = ml.items;
    if (!items.length || items[items.length - 1].seq > item.seq) items.push(item); // paging back: the oldest so far
    else {
      let i = 0;
      while (items[i].seq > item.seq) i++;
      items.splice(i, 0, item);
    }
    if (live) ml.flash.add(item.seq);
    return true;
  }
  async function loadModLog(ml) {
    if (ml.loading || (ml.done && !ml.more)) return;
    ml.loading = true;
    ml.error = null;
    renderModLog();
    let found = 0;
    try {
      for (let n = 0; n < MOD_LOG_PAGES && ml.more && found < MOD_LOG_BATCH; n++) {
        const req = { type: 'history', room: ml.room, limit: MOD_LOG_PAGE };
        if (ml.before != null) req.before = ml.before;
        const res = await changeRequest(req); // rate_limited read nothing: tried again
        if (S.modLog !== ml) return;
        const got = Array.isArray(res.messages) ? res.messages.filter((m) => m && typeof m.seq === 'number') : [];
        for (const m of got) {
          if (ml.before == null || m.seq < ml.before) ml.before = m.seq;
          if (m.type === 'moderation' && addModLogItem(ml, m, false)) found++;
        }
        ml.scanned += got.length;
        const first = typeof res.first_seq === 'number' ? Math.max(res.first_seq, 1) : 1;
        ml.more = !!res.more && got.length > 0 && ml.before > first;
        if (ml.more) renderModLog(); // what this page found shows while the next one loads
      }
      ml.done = true;
    } catch (e) {
      if (S.modLog !== ml) return;
      ml.error = e;
    }
    ml.loading = false;
    renderModLog();
  }

  const MOD_LOG_ACTIONS = { settings: 'settings', role: 'role', kick: 'kick', ban: 'ban', unban: 'unban',
    mute: 'mute', unmute: 'unmute' };
  // "for 10 min, until Mar 3, 14:20" (a ban or mute with seconds), "until lifted" (without).
  function modLogUntil(m) {
    if (typeof m.until === 'number') {
      const span = typeof m.ts === 'number' && m.until > m.ts ? 'for ' + durationText(m.until - m.ts) + ', ' : '';
      return span + 'until ' + fmtDateTime(m.until);
    }
    return m.action === 'ban' || m.action === 'mute' ? 'until lifted' : '';
  }
  function modLogItemEl(r, ml, m) {
    const name = (u) => S.names.get(u) || u;
    const until = modLogUntil(m);
    let detail = '';
    if (m.action === 'settings') detail = m.settings ? settingsText(r, m) : 'changed the room settings';
    else if (m.action === 'role' && m.role) detail = 'new role: ' + m.role;
    const li = h('li', { class: 'modlog-item' + (ml.flash.has(m.seq) ? ' flash' : ''), 'data-testid': 'modlog-item',
      'data-seq': m.seq, 'data-action': m.action, 'data-by': m.by, 'data-user': m.user, 'data-role': m.role,
      'data-until': m.until, title: moderationText(r, m) + ' (#' + m.seq + ')' },
    h('div', { class: 'meta modlog-meta' },
      h('time', { class: 'time', 'data-testid': 'modlog-time', text: fmtTime(m.ts),
        datetime: m.ts != null ? new Date(m.ts).toISOString() : null,
        title: m.ts != null ? new Date(m.ts).toLocaleString() : null }),
      h('span', { class: 'modlog-by', 'data-testid': 'modlog-by', dir: 'auto', title: m.by, text: name(m.by) || '?' }),
      h('span', { class: 'modlog-action', 'data-testid': 'modlog-action', 'data-action': m.action,
        text: MOD_LOG_ACTIONS[m.action] || m.action || '?' }),
      m.user ? h('span', { class: 'modlog-user', 'data-testid': 'modlog-user', dir: 'auto', title: m.user, text: name(m.user) }) : null),
    detail ? h('div', { class: 'modlog-detail', 'data-testid': 'modlog-detail', dir: 'auto', text: detail }) : null,
    until ? h('div', { class: 'modlog-until', 'data-testid': 'modlog-until',
      title: typeof m.until === 'number' ? new Date(m.until).toLocaleString() : null, text: until }) : null,
    m.reason ? h('div', { class: 'modlog-reason' }, h('span', { class: 'modlog-label', text: 'Reason: ' }),
      h('span', { 'data-testid': 'modlog-reason', dir: 'auto', text: m.reason })) : null);
    return li;
  }
  function renderModLog() {
    const ml = S.modLog;
    const r = ml && S.active && S.active.name === ml.room ? S.active : null;
    const show = !!r && isStaff(r) && !r.left;
    ui.modLogPanel.hidden = !show;
    if (!show) {
      ui.modLogList.replaceChildren();
      ui.modLogStatus.textContent = '';
      ui.modLogStatus.removeAttribute('data-state');
      ui.modLogMore.hidden = true;
      return;
    }
    ui.modLogPanel.setAttribute('data-room', ml.room);
    ui.modLogPanel.setAttribute('data-state', ml.loading ? 'loading' : ml.error ? 'error' : ml.done ? 'done' : 'idle');
    ui.modLogPanel.setAttribute('data-more', ml.more ? 'true' : 'false');
    const n = ml.items.length;
    ui.modLogSummary.textContent = 'Moderation log of ' + roomLabel(r) +
      (n ? ' · ' + n + (ml.more ? '+' : '') + (n === 1 ? ' entry' : ' entries') : '');
    // what a settings entry changed: the next older settings entry, or the defaults once the log
    // goes back to the room's start (else settingsText looks in the timeline)
    let prev = ml.more ? null : DEFAULT_SETTINGS;
    for (let i = n - 1; i >= 0; i--) {
      const m = ml.items[i];
      if (m.action !== 'settings' || !m.settings) continue;
      if (!m.prev && prev) m.prev = prev;
      prev = m.settings;
    }
    ui.modLogList.replaceChildren(...ml.items.map((m) => modLogItemEl(r, ml, m)));
    ml.flash.clear();
    let text = '', state = 'done';
    if (ml.loading) { text = 'Loading…'; state = 'loading'; }
    else if (ml.error) {
      const e = ml.error;
      text = 'Could not load the log: ' + (e.code && e.code !== e.message ? e.code + ': ' : '') + (e.message || e.code);
      state = 'error';
    } else if (ml.done && !n) {
      text = ml.more ? 'No moderation actions in the newest ' + ml.scanned + ' events' : 'No moderation actions in ' + roomLabel(r) + ' yet';
      state = 'empty';
    }
    ui.modLogStatus.textContent = text;
    ui.modLogStatus.setAttribute('data-state', state);
    ui.modLogMore.hidden = ml.loading || !(ml.error || (ml.done && ml.more));
    ui.modLogMore.textContent = ml.error ? 'Try again' : 'Load older';
  }

  function sendTyping() {
    const r = S.active;
    if (!r || S.state !== 'online' || r.noTyping || r.left || isMuted(r) || !ui.composerInput.value.trim()) return;
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
    S.partQueue.delete(name);
    const r = addRoom(name);
    setActive(r);
    if (r.left) rejoin(r);
    else if (S.state === 'online') joinRoom(r, S.gen, false);
    return true;
  }

  function leaveRoom(r) {
    if (!r.dm && (r.joined || r.joining) && S.state === 'online') request({ type: 'leave', room: r.name }).catch(() => {});
    removeRoom(r);
  }

  // Protocol v2: leaving a room ends the membership (`part`), on every device of the user, so it
  // does not come back with my_rooms. Offline, the part goes out on the next welcome. A dm room
  // (no membership) and protocol 1 only close the room here.
  function partRoom(r) {
    if (r.dm || S.protocol < 2) { leaveRoom(r); return; }
    removeRoom(r);
    if (S.state === 'online') partRequest(r.name); else S.partQueue.add(r.name);
  }
  function partRequest(name) {
    S.partQueue.add(name);
    request({ type: 'part', room: name }).then(() => { S.partQueue.delete(name); }, (e) => {
      if (e.code === 'disconnected') return; // stays queued
      S.partQueue.delete(name);
      if (e.code !== 'not_found') reqError('Could not leave #' + name, e);
    });
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
    if (S.active !== r) {
      if (S.replyTo && (!r || S.replyTo.room !== r.name)) S.replyTo = null;
      S.editing = null;
      S.confirmDelete = null;
      closeSuggestions();
      if (r) decideMarker(r); // where "new messages" begins, from before this look
      if (S.search && (!r || S.search.room !== r.name)) { closeSearch(); clearSearchInput(); }
      if (S.settingsForm && (!r || S.settingsForm.room !== r.name)) closeSettings();
      if (S.modPanel && (!r || S.modPanel.room !== r.name)) S.modPanel = null; // renderAll hides it
      if (S.modLog && (!r || S.modLog.room !== r.name)) S.modLog = null;     // and the moderation log
    }
    S.active = r;
    renderAll();
    saveRooms();
    if (r && r.loaded) fillViewport(r);
    noteViewed(r);
  }

  function renderAll() {
    renderRoomList();
    renderHeader();
    if (S.renderedRoom !== S.active) renderMessages(); else { renderPending(); renderHistoryMarker(); }
    renderReplyPreview();
    renderPresence();
    renderModPanel();
    renderTyping();
    renderSearch();
    renderModLog();
    updateTitle();
  }

  function renderHeader() {
    const r = S.active;
    ui.roomTitle.textContent = r ? roomLabel(r) : 'No room';
    const role = r && !r.dm && r.role;
    ui.roomRole.hidden = !role;
    ui.roomRole.textContent = role || '';
    ui.roomRole.setAttribute('data-role', role || '');
    ui.roomRole.title = role ? 'Your role in #' + r.name : '';
    ui.partButton.hidden = !r || r.dm;
    ui.partButton.title = r && !r.dm ? 'Leave #' + r.name + (S.protocol >= 2 ? ' on all your devices' : '') : '';
    // v2: the topic under the title, badges for the settings, the settings button for staff
    const st = r && !r.dm ? r.settings : null;
    const canSet = S.protocol >= 2 && isStaff(r);
    const topic = st ? st.topic : '';
    ui.topicRow.hidden = !topic && !canSet;
    ui.roomTopic.textContent = topic || (canSet ? 'No topic' : '');
    ui.roomTopic.classList.toggle('empty', !topic);
    ui.roomTopic.title = topic;
    ui.roomTopic.setAttribute('data-topic', topic);
    ui.settingsButton.hidden = !canSet;
    ui.modLogButton.hidden = !canSet || !!r.left;
    ui.modLogButton.setAttribute('aria-expanded', S.modLog && r && S.modLog.room === r.name ? 'true' : 'false');
    const badges = [];
    if (st && st.private) badges.push(['private', '🔒 private', 'Only members and invited users can join']);
    if (st && st.read_only) badges.push(['read-only', 'read-only', 'Only the owner and moderators can write']);
    if (st && st.slow_mode > 0) badges.push(['slow-mode', 'slow mode ' + st.slow_mode + 's', 'A member may send one message every ' + st.slow_mode + ' s']);
    ui.roomBadges.replaceChildren(...badges.map(([k, text, title]) =>
      h('span', { class: 'room-badge', 'data-testid': 'room-badge', 'data-badge': k, title, text })));
    ui.searchForm.hidden = S.protocol < 2 || !r;
    ui.searchInput.placeholder = '🔍 Search' + (r ? ' ' + roomLabel(r) : '');
    renderComposerState();
  }

  // The composer: off without a room and, for a plain member, in a read-only room; in slow mode
  // a countdown until the next send is allowed (the text stays in the composer meanwhile).
  function renderComposerState() {
    const r = S.active;
    const locked = writeLocked(r);
    const out = !!(r && r.left); // kicked or banned: the notice says so, the composer keeps its text
    const wait = r ? Math.max(0, r.slowUntil - Date.now()) : 0;
    ui.composerInput.disabled = !r || locked;
    ui.sendButton.disabled = !r || locked || out || wait > 0;
    ui.composerInput.placeholder = !r ? 'Join a room to chat' : out ? 'You are not in ' + roomLabel(r)
      : locked ? 'This room is read-only' : 'Message ' + roomLabel(r);
    ui.readOnlyNote.hidden = !locked || out;
    ui.leftNote.hidden = !out;
    if (out) {
      ui.leftNote.setAttribute('data-room', r.name);
      ui.leftNote.setAttribute('data-kind', r.left.ban ? 'ban' : 'kick');
      ui.leftNoteText.textContent = leftText(r.name, r.left);
      ui.leftNoteError.textContent = r.left.error || '';
      ui.leftNoteError.hidden = !r.left.error;
      ui.rejoinButton.disabled = r.joining || S.state !== 'online';
      ui.rejoinButton.textContent = r.joining ? 'Joining…' : r.left.ban ? 'Try to join again' : 'Join again';
    }
    // muted (v2): the note stays until the mute ends or is lifted; sends are refused meanwhile
    const muted = !out && isMuted(r);
    ui.mutedNote.hidden = !muted;
    ui.mutedNote.textContent = 'You are muted in this room' +
      (muted && isFinite(r.mute.until) ? ' until ' + fmtDateTime(r.mute.until) : '');
    clearTimeout(S.muteTimer);
    S.muteTimer = null;
    if (muted && isFinite(r.mute.until)) {
      S.muteTimer = setTimeout(renderComposerState, Math.min(Math.max(r.mute.until - Date.now(), 0) + 50, 2 ** 31 - 1));
    }
    ui.composer.setAttribute('data-locked', locked ? 'true' : 'false');
    ui.app.classList.toggle('write-locked', locked); // no edit or reply buttons either
    ui.slowNote.hidden = !(wait > 0) || locked;
    if (wait > 0) {
      const secs = Math.ceil(wait / 1000);
      ui.slowNote.textContent = 'Slow mode: you can send again in ' + secs + 's';
      ui.slowNote.setAttribute('data-seconds', String(secs));
      if (!S.slowTimer) S.slowTimer = setInterval(renderComposerState, 250);
    } else {
      ui.slowNote.textContent = '';
      ui.slowNote.removeAttribute('data-seconds');
      if (S.slowTimer) { clearInterval(S.slowTimer); S.slowTimer = null; }
    }
    if (locked && S.suggest) closeSuggestions();
  }

  // A room of the list opened: one the user was invited into (not joined yet) is joined now.
  function openRoomItem(r) {
    setActive(r);
    closeDrawers();
    if (!r.dm && !r.joined && !r.joining && !r.left && S.state === 'online') joinRoom(r, S.gen, false);
  }
  // "Join again" after a kick (or a ban that may have ended): a recovering join, so that what
  // happened meanwhile arrives once.
  function rejoin(r) {
    if (!r || !r.left || r.joining || S.state !== 'online') return;
    r.left.error = null;
    joinRoom(r, S.gen, true); // sets r.joining at once: the button says "Joining…"
    renderComposerState();
  }

  function renderRoomList() {
    const rooms = [], dms = [];
    for (const r of S.rooms.values()) (r.dm ? dms : rooms).push(r);
    const item = (r) => {
      const badge = h('span', { class: 'badge', 'data-testid': 'unread-badge', hidden: r.unread === 0,
        'aria-label': r.unread + ' unread', text: r.unread > 99 ? '99+' : String(r.unread) });
      const close = h('button', { class: 'leave', type: 'button', 'data-testid': 'leave-button',
        title: r.dm ? 'Close' : 'Leave ' + r.name, 'aria-label': r.dm ? 'Close' : 'Leave', text: '×' });
      close.addEventListener('click', (ev) => { ev.stopPropagation(); partRoom(r); });
      const li = h('li', { class: 'room-item' + (r === S.active ? ' active' : '') + (r.unread ? ' has-unread' : '') +
          (r.mentioned ? ' has-mention' : '') + (r.invitedBy != null && !r.joined ? ' invited' : '') + (r.left ? ' left' : ''),
        'data-testid': 'room-item', 'data-room': r.name, 'data-unread': r.unread,
        'data-mentioned': r.mentioned ? 'true' : null,
        'data-joined': r.joined ? 'true' : 'false', 'data-role': r.role,
        'data-private': r.settings && r.settings.private ? 'true' : null,
        'data-invited': r.invitedBy != null && !r.joined ? 'true' : null,
        'data-left': r.left ? (r.left.ban ? 'ban' : 'kick') : null,
        'data-read-seq': r.readKnown ? r.readSeq : null, tabindex: 0, role: 'button',
        'aria-current': r === S.active ? 'true' : null },
      r.settings && r.settings.private ? h('span', { class: 'room-lock', 'data-testid': 'room-lock', title: 'Private room',
        'aria-label': 'private', text: '🔒' }) : null,
      h('span', { class: 'room-name', dir: 'auto', text: roomLabel(r) }),
      r.invitedBy != null && !r.joined ? h('span', { class: 'invited-mark', 'data-testid': 'invited-mark',
        title: 'Invited by ' + (S.names.get(r.invitedBy) || r.invitedBy), text: 'invited' }) : null,
      r.mentioned ? h('span', { class: 'mention-badge', 'data-testid': 'mention-badge', title: 'You were mentioned', text: '@' }) : null,
      badge, close);
      li.addEventListener('click', () => openRoomItem(r));
      li.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); openRoomItem(r); } });
      return li;
    };
    ui.roomList.replaceChildren(...rooms.map(item));
    ui.dmList.replaceChildren(...dms.map(item));
    if (!dms.length) ui.dmList.append(h('li', { class: 'empty', text: 'Pick someone under People' }));
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dateTimeFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  function fmtDateTime(ts) {
    const d = new Date(ts);
    return isNaN(d) ? '' : dateTimeFmt.format(d);
  }
  function fmtTime(ts) {
    if (ts == null) return '';
    const d = new Date(ts);
    if (isNaN(d)) return '';
    return new Date().toDateString() === d.toDateString() ? timeFmt.format(d) : dateTimeFmt.format(d);
  }

  function hue(s) { let x = 0; for (const c of s) x = (x * 31 + c.codePointAt(0)) >>> 0; return x % 360; }
  function initial(s) { const c = [...(s || '?').trim()][0] || '?'; return c.toUpperCase(); }

  const firstLine = (text) => {
    const line = String(text || '').split('\n').find((l) => l.trim()) || '';
    const cps = [...line];
    return cps.length > 120 ? cps.slice(0, 120).join('') + '…' : line;
  };
  const displayName = (m) => m.name || S.names.get(m.from) || m.from || '?';

  // The quote of the message `seq` answers: its author and first line, or "reply to #seq" when
  // that message is not loaded.
  function quoteEl(r, seq) {
    const q = r.bySeq.get(seq);
    const attrs = { class: 'quote' + (q ? '' : ' missing') + (q && q.deleted ? ' deleted' : ''),
      'data-testid': 'reply-quote', 'data-reply-to': seq, title: q ? 'Show the message' : null };
    let el;
    if (!q) el = h('div', attrs, h('span', { class: 'quote-text', text: 'reply to #' + seq }));
    else {
      el = h('div', attrs,
        h('span', { class: 'quote-author', dir: 'auto', 'data-testid': 'reply-quote-author', text: displayName(q) }),
        h('span', { class: 'quote-text', dir: 'auto', 'data-testid': 'reply-quote-text',
          text: q.deleted ? 'message deleted' : firstLine(q.text) }));
      el.addEventListener('click', () => jumpToMessage(r.name, seq));
    }
    return el;
  }

  function reactionsEl(r, m) {
    if (m.deleted || !m.reactions.length) return null;
    return h('div', { class: 'reactions', 'data-testid': 'reactions' }, ...m.reactions.map((x) => {
      const mine = x.users.includes(S.me);
      const names = x.users.map((u) => (u === S.me ? 'you' : S.names.get(u) || u));
      const more = x.count - x.users.length;
      const who = names.join(', ') + (more > 0 ? ' and ' + more + ' more' : '');
      const b = h('button', { type: 'button', class: 'reaction' + (mine ? ' mine' : ''), 'data-testid': 'reaction',
        'data-emoji': x.emoji, 'data-count': x.count, 'data-mine': mine ? 'true' : 'false',
        'aria-pressed': mine ? 'true' : 'false', title: who + ' reacted with ' + x.emoji,
        disabled: S.protocol < 2 ? true : null },
      h('span', { class: 'emoji', text: x.emoji }), h('span', { class: 'count', 'data-testid': 'reaction-count', text: String(x.count) }));
      b.addEventListener('click', () => toggleReaction(r, m, x.emoji));
      return b;
    }));
  }

  function actionsEl(r, m) {
    if (S.protocol < 2 || m.deleted) return null;
    const mine = m.from === S.me;
    if (S.confirmDelete && S.confirmDelete.room === r.name && S.confirmDelete.seq === m.seq) {
      const yes = h('button', { type: 'button', class: 'danger', 'data-testid': 'delete-confirm', text: 'Delete' });
      const no = h('button', { type: 'button', class: 'link', 'data-testid': 'delete-cancel', text: 'Cancel' });
      yes.addEventListener('click', () => deleteMessage(r, m));
      no.addEventListener('click', () => { S.confirmDelete = null; rerenderMessage(r, m.seq, true); });
      return h('div', { class: 'msg-actions confirming', 'data-testid': 'message-actions' },
        h('span', { class: 'confirm-text', text: 'Delete this message?' }), yes, no);
    }
    const bar = h('div', { class: 'msg-actions', 'data-testid': 'message-actions' });
    for (const emoji of QUICK_EMOJI) {
      const x = m.reactions.find((y) => y.emoji === emoji);
      const on = !!(x && x.users.includes(S.me));
      const b = h('button', { type: 'button', class: 'act emoji' + (on ? ' on' : ''), 'data-testid': 'react-button',
        'data-emoji': emoji, title: (on ? 'Remove ' : 'React with ') + emoji, 'aria-label': (on ? 'Remove ' : 'React with ') + emoji, text: emoji });
      b.addEventListener('click', () => toggleReaction(r, m, emoji));
      bar.append(b);
    }
    const reply = h('button', { type: 'button', class: 'act', 'data-testid': 'reply-button', title: 'Reply', text: 'Reply' });
    reply.addEventListener('click', () => startReply(r, m));
    bar.append(reply);
    if (mine) {
      const edit = h('button', { type: 'button', class: 'act', 'data-testid': 'edit-button', title: 'Edit', text: 'Edit' });
      edit.addEventListener('click', () => startEdit(r, m));
      const del = h('button', { type: 'button', class: 'act', 'data-testid': 'delete-button', title: 'Delete', text: 'Delete' });
      del.addEventListener('click', () => {
        S.confirmDelete = { room: r.name, seq: m.seq };
        if (S.editing && S.editing.room === r.name && S.editing.seq === m.seq) S.editing = null;
        rerenderMessage(r, m.seq, true);
        const c = S.els.get(m.seq) && S.els.get(m.seq).querySelector('[data-testid="delete-cancel"]');
        if (c) c.focus();
      });
      bar.append(edit, del);
    }
    return bar;
  }

  function editorEl(r, m) {
    const ed = S.editing;
    const input = h('textarea', { class: 'edit-input', 'data-testid': 'edit-input', rows: 2, dir: 'auto',
      'aria-label': 'Edit message', disabled: ed.busy ? true : null });
    input.value = ed.draft;
    input.addEventListener('input', () => { ed.draft = input.value; });
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); saveEdit(r, m); }
      else if (ev.key === 'Escape') { ev.preventDefault(); stopEdit(r, m.seq); ui.composerInput.focus(); }
    });
    const save = h('button', { type: 'button', 'data-testid': 'edit-save', disabled: ed.busy ? true : null, text: ed.busy ? 'Saving…' : 'Save' });
    const cancel = h('button', { type: 'button', class: 'link', 'data-testid': 'edit-cancel', text: 'Cancel' });
    save.addEventListener('click', () => saveEdit(r, m));
    cancel.addEventListener('click', () => stopEdit(r, m.seq));
    return h('div', { class: 'editor', 'data-testid': 'message-editor' }, input,
      h('div', { class: 'editor-buttons' }, save, cancel, h('span', { class: 'hint', text: 'Enter to save · Esc to cancel' })));
  }

  function messageEl(r, m) {
    if (m.kind === 'system') return systemEl(r, m);
    const display = displayName(m);
    const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true', text: initial(display) });
    avatar.style.backgroundColor = 'hsl(' + hue(m.from || display) + ' 55% 45%)';
    const time = h('time', { class: 'time', 'data-testid': 'message-time', text: fmtTime(m.ts),
      datetime: m.ts != null ? new Date(m.ts).toISOString() : null,
      title: m.ts != null ? new Date(m.ts).toLocaleString() : null });
    const mentionsMe = S.me != null && m.mentions.includes(S.me) && !m.deleted;
    const editing = S.editing && S.editing.room === r.name && S.editing.seq === m.seq && !m.deleted;
    const meta = h('div', { class: 'meta' },
      h('span', { class: 'author', 'data-testid': 'message-author', dir: 'auto', text: display }), time,
      m.editedTs != null && !m.deleted ? h('span', { class: 'edited', 'data-testid': 'message-edited',
        title: 'Edited ' + new Date(m.editedTs).toLocaleString(), text: '(edited)' }) : null);
    // message-text is always there (empty once deleted): tests and tools read it on every message
    const text = h('div', { class: 'text', 'data-testid': 'message-text', dir: 'auto', hidden: m.deleted || editing });
    text.append(textWithMentions(m.text, m.mentions));
    const li = h('li', { class: 'msg' + (m.from === S.me ? ' mine' : '') + (m.deleted ? ' deleted' : '') +
        (mentionsMe ? ' mentions-me' : ''), 'data-testid': 'message',
      'data-seq': m.seq, 'data-room': r.name, 'data-from': m.from,
      'data-deleted': m.deleted ? 'true' : null, 'data-edited': m.editedTs != null && !m.deleted ? 'true' : null,
      'data-reply-to': m.replyTo, 'data-mentions-me': mentionsMe ? 'true' : null },
    avatar,
    h('div', { class: 'body' },
      meta,
      m.replyTo != null ? quoteEl(r, m.replyTo) : null,
      text,
      m.deleted ? h('div', { class: 'text deleted-text', 'data-testid': 'message-deleted', text: 'message deleted' }) : null,
      editing ? editorEl(r, m) : null,
      reactionsEl(r, m)),
    actionsEl(r, m));
    S.els.set(m.seq, li);
    return li;
  }

  function startReply(r, m) {
    if (m.deleted) return;
    S.replyTo = { room: r.name, seq: m.seq };
    renderReplyPreview();
    ui.composerInput.focus();
  }
  function renderReplyPreview() {
    const r = S.active;
    const rt = S.replyTo;
    if (!rt || !r || rt.room !== r.name) { ui.replyPreview.hidden = true; ui.replyPreviewText.replaceChildren(); return; }
    ui.replyPreview.hidden = false;
    ui.replyPreview.setAttribute('data-reply-to', String(rt.seq));
    const q = r.bySeq.get(rt.seq);
    ui.replyPreviewText.replaceChildren(
      h('span', { class: 'reply-label', text: 'Replying to ' }),
      q ? h('span', { class: 'quote-author', dir: 'auto', text: displayName(q) }) : null,
      h('span', { class: 'quote-text', dir: 'auto', 'data-testid': 'reply-preview-text',
        text: q ? (q.deleted ? 'message deleted' : firstLine(q.text)) : '#' + rt.seq }));
  }

  function renderMessages() {
    const r = S.active;
    S.renderedRoom = r;
    S.els = new Map();
    S.newLine = null;
    const frag = document.createDocumentFragment();
    if (r) for (const m of r.msgs) frag.append(messageEl(r, m));
    ui.messages.replaceChildren(frag);
    placeNewLine();
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
          o.replyTo != null ? quoteEl(r, o.replyTo) : null,
          h('div', { class: 'text', dir: 'auto' }, textWithMentions(o.text, o.mentions || []))));
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
    renderInviteForm();
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
    // v2: the owner and moderators get a Moderate button on everyone else (the server refuses
    // what their role does not allow, and the panel shows its error)
    const canModerate = S.protocol >= 2 && !!r && !r.dm && !r.left && isStaff(r);
    ui.modOpen.hidden = !canModerate;
    ui.presence.replaceChildren(...list.map(([user, name]) => {
      const role = r && !r.dm ? (user === S.me ? r.role : (r.knownRoles.get(user) || {}).role) : null;
      const li = h('li', { class: 'person', 'data-testid': 'presence-item', 'data-user': user,
        'data-role': role && role !== 'member' ? role : null },
        h('span', { class: 'dot', 'aria-hidden': 'true' }),
        h('span', { class: 'pname', dir: 'auto', text: name }),
        user === S.me ? h('span', { class: 'you', text: '(you)' }) : null,
        role && role !== 'member' ? h('span', { class: 'person-role', 'data-testid': 'person-role', 'data-role': role,
          text: role === 'owner' ? 'owner' : 'mod' }) : null);
      if (user !== S.me && !(r && r.dm)) {
        const b = h('button', { type: 'button', class: 'dm', 'data-testid': 'dm-button', title: 'Message ' + name, text: 'Message' });
        b.addEventListener('click', () => openDm(user));
        li.append(b);
        if (canModerate) {
          const open = !!(S.modPanel && S.modPanel.room === r.name && S.modPanel.user === user);
          const mb = h('button', { type: 'button', class: 'mod', 'data-testid': 'mod-button', title: 'Moderate ' + name,
            'aria-label': 'Moderate ' + name, 'aria-expanded': open ? 'true' : 'false', 'aria-controls': 'mod-panel', text: '⋯' });
          mb.addEventListener('click', () => { if (open) closeModPanel(); else openModPanel(user); });
          li.append(mb);
        }
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
    for (const r of S.rooms.values()) clearTimeout(r.readTimer);
    S.rooms = new Map();
    S.active = null;
    S.outbox = [];
    S.names = new Map();
    S.everOnline = false;
    S.me = null;
    S.replyTo = null;
    S.editing = null;
    S.confirmDelete = null;
    S.jumpTo = null;
    S.mentionSeen = new Set();
    S.partQueue = new Set();
    S.newLine = null;
    for (const e of mentionNotes.splice(0)) { clearTimeout(e.timer); e.note.remove(); }
    removeInviteNote(null);
    closeSuggestions();
    closeSearch();
    clearSearchInput();
    closeSettings();
    S.modPanel = null;
    renderModPanel();
    closeModLog();
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
  document.addEventListener('visibilitychange', () => noteViewed(S.active));
  window.addEventListener('focus', () => noteViewed(S.active));

  ui.joinForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (joinByName(ui.roomInput.value)) { ui.roomInput.value = ''; closeDrawers(); }
  });

  ui.composer.addEventListener('submit', (ev) => { ev.preventDefault(); submitMessage(); ui.composerInput.focus(); });
  ui.composerInput.addEventListener('keydown', (ev) => {
    if (ev.isComposing) return;
    const sg = S.suggest;
    if (sg) {
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        ev.preventDefault();
        sg.index = (sg.index + (ev.key === 'ArrowDown' ? 1 : sg.items.length - 1)) % sg.items.length;
        renderSuggestions();
        return;
      }
      if (ev.key === 'Enter' || ev.key === 'Tab') { ev.preventDefault(); chooseSuggestion(sg.index); return; }
      if (ev.key === 'Escape') { ev.preventDefault(); closeSuggestions(); return; }
    }
    if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); submitMessage(); }
    else if (ev.key === 'Escape' && S.replyTo) { ev.preventDefault(); S.replyTo = null; renderReplyPreview(); }
  });
  ui.composerInput.addEventListener('input', () => { autosize(); sendTyping(); updateSuggestions(); });
  ui.composerInput.addEventListener('click', updateSuggestions);
  ui.composerInput.addEventListener('keyup', (ev) => {
    if (ev.key === 'ArrowLeft' || ev.key === 'ArrowRight' || ev.key === 'Home' || ev.key === 'End') updateSuggestions();
  });
  ui.composerInput.addEventListener('blur', () => setTimeout(() => {
    if (document.activeElement !== ui.composerInput) closeSuggestions();
  }, 100));
  ui.replyCancel.addEventListener('click', () => { S.replyTo = null; renderReplyPreview(); ui.composerInput.focus(); });

  ui.scroller.addEventListener('scroll', () => {
    if (ui.scroller.scrollTop < 80) loadOlder(S.active);
    noteViewed(S.active);
  }, { passive: true });
  ui.partButton.addEventListener('click', () => { if (S.active) { partRoom(S.active); closeDrawers(); } });

  // v2: search, settings, invites
  ui.searchForm.addEventListener('submit', (ev) => { ev.preventDefault(); startSearch(ui.searchInput.value); });
  ui.searchInput.addEventListener('input', () => ui.searchForm.classList.toggle('has-query', !!ui.searchInput.value));
  ui.searchInput.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') { ev.preventDefault(); clearSearchInput(); closeSearch(); ui.composerInput.focus(); }
  });
  ui.searchClose.addEventListener('click', () => { closeSearch(); clearSearchInput(); });
  ui.searchMore.addEventListener('click', () => { if (S.search) searchPage(S.search); });
  ui.settingsButton.addEventListener('click', openSettings);
  ui.settingsForm.addEventListener('submit', (ev) => { ev.preventDefault(); saveSettings(); });
  ui.settingsForm.addEventListener('input', () => { if (S.settingsForm) S.settingsForm.touched = true; });
  ui.settingsCancel.addEventListener('click', closeSettings);
  ui.settingsDialog.addEventListener('close', () => { S.settingsForm = null; });
  ui.inviteForm.addEventListener('submit', (ev) => { ev.preventDefault(); sendInvite(); });
  // v2: moderation
  ui.modOpen.addEventListener('click', () => openModPanel(''));
  ui.modClose.addEventListener('click', closeModPanel);
  ui.modPanel.addEventListener('submit', (ev) => ev.preventDefault());
  ui.modPanel.addEventListener('click', (ev) => {
    const b = ev.target.closest('.mod-act');
    if (b && !b.disabled) moderate(b.getAttribute('data-action'), b.getAttribute('data-role'));
  });
  ui.modPanel.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') { ev.preventDefault(); closeModPanel(); } });
  ui.modUser.addEventListener('input', () => { if (S.modPanel) { S.modPanel.confirmOwner = null; setModStatus('', ''); renderModPanel(); } });
  ui.rejoinButton.addEventListener('click', () => rejoin(S.active));
  ui.modLogButton.addEventListener('click', () => {
    if (S.modLog && S.active && S.modLog.room === S.active.name) closeModLog(); else openModLog();
  });
  ui.modLogClose.addEventListener('click', closeModLog);
  ui.modLogMore.addEventListener('click', () => { if (S.modLog) loadModLog(S.modLog); });
  ui.modLogPanel.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') { ev.preventDefault(); closeModLog(); } });

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
