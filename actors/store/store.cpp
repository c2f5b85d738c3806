#include "actors/store/store.hpp"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include <spdlog/spdlog.h>

#include <unordered_set>

#include "actors/metrics.hpp"

namespace chat {

namespace {

using store_pointer = store_actor::stateful_pointer<store_state>;

constexpr uint8_t outcome_committed = 0, outcome_fenced = 1, outcome_failed = 2;

caf::error store_error(const std::string& what) {
  return make_error(store_errc::failed, "store: " + what);
}

uint8_t outcome_of(append_result r) {
  return r == append_result::committed ? outcome_committed : outcome_fenced;
}

// One group commit: every batch in one transaction; if that fails, each batch
// alone, so that one bad batch fails only its own room. A fenced batch fails
// alone without failing the transaction. Runs in the store or a committer.
std::vector<commit_outcome> commit_batches(store_backend& backend,
                                           std::vector<append_batch>& batches) {
  std::vector<commit_outcome> out(batches.size());
  std::vector<append_result> results;
  std::string err;
  auto& m = global_metrics();
  if (backend.append(batches, results, err)) {
    m.store_commits.fetch_add(1, std::memory_order_relaxed);
    for (size_t i = 0; i < batches.size(); ++i) out[i].kind = outcome_of(results[i]);
    return out;
  }
  m.store_failures.fetch_add(1, std::memory_order_relaxed);
  spdlog::error("event=store_commit_failed batches={} error=\"{}\"", batches.size(), err);
  for (size_t i = 0; i < batches.size(); ++i) {
    std::string one_err;
    std::vector<append_batch> one;
    one.push_back(std::move(batches[i]));
    if (batches.size() > 1 && backend.append(one, results, one_err)) {
      out[i].kind = outcome_of(results[0]);
    } else {
      out[i].kind = outcome_failed;
      out[i].error = one_err.empty() ? err : one_err;
    }
    batches[i] = std::move(one.front());
  }
  return out;
}

committer_actor::behavior_type committer_impl(committer_actor::pointer,
                                              std::shared_ptr<store_backend> backend) {
  return {
      [=](commit_atom, std::vector<append_batch>& batches)
          -> caf::result<std::vector<commit_outcome>, std::vector<append_batch>> {
        auto outcomes = commit_batches(*backend, batches);
        return {std::move(outcomes), std::move(batches)};
      },
  };
}

void answer(store_state::pending_append& p, const commit_outcome& o) {
  if (o.kind == outcome_committed) {
    p.promise.deliver(std::move(p.batch));
  } else if (o.kind == outcome_fenced) {
    spdlog::warn("event=store_append_fenced room={} owner={} term={}", p.room, p.owner, p.term);
    p.promise.deliver(make_error(store_errc::fenced, "room '" + p.room + "' term " +
                                                         std::to_string(p.term) +
                                                         " is no longer current"));
  } else {
    p.promise.deliver(store_error(o.error));
  }
}

// Runs the reads whose room has seen every append they wait for.
void run_ready_reads(store_pointer self) {
  auto& st = self->state;
  if (st.waiting.empty()) return;
  std::vector<store_state::waiting_read> ready, rest;
  for (auto& w : st.waiting) {
    auto it = st.rooms.find(w.room);
    if (it == st.rooms.end() || it->second.done >= w.need)
      ready.push_back(std::move(w));
    else
      rest.push_back(std::move(w));
  }
  st.waiting = std::move(rest);
  for (auto& w : ready) w.run();
}

// Answers the batches of a finished commit, then the reads that waited for them.
void finish(store_pointer self, std::vector<store_state::pending_append>& done,
            const std::vector<commit_outcome>& outcomes, std::vector<append_batch>& batches) {
  auto& st = self->state;
  bool any_ok = false;
  std::string last_err;
  for (size_t i = 0; i < done.size(); ++i) {
    commit_outcome o =
        i < outcomes.size() ? outcomes[i] : commit_outcome{outcome_failed, "no outcome"};
    if (i < batches.size()) done[i].batch = std::move(batches[i]);
    answer(done[i], o);
    if (o.kind != outcome_failed)
      any_ok = true;
    else
      last_err = o.error;
    auto it = st.rooms.find(done[i].room);
    if (it != st.rooms.end()) {
      ++it->second.done;
      it->second.committing = false;
    }
  }
  auto& m = global_metrics();
  if (any_ok && !m.store_ok.load())
    m.set_store_status(true, "ok");
  else if (!any_ok && !done.empty())
    m.set_store_status(false, last_err);
  run_ready_reads(self);
  for (auto it = st.rooms.begin(); it != st.rooms.end();)
    if (it->second.done >= it->second.handed && !it->second.committing)
      it = st.rooms.erase(it);
    else
      ++it;
}

// Events a search-indexing step takes: FTS5 costs ~35 us a message on these
// machines, so a step holds the index (and a search waiting for it) ~35 ms.
constexpr size_t index_budget = 1024;

void poke_indexer(store_pointer self) {
  auto& st = self->state;
  // anon: a typed actor may not send() to an untyped one (and wants no answer)
  if (st.indexer && st.backend->search_backlog() > 0) caf::anon_send(st.indexer, index_atom_v);
}

// Hands what is pending to a free committer: every batch whose room is not in
// a commit under way (those wait for it, so a room's batches stay in order).
void dispatch(store_pointer self) {
  auto& st = self->state;
  if (st.idle_committers.empty() || st.pending.empty()) return;
  std::vector<store_state::pending_append> take, keep;
  for (auto& p : st.pending)
    (st.rooms[p.room].committing ? keep : take).push_back(std::move(p));
  st.pending = std::move(keep);
  if (take.empty()) return;
  std::vector<append_batch> batches;
  batches.reserve(take.size());
  for (auto& p : take) {
    st.rooms[p.room].committing = true;
    batches.push_back(std::move(p.batch));
  }
  auto c = st.idle_committers.back();
  st.idle_committers.pop_back();
  auto taken = std::make_shared<std::vector<store_state::pending_append>>(std::move(take));
  auto back = [=](const std::vector<commit_outcome>& outcomes,
                  std::vector<append_batch>& done_batches) {
    self->state.idle_committers.push_back(c);
    finish(self, *taken, outcomes, done_batches);
    dispatch(self);
  };
  self->request(c, caf::infinite, commit_atom_v, std::move(batches))
      .then(
          [=](std::vector<commit_outcome>& outcomes, std::vector<append_batch>& done_batches) {
            back(outcomes, done_batches);
          },
          [=](caf::error& e) {
            std::vector<commit_outcome> failed(
                taken->size(), commit_outcome{outcome_failed, self->system().render(e)});
            std::vector<append_batch> none;  // lost with the committer: only errors go back
            back(failed, none);
          });
}

// Commits everything pending (inline) or hands it to a committer.
void flush(store_pointer self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  if (st.pending.empty()) return;
  if (!st.committers.empty()) {
    dispatch(self);
    return;
  }
  auto pending = std::move(st.pending);
  st.pending.clear();
  std::vector<append_batch> batches;
  batches.reserve(pending.size());
  for (auto& p : pending) batches.push_back(std::move(p.batch));
  auto outcomes = commit_batches(*st.backend, batches);
  finish(self, pending, outcomes, batches);
  poke_indexer(self);
}

// Whether a read of `room` must wait for appends handed in before it. Inline
// commits are simply done first; with parallel commits the read waits (in
// `waiting`) until those appends are answered.
bool must_wait(store_pointer self, const std::string& room) {
  auto& st = self->state;
  if (st.committers.empty()) {
    if (!st.pending.empty()) flush(self);
    return false;
  }
  auto it = st.rooms.find(room);
  if (it == st.rooms.end() || it->second.done >= it->second.handed) return false;
  dispatch(self);  // its pending batches need not wait for the flush message
  return true;
}

void defer(store_pointer self, const std::string& room, std::function<void()> run) {
  auto& st = self->state;
  st.waiting.push_back({room, st.rooms[room].handed, std::move(run)});
}

caf::expected<room_snapshot> load(store_pointer self, const std::string& room) {
  auto& st = self->state;
  room_snapshot snap;
  std::string err;
  if (!st.backend->load_room(room, st.cfg.recent_limit, now_ms() - st.cfg.idem_window_ms, snap,
                             err))
    return store_error(err);
  return snap;
}

caf::expected<room_snapshot> claim(store_pointer self, const std::string& room,
                                   const std::string& node) {
  auto& st = self->state;
  room_snapshot snap;
  std::string err;
  if (!st.backend->claim_room(room, node, st.cfg.recent_limit, now_ms() - st.cfg.idem_window_ms,
                              snap, err))
    return store_error(err);
  spdlog::info("event=store_room_claimed room={} owner={} term={} last_seq={}", room, node,
               snap.term, snap.last_seq);
  return snap;
}

caf::expected<std::pair<std::vector<stored_msg>, uint64_t>> range(store_pointer self,
                                                                  const range_query& q) {
  std::vector<stored_msg> out;
  uint64_t first = 1;
  std::string err;
  if (!self->state.backend->range(q, out, err) ||
      !self->state.backend->first_seq(q.room, first, err))
    return store_error(err);
  return std::make_pair(std::move(out), first);
}

// A read of one room (load, claim, search, unread, exists) now, or, while
// appends of that room handed in before it are still committing, after them.
template <class T>
caf::result<T> ordered_read(store_pointer self, const std::string& room,
                            std::function<caf::expected<T>()> read) {
  if (must_wait(self, room)) {
    auto rp = self->make_response_promise<T>();
    defer(self, room, [rp, read]() mutable {
      auto r = read();
      if (r)
        rp.deliver(std::move(*r));
      else
        rp.deliver(r.error());
    });
    return rp;
  }
  auto r = read();
  if (!r) return r.error();
  return std::move(*r);
}

caf::result<room_snapshot> snapshot_read(store_pointer self, const std::string& room,
                                         std::function<caf::expected<room_snapshot>()> read) {
  return ordered_read<room_snapshot>(self, room, std::move(read));
}

void probe_health(store_pointer self) {
  std::string err;
  bool ok = self->state.backend->healthy(err);
  auto& m = global_metrics();
  if (ok != m.store_ok.load()) {
    if (ok)
      spdlog::info("event=store_healthy");
    else
      spdlog::error("event=store_unhealthy error=\"{}\"", err);
  }
  m.set_store_status(ok, ok ? "ok" : err);
}

}  // namespace

store_actor::behavior_type store_impl(store_pointer self, std::shared_ptr<store_backend> backend,
                                      store_config cfg) {
  self->state.backend = std::move(backend);
  self->state.cfg = cfg;
  probe_health(self);
  if (self->state.backend->has_search_indexer()) {
    // Linked: it goes when the store goes (after the step it is in).
    self->state.indexer =
        cfg.own_threads
            ? self->spawn<caf::detached + caf::linked>(indexer_impl, self->state.backend, true)
            : self->spawn<caf::linked>(indexer_impl, self->state.backend, false);
    poke_indexer(self);  // a backlog left by the last run
  }
  if (cfg.retention.max_messages > 0 || cfg.retention.max_age_ms > 0)
    self->delayed_send(self, cfg.trim_interval, trim_atom_v);
  if (cfg.health_interval.count() > 0) self->delayed_send(self, cfg.health_interval, health_atom_v);
  // One connection stays for the store's own reads; the others commit.
  auto conc = self->state.backend->concurrency();
  auto n = conc > 1 ? std::min(cfg.max_parallel_commits, conc - 1) : 0;
  for (size_t i = 0; i < n; ++i) {
    // Linked: they go when the store goes (after the commit they are in).
    auto c = cfg.own_threads
                 ? self->spawn<caf::detached + caf::linked>(committer_impl, self->state.backend)
                 : self->spawn<caf::linked>(committer_impl, self->state.backend);
    self->state.committers.push_back(c);
    self->state.idle_committers.push_back(c);
  }
  // Commit what is pending before going away (graceful shutdown), in this
  // thread: the committers go with the store. (Not in an attach_functor: the
  // state is destroyed by then.)
  self->set_exit_handler([=](caf::exit_msg& msg) {
    auto& st = self->state;
    st.committers.clear();
    st.idle_committers.clear();
    flush(self);
    self->quit(msg.reason);
  });
  return {
      [=](load_atom, const std::string& room) -> caf::result<room_snapshot> {
        // Reads see every append handed in before them: a room that re-reads its
        // state after a timed-out append must find that append if it was taken.
        return snapshot_read(self, room, [=] { return load(self, room); });
      },
      [=](claim_atom, const std::string& room,
          const std::string& node) -> caf::result<room_snapshot> {
        // Appends handed in before the claim commit under the old term first.
        return snapshot_read(self, room, [=] { return claim(self, room, node); });
      },
      [=](append_atom, append_batch& batch) -> caf::result<append_batch> {
        auto& st = self->state;
        if (batch.empty()) return store_error("empty batch");
        auto promise = self->make_response_promise<append_batch>();
        ++st.rooms[batch.room].handed;
        auto room = batch.room, owner = batch.owner;
        auto term = batch.term;
        st.pending.push_back({std::move(room), std::move(owner), term, std::move(batch), promise});
        // The flush message queues behind every append already in the mailbox:
        // one commit then covers all of them.
        if (!st.flush_scheduled) {
          st.flush_scheduled = true;
          self->send(self, flush_now_atom_v);
        }
        return promise;
      },
      [=](range_atom, const range_query& q) -> caf::result<std::vector<stored_msg>, uint64_t> {
        if (must_wait(self, q.room)) {  // same as load
          auto rp = self->make_response_promise<std::vector<stored_msg>, uint64_t>();
          defer(self, q.room, [=]() mutable {
            auto r = range(self, q);
            if (r)
              rp.deliver(std::move(r->first), r->second);
            else
              rp.deliver(r.error());
          });
          return rp;
        }
        auto r = range(self, q);
        if (!r) return r.error();
        return {std::move(r->first), r->second};
      },
      [=](event_atom, const std::string& room,
          uint64_t seq) -> caf::result<stored_msg, bool> {
        // After the room's appends handed in before it, as range: a change
        // committed a moment ago is in the state read here.
        auto read = [=]() -> caf::expected<std::pair<stored_msg, bool>> {
          std::pair<stored_msg, bool> out;
          std::string err;
          if (!self->state.backend->get_event(room, seq, out.first, out.second, err))
            return store_error(err);
          return out;
        };
        if (must_wait(self, room)) {
          auto rp = self->make_response_promise<stored_msg, bool>();
          defer(self, room, [rp, read]() mutable {
            auto r = read();
            if (r)
              rp.deliver(std::move(r->first), r->second);
            else
              rp.deliver(r.error());
          });
          return rp;
        }
        auto r = read();
        if (!r) return r.error();
        return {std::move(r->first), r->second};
      },
      [=](search_atom, const std::string& room, const std::string& query, uint64_t before,
          uint32_t limit) -> caf::result<std::vector<stored_msg>> {
        auto read = [=]() -> caf::expected<std::vector<stored_msg>> {
          std::vector<stored_msg> out;
          std::string err;
          if (!self->state.backend->search(room, query, before, limit, out, err))
            return store_error(err);
          return out;
        };
        return ordered_read<std::vector<stored_msg>>(self, room, read);
      },
      [=](my_rooms_atom, const std::string& user) -> caf::result<std::vector<user_room>> {
        // Not ordered behind appends: a membership a room wrote a moment ago
        // may be missing, as it would be on another node.
        std::vector<user_room> out;
        std::string err;
        if (!self->state.backend->user_rooms(user, out, err)) return store_error(err);
        return out;
      },
      [=](unread_atom, const std::string& room, const std::string& user, uint64_t after,
          uint64_t upto) -> caf::result<uint64_t> {
        auto read = [=]() -> caf::expected<uint64_t> {
          uint64_t n = 0;
          std::string err;
          if (!self->state.backend->count_unread(room, user, after, upto, n, err))
            return store_error(err);
          return n;
        };
        return ordered_read<uint64_t>(self, room, read);
      },
      [=](claims_atom, const claim_check& chk) -> caf::result<std::vector<std::string>> {
        std::vector<std::pair<std::string, uint64_t>> claims;
        claims.reserve(chk.rooms.size());
        for (size_t i = 0; i < chk.rooms.size() && i < chk.terms.size(); ++i)
          claims.emplace_back(chk.rooms[i], chk.terms[i]);
        std::vector<std::string> lost;
        std::string err;
        if (!self->state.backend->lost_claims(chk.owner, claims, lost, err)) return store_error(err);
        return lost;
      },
      [=](exists_atom, const std::string& room) -> caf::result<bool> {
        // An append handed in before may create it: answer after it, as reads do.
        auto read = [=]() -> caf::expected<bool> {
          bool found = false;
          std::string err;
          if (!self->state.backend->room_exists(room, found, err)) return store_error(err);
          return found;
        };
        return ordered_read<bool>(self, room, read);
      },
      [=](const user_ban& b) -> caf::result<bool> {
        std::string err;
        if (!self->state.backend->store_user_ban(b, err)) return store_error(err);
        return true;
      },
      [=](bans_atom) -> caf::result<std::vector<user_ban>> {
        std::vector<user_ban> out;
        std::string err;
        if (!self->state.backend->user_bans(out, err)) return store_error(err);
        return out;
      },
      [=](flush_now_atom) { flush(self); },
      [=](trim_atom) {
        auto& st = self->state;
        uint64_t removed = 0;
        std::string err;
        if (!st.backend->trim(st.cfg.retention, now_ms(), removed, err))
          spdlog::warn("event=store_trim_failed error=\"{}\"", err);
        else if (removed > 0)
          spdlog::info("event=store_trim removed={}", removed);
        poke_indexer(self);  // the trimmed messages leave the search index
        self->delayed_send(self, st.cfg.trim_interval, trim_atom_v);
      },
      [=](health_atom) {
        probe_health(self);
        self->delayed_send(self, self->state.cfg.health_interval, health_atom_v);
      },
  };
}

caf::behavior indexer_impl(caf::event_based_actor* self, std::shared_ptr<store_backend> backend,
                           bool own_thread) {
  if (own_thread) {
    // Its thread yields to the ones that carry messages (room, store, I/O):
    // indexing may lag, a search indexes its own room anyway. Linux applies
    // a nice value to the calling thread only.
    errno = 0;
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19) != 0)
      spdlog::warn("event=search_indexer_nice_failed errno={}", errno);
  }
  return {
      [=](index_atom) {
        if (backend->search_backlog() == 0) return;  // a poke after the work was done
        bool more = false;
        std::string err;
        if (!backend->index_search(index_budget, more, err)) {
          // Searches still index their own room; try the backlog again later.
          spdlog::warn("event=search_index_failed error=\"{}\"", err);
          self->delayed_send(self, std::chrono::seconds(1), index_atom_v);
          return;
        }
        if (more) self->send(self, index_atom_v);
      },
  };
}

store_actor spawn_store(caf::actor_system& sys, std::shared_ptr<store_backend> backend,
                        store_config cfg, bool detached) {
  cfg.own_threads = detached;
  if (detached) return sys.spawn<caf::detached>(store_impl, std::move(backend), cfg);
  return sys.spawn(store_impl, std::move(backend), cfg);
}

}  // namespace chat
