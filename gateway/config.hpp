#pragma once
// Every server option: command line, environment (CHAT_<NAME>) and an optional
// config file (--config FILE, INI/TOML "key = value"). Flags beat environment
// beats file beats defaults.
#include <cstdint>
#include <string>
#include <vector>

#include "actors/cluster/nodes.hpp"

namespace CLI {
class App;
}

namespace chat {

struct server_config {
  std::string listen = "127.0.0.1:8080";
  std::string node = "chatd";
  std::string port_file;  // the bound port is written here once listening
  std::string cluster_file;  // cluster config (JSON); --node names this node in it

  // TLS: with a certificate and key the --listen address serves only https://
  // and wss://; --listen-plain adds a plain HTTP/WebSocket listener.
  std::string tls_cert;  // PEM chain, reloaded on SIGHUP
  std::string tls_key;   // PEM key, reloaded on SIGHUP
  std::string listen_plain;

  // auth
  bool allow_anonymous = false;
  std::string jwt_secret;
  std::string jwt_public_key_file;
  std::string jwt_private_key_file;
  bool jwt_require_exp = true;

  // limits
  int heartbeat_s = 25;
  double hello_timeout_s = 10;
  size_t max_frame = 64 * 1024;
  double rate = 20;
  double burst = 40;
  size_t max_rooms_per_conn = 100;
  size_t max_conns_per_user = 10;
  size_t queue_limit = 1024 * 1024;
  size_t max_connections = 0;  // 0: from RLIMIT_NOFILE less a reserve

  // the HTTP edge
  size_t max_header_bytes = 16 * 1024;  // request line + fields (else 431)
  size_t max_request_line = 8 * 1024;   // request line and target (else 414)
  size_t max_body = 1024 * 1024;        // request body (else 413)
  double header_timeout_s = 10;         // for a request's header (and a TLS handshake)
  double body_timeout_s = 30;           // for its body
  // per source address (IPv4 /32, IPv6 /64); 0: no limit
  uint32_t max_conns_per_address = 200;
  uint32_t max_prehello_per_address = 20;
  double handshake_rate = 20;  // WebSocket handshakes a second per address
  double handshake_burst = 40;
  std::vector<std::string> trusted_proxies;  // CIDRs whose X-Forwarded-For is believed
  std::vector<std::string> allowed_origins;  // empty: same origin as Host

  // rooms and storage
  std::string store = "sqlite";  // sqlite | memory | postgres
  // Rooms' homes: "live" (among the nodes that are up; needs a shared store),
  // "home" (the first choice only; unavailable while it is down), "auto".
  std::string placement = "auto";
  std::string db = "./data/chat.db";
  std::string pg_url;  // libpq connection string (URI or key=value) for --store postgres
  size_t pg_pool = 4;  // PostgreSQL connections at most
  uint64_t memory_max_per_room = 10000;
  double room_grace_s = 30;
  uint32_t history_window = 1000;
  size_t presence_batch_threshold = 1000;
  size_t presence_budget = 500;
  uint64_t retention_max_messages = 0;
  int64_t retention_max_age_s = 0;

  // threads
  int io_threads = 1;
  int actor_threads = 2;

  double shutdown_timeout_s = 5;
  std::string api_key;
  std::string log_level = "info";
};

// Adds every option of `cfg` to `app` (flags, CHAT_* environment, config file).
void add_server_options(CLI::App& app, server_config& cfg);

// Refuses a configuration that cannot work; returns "" or the reason with a fix.
std::string check_config(const server_config& cfg);

// The cluster file (--cluster): {"nodes":[{"name":"n1","listen":"127.0.0.1:8081",
// "remoting":"127.0.0.1:9081"},...]}. False and the reason in `err` when it is not one.
bool parse_cluster_config(const std::string& text, cluster_config& out, std::string& err);

}  // namespace chat
