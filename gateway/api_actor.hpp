#pragma once
// The server API's actor: turns one validated HTTP request into one request(...)
// to the actor that answers it (a room through its home directory, a user
// registry, the directory), with a deadline, and completes the HTTP request
// with the typed reply. It never touches a socket: `api_reply` posts to the
// requesting session's I/O thread. Every request is answered within `timeout`
// (else 504).
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "caf/all.hpp"
#include "messages/types.hpp"

namespace chat {

struct server_context;

enum class api_op {
  publish, dm, disconnect, presence, history, rooms,
  // protocol v2
  room_create, room_get, room_update, members, member_set, member_del, edit, del, search,
  user_ban_get, user_ban_set, user_ban_lift,  // server-wide bans
  moderation,                                 // a room's moderation log
};

// Completes one HTTP request with a status and a JSON body. Called at most once,
// from a CAF thread: it must post to the session's own thread (and keep that
// thread's io_context alive until it has).
using api_reply = std::function<void(unsigned status, std::string body)>;

// One validated API request (see gateway/api.hpp for the parsing).
struct api_call {
  api_op op = api_op::rooms;
  std::string room;     // publish, dm (the dm room), presence, history
  send_req send;        // publish, dm: everything but `conn`
  kick_user kick;       // disconnect
  uint64_t before = 0;  // history: exclusive, 0 = newest
  uint32_t limit = 50;  // history
  // room_create: the owner (invite with role owner) and send (the settings, set != 0 if any);
  // member_set: invite (user, role); member_del: the user to part.
  invite_req invite;
  std::string user;
  std::string query;  // search
  user_ban ban;       // user_ban_*: the user, the reason, lift; `until` set by the actor
  int64_t seconds = 0;  // user_ban_set: how long, 0 = until lifted
  api_reply reply;
};

struct api_state {
  std::shared_ptr<server_context> ctx;  // shared: a late reply still finds it
  std::chrono::milliseconds timeout{10000};
  static inline const char* name = "api";
};

using api_actor = caf::stateful_actor<api_state>;

caf::behavior api_impl(api_actor* self, std::shared_ptr<server_context> ctx,
                       std::chrono::milliseconds timeout);

// The HTTP status for a protocol error code (bad_request → 400, unavailable → 503, ...).
unsigned api_status_for(std::string_view code);

// {"error":code,"message":message}
std::string api_error_body(std::string_view code, std::string_view message);

}  // namespace chat

// api_call holds a callback: it only ever travels between actors of one process.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(chat::api_call)
