#pragma once
// Several chatd nodes as one service. Every room and every user has one home
// node, chosen by rendezvous (highest-random-weight) hashing of its name over
// the nodes that are UP in this node's view: every node computes the same
// answer from the same config file and the same view, with no coordination.
// A node declared down hands each of its names to that name's next choice and
// nothing else moves; when it is back its names move back to it.
#include <atomic>
#include <cstdint>
#include <functional>
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
// The same over the nodes with up[i] set; nodes.size() when none is.
size_t rendezvous_home(std::string_view key, const std::vector<std::string>& nodes,
                       const std::vector<bool>& up);

struct peer_status {
  std::string name;
  bool self = false;
  bool up = false;
  std::string refused;  // why the peer was refused (cluster file or name mismatch), or empty
};

// Which directory and user registry serve a name. Read by I/O threads and
// actors, written by the cluster manager when peers come and go.
class cluster_routes {
 public:
  // A single node: {"chatd"}, 0. `live_rooms`: rooms are placed over the live
  // nodes too (users always are: their registries are soft state, rebuilt from
  // the gateways); else a room whose first choice is down has no home.
  cluster_routes(std::vector<std::string> nodes, size_t self, bool live_rooms = true);

  // Null handles = down. Every change of the view bumps version() and calls
  // the listeners (outside the lock, on the caller's thread).
  void set_node(size_t index, caf::actor directory, caf::actor users);
  // The home among the live nodes (null only when no node is up, which
  // cannot happen while this node runs: it is always up in its own view).
  caf::actor directory_for(std::string_view room) const;
  caf::actor users_for(std::string_view user) const;
  // Every live node's directory (my_rooms asks them all).
  std::vector<caf::actor> directories() const;
  // Every live node's user registry (a server-wide ban goes to all).
  std::vector<caf::actor> registries() const;
  // Home among the live nodes.
  size_t home_of(std::string_view key) const;
  // Home when every configured node is up (the preferred home).
  size_t preferred_home_of(std::string_view key) const { return rendezvous_home(key, names_); }
  size_t self() const { return self_; }
  bool live_rooms() const { return live_rooms_; }
  size_t size() const { return names_.size(); }
  std::vector<peer_status> status() const;
  bool all_up() const;
  size_t up_count() const;
  // A peer refused by the sanity checks at connect (empty: not refused).
  void set_refused(size_t index, std::string why);
  std::string refused(size_t index) const;
  uint64_t version() const { return version_.load(); }
  void on_change(std::function<void()> f);

 private:
  std::vector<bool> up_locked() const;

  std::vector<std::string> names_;
  size_t self_;
  bool live_rooms_;
  mutable std::mutex mtx_;
  std::vector<caf::actor> directories_;
  std::vector<caf::actor> users_;
  std::vector<std::string> refused_;
  std::vector<std::function<void()>> listeners_;
  std::atomic<uint64_t> version_{0};
};

}  // namespace chat
