#include "actors/directory.hpp"

#include <spdlog/spdlog.h>

#include "messages/codec.hpp"

namespace chat {

namespace {

caf::actor& room_for(directory_actor* self, const std::string& name) {
  auto& st = self->state;
  auto it = st.rooms.find(name);
  if (it == st.rooms.end()) {
    auto room = self->spawn(room_impl, name, st.deps);
    self->monitor(room);
    st.by_addr.emplace(room.address(), name);
    it = st.rooms.emplace(name, directory_state::entry{room, 0}).first;
  }
  ++it->second.sent;
  return it->second.room;
}

// A request(...) (the server API) is delegated, so that the room answers the
// requester in one round trip; a gateway's message is sent, so that the room
// sees it came from here. The room counts both (room.cpp `from_directory`).
template <class Req>
void forward_to(directory_actor* self, const caf::actor& room, Req& req) {
  if (self->current_message_id().is_request())
    self->delegate(room, std::move(req));
  else
    self->send(room, std::move(req));
}

template <class Req>
void forward(directory_actor* self, Req& req) {
  auto& room = room_for(self, req.room);
  forward_to(self, room, req);
}

}  // namespace

caf::behavior directory_impl(directory_actor* self, room_deps deps) {
  self->state.deps = std::move(deps);
  self->state.deps.directory = caf::actor_cast<caf::actor>(self);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    auto it = st.by_addr.find(dm.source);
    if (it == st.by_addr.end()) return;
    auto r = st.rooms.find(it->second);
    if (r != st.rooms.end() && r->second.room.address() == dm.source) st.rooms.erase(r);
    if (dm.reason && dm.reason != caf::exit_reason::normal)
      spdlog::error("event=room_died room={} reason=\"{}\"", it->second,
                    self->system().render(dm.reason));
    st.by_addr.erase(it);
  });
  return {
      [=](join_req& req) { forward(self, req); },
      [=](send_req& req) { forward(self, req); },  // direct messages
      [=](history_req& req) { forward(self, req); },
      [=](presence_req& req) { forward(self, req); },
      [=](typing_req& req) { forward(self, req); },
      [=](leave_req& req) {
        // Only rooms that exist: a leave never creates one.
        auto& st = self->state;
        auto it = st.rooms.find(req.room);
        if (it != st.rooms.end()) {
          ++it->second.sent;
          forward_to(self, it->second.room, req);
        } else if (req.reply && req.conn.gateway) {
          self->send(req.conn.gateway, left_msg{req.conn.id, req.req_id, req.room});
        }
      },
      [=](const room_idle& idle) {
        auto& st = self->state;
        auto it = st.rooms.find(idle.room);
        auto sender = caf::actor_cast<caf::actor>(self->current_sender());
        if (it == st.rooms.end() || it->second.room != sender) return;
        // Stop it only if no request is on its way to it.
        if (it->second.sent <= idle.received) {
          self->send(it->second.room, stop_room_atom_v);
          st.rooms.erase(it);
        }
      },
      [=](rooms_atom) {
        std::vector<std::string> names;
        for (auto& [name, e] : self->state.rooms) names.push_back(name);
        std::sort(names.begin(), names.end());
        return names;
      },
      [=](caf::close_atom) {
        for (auto& [name, e] : self->state.rooms) self->send_exit(e.room, caf::exit_reason::user_shutdown);
        self->state.rooms.clear();
        self->quit();
      },
  };
}

}  // namespace chat
