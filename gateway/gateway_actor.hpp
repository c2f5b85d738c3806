#pragma once
// The gateway actor of one I/O thread: rooms and the user registry talk to it
// (its typed interface, gateway_actor, is in messages/types.hpp), and it hands
// each message to its thread with ONE net::post, where replies are encoded. It
// never touches a session itself (sessions live on the I/O thread).
#include <memory>
#include <unordered_map>

#include "caf/all.hpp"
#include "gateway/server_context.hpp"

namespace chat {

struct gateway_state {
  // Shared: a message still in this mailbox when the server stops must find
  // the io_context it posts into (owned by the context) alive.
  std::shared_ptr<server_context> ctx;
  std::unordered_map<caf::actor_addr, std::string> rooms;  // monitored room actors
  static inline const char* name = "gateway";
};

// `shard` is one of ctx->shards.
gateway_actor::behavior_type gateway_impl(gateway_actor::stateful_pointer<gateway_state> self,
                                          std::shared_ptr<server_context> ctx, io_shard* shard);

}  // namespace chat
