#pragma once
// The user registry: every connection of every user, to cap them per user
// (the oldest is closed with 4009), to reach all of a user's connections with a
// direct message, and to kick a user.
#include <unordered_map>
#include <vector>

#include "caf/all.hpp"
#include "messages/types.hpp"

namespace chat {

struct user_registry_state {
  size_t max_conns_per_user = 10;
  struct entry {
    conn_ref conn;
    int64_t since_ms = 0;
  };
  std::unordered_map<std::string, std::vector<entry>> users;  // oldest first
  std::map<gateway_actor, size_t> gateways;                     // monitored, with conn counts
  static inline const char* name = "user_registry";
};

using user_registry_actor = caf::stateful_actor<user_registry_state>;

caf::behavior user_registry_impl(user_registry_actor* self, size_t max_conns_per_user);

}  // namespace chat
