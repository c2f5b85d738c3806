#include "messages/codec.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "messages/validate.hpp"

namespace chat {

using json = nlohmann::json;

namespace {

const char* type_names[] = {"hello",    "refresh", "join", "leave", "send",  "history",
                            "presence", "typing",  "dm",   "rooms", "ping",  "edit",
                            "delete",   "react",   "read", "my_rooms", "part", "search",
                            "room_set", "room",   "invite", "role", "kick", "ban",
                            "unban",    "mute",   "unmute"};

// At most `n` bytes of valid UTF-8 `s`, never cutting a character in half (the
// result goes into an error message, which must stay valid UTF-8).
std::string utf8_prefix(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

bool fail(decode_error& err, errc code, std::string message) {
  err.code = code;
  err.message = std::move(message);
  return false;
}

// Optional string field: absent is fine; present must be a string.
bool opt_string(const json& j, const char* key, std::string& out, decode_error& err) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (!it->is_string())
    return fail(err, errc::bad_request, std::string("'") + key + "' must be a string");
  out = it->get<std::string>();
  return true;
}

bool req_string(const json& j, const char* key, std::string& out, decode_error& err) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null())
    return fail(err, errc::bad_request, std::string("'") + key + "' is required");
  return opt_string(j, key, out, err);
}

bool opt_uint(const json& j, const char* key, bool& present, uint64_t& out, decode_error& err) {
  present = false;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (it->is_number_unsigned()) {
    out = it->get<uint64_t>();
  } else if (it->is_number_integer() && it->get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(it->get<int64_t>());
  } else {
    return fail(err, errc::bad_request,
                std::string("'") + key + "' must be a non-negative integer");
  }
  present = true;
  return true;
}

bool room_field(const json& j, std::string& room, decode_error& err) {
  if (!req_string(j, "room", room, err)) return false;
  if (valid_room_name(room)) return true;
  std::string a, b;
  if (parse_dm_room(room, a, b)) return true;  // access is checked by the server
  return fail(err, errc::bad_request,
              "room names are 1-64 characters of A-Z a-z 0-9 _ - . : (dm: is reserved)");
}

bool idem_field(const json& j, const limits& lim, client_req& out, decode_error& err) {
  if (!opt_string(j, "idempotency_key", out.idem_key, err)) return false;
  if (out.idem_key.size() > lim.max_idem_key)
    return fail(err, errc::too_large,
                "idempotency_key is longer than " + std::to_string(lim.max_idem_key) + " bytes");
  return true;
}

bool text_fields(const json& j, const limits& lim, client_req& out, decode_error& err) {
  if (!req_string(j, "text", out.text, err)) return false;
  size_t n = 0;
  if (!utf8_code_points(out.text, n))
    return fail(err, errc::bad_request, "text is not valid UTF-8");
  if (n == 0) return fail(err, errc::bad_request, "text is empty");
  if (n > lim.max_text_chars)
    return fail(err, errc::too_large,
                "text is longer than " + std::to_string(lim.max_text_chars) + " characters");
  auto d = j.find("data");
  if (d != j.end() && !d->is_null()) {
    if (!d->is_object()) return fail(err, errc::bad_request, "'data' must be an object");
    out.data = d->dump();
  }
  return idem_field(j, lim, out, err);
}

// `seq` of edit, delete and react: the message they change.
bool target_field(const json& j, client_req& out, decode_error& err) {
  bool present = false;
  if (!opt_uint(j, "seq", present, out.seq, err)) return false;
  if (!present || out.seq == 0)
    return fail(err, errc::bad_request, "'seq' (the message's seq, at least 1) is required");
  return true;
}

// A user id as a request may name one (mentions, invite): 1-256 bytes of
// UTF-8 without control characters. The server checks the user's own rules.
bool user_id_shape(const std::string& id) {
  return !id.empty() && id.size() <= 256 && for_each_code_point(id, [](uint32_t cp) {
    return cp >= 0x20 && !(cp >= 0x7F && cp <= 0x9F);
  });
}

