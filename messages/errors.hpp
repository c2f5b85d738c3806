#pragma once
// The protocol's error codes: one enum, with the wire name, the server API's
// HTTP status and the metric label of each. No CAF, no I/O.
#include <array>
#include <cstddef>
#include <optional>
#include <string_view>

namespace chat {

enum class errc : unsigned char {
  bad_request,
  unauthorized,
  forbidden,
  not_found,
  not_member,
  too_large,
  rate_limited,
  token_expired,
  unavailable,
  internal,
  timeout,
};

inline constexpr size_t errc_count = static_cast<size_t>(errc::timeout) + 1;

// The code as it appears on the wire ("bad_request") and as a metric label.
constexpr std::string_view to_string(errc e) {
  constexpr std::array<std::string_view, errc_count> names = {
      "bad_request", "unauthorized",  "forbidden",   "not_found", "not_member", "too_large",
      "rate_limited", "token_expired", "unavailable", "internal",  "timeout"};
  return names[static_cast<size_t>(e)];
}

// The server API's HTTP status for a code.
constexpr unsigned http_status(errc e) {
  switch (e) {
    case errc::bad_request: return 400;
    case errc::unauthorized:
    case errc::token_expired: return 401;
    case errc::forbidden: return 403;
    case errc::not_found: return 404;
    case errc::not_member: return 409;
    case errc::too_large: return 413;
    case errc::rate_limited: return 429;
    case errc::unavailable: return 503;
    case errc::timeout: return 504;
    case errc::internal: return 500;
  }
  return 500;
}

// The enum for a wire name; nullopt for a name the protocol does not define.
constexpr std::optional<errc> errc_from_string(std::string_view s) {
  for (size_t i = 0; i < errc_count; ++i)
    if (to_string(static_cast<errc>(i)) == s) return static_cast<errc>(i);
  return std::nullopt;
}

}  // namespace chat
