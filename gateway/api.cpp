#include "gateway/api.hpp"

#include <boost/asio/post.hpp>
#include <cctype>
#include <charconv>
#include <nlohmann/json.hpp>
#include <vector>

#include "gateway/auth.hpp"
#include "gateway/server_context.hpp"
#include "messages/validate.hpp"

namespace chat {

namespace http = boost::beast::http;
namespace net = boost::asio;
using json = nlohmann::json;

namespace {

bool fail(api_error& err, errc code, std::string message) {
  err.code = code;
  err.message = std::move(message);
  return false;
}

bool bad(api_error& err, std::string message) {
  return fail(err, errc::bad_request, std::move(message));
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    auto pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) return out;
    start = pos + 1;
  }
}

bool parse_object(std::string_view body, const limits& lim, json& out, api_error& err) {
  // Check the depth before parsing: the parser recurses.
  if (json_nesting_depth(body) > lim.max_depth) return bad(err, "JSON nested too deeply");
  out = json::parse(body.begin(), body.end(), nullptr, false);
  if (out.is_discarded()) return bad(err, "malformed JSON body");
  if (!out.is_object()) return bad(err, "the body must be a JSON object");
  return true;
}

// Runs the protocol's own decoder on the body as a request of `type`, so that
// text, data and idempotency_key follow exactly the WebSocket rules.
bool decode_as(json body, const char* type, const limits& lim, client_req& out, api_error& err) {
  body.erase("id");
  body["type"] = type;
  decode_error de;
  if (decode_request_json(body, lim, out, de))
    return true;
  return fail(err, de.code, de.message);
}

bool opt_string(const json& j, const char* key, std::string& out, api_error& err) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (!it->is_string()) return bad(err, std::string("'") + key + "' must be a string");
  out = it->get<std::string>();
  return true;
}