// send's reply_to and mentions (protocol v2).
bool send_extras(const json& j, client_req& out, decode_error& err) {
  bool present = false;
  if (!opt_uint(j, "reply_to", present, out.reply_to, err)) return false;
  if (present && out.reply_to == 0)
    return fail(err, errc::bad_request, "'reply_to' must be a message's seq (at least 1)");
  auto m = j.find("mentions");
  if (m == j.end() || m->is_null()) return true;
  if (!m->is_array()) return fail(err, errc::bad_request, "'mentions' must be an array of user ids");
  if (m->size() > max_mentions)
    return fail(err, errc::bad_request,
                "at most " + std::to_string(max_mentions) + " users may be mentioned");
  for (auto& u : *m) {
    if (!u.is_string()) return fail(err, errc::bad_request, "'mentions' must hold user ids");
    auto& id = u.get_ref<const std::string&>();
    if (!user_id_shape(id)) return fail(err, errc::bad_request, "'mentions' holds an invalid user id");
    if (std::find(out.mentions.begin(), out.mentions.end(), id) == out.mentions.end())
      out.mentions.push_back(id);
  }
  return true;
}

bool opt_bool(const json& j, const char* key, bool& present, bool& out, decode_error& err) {
  present = false;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (!it->is_boolean()) return fail(err, errc::bad_request, std::string("'") + key + "' must be true or false");
  out = it->get<bool>();
  present = true;
  return true;
}

// An optional one-line text (topic, reason): valid UTF-8 without control
// characters, at most max_topic_chars code points.
bool one_line_field(const json& j, const char* key, bool& present, std::string& out,
                    decode_error& err) {
  present = false;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (!it->is_string()) return fail(err, errc::bad_request, std::string("'") + key + "' must be a string");
  out = it->get<std::string>();
  size_t n = 0;
  bool ok = for_each_code_point(out, [&n](uint32_t cp) {
    ++n;
    return cp >= 0x20 && cp != 0x7F;
  });
  if (!ok)
    return fail(err, errc::bad_request, std::string("'") + key + "' must be one line of valid UTF-8");
  if (n > max_topic_chars)
    return fail(err, errc::too_large, std::string("'") + key + "' is longer than " +
                                          std::to_string(max_topic_chars) + " characters");
  present = true;
  return true;
}

// room_set: at least one of topic, private, read_only, slow_mode.
bool settings_fields(const json& j, client_req& out, decode_error& err) {
  bool present = false;
  if (!one_line_field(j, "topic", present, out.settings.topic, err)) return false;
  if (present) out.set |= settings_topic;
  if (!opt_bool(j, "private", present, out.settings.private_room, err)) return false;
  if (present) out.set |= settings_private;
  if (!opt_bool(j, "read_only", present, out.settings.read_only, err)) return false;
  if (present) out.set |= settings_read_only;
  uint64_t v = 0;
  if (!opt_uint(j, "slow_mode", present, v, err)) return false;
  if (present) {
    if (v > max_slow_mode)
      return fail(err, errc::bad_request,
                  "'slow_mode' is at most " + std::to_string(max_slow_mode) + " seconds");
    out.settings.slow_mode = static_cast<uint32_t>(v);
    out.set |= settings_slow_mode;
  }
  if (out.set == 0)
    return fail(err, errc::bad_request,
                "room_set needs at least one of topic, private, read_only, slow_mode");
  return idem_field(j, limits{}, out, err);
}

