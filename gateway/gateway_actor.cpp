#include "gateway/gateway_actor.hpp"

#include <type_traits>

#include <boost/asio/post.hpp>

#include "actors/metrics.hpp"
#include "gateway/websocket_session.hpp"

namespace chat {

namespace net = boost::asio;

namespace {

// A reply for one connection, encoded on its I/O thread.
template <class Reply>
void post_reply(io_shard* shard, Reply&& r) {
  net::post(shard->ioc, [shard, r = std::forward<Reply>(r)] {
    if (auto* s = shard->registry.find(r.conn)) {
      using reply_type = std::decay_t<Reply>;
      if constexpr (std::is_same_v<reply_type, ack_msg>) s->on_answered(r.room, r.req_id);
      if constexpr (std::is_same_v<reply_type, error_msg>) {
        // A room that moved to another node refused a send: a keyed one goes
        // again where the room lives, once the room is joined there.
        if (!r.room.empty() && s->keep_for_resend(r.room, r.req_id)) return;
        if (r.join) s->on_join_refused(r.room, r.req_id);
        s->on_answered({}, r.req_id);
      }
      if constexpr (std::is_same_v<reply_type, left_msg>) {
        if (r.parted) s->on_parted(r.room);
        if (r.silent) return;  // kicked: the registry brought the user's `kicked`
      }
      if constexpr (std::is_same_v<reply_type, my_rooms_msg>) {
        // A cluster's nodes answer one by one: the session sends the merge.
        s->on_my_rooms(r);
        return;
      }
      s->push(std::make_shared<const std::string>(encode(r)));
    }
  });
}

}  // namespace

gateway_actor::behavior_type gateway_impl(gateway_actor::stateful_pointer<gateway_state> self,
                                          std::shared_ptr<server_context> ctx, io_shard* shard) {
  // Posted handlers capture the raw pointer: they only run inside
  // shard->ioc.run(), and the state's ctx keeps the shard alive while this
  // actor lives.
  self->state.ctx = std::move(ctx);
  // A room actor died (crash, or its node was lost): its local members must rejoin.
  self->set_down_handler([=](caf::down_msg& dm) {
    auto it = self->state.rooms.find(dm.source);
    if (it == self->state.rooms.end()) return;
    net::post(shard->ioc, [shard, room = std::move(it->second)] {
      auto* members = shard->registry.members(room);
      if (!members) return;
      auto copy = *members;  // on_room_lost changes the list
      for (auto* s : copy) s->on_room_lost(room);
    });
    self->state.rooms.erase(it);
  });
  return {
      [=](ack_msg& m) { post_reply(shard, std::move(m)); },
      [=](error_msg& m) { post_reply(shard, std::move(m)); },
      [=](left_msg& m) { post_reply(shard, std::move(m)); },
      [=](read_msg& m) { post_reply(shard, std::move(m)); },
      [=](my_rooms_msg& m) { post_reply(shard, std::move(m)); },
      [=](room_info& m) { post_reply(shard, std::move(m)); },
      [=](history_page& m) { post_reply(shard, std::move(m)); },
      [=](presence_list& m) { post_reply(shard, std::move(m)); },
      [=](joined_msg& m) {
        auto addr = m.room_actor.address();
        if (self->state.rooms.emplace(addr, m.room).second) self->monitor(m.room_actor);
        net::post(shard->ioc, [shard, m = std::move(m)]() mutable {
          if (auto* s = shard->registry.find(m.conn))
            s->on_joined(m);
          else  // gone meanwhile: the room must forget it
            caf::anon_send(m.room_actor, leave_req{m.room, conn_ref{shard->gateway, m.conn}, {}, false});
        });
      },
      [=](deliver& d) {
        // One shared immutable buffer for every local member.
        auto frame = std::make_shared<const std::string>(std::move(d.frame));
        net::post(shard->ioc, [shard, room = std::move(d.room), seq = d.seq, frame,
                               skip = std::move(d.skip_user)] {
          auto* members = shard->registry.members(room);
          if (!members) return;
          for (auto* s : *members) s->on_deliver(room, seq, frame, skip);
          if (seq > 0)
            global_metrics().deliveries.fetch_add(members->size(), std::memory_order_relaxed);
        });
      },
      [=](conns_deliver& d) {
        auto frame = std::make_shared<const std::string>(std::move(d.frame));
        net::post(shard->ioc, [shard, d = std::move(d), frame] {
          for (auto id : d.conns)
            if (auto* s = shard->registry.find(id)) s->on_deliver(d.room, d.seq, frame, {});
        });
      },
      [=](close_conn& c) {
        net::post(shard->ioc, [shard, c = std::move(c)]() mutable {
          if (auto* s = shard->registry.find(c.conn)) s->close(c.code, std::move(c.reason));
        });
      },
  };
}

}  // namespace chat