// A display name: valid UTF-8, 1-64 code points, no control characters.
bool valid_display_name(std::string_view name) {
  size_t n = 0;
  if (!utf8_code_points(name, n) || n == 0 || n > 64) return false;
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

bool sender(const json& body, bool required, member_info& who, api_error& err) {
  std::string from, name;
  if (!opt_string(body, "from", from, err) || !opt_string(body, "name", name, err)) return false;
  auto present_but_empty = [&](const char* key, const std::string& v) {
    auto it = body.find(key);
    return it != body.end() && it->is_string() && v.empty();
  };
  if (present_but_empty("from", from)) return bad(err, "'from' must not be empty");
  if (present_but_empty("name", name)) return bad(err, "'name' must not be empty");
  if (from.empty() && required) return bad(err, "'from' is required");
  if (!name.empty() && !valid_display_name(name))
    return bad(err, "'name' must be 1-64 characters without control characters");
  if (from.empty() || (from == "system" && !required)) {
    who = member_info{"system", name.empty() ? "system" : name};
    return true;
  }
  if (!valid_user_id(from))
    return bad(err, "'from' must be a user id (1-64 characters, no ':' or control characters)");
  who = member_info{from, name.empty() ? from : name};
  return true;
}

bool parse_uint(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = hex(in[i + 1]), lo = hex(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

bool constant_time_equal(std::string_view given, std::string_view expected) {
  // No early exit: the time does not tell how much of a guess was right.
  size_t diff = given.size() ^ expected.size();
  if (expected.empty()) return false;
  for (size_t i = 0; i < given.size(); ++i)
    diff |= static_cast<unsigned char>(given[i]) ^
            static_cast<unsigned char>(expected[i % expected.size()]);
  return diff == 0;
}

bool bearer_matches(std::string_view authorization, std::string_view key) {
  constexpr std::string_view scheme = "bearer ";
  if (authorization.size() < scheme.size()) return false;
  for (size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != scheme[i]) return false;
  auto given = authorization.substr(scheme.size());
  while (!given.empty() && given.front() == ' ') given.remove_prefix(1);
  while (!given.empty() && (given.back() == ' ' || given.back() == '\t')) given.remove_suffix(1);
  return constant_time_equal(given, key);
}

route_result match_api_route(std::string_view method, std::string_view path, api_route& out,
                             std::string& allow) {
  constexpr std::string_view prefix = "/api/";
  if (path.substr(0, prefix.size()) != prefix) return route_result::not_found;
  auto seg = split(path.substr(prefix.size()), '/');
  for (auto s : seg)
    if (s.empty()) return route_result::not_found;
  out = api_route{};
  // The methods a path takes, each with its operation.
  std::vector<std::pair<std::string_view, api_op>> ops;
  auto n = seg.size();
  if (n == 1 && seg[0] == "rooms") {
    ops = {{"GET", api_op::rooms}, {"POST", api_op::room_create}};
  } else if (n >= 2 && seg[0] == "rooms") {
    if (!percent_decode(seg[1], out.room)) return route_result::not_found;
    if (n == 2) {
      ops = {{"GET", api_op::room_get}, {"PATCH", api_op::room_update}};
    } else if (n == 3 && seg[2] == "messages") {
      ops = {{"POST", api_op::publish}};
    } else if (n == 4 && seg[2] == "messages") {
      if (!parse_uint(seg[3], out.seq) || out.seq == 0) return route_result::not_found;
      ops = {{"PATCH", api_op::edit}, {"DELETE", api_op::del}};
    } else if (n == 3 && seg[2] == "presence") {
      ops = {{"GET", api_op::presence}};
    } else if (n == 3 && seg[2] == "history") {
      ops = {{"GET", api_op::history}};
    } else if (n == 3 && seg[2] == "moderation") {
      ops = {{"GET", api_op::moderation}};
    } else if (n == 3 && seg[2] == "search") {
      ops = {{"GET", api_op::search}};
    } else if (n == 3 && seg[2] == "members") {
      ops = {{"GET", api_op::members}};
    } else if (n == 4 && seg[2] == "members") {
      if (!percent_decode(seg[3], out.user)) return route_result::not_found;
      ops = {{"PUT", api_op::member_set}, {"DELETE", api_op::member_del}};
    }
  } else if (n == 1 && seg[0] == "dm") {
    ops = {{"POST", api_op::dm}};
  } else if (n == 3 && seg[0] == "users" && seg[2] == "disconnect") {
    if (!percent_decode(seg[1], out.user)) return route_result::not_found;
    ops = {{"POST", api_op::disconnect}};
  } else if (n == 3 && seg[0] == "users" && seg[2] == "ban") {
    if (!percent_decode(seg[1], out.user)) return route_result::not_found;
    ops = {{"GET", api_op::user_ban_get},
           {"POST", api_op::user_ban_set},
           {"DELETE", api_op::user_ban_lift}};
  }
  if (ops.empty()) return route_result::not_found;
  for (auto& [m, op] : ops)
    if (method == m) {
      out.op = op;
      return route_result::ok;
    }
  allow.clear();
  for (auto& [m, op] : ops) {
    if (!allow.empty()) allow += ", ";
    allow += m;
  }
  return route_result::bad_method;
}

bool parse_room_param(const std::string& room, bool allow_dm, api_error& err) {
  if (valid_room_name(room)) return true;
  std::string a, b;
  if (is_dm_room(room)) {
    if (allow_dm && parse_dm_room(room, a, b) && valid_user_id(a) && valid_user_id(b)) return true;
    if (!allow_dm) return bad(err, "dm rooms are reserved: use POST /api/dm");
  }
  return bad(err, "room names are 1-64 characters of A-Z a-z 0-9 _ - . : (dm: is reserved)");
}

namespace {

// A change the backend vouches for (trusted): as the system, or as `from`.
void set_trusted_change(api_call& call, api_op op, const std::string& room, member_info who,
                        client_req& req, event_kind kind);

// A send the backend vouches for: no connection behind it, no membership needed.
void set_trusted_send(api_call& call, api_op op, const std::string& room, member_info who,
                      client_req& req, std::string dm_to) {
  set_trusted_change(call, op, room, std::move(who), req, event_kind::message);
  call.send.dm_to = std::move(dm_to);
}

}  // namespace

bool parse_publish(std::string_view body, const std::string& room, const limits& lim,
                   api_call& call, api_error& err) {
  json j;
  client_req req;
  member_info who;
  if (!parse_room_param(room, false, err) || !parse_object(body, lim, j, err) ||
      !sender(j, false, who, err))
    return false;
  j["room"] = room;
  if (!decode_as(std::move(j), "send", lim, req, err)) return false;
  set_trusted_send(call, api_op::publish, room, std::move(who), req, {});
  return true;
}

bool parse_dm(std::string_view body, const limits& lim, api_call& call, api_error& err) {
  json j;
  client_req req;
  member_info who;
  if (!parse_object(body, lim, j, err) || !sender(j, true, who, err) ||
      !decode_as(j, "dm", lim, req, err))
    return false;
  if (!valid_user_id(req.to)) return bad(err, "'to' must be a user id");
  if (req.to == who.user) return bad(err, "'from' and 'to' must differ");
  auto room = dm_room_name(who.user, req.to);
  set_trusted_send(call, api_op::dm, room, std::move(who), req, std::move(req.to));
  return true;
}

bool parse_disconnect(std::string_view body, const std::string& user, api_call& call,
                      api_error& err) {
  if (!valid_user_id(user)) return bad(err, "not a user id: " + user.substr(0, 64));
  kick_user k{user, 4003, "disconnected by the server"};
  if (body.find_first_not_of(" \t\r\n") != std::string_view::npos) {
    json j;
    if (!parse_object(body, limits{}, j, err)) return false;
    auto code = j.find("code");
    if (code != j.end() && !code->is_null()) {
      if (!code->is_number_integer()) return bad(err, "'code' must be an integer");
      auto c = code->get<int64_t>();
      if (c != 1000 && (c < 4000 || c > 4999)) return bad(err, "'code' must be 1000 or 4000-4999");
      k.code = static_cast<uint16_t>(c);
    }
    std::string reason;
    if (!opt_string(j, "reason", reason, err)) return false;
    size_t n = 0;
    if (!reason.empty()) {
      // A close frame's reason has room for 123 bytes.
      if (!utf8_code_points(reason, n) || reason.size() > 120)
        return bad(err, "'reason' must be valid UTF-8 of at most 120 bytes");
      k.reason = std::move(reason);
    }
  }
  call.op = api_op::disconnect;
  call.kick = std::move(k);
  return true;
}

bool parse_user_ban(std::string_view body, const std::string& user, api_op op, api_call& call,
                    api_error& err) {
  if (!valid_user_id(user)) return bad(err, "not a user id: " + user.substr(0, 64));
  call.op = op;
  call.ban = user_ban{user, 0, "", op == api_op::user_ban_lift};
  call.seconds = 0;
  if (op != api_op::user_ban_set || body.find_first_not_of(" \t\r\n") == std::string_view::npos)
    return true;
  json j;
  if (!parse_object(body, limits{}, j, err)) return false;
  auto secs = j.find("seconds");
  if (secs != j.end() && !secs->is_null()) {
    // At most ten years: anything longer is "until lifted" (no seconds).
    if (!secs->is_number_integer() || secs->get<int64_t>() <= 0 ||
        secs->get<int64_t>() > 10ll * 366 * 24 * 3600)
      return bad(err, "'seconds' must be a whole number of seconds from 1 to ten years");
    call.seconds = secs->get<int64_t>();
  }
  std::string reason;
  if (!opt_string(j, "reason", reason, err)) return false;
  // As a room ban's reason: one line of UTF-8, at most max_topic_chars.
  size_t n = 0;
  bool line = for_each_code_point(reason, [&n](uint32_t cp) {
    ++n;
    return cp >= 0x20 && cp != 0x7F;
  });
  if (!line || n > max_topic_chars)
    return bad(err, "'reason' must be one line of valid UTF-8, at most " +
                        std::to_string(max_topic_chars) + " characters");
  call.ban.reason = std::move(reason);
  return true;
}

bool parse_history_query(std::string_view query, const std::string& room, const limits& lim,
                         api_call& call, api_error& err) {
  if (!parse_room_param(room, true, err)) return false;
  call.op = api_op::history;
  call.room = room;
  call.before = 0;
  call.limit = 50;
  if (query.empty()) return true;
  for (auto pair : split(query, '&')) {
    auto eq = pair.find('=');
    auto key = pair.substr(0, eq);
    std::string value;
    if (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), value))
      return bad(err, "bad percent-encoding in the query");
    if (value.empty()) continue;  // "before=" is the same as no before
    uint64_t v = 0;
    if (key == "before") {
      if (!parse_uint(value, v) || v == 0) return bad(err, "'before' must be an integer >= 1");
      call.before = v;
    } else if (key == "limit") {
      if (!parse_uint(value, v) || v < 1 || v > lim.max_history)
        return bad(err, "'limit' must be 1-" + std::to_string(lim.max_history));
      call.limit = static_cast<uint32_t>(v);
    }
  }
  return true;
}

namespace {

// A body that may be empty (DELETE): {} then.
bool parse_optional_object(std::string_view body, const limits& lim, json& out, api_error& err) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    out = json::object();
    return true;
  }
  return parse_object(body, lim, out, err);
}