// The moderation requests: `user`, and what each one takes.
bool moderation_fields(const json& j, client_req& out, decode_error& err) {
  if (!room_field(j, out.room, err) || !req_string(j, "user", out.user, err)) return false;
  if (is_dm_room(out.room)) return fail(err, errc::bad_request, "a conversation has no moderators");
  if (!user_id_shape(out.user)) return fail(err, errc::bad_request, "'user' must name a user");
  if (out.type == req_type::role) {
    std::string role;
    if (!req_string(j, "role", role, err)) return false;
    if (role == "member") out.role = member_role::member;
    else if (role == "moderator") out.role = member_role::moderator;
    else if (role == "owner") out.role = member_role::owner;
    else return fail(err, errc::bad_request, "'role' must be member, moderator or owner");
  }
  if (out.type == req_type::kick || out.type == req_type::ban || out.type == req_type::mute) {
    bool present = false;
    if (!one_line_field(j, "reason", present, out.reason, err)) return false;
  }
  if (out.type == req_type::ban || out.type == req_type::mute) {
    bool present = false;
    if (!opt_uint(j, "seconds", present, out.seconds, err)) return false;
    // At most ten years: until stays far from the end of int64 milliseconds.
    if (present && (out.seconds == 0 || out.seconds > 10ull * 366 * 24 * 3600))
      return fail(err, errc::bad_request, "'seconds' must be 1 to 316224000 (or absent: until lifted)");
  }
  return idem_field(j, limits{}, out, err);
}

}  // namespace

const char* to_string(req_type t) {
  auto i = static_cast<size_t>(t);
  return i < std::size(type_names) ? type_names[i] : "unknown";
}

bool decode_request(std::string_view text, const limits& lim, client_req& out, decode_error& err) {
  if (json_nesting_depth(text) > lim.max_depth)
    return fail(err, errc::bad_request, "JSON nested too deeply");
  // nlohmann takes a raw NUL for the end of input and would ignore what follows it;
  // a raw NUL is never valid JSON.
  if (text.find('\0') != std::string_view::npos)
    return fail(err, errc::bad_request, "malformed JSON");
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return fail(err, errc::bad_request, "malformed JSON");
  return decode_request_json(j, lim, out, err);
}

