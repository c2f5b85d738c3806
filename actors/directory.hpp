#pragma once
// The directory maps room names to room actors: it spawns a room on first use
// and stops one that has been empty for its grace period. Requests for a room
// the caller has no handle for yet go through here and are forwarded in order.
#include <unordered_map>

#include "actors/room.hpp"
#include "caf/all.hpp"

namespace chat {

struct directory_state {
  room_deps deps;  // handed to every room (deps.directory is this actor)
  struct entry {
    caf::actor room;
    uint64_t sent = 0;  // requests forwarded to it
    uint64_t term = 0;  // the claim it holds (shared store), 0 until it says
  };
  std::unordered_map<std::string, entry> rooms;
  std::unordered_map<caf::actor_addr, std::string> by_addr;
  static inline const char* name = "directory";
};

using directory_actor = caf::stateful_actor<directory_state>;

// `deps.directory` is filled in with the directory itself.
caf::behavior directory_impl(directory_actor* self, room_deps deps);

}  // namespace chat