// A change the backend vouches for (trusted): as the system, or as `from`.
void set_trusted_change(api_call& call, api_op op, const std::string& room, member_info who,
                        client_req& req, event_kind kind) {
  call.op = op;
  call.room = room;
  call.send = send_req{};
  call.send.room = room;
  call.send.who = std::move(who);
  call.send.text = std::move(req.text);
  call.send.data = std::move(req.data);
  call.send.idem_key = std::move(req.idem_key);
  call.send.trusted = true;
  call.send.kind = kind;
  call.send.target = req.seq;
  if (kind == event_kind::moderation) {
    call.send.text = "settings";
    call.send.settings = std::move(req.settings);
    call.send.set = req.set;
  }
}

// The settings keys of a body, decoded as the protocol's room_set.
bool settings_of(const json& j, const std::string& room, const limits& lim, bool required,
                 client_req& req, api_error& err) {
  json set = json::object();
  for (auto key : {"topic", "private", "read_only", "slow_mode", "idempotency_key"})
    if (j.contains(key)) set[key] = j[key];
  if (!required && set.empty()) return true;
  set["room"] = room;
  return decode_as(std::move(set), "room_set", lim, req, err);
}

bool role_of(const json& j, member_role& out, api_error& err) {
  std::string role;
  if (!opt_string(j, "role", role, err)) return false;
  if (role == "member" || role.empty()) out = member_role::member;
  else if (role == "moderator") out = member_role::moderator;
  else if (role == "owner") out = member_role::owner;
  else return bad(err, "'role' must be member, moderator or owner");
  return true;
}

}  // namespace