bool decode_request_json(const json& j, const limits& lim, client_req& out, decode_error& err) {
  if (!j.is_object()) return fail(err, errc::bad_request, "a request must be a JSON object");
  out = client_req{};
  auto id = j.find("id");
  if (id != j.end() && !id->is_null()) {
    if (id->is_number_integer() || (id->is_string() && id->get_ref<const std::string&>().size() <= lim.max_id)) {
      out.id = id->dump();
      err.id = out.id;
    } else {
      return fail(err, errc::bad_request, "'id' must be an integer or a short string");
    }
  }
  auto t = j.find("type");
  if (t == j.end() || !t->is_string())
    return fail(err, errc::bad_request, "'type' (string) is required");
  const auto& type = t->get_ref<const std::string&>();
  size_t idx = 0;
  for (; idx < std::size(type_names); ++idx)
    if (type == type_names[idx]) break;
  if (idx == std::size(type_names))
    return fail(err, errc::bad_request, "unknown type '" + utf8_prefix(type, 32) + "'");
  out.type = static_cast<req_type>(idx);
  bool present = false;
  uint64_t v = 0;
  switch (out.type) {
    case req_type::hello:
      return opt_string(j, "token", out.token, err) && opt_string(j, "name", out.name, err);
    case req_type::refresh:
      return req_string(j, "token", out.token, err);
    case req_type::join:
      if (!room_field(j, out.room, err) || !opt_uint(j, "since", out.has_since, out.since, err) ||
          !opt_string(j, "epoch", out.epoch, err))
        return false;
      return true;
    case req_type::leave:
    case req_type::presence:
    case req_type::typing:
      return room_field(j, out.room, err);
    case req_type::send:
      return room_field(j, out.room, err) && text_fields(j, lim, out, err) &&
             send_extras(j, out, err);
    case req_type::edit:
      return room_field(j, out.room, err) && target_field(j, out, err) &&
             text_fields(j, lim, out, err);
    case req_type::del:
      return room_field(j, out.room, err) && target_field(j, out, err) &&
             idem_field(j, lim, out, err);
    case req_type::react: {
      if (!room_field(j, out.room, err) || !target_field(j, out, err) ||
          !req_string(j, "emoji", out.emoji, err) || !idem_field(j, lim, out, err))
        return false;
      if (!valid_emoji(out.emoji))
        return fail(err, errc::bad_request,
                    "'emoji' must be 1-32 bytes of UTF-8 without spaces or control characters");
      auto on = j.find("on");
      if (on != j.end() && !on->is_null()) {
        if (!on->is_boolean()) return fail(err, errc::bad_request, "'on' must be true or false");
        out.on = on->get<bool>();
      }
      return true;
    }
    case req_type::history:
      if (!room_field(j, out.room, err) || !opt_uint(j, "before", present, out.before, err))
        return false;
      if (present && out.before == 0)
        return fail(err, errc::bad_request, "'before' must be at least 1");
      if (!opt_uint(j, "limit", present, v, err)) return false;
      if (present) {
        if (v < 1 || v > lim.max_history)
          return fail(err, errc::bad_request,
                      "'limit' must be 1-" + std::to_string(lim.max_history));
        out.limit = static_cast<uint32_t>(v);
      } else if (out.limit > lim.max_history) {
        out.limit = lim.max_history;  // the default must respect a smaller configured cap
      }
      return true;
    case req_type::dm:
      if (!req_string(j, "to", out.to, err)) return false;
      if (out.to.empty() || out.to.size() > 256)
        return fail(err, errc::bad_request, "'to' must name a user");
      return text_fields(j, lim, out, err) && send_extras(j, out, err);
    case req_type::read:
      if (!room_field(j, out.room, err) || !opt_uint(j, "seq", present, out.seq, err)) return false;
      if (!present) return fail(err, errc::bad_request, "'seq' is required");
      return true;
    case req_type::part:
    case req_type::room:
      return room_field(j, out.room, err);
    case req_type::room_set:
      if (!room_field(j, out.room, err)) return false;
      if (is_dm_room(out.room)) return fail(err, errc::bad_request, "a conversation has no settings");
      return settings_fields(j, out, err);
    case req_type::role:
    case req_type::kick:
    case req_type::ban:
    case req_type::unban:
    case req_type::mute:
    case req_type::unmute:
      return moderation_fields(j, out, err);
    case req_type::invite:
      if (!room_field(j, out.room, err) || !req_string(j, "user", out.user, err)) return false;
      if (is_dm_room(out.room)) return fail(err, errc::bad_request, "nobody is invited into a conversation");
      if (!user_id_shape(out.user)) return fail(err, errc::bad_request, "'user' must name a user");
      return true;
    case req_type::search: {
      if (!room_field(j, out.room, err) || !req_string(j, "query", out.query, err)) return false;
      size_t n = 0;
      if (!utf8_code_points(out.query, n)) return fail(err, errc::bad_request, "query is not valid UTF-8");
      if (out.query.find_first_not_of(" \t\r\n") == std::string::npos)
        return fail(err, errc::bad_request, "query is empty");
      if (out.query.size() > max_query_bytes)
        return fail(err, errc::too_large,
                    "query is longer than " + std::to_string(max_query_bytes) + " bytes");
      if (!opt_uint(j, "before", present, out.before, err)) return false;
      if (present && out.before == 0)
        return fail(err, errc::bad_request, "'before' must be at least 1");
      out.limit = std::min<uint32_t>(20, lim.max_history);
      if (!opt_uint(j, "limit", present, v, err)) return false;
      if (present) {
        if (v < 1 || v > lim.max_history)
          return fail(err, errc::bad_request,
                      "'limit' must be 1-" + std::to_string(lim.max_history));
        out.limit = static_cast<uint32_t>(v);
      }
      return true;
    }
    case req_type::rooms:
    case req_type::ping:
    case req_type::my_rooms:
      return true;
  }
  return true;
}

// --- encoders ------------------------------------------------------------------

