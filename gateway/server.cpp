#include "gateway/server.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <random>

#include "actors/cluster/manager.hpp"
#include "actors/directory.hpp"
#include "actors/metrics.hpp"
#include "actors/user_registry.hpp"
#include "gateway/api_actor.hpp"
#include "gateway/gateway_actor.hpp"
#include "caf/io/all.hpp"
#include "gateway/edge_limits.hpp"
#include "gateway/websocket_session.hpp"

namespace chat {

namespace net = boost::asio;

server::server(caf::actor_system& sys, server_config cfg, auth_config auth, cluster_config cluster)
    : sys_(sys),
      ctx_(std::make_shared<server_context>(std::move(cfg), std::move(auth))),
      cluster_(std::move(cluster)) {}

server::~server() { shutdown(); }

bool server::start(std::string& err) {
  auto& cfg = ctx_->cfg;
  std::shared_ptr<store_backend> backend;
  if (cfg.store == "memory") {
    backend = make_memory_backend(cfg.memory_max_per_room);
  } else if (cfg.store == "postgres") {
    backend = make_postgres_backend(cfg.pg_url, cfg.pg_pool, err);
    if (!backend) return false;  // err names the server, not the password
  } else {
    backend = make_sqlite_backend(cfg.db, err);
    if (!backend) {
      err = "cannot open the database " + cfg.db + ": " + err;
      return false;
    }
  }
  store_config scfg;
  scfg.recent_limit = cfg.history_window;
  scfg.retention.max_messages = cfg.retention_max_messages;
  scfg.retention.max_age_ms = cfg.retention_max_age_s * 1000;
  scfg.health_interval = std::chrono::seconds(5);
  // The server-wide bans before the first hello can come (the registry
  // reads them again, for a store that was not reachable yet).
  ctx_->bans = std::make_shared<ban_list>();
  {
    std::vector<user_ban> bans;
    std::string ban_err;
    if (backend->user_bans(bans, ban_err)) {
      for (auto& b : bans)
        if (b.active(now_ms())) ctx_->bans->apply(b);
    } else {
      spdlog::warn("event=user_bans_load_failed error=\"{}\"", ban_err);
    }
  }
  store_ = spawn_store(sys_, backend, scfg);
  ctx_->users =
      sys_.spawn(user_registry_impl, cfg.max_conns_per_user, registry_deps{ctx_->bans, store_});
  std::vector<std::string> names;
  size_t self_index = 0;
  for (auto& n : cluster_.nodes) {
    if (n.name == cfg.node) self_index = names.size();
    names.push_back(n.name);
  }
  if (names.empty()) names.push_back(cfg.node);
  // Live placement moves a room to another node's store: only safe when the
  // stores are one (a shared database), never for per-node SQLite files.
  bool live = cfg.placement == "live" || (cfg.placement == "auto" && cfg.store == "postgres");
  ctx_->routes = std::make_shared<cluster_routes>(names, self_index, live);
  if (!cluster_.nodes.empty())
    spdlog::info("event=placement rooms={} users=live", live ? "live" : "home");
  room_config rcfg;
  rcfg.window = cfg.history_window;
  rcfg.idle_grace = std::chrono::milliseconds(static_cast<int64_t>(cfg.room_grace_s * 1000));
  rcfg.presence_batch_threshold = cfg.presence_batch_threshold;
  rcfg.presence_budget = cfg.presence_budget;
  room_deps deps{store_, nullptr, ctx_->users, rcfg, ctx_->routes, {}};
  // A shared database may see this room sequenced by another node after a
  // failover: claim it and fence every append (room.hpp `claim_as`).
  if (cfg.store == "postgres") deps.claim_as = cfg.node;
  ctx_->directory = sys_.spawn(directory_impl, std::move(deps));
  ctx_->routes->set_node(self_index, ctx_->directory, ctx_->users);
  if (!cluster_.nodes.empty()) {
    // Publish this node's entry point, then keep dialling the peers.
    auto& me = cluster_.nodes[self_index];
    node_actor_ = sys_.spawn(node_impl, ctx_->directory, ctx_->users, me.name,
                             cluster_digest(cluster_));
    auto published = sys_.middleman().publish(node_actor_, me.remote_port, me.remote_host.c_str(), true);
    if (!published) {
      err = "cannot publish on " + me.remote_host + ":" + std::to_string(me.remote_port) + ": " +
            sys_.render(published.error());
      return false;
    }
  }

  ctx_->api = sys_.spawn(api_impl, ctx_, std::chrono::milliseconds(10000));
  for (int i = 0; i < cfg.io_threads; ++i) {
    auto shard = std::make_unique<io_shard>();
    shard->index = static_cast<size_t>(i);
    shard->gateway = sys_.spawn(gateway_impl, ctx_, shard.get());
    ctx_->shards.push_back(std::move(shard));
  }
  if (!cluster_.nodes.empty()) {
    // Placement changed (a peer down or back): every session re-registers with
    // its user's home and moves its joins and rooms. Registered before the
    // manager runs, after the shards exist: it reads them from its thread.
    std::weak_ptr<server_context> weak = ctx_;
    ctx_->routes->on_change([weak] {
      auto ctx = weak.lock();
      if (!ctx) return;
      for (auto& shard : ctx->shards)
        net::post(shard->ioc, [s = shard.get()] {
          std::vector<websocket_session*> all;
          for (auto& [id, sess] : s->registry.all()) all.push_back(sess);
          for (auto* sess : all) sess->on_placement_change();
        });
    });
    cluster_manager_ = sys_.spawn(cluster_manager_impl, cluster_, self_index, ctx_->routes);
  }
  if (!start_edge(err)) return false;
  if (!open_listener(cfg.listen, tls_, listener_, err)) return false;
  if (!cfg.listen_plain.empty() && !open_listener(cfg.listen_plain, nullptr, plain_listener_, err))
    return false;
  listener_->run();
  if (plain_listener_) plain_listener_->run();
  for (auto& shard : ctx_->shards) {
    guards_.push_back(std::make_unique<net::executor_work_guard<net::io_context::executor_type>>(
        shard->ioc.get_executor()));
    threads_.emplace_back([s = shard.get()] { s->ioc.run(); });
  }
  return true;
}

bool server::start_edge(std::string& err) {
  auto& cfg = ctx_->cfg;
  address_limits lim;
  lim.max_connections = cfg.max_conns_per_address;
  lim.max_prehello = cfg.max_prehello_per_address;
  lim.handshake_rate = cfg.handshake_rate;
  lim.handshake_burst = cfg.handshake_burst;
  auto edge = std::make_shared<edge_guard>(lim);
  if (auto e = edge->trusted_proxies.parse(cfg.trusted_proxies); !e.empty()) {
    err = "--trusted-proxies: " + e;
    return false;
  }
  if (auto e = edge->origins.parse(cfg.allowed_origins); !e.empty()) {
    err = "--allowed-origins: " + e;
    return false;
  }
  ctx_->edge = std::move(edge);
  // Each connection is a file descriptor: a default above the process's limit
  // only turns "server full" (1013) into failed accepts for everyone.
  uint64_t nofile = 0;
  auto from_limit = max_connections_from_fd_limit(nofile);
  if (cfg.max_connections == 0) {
    cfg.max_connections = from_limit;
    spdlog::info("event=max_connections value={} source=rlimit_nofile nofile={}",
                 cfg.max_connections, nofile);
  } else if (nofile && cfg.max_connections > from_limit) {
    spdlog::warn("event=max_connections value={} source=option nofile={} "
                 "warning=\"above the file descriptor limit less its reserve ({})\"",
                 cfg.max_connections, nofile, from_limit);
  } else {
    spdlog::info("event=max_connections value={} source=option nofile={}", cfg.max_connections,
                 nofile);
  }
  spdlog::info("event=edge_limits max_conns_per_address={} max_prehello_per_address={} "
               "handshake_rate={} handshake_burst={} trusted_proxies={} allowed_origins={}",
               lim.max_connections, lim.max_prehello, lim.handshake_rate, lim.handshake_burst,
               cfg.trusted_proxies.size(), cfg.allowed_origins.empty() ? "same-origin" : "list");
  if (!cfg.tls_cert.empty()) {
    tls_ = std::make_shared<tls_contexts>(cfg.tls_cert, cfg.tls_key);
    if (!tls_->load(err)) {
      err = "TLS: " + err;
      return false;
    }
  }
  return true;
}

bool server::open_listener(const std::string& address, std::shared_ptr<tls_contexts> tls,
                           std::shared_ptr<listener>& out, std::string& err) {
  auto colon = address.rfind(':');
  auto host = address.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  auto addr = net::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) {
    err = "bad listen address " + address;
    return false;
  }
  int port_num = 0;
  try {
    port_num = std::stoi(address.substr(colon + 1));
  } catch (...) {
    port_num = -1;
  }
  if (port_num < 0 || port_num > 65535) {
    err = "bad listen port in " + address;
    return false;
  }
  out = std::make_shared<listener>(ctx_->shards[0]->ioc, *ctx_, std::move(tls));
  if (!out->open({addr, static_cast<uint16_t>(port_num)}, err)) {
    err = "cannot listen on " + address + ": " + err;
    return false;
  }
  return true;
}

