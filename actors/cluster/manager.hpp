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
// and user registry.
caf::behavior node_impl(caf::event_based_actor* self, caf::actor directory, caf::actor users);

struct cluster_manager_state {
  cluster_config cfg;
  size_t self_index = 0;
  std::shared_ptr<cluster_routes> routes;
  std::unordered_map<caf::actor_addr, size_t> peers;  // node actor -> index
  caf::timespan redial = std::chrono::seconds(1);
  static inline const char* name = "cluster_manager";
};

using cluster_manager_actor = caf::stateful_actor<cluster_manager_state>;

caf::behavior cluster_manager_impl(cluster_manager_actor* self, cluster_config cfg,
                                   size_t self_index, std::shared_ptr<cluster_routes> routes);

}  // namespace chat
