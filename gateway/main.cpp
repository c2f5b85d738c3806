// chatd: parses the configuration and wires the parts; nothing else.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>

#include "actors/store/store.hpp"
#include "actors/cluster/routes.hpp"
#include "caf/all.hpp"
#include "caf/io/all.hpp"
#include "gateway/auth.hpp"
#include "gateway/config.hpp"
#include "gateway/server.hpp"
#include "messages/types.hpp"

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

chat::auth_config make_auth(const chat::server_config& cfg) {
  chat::auth_config a;
  a.hs256_secret = cfg.jwt_secret;
  if (!cfg.jwt_public_key_file.empty()) a.rs256_public_key = read_file(cfg.jwt_public_key_file);
  if (!cfg.jwt_private_key_file.empty()) a.rs256_private_key = read_file(cfg.jwt_private_key_file);
  a.require_exp = cfg.jwt_require_exp;
  a.allow_anonymous = cfg.allow_anonymous;
  return a;
}

int64_t parse_ttl(const std::string& s) {
  if (s.empty()) throw std::runtime_error("empty --ttl");
  size_t pos = 0;
  long long n = std::stoll(s, &pos);
  auto unit = s.substr(pos);
  if (unit.empty() || unit == "s") return n;
  if (unit == "m") return n * 60;
  if (unit == "h") return n * 3600;
  if (unit == "d") return n * 86400;
  throw std::runtime_error("bad --ttl " + s + " (use e.g. 90s, 30m, 1h, 7d)");
}

int run_server(chat::server_config cfg) {
  auto problem = chat::check_config(cfg);
  if (!problem.empty()) {
    std::cerr << "chatd: " << problem << "\n";
    return 2;
  }
  auto auth = make_auth(cfg);
  chat::cluster_config cluster;
  caf::actor_system_config caf_cfg;
  chat::register_message_types(caf_cfg);
  caf_cfg.set("scheduler.max-threads", static_cast<size_t>(cfg.actor_threads));
  // The default work-stealing scheduler lets idle workers sleep 10 ms between
  // polls: each actor hop of a quiet room then costs up to 10 ms (measured:
  // ack p50 42 ms at 100 msg/s). The sharing policy wakes a worker at once.
  caf_cfg.set("scheduler.policy", caf::atom("sharing"));
  if (!cfg.cluster_file.empty()) {
    std::string err;
    if (!chat::parse_cluster_config(read_file(cfg.cluster_file), cluster, err))
      throw std::runtime_error(cfg.cluster_file + ": " + err);
    auto me = std::find_if(cluster.nodes.begin(), cluster.nodes.end(),
                           [&](const chat::cluster_node& n) { return n.name == cfg.node; });
    if (me == cluster.nodes.end())
      throw std::runtime_error("--node " + cfg.node + " is not in " + cfg.cluster_file);
    cfg.listen = me->listen;
    // BASP heartbeats find a lost or hung peer within about two seconds.
    caf_cfg.load<caf::io::middleman>();
    caf_cfg.set("middleman.heartbeat-interval", caf::timespan{std::chrono::milliseconds(500)});
    caf_cfg.set("middleman.connection-timeout", caf::timespan{std::chrono::seconds(2)});
    caf_cfg.set("middleman.workers", size_t{0});
  }
  // Signals are caught from before the start: a SIGTERM that arrives while the
  // node starts must still shut it down gracefully, not kill it. SIGHUP
  // reloads the TLS certificate and key; SIGINT and SIGTERM drain and stop.
  // The handlers run in signals_ioc.run() below, once the server is up.
  boost::asio::io_context signals_ioc;
  boost::asio::signal_set signals{signals_ioc, SIGINT, SIGTERM, SIGHUP};
  chat::server* running = nullptr;
  int got = 0;
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
          spdlog::info("event=signal signal={}", sig);
          if (running && running->tls())
            running->reload_tls();
          else
            spdlog::info("event=sighup_ignored reason=\"no --tls-cert\"");
          signals.async_wait(on_signal);
          return;
        }
        got = sig;
      };
  signals.async_wait(on_signal);
  caf::actor_system sys{caf_cfg};
  chat::server srv{sys, cfg, auth, cluster};
  std::string err;
  if (!srv.start(err)) {
    spdlog::critical("event=start_failed error=\"{}\"", err);
    std::cerr << "chatd: " << err << "\n";
    srv.shutdown();
    return 1;
  }
  running = &srv;
  auto port = srv.port();
  if (!cfg.port_file.empty()) {
    auto tmp = cfg.port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), cfg.port_file.c_str());
  }
  auto host = cfg.listen.substr(0, cfg.listen.rfind(':'));
  auto url = std::string(srv.tls() ? "https://" : "http://") + host + ":" + std::to_string(port) + "/";
  spdlog::info("event=listening node={} url={} store={} anonymous={}", cfg.node, url,
               cfg.store == "sqlite" ? cfg.db : cfg.store, cfg.allow_anonymous);
  std::cout << "chatd listening on " << url << std::endl;
  if (srv.plain_port()) {
    auto plain_host = cfg.listen_plain.substr(0, cfg.listen_plain.rfind(':'));
    auto plain_url = "http://" + plain_host + ":" + std::to_string(srv.plain_port()) + "/";
    spdlog::info("event=listening node={} url={} plain=true", cfg.node, plain_url);
    std::cout << "chatd listening on " << plain_url << " (plain)" << std::endl;
  }
  signals_ioc.run();
  spdlog::info("event=signal signal={}", got);
  srv.shutdown(1012);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A closed stdout (a parent that stopped reading) must not kill the server
  // when something prints to it; sockets never raise it (Asio sends with
  // MSG_NOSIGNAL).
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"chatd: real-time chat server (WebSocket, CAF actors)"};
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  chat::server_config cfg;
  chat::add_server_options(app, cfg);

  auto* token = app.add_subcommand("token", "Print a signed JWT (uses --jwt-secret or --jwt-private-key)");
  token->fallthrough();  // server options (--jwt-secret, --config) may follow `token`
  chat::token_spec spec;
  std::string ttl = "1h";
  token->add_option("--user", spec.user, "User id (sub)")->required();
  token->add_option("--name", spec.name, "Display name");
  token->add_option("--ttl", ttl, "Lifetime: 90s, 30m, 1h, 7d; 0 = no exp")->capture_default_str();
  token->add_option("--roles", spec.roles, "Roles, e.g. admin")->delimiter(',');
  token->add_option("--rooms", spec.rooms, "Room patterns this user may join, e.g. 'team-*'")
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);

  spdlog::set_default_logger(spdlog::stderr_logger_mt("chatd"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z level=%l %v");
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  try {
    if (token->parsed()) {
      auto auth = make_auth(cfg);
      spec.ttl_s = parse_ttl(ttl);
      std::string err;
      auto jwt = chat::mint_token(auth, spec, chat::now_ms() / 1000, err);
      if (jwt.empty()) {
        std::cerr << "chatd token: " << err << "\n";
        return 2;
      }
      std::cout << jwt << "\n";
      return 0;
    }
    return run_server(cfg);
  } catch (const std::exception& e) {
    std::cerr << "chatd: " << e.what() << "\n";
    return 1;
  }
}