std::string json_quote(std::string_view s) {
  // dump() escapes control characters and quotes; ensure_ascii=false keeps UTF-8 as is.
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// Appends ,"id":<raw> when the request had an id.
void put_id(std::string& out, const std::string& id) {
  if (!id.empty()) out.append(",\"id\":").append(id);
}

void put_str(std::string& out, const char* key, std::string_view v) {
  out.append(",\"").append(key).append("\":").append(json_quote(v));
}

void put_num(std::string& out, const char* key, uint64_t v) {
  out.append(",\"").append(key).append("\":").append(std::to_string(v));
}

void put_members(std::string& out, const char* key, const std::vector<member_info>& ms,
                 size_t limit = SIZE_MAX) {
  out.append(",\"").append(key).append("\":[");
  for (size_t i = 0; i < ms.size() && i < limit; ++i) {
    if (i) out.push_back(',');
    out.append("{\"user\":").append(json_quote(ms[i].user));
    out.append(",\"name\":").append(json_quote(ms[i].name)).append("}");
  }
  out.push_back(']');
}

void put_data(std::string& out, const std::string& data) {
  if (!data.empty()) out.append(",\"data\":").append(data);  // our own dump(): valid JSON
}

void put_reactions(std::string& out, const std::vector<reaction_set>& rs) {
  out.append(",\"reactions\":[");
  for (size_t i = 0; i < rs.size(); ++i) {
    if (i) out.push_back(',');
    out.append("{\"emoji\":").append(json_quote(rs[i].emoji));
    put_num(out, "count", rs[i].users.size());
    out.append(",\"users\":[");
    for (size_t k = 0; k < rs[i].users.size() && k < max_reaction_users; ++k) {
      if (k) out.push_back(',');
      out.append(json_quote(rs[i].users[k]));
    }
    out.append("]}");
  }
  out.push_back(']');
}

void put_bool(std::string& out, const char* key, bool v) {
  out.append(",\"").append(key).append(v ? "\":true" : "\":false");
}

// topic (when set), private, read_only, slow_mode.
void put_settings(std::string& out, const room_settings& s) {
  if (!s.topic.empty()) put_str(out, "topic", s.topic);
  put_bool(out, "private", s.private_room);
  put_bool(out, "read_only", s.read_only);
  put_num(out, "slow_mode", s.slow_mode);
}

std::string settings_object(const room_settings& s) {
  std::string out;
  put_settings(out, s);
  out[0] = '{';  // the leading comma
  out.push_back('}');
  return out;
}

void put_head(std::string& out, const char* type, const stored_msg& m) {
  out.append("{\"type\":\"").append(type).push_back('"');
  put_str(out, "room", m.room);
  put_num(out, "seq", m.seq);
  out.append(",\"ts\":").append(std::to_string(m.ts));
}

void append_message(std::string& out, const stored_msg& m) {
  switch (m.kind) {
    case event_kind::message:
      put_head(out, "message", m);
      put_str(out, "from", m.from);
      put_str(out, "name", m.name);
      if (m.deleted) {
        out.append(",\"deleted\":true");
      } else {
        put_str(out, "text", m.text);
        put_data(out, m.data);
      }
      if (m.reply_to) put_num(out, "reply_to", m.reply_to);
      if (!m.mentions.empty()) {
        out.append(",\"mentions\":[");
        for (size_t i = 0; i < m.mentions.size(); ++i) {
          if (i) out.push_back(',');
          out.append(json_quote(m.mentions[i]));
        }
        out.push_back(']');
      }
      if (m.edited_ts) out.append(",\"edited_ts\":").append(std::to_string(m.edited_ts));
      if (!m.reactions.empty()) put_reactions(out, m.reactions);
      break;
    case event_kind::edited:
      put_head(out, "message_edited", m);
      put_num(out, "target", m.target);
      put_str(out, "from", m.from);
      // An edit of a message deleted since has lost its text with the message.
      put_str(out, "text", m.text);
      put_data(out, m.data);
      if (m.deleted) out.append(",\"deleted\":true");
      break;
    case event_kind::deleted:
      put_head(out, "message_deleted", m);
      put_num(out, "target", m.target);
      put_str(out, "by", m.from);
      break;
    case event_kind::reaction:
      put_head(out, "reaction", m);
      put_num(out, "target", m.target);
      put_str(out, "user", m.from);
      put_str(out, "emoji", m.emoji);
      out.append(m.on ? ",\"on\":true" : ",\"on\":false");
      break;
    case event_kind::moderation:
      put_head(out, "moderation", m);
      put_str(out, "action", m.text);
      put_str(out, "by", m.from);
      // The detail is our own JSON object ({"settings":…}): its members go in as they are.
      if (m.data.size() > 2) out.append(",").append(m.data, 1, m.data.size() - 2);
      break;
  }
  out.push_back('}');
}

}  // namespace

