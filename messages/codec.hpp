#pragma once
// The JSON codec of every protocol frame: pure functions, strict validation.
// Encoders return one JSON object as text (never a raw newline in it).
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "messages/errors.hpp"
#include "messages/model.hpp"

namespace chat {

struct limits {
  size_t max_text_chars = 4096;  // Unicode code points
  size_t max_idem_key = 128;     // bytes
  size_t max_id = 128;           // bytes of a string id
  size_t max_depth = 32;         // nesting of a client object, `data` included
  uint32_t max_history = 100;
};

// Protocol v2 adds edit, del ("delete") and react.
enum class req_type {
  hello, refresh, join, leave, send, history, presence, typing, dm, rooms, ping,
  edit, del, react, read, my_rooms, part, search, room_set, room, invite,
  role, kick, ban, unban, mute, unmute,
};

// The request's "type" as the client wrote it ("delete" for del).
const char* to_string(req_type t);

// A search query: at most this many bytes.
inline constexpr size_t max_query_bytes = 512;

// At most this many user ids in a send's `mentions`.
inline constexpr size_t max_mentions = 50;

struct client_req {
  req_type type = req_type::ping;
  std::string id;  // the request id as JSON text, "" when absent
  std::string token;
  std::string name;
  std::string room;
  bool has_since = false;
  uint64_t since = 0;
  std::string epoch;
  std::string text;
  std::string data;  // JSON text of the `data` object, "" when absent
  std::string idem_key;
  uint64_t before = 0;  // 0 = none
  uint32_t limit = 50;
  std::string to;
  uint64_t seq = 0;                   // edit, delete, react: the target message
  uint64_t reply_to = 0;              // send: 0 = none
  std::vector<std::string> mentions;  // send: distinct user ids, in the order given
  std::string emoji;                  // react
  bool on = true;                     // react: false removes
  std::string query;                  // search
  std::string user;                   // invite and the moderation requests: who
  std::string reason;                 // kick, ban, mute
  uint64_t seconds = 0;               // ban, mute: 0 = until lifted
  member_role role = member_role::member;  // role
  room_settings settings;             // room_set: the fields in `set`
  uint8_t set = 0;                    // settings_* bits (messages/model.hpp)
};

struct decode_error {
  errc code = errc::bad_request;
  std::string message;
  std::string id;  // request id if it could be read
};

// Decodes one client object. On failure fills `err` and returns false.
bool decode_request(std::string_view text, const limits& lim, client_req& out, decode_error& err);
// The same for an object already parsed (the server API's bodies), whose depth
// the caller has checked.
bool decode_request_json(const nlohmann::json& j, const limits& lim, client_req& out,
                    decode_error& err);

// Splits a frame on '\n' into its objects (blank pieces skipped) and calls
// f(piece) for each. When f returns bool, false stops the walk (a client that
// gave up on the connection skips the rest of the frame).
template <class F>
void split_frame(std::string_view frame, F&& f) {
  size_t start = 0;
  while (start <= frame.size()) {
    size_t nl = frame.find('\n', start);
    if (nl == std::string_view::npos) nl = frame.size();
    auto piece = frame.substr(start, nl - start);
    if (piece.find_first_not_of(" \t\r") != std::string_view::npos) {
      if constexpr (std::is_same_v<std::invoke_result_t<F&, std::string_view>, bool>) {
        if (!f(piece)) return;
      } else {
        f(piece);
      }
    }
    start = nl + 1;
  }
}

// --- encoders -------------------------------------------------------------------
std::string encode_welcome(const std::string& id, const std::string& user, const std::string& name,
                           const std::string& session, const std::string& node, int heartbeat);
std::string encode_error(const std::string& id, errc code, std::string_view message);
// Transitional, for callers that still hold the code as text (room.cpp,
// websocket_session.cpp): maps it through errc_from_string (unknown: internal).
// Goes when they pass errc.
std::string encode_error(const std::string& id, std::string_view code, std::string_view message);
// recovered: -1 = not a recovery join, 0 = false, 1 = true
std::string encode_joined(const std::string& id, const std::string& room, uint64_t seq,
                          const std::string& epoch, size_t member_count,
                          const std::vector<member_info>& members, int recovered,
                          uint64_t first_seq);
std::string encode_left(const std::string& id, const std::string& room);
std::string encode_ack(const std::string& id, const std::string& room, uint64_t seq, int64_t ts);
// A react that changed nothing: {"type":"ack","id":…,"room":…,"noop":true}.
std::string encode_noop_ack(const std::string& id, const std::string& room);
// Every stored event kind: message (with its current state when it has one:
// edited_ts, deleted, reactions), message_edited, message_deleted, reaction.
// Reactions list at most `max_reaction_users` users each (count is exact).
inline constexpr size_t max_reaction_users = 20;
std::string encode_message(const stored_msg& m);
std::string encode_history(const std::string& id, const std::string& room,
                           const std::vector<stored_msg>& msgs, bool more, uint64_t first_seq);
std::string encode_presence(const std::string& id, const std::string& room,
                            const std::vector<member_info>& members);
std::string encode_typing(const std::string& room, const std::string& user,
                          const std::string& name);
std::string encode_rooms(const std::string& id, const std::vector<std::string>& rooms);
std::string encode_pong(const std::string& id);
// To every connection of a user named in a message's `mentions`.
std::string encode_mention(const std::string& room, uint64_t seq, const std::string& from);
// To every connection of a user invited into a room.
std::string encode_invited(const std::string& room, const std::string& by);
// A moderation event's detail (stored as its `data`): {"settings":{…}}.
std::string encode_settings_detail(const room_settings& s);
// The detail of role, kick, ban, unban, mute, unmute: {"user","until"?,"reason"?,"role"?}
// (until 0: none; restriction::forever: none either, the action holds until lifted).
std::string encode_moderation_detail(const std::string& user, int64_t until,
                                     const std::string& reason, const char* role);
// To every connection of a user kicked (or banned) from a room.
std::string encode_kicked(const std::string& room, const std::string& by,
                          const std::string& reason, bool ban, int64_t until);
// type: "member_joined" or "member_left"
std::string encode_member_event(std::string_view type, const std::string& room,
                                const member_info& who);
// Lists at most `listed` joins and leaves: a mass join of a 10,000-member room
// would otherwise send every member the whole list (members^2 bytes). When cut,
// it adds the totals, the room's member_count and "truncated":true.
std::string encode_presence_diff(const std::string& room, const std::vector<member_info>& joins,
                                 const std::vector<member_info>& leaves,
                                 size_t listed = SIZE_MAX, size_t member_count = 0);

// --- replies (messages/model.hpp) ------------------------------------------------
std::string encode(const ack_msg& m);
std::string encode(const error_msg& m);
std::string encode(const left_msg& m);
std::string encode(const history_page& m);
std::string encode(const presence_list& m);
std::string encode(const joined_info& m);
std::string encode(const read_msg& m);
std::string encode(const my_rooms_msg& m);
std::string encode(const room_info& m);
// The server API's body for a reply: the same object without "type" and "id".
std::string encode_body(const history_page& m);
std::string encode_body(const presence_list& m);
std::string encode_body(const ack_msg& m);
std::string encode_body(const room_info& m);

// A JSON string literal (quotes included), UTF-8 kept byte for byte.
std::string json_quote(std::string_view s);

}  // namespace chat
