#include "gateway/api_actor.hpp"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "gateway/server_context.hpp"
#include "messages/codec.hpp"

namespace chat {

using json = nlohmann::json;
using ordered = nlohmann::ordered_json;  // answers keep their keys in a readable order

// Transitional (the replies still carry codes as text): the status is errc's.
unsigned api_status_for(std::string_view code) {
  return http_status(errc_from_string(code).value_or(errc::internal));
}

std::string api_error_body(std::string_view code, std::string_view message) {
  return "{\"error\":" + json_quote(code) + ",\"message\":" + json_quote(message) + "}";
}

namespace {

std::string dump(const ordered& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void finish(api_actor* self, uint64_t id, unsigned status, std::string body) {
  auto& pending = self->state.pending;
  auto it = pending.find(id);
  if (it == pending.end()) return;  // answered already (or timed out)
  auto reply = std::move(it->second.call.reply);
  pending.erase(it);
  if (reply) reply(status, std::move(body));
}

void fail(api_actor* self, uint64_t id, std::string_view code, std::string_view message) {
  finish(self, id, api_status_for(code), api_error_body(code, message));
}

// A room's home directory (in a cluster, possibly on another node); null when unreachable.
caf::actor directory_for(api_actor* self, const std::string& room) {
  auto* ctx = self->state.ctx;
  return ctx->routes ? ctx->routes->directory_for(room) : ctx->directory;
}

caf::actor users_for(api_actor* self, const std::string& user) {
  auto* ctx = self->state.ctx;
  return ctx->routes ? ctx->routes->users_for(user) : ctx->users;
}

conn_ref ref(api_actor* self, uint64_t id) {
  return conn_ref{caf::actor_cast<caf::actor>(self), id};
}

// The room's own reply without its "type": {"type":"history","room":... → {"room":...
std::string strip_type(const std::string& frame, std::string_view type) {
  std::string prefix = "{\"type\":\"" + std::string(type) + "\",";
  if (frame.compare(0, prefix.size(), prefix) == 0) return "{" + frame.substr(prefix.size());
  auto j = json::parse(frame, nullptr, false);
  if (j.is_object()) j.erase("type");
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_presence(api_actor* self, uint64_t id, const caf::actor& dir) {
  auto& call = self->state.pending.at(id).call;
  self->send(dir, presence_req{call.room, ref(self, id), {}});
}

void send_history(api_actor* self, uint64_t id, const caf::actor& dir, uint64_t before,
                  uint32_t limit) {
  auto& call = self->state.pending.at(id).call;
  self->send(dir, history_req{call.room, ref(self, id), {}, before, limit});
}

bool has_items(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_array() && !it->empty();
}

// A room exists when it has (or had) stored messages or has members; otherwise a
// presence or history request is a 404. Empty replies lead to the other question.
void on_room_reply(api_actor* self, uint64_t id, const std::string& type, const json& j,
                   const std::string& frame) {
  using stage = api_state::stage;
  auto& e = self->state.pending.at(id);
  auto dir = directory_for(self, e.call.room);
  bool known = false;
  if (type == "presence") {
    known = has_items(j, "members");
  } else {  // history; first_seq > 1: it had messages, retention trimmed them
    known = has_items(j, "messages") || j.value("first_seq", uint64_t{1}) > 1;
  }
  if (e.at == stage::answer) {
    if (known) return finish(self, id, 200, strip_type(frame, type));
    e.first = strip_type(frame, type);
    if (!dir) return fail(self, id, "unavailable", "the room's node is unreachable");
    if (type == "history" && e.call.before == 0) {
      e.at = stage::probe_presence;
      return send_presence(self, id, dir);
    }
    e.at = stage::probe_history;
    return send_history(self, id, dir, 0, 1);
  }
  if (known) return finish(self, id, 200, std::move(e.first));
  if (e.at == stage::probe_history && e.call.op == api_op::history) {
    e.at = stage::probe_presence;
    if (!dir) return fail(self, id, "unavailable", "the room's node is unreachable");
    return send_presence(self, id, dir);
  }
  fail(self, id, "not_found", "no such room: " + e.call.room);
}

// A frame from a room (or the directory) for pending request `id`.
void on_frame(api_actor* self, uint64_t id, const std::string& frame) {
  auto it = self->state.pending.find(id);
  if (it == self->state.pending.end()) return;
  auto j = json::parse(frame, nullptr, false);
  if (!j.is_object()) return fail(self, id, "internal", "unreadable reply from the room");
  auto type = j.value("type", "");
  if (type == "error") {
    return fail(self, id, j.value("code", "internal"), j.value("message", ""));
  }
  if (type == "ack") {
    ordered out{{"room", j.value("room", "")},
                {"seq", j.value("seq", uint64_t{0})},
                {"ts", j.value("ts", int64_t{0})}};
    return finish(self, id, 200, dump(out));
  }
  if (type == "history" || type == "presence") return on_room_reply(self, id, type, j, frame);
  // Anything else (a room never sends us more for these requests) is ignored.
}

void start(api_actor* self, api_call& call) {
  auto& st = self->state;
  auto id = st.next_id++;
  auto op = call.op;
  st.pending.emplace(id, api_state::entry{std::move(call), api_state::stage::answer, {}});
  self->delayed_send(self, st.timeout, api_timeout_atom_v, id);
  auto& c = st.pending.at(id).call;
  switch (op) {
    case api_op::publish:
    case api_op::dm: {
      auto dir = directory_for(self, c.send.room);
      if (!dir) return fail(self, id, "unavailable", "the room's node is unreachable");
      auto req = c.send;
      req.conn = ref(self, id);
      req.trusted = true;
      self->send(dir, std::move(req));
      return;
    }
    case api_op::disconnect: {
      auto users = users_for(self, c.kick.user);
      if (!users) return fail(self, id, "unavailable", "the user's node is unreachable");
      auto user = c.kick.user;
      self->request(users, st.timeout, c.kick)
          .then(
              [=](uint64_t closed) {
                if (closed == 0) return fail(self, id, "not_found", "user has no open connections");
                finish(self, id, 200, dump(ordered{{"user", user}, {"closed", closed}}));
              },
              [=](caf::error& err) {
                fail(self, id, "unavailable", "user registry: " + self->system().render(err));
              });
      return;
    }
    case api_op::rooms:
      self->request(st.ctx->directory, st.timeout, rooms_atom_v)
          .then(
              [=](const std::vector<std::string>& names) {
                finish(self, id, 200, dump(ordered{{"rooms", names}}));
              },
              [=](caf::error& err) {
                fail(self, id, "unavailable", "directory: " + self->system().render(err));
              });
      return;
    case api_op::presence:
    case api_op::history: {
      auto dir = directory_for(self, c.room);
      if (!dir) return fail(self, id, "unavailable", "the room's node is unreachable");
      if (op == api_op::presence)
        send_presence(self, id, dir);
      else
        send_history(self, id, dir, c.before, c.limit);
      return;
    }
  }
}

}  // namespace

caf::behavior api_impl(api_actor* self, server_context* ctx, std::chrono::milliseconds timeout) {
  self->state.ctx = ctx;
  self->state.timeout = timeout;
  return {
      [=](api_call& call) { start(self, call); },
      [=](to_conn& m) { on_frame(self, m.conn, m.frame); },
      [=](api_timeout_atom, uint64_t id) {
        if (self->state.pending.count(id) == 0) return;
        spdlog::warn("event=api_timeout request={}", id);
        fail(self, id, "timeout",
             "no answer in time; a message may still be stored: "
             "retry with the same idempotency_key");
      },
      // What rooms send to gateways with members: the API never joins, so nothing
      // arrives here; ignore it rather than log unexpected messages.
      [=](joined_msg&) {},
      [=](deliver&) {},
      [=](conns_deliver&) {},
      [=](close_conn&) {},
  };
}

}  // namespace chat
