#pragma once
// Shared helpers for the actor tests under CAF's test coordinator:
//  - test_config: an actor_system_config with every chat message type registered;
//  - recorder: a fake gateway / registry / directory that keeps every message it
//    receives (in arrival order) in its state, for the test to inspect;
//  - counting_backend: a store_backend decorator that counts append calls and
//    fails them on demand;
//  - small JSON helpers to look into the frames the actors produce.
// Include "tests/support/caf_gtest.hpp" before this header.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/store/backend.hpp"
#include "caf/all.hpp"
#include "messages/codec.hpp"
#include "messages/types.hpp"

namespace chat_test {

using json = nlohmann::json;

struct test_config : caf::actor_system_config {
  test_config() { chat::register_message_types(*this); }
};

// The state of a stateful actor behind a handle (the 0.17 fixture has no deref<>()).
template <class State, class Handle>
State& state_of(const Handle& h) {
  auto ptr = caf::actor_cast<caf::abstract_actor*>(h);
  return static_cast<caf::stateful_actor<State>*>(ptr)->state;
}

// Asks a recorder to monitor an actor (its down_msg is then recorded).
using watch_atom = caf::atom_constant<caf::atom("watch")>;
constexpr auto watch_atom_v = watch_atom::value;

// A recorder handle as a gateway (the typed interface rooms send to).
inline chat::gateway_actor as_gw(const caf::actor& a) {
  return caf::actor_cast<chat::gateway_actor>(a);
}

// A reply to one connection, as the gateway encodes it for the client.
struct conn_frame {
  uint64_t conn = 0;
  std::string frame;
};

// The frames a gateway sends a client for a joined_msg: recovered messages, then joined.
inline std::vector<std::string> frames_of(const chat::joined_msg& m) {
  std::vector<std::string> out;
  for (auto& r : m.recovered) out.push_back(chat::encode_message(r));
  out.push_back(chat::encode(m.info));
  return out;
}

struct recorder_state {
  std::string label;
  std::vector<std::string> log;  // kind of every message, in arrival order
  std::vector<conn_frame> to_conns;  // every reply (ack, error, left, history, presence), encoded
  std::vector<chat::ack_msg> acks;
  std::vector<chat::error_msg> errors;
  std::vector<chat::history_page> histories;
  std::vector<chat::presence_list> presences;
  std::vector<chat::joined_msg> joins;
  std::vector<chat::deliver> delivers;
  std::vector<chat::conns_deliver> conns_delivers;
  std::vector<chat::close_conn> closes;
  std::vector<chat::user_deliver> user_delivers;
  std::vector<chat::room_idle> idles;
  std::vector<caf::down_msg> downs;
  std::vector<caf::message> others;
  static inline const char* name = "recorder";
};
using recorder_actor = caf::stateful_actor<recorder_state>;

// `label` only names it: CAF 0.17 spawns an actor without arguments through a null
// shared_ptr<tuple<>>, which UBSan reports (init_fun_factory.hpp).
inline caf::behavior recorder_impl(recorder_actor* self, std::string label) {
  self->state.label = std::move(label);
  self->set_down_handler([=](caf::down_msg& dm) {
    self->state.log.push_back("down");
    self->state.downs.push_back(dm);
  });
  self->set_default_handler([=](caf::scheduled_actor*, caf::message_view& x) -> caf::result<caf::message> {
    self->state.log.push_back("other");
    self->state.others.push_back(x.copy_content_to_message());
    return caf::message{};
  });
  auto reply = [=](auto& x) {
    self->state.log.push_back("reply");
    self->state.to_conns.push_back({x.conn, chat::encode(x)});
  };
  return {
      [=](chat::ack_msg& x) {
        reply(x);
        self->state.acks.push_back(std::move(x));
      },
      [=](chat::error_msg& x) {
        reply(x);
        self->state.errors.push_back(std::move(x));
      },
      [=](chat::left_msg& x) { reply(x); },
      [=](chat::read_msg& x) { reply(x); },
      [=](chat::my_rooms_msg& x) { reply(x); },
      [=](chat::room_info& x) { reply(x); },
      [=](chat::history_page& x) {
        reply(x);
        self->state.histories.push_back(std::move(x));
      },
      [=](chat::presence_list& x) {
        reply(x);
        self->state.presences.push_back(std::move(x));
      },
      [=](chat::joined_msg& x) {
        self->state.log.push_back("joined_msg");
        self->state.joins.push_back(std::move(x));
      },
      [=](chat::deliver& x) {
        self->state.log.push_back("deliver");
        self->state.delivers.push_back(std::move(x));
      },
      [=](chat::conns_deliver& x) {
        self->state.log.push_back("conns_deliver");
        self->state.conns_delivers.push_back(std::move(x));
      },
      [=](chat::close_conn& x) {
        self->state.log.push_back("close_conn");
        self->state.closes.push_back(std::move(x));
      },
      [=](chat::user_deliver& x) {
        self->state.log.push_back("user_deliver");
        self->state.user_delivers.push_back(std::move(x));
      },
      [=](chat::room_idle& x) {
        self->state.log.push_back("room_idle");
        self->state.idles.push_back(std::move(x));
      },
      [=](watch_atom, const caf::actor& whom) { self->monitor(whom); },
  };
}

inline recorder_state& rec(const caf::actor& a) { return state_of<recorder_state>(a); }

inline json parse(const std::string& frame) {
  auto j = json::parse(frame, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << frame;
  EXPECT_EQ(frame.find('\n'), std::string::npos) << "raw newline in an encoded object: " << frame;
  return j;
}

inline std::string type_of(const std::string& frame) {
  auto j = parse(frame);
  return j.is_object() && j.contains("type") ? j["type"].get<std::string>() : std::string{};
}

// Frames sent to single connections (to_conn) of the given type ("" = all).
inline std::vector<json> conn_frames(const caf::actor& gw, const std::string& type = "",
                                     uint64_t conn = 0) {
  std::vector<json> out;
  for (auto& t : rec(gw).to_conns) {
    if (conn != 0 && t.conn != conn) continue;
    auto j = parse(t.frame);
    if (type.empty() || j["type"] == type) out.push_back(std::move(j));
  }
  return out;
}

// Broadcast frames (deliver) of the given type ("" = all).
inline std::vector<json> delivered(const caf::actor& gw, const std::string& type = "") {
  std::vector<json> out;
  for (auto& d : rec(gw).delivers) {
    auto j = parse(d.frame);
    if (type.empty() || j["type"] == type) out.push_back(std::move(j));
  }
  return out;
}

// The seq of every broadcast stored message, in arrival order.
inline std::vector<uint64_t> delivered_seqs(const caf::actor& gw) {
  std::vector<uint64_t> out;
  for (auto& d : rec(gw).delivers) {
    auto j = parse(d.frame);
    if (j["type"] != "message") continue;
    EXPECT_EQ(d.seq, j["seq"].get<uint64_t>()) << "deliver.seq differs from the frame's seq";
    out.push_back(j["seq"].get<uint64_t>());
  }
  return out;
}

inline std::vector<uint64_t> ack_seqs(const caf::actor& gw, uint64_t conn = 0) {
  std::vector<uint64_t> out;
  for (auto& j : conn_frames(gw, "ack", conn)) out.push_back(j["seq"].get<uint64_t>());
  return out;
}

inline std::vector<uint64_t> iota_seqs(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (uint64_t i = first; i <= last; ++i) out.push_back(i);
  return out;
}

// A store_backend decorator: counts append calls (and keeps what each call got),
// and fails appends on demand, either before storing (`fail_appends`) or after
// storing (`commit_then_fail`: the ambiguous case of a commit whose answer is lost).
class counting_backend : public chat::store_backend {
 public:
  explicit counting_backend(std::shared_ptr<chat::store_backend> inner) : inner_(std::move(inner)) {}

  size_t append_calls = 0;
  size_t member_calls = 0;
  std::vector<std::vector<chat::append_batch>> calls;  // the batches of every call
  int fail_appends = 0;      // the next N calls fail and store nothing
  int commit_then_fail = 0;  // the next N calls store, then report failure
  bool fail_all = false;     // every append fails and stores nothing
  int fail_loads = 0;        // the next N load_room calls fail
  size_t load_calls = 0;
  size_t claim_calls = 0;
  size_t parallel = 1;  // what concurrency() claims (the test scheduler runs one thing at a time)

  bool load_room(const std::string& room, uint32_t recent_limit, int64_t idem_since_ms,
                 chat::room_snapshot& out, std::string& err) override {
    ++load_calls;
    if (fail_loads > 0) {
      --fail_loads;
      err = "injected load failure";
      return false;
    }
    return inner_->load_room(room, recent_limit, idem_since_ms, out, err);
  }
  bool claim_room(const std::string& room, const std::string& owner, uint32_t recent_limit,
                  int64_t idem_since_ms, chat::room_snapshot& out, std::string& err) override {
    ++claim_calls;
    return inner_->claim_room(room, owner, recent_limit, idem_since_ms, out, err);
  }
  using chat::store_backend::append;
  bool append(const std::vector<chat::append_batch>& batches,
              std::vector<chat::append_result>& results, std::string& err) override {
    // Calls that only store memberships (a join's, a read position) pass
    // through uncounted and never fail: the counts and failures are the
    // events' (member_calls counts those).
    bool events = false;
    for (auto& b : batches) events = events || !b.msgs.empty();
    if (!events) {
      ++member_calls;
      return inner_->append(batches, results, err);
    }
    ++append_calls;
    calls.push_back(batches);
    if (fail_all || fail_appends > 0) {
      if (fail_appends > 0) --fail_appends;
      err = "injected failure";
      return false;
    }
    if (commit_then_fail > 0) {
      --commit_then_fail;
      if (!inner_->append(batches, results, err)) return false;
      err = "injected failure after commit";
      return false;
    }
    return inner_->append(batches, results, err);
  }
  bool range(const chat::range_query& q, std::vector<chat::stored_msg>& out,
             std::string& err) override {
    return inner_->range(q, out, err);
  }
  bool get_event(const std::string& room, uint64_t seq, chat::stored_msg& out, bool& found,
                 std::string& err) override {
    return inner_->get_event(room, seq, out, found, err);
  }
  bool room_exists(const std::string& room, bool& out, std::string& err) override {
    return inner_->room_exists(room, out, err);
  }
  bool search(const std::string& room, const std::string& query, uint64_t before, uint32_t limit,
              std::vector<chat::stored_msg>& out, std::string& err) override {
    return inner_->search(room, query, before, limit, out, err);
  }
  bool user_rooms(const std::string& user, std::vector<chat::user_room>& out,
                  std::string& err) override {
    return inner_->user_rooms(user, out, err);
  }
  bool count_unread(const std::string& room, const std::string& user, uint64_t after,
                    uint64_t upto, uint64_t& out, std::string& err) override {
    return inner_->count_unread(room, user, after, upto, out, err);
  }
  bool lost_claims(const std::string& owner,
                   const std::vector<std::pair<std::string, uint64_t>>& claims,
                   std::vector<std::string>& lost, std::string& err) override {
    return inner_->lost_claims(owner, claims, lost, err);
  }
  bool first_seq(const std::string& room, uint64_t& out, std::string& err) override {
    return inner_->first_seq(room, out, err);
  }
  bool trim(const chat::retention_policy& p, int64_t now_ms, uint64_t& removed,
            std::string& err) override {
    return inner_->trim(p, now_ms, removed, err);
  }
  bool healthy(std::string& err) override { return inner_->healthy(err); }
  size_t concurrency() const override { return parallel; }
  bool index_search(size_t budget, bool& more, std::string& err) override {
    return inner_->index_search(budget, more, err);
  }
  size_t search_backlog() const override { return inner_->search_backlog(); }
  bool has_search_indexer() const override { return inner_->has_search_indexer(); }
  bool store_user_ban(const chat::user_ban& ban, std::string& err) override {
    return inner_->store_user_ban(ban, err);
  }
  bool user_bans(std::vector<chat::user_ban>& out, std::string& err) override {
    return inner_->user_bans(out, err);
  }

  // Everything stored for a room, oldest first (read directly, outside the actor:
  // safe under the single-threaded test coordinator).
  std::vector<chat::stored_msg> stored(const std::string& room) {
    std::vector<chat::stored_msg> out;
    std::string err;
    chat::range_query q;
    q.room = room;
    q.limit = 1000000;
    q.newest = false;
    EXPECT_TRUE(inner_->range(q, out, err)) << err;
    return out;
  }

 private:
  std::shared_ptr<chat::store_backend> inner_;
};

// Message builders that name their fields, so that fields added to the structs
// later (with defaults) need no change here and cause no warnings.
inline chat::join_req make_join(const std::string& room, chat::conn_ref conn, chat::member_info who,
                                const std::string& id = "", bool recover = false,
                                uint64_t since = 0, const std::string& epoch = "") {
  chat::join_req r;
  r.room = room;
  r.conn = std::move(conn);
  r.who = std::move(who);
  r.req_id = id;
  r.recover = recover;
  r.since = since;
  r.epoch = epoch;
  return r;
}
inline chat::leave_req make_leave(const std::string& room, chat::conn_ref conn,
                                  const std::string& id = "", bool reply = true) {
  chat::leave_req r;
  r.room = room;
  r.conn = std::move(conn);
  r.req_id = id;
  r.reply = reply;
  return r;
}
inline chat::send_req make_send(const std::string& room, chat::conn_ref conn, chat::member_info who,
                                const std::string& id, const std::string& text,
                                const std::string& key = "", const std::string& dm_to = "") {
  chat::send_req r;
  r.room = room;
  r.conn = std::move(conn);
  r.who = std::move(who);
  r.req_id = id;
  r.text = text;
  r.idem_key = key;
  r.dm_to = dm_to;
  return r;
}
inline chat::history_req make_history(const std::string& room, chat::conn_ref conn,
                                      const std::string& id, uint64_t before, uint32_t limit) {
  chat::history_req r;
  r.room = room;
  r.conn = std::move(conn);
  r.req_id = id;
  r.before = before;
  r.limit = limit;
  return r;
}
inline chat::presence_req make_presence(const std::string& room, chat::conn_ref conn,
                                        const std::string& id) {
  chat::presence_req r;
  r.room = room;
  r.conn = std::move(conn);
  r.req_id = id;
  return r;
}
inline chat::typing_req make_typing(const std::string& room, chat::conn_ref conn,
                                    const std::string& user, const std::string& name) {
  chat::typing_req r;
  r.room = room;
  r.conn = std::move(conn);
  r.user = user;
  r.name = name;
  return r;
}
inline chat::user_deliver make_user_deliver(std::vector<std::string> users, const std::string& room,
                                            uint64_t seq, const std::string& frame) {
  chat::user_deliver d;
  d.users = std::move(users);
  d.room = room;
  d.seq = seq;
  d.frame = frame;
  return d;
}
inline chat::kick_user make_kick(const std::string& user, uint16_t code, const std::string& reason) {
  chat::kick_user k;
  k.user = user;
  k.code = code;
  k.reason = reason;
  return k;
}

}  // namespace chat_test
