#include "actors/room.hpp"

#include <spdlog/spdlog.h>

#include <limits>

#include <nlohmann/json.hpp>

#include "actors/metrics.hpp"
#include "messages/clock.hpp"
#include "messages/codec.hpp"
#include "messages/validate.hpp"

namespace chat {

namespace {

using conn_key = std::pair<gateway_actor, uint64_t>;

void count(errc code) { global_metrics().count_error(std::string(to_string(code))); }

// --- replies ---------------------------------------------------------------------------

// Where a request's answer goes: the requester's promise when it came with
// request(...) (the server API, one round trip), else the connection's gateway.
reply_to reply_target(room_actor* self, const conn_ref& c, const std::string& req_id) {
  return reply_to{c, req_id, self->make_response_promise()};
}

template <class T>
void answer(room_actor* self, reply_to& to, T msg) {
  msg.conn = to.conn.id;
  msg.req_id = to.req_id;
  if (!to.rp.async())
    to.rp.deliver(std::move(msg));
  else if (to.conn.gateway)
    self->send(to.conn.gateway, std::move(msg));
}

void answer_error(room_actor* self, reply_to& to, errc code, std::string message,
                  int64_t retry_ms = 0) {
  count(code);
  if (!to.rp.async())
    to.rp.deliver(make_chat_error(code, std::move(message)));
  else if (to.conn.gateway)
    self->send(to.conn.gateway,
               error_msg{to.conn.id, to.req_id, code, std::move(message), {}, retry_ms});
}

// A private room answers a non-member's reads as a room that does not exist
// (the directory's words), so that its name tells nothing.
constexpr const char* no_such_room = "no such room";

void answer_ack(room_actor* self, reply_to& to, uint64_t seq, int64_t ts) {
  answer(self, to, ack_msg{0, {}, self->state.room, seq, ts});
}

// The same ack for every duplicate that waited for a key's first send.
void ack_all(room_actor* self, std::vector<reply_to> waiters, uint64_t seq, int64_t ts) {
  for (auto& to : waiters) answer_ack(self, to, seq, ts);
}

// --- membership --------------------------------------------------------------------------

bool is_member(room_actor* self, const conn_ref& c) {
  auto& by_gw = self->state.members.by_gateway;
  auto it = by_gw.find(c.gateway);
  return it != by_gw.end() && it->second.count(c.id) > 0;
}

bool is_participant(room_actor* self, const std::string& user) {
  return user == self->state.dm_a || user == self->state.dm_b;
}

// The user's role (member when they hold no membership).
member_role role_of(room_actor* self, const std::string& user) {
  auto it = self->state.memberships.find(user);
  return it == self->state.memberships.end() ? member_role::member : it->second.role;
}

// Owner, moderators, server admins and the server API: above the room's rules.
bool is_staff(room_actor* self, const std::string& user, bool admin, bool trusted) {
  return admin || trusted || role_of(self, user) != member_role::member;
}

// Who may read a room (history, search, presence, settings): anyone, but a
// private room only its members and admins. Empty `user`: the server API.
bool may_read(room_actor* self, const std::string& user, bool admin) {
  auto& st = self->state;
  if (user.empty() || admin) return true;
  if (st.dm) return is_participant(self, user);
  return !st.settings.private_room || st.memberships.count(user) > 0;
}

// A user's ban or mute in force at `now` (ms).
bool is_banned(room_actor* self, const std::string& user, int64_t now) {
  auto it = self->state.restrictions.find(user);
  return it != self->state.restrictions.end() && it->second.banned(now);
}
bool is_muted(room_actor* self, const std::string& user, int64_t now) {
  auto it = self->state.restrictions.find(user);
  return it != self->state.restrictions.end() && (it->second.muted(now) || it->second.banned(now));
}

// A user connected with the token role admin: nobody moderates them.
bool is_connected_admin(room_actor* self, const std::string& user) {
  auto it = self->state.members.users.find(user);
  return it != self->state.members.users.end() && it->second.admin;
}

// Every joined connection of `user` stops receiving the room (left_msg: the
// connection `except` with the parted reply, the others told `silent` or not).
void drop_connections(room_actor* self, const std::string& user, bool silent,
                      const conn_ref& except = {});

// One CAF message per gateway that has members.
void broadcast(room_actor* self, uint64_t seq, const std::string& frame,
               const std::string& skip_user = {}) {
  for (auto& [gw, conns] : self->state.members.by_gateway)
    self->send(gw, deliver{self->state.room, seq, frame, skip_user});
}

std::vector<member_info> list_members(room_actor* self, size_t max) {
  std::vector<member_info> out;
  for (auto& [user, entry] : self->state.members.users) {
    if (out.size() >= max) break;
    out.push_back({user, entry.name});
  }
  return out;
}

bool busy(room_actor* self) {
  auto& st = self->state;
  return st.members.conn_count > 0 || st.in_flight || !st.queued.empty() || !st.held.empty() ||
         st.looking_up || !st.pending_joins.empty() || !st.member_dirty.empty() ||
         !st.restrict_dirty.empty();
}

void schedule_idle_check(room_actor* self) {
  if (busy(self)) return;
  self->delayed_send(self, self->state.deps.cfg.idle_grace, idle_chk_atom_v,
                     ++self->state.idle_gen);
}

void presence_event(room_actor* self, bool joined, const member_info& who) {
  auto& st = self->state;
  switch (st.presence.change(joined, who, st.members.users.size(), self->clock().now())) {
    case presence_action::send_now:
      broadcast(self, 0,
                encode_member_event(joined ? "member_joined" : "member_left", st.room, who),
                who.user);
      break;
    case presence_action::schedule_tick:
      self->delayed_send(self, st.deps.cfg.presence_batch_interval, presence_tick_atom_v);
      break;
    case presence_action::batched:
      break;
  }
}

void add_member(room_actor* self, const conn_ref& c, const member_info& who, bool admin) {
  auto& m = self->state.members;
  auto& conns = m.by_gateway[c.gateway];
  if (conns.empty()) self->monitor(c.gateway);
  if (!conns.emplace(c.id, who.user).second) return;
  ++m.conn_count;
  auto& u = m.users[who.user];
  u.admin = u.admin || admin;
  if (u.conns++ == 0) {
    u.name = who.name;
    presence_event(self, true, who);
  }
}

// Removes one connection; member_left when it was its user's last.
void remove_member(room_actor* self, const gateway_actor& gw, uint64_t id) {
  auto& m = self->state.members;
  auto git = m.by_gateway.find(gw);
  if (git == m.by_gateway.end()) return;
  auto cit = git->second.find(id);
  if (cit == git->second.end()) return;
  std::string user = std::move(cit->second);
  git->second.erase(cit);
  if (git->second.empty()) {
    self->demonitor(gw.address());
    m.by_gateway.erase(git);
  }
  --m.conn_count;
  auto uit = m.users.find(user);
  if (uit != m.users.end() && --uit->second.conns == 0) {
    member_info who{user, uit->second.name};
    m.users.erase(uit);
    presence_event(self, false, who);
  }
  schedule_idle_check(self);
}

// --- the sequence ---------------------------------------------------------------------------

// Background retention trims the store behind the room's back; every store
// read tells the room the oldest seq left, so `first_seq` and `more` stay true.
void learn_first_seq(room_actor* self, uint64_t first) {
  auto& st = self->state;
  if (first <= st.first_seq) return;
  st.first_seq = std::min(first, st.last_seq + 1);
  st.recent.trim_below(st.first_seq);
}

// Every connection of each mentioned user (but the author) hears of it,
// joined or not: one user_deliver per home registry.
void notify_mentions(room_actor* self, const stored_msg& msg) {
  auto& st = self->state;
  std::map<caf::actor, std::vector<std::string>> by_registry;
  for (auto& u : msg.mentions)
    if (u != msg.from && (!st.settings.private_room || st.memberships.count(u)))
      if (auto reg = st.deps.registry_for(u)) by_registry[reg].push_back(u);
  if (by_registry.empty()) return;
  auto frame = encode_mention(st.room, msg.seq, msg.from);
  for (auto& [reg, users] : by_registry)
    self->send(reg, user_deliver{std::move(users), st.room, 0, frame});
}

// A kick or ban committed: the user's connections are told (all of them,
// through the user's registry) and the joined ones stop receiving the room.
void eject(room_actor* self, const stored_msg& ev) {
  auto& st = self->state;
  auto d = nlohmann::json::parse(ev.data, nullptr, false);
  if (!d.is_object() || !d.contains("user") || !d["user"].is_string()) return;
  auto user = d["user"].get<std::string>();
  auto reason = d.value("reason", std::string{});
  int64_t until = d.value("until", int64_t{0});
  if (auto reg = st.deps.registry_for(user))
    self->send(reg, user_deliver{{user}, st.room, 0,
                                 encode_kicked(st.room, ev.from, reason, ev.text == "ban", until)});
  drop_connections(self, user, true);
}

// A committed event: ack the sender, broadcast, then keep it in the window.
void publish(room_actor* self, stored_msg&& msg, reply_to* sender, int64_t t0_us) {
  auto& st = self->state;
  st.last_seq = msg.seq;
  st.last_ts = std::max(st.last_ts, msg.ts);
  if (st.first_seq > msg.seq) st.first_seq = msg.seq;
  auto frame = encode_message(msg);
  if (sender) {
    answer_ack(self, *sender, msg.seq, msg.ts);
    global_metrics().observe_rtt_us(static_cast<uint64_t>(std::max<int64_t>(0, steady_us() - t0_us)));
  }
  if (st.dm) {
    // Each user's connections are known to the registry on that user's home node.
    auto ra = st.deps.registry_for(st.dm_a), rb = st.deps.registry_for(st.dm_b);
    if (ra == rb) {
      if (ra) self->send(ra, user_deliver{{st.dm_a, st.dm_b}, st.room, msg.seq, frame});
    } else {
      if (ra) self->send(ra, user_deliver{{st.dm_a}, st.room, msg.seq, frame});
      if (rb) self->send(rb, user_deliver{{st.dm_b}, st.room, msg.seq, std::move(frame)});
    }
  } else {
    broadcast(self, msg.seq, frame);
  }
  global_metrics().messages_stored.fetch_add(1, std::memory_order_relaxed);
  if (msg.kind == event_kind::message && !msg.mentions.empty() && !st.dm)
    notify_mentions(self, msg);
  if (msg.kind == event_kind::moderation) {
    // The server-wide moderation log: every action, once, when stored.
    global_metrics().count_moderation(msg.text);
    spdlog::info("event=moderation room={} seq={} action={} by={} detail={}", st.room, msg.seq,
                 msg.text, msg.from, msg.data);
    if (msg.text == "kick" || msg.text == "ban") eject(self, msg);
  }
  if (msg.kind != event_kind::message && msg.kind != event_kind::moderation) {
    // The target's current state follows, wherever the room holds it.
    if (!st.recent.apply(msg)) {
      auto it = st.looked_up.find(msg.target);
      if (it != st.looked_up.end()) apply_change(it->second, msg);
    }
  }
  st.recent.push(std::move(msg));
}

void dispatch(room_actor* self);

// A stored read position: the reply, and the user's other connections hear
// it. A stored invite: an ack without seq, and the invited user hears it.
void continue_join(room_actor* self, const join_req& req);

void answer_read(room_actor* self, room_state::read_waiter& r) {
  auto& st = self->state;
  if (r.join) {
    // Unless the connection left (or the room moved) meanwhile.
    if (st.pending_joins.erase({r.join->conn.gateway, r.join->conn.id}) > 0)
      continue_join(self, *r.join);
    return;
  }
  if (r.part) {
    answer(self, r.to, left_msg{0, {}, st.room, true});
    return;
  }
  if (r.invite) {
    answer(self, r.to, ack_msg{0, {}, st.room, 0, 0});
    if (auto reg = st.deps.registry_for(r.user))
      self->send(reg, user_deliver{{r.user}, st.room, 0, encode_invited(st.room, r.invited_by)});
    return;
  }
  auto conn = r.to.conn;
  answer(self, r.to, read_msg{0, {}, st.room, r.seq});
  if (auto reg = st.deps.registry_for(r.user)) {
    read_msg ev{0, {}, st.room, r.seq};
    self->send(reg, user_deliver{{r.user}, st.room, 0, encode(ev), conn});
  }
}

// Changes of a batch that did not commit go again with the next one (unless
// changed since); the reads that waited for it wait for that one.
void requeue_members(room_actor* self) {
  auto& st = self->state;
  for (auto& [user, m] : st.member_flying) st.member_dirty.emplace(user, std::move(m));
  st.member_flying.clear();
  for (auto& [user, r] : st.restrict_flying) st.restrict_dirty.emplace(user, std::move(r));
  st.restrict_flying.clear();
  for (auto& r : st.reads_flying) st.reads_waiting.push_back(std::move(r));
  st.reads_flying.clear();
}

// The store committed the batch it hands back: the flying sends, in order.
void on_committed(room_actor* self, append_batch& done) {
  auto& st = self->state;
  // First joins whose membership this batch stored are answered before its
  // messages are published: they get those live, as if joined when asked.
  std::vector<room_state::read_waiter> joins, others;
  for (auto& r : st.reads_flying) (r.join ? joins : others).push_back(std::move(r));
  st.reads_flying = std::move(others);
  for (auto& r : joins) answer_read(self, r);
  auto flying = std::move(st.flying);
  st.flying.clear();
  for (size_t i = 0; i < flying.size() && i < done.msgs.size(); ++i) {
    auto& p = flying[i];
    auto& m = done.msgs[i];
    if (!p.key.empty()) ack_all(self, st.idem.resolve(p.key, m.seq, m.ts), m.seq, m.ts);
    publish(self, std::move(m), &p.to, p.t0_us);
  }
  st.member_flying.clear();
  st.restrict_flying.clear();
  auto reads = std::move(st.reads_flying);
  st.reads_flying.clear();
  for (auto& r : reads) answer_read(self, r);
  st.in_flight = false;
  st.confirmed = self->clock().now();  // the store took our term just now
  // Old targets read from the store: forget them once many, while nothing
  // waits on them (they are read again when needed).
  if (st.looked_up.size() > 1000 && st.held.empty() && st.queued.empty()) st.looked_up.clear();
  dispatch(self);
  schedule_idle_check(self);
}

void step_down(room_actor* self, const std::string& owner, uint64_t term);

// After a failed or timed-out append, the store may or may not hold the batch:
// reload the room's state and broadcast whatever did get stored, so that
// members still see every seq exactly once and the next seq is right.
void resync(room_actor* self) {
  auto& st = self->state;
  self->request(st.deps.store, st.deps.cfg.store_timeout, load_atom_v, st.room)
      .await(
          [=](room_snapshot& snap) {
            auto& st = self->state;
            if (!st.deps.claim_as.empty() &&
                (snap.term != st.term || snap.owner != st.deps.claim_as)) {
              step_down(self, snap.owner, snap.term);
              return;
            }
            if (snap.epoch != st.epoch) {
              spdlog::error("event=room_epoch_changed room={} old={} new={}", st.room, st.epoch,
                            snap.epoch);
              st.epoch = snap.epoch;
            }
            st.looked_up.clear();  // may have missed changes: read them again when needed
            st.settings = snap.settings;  // as stored: a failed room_set did not happen
            for (auto& m : snap.recent)
              if (m.seq > st.last_seq) {
                // Stored although the append reported a failure (a lost or late
                // answer): remember its key too, so that the client's retry gets
                // this message's ack instead of storing it a second time.
                auto key = idem_key(m.from, m.idem_key);
                if (!key.empty()) st.idem.remember(key, m.seq, m.ts);
                publish(self, std::move(m), nullptr, 0);
              }
            st.last_seq = std::max(st.last_seq, snap.last_seq);
            st.in_flight = false;
            dispatch(self);
            schedule_idle_check(self);  // members may all have left meanwhile
          },
          [=](caf::error& err) {
            spdlog::error("event=room_resync_failed room={} error=\"{}\"", self->state.room,
                          self->system().render(err));
            // Stay blocked on the store: try again shortly.
            self->delayed_send(self, std::chrono::seconds(1), load_atom_v);
          });
}

// What the rules say about one request, against the state its target has
// after every event sequenced before it.
struct verdict {
  enum { ok, noop, refused } what = ok;
  errc code = errc::internal;
  std::string why;
  int64_t retry_ms = 0;  // slow mode
};

verdict refuse(errc code, std::string why) { return {verdict::refused, code, std::move(why)}; }

// Answers a request that takes no seq (refused, or a react that changes
// nothing), and every duplicate of its key that waited for it.
void answer_unsequenced(room_actor* self, pending_send& p, const verdict& v) {
  auto& st = self->state;
  std::vector<reply_to> waiters;
  if (!p.key.empty()) waiters = st.idem.fail(p.key);
  waiters.insert(waiters.begin(), std::move(p.to));
  for (auto& to : waiters) {
    if (v.what == verdict::noop) {
      ack_msg a{0, {}, st.room, 0, 0, true};
      answer(self, to, std::move(a));
    } else {
      answer_error(self, to, v.code, v.why, v.retry_ms);
    }
  }
}

void on_failed(room_actor* self, const caf::error& err) {
  auto& st = self->state;
  if (err == store_errc::fenced) {
    // Nothing of the batch was stored: another node claimed the room.
    step_down(self, {}, 0);
    return;
  }
  spdlog::error("event=room_append_failed room={} count={} error=\"{}\"", st.room, st.flying.size(),
                self->system().render(err));
  for (auto& p : st.flying)
    answer_unsequenced(self, p, refuse(errc::unavailable, "message not stored, try again"));
  st.flying.clear();
  requeue_members(self);
  resync(self);
}

// The seq a request needs to know about before it can be sequenced: the
// message a change targets or a send replies to (0: none).
uint64_t needed_seq(const send_req& r) {
  return r.kind == event_kind::message ? r.reply_to : r.target;
}

// The committed state of event `seq`, if the room holds it.
const stored_msg* known_event(room_actor* self, uint64_t seq) {
  auto& st = self->state;
  if (auto m = st.recent.find(seq)) return m;
  auto it = st.looked_up.find(seq);
  return it == st.looked_up.end() ? nullptr : &it->second;
}

// role (the owner), kick, ban, unban, mute, unmute (the owner, moderators):
// a moderator cannot act on the owner or another moderator, nobody on a
// server admin (as far as the room knows: one connected with that role).
verdict check_moderation(room_actor* self, const send_req& r) {
  static const char* actions[] = {"role", "kick", "ban", "unban", "mute", "unmute"};
  if (std::find(std::begin(actions), std::end(actions), r.text) == std::end(actions))
    return refuse(errc::bad_request, "unknown moderation action");
  if (r.user == r.who.user) return refuse(errc::bad_request, "not on yourself");
  if (is_connected_admin(self, r.user)) return refuse(errc::forbidden, "nobody acts on a server admin");
  // What would change nothing stores nothing (the noop ack): a kick of a
  // non-member, lifting what is not there.
  auto& st = self->state;
  auto x = st.restrictions.find(r.user);
  bool noop = (r.text == "kick" && !st.memberships.count(r.user) && !st.members.users.count(r.user)) ||
              (r.text == "unban" && (x == st.restrictions.end() || x->second.ban_until == 0)) ||
              (r.text == "unmute" && (x == st.restrictions.end() || x->second.mute_until == 0));
  verdict ok = noop ? verdict{verdict::noop, errc::internal, {}} : verdict{};
  if (r.admin || r.trusted) return ok;
  auto actor = role_of(self, r.who.user);
  auto target = role_of(self, r.user);
  if (r.text == "role") {
    if (actor != member_role::owner) return refuse(errc::forbidden, "only the room's owner gives roles");
    return ok;
  }
  if (actor == member_role::member)
    return refuse(errc::forbidden, "only the room's owner and moderators moderate");
  if (actor == member_role::moderator && target != member_role::member)
    return refuse(errc::forbidden, "a moderator cannot act on the owner or another moderator");
  return ok;
}

// A moderation action takes effect at its seq: memberships, bans and mutes
// change in memory now (stored with the batch); returns the event's detail.
std::string apply_moderation(room_actor* self, const std::string& a, const send_req& r,
                             int64_t ts) {
  auto& st = self->state;
  int64_t until = r.seconds ? ts + static_cast<int64_t>(r.seconds) * 1000 : restriction::forever;
  auto touch = [&](auto&& change) {
    auto& x = st.restrictions[r.user];
    x.user = r.user;
    change(x);
    if (x.ban_until == 0 && x.mute_until == 0) {
      st.restrictions.erase(r.user);
      st.restrict_dirty[r.user] = std::nullopt;
    } else {
      st.restrict_dirty[r.user] = x;
    }
  };
  if (a == "role") {
    auto it = st.memberships.find(r.user);
    if (it == st.memberships.end())
      it = st.memberships.emplace(r.user, membership{r.user, member_role::member, st.last_seq}).first;
    if (r.role == member_role::owner)
      for (auto& [user, m] : st.memberships)
        if (m.role == member_role::owner && user != r.user) {
          m.role = member_role::moderator;  // one owner: the old one stays a moderator
          st.member_dirty[user] = m;
        }
    it->second.role = r.role;
    st.member_dirty[r.user] = it->second;
    return encode_moderation_detail(r.user, 0, {}, to_string(r.role));
  }
  if (a == "kick" || a == "ban") {
    if (st.memberships.erase(r.user) > 0) st.member_dirty[r.user] = std::nullopt;
    if (a == "ban") touch([&](restriction& x) { x.ban_until = until; });
    return encode_moderation_detail(r.user, a == "ban" ? until : 0, r.reason, nullptr);
  }
  if (a == "mute") {
    touch([&](restriction& x) { x.mute_until = until; });
    return encode_moderation_detail(r.user, until, r.reason, nullptr);
  }
  if (a == "unban") touch([&](restriction& x) { x.ban_until = 0; });
  if (a == "unmute") touch([&](restriction& x) { x.mute_until = 0; });
  return encode_moderation_detail(r.user, 0, {}, nullptr);
}

// A room_set: the owner changes anything, moderators the topic and slow mode.
verdict check_settings(room_actor* self, const send_req& r) {
  if (r.text != "settings") return refuse(errc::bad_request, "unknown moderation action");
  // Changing nothing stores nothing (the noop ack, as react's).
  auto& now = self->state.settings;
  bool same = (!(r.set & settings_topic) || r.settings.topic == now.topic) &&
              (!(r.set & settings_private) || r.settings.private_room == now.private_room) &&
              (!(r.set & settings_read_only) || r.settings.read_only == now.read_only) &&
              (!(r.set & settings_slow_mode) || r.settings.slow_mode == now.slow_mode);
  verdict ok = same ? verdict{verdict::noop, errc::internal, {}} : verdict{};
  if (r.admin || r.trusted) return ok;
  auto role = role_of(self, r.who.user);
  if (role == member_role::owner) return ok;
  if (role == member_role::moderator && (r.set & ~(settings_topic | settings_slow_mode)) == 0)
    return ok;
  return refuse(errc::forbidden, role == member_role::moderator
                                     ? "only the room's owner may change private and read_only"
                                     : "only the room's owner and moderators may change its settings");
}

// The rules for one request at `ts`, against the state its target `t` has
// after every event sequenced before it (and the room's settings as they are
// at that point of the sequence).
verdict check_request(room_actor* self, const send_req& r, const stored_msg* t, int64_t ts) {
  auto& st = self->state;
  bool message = t && t->kind == event_kind::message;
  bool plain_member = !st.dm && !is_staff(self, r.who.user, r.admin, r.trusted);
  // A ban or mute holds at every send, edit and react (deletes of one's own stay allowed).
  if (!st.dm && !r.trusted && !r.admin && r.kind != event_kind::deleted &&
      r.kind != event_kind::moderation && is_muted(self, r.who.user, ts))
    return refuse(errc::forbidden, is_banned(self, r.who.user, ts)
                                       ? "you are banned from this room"
                                       : "you are muted in this room");
  switch (r.kind) {
    case event_kind::message:
      if (plain_member && st.settings.read_only)
        return refuse(errc::forbidden, "the room is read-only: only its owner and moderators may send");
      if (plain_member && st.settings.slow_mode > 0) {
        auto last = st.last_sent.find(r.who.user);
        int64_t gap = int64_t{st.settings.slow_mode} * 1000;
        if (last != st.last_sent.end() && ts - last->second < gap) {
          auto v = refuse(errc::rate_limited, "slow mode: one message every " +
                                                  std::to_string(st.settings.slow_mode) + " s");
          v.retry_ms = gap - (ts - last->second);
          return v;
        }
      }
      if (r.reply_to && !message) return refuse(errc::not_found, "reply_to is not a message of this room");
      return {};
    case event_kind::edited:
      if (!message || t->deleted) return refuse(errc::not_found, "no such message");
      // The server API edits as the system (any message) or as a user (theirs).
      if (t->from != r.who.user && !(r.trusted && r.who.user == "system"))
        return refuse(errc::forbidden, "only its author may edit a message");
      if (plain_member && st.settings.read_only)
        return refuse(errc::forbidden, "the room is read-only: only its owner and moderators may edit");
      return {};
    case event_kind::deleted:
      if (!message || t->deleted) return refuse(errc::not_found, "no such message");
      if (t->from != r.who.user && plain_member)
        return refuse(errc::forbidden, "only its author, the room's owner and moderators or an admin may delete a message");
      return {};
    case event_kind::reaction: {
      if (!message || t->deleted) return refuse(errc::not_found, "no such message");
      bool there = has_reaction(*t, r.emoji, r.who.user);
      if (r.on == there) return {verdict::noop, errc::internal, {}};
      if (r.on && t->reactions.size() >= 20) {
        bool known = false;
        for (auto& x : t->reactions) known = known || x.emoji == r.emoji;
        if (!known) return refuse(errc::bad_request, "a message has at most 20 distinct emoji");
      }
      return {};
    }
    case event_kind::moderation:
      if (st.dm) return refuse(errc::bad_request, "a conversation has no settings");
      return r.text == "settings" ? check_settings(self, r) : check_moderation(self, r);
  }
  return refuse(errc::bad_request, "not a request a room sequences");
}

// Sequences what queued while the last append was in flight and hands it to
// the store as one batch. seq is assigned here, so a failed batch leaves no gap.
// Changes are checked here, in seq order, against their target as the events
// of this batch before them leave it (`overlay`), so that two deletes of one
// message in one batch store one.
void dispatch(room_actor* self) {
  auto& st = self->state;
  if (st.in_flight || (st.queued.empty() && st.member_dirty.empty() && st.restrict_dirty.empty()))
    return;
  size_t n = std::min<size_t>(st.queued.size(), st.deps.cfg.max_batch);
  append_batch batch;
  batch.room = st.room;
  batch.msgs.reserve(n);
  int64_t now = now_ms();
  int64_t ts = std::max(now, st.last_ts);  // ts never goes backwards within a room
  uint64_t seq = st.last_seq;
  std::unordered_map<uint64_t, stored_msg> overlay;
  for (size_t taken = 0; taken < n && !st.queued.empty();) {
    auto p = std::move(st.queued.front());
    st.queued.pop_front();
    // A retry queued while a failed append was being re-read may find its key
    // stored by then: answer with the first ack instead of storing it twice.
    if (!p.key.empty()) {
      if (auto hit = st.idem.find(p.key, now)) {
        answer_ack(self, p.to, hit->seq, hit->ts);
        ack_all(self, st.idem.resolve(p.key, hit->seq, hit->ts), hit->seq, hit->ts);
        continue;
      }
    }
    stored_msg* target = nullptr;
    if (auto need = needed_seq(p.req)) {
      auto o = overlay.find(need);
      if (o != overlay.end()) {
        target = &o->second;
      } else if (auto k = known_event(self, need)) {
        if (p.req.kind != event_kind::message) target = &overlay.emplace(need, *k).first->second;
        else target = const_cast<stored_msg*>(k);  // a reply only reads it
      }
    }
    auto v = check_request(self, p.req, target, ts);
    if (v.what != verdict::ok) {
      answer_unsequenced(self, p, v);
      continue;
    }
    stored_msg m;
    m.room = st.room;
    m.seq = ++seq;
    m.ts = ts;
    m.from = p.req.who.user;
    m.name = p.req.who.name;
    m.text = std::move(p.req.text);
    m.data = std::move(p.req.data);
    m.idem_key = std::move(p.req.idem_key);
    m.kind = p.req.kind;
    m.target = p.req.target;
    m.reply_to = p.req.reply_to;
    m.mentions = std::move(p.req.mentions);
    m.emoji = std::move(p.req.emoji);
    m.on = p.req.on;
    if (target && m.kind != event_kind::message) apply_change(*target, m);
    // Only while slow mode is on: no per-message map write in every other room.
    if (m.kind == event_kind::message && !st.dm && st.settings.slow_mode > 0) st.last_sent[m.from] = ts;
    if (m.kind == event_kind::moderation && m.text != "settings") {
      m.data = apply_moderation(self, m.text, p.req, ts);  // (p.req.text moved to m.text)
    } else if (m.kind == event_kind::moderation) {
      // Settings take effect at this seq: later requests of the batch obey them.
      auto& set = p.req.settings;
      if (p.req.set & settings_topic) st.settings.topic = set.topic;
      if (p.req.set & settings_private) st.settings.private_room = set.private_room;
      if (p.req.set & settings_read_only) st.settings.read_only = set.read_only;
      if (p.req.set & settings_slow_mode) st.settings.slow_mode = set.slow_mode;
      m.data = encode_settings_detail(st.settings);
      batch.set_settings = true;
      batch.settings = st.settings;
    }
    batch.msgs.push_back(std::move(m));
    st.flying.push_back(std::move(p));
    ++taken;
  }
  // Membership changes and read positions ride with the events (or alone).
  for (auto& [user, m] : st.member_dirty) {
    if (m)
      batch.member_set.push_back(*m);
    else
      batch.member_del.push_back(user);
  }
  st.member_flying = std::move(st.member_dirty);
  st.member_dirty.clear();
  for (auto& [user, r] : st.restrict_dirty) {
    if (r)
      batch.restrict_set.push_back(*r);
    else
      batch.restrict_del.push_back(user);
  }
  st.restrict_flying = std::move(st.restrict_dirty);
  st.restrict_dirty.clear();
  st.reads_flying = std::move(st.reads_waiting);
  st.reads_waiting.clear();
  if (batch.empty()) return;
  batch.owner = st.deps.claim_as;
  batch.term = st.term;
  st.in_flight = true;
  self->request(st.deps.store, st.deps.cfg.store_timeout, append_atom_v, std::move(batch))
      .then([=](append_batch& done) { on_committed(self, done); },
            [=](caf::error& err) { on_failed(self, err); });
}

// Moves held requests to the queue in order until one needs a target the
// room does not hold: that one asks the store, and the rest wait behind it.
void drain_held(room_actor* self) {
  auto& st = self->state;
  while (!st.looking_up && !st.held.empty()) {
    auto& p = st.held.front();
    uint64_t need = needed_seq(p.req);
    if (need != 0 && need >= st.first_seq && need <= st.last_seq && !known_event(self, need)) {
      st.looking_up = true;
      self->request(st.deps.store, st.deps.cfg.store_timeout, event_atom_v, st.room, need)
          .then(
              [=](stored_msg& m, bool found) {
                auto& st = self->state;
                st.looking_up = false;
                if (st.held.empty()) return;  // refused meanwhile (the room stepped down)
                // Nothing targeting it was sequenced meanwhile (it waited
                // here), so the store's state is the committed one.
                if (found && !known_event(self, need)) st.looked_up.emplace(need, std::move(m));
                if (!found) {
                  // Gone (trimmed): the check at dispatch answers not_found.
                  st.queued.push_back(std::move(st.held.front()));
                  st.held.pop_front();
                }
                drain_held(self);
                schedule_idle_check(self);
              },
              [=](caf::error&) {
                auto& st = self->state;
                st.looking_up = false;
                if (st.held.empty()) return;
                auto p = std::move(st.held.front());
                st.held.pop_front();
                answer_unsequenced(self, p, refuse(errc::unavailable, "the message could not be read, try again"));
                drain_held(self);
                schedule_idle_check(self);
              });
      return;
    }
    st.queued.push_back(std::move(p));
    st.held.pop_front();
  }
  dispatch(self);
}

// --- requests --------------------------------------------------------------------------------

void handle_send_to(room_actor* self, send_req& req, reply_to to);

void handle_send(room_actor* self, send_req& req) {
  auto& st = self->state;
  auto to = reply_target(self, req.conn, req.req_id);
  if (!req.trusted && !st.dm && req.conn.gateway && !is_member(self, req.conn) &&
      st.pending_joins.count({req.conn.gateway, req.conn.id}) > 0) {
    st.after_join[{req.conn.gateway, req.conn.id}].emplace_back(std::move(req), std::move(to));
    return;
  }
  handle_send_to(self, req, std::move(to));
}

void handle_send_to(room_actor* self, send_req& req, reply_to to) {
  auto& st = self->state;
  if (!req.trusted &&
      (st.dm ? !is_participant(self, req.who.user) : !is_member(self, req.conn))) {
    if (st.dm)
      answer_error(self, to, errc::forbidden, "not a participant of this conversation");
    else
      answer_error(self, to, errc::not_member, "join the room first");
    return;
  }
  auto key = idem_key(req.who.user, req.idem_key);
  if (!key.empty()) {
    if (auto hit = st.idem.find(key, now_ms())) {
      answer_ack(self, to, hit->seq, hit->ts);
      return;
    }
    if (st.idem.wait(key, std::move(to))) return;  // the first send is still being stored
    st.idem.begin(key);
  }
  pending_send p;
  p.req = std::move(req);
  p.to = std::move(to);
  p.key = std::move(key);
  p.t0_us = steady_us();
  bool plain = p.req.kind == event_kind::message && p.req.reply_to == 0;
  if (st.held.empty() && !st.looking_up && plain) {
    st.queued.push_back(std::move(p));
    dispatch(self);
    return;
  }
  st.held.push_back(std::move(p));
  drain_held(self);
}

// The sends parked behind a connection's pending join: run now that it
// joined (run), or refused (`code`, `why`) when the join will not happen.
void release_parked(room_actor* self, const std::pair<gateway_actor, uint64_t>& key, bool run,
                    errc code = errc::not_member, const std::string& why = {}) {
  auto& st = self->state;
  auto it = st.after_join.find(key);
  if (it == st.after_join.end()) return;
  auto reqs = std::move(it->second);
  st.after_join.erase(it);
  for (auto& [r, to] : reqs) {
    if (run)
      handle_send_to(self, r, std::move(to));
    else
      answer_error(self, to, code, why);
  }
}

void finish_join(room_actor* self, const join_req& req, std::vector<stored_msg> recovered,
                 int8_t recovered_flag, uint64_t unread) {
  auto& st = self->state;
  if (!st.dm) add_member(self, req.conn, req.who, req.admin);
  joined_msg out;
  out.conn = req.conn.id;
  out.room = st.room;
  out.room_actor = caf::actor_cast<caf::actor>(self);
  out.recovered = std::move(recovered);
  out.info.req_id = req.req_id;
  out.info.room = st.room;
  out.info.seq = st.last_seq;
  out.info.epoch = st.epoch;
  out.info.member_count = st.members.users.size();
  out.info.members = list_members(self, st.deps.cfg.joined_members_listed);
  out.info.recovered = recovered_flag;
  out.info.first_seq = st.first_seq;
  auto m = st.memberships.find(req.who.user);
  if (m != st.memberships.end()) {
    out.info.member = true;
    out.info.role = m->second.role;
    out.info.read_seq = m->second.read_seq;
    out.info.unread = unread;
  }
  out.info.settings = st.settings;
  out.member = !st.dm;
  if (req.conn.gateway) self->send(req.conn.gateway, std::move(out));
  release_parked(self, {req.conn.gateway, req.conn.id}, true);
}

void copy_window(room_actor* self, uint64_t from, std::vector<stored_msg>& out) {
  for (auto& m : self->state.recent.range(from)) out.push_back(m);
}

// Unread messages of `user` in the window with after < seq <= upto.
uint64_t window_unread(room_actor* self, const std::string& user, uint64_t after, uint64_t upto) {
  uint64_t n = 0;
  for (auto& m : self->state.recent.range(after + 1, upto + 1))
    if (m.kind == event_kind::message && !m.deleted && m.from != user && ++n >= max_unread) break;
  return n;
}

void join_with_unread(room_actor* self, const join_req& req, uint64_t unread);

// A refused join names its room, so that the connection stops waiting for it.
void refuse_join(room_actor* self, const join_req& req, errc code, const char* why) {
  auto to = reply_target(self, req.conn, req.req_id);
  if (!to.rp.async() || !req.conn.gateway) return answer_error(self, to, code, why);
  count(code);
  self->send(req.conn.gateway,
             error_msg{req.conn.id, req.req_id, code, why, self->state.room, 0, true});
}

// A public room's first join of a user makes them a member (the owner, when
// the join creates the room: no event and no member yet) with a read
// position at the room's seq. `joined` tells their role, read position and
// unread count, counted in the window or, for an older read position, by the
// store (the join waits for it).
void handle_join(room_actor* self, const join_req& req) {
  auto& st = self->state;
  if (st.dm) {
    if (!is_participant(self, req.who.user))
      return refuse_join(self, req, errc::forbidden, "not a participant of this conversation");
    join_with_unread(self, req, 0);
    return;
  }
  if (!req.admin && is_banned(self, req.who.user, now_ms()))
    return refuse_join(self, req, errc::forbidden, "you are banned from this room");
  auto it = st.memberships.find(req.who.user);
  if (it == st.memberships.end() && st.settings.private_room && !req.admin)
    return refuse_join(self, req, errc::forbidden, "this room is private: its members may invite you");
  if (it == st.memberships.end()) {
    membership m{req.who.user,
                 st.last_seq == 0 && st.memberships.empty() ? member_role::owner : member_role::member,
                 st.last_seq};
    st.memberships.emplace(m.user, m);
    st.member_dirty[m.user] = m;
    st.pending_joins.insert({req.conn.gateway, req.conn.id});
    room_state::read_waiter w;
    w.user = m.user;
    w.join = req;
    st.reads_waiting.push_back(std::move(w));
    dispatch(self);
    return;
  }
  continue_join(self, req);
}

// A join of a member: unread counted in the window, or by the store for an
// older read position (the join waits for it).
void continue_join(room_actor* self, const join_req& req) {
  auto& st = self->state;
  auto it = st.memberships.find(req.who.user);
  if (it == st.memberships.end()) {  // parted or kicked while the join waited
    join_with_unread(self, req, 0);
    return;
  }
  uint64_t read_seq = it->second.read_seq;
  if (read_seq >= st.last_seq || st.recent.covers(read_seq + 1, st.last_seq + 1)) {
    join_with_unread(self, req, window_unread(self, req.who.user, read_seq, st.last_seq));
    return;
  }
  conn_key key{req.conn.gateway, req.conn.id};
  st.pending_joins.insert(key);
  uint64_t upto = st.last_seq;
  self->request(st.deps.store, st.deps.cfg.store_timeout, unread_atom_v, st.room, req.who.user,
                read_seq, upto)
      .then(
          [=](uint64_t n) {
            auto& st = self->state;
            if (st.pending_joins.erase(key) == 0) return;  // left meanwhile
            // What committed since the count is in the window.
            n += window_unread(self, req.who.user, upto, st.last_seq);
            join_with_unread(self, req, std::min(n, max_unread));
            schedule_idle_check(self);
          },
          [=](caf::error&) {
            auto& st = self->state;
            if (st.pending_joins.erase(key) == 0) return;
            join_with_unread(self, req, 0);  // a join does not fail for a count
            schedule_idle_check(self);
          });
}

void join_with_unread(room_actor* self, const join_req& req, uint64_t unread) {
  auto& st = self->state;
  std::vector<stored_msg> recovered;
  int8_t flag = -1;
  if (req.recover) {
    if (req.epoch != st.epoch || req.since + 1 < st.first_seq) {
      flag = 0;  // history reset or trimmed: the client must reload
    } else if (req.since >= st.last_seq) {
      flag = 1;
    } else if (st.recent.covers(req.since + 1, st.last_seq + 1)) {
      copy_window(self, req.since + 1, recovered);
      flag = 1;
    } else if (st.last_seq - req.since > st.deps.cfg.max_recovery) {
      flag = 0;
    } else {
      // Older than the window: read the gap from the store, then the window.
      uint64_t upto = st.recent.empty() ? st.last_seq + 1 : st.recent.oldest_seq();
      conn_key key{req.conn.gateway, req.conn.id};
      st.pending_joins.insert(key);
      range_query q{st.room, req.since, upto, static_cast<uint32_t>(upto - req.since - 1), false};
      self->request(st.deps.store, st.deps.cfg.store_timeout, range_atom_v, q)
          .then(
              [=](std::vector<stored_msg>& got, uint64_t first) {
                auto& st = self->state;
                learn_first_seq(self, first);
                if (st.pending_joins.erase(key) == 0) return;  // left meanwhile
                uint64_t expect = req.since + 1;
                bool ok = true;
                for (auto& m : got)
                  if (m.seq != expect++) ok = false;
                ok = ok && expect == upto &&
                     (st.recent.empty() ? upto == st.last_seq + 1 : st.recent.oldest_seq() <= upto);
                if (ok)
                  copy_window(self, upto, got);
                else
                  got.clear();
                finish_join(self, req, std::move(got), ok ? 1 : 0, unread);
                schedule_idle_check(self);
              },
              [=](caf::error&) {
                if (self->state.pending_joins.erase(key) == 0) return;
                finish_join(self, req, {}, 0, unread);
                schedule_idle_check(self);
              });
      return;
    }
  }
  finish_join(self, req, std::move(recovered), flag, unread);
}

// `read`: the position only moves forward, and never past the room's seq.
void handle_read(room_actor* self, const read_req& req) {
  auto& st = self->state;
  auto to = reply_target(self, req.conn, req.req_id);
  auto it = st.memberships.find(req.user);
  if (st.dm || it == st.memberships.end()) {
    answer_error(self, to, errc::not_member,
                 st.dm ? "read positions are kept for rooms" : "not a member of this room");
    return;
  }
  uint64_t seq = std::min(req.seq, st.last_seq);
  if (seq <= it->second.read_seq) {
    answer(self, to, read_msg{0, {}, st.room, it->second.read_seq});
    return;
  }
  it->second.read_seq = seq;
  st.member_dirty[req.user] = it->second;
  st.reads_waiting.push_back({std::move(to), req.user, seq, {}, false});
  dispatch(self);
}

// `part`: the membership ends, and every connection of the user stops
// receiving the room (the others are told with a `parted` without id).
void handle_part(room_actor* self, const part_req& req) {
  auto& st = self->state;
  drop_connections(self, req.user, false, req.conn);
  auto to = reply_target(self, req.conn, req.req_id);
  if (!st.dm && st.memberships.erase(req.user) > 0) {
    // Answered once stored: a my_rooms right after the reply no longer lists it.
    st.member_dirty[req.user] = std::nullopt;
    room_state::read_waiter w{std::move(to), req.user, 0, {}, false, true};
    st.reads_waiting.push_back(std::move(w));
    dispatch(self);
    return;
  }
  answer(self, to, left_msg{0, {}, st.room, true});
}

void drop_connections(room_actor* self, const std::string& user, bool silent,
                      const conn_ref& except) {
  auto& st = self->state;
  std::vector<std::pair<gateway_actor, uint64_t>> conns;
  for (auto& [gw, ids] : st.members.by_gateway)
    for (auto& [id, u] : ids)
      if (u == user) conns.emplace_back(gw, id);
  for (auto& [gw, id] : conns) {
    st.pending_joins.erase({gw, id});
    remove_member(self, gw, id);
    if (!(gw == except.gateway && id == except.id))
      self->send(gw, left_msg{id, {}, st.room, true, silent});
  }
}

// A room exists for the server API when it has (or had) events, memberships or members.
bool room_exists(room_actor* self) {
  auto& st = self->state;
  return st.last_seq > 0 || !st.memberships.empty() || !st.members.users.empty();
}

// What a message costs on the wire, roughly: its fields, JSON escaping of the
// text (generously), and the frame's keys.
size_t wire_bytes(const stored_msg& m) {
  return m.room.size() + m.from.size() + m.name.size() + 2 * m.text.size() + m.data.size() + 96;
}

// Drops the oldest messages beyond `budget` bytes, always keeping the newest
// one (one message is far below the queue limit). True when any was dropped.
bool cap_history(std::vector<stored_msg>& msgs, size_t budget) {
  size_t bytes = 0, keep = 0;
  for (auto it = msgs.rbegin(); it != msgs.rend(); ++it) {
    bytes += wire_bytes(*it);
    if (keep > 0 && bytes > budget) break;
    ++keep;
  }
  if (keep == msgs.size()) return false;
  msgs.erase(msgs.begin(), msgs.end() - static_cast<std::ptrdiff_t>(keep));
  return true;
}

void answer_history(room_actor* self, reply_to& to, std::vector<stored_msg> msgs, bool more) {
  auto& st = self->state;
  answer(self, to,
         history_page{0, {}, st.room, std::move(msgs), more, st.first_seq, room_exists(self)});
}

void handle_history(room_actor* self, const history_req& req, reply_to to) {
  auto& st = self->state;
  if (!may_read(self, req.user, req.admin)) return answer_error(self, to, errc::not_found, no_such_room);
  if (!req.admin && is_banned(self, req.user, now_ms()))
    return answer_error(self, to, errc::forbidden, "you are banned from this room");
  uint64_t before = req.before == 0 ? st.last_seq + 1 : std::min(req.before, st.last_seq + 1);
  if (req.moderation_only) {
    // The audit view: the store's moderation events, one more to tell `more`.
    range_query q{st.room, 0, before, req.limit + 1, true, true};
    self->request(st.deps.store, st.deps.cfg.store_timeout, range_atom_v, q)
        .then(
            [=](std::vector<stored_msg>& got, uint64_t first) mutable {
              learn_first_seq(self, first);
              bool more = got.size() > req.limit;
              if (more) got.erase(got.begin());  // oldest first: the extra is the oldest
              more = cap_history(got, self->state.deps.cfg.history_bytes) || more;
              answer_history(self, to, std::move(got), more);
            },
            [=](caf::error&) mutable {
              answer_error(self, to, errc::unavailable, "the moderation log is unavailable");
            });
    return;
  }
  uint64_t lo = before > req.limit ? before - req.limit : 1;
  lo = std::max(lo, st.first_seq);
  if (before <= lo) {
    answer_history(self, to, {}, false);
    return;
  }
  if (st.recent.covers(lo, before)) {
    std::vector<stored_msg> out;
    for (auto& m : st.recent.range(lo, before)) out.push_back(m);
    bool cut = cap_history(out, st.deps.cfg.history_bytes);
    answer_history(self, to, std::move(out), cut || lo > st.first_seq);
    return;
  }
  range_query q{st.room, 0, before, req.limit, true};
  self->request(st.deps.store, st.deps.cfg.store_timeout, range_atom_v, q)
      .then(
          [=](std::vector<stored_msg>& got, uint64_t first) mutable {
            auto& st = self->state;
            learn_first_seq(self, first);
            bool more = got.size() >= req.limit && !got.empty() && got.front().seq > st.first_seq;
            more = cap_history(got, st.deps.cfg.history_bytes) || more;
            answer_history(self, to, std::move(got), more);
          },
          [=](caf::error&) mutable {
            answer_error(self, to, errc::unavailable, "history is unavailable");
          });
}

void handle_search(room_actor* self, const search_req& req, reply_to to) {
  auto& st = self->state;
  if (!may_read(self, req.user, req.admin)) return answer_error(self, to, errc::not_found, no_such_room);
  if (!req.admin && is_banned(self, req.user, now_ms()))
    return answer_error(self, to, errc::forbidden, "you are banned from this room");
  self->request(st.deps.store, st.deps.cfg.store_timeout, search_atom_v, st.room, req.query,
                req.before, req.limit + 1)
      .then(
          [=](std::vector<stored_msg>& got) mutable {
            auto& st = self->state;
            bool more = got.size() > req.limit;
            if (more) got.resize(req.limit);
            // The page's bytes, as history: the oldest (last) go first.
            size_t bytes = 0, keep = 0;
            for (auto& m : got) {
              bytes += wire_bytes(m);
              if (keep > 0 && bytes > st.deps.cfg.history_bytes) break;
              ++keep;
            }
            if (keep < got.size()) {
              got.resize(keep);
              more = true;
            }
            history_page page{0, {}, st.room, std::move(got), more, st.first_seq, true, true};
            answer(self, to, std::move(page));
          },
          [=](caf::error&) mutable {
            answer_error(self, to, errc::unavailable, "search is unavailable");
          });
}

void handle_presence(room_actor* self, const presence_req& req) {
  auto& st = self->state;
  auto to = reply_target(self, req.conn, req.req_id);
  if (!may_read(self, req.user, req.admin)) return answer_error(self, to, errc::not_found, no_such_room);
  answer(self, to,
         presence_list{0, {}, st.room, list_members(self, st.deps.cfg.presence_members_listed),
                       room_exists(self)});
}

// `room`: the settings, for whoever may read the room.
void handle_room_info(room_actor* self, const room_req& req, reply_to to) {
  auto& st = self->state;
  if (!may_read(self, req.user, req.admin)) return answer_error(self, to, errc::not_found, no_such_room);
  room_info info{0, {}, st.room, st.settings, st.last_seq, st.memberships.size()};
  if (req.members)
    for (auto& [user, m] : st.memberships) info.members.push_back(m);
  answer(self, to, std::move(info));
}

// `invite`: the owner or a moderator (or an admin, or the server API, which
// may give any role) makes a user a member; answered once stored.
void handle_invite(room_actor* self, const invite_req& req) {
  auto& st = self->state;
  auto to = reply_target(self, req.conn, req.req_id);
  if (st.dm) return answer_error(self, to, errc::bad_request, "nobody is invited into a conversation");
  bool api = req.by.empty();
  if (!api && !req.admin && role_of(self, req.by) == member_role::member) {
    if (!may_read(self, req.by, false)) return answer_error(self, to, errc::not_found, no_such_room);
    return answer_error(self, to, errc::forbidden, "only the room's owner and moderators may invite");
  }
  auto it = st.memberships.find(req.user);
  if (it != st.memberships.end() && (!api || it->second.role == req.role)) {
    answer(self, to, ack_msg{0, {}, st.room, 0, 0});  // a member already: nothing to store
    return;
  }
  if (it == st.memberships.end())
    it = st.memberships.emplace(req.user, membership{req.user, member_role::member, st.last_seq}).first;
  if (api) {
    // One owner: handing ownership on leaves the old owner a moderator.
    if (req.role == member_role::owner)
      for (auto& [user, m] : st.memberships)
        if (m.role == member_role::owner && user != req.user) {
          m.role = member_role::moderator;
          st.member_dirty[user] = m;
        }
    it->second.role = req.role;
  }
  st.member_dirty[req.user] = it->second;
  room_state::read_waiter w{std::move(to), req.user, 0, api ? std::string("system") : req.by, true};
  st.reads_waiting.push_back(std::move(w));
  dispatch(self);
}

void handle_leave(room_actor* self, const leave_req& req) {
  auto& st = self->state;
  st.pending_joins.erase({req.conn.gateway, req.conn.id});
  release_parked(self, {req.conn.gateway, req.conn.id}, false, errc::not_member,
                 "join the room first");
  remove_member(self, req.conn.gateway, req.conn.id);
  if (req.reply) {
    auto to = reply_target(self, req.conn, req.req_id);
    answer(self, to, left_msg{0, {}, st.room});
  }
}

void handle_typing(room_actor* self, const typing_req& req) {
  auto& st = self->state;
  if (st.dm) {
    if (!is_participant(self, req.user)) return;
    auto other = req.user == st.dm_a ? st.dm_b : st.dm_a;
    auto reg = st.deps.registry_for(other);
    if (!reg) return;
    self->send(reg, user_deliver{{other}, st.room, 0, encode_typing(st.room, req.user, req.name)});
    return;
  }
  auto it = st.members.users.find(req.user);
  if (it != st.members.users.end() && is_member(self, req.conn) && !is_muted(self, req.user, now_ms()))
    broadcast(self, 0, encode_typing(st.room, req.user, it->second.name), req.user);
}

void apply_snapshot(room_actor* self, room_snapshot& snap) {
  auto& st = self->state;
  st.epoch = snap.epoch;
  st.last_seq = snap.last_seq;
  st.first_seq = snap.first_seq;
  st.term = snap.term;
  st.confirmed = self->clock().now();
  st.recent.clear();
  st.looked_up.clear();
  st.memberships.clear();
  for (auto& m : snap.members) st.memberships.emplace(m.user, m);
  st.settings = snap.settings;
  st.restrictions.clear();
  for (auto& r : snap.restrictions) st.restrictions.emplace(r.user, r);
  for (auto& m : snap.idem) {
    auto key = idem_key(m.from, m.idem_key);
    if (!key.empty()) st.idem.remember(key, m.seq, m.ts);
  }
  for (auto& m : snap.recent) {
    st.last_ts = std::max(st.last_ts, m.ts);
    st.recent.push(std::move(m));
  }
  st.loaded = true;
}

// Answers every request with `unavailable` while the store cannot load the
// room, then stops so that the next request tries again.
// A send refused because another node holds the room now. A gateway's error
// names the room, so that the gateway sends a keyed one again where the room
// lives (gateway_actor.cpp); the server API gets the plain error.
void refuse_moved_send(room_actor* self, reply_to& to, const std::string& why) {
  if (to.rp.async() && to.conn.gateway) {
    count(errc::unavailable);
    self->send(to.conn.gateway, error_msg{to.conn.id, to.req_id, errc::unavailable, why,
                                          self->state.room});
  } else {
    answer_error(self, to, errc::unavailable, why);
  }
}

// `moved`: another node holds the room now (step_down): joins go back to the
// directory, which has forgotten this actor and starts a fresh one (that
// claims the room if it lives here), and refused sends name the room, so that
// a gateway sends a keyed one again where the room lives.
caf::behavior failed_behavior(room_actor* self, std::string why, bool moved = false) {
  auto fail = [=](const conn_ref& c, const std::string& id) {
    auto to = reply_target(self, c, id);
    answer_error(self, to, errc::unavailable, why);
  };
  return {
      [=](join_req& r) {
        if (moved && !self->current_message_id().is_request())
          self->send(self->state.deps.directory, std::move(r));
        else
          fail(r.conn, r.req_id);
      },
      [=](send_req& r) {
        if (moved) {
          auto to = reply_target(self, r.conn, r.req_id);
          refuse_moved_send(self, to, why);
        } else {
          fail(r.conn, r.req_id);
        }
      },
      [=](history_req& r) { fail(r.conn, r.req_id); },
      [=](presence_req& r) { fail(r.conn, r.req_id); },
      [=](read_req& r) { fail(r.conn, r.req_id); },
      [=](search_req& r) { fail(r.conn, r.req_id); },
      [=](part_req& r) { fail(r.conn, r.req_id); },
      [=](invite_req& r) { fail(r.conn, r.req_id); },
      [=](room_req& r) { fail(r.conn, r.req_id); },
      [=](leave_req& r) {
        if (!r.reply) return;
        auto to = reply_target(self, r.conn, r.req_id);
        answer(self, to, left_msg{0, {}, self->state.room});
      },
      [=](typing_req&) {},
      [=](lost_atom, uint64_t) {},
      [=](stop_room_atom) { self->quit(); },
  };
}

// Another node claimed the room (its term moved past ours): this node must not
// sequence it any more. Nothing of ours is stored after the claim (the store
// refuses our term), so every send still here is answered `unavailable` (a
// client retries; its idempotency key makes the retry safe), what is already
// in the mailbox is refused the same way, and the room stops: its members'
// gateways see it go and join again where the room lives now.
void step_down(room_actor* self, const std::string& owner, uint64_t term) {
  auto& st = self->state;
  spdlog::warn("event=room_fenced room={} term={} now_owner={} now_term={} refused={}", st.room,
               st.term, owner.empty() ? "?" : owner, term, st.flying.size() + st.queued.size());
  const std::string why = "the room moved to another node, try again";
  auto refuse = [&](pending_send& p) {
    refuse_moved_send(self, p.to, why);
    if (!p.key.empty())
      for (auto& to : st.idem.fail(p.key)) answer_error(self, to, errc::unavailable, why);
  };
  for (auto& p : st.flying) refuse(p);
  for (auto& p : st.queued) refuse(p);
  for (auto& p : st.held) refuse(p);
  for (auto* reads : {&st.reads_waiting, &st.reads_flying})
    for (auto& r : *reads) {
      if (!r.join)
        answer_error(self, r.to, errc::unavailable, why);
      else if (st.pending_joins.erase({r.join->conn.gateway, r.join->conn.id}) > 0)
        self->send(st.deps.directory, std::move(*r.join));  // to the new home, as below
    }
  for (auto& [key, reqs] : st.after_join)
    for (auto& [req, to] : reqs) refuse_moved_send(self, to, why);
  st.after_join.clear();
  st.reads_waiting.clear();
  st.reads_flying.clear();
  st.flying.clear();
  st.queued.clear();
  st.held.clear();
  st.in_flight = false;
  global_metrics().rooms_fenced.fetch_add(1, std::memory_order_relaxed);
  self->become(failed_behavior(self, why, /*moved=*/true));
  // The directory forgets us now (whatever it forwarded), so that the next
  // request it gets goes to a fresh room, which claims the room if it lives here.
  self->send(st.deps.directory, room_idle{st.room, std::numeric_limits<uint64_t>::max()});
  self->send(self, stop_room_atom_v);  // after everything already in the mailbox
}

// Runs `serve` (a join or a history read) once the room knows it still owns
// the room: at once within the claim's lease (or without claims), else after
// asking the store. A room that lost its claim while it was paused or cut off
// would otherwise answer from a memory that the new owner has moved past.
template <class F, class Lost>
void with_fresh_claim(room_actor* self, F serve, Lost lost) {
  auto& st = self->state;
  if (st.deps.claim_as.empty() || self->clock().now() - st.confirmed < st.deps.cfg.claim_lease) {
    serve();
    return;
  }
  self->request(st.deps.store, st.deps.cfg.store_timeout, load_atom_v, st.room)
      .await(
          [=](room_snapshot& snap) mutable {
            auto& st = self->state;
            if (snap.term != st.term || snap.owner != st.deps.claim_as) {
              step_down(self, snap.owner, snap.term);
              lost();
              return;
            }
            st.confirmed = self->clock().now();
            serve();
          },
          [=](caf::error&) mutable {
            // The store cannot say: serve from memory, as without claims (a
            // new owner would have needed the same store to claim the room).
            serve();
          });
}

}  // namespace

caf::behavior room_impl(room_actor* self, std::string name, room_deps deps) {
  auto& st = self->state;
  st.room = std::move(name);
  st.deps = std::move(deps);
  auto& cfg = st.deps.cfg;
  st.recent = recent_window{{cfg.window, cfg.window_bytes}};
  st.idem = idem_cache<reply_to>{{cfg.idem_window_ms, cfg.idem_max_keys, cfg.idem_max_bytes}};
  st.presence = presence_batcher{{cfg.presence_batch_threshold, cfg.presence_budget,
                                  std::chrono::seconds(1)}};
  st.dm = parse_dm_room(st.room, st.dm_a, st.dm_b);
  global_metrics().rooms.fetch_add(1, std::memory_order_relaxed);
  self->attach_functor([] { global_metrics().rooms.fetch_sub(1, std::memory_order_relaxed); });
  // A gateway (or, in a cluster, its node) is gone: drop its connections.
  self->set_down_handler([=](caf::down_msg& dm) {
    auto gw = caf::actor_cast<gateway_actor>(dm.source);
    auto& st = self->state;
    for (auto it = st.after_join.begin(); it != st.after_join.end();)
      it = it->first.first == gw ? st.after_join.erase(it) : std::next(it);
    for (auto it = st.pending_joins.begin(); it != st.pending_joins.end();)
      it = it->first == gw ? st.pending_joins.erase(it) : std::next(it);
    auto& by_gw = st.members.by_gateway;
    auto it = by_gw.find(gw);
    if (it == by_gw.end()) return;
    std::vector<uint64_t> ids;
    for (auto& [id, user] : it->second) ids.push_back(id);
    for (auto id : ids) remove_member(self, gw, id);
  });
  // Nothing is served before the room knows its seq and epoch: await() keeps
  // every other message in the mailbox until the store answers.
  auto on_loaded = [=](room_snapshot& snap) {
    apply_snapshot(self, snap);
    if (!self->state.deps.claim_as.empty())
      self->send(self->state.deps.directory, room_claimed{self->state.room, self->state.term});
    // A room created by a request that joins nobody (history, presence,
    // typing, a refused join) must go away after its grace as well.
    schedule_idle_check(self);
  };
  auto on_load_failed = [=](caf::error& err) {
    spdlog::error("event=room_load_failed room={} error=\"{}\"", self->state.room,
                  self->system().render(err));
    self->become(failed_behavior(self, "room storage is unavailable"));
    self->send(self->state.deps.directory, room_idle{self->state.room, 0});
    self->delayed_send(self, std::chrono::seconds(5), stop_room_atom_v);
  };
  if (!st.deps.claim_as.empty())
    self->request(st.deps.store, st.deps.cfg.store_timeout, claim_atom_v, st.room, st.deps.claim_as)
        .await(on_loaded, on_load_failed);
  else
    self->request(st.deps.store, st.deps.cfg.store_timeout, load_atom_v, st.room)
        .await(on_loaded, on_load_failed);
  // Requests arrive from the directory (until a gateway knows the room's handle)
  // or straight from gateways. The directory sends what it forwards, except a
  // request(...) (server API, which only ever asks the directory): that it
  // delegates, keeping the requester as sender.
  auto from_directory = [=] {
    if (self->current_sender() == self->state.deps.directory ||
        self->current_message_id().is_request())
      ++self->state.received;
  };
  return {
      [=](join_req& req) {
        from_directory();
        with_fresh_claim(
            self, [=] { handle_join(self, req); },
            // Joined where the room lives now: the directory spawns a fresh room.
            [=] { self->send(self->state.deps.directory, req); });
      },
      [=](leave_req& req) {
        from_directory();
        handle_leave(self, req);
      },
      [=](send_req& req) {
        from_directory();
        handle_send(self, req);
      },
      [=](history_req& req) {
        from_directory();
        auto to = reply_target(self, req.conn, req.req_id);
        with_fresh_claim(
            self, [=]() mutable { handle_history(self, req, to); },
            [=]() mutable {
              answer_error(self, to, errc::unavailable, "the room moved to another node, try again");
            });
      },
      [=](presence_req& req) {
        from_directory();
        handle_presence(self, req);
      },
      [=](read_req& req) {
        from_directory();
        handle_read(self, req);
      },
      [=](search_req& req) {
        from_directory();
        auto to = reply_target(self, req.conn, req.req_id);
        handle_search(self, req, std::move(to));
      },
      [=](part_req& req) {
        from_directory();
        handle_part(self, req);
      },
      [=](invite_req& req) {
        from_directory();
        handle_invite(self, req);
      },
      [=](room_req& req) {
        from_directory();
        auto to = reply_target(self, req.conn, req.req_id);
        with_fresh_claim(
            self, [=]() mutable { handle_room_info(self, req, to); },
            [=]() mutable {
              answer_error(self, to, errc::unavailable, "the room moved to another node, try again");
            });
      },
      [=](typing_req& req) {
        from_directory();
        handle_typing(self, req);
      },
      [=](presence_tick_atom) {
        auto& st = self->state;
        auto diff = st.presence.take();
        if (diff.empty()) return;
        broadcast(self, 0,
                  encode_presence_diff(st.room, diff.joins, diff.leaves,
                                       st.deps.cfg.presence_diff_listed, st.members.users.size()));
      },
      [=](idle_chk_atom, uint64_t gen) {
        auto& st = self->state;
        if (gen != st.idle_gen || busy(self)) return;
        self->send(st.deps.directory, room_idle{st.room, st.received});
        // If the directory forwarded something meanwhile it will not stop us: check again later.
        self->delayed_send(self, st.deps.cfg.idle_grace, idle_chk_atom_v, ++st.idle_gen);
      },
      [=](stop_room_atom) { self->quit(); },
      [=](lost_atom, uint64_t term) {
        // The directory's check: another node claimed the room since.
        if (term == self->state.term) step_down(self, {}, 0);
      },
      [=](load_atom) { resync(self); },
      [=](caf::get_atom) -> std::tuple<uint64_t, std::string, uint64_t> {
        auto& st = self->state;
        return {st.last_seq, st.epoch, st.members.users.size()};
      },
  };
}

}  // namespace chat
