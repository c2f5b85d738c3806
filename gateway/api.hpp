#pragma once
// The server API for backends: /api/* on the HTTP port, `Authorization: Bearer
// <api key>`, JSON in and out (README "Server API"). The parsing here is pure
// (testable without a server); handle_api() glues it to the API actor.
#include <boost/asio/io_context.hpp>
#include <functional>
#include <string>
#include <string_view>

#include "gateway/api_actor.hpp"
#include "gateway/http_routes.hpp"
#include "messages/codec.hpp"

namespace chat {

struct api_error {
  errc code = errc::bad_request;
  std::string message;
  unsigned status() const { return http_status(code); }
};

struct api_route {
  api_op op = api_op::rooms;
  std::string room;  // percent-decoded path segment
  std::string user;  // percent-decoded path segment
  uint64_t seq = 0;  // /messages/{seq}
};

enum class route_result { ok, not_found, bad_method };

// Matches a path below /api/ (query already removed) and a method. On
// bad_method, `allow` is the method the path wants. Path segments are
// percent-decoded; a bad escape is not_found.
route_result match_api_route(std::string_view method, std::string_view path, api_route& out,
                             std::string& allow);

// %XX escapes to bytes; false on a malformed escape.
bool percent_decode(std::string_view in, std::string& out);

// Compares in time that depends only on the length of `given`.
bool constant_time_equal(std::string_view given, std::string_view expected);

// True when `authorization` is "Bearer <key>" (scheme case-insensitive).
bool bearer_matches(std::string_view authorization, std::string_view key);

// Bodies and queries, validated with the protocol's own rules (messages/codec).
// `call` gets op, room, send / kick / before, limit.
bool parse_publish(std::string_view body, const std::string& room, const limits& lim,
                   api_call& call, api_error& err);
bool parse_dm(std::string_view body, const limits& lim, api_call& call, api_error& err);
bool parse_disconnect(std::string_view body, const std::string& user, api_call& call,
                      api_error& err);
// Server-wide bans (GET, POST, DELETE /api/users/{user}/ban): the POST body
// {"seconds"?, "reason"?} may be empty.
bool parse_user_ban(std::string_view body, const std::string& user, api_op op, api_call& call,
                    api_error& err);
bool parse_history_query(std::string_view query, const std::string& room, const limits& lim,
                         api_call& call, api_error& err);
bool parse_room_param(const std::string& room, bool allow_dm, api_error& err);
// Protocol v2: rooms with an owner and settings, memberships, edits, deletes, search.
bool parse_room_create(std::string_view body, const limits& lim, api_call& call, api_error& err);
bool parse_room_update(std::string_view body, const std::string& room, const limits& lim,
                       api_call& call, api_error& err);
bool parse_member_set(std::string_view body, const std::string& room, const std::string& user,
                      api_call& call, api_error& err);
bool parse_edit(std::string_view body, const api_route& route, const limits& lim, api_call& call,
                api_error& err);
bool parse_delete(std::string_view body, const api_route& route, const limits& lim,
                  api_call& call, api_error& err);
bool parse_search_query(std::string_view query, const std::string& room, const limits& lim,
                        api_call& call, api_error& err);

// Serves one /api/* request. `done` gets the response exactly once, on the
// thread that runs `ioc` (the session's), or not at all if the server stops first.
void handle_api(http_request&& req, server_context& ctx, boost::asio::io_context& ioc,
                std::function<void(http_response&&)> done);

}  // namespace chat