std::string encode_welcome(const std::string& id, const std::string& user, const std::string& name,
                           const std::string& session, const std::string& node, int heartbeat) {
  std::string out = "{\"type\":\"welcome\"";
  put_id(out, id);
  put_str(out, "user", user);
  put_str(out, "name", name);
  put_str(out, "session", session);
  put_str(out, "node", node);
  put_num(out, "heartbeat", static_cast<uint64_t>(heartbeat));
  out.append(",\"protocol\":2}");
  return out;
}

std::string encode_error(const std::string& id, errc code, std::string_view message) {
  std::string out = "{\"type\":\"error\"";
  put_id(out, id);
  put_str(out, "code", to_string(code));
  put_str(out, "message", message);
  out.push_back('}');
  return out;
}

std::string encode_error(const std::string& id, std::string_view code, std::string_view message) {
  return encode_error(id, errc_from_string(code).value_or(errc::internal), message);
}

std::string encode_joined(const std::string& id, const std::string& room, uint64_t seq,
                          const std::string& epoch, size_t member_count,
                          const std::vector<member_info>& members, int recovered,
                          uint64_t first_seq) {
  std::string out = "{\"type\":\"joined\"";
  put_id(out, id);
  put_str(out, "room", room);
  put_num(out, "seq", seq);
  put_str(out, "epoch", epoch);
  put_num(out, "member_count", member_count);
  put_members(out, "members", members);
  if (recovered >= 0) out.append(recovered ? ",\"recovered\":true" : ",\"recovered\":false");
  put_num(out, "first_seq", first_seq);
  out.push_back('}');
  return out;
}

std::string encode(const read_msg& m) {
  std::string out = "{\"type\":\"read\"";
  put_id(out, m.req_id);
  put_str(out, "room", m.room);
  put_num(out, "seq", m.seq);
  out.push_back('}');
  return out;
}

std::string encode(const my_rooms_msg& m) {
  std::string out = "{\"type\":\"my_rooms\"";
  put_id(out, m.req_id);
  out.append(",\"rooms\":[");
  for (size_t i = 0; i < m.rooms.size(); ++i) {
    auto& r = m.rooms[i];
    out.append(i ? ",{" : "{");
    out.append("\"room\":").append(json_quote(r.room));
    put_str(out, "role", to_string(r.role));
    put_num(out, "last_seq", r.last_seq);
    put_num(out, "read_seq", r.read_seq);
    put_num(out, "unread", std::min(r.unread, max_unread));
    if (!r.topic.empty()) put_str(out, "topic", r.topic);
    put_bool(out, "private", r.private_room);
    out.push_back('}');
  }
  out.append("]}");
  return out;
}

std::string encode_left(const std::string& id, const std::string& room) {
  std::string out = "{\"type\":\"left\"";
  put_id(out, id);
  put_str(out, "room", room);
  out.push_back('}');
  return out;
}

std::string encode_ack(const std::string& id, const std::string& room, uint64_t seq, int64_t ts) {
  std::string out = "{\"type\":\"ack\"";
  put_id(out, id);
  put_str(out, "room", room);
  put_num(out, "seq", seq);
  out.append(",\"ts\":").append(std::to_string(ts));
  out.push_back('}');
  return out;
}

std::string encode_noop_ack(const std::string& id, const std::string& room) {
  std::string out = "{\"type\":\"ack\"";
  put_id(out, id);
  put_str(out, "room", room);
  out.append(",\"noop\":true}");
  return out;
}

