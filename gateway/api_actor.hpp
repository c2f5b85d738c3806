#pragma once
// The server API's actor: a pseudo gateway for rooms. It sends room requests
// with `conn_ref{itself, request id}`, so the rooms' replies (`to_conn` frames:
// ack, error, history, presence) come back here, and each completes one pending
// HTTP request. It never touches a socket: `api_reply` posts to the requesting
// session's I/O thread. Every request is answered within `timeout` (else 504).
#include <chrono>
#include <functional>
#include <string>
#include <unordered_map>

#include "caf/all.hpp"
#include "messages/types.hpp"

namespace chat {

struct server_context;

enum class api_op { publish, dm, disconnect, presence, history, rooms };

// Completes one HTTP request with a status and a JSON body. Called at most once,
// from a CAF thread: it must post to the session's own thread.
using api_reply = std::function<void(unsigned status, std::string body)>;

// One validated API request (see gateway/api.hpp for the parsing).
struct api_call {
  api_op op = api_op::rooms;
  std::string room;     // publish, dm (the dm room), presence, history
  send_req send;        // publish, dm: everything but `conn`
  kick_user kick;       // disconnect
  uint64_t before = 0;  // history: exclusive, 0 = newest
  uint32_t limit = 50;  // history
  api_reply reply;
};

using api_timeout_atom = caf::atom_constant<caf::atom("api_tmo")>;
constexpr auto api_timeout_atom_v = api_timeout_atom::value;

struct api_state {
  // An empty presence or history reply raises the question whether the room
  // exists at all: `stage` says which follow-up question is out, `first` keeps
  // the reply to return if it does.
  enum class stage { answer, probe_history, probe_presence };
  struct entry {
    api_call call;
    stage at = stage::answer;
    std::string first;
  };
  server_context* ctx = nullptr;
  std::chrono::milliseconds timeout{10000};
  uint64_t next_id = 1;
  std::unordered_map<uint64_t, entry> pending;
  static inline const char* name = "api";
};

using api_actor = caf::stateful_actor<api_state>;

// `ctx` must outlive the actor (server::shutdown waits for it).
caf::behavior api_impl(api_actor* self, server_context* ctx, std::chrono::milliseconds timeout);

// The HTTP status for a protocol error code (bad_request → 400, unavailable → 503, ...).
unsigned api_status_for(std::string_view code);

// {"error":code,"message":message}
std::string api_error_body(std::string_view code, std::string_view message);

}  // namespace chat

// api_call holds a callback: it only ever travels between actors of one process.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(chat::api_call)
