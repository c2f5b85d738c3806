#pragma once
// Every message that crosses an actor boundary, and every atom, lives here.
// Each struct has an `inspect` so that the same code runs when a room actor
// lives on another node (CAF remoting serializes these). Register every type
// with `register_message_types` on every node.
#include <cstdint>
#include <string>
#include <vector>

#include "caf/all.hpp"
#include "messages/model.hpp"

namespace chat {

// --- atoms (at most 10 characters) ------------------------------------------
using flush_now_atom = caf::atom_constant<caf::atom("flush_now")>;
using idle_chk_atom = caf::atom_constant<caf::atom("idle_chk")>;
using presence_tick_atom = caf::atom_constant<caf::atom("pres_tick")>;
using stop_room_atom = caf::atom_constant<caf::atom("stop_room")>;
using load_atom = caf::atom_constant<caf::atom("load")>;
using append_atom = caf::atom_constant<caf::atom("append")>;
using range_atom = caf::atom_constant<caf::atom("range")>;
using trim_atom = caf::atom_constant<caf::atom("trim")>;
using rooms_atom = caf::atom_constant<caf::atom("rooms")>;
using dial_atom = caf::atom_constant<caf::atom("dial")>;
using claim_atom = caf::atom_constant<caf::atom("claim")>;
using health_atom = caf::atom_constant<caf::atom("health")>;
using commit_atom = caf::atom_constant<caf::atom("commit")>;
using exists_atom = caf::atom_constant<caf::atom("exists")>;
using claims_atom = caf::atom_constant<caf::atom("claims")>;
using lost_atom = caf::atom_constant<caf::atom("lost")>;
using claim_chk_atom = caf::atom_constant<caf::atom("claim_chk")>;
using event_atom = caf::atom_constant<caf::atom("event")>;
using my_rooms_atom = caf::atom_constant<caf::atom("my_rooms")>;
using unread_atom = caf::atom_constant<caf::atom("unread")>;
using search_atom = caf::atom_constant<caf::atom("search")>;
using index_atom = caf::atom_constant<caf::atom("index")>;
using bans_atom = caf::atom_constant<caf::atom("bans")>;
constexpr auto flush_now_atom_v = flush_now_atom::value;
constexpr auto idle_chk_atom_v = idle_chk_atom::value;
constexpr auto presence_tick_atom_v = presence_tick_atom::value;
constexpr auto stop_room_atom_v = stop_room_atom::value;
constexpr auto load_atom_v = load_atom::value;
constexpr auto append_atom_v = append_atom::value;
constexpr auto range_atom_v = range_atom::value;
constexpr auto trim_atom_v = trim_atom::value;
constexpr auto rooms_atom_v = rooms_atom::value;
constexpr auto dial_atom_v = dial_atom::value;
constexpr auto claim_atom_v = claim_atom::value;
constexpr auto health_atom_v = health_atom::value;
constexpr auto commit_atom_v = commit_atom::value;

// --- store errors --------------------------------------------------------------
// What the store actor answers a failed request with, so that a room can tell
// "another node claimed this room" (stop sequencing it) from "try again".
enum class store_errc : uint8_t {
  failed = 1,  // the store could not do it (database down, bad batch): retry
  fenced = 2,  // the room's term moved on: this node no longer owns the room
};
const char* to_string(store_errc x);
constexpr auto store_error_category = caf::atom("store");
// Found by ADL: `caf::error e = store_errc::fenced;` and `e == store_errc::fenced` work.
caf::error make_error(store_errc x, std::string what = {});
constexpr auto exists_atom_v = exists_atom::value;
constexpr auto claims_atom_v = claims_atom::value;
constexpr auto lost_atom_v = lost_atom::value;
constexpr auto claim_chk_atom_v = claim_chk_atom::value;
constexpr auto event_atom_v = event_atom::value;
constexpr auto my_rooms_atom_v = my_rooms_atom::value;
constexpr auto unread_atom_v = unread_atom::value;
constexpr auto search_atom_v = search_atom::value;
constexpr auto index_atom_v = index_atom::value;
constexpr auto bans_atom_v = bans_atom::value;

// --- shared values -----------------------------------------------------------

// member_info and stored_msg: messages/model.hpp.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, member_info& x) {
  return f(caf::meta::type_name("member_info"), x.user, x.name);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, reaction_set& x) {
  return f(caf::meta::type_name("reaction_set"), x.emoji, x.users);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stored_msg& x) {
  return f(caf::meta::type_name("stored_msg"), x.room, x.seq, x.ts, x.from, x.name, x.text,
           x.data, x.idem_key, x.kind, x.target, x.reply_to, x.mentions, x.emoji, x.on,
           x.edited_ts, x.deleted, x.reactions);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, membership& x) {
  return f(caf::meta::type_name("membership"), x.user, x.role, x.read_seq);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, restriction& x) {
  return f(caf::meta::type_name("restriction"), x.user, x.ban_until, x.mute_until);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_ban& x) {
  return f(caf::meta::type_name("user_ban"), x.user, x.until, x.reason, x.lift);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, room_settings& x) {
  return f(caf::meta::type_name("room_settings"), x.topic, x.private_room, x.read_only,
           x.slow_mode);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_room& x) {
  return f(caf::meta::type_name("user_room"), x.room, x.role, x.last_seq, x.read_seq, x.unread,
           x.topic, x.private_room);
}
// What a room needs from the store when it starts.
struct room_snapshot {
  std::string epoch;
  uint64_t last_seq = 0;
  uint64_t first_seq = 1;             // oldest seq still stored (last_seq + 1 when empty)
  std::vector<stored_msg> recent;     // newest messages, oldest first
  std::vector<stored_msg> idem;       // messages with an idempotency key in the window
  uint64_t term = 0;                  // the room's fencing term (0: never claimed)
  std::string owner;                  // the node that claimed it last ("" if never)
  std::vector<membership> members;    // every membership of the room
  room_settings settings;
  std::vector<restriction> restrictions;  // bans and mutes of the room
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, room_snapshot& x) {
  return f(caf::meta::type_name("room_snapshot"), x.epoch, x.last_seq, x.first_seq, x.recent,
           x.idem, x.term, x.owner, x.members, x.settings, x.restrictions);
}

