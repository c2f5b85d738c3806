#pragma once
// A room actor: the only place a room's `seq` is assigned. Its mailbox is the
// room's lock: it holds membership (per gateway, so a broadcast is one CAF
// message per gateway), presence counts per user, the recent window for
// recovery, idempotency keys, and the pipeline of sends waiting for the store.
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "actors/cluster/routes.hpp"
#include "actors/idem_cache.hpp"
#include "actors/presence_batcher.hpp"
#include "actors/recent_window.hpp"
#include "actors/store/store.hpp"
#include "caf/all.hpp"
#include "messages/types.hpp"

namespace chat {

struct room_config {
  uint32_t window = 1000;                  // recent messages kept in memory
  size_t window_bytes = 2 << 20;           // ... and their bytes (text, data, names, key)
  int64_t idem_window_ms = 10 * 60 * 1000;
  size_t idem_max_keys = 10000;            // idempotency keys remembered per room
  size_t idem_max_bytes = 1 << 20;
  caf::timespan idle_grace = std::chrono::seconds(30);
  size_t presence_batch_threshold = 1000;  // above: presence_diff once per second
  caf::timespan presence_batch_interval = std::chrono::seconds(1);
  // Presence deliveries a second (changes x members) above which a room of
  // any size batches too: a reconnect storm would send members^2 events.
  size_t presence_budget = 500;
  uint64_t max_recovery = 10000;           // missed messages a join may replay
  // Bytes of one history page (well under --queue-limit, 1 MiB): a page of
  // large messages stops early with more:true instead of closing a reader 4008.
  size_t history_bytes = 256 << 10;
  size_t joined_members_listed = 100;
  size_t presence_members_listed = 1000;
  size_t presence_diff_listed = 100;       // joins (and leaves) named in one presence_diff
  uint32_t max_batch = 1000;               // messages per store append
  caf::timespan store_timeout = std::chrono::seconds(30);
  // With claims (room_deps::claim_as): how long a confirmed claim lets the
  // room serve joins and history from memory. Shorter than the time a peer
  // needs to be declared down (2 s), so a room that was paused past it asks
  // the store whether it still owns the room before it answers a read.
  caf::timespan claim_lease = std::chrono::seconds(1);
};

// What every room needs; the directory hands it to the rooms it spawns.
struct room_deps {
  store_actor store;
  caf::actor directory;
  caf::actor registry;  // single node, and tests
  room_config cfg;
  std::shared_ptr<cluster_routes> routes;  // cluster: each user's registry is on its home node
  // A store shared by several nodes (PostgreSQL): the room claims itself as
  // this node when it starts and fences every append with the term it got, so
  // that a node that lost the room (paused, cut off) can never store into it.
  // Empty: no claims, appends unfenced (SQLite, memory: one node per store).
  std::string claim_as;

  caf::actor registry_for(const std::string& user) const {
    if (routes)
      if (auto r = routes->users_for(user)) return r;
    return registry;
  }
};

// Where the answer to one request goes (see room.cpp `answer`).
struct reply_to {
  conn_ref conn;
  std::string req_id;
  caf::response_promise rp;  // answers a request(...) (server API); async() otherwise
};

// Who is in the room: connections by gateway (a broadcast is one CAF message
// per gateway) and users (presence counts them once however many connections).
struct room_members {
  struct user_entry {
    std::string name;
    size_t conns = 0;
    bool admin = false;  // a connection with the token role admin (nobody moderates them)
  };
  std::map<gateway_actor, std::unordered_map<uint64_t, std::string>> by_gateway;
  std::map<std::string, user_entry> users;
  size_t conn_count = 0;
};

// A send on its way to the store. Its text and data travel in the batch (moved,
// never copied) and come back with the store's answer.
struct pending_send {
  send_req req;
  reply_to to;
  std::string key;  // idempotency key ("" = none)
  int64_t t0_us = 0;
};

struct room_state {
  std::string room;
  bool dm = false;
  std::string dm_a, dm_b;  // dm rooms: the two users
  room_deps deps;
  bool loaded = false;

  // The sequence: the only place the room's seq is assigned.
  std::string epoch;
  uint64_t last_seq = 0;  // last committed
  uint64_t first_seq = 1;
  int64_t last_ts = 0;
  uint64_t term = 0;  // the claim this node holds (0: unfenced)
  caf::actor_clock::time_point confirmed{};  // when the store last agreed we own it
  recent_window recent;
  idem_cache<reply_to> idem;

  room_members members;
  std::set<std::pair<gateway_actor, uint64_t>> pending_joins;  // waiting for a store read
  // Sends of a connection whose join is pending (a first join waits for its
  // membership to be stored): run in order once it has joined, so that a
  // client may send right behind its join without waiting for `joined`.
  // Each with its reply target, made when it arrived (a promise belongs to
  // the message being handled).
  std::map<std::pair<gateway_actor, uint64_t>, std::vector<std::pair<send_req, reply_to>>>
      after_join;

  // Send pipeline: one append in flight; the rest queue and go as the next batch.
  // A change (edit, delete, react) or reply to a message older than the
  // window waits in `held` for the store to read its target (`looking_up`),
  // and every request after it waits behind it, so that a connection's
  // requests are sequenced in the order they came.
  std::deque<pending_send> held;
  bool looking_up = false;
  // Committed state of messages outside the window that a change targets
  // (read from the store once, kept current as changes commit).
  std::unordered_map<uint64_t, stored_msg> looked_up;
  std::deque<pending_send> queued;
  std::vector<pending_send> flying;

  // Memberships (protocol v2; none in dm rooms): all of the room's, held
  // here. Changes go to the store with the next batch (null: ended); a
  // `read` is answered once the batch that stores it commits.
  std::map<std::string, membership> memberships;
  std::map<std::string, std::optional<membership>> member_dirty, member_flying;
  // A `read` (or an `invite`) answered once the batch that stores it commits.
  struct read_waiter {
    reply_to to;
    std::string user;
    uint64_t seq = 0;
    std::string invited_by;  // an invite: the user is told who invited them
    bool invite = false;
    bool part = false;  // a part: answered `parted` once the membership's end is stored
    // A first join: `joined` once the membership is stored, so that the
    // user's my_rooms (read from the store) lists the room from then on.
    std::optional<join_req> join{};
  };
  std::vector<read_waiter> reads_waiting, reads_flying;
  bool in_flight = false;

  // Settings (protocol v2 room_set): applied when a settings event is
  // sequenced, so that the requests after it in seq order obey them; a failed
  // append reloads them from the store (resync).
  room_settings settings;
  // Bans and mutes (protocol v2 moderation), applied when their event is
  // sequenced and stored with it; changes wait for the next batch as
  // memberships do (null: lifted).
  std::map<std::string, restriction> restrictions;
  std::map<std::string, std::optional<restriction>> restrict_dirty, restrict_flying;
  // Slow mode: the ts of each member's last message sequenced here while it was on.
  std::unordered_map<std::string, int64_t> last_sent;

  presence_batcher presence;  // presence batching in big rooms, and in any room during a storm

  uint64_t received = 0;  // requests forwarded by the directory
  uint64_t idle_gen = 0;

  static inline const char* name = "room";
};

using room_actor = caf::stateful_actor<room_state>;

caf::behavior room_impl(room_actor* self, std::string name, room_deps deps);

}  // namespace chat
