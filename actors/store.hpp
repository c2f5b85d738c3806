#pragma once
// The store actor: owns one backend, commits what many rooms hand it in ONE
// transaction per mailbox drain (group commit), and answers each room in order
// only after the commit. It runs detached (its own thread) because a commit
// blocks on fsync.
#include <memory>

#include "actors/store_backend.hpp"
#include "caf/all.hpp"
#include "messages/clock.hpp"
#include "messages/types.hpp"

namespace chat {

// Errors are store_errc (messages/types.hpp): `fenced` when an append's term
// is no longer the room's (another node claimed it), `failed` otherwise.
using store_actor = caf::typed_actor<
    caf::replies_to<load_atom, std::string>::with<room_snapshot>,
    // Claims the room for a node (room, node): raises its term; the snapshot
    // holds the new term. Fence later appends with it (append_batch::term).
    caf::replies_to<claim_atom, std::string, std::string>::with<room_snapshot>,
    // The batch's last seq once committed.
    caf::replies_to<append_atom, append_batch>::with<uint64_t>,
    // The messages and the room's oldest stored seq (it moves when retention trims).
    caf::replies_to<range_atom, range_query>::with<std::vector<stored_msg>, uint64_t>,
    caf::replies_to<rooms_atom>::with<std::vector<std::string>>, caf::reacts_to<flush_now_atom>,
    caf::reacts_to<trim_atom>, caf::reacts_to<health_atom>>;

struct store_config {
  uint32_t recent_limit = 1000;          // messages a room keeps in memory
  int64_t idem_window_ms = 10 * 60 * 1000;
  retention_policy retention;
  caf::timespan trim_interval = std::chrono::seconds(60);
  // How often the store's health (chat_store_up, /readyz) is probed while idle
  // traffic would not notice a lost database; 0 = only at start and on commits.
  caf::timespan health_interval = std::chrono::seconds(5);
};

struct store_state {
  std::shared_ptr<store_backend> backend;
  store_config cfg;
  struct pending_append {
    append_batch batch;
    caf::typed_response_promise<uint64_t> promise;
  };
  std::vector<pending_append> pending;
  bool flush_scheduled = false;
  static inline const char* name = "store";
};

store_actor::behavior_type store_impl(store_actor::stateful_pointer<store_state> self,
                                      std::shared_ptr<store_backend> backend, store_config cfg);

// detached = its own thread (production); false under the test coordinator.
store_actor spawn_store(caf::actor_system& sys, std::shared_ptr<store_backend> backend,
                        store_config cfg, bool detached = true);

}  // namespace chat
