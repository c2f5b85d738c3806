#pragma once
// Wires the node: store, user registry, directory, one gateway actor and
// io_context per I/O thread, the listener; and the graceful shutdown.
#include <memory>
#include <thread>
#include <vector>

#include "actors/store/store.hpp"
#include "caf/all.hpp"
#include "gateway/listener.hpp"
#include "gateway/server_context.hpp"

namespace chat {

class server {
 public:
  // `cluster` empty: a single node. Else this node is cfg.node of it, and the
  // actor system must have the middleman loaded.
  server(caf::actor_system& sys, server_config cfg, auth_config auth, cluster_config cluster = {});
  ~server();

  // Opens the store, spawns the actors, binds and starts the I/O threads.
  bool start(std::string& err);
  // Stop accepting, close every connection with `code` and a randomised
  // retry_ms hint, wait for them (bounded), then stop threads and actors.
  void shutdown(uint16_t code = 1012);
  uint16_t port() const { return listener_ ? listener_->port() : 0; }
  // The --listen-plain port of a TLS node (0: none).
  uint16_t plain_port() const { return plain_listener_ ? plain_listener_->port() : 0; }
  bool tls() const { return tls_ != nullptr; }
  // SIGHUP: reads the certificate and key again; new connections use them. A
  // file that does not load is logged and the old certificate stays.
  bool reload_tls();
  server_context& context() { return *ctx_; }

 private:
  caf::actor_system& sys_;
  std::shared_ptr<server_context> ctx_;
  store_actor store_;
  cluster_config cluster_;
  caf::actor node_actor_;
  caf::actor cluster_manager_;
  void stop_io(uint16_t code);  // listeners, connections, I/O threads
  void stop_actors();            // rooms, then the other actors, then the store
  bool start_edge(std::string& err);  // limits, proxies, origins, max-connections, TLS
  bool open_listener(const std::string& address, std::shared_ptr<tls_contexts> tls,
                     std::shared_ptr<listener>& out, std::string& err);

  std::shared_ptr<tls_contexts> tls_;
  std::shared_ptr<listener> listener_;
  std::shared_ptr<listener> plain_listener_;  // --listen-plain beside a TLS --listen
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>>
      guards_;
  bool stopped_ = false;
};

}  // namespace chat
