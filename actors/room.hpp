#pragma once
// A room actor: the only place a room's `seq` is assigned. Its mailbox is the
// room's lock: it holds membership (per gateway, so a broadcast is one CAF
// message per gateway), presence counts per user, the recent window for
// recovery, idempotency keys, and the pipeline of sends waiting for the store.
#include <deque>
#include <map>
#include <set>
#include <unordered_map>

#include "actors/cluster/routes.hpp"
#include "actors/store/store.hpp"
#include "caf/all.hpp"
#include "messages/types.hpp"

namespace chat {

struct room_config {
  uint32_t window = 1000;                 // recent messages kept in memory
  int64_t idem_window_ms = 10 * 60 * 1000;
  caf::timespan idle_grace = std::chrono::seconds(30);
  size_t presence_batch_threshold = 1000;  // above: presence_diff once per second
  caf::timespan presence_batch_interval = std::chrono::seconds(1);
  // Presence deliveries a second (changes x members) above which a room of
  // any size batches too: a reconnect storm would send members^2 events.
  size_t presence_budget = 500;
  uint64_t max_recovery = 10000;           // missed messages a join may replay
  size_t joined_members_listed = 100;
  size_t presence_members_listed = 1000;
  size_t presence_diff_listed = 100;       // joins (and leaves) named in one presence_diff
  uint32_t max_batch = 1000;               // messages per store append
  caf::timespan store_timeout = std::chrono::seconds(30);
};

// What every room needs; the directory hands it to the rooms it spawns.
struct room_deps {
  store_actor store;
  caf::actor directory;
  caf::actor registry;  // single node, and tests
  room_config cfg;
  std::shared_ptr<cluster_routes> routes;  // cluster: each user's registry is on its home node

  caf::actor registry_for(const std::string& user) const {
    if (routes)
      if (auto r = routes->users_for(user)) return r;
    return registry;
  }
};

struct room_state {
  std::string room;
  bool dm = false;
  std::string dm_a, dm_b;  // dm rooms: the two users
  room_deps deps;
  bool loaded = false;

  std::string epoch;
  uint64_t last_seq = 0;  // last committed
  uint64_t first_seq = 1;
  int64_t last_ts = 0;
  std::deque<stored_msg> recent;

  struct idem_hit {
    uint64_t seq;
    int64_t ts;
  };
  std::unordered_map<std::string, idem_hit> idem;  // user \x1f key -> first send's ack
  std::deque<std::pair<int64_t, std::string>> idem_order;
  // Keys of sends not yet committed -> duplicates waiting for the same ack.
  std::unordered_map<std::string, std::vector<std::pair<conn_ref, std::string>>> idem_waiters;

  // Membership: connections by gateway (for fan-out), users (for presence).
  std::map<caf::actor, std::unordered_map<uint64_t, std::string>> by_gateway;
  struct user_entry {
    std::string name;
    size_t conns = 0;
  };
  std::map<std::string, user_entry> users;
  size_t conn_count = 0;
  std::set<std::pair<caf::actor, uint64_t>> pending_joins;  // waiting for a store read

  // Send pipeline: one append in flight; the rest queue and go as the next batch.
  struct pending_send {
    send_req req;
    int64_t t0_us = 0;
    stored_msg msg;
  };
  std::deque<pending_send> queued;
  std::vector<pending_send> flying;
  bool in_flight = false;

  // Presence batching in big rooms, and in any room during a storm.
  std::vector<member_info> diff_joins, diff_leaves;
  bool tick_pending = false;
  caf::actor_clock::time_point presence_window_start;
  size_t presence_window_events = 0;

  uint64_t received = 0;  // requests forwarded by the directory
  uint64_t idle_gen = 0;

  static inline const char* name = "room";
};

using room_actor = caf::stateful_actor<room_state>;

caf::behavior room_impl(room_actor* self, std::string name, room_deps deps);

}  // namespace chat
