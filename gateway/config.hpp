#pragma once
// Every server option: command line, environment (CHAT_<NAME>) and an optional
// config file (--config FILE, INI/TOML "key = value"). Flags beat environment
// beats file beats defaults.
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace chat {

struct server_config {
  std::string listen = "127.0.0.1:8080";
  std::string node = "chatd";
  std::string port_file;  // the bound port is written here once listening
  std::string cluster_file;  // cluster config (JSON); --node names this node in it

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
  size_t max_connections = 100000;

  // rooms and storage
  std::string store = "sqlite";  // sqlite | memory | postgres
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

}  // namespace chat
