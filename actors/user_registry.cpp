#include "actors/user_registry.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "actors/metrics.hpp"
#include "messages/clock.hpp"

namespace chat {

namespace {

void drop_gateway_ref(user_registry_actor* self, const gateway_actor& gw) {
  auto& gws = self->state.gateways;
  auto it = gws.find(gw);
  if (it != gws.end() && --it->second == 0) {
    self->demonitor(gw.address());
    gws.erase(it);
  }
}

void remove_conn(user_registry_actor* self, const std::string& user, const conn_ref& c) {
  auto& users = self->state.users;
  auto it = users.find(user);
  if (it == users.end()) return;
  auto& v = it->second;
  for (auto e = v.begin(); e != v.end(); ++e)
    if (e->conn == c) {
      v.erase(e);
      drop_gateway_ref(self, c.gateway);
      break;
    }
  if (v.empty()) users.erase(it);
}

// Closes every connection of `user` this registry knows; how many.
uint64_t close_all(user_registry_actor* self, const std::string& user, uint16_t code,
                   const std::string& reason) {
  auto& st = self->state;
  auto it = st.users.find(user);
  if (it == st.users.end()) return 0;
  auto v = std::move(it->second);
  st.users.erase(it);
  for (auto& e : v) {
    drop_gateway_ref(self, e.conn.gateway);
    self->send(e.conn.gateway, close_conn{e.conn.id, code, reason});
  }
  return v.size();
}

}  // namespace

caf::behavior user_registry_impl(user_registry_actor* self, size_t max_conns_per_user,
                                 registry_deps deps) {
  self->state.max_conns_per_user = max_conns_per_user;
  self->state.deps = std::move(deps);
  // The bans stored by this node's store (a restart keeps them).
  if (self->state.deps.bans && self->state.deps.store)
    self->request(self->state.deps.store, std::chrono::seconds(30), bans_atom_v)
        .then(
            [=](const std::vector<user_ban>& all) {
              for (auto& b : all)
                if (b.active(now_ms())) self->state.deps.bans->apply(b);
            },
            [=](caf::error& e) {
              spdlog::error("event=user_bans_load_failed error=\"{}\"", self->system().render(e));
            });
  self->set_down_handler([=](caf::down_msg& dm) {
    auto gw = caf::actor_cast<gateway_actor>(dm.source);
    auto& st = self->state;
    st.gateways.erase(gw);
    for (auto it = st.users.begin(); it != st.users.end();) {
      auto& v = it->second;
      v.erase(std::remove_if(v.begin(), v.end(), [&](auto& e) { return e.conn.gateway == gw; }),
              v.end());
      it = v.empty() ? st.users.erase(it) : std::next(it);
    }
  });
  return {
      [=](user_online& on) {
        auto& st = self->state;
        if (st.deps.bans && st.deps.bans->active(on.user, now_ms())) {
          // Said hello on a node that did not know the ban yet.
          self->send(on.conn.gateway, close_conn{on.conn.id, 4003, banned_reason});
          return;
        }
        auto& v = st.users[on.user];
        // Gateways register their connections again whenever placement
        // changes: a connection already here is not counted twice.
        for (auto& e : v)
          if (e.conn == on.conn) return;
        // Oldest first, by when each connection said hello (re-registrations
        // from several gateways arrive in any order).
        auto pos = std::find_if(v.begin(), v.end(),
                                [&](const auto& e) { return e.since_ms > on.since_ms; });
        v.insert(pos, {on.conn, on.since_ms});
        if (st.gateways[on.conn.gateway]++ == 0) self->monitor(on.conn.gateway);
        while (v.size() > st.max_conns_per_user) {
          auto oldest = v.front();
          v.erase(v.begin());
          drop_gateway_ref(self, oldest.conn.gateway);
          self->send(oldest.conn.gateway,
                     close_conn{oldest.conn.id, 4009, "replaced by a newer connection"});
        }
      },
      [=](const user_offline& off) { remove_conn(self, off.user, off.conn); },
      [=](const user_deliver& d) {
        // Group by gateway: one CAF message per gateway.
        std::map<gateway_actor, std::vector<uint64_t>> per_gw;
        for (auto& user : d.users) {
          auto it = self->state.users.find(user);
          if (it == self->state.users.end()) continue;
          for (auto& e : it->second)
            if (!(e.conn == d.skip)) per_gw[e.conn.gateway].push_back(e.conn.id);
        }
        for (auto& [gw, ids] : per_gw)
          self->send(gw, conns_deliver{std::move(ids), d.room, d.seq, d.frame});
      },
      [=](const kick_user& k) -> uint64_t { return close_all(self, k.user, k.code, k.reason); },
      // A server-wide ban made or lifted (the API sends it to every node's
      // registry): answered once this node's store holds it.
      [=](const user_ban& b) -> caf::result<bool> {
        auto& st = self->state;
        if (!st.deps.bans) return false;
        st.deps.bans->apply(b);
        uint64_t closed = 0;
        if (b.active(now_ms())) closed = close_all(self, b.user, 4003, banned_reason);
        spdlog::info("event=user_ban user={} lift={} until={} closed={} reason=\"{}\"", b.user,
                     b.lift, b.until == user_ban::forever ? -1 : b.until, closed, b.reason);
        if (!st.deps.store) return true;
        auto rp = self->make_response_promise<bool>();
        self->request(st.deps.store, std::chrono::seconds(10), b)
            .then([=](bool ok) mutable { rp.deliver(ok); },
                  [=](caf::error& e) mutable {
                    spdlog::error("event=user_ban_store_failed user={} error=\"{}\"", b.user,
                                  self->system().render(e));
                    rp.deliver(std::move(e));
                  });
        return rp;
      },
      // How many connections a user has (0 = offline).
      [=](caf::get_atom, const std::string& user) -> uint64_t {
        auto it = self->state.users.find(user);
        return it == self->state.users.end() ? 0 : it->second.size();
      },
  };
}

}  // namespace chat