// --- room / registry -> gateway ----------------------------------------------
// The replies (ack_msg, error_msg, left_msg, history_page, presence_list) are
// plain structs in messages/model.hpp; their `inspect` functions are here.

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ack_msg& x) {
  return f(caf::meta::type_name("ack_msg"), x.conn, x.req_id, x.room, x.seq, x.ts, x.noop);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, room_info& x) {
  return f(caf::meta::type_name("room_info"), x.conn, x.req_id, x.room, x.settings, x.last_seq,
           x.member_count, x.members);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, error_msg& x) {
  return f(caf::meta::type_name("error_msg"), x.conn, x.req_id, x.code, x.message, x.room,
           x.retry_ms, x.join);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, left_msg& x) {
  return f(caf::meta::type_name("left_msg"), x.conn, x.req_id, x.room, x.parted, x.silent);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, read_msg& x) {
  return f(caf::meta::type_name("read_msg"), x.conn, x.req_id, x.room, x.seq);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, my_rooms_msg& x) {
  return f(caf::meta::type_name("my_rooms_msg"), x.conn, x.req_id, x.rooms);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, history_page& x) {
  return f(caf::meta::type_name("history_page"), x.conn, x.req_id, x.room, x.msgs, x.more,
           x.first_seq, x.exists, x.search);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, presence_list& x) {
  return f(caf::meta::type_name("presence_list"), x.conn, x.req_id, x.room, x.members, x.exists);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, joined_info& x) {
  return f(caf::meta::type_name("joined_info"), x.req_id, x.room, x.seq, x.epoch, x.member_count,
           x.members, x.recovered, x.first_seq, x.member, x.role, x.read_seq, x.unread,
           x.settings);
}

// Join accepted: the connection becomes a member; the `recovered` messages, then
// `joined`, go out before anything the room broadcasts afterwards.
struct joined_msg {
  uint64_t conn = 0;
  std::string room;
  caf::actor room_actor;
  std::vector<stored_msg> recovered;
  joined_info info;
  bool member = true;  // false for a dm room: its messages arrive as user deliveries
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, joined_msg& x) {
  return f(caf::meta::type_name("joined_msg"), x.conn, x.room, x.room_actor, x.recovered, x.info,
           x.member);
}

