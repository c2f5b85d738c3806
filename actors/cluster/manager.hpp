#pragma once
// Keeps this node connected to its peers over CAF remoting (BASP): dials each
// peer's published node actor, learns its directory and user registry, watches
// it (a lost node gives down_msg), and dials again until it is back.
#include <memory>
#include <unordered_map>

#include "actors/cluster/routes.hpp"
#include "caf/all.hpp"

namespace chat {

// The actor each node publishes on its remoting port: hands out its directory
// and user registry, with its own name and the digest of its cluster file, so
// that a dialler can refuse a peer that is not the node it dialled or that
// does not share its view of the cluster.
caf::behavior node_impl(caf::event_based_actor* self, caf::actor directory, caf::actor users,
                        std::string name, std::string digest);

// Digest of the cluster file's node list (names, addresses, order): two nodes
// with different files would compute different homes for the same room.
std::string cluster_digest(const cluster_config& cfg);

struct cluster_manager_state {
  cluster_config cfg;
  size_t self_index = 0;
  std::shared_ptr<cluster_routes> routes;
  std::unordered_map<caf::actor_addr, size_t> peers;  // node actor -> index
  std::string digest;  // cluster_digest(cfg)
  caf::timespan redial = std::chrono::seconds(1);
  caf::timespan refused_redial = std::chrono::seconds(10);  // a refused peer: checked again
  static inline const char* name = "cluster_manager";
};

using cluster_manager_actor = caf::stateful_actor<cluster_manager_state>;

caf::behavior cluster_manager_impl(cluster_manager_actor* self, cluster_config cfg,
                                   size_t self_index, std::shared_ptr<cluster_routes> routes);

}  // namespace chat
