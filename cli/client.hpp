#pragma once
// chat-cli: a WebSocket client of the chat protocol for terminals and shell
// pipelines. Lines from stdin become `send`s (or commands), incoming events are
// printed (human text, or the received JSON objects one per line).
#include <string>
#include <vector>

namespace chat {

struct cli_options {
  std::string url = "ws://127.0.0.1:8080/ws";  // messages/url.hpp; wss:// is refused (no TLS here)
  std::string token;
  std::string name;
  std::vector<std::string> rooms;
  bool json = false;       // print every received object as is, one per line
  bool send_only = false;  // print nothing received (errors still go to stderr)
  bool listen = false;     // keep running after stdin ends
  int wait_ms = 5000;      // after stdin ends: longest wait for a reply before giving up
  int connect_timeout_ms = 10000;
};

// Exit codes of chat-cli.
constexpr int cli_exit_ok = 0;
constexpr int cli_exit_error = 1;  // connection or protocol error, or a send not acked
constexpr int cli_exit_usage = 2;

// Connects, says hello, joins, then serves stdin until EOF (or /quit), waits
// (bounded) for outstanding acks, closes with 1000. Prints to stdout/stderr.
int run_cli(const cli_options& opt);

}  // namespace chat