std::string encode_invited(const std::string& room, const std::string& by) {
  std::string out = "{\"type\":\"invited\"";
  put_str(out, "room", room);
  put_str(out, "by", by);
  out.push_back('}');
  return out;
}

std::string encode_moderation_detail(const std::string& user, int64_t until,
                                     const std::string& reason, const char* role) {
  std::string out = "{\"user\":" + json_quote(user);
  if (until > 0 && until != restriction::forever)
    out.append(",\"until\":").append(std::to_string(until));
  if (!reason.empty()) put_str(out, "reason", reason);
  if (role) put_str(out, "role", role);
  out.push_back('}');
  return out;
}

std::string encode_kicked(const std::string& room, const std::string& by,
                          const std::string& reason, bool ban, int64_t until) {
  std::string out = "{\"type\":\"kicked\"";
  put_str(out, "room", room);
  put_str(out, "by", by);
  if (!reason.empty()) put_str(out, "reason", reason);
  if (ban) out.append(",\"ban\":true");
  if (ban && until > 0 && until != restriction::forever)
    out.append(",\"until\":").append(std::to_string(until));
  out.push_back('}');
  return out;
}

std::string encode_settings_detail(const room_settings& s) {
  return "{\"settings\":" + settings_object(s) + "}";
}

std::string encode(const room_info& m) {
  std::string out = "{\"type\":\"room\"";
  put_id(out, m.req_id);
  put_str(out, "room", m.room);
  put_settings(out, m.settings);
  put_num(out, "last_seq", m.last_seq);
  put_num(out, "member_count", m.member_count);
  out.push_back('}');
  return out;
}

std::string encode_mention(const std::string& room, uint64_t seq, const std::string& from) {
  std::string out = "{\"type\":\"mention\"";
  put_str(out, "room", room);
  put_num(out, "seq", seq);
  put_str(out, "from", from);
  out.push_back('}');
  return out;
}

std::string encode_message(const stored_msg& m) {
  std::string out;
  out.reserve(128 + m.text.size() + m.data.size());
  append_message(out, m);
  return out;
}

std::string encode_history(const std::string& id, const std::string& room,
                           const std::vector<stored_msg>& msgs, bool more, uint64_t first_seq) {
  std::string out = "{\"type\":\"history\"";
  put_id(out, id);
  put_str(out, "room", room);
  out.append(",\"messages\":[");
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (i) out.push_back(',');
    append_message(out, msgs[i]);
  }
  out.append(more ? "],\"more\":true" : "],\"more\":false");
  put_num(out, "first_seq", first_seq);
  out.push_back('}');
  return out;
}

std::string encode_presence(const std::string& id, const std::string& room,
                            const std::vector<member_info>& members) {
  std::string out = "{\"type\":\"presence\"";
  put_id(out, id);
  put_str(out, "room", room);
  put_members(out, "members", members);
  out.push_back('}');
  return out;
}

std::string encode_typing(const std::string& room, const std::string& user,
                          const std::string& name) {
  std::string out = "{\"type\":\"typing\"";
  put_str(out, "room", room);
  put_str(out, "user", user);
  put_str(out, "name", name);
  out.push_back('}');
  return out;
}

std::string encode_rooms(const std::string& id, const std::vector<std::string>& rooms) {
  std::string out = "{\"type\":\"rooms\"";
  put_id(out, id);
  out.append(",\"rooms\":[");
  for (size_t i = 0; i < rooms.size(); ++i) {
    if (i) out.push_back(',');
    out.append(json_quote(rooms[i]));
  }
  out.append("]}");
  return out;
}

std::string encode_pong(const std::string& id) {
  std::string out = "{\"type\":\"pong\"";
  put_id(out, id);
  out.push_back('}');
  return out;
}

std::string encode_member_event(std::string_view type, const std::string& room,
                                const member_info& who) {
  std::string out = "{\"type\":";
  out.append(json_quote(type));
  put_str(out, "room", room);
  put_str(out, "user", who.user);
  put_str(out, "name", who.name);
  out.push_back('}');
  return out;
}

