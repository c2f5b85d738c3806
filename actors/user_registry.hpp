#pragma once
// The user registry: every connection of every user, to cap them per user
// (the oldest is closed with 4009), to reach all of a user's connections with a
// direct message, and to kick a user.
//
// It also keeps this node's copy of the server-wide bans (every node's
// registry holds all of them): a `user_ban` (from the server API, on every
// node) is applied to `bans`, stored, and closes the user's connections with
// 4003; a banned user's connection that registers is closed at once (the
// session refuses `hello` itself when the ban is known here first).
#include <memory>
#include <unordered_map>
#include <vector>

#include "actors/ban_list.hpp"
#include "actors/store/store.hpp"
#include "caf/all.hpp"
#include "messages/types.hpp"

namespace chat {

struct registry_deps {
  std::shared_ptr<ban_list> bans;  // null: no server-wide bans (tests)
  store_actor store;               // null: bans are not stored
};

struct user_registry_state {
  size_t max_conns_per_user = 10;
  registry_deps deps;
  struct entry {
    conn_ref conn;
    int64_t since_ms = 0;
  };
  std::unordered_map<std::string, std::vector<entry>> users;  // oldest first
  std::map<gateway_actor, size_t> gateways;                     // monitored, with conn counts
  static inline const char* name = "user_registry";
};

using user_registry_actor = caf::stateful_actor<user_registry_state>;

caf::behavior user_registry_impl(user_registry_actor* self, size_t max_conns_per_user,
                                 registry_deps deps);

// The close reason of a server-wide ban.
inline constexpr const char* banned_reason = "banned from the server";

}  // namespace chat