// One broadcast for every local member of `room`: one CAF message per gateway.
// `skip_user` (typing) is not sent to that user's connections. `seq` is 0 for
// events that are not stored messages.
struct deliver {
  std::string room;
  uint64_t seq = 0;
  std::string frame;
  std::string skip_user;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, deliver& x) {
  return f(caf::meta::type_name("deliver"), x.room, x.seq, x.frame, x.skip_user);
}

// A stored message for chosen connections (direct messages).
struct conns_deliver {
  std::vector<uint64_t> conns;
  std::string room;
  uint64_t seq = 0;
  std::string frame;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, conns_deliver& x) {
  return f(caf::meta::type_name("conns_deliver"), x.conns, x.room, x.seq, x.frame);
}

struct close_conn {
  uint64_t conn = 0;
  uint16_t code = 1000;
  std::string reason;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, close_conn& x) {
  return f(caf::meta::type_name("close_conn"), x.conn, x.code, x.reason);
}

// The gateway actor of one I/O thread: everything rooms and registries send to
// connections. A fixed set, so a typed interface: a room cannot send it
// anything it would not handle.
using gateway_actor =
    caf::typed_actor<caf::reacts_to<ack_msg>, caf::reacts_to<error_msg>, caf::reacts_to<left_msg>,
                     caf::reacts_to<history_page>, caf::reacts_to<presence_list>,
                     caf::reacts_to<joined_msg>, caf::reacts_to<deliver>,
                     caf::reacts_to<conns_deliver>, caf::reacts_to<close_conn>,
                     caf::reacts_to<read_msg>, caf::reacts_to<my_rooms_msg>,
                     caf::reacts_to<room_info>>;

// One WebSocket connection: the gateway actor that owns it and its id there.
// Only handles cross the gateway<->room edge, never pointers to sessions.
struct conn_ref {
  gateway_actor gateway;
  uint64_t id = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, conn_ref& x) {
  return f(caf::meta::type_name("conn_ref"), x.gateway, x.id);
}
inline bool operator==(const conn_ref& a, const conn_ref& b) {
  return a.gateway == b.gateway && a.id == b.id;
}

// --- gateway -> directory / room ---------------------------------------------
// `req_id` is the client's request id as JSON text ("" when it sent none), echoed verbatim.

struct join_req {
  std::string room;
  conn_ref conn;
  member_info who;
  std::string req_id;
  bool recover = false;
  uint64_t since = 0;
  std::string epoch;
  bool admin = false;  // a server admin joins private rooms too
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, join_req& x) {
  return f(caf::meta::type_name("join_req"), x.room, x.conn, x.who, x.req_id, x.recover, x.since,
           x.epoch, x.admin);
}

struct leave_req {
  std::string room;
  conn_ref conn;
  std::string req_id;
  bool reply = true;  // false when the connection is gone
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, leave_req& x) {
  return f(caf::meta::type_name("leave_req"), x.room, x.conn, x.req_id, x.reply);
}

// A send, and (protocol v2) every change to a message: `kind` says which.
// All of them take the room's next seq through the same pipeline, so order,
// durability, idempotency keys and failover hold for each.
struct send_req {
  std::string room;
  conn_ref conn;
  member_info who;
  std::string req_id;
  std::string text;
  std::string data;
  std::string idem_key;
  std::string dm_to;  // set for a direct message: the other user
  bool trusted = false;  // from the server API: no membership needed
  event_kind kind = event_kind::message;
  uint64_t target = 0;                // edited, deleted, reaction: the message's seq
  uint64_t reply_to = 0;              // message
  std::vector<std::string> mentions{};  // message
  std::string emoji{};                  // reaction
  bool on = false;                    // reaction
  bool admin = false;                 // a server admin (token role): may do anything
  // moderation (room_set): `text` is the action ("settings"); `set` says
  // which of `settings` the request changes (settings_* bits).
  room_settings settings{};
  uint8_t set = 0;
  // role, kick, ban, unban, mute, unmute: the user acted on, and the rest.
  std::string user{};
  std::string reason{};
  uint64_t seconds = 0;  // ban, mute: 0 = until lifted
  member_role role = member_role::member;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, send_req& x) {
  return f(caf::meta::type_name("send_req"), x.room, x.conn, x.who, x.req_id, x.text, x.data,
           x.idem_key, x.dm_to, x.trusted, x.kind, x.target, x.reply_to, x.mentions, x.emoji,
           x.on, x.admin, x.settings, x.set, x.user, x.reason, x.seconds, x.role);
}

