#include "actors/cluster/manager.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>

#include "caf/io/all.hpp"
#include "messages/types.hpp"

namespace chat {

caf::behavior node_impl(caf::event_based_actor*, caf::actor directory, caf::actor users,
                        std::string name, std::string digest) {
  return {
      [=](caf::get_atom) { return std::make_tuple(directory, users, name, digest); },
  };
}

std::string cluster_digest(const cluster_config& cfg) {
  std::string canon;
  for (auto& n : cfg.nodes)
    canon += n.name + '\n' + n.listen + '\n' + n.remote_host + '\n' +
             std::to_string(n.remote_port) + '\n';
  char out[17];
  std::snprintf(out, sizeof out, "%016llx",
                static_cast<unsigned long long>(rendezvous_weight("cluster", canon)));
  return out;
}

namespace {

void dial(cluster_manager_actor* self, size_t index) {
  auto& node = self->state.cfg.nodes[index];
  auto mm = self->system().middleman().actor_handle();
  self->request(mm, std::chrono::seconds(5), caf::connect_atom_v, node.remote_host, node.remote_port)
      .then(
          [=](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            auto peer = caf::actor_cast<caf::actor>(ptr);
            if (!peer) {
              self->delayed_send(self, self->state.redial, dial_atom_v, index);
              return;
            }
            self->request(peer, std::chrono::seconds(5), caf::get_atom_v)
                .then(
                    [=](caf::actor& directory, caf::actor& users, std::string& name,
                        std::string& digest) {
                      auto& st = self->state;
                      auto& want = st.cfg.nodes[index];
                      std::string why;
                      if (name != want.name)
                        why = "the node at " + want.remote_host + ":" +
                              std::to_string(want.remote_port) + " is named " + name +
                              ", not " + want.name;
                      else if (digest != st.digest)
                        why = "its cluster file differs (digest " + digest + ", ours " +
                              st.digest + ")";
                      if (!why.empty()) {
                        // Homes computed from two different views would split
                        // rooms between two sequencers: never route to it.
                        if (st.routes->refused(index) != why)
                          spdlog::error("event=peer_refused peer={} reason=\"{}\"", want.name, why);
                        st.routes->set_refused(index, why);
                        self->delayed_send(self, st.refused_redial, dial_atom_v, index);
                        return;
                      }
                      st.routes->set_refused(index, {});
                      st.routes->set_node(index, directory, users);
                      st.peers[peer.address()] = index;
                      self->monitor(peer);
                      spdlog::info("event=peer_up peer={}", st.cfg.nodes[index].name);
                    },
                    [=](caf::error&) {
                      self->delayed_send(self, self->state.redial, dial_atom_v, index);
                    });
          },
          [=](caf::error& err) {
            spdlog::debug("event=peer_dial_failed peer={} error=\"{}\"",
                          self->state.cfg.nodes[index].name, self->system().render(err));
            self->delayed_send(self, self->state.redial, dial_atom_v, index);
          });
}

}  // namespace

caf::behavior cluster_manager_impl(cluster_manager_actor* self, cluster_config cfg,
                                   size_t self_index, std::shared_ptr<cluster_routes> routes) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.self_index = self_index;
  st.routes = std::move(routes);
  st.digest = cluster_digest(st.cfg);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    auto it = st.peers.find(dm.source);
    if (it == st.peers.end()) return;
    auto index = it->second;
    st.peers.erase(it);
    st.routes->set_node(index, nullptr, nullptr);
    spdlog::warn("event=peer_down peer={} reason=\"{}\"", st.cfg.nodes[index].name,
                 self->system().render(dm.reason));
    self->delayed_send(self, st.redial, dial_atom_v, index);
  });
  for (size_t i = 0; i < st.cfg.nodes.size(); ++i)
    if (i != self_index) self->send(self, dial_atom_v, i);
  return {
      [=](dial_atom, size_t index) { dial(self, index); },
  };
}

}  // namespace chat