std::string encode_presence_diff(const std::string& room, const std::vector<member_info>& joins,
                                 const std::vector<member_info>& leaves, size_t listed,
                                 size_t member_count) {
  std::string out = "{\"type\":\"presence_diff\"";
  put_str(out, "room", room);
  put_members(out, "joins", joins, listed);
  put_members(out, "leaves", leaves, listed);
  if (joins.size() > listed || leaves.size() > listed) {
    put_num(out, "joins_count", joins.size());
    put_num(out, "leaves_count", leaves.size());
    put_num(out, "member_count", member_count);
    out.append(",\"truncated\":true");
  }
  out.push_back('}');
  return out;
}

// --- replies ---------------------------------------------------------------------

std::string encode(const ack_msg& m) {
  if (m.noop) return encode_noop_ack(m.req_id, m.room);
  if (m.seq == 0) {  // stored no event (invite)
    std::string out = "{\"type\":\"ack\"";
    put_id(out, m.req_id);
    put_str(out, "room", m.room);
    out.push_back('}');
    return out;
  }
  return encode_ack(m.req_id, m.room, m.seq, m.ts);
}

std::string encode(const error_msg& m) {
  std::string out = "{\"type\":\"error\"";
  put_id(out, m.req_id);
  put_str(out, "code", to_string(m.code));
  if (!m.room.empty()) put_str(out, "room", m.room);
  put_str(out, "message", m.message);
  if (m.retry_ms > 0) put_num(out, "retry_ms", static_cast<uint64_t>(m.retry_ms));
  out.push_back('}');
  return out;
}

std::string encode(const left_msg& m) {
  if (!m.parted) return encode_left(m.req_id, m.room);
  std::string out = "{\"type\":\"parted\"";
  put_id(out, m.req_id);
  put_str(out, "room", m.room);
  out.push_back('}');
  return out;
}

std::string encode(const history_page& m) {
  if (!m.search) return encode_history(m.req_id, m.room, m.msgs, m.more, m.first_seq);
  std::string out = "{\"type\":\"search\"";
  put_id(out, m.req_id);
  put_str(out, "room", m.room);
  out.append(",\"messages\":[");
  for (size_t i = 0; i < m.msgs.size(); ++i) {
    if (i) out.push_back(',');
    append_message(out, m.msgs[i]);
  }
  out.append(m.more ? "],\"more\":true}" : "],\"more\":false}");
  return out;
}

std::string encode(const presence_list& m) { return encode_presence(m.req_id, m.room, m.members); }

std::string encode(const joined_info& m) {
  auto out = encode_joined(m.req_id, m.room, m.seq, m.epoch, m.member_count, m.members,
                           m.recovered, m.first_seq);
  if (m.member) {
    out.pop_back();
    put_num(out, "read_seq", m.read_seq);
    put_num(out, "unread", std::min(m.unread, max_unread));
    put_str(out, "role", to_string(m.role));
    out.push_back('}');
  }
  if (!is_dm_room(m.room)) {
    out.pop_back();
    out.append(",\"settings\":").append(settings_object(m.settings)).push_back('}');
  }
  return out;
}

namespace {

// Our own encoder put `"type":"<t>",` right after the brace (no id: req_id is empty).
template <class Reply>
std::string without_type(Reply m, std::string_view type) {
  m.req_id.clear();
  auto out = encode(m);
  size_t n = std::string_view("\"type\":\"\",").size() + type.size();
  out.erase(1, n);
  return out;
}

}  // namespace

std::string encode_body(const history_page& m) {
  return without_type(m, m.search ? "search" : "history");
}
std::string encode_body(const presence_list& m) { return without_type(m, "presence"); }
std::string encode_body(const ack_msg& m) { return without_type(m, "ack"); }
std::string encode_body(const room_info& m) { return without_type(m, "room"); }

}  // namespace chat
