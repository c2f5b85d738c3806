#pragma once
// The gateway actor of one I/O thread: rooms and the user registry talk to it,
// and it hands each message to its thread with ONE net::post. It never touches
// a session itself (sessions live on the I/O thread).
#include <unordered_map>

#include "caf/all.hpp"
#include "gateway/server_context.hpp"

namespace chat {

struct gateway_state {
  io_shard* shard = nullptr;
  std::unordered_map<caf::actor_addr, std::string> rooms;  // monitored room actors
  static inline const char* name = "gateway";
};

using gateway_actor = caf::stateful_actor<gateway_state>;

caf::behavior gateway_impl(gateway_actor* self, io_shard* shard);

}  // namespace chat