bool parse_room_create(std::string_view body, const limits& lim, api_call& call, api_error& err) {
  json j;
  std::string room, owner;
  if (!parse_object(body, lim, j, err) || !opt_string(j, "room", room, err) ||
      !opt_string(j, "owner", owner, err))
    return false;
  if (!parse_room_param(room, false, err)) return false;
  if (!valid_user_id(owner)) return bad(err, "'owner' (the room's owner, a user id) is required");
  client_req req;
  if (!settings_of(j, room, lim, false, req, err)) return false;
  set_trusted_change(call, api_op::room_create, room, member_info{"system", "system"}, req,
                     event_kind::moderation);
  call.invite = invite_req{room, {}, {}, {}, owner, false, member_role::owner};
  return true;
}

bool parse_room_update(std::string_view body, const std::string& room, const limits& lim,
                       api_call& call, api_error& err) {
  json j;
  member_info who;
  client_req req;
  if (!parse_room_param(room, false, err) || !parse_object(body, lim, j, err) ||
      !sender(j, false, who, err) || !settings_of(j, room, lim, true, req, err))
    return false;
  set_trusted_change(call, api_op::room_update, room, std::move(who), req, event_kind::moderation);
  return true;
}

bool parse_member_set(std::string_view body, const std::string& room, const std::string& user,
                      api_call& call, api_error& err) {
  json j;
  member_role role = member_role::member;
  if (!parse_room_param(room, false, err)) return false;
  if (!valid_user_id(user)) return bad(err, "not a user id: " + user.substr(0, 64));
  if (!parse_optional_object(body, limits{}, j, err) || !role_of(j, role, err)) return false;
  call.op = api_op::member_set;
  call.room = room;
  call.invite = invite_req{room, {}, {}, {}, user, false, role};
  return true;
}

