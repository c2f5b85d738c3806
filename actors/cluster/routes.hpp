#pragma once
// Several chatd nodes as one service. Every room and every user has one home
// node, chosen by rendezvous (highest-random-weight) hashing of its name over
// the configured nodes: every node computes the same answer from the same
// config file, with no coordination, and losing a node moves nothing else.
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "actors/cluster/nodes.hpp"
#include "caf/all.hpp"

namespace chat {

// Weight of `key` on `node` (64-bit FNV-1a of both, then a mixer): deterministic everywhere.
uint64_t rendezvous_weight(std::string_view node, std::string_view key);
// Index of the node with the highest weight for `key`.
size_t rendezvous_home(std::string_view key, const std::vector<std::string>& nodes);

struct peer_status {
  std::string name;
  bool self = false;
  bool up = false;
};

// Which directory and user registry serve a name. Read by I/O threads and
// actors, written by the cluster manager when peers come and go.
class cluster_routes {
 public:
  // A single node: {"chatd"}, 0.
  cluster_routes(std::vector<std::string> nodes, size_t self);

  void set_node(size_t index, caf::actor directory, caf::actor users);  // null handles = down
  // Null when the home node is not reachable.
  caf::actor directory_for(std::string_view room) const;
  caf::actor users_for(std::string_view user) const;
  size_t home_of(std::string_view key) const { return rendezvous_home(key, names_); }
  size_t self() const { return self_; }
  std::vector<peer_status> status() const;
  bool all_up() const;

 private:
  std::vector<std::string> names_;
  size_t self_;
  mutable std::mutex mtx_;
  std::vector<caf::actor> directories_;
  std::vector<caf::actor> users_;
};

}  // namespace chat