// `invite` (protocol v2): makes `user` a member; `by` must be the room's
// owner or a moderator, or a server admin (empty `by`: the server API).
struct invite_req {
  std::string room;
  conn_ref conn;
  std::string by;
  std::string req_id;
  std::string user;
  bool admin = false;
  member_role role = member_role::member;  // the server API may set any role
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, invite_req& x) {
  return f(caf::meta::type_name("invite_req"), x.room, x.conn, x.by, x.req_id, x.user, x.admin,
           x.role);
}

// `room` (protocol v2): read the settings. Empty `user`: the server API.
struct room_req {
  std::string room;
  conn_ref conn;
  std::string user;
  std::string req_id;
  bool admin = false;
  bool members = false;  // the server API: list every membership too
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, room_req& x) {
  return f(caf::meta::type_name("room_req"), x.room, x.conn, x.user, x.req_id, x.admin,
           x.members);
}

// Protocol v2: the user's read position (`seq`), and the end of a membership.
struct read_req {
  std::string room;
  conn_ref conn;
  std::string user;
  std::string req_id;
  uint64_t seq = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, read_req& x) {
  return f(caf::meta::type_name("read_req"), x.room, x.conn, x.user, x.req_id, x.seq);
}

struct part_req {
  std::string room;
  conn_ref conn;
  std::string user;
  std::string req_id;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, part_req& x) {
  return f(caf::meta::type_name("part_req"), x.room, x.conn, x.user, x.req_id);
}

// `my_rooms`, to a node's directory: it answers with the rooms homed there.
struct my_rooms_req {
  std::string user;
  conn_ref conn;
  std::string req_id;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, my_rooms_req& x) {
  return f(caf::meta::type_name("my_rooms_req"), x.user, x.conn, x.req_id);
}

struct history_req {
  std::string room;
  conn_ref conn;
  std::string req_id;
  uint64_t before = 0;  // exclusive; 0 = newest
  uint32_t limit = 50;
  // Who reads (a private room answers its non-members not_found); empty: the server API.
  std::string user{};
  bool admin = false;
  bool moderation_only = false;  // the audit view: only `moderation` events, from the store
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, history_req& x) {
  return f(caf::meta::type_name("history_req"), x.room, x.conn, x.req_id, x.before, x.limit,
           x.user, x.admin, x.moderation_only);
}

// `search` (protocol v2): messages whose current text holds every word.
struct search_req {
  std::string room;
  conn_ref conn;
  std::string req_id;
  std::string query;
  uint64_t before = 0;  // exclusive; 0 = newest
  uint32_t limit = 20;
  std::string user{};  // as history_req
  bool admin = false;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, search_req& x) {
  return f(caf::meta::type_name("search_req"), x.room, x.conn, x.req_id, x.query, x.before,
           x.limit, x.user, x.admin);
}

struct presence_req {
  std::string room;
  conn_ref conn;
  std::string req_id;
  std::string user{};  // as history_req
  bool admin = false;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, presence_req& x) {
  return f(caf::meta::type_name("presence_req"), x.room, x.conn, x.req_id, x.user, x.admin);
}

struct typing_req {
  std::string room;
  conn_ref conn;
  std::string user;
  std::string name;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, typing_req& x) {
  return f(caf::meta::type_name("typing_req"), x.room, x.conn, x.user, x.name);
}

// --- user registry -------------------------------------------------------------

struct user_online {
  std::string user;
  conn_ref conn;
  int64_t since_ms = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_online& x) {
  return f(caf::meta::type_name("user_online"), x.user, x.conn, x.since_ms);
}

