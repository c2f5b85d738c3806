#include "gateway/api_actor.hpp"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "actors/metrics.hpp"
#include "gateway/server_context.hpp"
#include "messages/clock.hpp"
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

// One pending HTTP request: answered exactly once.
struct responder {
  std::shared_ptr<api_reply> reply;

  explicit responder(api_reply r) : reply(std::make_shared<api_reply>(std::move(r))) {}

  void ok(std::string body) const { finish(200, std::move(body)); }
  void fail(errc code, std::string_view message) const {
    finish(http_status(code), api_error_body(to_string(code), message));
  }
  // A request that failed: a room's own error, or no answer in time, or its node gone.
  void fail(const caf::error& err, std::string_view what) const {
    std::string message;
    auto code = errc_of(err, &message);
    if (code == errc::timeout)
      message =
          "no answer in time; a message may still be stored: retry with the same idempotency_key";
    else if (message.empty())
      message = std::string(what) + " did not answer";
    fail(code, message);
  }

 private:
  void finish(unsigned status, std::string body) const {
    if (*reply) {
      auto r = std::move(*reply);
      *reply = nullptr;
      r(status, std::move(body));
    }
  }
};

// The room's settings (and memberships) as the answer's body.
void answer_room(api_actor* self, const caf::actor& dir, const std::string& room, bool members,
                 const responder& done) {
  room_req q{room, {}, {}, {}, false, members};
  self->request(dir, self->state.timeout, std::move(q))
      .then(
          [=](const room_info& info) {
            if (!members) return done.ok(encode_body(info));
            ordered list = ordered::array();
            for (auto& m : info.members)
              list.push_back({{"user", m.user}, {"role", to_string(m.role)}, {"read_seq", m.read_seq}});
            done.ok(dump(ordered{{"room", info.room}, {"members", std::move(list)}}));
          },
          [=](caf::error& err) { done.fail(err, "the room"); });
}

// Protocol v2 operations: every one goes to the room through its home directory.
void start_v2(api_actor* self, api_call& call, const responder& done) {
  auto& ctx = *self->state.ctx;
  auto timeout = self->state.timeout;
  auto dir = ctx.routes->directory_for(call.room);
  if (!dir) return done.fail(errc::unavailable, "the room's node is unreachable");
  auto room = call.room;
  switch (call.op) {
    case api_op::room_create: {
      // The owner's membership makes the room; then its settings, if any, as
      // a moderation event by the system; the answer is what the room holds.
      auto settings = std::move(call.send);
      self->request(dir, timeout, std::move(call.invite))
          .then(
              [=](const ack_msg&) mutable {
                if (settings.set == 0) return answer_room(self, dir, room, false, done);
                self->request(dir, self->state.timeout, std::move(settings))
                    .then([=](const ack_msg&) { answer_room(self, dir, room, false, done); },
                          [=](caf::error& err) { done.fail(err, "the room"); });
              },
              [=](caf::error& err) { done.fail(err, "the room"); });
      return;
    }
    case api_op::room_get:
    case api_op::members:
      return answer_room(self, dir, room, call.op == api_op::members, done);
    case api_op::room_update:
      self->request(dir, timeout, std::move(call.send))
          .then([=](const ack_msg&) { answer_room(self, dir, room, false, done); },
                [=](caf::error& err) { done.fail(err, "the room"); });
      return;
    case api_op::member_set: {
      auto user = call.invite.user;
      auto role = call.invite.role;
      self->request(dir, timeout, std::move(call.invite))
          .then(
              [=](const ack_msg&) {
                done.ok(dump(ordered{{"room", room}, {"user", user}, {"role", to_string(role)}}));
              },
              [=](caf::error& err) { done.fail(err, "the room"); });
      return;
    }
    case api_op::member_del: {
      auto user = call.user;
      self->request(dir, timeout, part_req{room, {}, user, {}})
          .then(
              [=](const left_msg&) {
                done.ok(dump(ordered{{"room", room}, {"user", user}, {"parted", true}}));
              },
              [=](caf::error& err) { done.fail(err, "the room"); });
      return;
    }
    case api_op::edit:
    case api_op::del:
      self->request(dir, timeout, std::move(call.send))
          .then([=](const ack_msg& a) { done.ok(encode_body(a)); },
                [=](caf::error& err) { done.fail(err, "the room"); });
      return;
    case api_op::search:
      self->request(dir, timeout,
                    search_req{room, {}, {}, std::move(call.query), call.before, call.limit})
          .then([=](const history_page& h) { done.ok(encode_body(h)); },
                [=](caf::error& err) { done.fail(err, "the room"); });
      return;
    default:
      return done.fail(errc::internal, "not a protocol v2 operation");
  }
}

// {"user", "banned", "until" (ms since the epoch, null: until lifted), "reason"}
std::string ban_body(const std::string& user, const std::optional<user_ban>& b) {
  ordered j{{"user", user}, {"banned", b.has_value()}};
  if (b) {
    j["until"] = b->until == user_ban::forever ? ordered(nullptr) : ordered(b->until);
    j["reason"] = b->reason;
  }
  return dump(j);
}

