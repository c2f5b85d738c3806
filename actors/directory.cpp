#include "actors/directory.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "messages/codec.hpp"
#include "messages/validate.hpp"

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

// The answer to a read (or a dm join) of a room that does not exist: nothing
// is spawned and nothing written. The server API gets the room's own "does not
// exist" reply (it answers 404), a connection `not_found`.
void answer_missing(directory_actor* self, caf::response_promise& rp, const history_req& req) {
  if (rp.pending())
    rp.deliver(history_page{req.conn.id, req.req_id, req.room, {}, false, 1, false});
  else if (req.conn.gateway)
    self->send(req.conn.gateway,
               error_msg{req.conn.id, req.req_id, errc::not_found, "no such room", {}});
}
void answer_missing(directory_actor* self, caf::response_promise& rp, const presence_req& req) {
  if (rp.pending())
    rp.deliver(presence_list{req.conn.id, req.req_id, req.room, {}, false});
  else if (req.conn.gateway)
    self->send(req.conn.gateway,
               error_msg{req.conn.id, req.req_id, errc::not_found, "no such room", {}});
}
void answer_missing(directory_actor* self, caf::response_promise& rp, const join_req& req) {
  if (rp.pending())
    rp.deliver(make_chat_error(errc::not_found, "no such room"));
  else if (req.conn.gateway)
    self->send(req.conn.gateway, error_msg{req.conn.id, req.req_id, errc::not_found,
                                           "no such room", req.room, 0, true});
}

template <class Req>
void answer_missing(directory_actor* self, caf::response_promise& rp, const Req& req) {
  if (rp.pending())
    rp.deliver(make_chat_error(errc::not_found, "no such room"));
  else if (req.conn.gateway)
    self->send(req.conn.gateway,
               error_msg{req.conn.id, req.req_id, errc::not_found, "no such room", {}});
}

// my_rooms from this node's store: only the rooms homed here, so that a
// cluster (whose gateway asks every node) lists each room once, from its home.
void answer_my_rooms(directory_actor* self, const my_rooms_req& req) {
  auto& st = self->state;
  self->request(st.deps.store, st.deps.cfg.store_timeout, my_rooms_atom_v, req.user)
      .then(
          [=](std::vector<user_room>& rooms) {
            auto& st = self->state;
            if (st.deps.routes) {
              auto me = caf::actor_cast<caf::actor>(self);
              rooms.erase(std::remove_if(rooms.begin(), rooms.end(),
                                         [&](const user_room& r) {
                                           return st.deps.routes->directory_for(r.room) != me;
                                         }),
                          rooms.end());
            }
            if (req.conn.gateway)
              self->send(req.conn.gateway, my_rooms_msg{req.conn.id, req.req_id, std::move(rooms)});
          },
          [=](caf::error&) {
            if (req.conn.gateway)
              self->send(req.conn.gateway, error_msg{req.conn.id, req.req_id, errc::unavailable,
                                                     "the store is unavailable", {}});
          });
}

// Reads never create: a live room answers at once; otherwise the store says
// whether the room has a row (a cheap lookup), and only then is a room spawned
// (which loads it) -- else the request is answered `not_found` right here.
template <class Req>
void forward_existing(directory_actor* self, Req& req) {
  auto& st = self->state;
  auto it = st.rooms.find(req.room);
  if (it != st.rooms.end()) {
    ++it->second.sent;
    forward_to(self, it->second.room, req);
    return;
  }
  caf::response_promise rp;
  if (self->current_message_id().is_request()) rp = self->make_response_promise();
  self->request(st.deps.store, st.deps.cfg.store_timeout, exists_atom_v, req.room)
      .then(
          [=](bool found) mutable {
            // A join may have spawned it meanwhile: then it exists.
            if (!found && !self->state.rooms.count(req.room)) {
              answer_missing(self, rp, req);
              return;
            }
            auto& room = room_for(self, req.room);
            if (rp.pending())
              rp.delegate(room, std::move(req));
            else
              self->send(room, std::move(req));
          },
          [=](caf::error& err) mutable {
            if (rp.pending()) {
              rp.deliver(std::move(err));
            } else if (req.conn.gateway) {
              self->send(req.conn.gateway, error_msg{req.conn.id, req.req_id, errc::unavailable,
                                                     "the store is unavailable", {}});
            }
          });
}

// Once a second (shared store only): one read tells which of this node's
// rooms another node has claimed since; those step down at once. Without it a
// room that lost its claim while its node was paused or cut off would keep its
// members (and serve their reads) until its next append is refused.
constexpr auto claim_check_interval = std::chrono::seconds(1);

void check_claims(directory_actor* self) {
  auto& st = self->state;
  claim_check chk;
  chk.owner = st.deps.claim_as;
  for (auto& [name, e] : st.rooms)
    if (e.term > 0) {
      chk.rooms.push_back(name);
      chk.terms.push_back(e.term);
    }
  if (chk.rooms.empty()) {
    self->delayed_send(self, claim_check_interval, claim_chk_atom_v);
    return;
  }
  auto terms = std::make_shared<claim_check>(chk);
  self->request(st.deps.store, std::chrono::seconds(5), claims_atom_v, std::move(chk))
      .then(
          [=](std::vector<std::string>& lost) {
            auto& st = self->state;
            for (auto& room : lost) {
              auto it = st.rooms.find(room);
              if (it == st.rooms.end()) continue;
              auto i = std::find(terms->rooms.begin(), terms->rooms.end(), room) - terms->rooms.begin();
              if (it->second.term == terms->terms[static_cast<size_t>(i)]) {
                spdlog::warn("event=room_claim_lost room={} term={}", room, it->second.term);
                self->send(it->second.room, lost_atom_v, it->second.term);
              }
            }
            self->delayed_send(self, claim_check_interval, claim_chk_atom_v);
          },
          [=](caf::error&) { self->delayed_send(self, claim_check_interval, claim_chk_atom_v); });
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
  if (!self->state.deps.claim_as.empty())
    self->delayed_send(self, claim_check_interval, claim_chk_atom_v);
  return {
      [=](join_req& req) {
        // A dm room comes into being only by a dm between its two users.
        if (is_dm_room(req.room))
          forward_existing(self, req);
        else
          forward(self, req);
      },
      [=](send_req& req) { forward(self, req); },  // direct messages
      [=](history_req& req) { forward_existing(self, req); },
      [=](presence_req& req) { forward_existing(self, req); },
      [=](read_req& req) { forward_existing(self, req); },
      [=](search_req& req) { forward_existing(self, req); },
      [=](part_req& req) { forward_existing(self, req); },
      [=](room_req& req) { forward_existing(self, req); },
      [=](invite_req& req) {
        // The server API creates a room with its owner; other memberships
        // and every user's invite go into a room that exists.
        if (req.by.empty() && req.role == member_role::owner)
          forward(self, req);
        else
          forward_existing(self, req);
      },
      [=](my_rooms_req& req) { answer_my_rooms(self, req); },
      [=](typing_req& req) {
        // Typing never creates a room (nor its row): only live rooms hear it.
        auto it = self->state.rooms.find(req.room);
        if (it == self->state.rooms.end()) return;
        ++it->second.sent;
        forward_to(self, it->second.room, req);
      },
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
      [=](const room_claimed& c) {
        auto& st = self->state;
        auto it = st.rooms.find(c.room);
        if (it != st.rooms.end() && it->second.room == caf::actor_cast<caf::actor>(self->current_sender()))
          it->second.term = c.term;
      },
      [=](claim_chk_atom) { check_claims(self); },
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
