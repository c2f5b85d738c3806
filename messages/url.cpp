#include "messages/url.hpp"

namespace chat {

namespace {

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

bool fail(std::string& err, std::string why) {
  err = std::move(why);
  return false;
}

}  // namespace

std::string ws_url::authority() const {
  auto h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

bool parse_ws_url(std::string_view url, ws_url& out, std::string& err) {
  out = ws_url{};
  std::string_view rest;
  if (starts_with_nocase(url, "wss://")) {
    out.scheme = "wss";
    out.port = 443;
    rest = url.substr(6);
  } else if (starts_with_nocase(url, "ws://")) {
    rest = url.substr(5);
  } else {
    return fail(err, "the URL must start with ws:// or wss:// (ws://host:port/ws)");
  }
  auto end = rest.find_first_of("/?#");
  auto authority = rest.substr(0, end);
  if (end != std::string_view::npos) {
    auto target = rest.substr(end);
    target = target.substr(0, target.find('#'));
    if (!target.empty() && target.front() == '?')
      out.path += std::string(target);
    else if (!target.empty())
      out.path = std::string(target);
  }
  if (authority.find('@') != std::string_view::npos)
    return fail(err, "user info (user@host) in the URL is not supported");
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
    auto close = authority.find(']');
    if (close == std::string_view::npos) return fail(err, "bad IPv6 address in the URL");
    out.host = std::string(authority.substr(1, close - 1));
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail(err, "bad port in the URL");
      port = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return fail(err, "no host in the URL");
  if (!port.empty()) {
    unsigned long v = 0;
    for (char c : port) {
      if (c < '0' || c > '9' || v > 65535) return fail(err, "bad port in the URL");
      v = v * 10 + static_cast<unsigned long>(c - '0');
    }
    if (v == 0 || v > 65535) return fail(err, "bad port in the URL");
    out.port = static_cast<uint16_t>(v);
  }
  return true;
}

}  // namespace chat