// Server-wide bans: this node's registry applies and stores the ban (the
// answer waits for that), then every other live node's registry gets it;
// the user's home registry closes their connections with 4003.
void start_user_ban(api_actor* self, api_call& call, const responder& done) {
  auto& ctx = *self->state.ctx;
  auto user = call.ban.user;
  if (call.op == api_op::user_ban_get) {
    if (!ctx.bans) return done.fail(errc::unavailable, "no ban list on this node");
    return done.ok(ban_body(user, ctx.bans->active(user, now_ms())));
  }
  auto ban = call.ban;
  if (call.op == api_op::user_ban_set)
    ban.until = call.seconds > 0 ? now_ms() + call.seconds * 1000 : user_ban::forever;
  auto local = ctx.users;
  self->request(local, self->state.timeout, ban)
      .then(
          [=](bool stored) {
            if (!stored) return done.fail(errc::unavailable, "bans are not kept on this node");
            // anon: their answers (stored or not) are theirs to log.
            for (auto& reg : self->state.ctx->routes->registries())
              if (reg != local) caf::anon_send(reg, ban);
            global_metrics().count_moderation(ban.lift ? "server_unban" : "server_ban");
            std::optional<user_ban> now;
            if (!ban.lift) now = ban;
            done.ok(ban_body(user, now));
          },
          [=](caf::error& err) { done.fail(err, "the user registry"); });
}

void start(api_actor* self, api_call& call) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  responder done{std::move(call.reply)};
  auto timeout = st.timeout;
  switch (call.op) {
    case api_op::publish:
    case api_op::dm: {
      auto dir = ctx.routes->directory_for(call.send.room);
      if (!dir) return done.fail(errc::unavailable, "the room's node is unreachable");
      auto req = std::move(call.send);
      req.trusted = true;
      self->request(dir, timeout, std::move(req))
          .then([=](const ack_msg& a) { done.ok(encode_body(a)); },
                [=](caf::error& err) { done.fail(err, "the room"); });
      return;
    }
    case api_op::disconnect: {
      auto users = ctx.routes->users_for(call.kick.user);
      if (!users) return done.fail(errc::unavailable, "the user's node is unreachable");
      auto user = call.kick.user;
      self->request(users, timeout, std::move(call.kick))
          .then(
              [=](uint64_t closed) {
                if (closed == 0) return done.fail(errc::not_found, "user has no open connections");
                done.ok(dump(ordered{{"user", user}, {"closed", closed}}));
              },
              [=](caf::error& err) { done.fail(err, "the user registry"); });
      return;
    }
    case api_op::rooms:
      self->request(ctx.directory, timeout, rooms_atom_v)
          .then(
              [=](const std::vector<std::string>& names) {
                done.ok(dump(ordered{{"rooms", names}}));
              },
              [=](caf::error& err) { done.fail(err, "the directory"); });
      return;
    case api_op::presence:
    case api_op::history:
    case api_op::moderation: {
      auto dir = ctx.routes->directory_for(call.room);
      if (!dir) return done.fail(errc::unavailable, "the room's node is unreachable");
      // A room exists when it has (or had) stored messages or has members:
      // the reply says so, so one round trip answers 404 or the data.
      auto room = call.room;
      if (call.op == api_op::presence) {
        self->request(dir, timeout, presence_req{call.room, {}, {}})
            .then(
                [=](const presence_list& p) {
                  if (!p.exists) return done.fail(errc::not_found, "no such room: " + room);
                  done.ok(encode_body(p));
                },
                [=](caf::error& err) { done.fail(err, "the room"); });
      } else {
        history_req req{call.room, {}, {}, call.before, call.limit};
        req.moderation_only = call.op == api_op::moderation;
        self->request(dir, timeout, std::move(req))
            .then(
                [=](const history_page& h) {
                  if (!h.exists) return done.fail(errc::not_found, "no such room: " + room);
                  done.ok(encode_body(h));
                },
                [=](caf::error& err) { done.fail(err, "the room"); });
      }
      return;
    }
    case api_op::room_create:
    case api_op::room_get:
    case api_op::room_update:
    case api_op::members:
    case api_op::member_set:
    case api_op::member_del:
    case api_op::edit:
    case api_op::del:
    case api_op::search:
      return start_v2(self, call, done);
    case api_op::user_ban_get:
    case api_op::user_ban_set:
    case api_op::user_ban_lift:
      return start_user_ban(self, call, done);
  }
}

}  // namespace

caf::behavior api_impl(api_actor* self, std::shared_ptr<server_context> ctx,
                       std::chrono::milliseconds timeout) {
  self->state.ctx = std::move(ctx);
  self->state.timeout = timeout;
  return {
      [=](api_call& call) { start(self, call); },
  };
}

}  // namespace chat
