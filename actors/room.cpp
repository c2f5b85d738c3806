#include "actors/room.hpp"

#include <spdlog/spdlog.h>

#include "actors/metrics.hpp"
#include "messages/clock.hpp"
#include "messages/codec.hpp"
#include "messages/validate.hpp"

namespace chat {

namespace {

using conn_key = std::pair<caf::actor, uint64_t>;

void reply(room_actor* self, const conn_ref& c, std::string frame) {
  if (c.gateway) self->send(c.gateway, to_conn{c.id, std::move(frame)});
}

void reply_error(room_actor* self, const conn_ref& c, const std::string& id, const char* code,
                 const std::string& msg) {
  global_metrics().count_error(code);
  reply(self, c, encode_error(id, code, msg));
}

bool is_member(room_actor* self, const conn_ref& c) {
  auto& st = self->state;
  auto it = st.by_gateway.find(c.gateway);
  return it != st.by_gateway.end() && it->second.count(c.id) > 0;
}

bool is_participant(room_actor* self, const std::string& user) {
  return user == self->state.dm_a || user == self->state.dm_b;
}

// One CAF message per gateway that has members.
void broadcast(room_actor* self, uint64_t seq, const std::string& frame,
               const std::string& skip_user = {}) {
  for (auto& [gw, conns] : self->state.by_gateway)
    self->send(gw, deliver{self->state.room, seq, frame, skip_user});
}

std::vector<member_info> list_members(room_actor* self, size_t max) {
  std::vector<member_info> out;
  for (auto& [user, entry] : self->state.users) {
    if (out.size() >= max) break;
    out.push_back({user, entry.name});
  }
  return out;
}

void schedule_idle_check(room_actor* self) {
  auto& st = self->state;
  if (st.conn_count > 0 || st.in_flight || !st.queued.empty() || !st.pending_joins.empty())
    return;
  self->delayed_send(self, st.deps.cfg.idle_grace, idle_chk_atom_v, ++st.idle_gen);
}

void presence_event(room_actor* self, bool joined, const member_info& who) {
  auto& st = self->state;
  auto now = self->clock().now();
  if (now - st.presence_window_start >= std::chrono::seconds(1)) {
    st.presence_window_start = now;
    st.presence_window_events = 0;
  }
  ++st.presence_window_events;
  bool big = st.users.size() + (joined ? 0 : 1) > st.deps.cfg.presence_batch_threshold;
  bool storm = st.presence_window_events * st.users.size() > st.deps.cfg.presence_budget;
  // While a diff is pending every change joins it: a user's later event must
  // never overtake an earlier one that waits in the diff.
  if (big || storm || st.tick_pending) {
    // Batch into one presence_diff per interval; a join and a leave of the
    // same user within it cancel out.
    auto& same = joined ? st.diff_joins : st.diff_leaves;
    auto& other = joined ? st.diff_leaves : st.diff_joins;
    auto it = std::find_if(other.begin(), other.end(),
                           [&](const member_info& m) { return m.user == who.user; });
    if (it != other.end())
      other.erase(it);
    else
      same.push_back(who);
    if (!st.tick_pending) {
      st.tick_pending = true;
      self->delayed_send(self, st.deps.cfg.presence_batch_interval, presence_tick_atom_v);
    }
    return;
  }
  broadcast(self, 0, encode_member_event(joined ? "member_joined" : "member_left", st.room, who),
            who.user);
}

void add_member(room_actor* self, const conn_ref& c, const member_info& who) {
  auto& st = self->state;
  auto& conns = st.by_gateway[c.gateway];
  if (conns.empty()) self->monitor(c.gateway);
  if (!conns.emplace(c.id, who.user).second) return;
  ++st.conn_count;
  auto& u = st.users[who.user];
  if (u.conns++ == 0) {
    u.name = who.name;
    presence_event(self, true, who);
  }
}

// Removes one connection; member_left when it was its user's last.
void remove_member(room_actor* self, const caf::actor& gw, uint64_t id) {
  auto& st = self->state;
  auto git = st.by_gateway.find(gw);
  if (git == st.by_gateway.end()) return;
  auto cit = git->second.find(id);
  if (cit == git->second.end()) return;
  std::string user = std::move(cit->second);
  git->second.erase(cit);
  if (git->second.empty()) {
    self->demonitor(gw);
    st.by_gateway.erase(git);
  }
  --st.conn_count;
  auto uit = st.users.find(user);
  if (uit != st.users.end() && --uit->second.conns == 0) {
    member_info who{user, uit->second.name};
    st.users.erase(uit);
    presence_event(self, false, who);
  }
  schedule_idle_check(self);
}

void remember_idem(room_actor* self, const std::string& key, uint64_t seq, int64_t ts) {
  auto& st = self->state;
  st.idem[key] = {seq, ts};
  st.idem_order.emplace_back(ts, key);
  // Expire keys past the window (oldest first).
  int64_t cutoff = ts - st.deps.cfg.idem_window_ms;
  while (!st.idem_order.empty() && st.idem_order.front().first < cutoff) {
    auto it = st.idem.find(st.idem_order.front().second);
    if (it != st.idem.end() && it->second.ts < cutoff) st.idem.erase(it);
    st.idem_order.pop_front();
  }
}

std::string idem_key_of(const send_req& r) {
  return r.idem_key.empty() ? std::string{} : r.who.user + '\x1f' + r.idem_key;
}

void push_recent(room_actor* self, const stored_msg& m) {
  auto& st = self->state;
  st.recent.push_back(m);
  while (st.recent.size() > st.deps.cfg.window) st.recent.pop_front();
}

// Background retention trims the store behind the room's back; every store
// read tells the room the oldest seq left, so `first_seq` and `more` stay true.
void learn_first_seq(room_actor* self, uint64_t first) {
  auto& st = self->state;
  if (first <= st.first_seq) return;
  st.first_seq = std::min(first, st.last_seq + 1);
  while (!st.recent.empty() && st.recent.front().seq < st.first_seq) st.recent.pop_front();
}

// A committed message: remember it, then ack the sender and broadcast.
void publish(room_actor* self, stored_msg& msg, const conn_ref* sender, const std::string& req_id,
             int64_t t0_us) {
  auto& st = self->state;
  st.last_seq = msg.seq;
  st.last_ts = std::max(st.last_ts, msg.ts);
  if (st.first_seq > msg.seq) st.first_seq = msg.seq;
  auto frame = encode_message(msg);
  if (sender) {
    reply(self, *sender, encode_ack(req_id, st.room, msg.seq, msg.ts));
    global_metrics().observe_rtt_us(static_cast<uint64_t>(std::max<int64_t>(0, steady_us() - t0_us)));
  }
  if (st.dm) {
    // Each user's connections are known to the registry on that user's home node.
    auto ra = st.deps.registry_for(st.dm_a), rb = st.deps.registry_for(st.dm_b);
    if (ra == rb) {
      if (ra) self->send(ra, user_deliver{{st.dm_a, st.dm_b}, st.room, msg.seq, frame});
    } else {
      if (ra) self->send(ra, user_deliver{{st.dm_a}, st.room, msg.seq, frame});
      if (rb) self->send(rb, user_deliver{{st.dm_b}, st.room, msg.seq, frame});
    }
  } else {
    broadcast(self, msg.seq, frame);
  }
  global_metrics().messages_stored.fetch_add(1, std::memory_order_relaxed);
  push_recent(self, msg);
}

void dispatch(room_actor* self);

void on_committed(room_actor* self) {
  auto& st = self->state;
  auto flying = std::move(st.flying);
  st.flying.clear();
  for (auto& p : flying) {
    auto key = idem_key_of(p.req);
    if (!key.empty()) {
      remember_idem(self, key, p.msg.seq, p.msg.ts);
      auto w = st.idem_waiters.find(key);
      if (w != st.idem_waiters.end()) {
        for (auto& [c, id] : w->second) reply(self, c, encode_ack(id, st.room, p.msg.seq, p.msg.ts));
        st.idem_waiters.erase(w);
      }
    }
    publish(self, p.msg, &p.req.conn, p.req.req_id, p.t0_us);
  }
  st.in_flight = false;
  dispatch(self);
  schedule_idle_check(self);
}

// After a failed or timed-out append, the store may or may not hold the batch:
// reload the room's state and broadcast whatever did get stored, so that
// members still see every seq exactly once and the next seq is right.
void resync(room_actor* self) {
  auto& st = self->state;
  self->request(st.deps.store, st.deps.cfg.store_timeout, load_atom_v, st.room)
      .await(
          [=](room_snapshot& snap) {
            auto& st = self->state;
            if (snap.epoch != st.epoch) {
              spdlog::error("event=room_epoch_changed room={} old={} new={}", st.room, st.epoch,
                            snap.epoch);
              st.epoch = snap.epoch;
            }
            for (auto& m : snap.recent)
              if (m.seq > st.last_seq) {
                // Stored although the append reported a failure (a lost or late
                // answer): remember its key too, so that the client's retry gets
                // this message's ack instead of storing it a second time.
                if (!m.idem_key.empty())
                  remember_idem(self, m.from + '\x1f' + m.idem_key, m.seq, m.ts);
                publish(self, m, nullptr, {}, 0);
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

void on_failed(room_actor* self, const caf::error& err) {
  auto& st = self->state;
  spdlog::error("event=room_append_failed room={} count={} error=\"{}\"", st.room, st.flying.size(),
                self->system().render(err));
  for (auto& p : st.flying) {
    auto key = idem_key_of(p.req);
    reply_error(self, p.req.conn, p.req.req_id, "unavailable", "message not stored, try again");
    if (!key.empty()) {
      auto w = st.idem_waiters.find(key);
      if (w != st.idem_waiters.end()) {
        for (auto& [c, id] : w->second)
          reply_error(self, c, id, "unavailable", "message not stored, try again");
        st.idem_waiters.erase(w);
      }
    }
  }
  st.flying.clear();
  resync(self);
}

// Sequences what queued while the last append was in flight and hands it to
// the store as one batch. seq is assigned here, so a failed batch leaves no gap.
void dispatch(room_actor* self) {
  auto& st = self->state;
  if (st.in_flight || st.queued.empty()) return;
  size_t n = std::min<size_t>(st.queued.size(), st.deps.cfg.max_batch);
  append_batch batch;
  batch.room = st.room;
  batch.msgs.reserve(n);
  int64_t ts = std::max(now_ms(), st.last_ts);  // ts never goes backwards within a room
  uint64_t seq = st.last_seq;
  for (size_t taken = 0; taken < n && !st.queued.empty();) {
    auto p = std::move(st.queued.front());
    st.queued.pop_front();
    // A retry queued while a failed append was being re-read may find its key
    // stored by then: answer with the first ack instead of storing it twice.
    auto key = idem_key_of(p.req);
    if (!key.empty()) {
      auto hit = st.idem.find(key);
      if (hit != st.idem.end()) {
        reply(self, p.req.conn, encode_ack(p.req.req_id, st.room, hit->second.seq, hit->second.ts));
        auto w = st.idem_waiters.find(key);
        if (w != st.idem_waiters.end()) {
          for (auto& [c, id] : w->second)
            reply(self, c, encode_ack(id, st.room, hit->second.seq, hit->second.ts));
          st.idem_waiters.erase(w);
        }
        continue;
      }
    }
    auto& m = p.msg;
    m.room = st.room;
    m.seq = ++seq;
    m.ts = ts;
    m.from = p.req.who.user;
    m.name = p.req.who.name;
    m.text = std::move(p.req.text);
    m.data = std::move(p.req.data);
    m.idem_key = p.req.idem_key;
    batch.msgs.push_back(m);
    st.flying.push_back(std::move(p));
    ++taken;
  }
  if (batch.msgs.empty()) return;
  st.in_flight = true;
  self->request(st.deps.store, st.deps.cfg.store_timeout, append_atom_v, std::move(batch))
      .then([=](uint64_t) { on_committed(self); },
            [=](caf::error& err) { on_failed(self, err); });
}

void handle_send(room_actor* self, send_req& req) {
  auto& st = self->state;
  if (!req.trusted &&
      (st.dm ? !is_participant(self, req.who.user) : !is_member(self, req.conn))) {
    reply_error(self, req.conn, req.req_id, st.dm ? "forbidden" : "not_member",
                st.dm ? "not a participant of this conversation" : "join the room first");
    return;
  }
  auto key = idem_key_of(req);
  if (!key.empty()) {
    auto hit = st.idem.find(key);
    if (hit != st.idem.end() && now_ms() - hit->second.ts <= st.deps.cfg.idem_window_ms) {
      reply(self, req.conn, encode_ack(req.req_id, st.room, hit->second.seq, hit->second.ts));
      return;
    }
    auto w = st.idem_waiters.find(key);
    if (w != st.idem_waiters.end()) {  // the first send is still being stored
      w->second.emplace_back(req.conn, req.req_id);
      return;
    }
    st.idem_waiters.emplace(key, std::vector<std::pair<conn_ref, std::string>>{});
  }
  room_state::pending_send p;
  p.req = std::move(req);
  p.t0_us = steady_us();
  st.queued.push_back(std::move(p));
  dispatch(self);
}

void finish_join(room_actor* self, const join_req& req, std::vector<std::string> frames,
                 int recovered) {
  auto& st = self->state;
  if (!st.dm) add_member(self, req.conn, req.who);
  auto members = list_members(self, st.deps.cfg.joined_members_listed);
  frames.push_back(encode_joined(req.req_id, st.room, st.last_seq, st.epoch, st.users.size(),
                                 members, recovered, st.first_seq));
  self->send(req.conn.gateway,
             joined_msg{req.conn.id, st.room, caf::actor_cast<caf::actor>(self),
                        std::move(frames), !st.dm, st.last_seq});
}

void handle_join(room_actor* self, const join_req& req) {
  auto& st = self->state;
  if (st.dm && !is_participant(self, req.who.user)) {
    reply_error(self, req.conn, req.req_id, "forbidden", "not a participant of this conversation");
    return;
  }
  std::vector<std::string> frames;
  int recovered = -1;
  if (req.recover) {
    if (req.epoch != st.epoch || req.since + 1 < st.first_seq) {
      recovered = 0;  // history reset or trimmed: the client must reload
    } else if (req.since >= st.last_seq) {
      recovered = 1;
    } else if (!st.recent.empty() && st.recent.front().seq <= req.since + 1) {
      for (auto& m : st.recent)
        if (m.seq > req.since) frames.push_back(encode_message(m));
      recovered = 1;
    } else if (st.last_seq - req.since > st.deps.cfg.max_recovery) {
      recovered = 0;
    } else {
      // Older than the window: read the gap from the store, then the window.
      uint64_t upto = st.recent.empty() ? st.last_seq + 1 : st.recent.front().seq;
      conn_key key{req.conn.gateway, req.conn.id};
      st.pending_joins.insert(key);
      range_query q{st.room, req.since, upto, static_cast<uint32_t>(upto - req.since - 1), false};
      self->request(st.deps.store, st.deps.cfg.store_timeout, range_atom_v, q)
          .then(
              [=](std::vector<stored_msg>& got, uint64_t first) {
                auto& st = self->state;
                learn_first_seq(self, first);
                if (st.pending_joins.erase(key) == 0) return;  // left meanwhile
                std::vector<std::string> frames;
                uint64_t expect = req.since + 1;
                bool ok = true;
                for (auto& m : got) {
                  if (m.seq != expect++) ok = false;
                  frames.push_back(encode_message(m));
                }
                ok = ok && expect == upto &&
                     (st.recent.empty() ? upto == st.last_seq + 1
                                        : st.recent.front().seq <= upto);
                if (ok) {
                  for (auto& m : st.recent)
                    if (m.seq >= upto) frames.push_back(encode_message(m));
                } else {
                  frames.clear();
                }
                finish_join(self, req, std::move(frames), ok ? 1 : 0);
                schedule_idle_check(self);
              },
              [=](caf::error&) {
                if (self->state.pending_joins.erase(key) == 0) return;
                finish_join(self, req, {}, 0);
                schedule_idle_check(self);
              });
      return;
    }
  }
  finish_join(self, req, std::move(frames), recovered);
}

void handle_history(room_actor* self, const history_req& req) {
  auto& st = self->state;
  uint64_t before = req.before == 0 ? st.last_seq + 1 : std::min(req.before, st.last_seq + 1);
  uint64_t lo = before > req.limit ? before - req.limit : 1;
  lo = std::max(lo, st.first_seq);
  if (before <= lo) {
    reply(self, req.conn, encode_history(req.req_id, st.room, {}, false, st.first_seq));
    return;
  }
  if (!st.recent.empty() && st.recent.front().seq <= lo) {
    std::vector<stored_msg> out;
    for (auto& m : st.recent)
      if (m.seq >= lo && m.seq < before) out.push_back(m);
    reply(self, req.conn, encode_history(req.req_id, st.room, out, lo > st.first_seq, st.first_seq));
    return;
  }
  range_query q{st.room, 0, before, req.limit, true};
  self->request(st.deps.store, st.deps.cfg.store_timeout, range_atom_v, q)
      .then(
          [=](std::vector<stored_msg>& got, uint64_t first) {
            auto& st = self->state;
            learn_first_seq(self, first);
            bool more = got.size() >= req.limit && !got.empty() && got.front().seq > st.first_seq;
            reply(self, req.conn, encode_history(req.req_id, st.room, got, more, st.first_seq));
          },
          [=](caf::error&) {
            reply_error(self, req.conn, req.req_id, "unavailable", "history is unavailable");
          });
}

void apply_snapshot(room_actor* self, room_snapshot& snap) {
  auto& st = self->state;
  st.epoch = snap.epoch;
  st.last_seq = snap.last_seq;
  st.first_seq = snap.first_seq;
  st.recent.clear();
  for (auto& m : snap.recent) {
    st.last_ts = std::max(st.last_ts, m.ts);
    push_recent(self, m);
  }
  for (auto& m : snap.idem)
    if (!m.idem_key.empty()) remember_idem(self, m.from + '\x1f' + m.idem_key, m.seq, m.ts);
  st.loaded = true;
}

// Answers every request with `unavailable` while the store cannot load the
// room, then stops so that the next request tries again.
caf::behavior failed_behavior(room_actor* self) {
  auto fail = [=](const conn_ref& c, const std::string& id) {
    reply_error(self, c, id, "unavailable", "room storage is unavailable");
  };
  return {
      [=](join_req& r) { fail(r.conn, r.req_id); },
      [=](send_req& r) { fail(r.conn, r.req_id); },
      [=](history_req& r) { fail(r.conn, r.req_id); },
      [=](presence_req& r) { fail(r.conn, r.req_id); },
      [=](leave_req& r) {
        if (r.reply) reply(self, r.conn, encode_left(r.req_id, self->state.room));
      },
      [=](typing_req&) {},
      [=](stop_room_atom) { self->quit(); },
  };
}

}  // namespace

caf::behavior room_impl(room_actor* self, std::string name, room_deps deps) {
  auto& st = self->state;
  st.room = std::move(name);
  st.deps = std::move(deps);
  st.dm = parse_dm_room(st.room, st.dm_a, st.dm_b);
  global_metrics().rooms.fetch_add(1, std::memory_order_relaxed);
  self->attach_functor([] { global_metrics().rooms.fetch_sub(1, std::memory_order_relaxed); });
  // A gateway (or, in a cluster, its node) is gone: drop its connections.
  self->set_down_handler([=](caf::down_msg& dm) {
    auto gw = caf::actor_cast<caf::actor>(dm.source);
    auto& st = self->state;
    auto it = st.by_gateway.find(gw);
    if (it == st.by_gateway.end()) return;
    std::vector<uint64_t> ids;
    for (auto& [id, user] : it->second) ids.push_back(id);
    for (auto id : ids) remove_member(self, gw, id);
  });
  // Nothing is served before the room knows its seq and epoch: await() keeps
  // every other message in the mailbox until the store answers.
  self->request(st.deps.store, st.deps.cfg.store_timeout, load_atom_v, st.room)
      .await(
          [=](room_snapshot& snap) {
            apply_snapshot(self, snap);
            // A room created by a request that joins nobody (history, presence,
            // typing, a refused join) must go away after its grace as well.
            schedule_idle_check(self);
          },
          [=](caf::error& err) {
            spdlog::error("event=room_load_failed room={} error=\"{}\"", self->state.room,
                          self->system().render(err));
            self->become(failed_behavior(self));
            self->send(self->state.deps.directory, room_idle{self->state.room, 0});
            self->delayed_send(self, std::chrono::seconds(5), stop_room_atom_v);
          });
  auto from_directory = [=] {
    if (self->current_sender() == self->state.deps.directory) ++self->state.received;
  };
  return {
      [=](join_req& req) {
        from_directory();
        handle_join(self, req);
      },
      [=](leave_req& req) {
        from_directory();
        auto& st = self->state;
        st.pending_joins.erase({req.conn.gateway, req.conn.id});
        remove_member(self, req.conn.gateway, req.conn.id);
        if (req.reply) reply(self, req.conn, encode_left(req.req_id, st.room));
      },
      [=](send_req& req) {
        from_directory();
        handle_send(self, req);
      },
      [=](history_req& req) {
        from_directory();
        handle_history(self, req);
      },
      [=](presence_req& req) {
        from_directory();
        auto& st = self->state;
        reply(self, req.conn,
              encode_presence(req.req_id, st.room,
                              list_members(self, st.deps.cfg.presence_members_listed)));
      },
      [=](typing_req& req) {
        from_directory();
        auto& st = self->state;
        auto it = st.users.find(req.user);
        if (st.dm) {
          if (!is_participant(self, req.user)) return;
          auto other = req.user == st.dm_a ? st.dm_b : st.dm_a;
          auto reg = st.deps.registry_for(other);
          if (!reg) return;
          self->send(reg,
                     user_deliver{{other}, st.room, 0, encode_typing(st.room, req.user, req.name)});
        } else if (it != st.users.end() && is_member(self, req.conn)) {
          broadcast(self, 0, encode_typing(st.room, req.user, it->second.name), req.user);
        }
      },
      [=](presence_tick_atom) {
        auto& st = self->state;
        st.tick_pending = false;
        if (st.diff_joins.empty() && st.diff_leaves.empty()) return;
        broadcast(self, 0,
                  encode_presence_diff(st.room, st.diff_joins, st.diff_leaves,
                                       st.deps.cfg.presence_diff_listed, st.users.size()));
        st.diff_joins.clear();
        st.diff_leaves.clear();
      },
      [=](idle_chk_atom, uint64_t gen) {
        auto& st = self->state;
        if (gen != st.idle_gen || st.conn_count > 0 || st.in_flight || !st.queued.empty() ||
            !st.pending_joins.empty())
          return;
        self->send(st.deps.directory, room_idle{st.room, st.received});
        // If the directory forwarded something meanwhile it will not stop us: check again later.
        self->delayed_send(self, st.deps.cfg.idle_grace, idle_chk_atom_v, ++st.idle_gen);
      },
      [=](stop_room_atom) { self->quit(); },
      [=](load_atom) { resync(self); },
      [=](caf::get_atom) -> std::tuple<uint64_t, std::string, uint64_t> {
        auto& st = self->state;
        return {st.last_seq, st.epoch, st.users.size()};
      },
  };
}

}  // namespace chat
