#include "actors/store.hpp"

#include <spdlog/spdlog.h>

#include "actors/metrics.hpp"

namespace chat {

namespace {

caf::error store_error(const std::string& what) {
  return make_error(store_errc::failed, "store: " + what);
}

// Answers one batch of a commit that went through.
void answer(store_state::pending_append& p, append_result r) {
  if (r == append_result::committed) {
    p.promise.deliver(p.batch.msgs.back().seq);
    return;
  }
  spdlog::warn("event=store_append_fenced room={} owner={} term={}", p.batch.room, p.batch.owner,
               p.batch.term);
  p.promise.deliver(make_error(store_errc::fenced, "room '" + p.batch.room + "' term " +
                                                       std::to_string(p.batch.term) +
                                                       " is no longer current"));
}

// Commits everything pending. One transaction for all rooms; if it fails, each
// room's batch is retried alone so that one bad batch fails only its own room.
// A fenced batch fails alone without failing the transaction.
void flush(store_actor::stateful_pointer<store_state> self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  if (st.pending.empty()) return;
  auto pending = std::move(st.pending);
  st.pending.clear();
  std::vector<append_batch> batches;
  batches.reserve(pending.size());
  for (auto& p : pending) batches.push_back(p.batch);
  std::string err;
  std::vector<append_result> results;
  auto& m = global_metrics();
  if (st.backend->append(batches, results, err)) {
    m.store_commits.fetch_add(1, std::memory_order_relaxed);
    if (!m.store_ok.load()) m.set_store_status(true, "ok");
    for (size_t i = 0; i < pending.size(); ++i) answer(pending[i], results[i]);
    return;
  }
  m.store_failures.fetch_add(1, std::memory_order_relaxed);
  spdlog::error("event=store_commit_failed batches={} error=\"{}\"", batches.size(), err);
  bool any_ok = false;
  for (auto& p : pending) {
    std::string one_err;
    std::vector<append_batch> one{p.batch};
    if (pending.size() > 1 && st.backend->append(one, results, one_err)) {
      any_ok = true;
      answer(p, results[0]);
    } else {
      p.promise.deliver(store_error(one_err.empty() ? err : one_err));
    }
  }
  m.set_store_status(any_ok, any_ok ? "ok" : err);
}

void probe_health(store_actor::stateful_pointer<store_state> self) {
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

store_actor::behavior_type store_impl(store_actor::stateful_pointer<store_state> self,
                                      std::shared_ptr<store_backend> backend, store_config cfg) {
  self->state.backend = std::move(backend);
  self->state.cfg = cfg;
  probe_health(self);
  if (cfg.retention.max_messages > 0 || cfg.retention.max_age_ms > 0)
    self->delayed_send(self, cfg.trim_interval, trim_atom_v);
  if (cfg.health_interval.count() > 0) self->delayed_send(self, cfg.health_interval, health_atom_v);
  // Commit what is pending before going away (graceful shutdown).
  self->attach_functor([self] { flush(self); });
  return {
      [=](load_atom, const std::string& room) -> caf::result<room_snapshot> {
        auto& st = self->state;
        // Reads see every append handed in before them: a room that re-reads its
        // state after a timed-out append must find that append if it was taken.
        if (!st.pending.empty()) flush(self);
        room_snapshot snap;
        std::string err;
        if (!st.backend->load_room(room, st.cfg.recent_limit, now_ms() - st.cfg.idem_window_ms,
                                   snap, err))
          return store_error(err);
        return snap;
      },
      [=](claim_atom, const std::string& room,
          const std::string& node) -> caf::result<room_snapshot> {
        auto& st = self->state;
        // Appends handed in before the claim commit under the old term first.
        if (!st.pending.empty()) flush(self);
        room_snapshot snap;
        std::string err;
        if (!st.backend->claim_room(room, node, st.cfg.recent_limit,
                                    now_ms() - st.cfg.idem_window_ms, snap, err))
          return store_error(err);
        spdlog::info("event=store_room_claimed room={} owner={} term={} last_seq={}", room, node,
                     snap.term, snap.last_seq);
        return snap;
      },
      [=](append_atom, append_batch& batch) -> caf::result<uint64_t> {
        auto& st = self->state;
        if (batch.msgs.empty()) return store_error("empty batch");
        auto promise = self->make_response_promise<uint64_t>();
        st.pending.push_back({std::move(batch), promise});
        // The flush message queues behind every append already in the mailbox:
        // one commit then covers all of them.
        if (!st.flush_scheduled) {
          st.flush_scheduled = true;
          self->send(self, flush_now_atom_v);
        }
        return promise;
      },
      [=](range_atom, const range_query& q) -> caf::result<std::vector<stored_msg>, uint64_t> {
        if (!self->state.pending.empty()) flush(self);  // same as load
        std::vector<stored_msg> out;
        uint64_t first = 1;
        std::string err;
        if (!self->state.backend->range(q, out, err) ||
            !self->state.backend->first_seq(q.room, first, err))
          return store_error(err);
        return {std::move(out), first};
      },
      [=](rooms_atom) -> caf::result<std::vector<std::string>> {
        std::vector<std::string> out;
        std::string err;
        if (!self->state.backend->rooms(out, err)) return store_error(err);
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
        self->delayed_send(self, st.cfg.trim_interval, trim_atom_v);
      },
      [=](health_atom) {
        probe_health(self);
        self->delayed_send(self, self->state.cfg.health_interval, health_atom_v);
      },
  };
}

store_actor spawn_store(caf::actor_system& sys, std::shared_ptr<store_backend> backend,
                        store_config cfg, bool detached) {
  if (detached) return sys.spawn<caf::detached>(store_impl, std::move(backend), cfg);
  return sys.spawn(store_impl, std::move(backend), cfg);
}

}  // namespace chat
