#pragma once
// What sessions on an I/O thread share. Each I/O thread is a shard with its own
// io_context, gateway actor and connection registry: the registry is only
// touched on that thread, so it needs no lock.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "actors/ban_list.hpp"
#include "actors/cluster/routes.hpp"
#include "caf/all.hpp"
#include "gateway/auth.hpp"
#include "gateway/config.hpp"
#include "gateway/conn_registry.hpp"
#include "messages/codec.hpp"
#include "messages/types.hpp"

namespace chat {

struct edge_guard;  // gateway/edge_limits.hpp

struct io_shard {
  conn_registry registry;
  gateway_actor gateway;
  size_t index = 0;
  uint64_t next_conn = 1;
  // Last, so it is destroyed first: handlers it still holds (sessions) may
  // unregister from `registry` as they go.
  boost::asio::io_context ioc{1};
};

// Open WebSocket sessions of one server: shutdown awaits zero instead of polling.
class session_count {
 public:
  void add() {
    std::lock_guard<std::mutex> lock{mtx_};
    ++n_;
  }
  void remove() {
    std::lock_guard<std::mutex> lock{mtx_};
    if (--n_ == 0) zero_.notify_all();
  }
  // False when the deadline passed first.
  template <class TimePoint>
  bool wait_zero(TimePoint deadline) {
    std::unique_lock<std::mutex> lock{mtx_};
    return zero_.wait_until(lock, deadline, [this] { return n_ == 0; });
  }

 private:
  std::mutex mtx_;
  std::condition_variable zero_;
  int64_t n_ = 0;
};

// Owned by the server and shared with whatever may still post into its
// shards' io_contexts after the server stops (gateway actors, the API actor,
// pending API replies): the last of them frees it.
struct server_context : std::enable_shared_from_this<server_context> {
  server_config cfg;
  authenticator auth;
  limits lim;
  caf::actor directory;  // this node's
  caf::actor users;      // this node's
  caf::actor api;        // the server API's actor (gateway/api_actor.hpp)
  std::shared_ptr<cluster_routes> routes;  // home node of each room and user
  std::shared_ptr<ban_list> bans;          // server-wide bans (the registry writes them)
  std::atomic<bool> draining{false};
  session_count sessions;
  std::shared_ptr<edge_guard> edge;  // per-address limits, proxies, origins (set by server::start)
  // Last, so destroyed first: an io_context's destructor destroys the handlers
  // still queued on it, and the sessions they hold release their address
  // leases into `edge`, count down `sessions` and read the rest of this.
  std::vector<std::unique_ptr<io_shard>> shards;

  server_context(server_config c, auth_config a) : cfg(std::move(c)), auth(std::move(a)) {}
};

}  // namespace chat
