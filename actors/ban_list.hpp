#pragma once
// The server-wide bans a node knows (every node holds all of them): read by
// the gateway's sessions at `hello` (I/O threads), written by the node's user
// registry when a ban is made, lifted, or loaded from the store at start.
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "messages/model.hpp"

namespace chat {

class ban_list {
 public:
  // Sets or (ban.lift) lifts a ban.
  void apply(const user_ban& ban);
  // The user's ban in force at `now` (ms since the epoch), if any.
  std::optional<user_ban> active(const std::string& user, int64_t now) const;
  // Every ban in force at `now`, by user (for a peer that joins).
  std::vector<user_ban> all(int64_t now) const;
  size_t size() const;

 private:
  mutable std::mutex mtx_;
  std::unordered_map<std::string, user_ban> bans_;
};

}  // namespace chat