namespace {

// PATCH (edit: a body required) and DELETE (a body optional) of /messages/{seq}:
// decoded as the protocol's own request, acting as the system or as `from`.
bool parse_change(std::string_view body, const api_route& route, const limits& lim,
                  api_call& call, api_error& err, const char* type, api_op op, event_kind kind) {
  json j;
  member_info who;
  client_req req;
  bool need_body = kind == event_kind::edited;
  if (!parse_room_param(route.room, true, err) ||
      !(need_body ? parse_object(body, lim, j, err) : parse_optional_object(body, lim, j, err)) ||
      !sender(j, false, who, err))
    return false;
  j["room"] = route.room;
  j["seq"] = route.seq;
  if (!decode_as(std::move(j), type, lim, req, err)) return false;
  set_trusted_change(call, op, route.room, std::move(who), req, kind);
  return true;
}

}  // namespace

bool parse_edit(std::string_view body, const api_route& route, const limits& lim, api_call& call,
                api_error& err) {
  return parse_change(body, route, lim, call, err, "edit", api_op::edit, event_kind::edited);
}

bool parse_delete(std::string_view body, const api_route& route, const limits& lim,
                  api_call& call, api_error& err) {
  return parse_change(body, route, lim, call, err, "delete", api_op::del, event_kind::deleted);
}

bool parse_search_query(std::string_view query, const std::string& room, const limits& lim,
                        api_call& call, api_error& err) {
  if (!parse_room_param(room, true, err)) return false;
  json j = json::object();
  j["room"] = room;
  for (auto pair : split(query, '&')) {
    auto eq = pair.find('=');
    auto key = pair.substr(0, eq);
    std::string value;
    if (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), value))
      return bad(err, "bad percent-encoding in the query");
    for (auto& c : value)
      if (c == '+') c = ' ';  // a form-encoded space
    uint64_t v = 0;
    if (key == "q") {
      j["query"] = value;
    } else if ((key == "before" || key == "limit") && !value.empty()) {
      if (!parse_uint(value, v)) return bad(err, "'" + std::string(key) + "' must be an integer");
      j[std::string(key)] = v;
    }
  }
  if (!j.contains("query")) return bad(err, "'q' (the words to find) is required");
  client_req req;
  if (!decode_as(std::move(j), "search", lim, req, err)) return false;
  call.op = api_op::search;
  call.room = room;
  call.query = std::move(req.query);
  call.before = req.before;
  call.limit = req.limit;
  return true;
}

namespace {

http_response api_response(unsigned version, bool keep_alive, unsigned status, std::string body) {
  http_response res{static_cast<http::status>(status), version};
  res.set(http::field::server, "chatd");
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.body() += '\n';  // friendlier in a terminal (curl)
  res.prepare_payload();
  return res;
}

}  // namespace

