#pragma once
// The store actor: owns one backend, commits what many rooms hand it in ONE
// transaction per mailbox drain (group commit), and answers each room in order
// only after the commit. It runs detached (its own thread) because a commit
// blocks on fsync.
#include <memory>

#include "actors/store/backend.hpp"
#include "caf/all.hpp"
#include "messages/clock.hpp"
#include "messages/types.hpp"

namespace chat {

using store_actor = caf::typed_actor<
    caf::replies_to<load_atom, std::string>::with<room_snapshot>,
    // The committed batch comes back (moved, not copied): the room publishes
    // and keeps its messages without having held a copy meanwhile.
    caf::replies_to<append_atom, append_batch>::with<append_batch>,
    // The messages and the room's oldest stored seq (it moves when retention trims).
    caf::replies_to<range_atom, range_query>::with<std::vector<stored_msg>, uint64_t>,
    // Whether a room has a row; never creates one (reads of unknown rooms).
    caf::replies_to<exists_atom, std::string>::with<bool>,
    caf::reacts_to<flush_now_atom>, caf::reacts_to<trim_atom>>;

struct store_config {
  uint32_t recent_limit = 1000;          // messages a room keeps in memory
  int64_t idem_window_ms = 10 * 60 * 1000;
  retention_policy retention;
  caf::timespan trim_interval = std::chrono::seconds(60);
};

struct store_state {
  std::shared_ptr<store_backend> backend;
  store_config cfg;
  // Appends waiting for the next group commit, and who waits for each.
  std::vector<append_batch> pending;
  std::vector<caf::typed_response_promise<append_batch>> promises;
  bool flush_scheduled = false;
  static inline const char* name = "store";
};

store_actor::behavior_type store_impl(store_actor::stateful_pointer<store_state> self,
                                      std::shared_ptr<store_backend> backend, store_config cfg);

// detached = its own thread (production); false under the test coordinator.
store_actor spawn_store(caf::actor_system& sys, std::shared_ptr<store_backend> backend,
                        store_config cfg, bool detached = true);

}  // namespace chat
