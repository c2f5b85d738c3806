// chat-cli: parses the command line and runs the client (cli/client.cpp).
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/client.hpp"

int main(int argc, char** argv) {
  chat::cli_options opt;
  CLI::App app{
      "chat-cli: chat from a terminal or a shell pipeline.\n"
      "Each stdin line is sent to the first joined room; lines starting with / are commands:\n"
      "  /join ROOM, /leave ROOM, /dm USER TEXT, /history [ROOM], /quit  (// sends a '/')\n"
      "At the end of stdin it waits for the acks (--wait-ms), closes and exits.\n"
      "Exit codes: 0 ok, 1 connection or protocol error (or a message not stored), 2 usage."};
  app.add_option("--url", opt.url, "Server WebSocket URL")
      ->envname("CHAT_URL")
      ->capture_default_str();
  auto* token =
      app.add_option("--token", opt.token, "JWT to authenticate with")->envname("CHAT_TOKEN");
  auto* name = app.add_option("--name", opt.name, "Anonymous name (server runs --allow-anonymous)");
  token->excludes(name);
  app.add_option("--room", opt.rooms, "Room to join (repeat for several; lines go to the first)");
  app.add_flag("--json", opt.json, "Print every received JSON object as is, one per line");
  app.add_flag("--send-only", opt.send_only, "Print nothing received (errors still go to stderr)");
  app.add_flag("--listen", opt.listen, "Keep running after stdin ends (until Ctrl-C or close)");
  app.add_option("--wait-ms", opt.wait_ms,
                 "After stdin ends, give up waiting for acks when none came for this long")
      ->check(CLI::Range(0, 3600 * 1000))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : chat::cli_exit_usage;
  }
  if (opt.token.empty() == opt.name.empty()) {
    std::cerr << "chat-cli: give --token TOKEN (or CHAT_TOKEN) or --name NAME\n";
    return chat::cli_exit_usage;
  }
  return chat::run_cli(opt);
}
