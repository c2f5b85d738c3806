#pragma once
// WebSocket URLs (ws:// and wss://) as the CLI, the bench and the tests take them.
#include <cstdint>
#include <string>
#include <string_view>

namespace chat {

struct ws_url {
  std::string scheme = "ws";  // "ws" or "wss", lower case
  std::string host;           // without the brackets of an IPv6 literal
  uint16_t port = 80;         // 80 for ws://, 443 for wss:// when the URL names none
  std::string path = "/ws";   // path and query (the HTTP request target); "/ws" when absent

  bool secure() const { return scheme == "wss"; }
  // host:port as the Host header wants it ("[::1]:8080" for IPv6).
  std::string authority() const;
};

// ws[s]://host[:port][/path][?query][#fragment]: the scheme is case-insensitive,
// the fragment is dropped, a URL with a query but no path gets "/ws?query".
// Refuses other schemes, user info, an empty host, an unclosed IPv6 bracket and
// a port outside 1..65535. On failure returns false and says why in `err`.
bool parse_ws_url(std::string_view url, ws_url& out, std::string& err);

}  // namespace chat
