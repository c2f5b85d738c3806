#pragma once
// What sessions on an I/O thread share. Each I/O thread is a shard with its own
// io_context, gateway actor and connection registry: the registry is only
// touched on that thread, so it needs no lock.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "actors/cluster.hpp"
#include "caf/all.hpp"
#include "gateway/auth.hpp"
#include "gateway/config.hpp"
#include "gateway/conn_registry.hpp"
#include "messages/codec.hpp"

namespace chat {

struct edge_guard;  // gateway/edge_limits.hpp

struct io_shard {
  conn_registry registry;
  caf::actor gateway;
  size_t index = 0;
  uint64_t next_conn = 1;
  // Last, so it is destroyed first: handlers it still holds (sessions) may
  // unregister from `registry` as they go.
  boost::asio::io_context ioc{1};
};

struct server_context {
  server_config cfg;
  authenticator auth;
  limits lim;
  caf::actor directory;  // this node's
  caf::actor users;      // this node's
  caf::actor api;        // the server API's actor (gateway/api_actor.hpp)
  std::shared_ptr<cluster_routes> routes;  // home node of each room and user
  std::vector<std::unique_ptr<io_shard>> shards;
  std::atomic<bool> draining{false};
  std::shared_ptr<edge_guard> edge;  // per-address limits, proxies, origins (set by server::start)

  server_context(server_config c, auth_config a) : cfg(std::move(c)), auth(std::move(a)) {}
};

}  // namespace chat
