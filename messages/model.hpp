#pragma once
// Plain data of the protocol, shared by the codec (no CAF) and the actor
// messages (messages/types.hpp adds their `inspect` functions).
#include <cstdint>
#include <string>
#include <vector>

#include "messages/errors.hpp"

namespace chat {

struct member_info {
  std::string user;
  std::string name;
};
inline bool operator==(const member_info& a, const member_info& b) {
  return a.user == b.user && a.name == b.name;
}

// What a stored event is. A room's seq numbers events: a `message` and every
// change to one (protocol v2) take the next seq of the room.
enum class event_kind : uint8_t {
  message = 0,     // send, dm
  edited = 1,      // edit: text/data replace the target's
  deleted = 2,     // delete: the target's text and data are removed
  reaction = 3,    // react: `emoji` added (on) or removed by `from` on the target
  moderation = 4,  // part 2 (room settings, kicks, bans)
};

// The users who reacted with one emoji, in the order they did (all of them;
// encoders list at most 20).
struct reaction_set {
  std::string emoji;
  std::vector<std::string> users;
};
inline bool operator==(const reaction_set& a, const reaction_set& b) {
  return a.emoji == b.emoji && a.users == b.users;
}

// An event as stored: `data` is JSON text ("" when absent). For a change
// event `from` is who made it (the editor, the deleter: `by`, the reacting
// user). A `message` read back from the store, or held in a room's window,
// carries its current state: edits applied (`edited_ts`), `deleted` with text
// and data gone, and its reactions.
struct stored_msg {
  std::string room;
  uint64_t seq = 0;
  int64_t ts = 0;  // milliseconds since the epoch
  std::string from;
  std::string name;
  std::string text;
  std::string data;
  std::string idem_key;
  event_kind kind = event_kind::message;
  uint64_t target = 0;                // edited, deleted, reaction: the message's seq
  uint64_t reply_to = 0;              // message: the seq it answers (0: none)
  // `{}`: tests and callers aggregate-initialise the first fields only.
  std::vector<std::string> mentions{};  // message: mentioned user ids
  std::string emoji{};                  // reaction
  bool on = false;                    // reaction: true added, false removed
  // Current state (message; an edited event of a deleted message is deleted too).
  int64_t edited_ts = 0;  // ts of the last edit, 0 = never edited
  bool deleted = false;
  std::vector<reaction_set> reactions{};  // in the order each emoji first appeared
};
inline bool operator==(const stored_msg& a, const stored_msg& b) {
  return a.room == b.room && a.seq == b.seq && a.ts == b.ts && a.from == b.from &&
         a.name == b.name && a.text == b.text && a.data == b.data && a.idem_key == b.idem_key &&
         a.kind == b.kind && a.target == b.target && a.reply_to == b.reply_to &&
         a.mentions == b.mentions && a.emoji == b.emoji && a.on == b.on &&
         a.edited_ts == b.edited_ts && a.deleted == b.deleted && a.reactions == b.reactions;
}

// Applies a committed change event to the message it targets (the current
// state every store and every room window keeps). Pure, shared by all
// backends so that they cannot disagree. Returns false when `change` does
// not change `msg` (a reaction already there, or not there to remove).
bool apply_change(stored_msg& msg, const stored_msg& change);

// How both stores keep `mentions` in one column: user ids never hold a
// control character, so they are joined by newlines.
std::string join_lines(const std::vector<std::string>& v);
std::vector<std::string> split_lines(const std::string& s);

// The reactions of a message made by one user with one emoji.
bool has_reaction(const stored_msg& msg, const std::string& emoji, const std::string& user);

// A user's standing in a room (protocol v2 memberships). Lives with the
// room's home: the room actor holds all of its memberships and stores them.
enum class member_role : uint8_t { member = 0, moderator = 1, owner = 2 };
constexpr const char* to_string(member_role r) {
  return r == member_role::owner ? "owner" : r == member_role::moderator ? "moderator" : "member";
}

struct membership {
  std::string user;
  member_role role = member_role::member;
  uint64_t read_seq = 0;  // never moves back
};
inline bool operator==(const membership& a, const membership& b) {
  return a.user == b.user && a.role == b.role && a.read_seq == b.read_seq;
}

// A room's settings (protocol v2 `room_set`): stored with the room, changed
// only by a `moderation` event with action "settings" (in seq order).
struct room_settings {
  std::string topic;          // "" = none; at most max_topic_chars code points
  bool private_room = false;  // only members join, read, search, see presence
  bool read_only = false;     // only the owner and moderators send
  uint32_t slow_mode = 0;     // seconds between two messages of a member, 0 = off
};
inline bool operator==(const room_settings& a, const room_settings& b) {
  return a.topic == b.topic && a.private_room == b.private_room && a.read_only == b.read_only &&
         a.slow_mode == b.slow_mode;
}
inline constexpr size_t max_topic_chars = 512;
// Which settings a room_set changes.
inline constexpr uint8_t settings_topic = 1, settings_private = 2, settings_read_only = 4,
                         settings_slow_mode = 8;
inline constexpr uint32_t max_slow_mode = 24 * 3600;

// A user's ban or mute in a room (protocol v2 moderation), in ms since the
// epoch: 0 = none, forever = until lifted. Lives with the room's home, stored
// with the moderation event that sets it.
struct restriction {
  std::string user;
  int64_t ban_until = 0;
  int64_t mute_until = 0;
  static constexpr int64_t forever = INT64_MAX;
  bool banned(int64_t now) const { return ban_until > now; }
  bool muted(int64_t now) const { return mute_until > now; }
};
inline bool operator==(const restriction& a, const restriction& b) {
  return a.user == b.user && a.ban_until == b.ban_until && a.mute_until == b.mute_until;
}

// A server-wide ban (server API: POST /api/users/{user}/ban): the user's
// connections close with 4003 and `hello` is refused until `until` (ms since
// the epoch; forever = until lifted). Every node holds every ban.
struct user_ban {
  std::string user;
  int64_t until = 0;
  std::string reason;
  bool lift = false;  // this message lifts the ban (DELETE /api/users/{user}/ban)
  static constexpr int64_t forever = INT64_MAX;
  bool active(int64_t now) const { return !lift && until > now; }
};
inline bool operator==(const user_ban& a, const user_ban& b) {
  return a.user == b.user && a.until == b.until && a.reason == b.reason && a.lift == b.lift;
}

// One row of `my_rooms`.
struct user_room {
  std::string room;
  member_role role = member_role::member;
  uint64_t last_seq = 0;
  uint64_t read_seq = 0;
  uint64_t unread = 0;  // messages of others after read_seq, not deleted, at most max_unread
  std::string topic{};
  bool private_room = false;
};

// A larger unread count is reported as this.
inline constexpr uint64_t max_unread = 10000;

// --- replies to one connection's request -----------------------------------------
// Rooms, the directory and registries answer with these structs; the gateway
// encodes them on its I/O thread (messages/codec.hpp `encode`), the server API
// reads them directly. `conn` routes a reply to its session on a gateway;
// `req_id` is the client's request id as JSON text ("" when it sent none).

struct ack_msg {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
  uint64_t seq = 0;
  int64_t ts = 0;
  bool noop = false;  // react that changed nothing: no seq, no ts
  // seq 0 without noop: an ack that stored no event (invite).
};

struct error_msg {
  uint64_t conn = 0;
  std::string req_id;
  errc code = errc::internal;
  std::string message;
  std::string room;  // set when the error is about a room the client is in (room lost)
  int64_t retry_ms = 0;  // rate_limited by a room's slow mode: when the next send may go
  bool join = false;     // a refused join of `room`: the connection stops waiting for it
};

struct left_msg {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
  // `part` (protocol v2): the user's membership ended, "parted"; without a
  // req_id it tells another connection of the user that it no longer receives the room.
  bool parted = false;
  // Kicked or banned: the connection stops receiving the room without a
  // frame of its own (the user's connections got `kicked` through their registry).
  bool silent = false;
};

// The answer to `read`, and (no req_id) what the user's other connections hear.
struct read_msg {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
  uint64_t seq = 0;
};

// The answer to `my_rooms` from one node (a cluster merges every node's).
struct my_rooms_msg {
  uint64_t conn = 0;
  std::string req_id;
  std::vector<user_room> rooms;
};

// The answer to `room` (protocol v2): the room's settings.
struct room_info {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
  room_settings settings;
  uint64_t last_seq = 0;
  uint64_t member_count = 0;  // memberships (not connections)
  std::vector<membership> members{};  // when asked for (server API)
};

struct history_page {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
  std::vector<stored_msg> msgs;  // oldest first
  bool more = false;             // older messages exist before msgs.front()
  uint64_t first_seq = 1;
  bool exists = true;            // the room has (or had) messages or members
  bool search = false;           // a `search` reply: msgs newest first, no first_seq
};

struct presence_list {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
  std::vector<member_info> members;
  bool exists = true;  // the room has (or had) messages or members
};

// What `joined` tells the client.
struct joined_info {
  std::string req_id;
  std::string room;
  uint64_t seq = 0;  // the room's last seq
  std::string epoch;
  uint64_t member_count = 0;
  std::vector<member_info> members;  // the first of them
  int8_t recovered = -1;            // -1: not a recovery join, 0: false, 1: true
  uint64_t first_seq = 1;
  bool member = false;  // protocol v2: the user's membership (not for dm rooms)
  member_role role = member_role::member;
  uint64_t read_seq = 0;
  uint64_t unread = 0;
  room_settings settings{};  // not for dm rooms
};

}  // namespace chat
