#include "gateway/config.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "gateway/edge_limits.hpp"

namespace chat {

void add_server_options(CLI::App& app, server_config& c) {
  app.set_config("--config", "", "Config file (key = value lines, INI/TOML)");
  auto opt = [&](const char* flags, auto& var, const char* env, const char* help) {
    return app.add_option(flags, var, help)->envname(env)->capture_default_str();
  };
  opt("--listen", c.listen, "CHAT_LISTEN", "HTTP/WebSocket listen address host:port (port 0: any)");
  opt("--node", c.node, "CHAT_NODE", "Node name reported in welcome");
  opt("--cluster", c.cluster_file, "CHAT_CLUSTER",
      "Cluster config file (JSON); start this node as --node NAME of it");
  opt("--tls-cert", c.tls_cert, "CHAT_TLS_CERT",
      "TLS certificate chain (PEM); with --tls-key, --listen serves https:// and wss:// only "
      "(reloaded on SIGHUP)");
  opt("--tls-key", c.tls_key, "CHAT_TLS_KEY", "TLS private key (PEM), reloaded on SIGHUP");
  opt("--listen-plain", c.listen_plain, "CHAT_LISTEN_PLAIN",
      "With TLS: also serve plain http:// and ws:// on this host:port (e.g. for a local proxy)");
  opt("--port-file", c.port_file, "CHAT_PORT_FILE", "Write the bound port to this file");
  app.add_flag("--allow-anonymous", c.allow_anonymous, "Accept hello with a bare name (demo)")
      ->envname("CHAT_ALLOW_ANONYMOUS");
  opt("--jwt-secret", c.jwt_secret, "CHAT_JWT_SECRET", "HS256 shared secret");
  opt("--jwt-public-key", c.jwt_public_key_file, "CHAT_JWT_PUBLIC_KEY", "RS256 public key (PEM file)");
  opt("--jwt-private-key", c.jwt_private_key_file, "CHAT_JWT_PRIVATE_KEY",
      "RS256 private key (PEM file), only for `chatd token`");
  opt("--jwt-require-exp", c.jwt_require_exp, "CHAT_JWT_REQUIRE_EXP", "Refuse tokens without exp");
  opt("--heartbeat", c.heartbeat_s, "CHAT_HEARTBEAT", "Seconds between pings; 2 missed = dead")
      ->check(CLI::Range(1, 3600));
  opt("--hello-timeout", c.hello_timeout_s, "CHAT_HELLO_TIMEOUT", "Seconds to wait for hello")
      ->check(CLI::Range(0.05, 3600.0));
  opt("--max-frame", c.max_frame, "CHAT_MAX_FRAME", "Largest client frame in bytes (else 1009)")
      ->check(CLI::Range(size_t{1024}, size_t{16} << 20));
  opt("--rate", c.rate, "CHAT_RATE", "Messages per second per connection")
      ->check(CLI::PositiveNumber);
  opt("--burst", c.burst, "CHAT_BURST", "Message burst per connection")->check(CLI::PositiveNumber);
  opt("--max-rooms-per-conn", c.max_rooms_per_conn, "CHAT_MAX_ROOMS_PER_CONN",
      "Rooms one connection may join");
  opt("--max-conns-per-user", c.max_conns_per_user, "CHAT_MAX_CONNS_PER_USER",
      "Connections per user; the oldest beyond is closed with 4009")
      ->check(CLI::Range(size_t{1}, size_t{1} << 30));
  opt("--queue-limit", c.queue_limit, "CHAT_QUEUE_LIMIT",
      "Outgoing bytes queued per connection before it is closed with 4008");
  opt("--max-connections", c.max_connections, "CHAT_MAX_CONNECTIONS",
      "Open WebSocket connections per node (beyond: 1013 try again later); 0: the file "
      "descriptor limit less a reserve");
  opt("--max-header-bytes", c.max_header_bytes, "CHAT_MAX_HEADER_BYTES",
      "Largest HTTP request header (else 431)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 20));
  opt("--max-request-line", c.max_request_line, "CHAT_MAX_REQUEST_LINE",
      "Longest HTTP request line and target (else 414)")
      ->check(CLI::Range(size_t{256}, size_t{1} << 20));
  opt("--max-body", c.max_body, "CHAT_MAX_BODY", "Largest HTTP request body (else 413)")
      ->check(CLI::Range(size_t{0}, size_t{1} << 30));
  opt("--header-timeout", c.header_timeout_s, "CHAT_HEADER_TIMEOUT",
      "Seconds for a TLS handshake and for each HTTP request header (else closed)")
      ->check(CLI::Range(0.05, 3600.0));
  opt("--body-timeout", c.body_timeout_s, "CHAT_BODY_TIMEOUT",
      "Seconds for an HTTP request body (else closed)")
      ->check(CLI::Range(0.05, 3600.0));
  opt("--max-conns-per-address", c.max_conns_per_address, "CHAT_MAX_CONNS_PER_ADDRESS",
      "Open connections per source address (IPv4 /32, IPv6 /64); beyond, closed unread; 0: no limit");
  opt("--max-prehello-per-address", c.max_prehello_per_address, "CHAT_MAX_PREHELLO_PER_ADDRESS",
      "WebSockets per source address that have not said hello; beyond, upgrade answered 429; 0: no limit");
  opt("--handshake-rate", c.handshake_rate, "CHAT_HANDSHAKE_RATE",
      "WebSocket handshakes a second per source address (beyond the burst: 429); 0: no limit")
      ->check(CLI::NonNegativeNumber);
  opt("--handshake-burst", c.handshake_burst, "CHAT_HANDSHAKE_BURST",
      "WebSocket handshakes per source address in a burst")
      ->check(CLI::Range(1.0, 1e9));
  opt("--trusted-proxies", c.trusted_proxies, "CHAT_TRUSTED_PROXIES",
      "Comma list of proxy networks (CIDR) whose X-Forwarded-For names the client")
      ->delimiter(',');
  opt("--allowed-origins", c.allowed_origins, "CHAT_ALLOWED_ORIGINS",
      "Comma list of Origin patterns a browser may open a WebSocket from, e.g. "
      "https://chat.example.com,https://*.example.com,http://127.0.0.1:*; default: same origin")
      ->delimiter(',');
  opt("--store", c.store, "CHAT_STORE",
      "sqlite (durable, one node), postgres (durable, shared by a cluster) or memory")
      ->check(CLI::IsMember({"sqlite", "memory", "postgres"}));
  opt("--db", c.db, "CHAT_DB", "SQLite database file");
  // Not echoed as a default: a connection string may hold a password.
  app.add_option("--pg-url", c.pg_url,
                 "PostgreSQL connection string for --store postgres, e.g."
                 " postgresql://chat@db.example:5432/chat?sslmode=require")
      ->envname("CHAT_PG_URL");
  opt("--pg-pool", c.pg_pool, "CHAT_PG_POOL", "PostgreSQL connections at most (opened on demand)")
      ->check(CLI::Range(size_t{1}, size_t{64}));
  opt("--placement", c.placement, "CHAT_PLACEMENT",
      "Cluster: where a room lives while its first-choice node is down: live (its next choice "
      "among the nodes that are up; for a shared store), home (nowhere: unavailable until it "
      "returns; for per-node SQLite files) or auto (live on a shared store, else home)")
      ->check(CLI::IsMember({"auto", "live", "home"}));
  opt("--memory-max-per-room", c.memory_max_per_room, "CHAT_MEMORY_MAX_PER_ROOM",
      "Messages per room the memory store keeps");
  opt("--room-grace", c.room_grace_s, "CHAT_ROOM_GRACE", "Seconds an empty room lives on")
      ->check(CLI::Range(0.01, 86400.0));
  opt("--history-window", c.history_window, "CHAT_HISTORY_WINDOW",
      "Recent messages a room keeps in memory")
      ->check(CLI::Range(1u, 1000000u));
  opt("--presence-batch-threshold", c.presence_batch_threshold, "CHAT_PRESENCE_BATCH_THRESHOLD",
      "Members above which presence events are batched once per second");
  opt("--presence-budget", c.presence_budget, "CHAT_PRESENCE_BUDGET",
      "Presence deliveries a second in one room (changes x members) above which they are batched too");
  opt("--retention-max-messages", c.retention_max_messages, "CHAT_RETENTION_MAX_MESSAGES",
      "Messages kept per room (0: all)");
  opt("--retention-max-age", c.retention_max_age_s, "CHAT_RETENTION_MAX_AGE",
      "Seconds a message is kept (0: forever)");
  opt("--io-threads", c.io_threads, "CHAT_IO_THREADS", "WebSocket I/O threads")
      ->check(CLI::Range(1, 64));
  opt("--actor-threads", c.actor_threads, "CHAT_ACTOR_THREADS", "CAF scheduler threads")
      ->check(CLI::Range(1, 64));
  opt("--shutdown-timeout", c.shutdown_timeout_s, "CHAT_SHUTDOWN_TIMEOUT",
      "Seconds to wait for connections to close on SIGTERM");
  opt("--api-key", c.api_key, "CHAT_API_KEY", "Key for the server API (/api/*); empty: API off");
  opt("--log-level", c.log_level, "CHAT_LOG_LEVEL", "trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
}

std::string check_config(const server_config& c) {
  if (!c.allow_anonymous && c.jwt_secret.empty() && c.jwt_public_key_file.empty())
    return "no way to authenticate: pass --jwt-secret (or CHAT_JWT_SECRET), --jwt-public-key "
           "FILE, or --allow-anonymous for a demo";
  if (c.listen.rfind(':') == std::string::npos) return "--listen must be host:port";
  if (c.tls_cert.empty() != c.tls_key.empty()) return "--tls-cert and --tls-key go together";
  if (!c.listen_plain.empty() && c.tls_cert.empty())
    return "--listen-plain is for a TLS node (without --tls-cert, --listen is plain already)";
  if (!c.listen_plain.empty() && c.listen_plain.rfind(':') == std::string::npos)
    return "--listen-plain must be host:port";
  if (c.max_request_line >= c.max_header_bytes)
    return "--max-request-line must be below --max-header-bytes";
  cidr_list proxies;
  if (auto e = proxies.parse(c.trusted_proxies); !e.empty()) return "--trusted-proxies: " + e;
  origin_policy origins;
  if (auto e = origins.parse(c.allowed_origins); !e.empty()) return "--allowed-origins: " + e;
  if (c.store == "postgres" && c.pg_url.empty())
    return "--store postgres needs --pg-url (or CHAT_PG_URL), e.g. "
           "postgresql://chat@localhost:5432/chat";
  return {};
}

bool parse_cluster_config(const std::string& text, cluster_config& out, std::string& err) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("nodes") || !j["nodes"].is_array() ||
      j["nodes"].empty()) {
    err = "expected {\"nodes\":[{\"name\":..,\"listen\":..,\"remoting\":..},...]}";
    return false;
  }
  out.nodes.clear();
  for (auto& n : j["nodes"]) {
    if (!n.is_object() || !n.value("name", nlohmann::json()).is_string() ||
        !n.value("listen", nlohmann::json()).is_string() ||
        !n.value("remoting", nlohmann::json()).is_string()) {
      err = "every node needs string fields name, listen and remoting";
      return false;
    }
    cluster_node node;
    node.name = n["name"];
    node.listen = n["listen"];
    std::string remoting = n["remoting"];
    auto colon = remoting.rfind(':');
    if (node.name.empty() || colon == std::string::npos ||
        node.listen.rfind(':') == std::string::npos) {
      err = "node '" + node.name + "': listen and remoting must be host:port";
      return false;
    }
    node.remote_host = remoting.substr(0, colon);
    try {
      int port = std::stoi(remoting.substr(colon + 1));
      if (port <= 0 || port > 65535) throw std::out_of_range("port");
      node.remote_port = static_cast<uint16_t>(port);
    } catch (...) {
      err = "node '" + node.name + "': bad remoting port";
      return false;
    }
    for (auto& other : out.nodes)
      if (other.name == node.name) {
        err = "node name '" + node.name + "' appears twice";
        return false;
      }
    out.nodes.push_back(std::move(node));
  }
  return true;
}

}  // namespace chat