struct user_offline {
  std::string user;
  conn_ref conn;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_offline& x) {
  return f(caf::meta::type_name("user_offline"), x.user, x.conn);
}

// A stored direct message (or a mention, a read position) for every
// connection of `users` but `skip` (the connection that caused it, if any).
struct user_deliver {
  std::vector<std::string> users;
  std::string room;
  uint64_t seq = 0;
  std::string frame;
  conn_ref skip{};
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_deliver& x) {
  return f(caf::meta::type_name("user_deliver"), x.users, x.room, x.seq, x.frame, x.skip);
}

// Close every connection of a user (server API, bans).
struct kick_user {
  std::string user;
  uint16_t code = 4003;
  std::string reason;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kick_user& x) {
  return f(caf::meta::type_name("kick_user"), x.user, x.code, x.reason);
}

// --- room <-> directory ----------------------------------------------------------

// A room that has been empty for its grace period asks to stop. `received` is
// how many requests it got from the directory: the directory stops it only if
// it forwarded no more than that (no join in flight).
// A room tells its directory the term it claimed (shared store), so that the
// directory can check all of its rooms' claims with one read a second.
struct room_claimed {
  std::string room;
  uint64_t term = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, room_claimed& x) {
  return f(caf::meta::type_name("room_claimed"), x.room, x.term);
}

// The claims one node holds: rooms[i] at terms[i]. The store answers with the
// rooms whose claim another node has taken since.
struct claim_check {
  std::string owner;
  std::vector<std::string> rooms;
  std::vector<uint64_t> terms;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, claim_check& x) {
  return f(caf::meta::type_name("claim_check"), x.owner, x.rooms, x.terms);
}

struct room_idle {
  std::string room;
  uint64_t received = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, room_idle& x) {
  return f(caf::meta::type_name("room_idle"), x.room, x.received);
}

// --- room <-> store ---------------------------------------------------------------

// `owner` and `term` fence the batch: it commits only while the room's stored
// term is still `term` (and its owner `owner`), i.e. nobody claimed the room
// since this node did. term 0 = unfenced (a single node that never claims).
// A batch may also carry membership changes (written in the same
// transaction, fenced the same way), with or without events.
struct append_batch {
  std::string room;
  std::vector<stored_msg> msgs;
  std::string owner;
  uint64_t term = 0;
  std::vector<membership> member_set{};  // upserts (role, read_seq)
  std::vector<std::string> member_del{};  // memberships that end
  // The room's settings after this batch (a room_set in it), stored with it.
  bool set_settings = false;
  room_settings settings{};
  // Bans and mutes: upserts, and those lifted altogether.
  std::vector<restriction> restrict_set{};
  std::vector<std::string> restrict_del{};
  bool empty() const {
    return msgs.empty() && member_set.empty() && member_del.empty() && !set_settings &&
           restrict_set.empty() && restrict_del.empty();
  }
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, append_batch& x) {
  return f(caf::meta::type_name("append_batch"), x.room, x.msgs, x.owner, x.term, x.member_set,
           x.member_del, x.set_settings, x.settings, x.restrict_set, x.restrict_del);
}

struct range_query {
  std::string room;
  uint64_t after = 0;   // exclusive
  uint64_t before = 0;  // exclusive, 0 = no bound
  uint32_t limit = 50;
  bool newest = true;   // true: the newest `limit` in range; false: the oldest
  bool moderation_only = false;  // only `moderation` events (the audit view)
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, range_query& x) {
  return f(caf::meta::type_name("range_query"), x.room, x.after, x.before, x.limit, x.newest,
           x.moderation_only);
}

// --- protocol errors between actors ----------------------------------------------
// A request made with request(...) (the server API) is answered with a caf::error
// of this category: its code is the errc, its context the message text.
inline const caf::atom_value chat_error_category = caf::atom("chat");
caf::error make_chat_error(errc code, std::string message);
// The errc and message of an error of chat_error_category; internal/timeout/unavailable otherwise.
errc errc_of(const caf::error& err, std::string* message = nullptr);

// Adds every type above to a CAF config: call on every node.
void register_message_types(caf::actor_system_config& cfg);

}  // namespace chat