bool server::reload_tls() {
  if (!tls_) return false;
  std::string err;
  auto& m = global_edge_metrics();
  if (!tls_->load(err)) {
    m.tls_reload_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("event=tls_reload_failed error=\"{}\" kept=previous", err);
    return false;
  }
  m.tls_reloads.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("event=tls_reloaded cert={}", ctx_->cfg.tls_cert);
  return true;
}

void server::shutdown(uint16_t code) {
  if (stopped_) return;
  stopped_ = true;
  ctx_->draining = true;
  auto& m = global_metrics();
  spdlog::info("event=shutdown_begin connections={}", m.connections.load());
  // Hand over first: the peers monitor this node's entry point, so its exit
  // tells them at once (no heartbeat timeout) to place our rooms elsewhere;
  // their members join the new home (which claims the room, fencing anything
  // this node still appends) while our own clients are told to reconnect.
  if (node_actor_) caf::anon_send_exit(node_actor_, caf::exit_reason::user_shutdown);
  // A start that failed half way has no I/O threads, but its actors must stop
  // too: the actor system waits for every actor as it is destroyed.
  if (!ctx_->shards.empty()) stop_io(code);
  stop_actors();
  spdlog::info("event=shutdown_done connections_left={}", m.connections.load());
}

void server::stop_io(uint16_t code) {
  net::post(ctx_->shards[0]->ioc, [l = listener_, p = plain_listener_] {
    if (l) l->stop();
    if (p) p->stop();
  });
  for (auto& shard : ctx_->shards) {
    net::post(shard->ioc, [s = shard.get(), code] {
      // Spread the reconnects: each connection gets its own retry hint.
      std::mt19937 rng{std::random_device{}()};
      std::uniform_int_distribution<int> retry(500, 5000);
      std::vector<websocket_session*> all;
      for (auto& [id, sess] : s->registry.all()) all.push_back(sess);
      for (auto* sess : all) sess->close(code, "retry_ms=" + std::to_string(retry(rng)));
    });
  }
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(ctx_->cfg.shutdown_timeout_s * 1000));
  ctx_->sessions.wait_zero(deadline);
  guards_.clear();
  for (auto& shard : ctx_->shards) shard->ioc.stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void server::stop_actors() {
  // Stop the actors and await them: rooms first (the directory stops them; their
  // last appends reach the store), then the store, which commits what is
  // pending as it exits. Gateways and the API share the context, so a message
  // still in their mailboxes finds what it posts into alive; awaiting them
  // here makes the context's last owner this server again.
  std::vector<caf::actor> waits;
  auto stop = [&](const caf::actor& a) {
    if (!a) return;
    waits.push_back(a);
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  };
  caf::scoped_actor waiter{sys_};
  size_t left = 0;
  if (ctx_->directory) {
    waiter->monitor(ctx_->directory);
    caf::anon_send(ctx_->directory, caf::close_atom_v);
    ++left;
  }
  for (auto& shard : ctx_->shards) stop(caf::actor_cast<caf::actor>(shard->gateway));
  stop(ctx_->users);
  stop(cluster_manager_);
  stop(node_actor_);
  stop(ctx_->api);
  for (auto& a : waits) waiter->monitor(a);
  left += waits.size();
  bool timed_out = false;
  while (left > 0 && !timed_out)
    waiter->receive([&](const caf::down_msg&) { --left; },
                    caf::after(std::chrono::seconds(2)) >> [&] { timed_out = true; });
  if (timed_out) spdlog::warn("event=shutdown_actors_late left={}", left);
  if (store_) caf::anon_send_exit(store_, caf::exit_reason::user_shutdown);
}

}  // namespace chat
