#include "actors/store/store.hpp"

#include <spdlog/spdlog.h>

#include "actors/metrics.hpp"

namespace chat {

namespace {

caf::error store_error(const std::string& what) {
  return caf::make_error(caf::sec::runtime_error, "store: " + what);
}

// Commits everything pending. One transaction for all rooms; if it fails, each
// room's batch is retried alone so that one bad batch fails only its own room.
void flush(store_actor::stateful_pointer<store_state> self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  if (st.pending.empty()) return;
  auto batches = std::move(st.pending);
  auto promises = std::move(st.promises);
  st.pending.clear();
  st.promises.clear();
  std::string err;
  auto& m = global_metrics();
  if (st.backend->append(batches, err)) {
    m.store_commits.fetch_add(1, std::memory_order_relaxed);
    if (!m.store_ok.load()) m.set_store_status(true, "ok");
    for (size_t i = 0; i < batches.size(); ++i) promises[i].deliver(std::move(batches[i]));
    return;
  }
  m.store_failures.fetch_add(1, std::memory_order_relaxed);
  spdlog::error("event=store_commit_failed batches={} error=\"{}\"", batches.size(), err);
  bool any_ok = false;
  for (size_t i = 0; i < batches.size(); ++i) {
    std::string one_err;
    std::vector<append_batch> one;
    one.push_back(std::move(batches[i]));
    if (batches.size() > 1 && st.backend->append(one, one_err)) {
      any_ok = true;
      promises[i].deliver(std::move(one.front()));
    } else {
      promises[i].deliver(store_error(one_err.empty() ? err : one_err));
    }
  }
  m.set_store_status(any_ok, any_ok ? "ok" : err);
}

}  // namespace

store_actor::behavior_type store_impl(store_actor::stateful_pointer<store_state> self,
                                      std::shared_ptr<store_backend> backend, store_config cfg) {
  self->state.backend = std::move(backend);
  self->state.cfg = cfg;
  {
    std::string err;
    bool ok = self->state.backend->healthy(err);
    global_metrics().set_store_status(ok, ok ? "ok" : err);
  }
  if (cfg.retention.max_messages > 0 || cfg.retention.max_age_ms > 0)
    self->delayed_send(self, cfg.trim_interval, trim_atom_v);
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
      [=](append_atom, append_batch& batch) -> caf::result<append_batch> {
        auto& st = self->state;
        if (batch.msgs.empty()) return store_error("empty batch");
        auto promise = self->make_response_promise<append_batch>();
        st.pending.push_back(std::move(batch));
        st.promises.push_back(promise);
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
      [=](exists_atom, const std::string& room) -> caf::result<bool> {
        if (!self->state.pending.empty()) flush(self);  // a pending append may create it
        bool found = false;
        std::string err;
        if (!self->state.backend->room_exists(room, found, err)) return store_error(err);
        return found;
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
  };
}

store_actor spawn_store(caf::actor_system& sys, std::shared_ptr<store_backend> backend,
                        store_config cfg, bool detached) {
  if (detached) return sys.spawn<caf::detached>(store_impl, std::move(backend), cfg);
  return sys.spawn(store_impl, std::move(backend), cfg);
}

}  // namespace chat
