#pragma once
// The store actor: owns one backend, commits what many rooms hand it in ONE
// transaction per mailbox drain (group commit), and answers each room in order
// only after the commit. It runs detached (its own thread) because a commit
// blocks on fsync.
//
// A backend that takes calls from several threads at once (PostgreSQL, its
// connection pool) gets commits in parallel: up to `concurrency() - 1`
// committer actors, each running one group commit at a time on its own
// connection, so that the next group commits while the previous one waits for
// its fsync. A room is in at most one commit at a time (its batches commit in
// the order handed in); reads, claims and loads run in the store itself on a
// connection of their own, after the appends of their room handed in before
// them.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/store/backend.hpp"
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
    // The committed batch comes back (moved, not copied): the room publishes
    // and keeps its messages without having held a copy meanwhile.
    caf::replies_to<append_atom, append_batch>::with<append_batch>,
    // The messages and the room's oldest stored seq (it moves when retention trims).
    caf::replies_to<range_atom, range_query>::with<std::vector<stored_msg>, uint64_t>,
    // One event with its current state (room, seq) and whether it exists;
    // answered after the appends of the room handed in before it.
    caf::replies_to<event_atom, std::string, uint64_t>::with<stored_msg, bool>,
    // Search (room, query, before, limit): newest first.
    caf::replies_to<search_atom, std::string, std::string, uint64_t, uint32_t>::with<
        std::vector<stored_msg>>,
    // The rooms a user belongs to (my_rooms).
    caf::replies_to<my_rooms_atom, std::string>::with<std::vector<user_room>>,
    // Unread messages of (room, user) with after < seq <= upto.
    caf::replies_to<unread_atom, std::string, std::string, uint64_t, uint64_t>::with<uint64_t>,
    // Whether a room has a row; never creates one (reads of unknown rooms).
    caf::replies_to<exists_atom, std::string>::with<bool>,
    // Which of a node's claimed rooms another node has claimed since.
    caf::replies_to<claims_atom, claim_check>::with<std::vector<std::string>>,
    // Server-wide bans: store one (or lift it); every one stored.
    caf::replies_to<user_ban>::with<bool>,
    caf::replies_to<bans_atom>::with<std::vector<user_ban>>,
    caf::reacts_to<flush_now_atom>, caf::reacts_to<trim_atom>, caf::reacts_to<health_atom>>;

struct store_config {
  uint32_t recent_limit = 1000;          // messages a room keeps in memory
  int64_t idem_window_ms = 10 * 60 * 1000;
  retention_policy retention;
  caf::timespan trim_interval = std::chrono::seconds(60);
  // How often the store's health (chat_store_up, /readyz) is probed, so that
  // a lost database shows without traffic; 0 = only at start and on commits
  // (the default: timers of its own would disturb tests; chatd sets 5 s).
  caf::timespan health_interval = caf::timespan{0};
  // Group commits in flight at once, at most (and at most the backend's
  // concurrency() - 1); 0 = always commit in the store's own thread.
  size_t max_parallel_commits = 8;
  bool own_threads = true;  // committers detached (spawn_store sets it: false under tests)
};

// What became of one batch of a group commit.
struct commit_outcome {
  uint8_t kind = 0;  // 0 committed, 1 fenced, 2 failed
  std::string error;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, commit_outcome& x) {
  return f(caf::meta::type_name("commit_outcome"), x.kind, x.error);
}

// Runs one group commit on its own thread; the store answers the rooms. The
// batches travel there and back by move.
using committer_actor = caf::typed_actor<caf::replies_to<commit_atom, std::vector<append_batch>>::with<
    std::vector<commit_outcome>, std::vector<append_batch>>>;

struct store_state {
  std::shared_ptr<store_backend> backend;
  store_config cfg;
  struct pending_append {
    std::string room, owner;  // the batch's, kept while the batch is in a commit
    uint64_t term = 0;
    append_batch batch;       // moved out into the commit, back into the answer
    caf::typed_response_promise<append_batch> promise;
  };
  std::vector<pending_append> pending;
  bool flush_scheduled = false;
  // Runs the backend's search indexing (SQLite) on a thread of its own;
  // poked after each commit that leaves a backlog. Null: no indexer.
  caf::actor indexer;
  // Parallel commits (empty: commits run inline).
  std::vector<committer_actor> committers;
  std::vector<committer_actor> idle_committers;
  // Per room: appends handed in and appends answered, while they differ.
  struct room_count {
    uint64_t handed = 0;
    uint64_t done = 0;
    bool committing = false;  // in a commit under way
  };
  std::unordered_map<std::string, room_count> rooms;
  // Reads that wait until `done` of their room reaches `need`.
  struct waiting_read {
    std::string room;
    uint64_t need;
    std::function<void()> run;
  };
  std::vector<waiting_read> waiting;
  static inline const char* name = "store";
};

store_actor::behavior_type store_impl(store_actor::stateful_pointer<store_state> self,
                                      std::shared_ptr<store_backend> backend, store_config cfg);

// The search indexer: index_atom runs one step of store_backend::index_search
// and, while a backlog is left, sends itself another (pokes from the store
// and its own steps share one queue).
// own_thread: detached (production); its thread then runs at nice 19.
caf::behavior indexer_impl(caf::event_based_actor* self, std::shared_ptr<store_backend> backend,
                           bool own_thread);

// detached = its own thread (production); false under the test coordinator
// (committers then run on the test scheduler too).
store_actor spawn_store(caf::actor_system& sys, std::shared_ptr<store_backend> backend,
                        store_config cfg, bool detached = true);

}  // namespace chat