void handle_api(http_request&& req, server_context& ctx, net::io_context& ioc,
                std::function<void(http_response&&)> done) {
  auto version = req.version();
  bool keep_alive = req.keep_alive();
  auto reply_now = [&](const api_error& e) {
    auto res =
        api_response(version, keep_alive, e.status(), api_error_body(to_string(e.code), e.message));
    if (e.status() == 401) res.set(http::field::www_authenticate, "Bearer");
    done(std::move(res));
  };
  if (ctx.cfg.api_key.empty())
    return reply_now({errc::not_found, "server API disabled: set --api-key"});
  auto auth = req[http::field::authorization];
  if (!bearer_matches(std::string_view(auth.data(), auth.size()), ctx.cfg.api_key))
    return reply_now({errc::unauthorized, "Authorization: Bearer <api key> required"});

  auto target = std::string_view(req.target().data(), req.target().size());
  auto q = target.find('?');
  auto path = target.substr(0, q);
  auto query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
  api_route route;
  std::string allow;
  auto method = req.method_string();
  switch (match_api_route(std::string_view(method.data(), method.size()), path, route, allow)) {
    case route_result::not_found:
      return reply_now({errc::not_found, "no such endpoint"});
    case route_result::bad_method: {
      auto res =
          api_response(version, keep_alive, 405,
                       api_error_body(to_string(errc::bad_request), "use " + allow + " here"));
      res.set(http::field::allow, allow);
      return done(std::move(res));
    }
    case route_result::ok:
      break;
  }

  api_call call;
  api_error err;
  std::string_view body = req.body();
  bool ok = true;
  switch (route.op) {
    case api_op::publish:
      ok = parse_publish(body, route.room, ctx.lim, call, err);
      break;
    case api_op::dm:
      ok = parse_dm(body, ctx.lim, call, err);
      break;
    case api_op::disconnect:
      ok = parse_disconnect(body, route.user, call, err);
      break;
    case api_op::presence:
      ok = parse_room_param(route.room, false, err);
      call.op = api_op::presence;
      call.room = route.room;
      break;
    case api_op::history:
    case api_op::moderation:  // paged as history
      ok = parse_history_query(query, route.room, ctx.lim, call, err);
      call.op = route.op;
      break;
    case api_op::rooms:
      call.op = api_op::rooms;
      break;
    case api_op::room_create:
      ok = parse_room_create(body, ctx.lim, call, err);
      break;
    case api_op::room_update:
      ok = parse_room_update(body, route.room, ctx.lim, call, err);
      break;
    case api_op::room_get:
    case api_op::members:
      ok = parse_room_param(route.room, false, err);
      call.op = route.op;
      call.room = route.room;
      break;
    case api_op::member_set:
      ok = parse_member_set(body, route.room, route.user, call, err);
      break;
    case api_op::member_del:
      ok = parse_room_param(route.room, false, err);
      if (ok && !valid_user_id(route.user)) ok = bad(err, "not a user id");
      call.op = api_op::member_del;
      call.room = route.room;
      call.user = route.user;
      break;
    case api_op::edit:
      ok = parse_edit(body, route, ctx.lim, call, err);
      break;
    case api_op::del:
      ok = parse_delete(body, route, ctx.lim, call, err);
      break;
    case api_op::search:
      ok = parse_search_query(query, route.room, ctx.lim, call, err);
      break;
    case api_op::user_ban_get:
    case api_op::user_ban_set:
    case api_op::user_ban_lift:
      ok = parse_user_ban(body, route.user, route.op, call, err);
      break;
  }
  if (!ok) return reply_now(err);
  if (!ctx.api) return reply_now({errc::unavailable, "server API not started"});
  // The actor answers from a CAF thread: hop back to the session's own thread.
  // `keep` holds the context, which owns the shard that runs `ioc`.
  call.reply = [keep = ctx.shared_from_this(), &ioc, done = std::move(done), version,
                keep_alive](unsigned status, std::string body) {
    net::post(ioc, [done, res = api_response(version, keep_alive, status,
                                             std::move(body))]() mutable { done(std::move(res)); });
  };
  caf::anon_send(ctx.api, std::move(call));
}

}  // namespace chat
