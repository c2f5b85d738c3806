// chatd on --store postgres, against the private PostgreSQL of this test
// binary (tests/support/pg_instance.hpp): acked means committed, through a
// kill -9 and on another chatd process sharing the database; a database that
// cannot be reached fails the start; /readyz follows the database.
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "tests/integration/chatd_process.hpp"
#include "tests/integration/cluster_fixture.hpp"
#include "tests/integration/ws_client.hpp"
#include "tests/support/pg_instance.hpp"

using namespace chat_test;

namespace {

struct postgres_chatd : ::testing::Test {
  void SetUp() override {
    std::string err;
    url = pg_instance::shared().fresh_database(err);
    ASSERT_FALSE(url.empty()) << err;
  }
  void TearDown() override {
    std::string err;
    auto& pg = pg_instance::shared();
    if (!pg.running()) {  // a test that stopped it failed midway
      ASSERT_TRUE(pg.start(err)) << err;
    }
    EXPECT_TRUE(pg.drop_database(url, err)) << err;
  }
  std::vector<std::string> args(const std::string& node) const {
    return {"--allow-anonymous", "--store", "postgres", "--pg-url", url,       "--node", node,
            "--log-level",       "warn",    "--rate",   "100000",   "--burst", "100000"};
  }
  std::string url;
};

std::string text_of_ack(const json& ack) {
  return "m" + std::to_string(ack["id"].get<int>() - 1000);
}

}  // namespace

TEST_F(postgres_chatd, acked_messages_survive_kill9_and_another_process_continues) {
  std::map<uint64_t, std::string> acked;  // seq -> text
  std::string epoch;
  {
    chatd_process s{args("n1")};
    ASSERT_TRUE(s.ok()) << s.log();
    ws_client c;
    ASSERT_TRUE(is_type(c.hello_name(s.port(), "writer"), "welcome"));
    auto j = c.request({{"type", "join"}, {"room", "dur"}}, 1);
    ASSERT_TRUE(j);
    epoch = (*j)["epoch"];
    ASSERT_TRUE(c.request(
        {{"type", "send"}, {"room", "dur"}, {"text", "keyed"}, {"idempotency_key", "k-1"}}, 2));
    acked[1] = "keyed";
    // 400 sends in flight; kill the server once 200 acks came back.
    for (int i = 0; i < 400; ++i)
      c.send(
          {{"type", "send"}, {"id", 1000 + i}, {"room", "dur"}, {"text", "m" + std::to_string(i)}});
    while (acked.size() < 201) {
      auto r = c.recv(10s);
      ASSERT_TRUE(r) << "server stopped answering";
      if (is_type(*r, "ack")) acked[(*r)["seq"]] = text_of_ack(*r);
    }
    s.kill9();
    while (auto r = c.recv(2s))  // acks already on the wire were sent after their commit
      if (is_type(*r, "ack")) acked[(*r)["seq"]] = text_of_ack(*r);
  }
  // Another process (another node name) on the same database.
  chatd_process s{args("n2")};
  ASSERT_TRUE(s.ok()) << s.log();
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_name(s.port(), "reader"), "welcome"));
  auto j = c.request({{"type", "join"}, {"room", "dur"}}, 1);
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["epoch"], epoch) << "history was not lost: the epoch must not change";
  uint64_t last = (*j)["seq"];
  EXPECT_GE(last, acked.rbegin()->first);
  auto h = c.request({{"type", "history"}, {"room", "dur"}, {"limit", 100}}, 2);
  ASSERT_TRUE(h);
  auto& msgs = (*h)["messages"];
  ASSERT_EQ(msgs.size(), std::min<uint64_t>(100, last));
  EXPECT_EQ(msgs.back()["seq"], last);
  // Recovery from the start returns every stored seq once, in order, with the acked texts.
  ws_client r;
  ASSERT_TRUE(is_type(r.hello_name(s.port(), "late"), "welcome"));
  r.send({{"type", "join"}, {"id", 5}, {"room", "dur"}, {"since", 0}, {"epoch", epoch}});
  std::map<uint64_t, std::string> got;
  uint64_t expect = 1;
  for (;;) {
    auto m = r.recv();
    ASSERT_TRUE(m);
    if (is_type(*m, "message")) {
      ASSERT_EQ((*m)["seq"], expect++) << "gap or duplicate";
      got[(*m)["seq"]] = (*m)["text"];
    }
    if (is_type(*m, "joined")) break;
  }
  EXPECT_EQ(expect, last + 1);
  for (auto& [seq, text] : acked) EXPECT_EQ(got[seq], text) << "seq " << seq;
  // The key committed by the killed process still holds; seq continues.
  ws_client w;
  ASSERT_TRUE(is_type(w.hello_name(s.port(), "writer"), "welcome"));
  ASSERT_TRUE(w.request({{"type", "join"}, {"room", "dur"}}, 1));
  auto again = w.request(
      {{"type", "send"}, {"room", "dur"}, {"text", "keyed"}, {"idempotency_key", "k-1"}}, 6);
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)["seq"], 1);
  auto next = w.request({{"type", "send"}, {"room", "dur"}, {"text", "after"}}, 7);
  ASSERT_TRUE(next);
  EXPECT_EQ((*next)["seq"], last + 1);
}

TEST_F(postgres_chatd, unreachable_database_fails_the_start_with_the_reason) {
  chatd_process s{{"--allow-anonymous", "--store", "postgres", "--pg-url",
                   "postgresql://chat:hunter2@127.0.0.1:1/chat?connect_timeout=2", "--log-level",
                   "warn"}};
  EXPECT_FALSE(s.ok());
  auto log = s.log();
  EXPECT_NE(log.find("start_failed"), std::string::npos) << log;
  EXPECT_NE(log.find("cannot connect to PostgreSQL host 127.0.0.1 port 1"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("hunter2"), std::string::npos) << log;
  // Without a URL: refused before anything starts, with the fix.
  chatd_process none{{"--allow-anonymous", "--store", "postgres", "--log-level", "warn"}};
  EXPECT_FALSE(none.ok());
  EXPECT_NE(none.log().find("--pg-url"), std::string::npos) << none.log();
}

TEST_F(postgres_chatd, readyz_follows_the_database) {
  chatd_process s{args("n1")};
  ASSERT_TRUE(s.ok()) << s.log();
  std::string body;
  // Bounded waits on the store's health probe (every 5 s), no traffic needed.
  auto status_within = [&](int want, std::chrono::seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    int got = 0;
    while ((got = http_get(s.port(), "/readyz", body)) != want &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // polling HTTP: no event
    return got;
  };
  ASSERT_EQ(status_within(200, std::chrono::seconds(5)), 200) << body;  // the store's first probe
  std::string err;
  ASSERT_TRUE(pg_instance::shared().stop(err)) << err;
  EXPECT_EQ(status_within(503, std::chrono::seconds(12)), 503) << body;
  EXPECT_NE(body.find("cannot connect"), std::string::npos) << body;
  ASSERT_TRUE(pg_instance::shared().start(err)) << err;
  EXPECT_EQ(status_within(200, std::chrono::seconds(12)), 200) << body;
  // And it serves again: a join and a send commit.
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_name(s.port(), "u"), "welcome"));
  ASSERT_TRUE(c.request({{"type", "join"}, {"room", "back"}}, 1));
  auto ack = c.request({{"type", "send"}, {"room", "back"}, {"text", "hi"}}, 2);
  ASSERT_TRUE(ack);
  EXPECT_TRUE(is_type(*ack, "ack")) << ack->dump();
}

// --- failover: three nodes on one database -------------------------------------------------

namespace {

enum class disruption { kill9, sigstop, sigterm };

// What the nodes logged about claims, fencing, peers and re-joins: printed
// when a failover test fails, to tell which node held which room when.
void print_failover_logs(cluster_fixture& cl) {
  for (size_t i = 0; i < 3; ++i) {
    if (!cl.nodes[i]) continue;
    std::istringstream in(cl.nodes[i]->log());
    std::string line;
    std::cout << "--- n" << i + 1 << "\n";
    while (std::getline(in, line))
      for (const char* what : {"claimed", "fenced", "peer_", "rejoin", "claim_lost", "error"})
        if (line.find(what) != std::string::npos) {
          std::cout << line.substr(0, 220) << "\n";
          break;
        }
  }
}

// Everything a connection gets for `room` joined from seq 0 in `epoch`, until
// it has 1..last (bounded). Right after a paused node resumes, a room may for
// up to a second have an actor on two nodes (writes are fenced: only one of
// them commits); a join that reaches the stale one sees its older end until
// it is told (each directory checks its rooms' claims every second) and the
// connection is joined again where the room lives: then the rest arrives.
struct recovered_room {
  std::map<uint64_t, std::string> stored;  // seq -> text
  uint64_t next = 1;                       // the seq expected next
  size_t out_of_order = 0;
  bool joined = false;
  std::vector<std::string> errors;
};
recovered_room recover_room(ws_client& c, const std::string& room, const std::string& epoch,
                            uint64_t last) {
  recovered_room out;
  c.send({{"type", "join"}, {"id", 5}, {"room", room}, {"since", 0}, {"epoch", epoch}});
  auto until = std::chrono::steady_clock::now() + 10s;
  while (!(out.joined && out.next == last + 1) && std::chrono::steady_clock::now() < until) {
    auto m = c.recv(1s);
    if (!m || m->value("room", "") != room) continue;
    if (is_type(*m, "message")) {
      if ((*m)["seq"] != out.next) ++out.out_of_order;
      out.next = (*m)["seq"].get<uint64_t>() + 1;
      out.stored[(*m)["seq"]] = (*m)["text"];
    }
    if (is_type(*m, "joined")) {
      EXPECT_EQ((*m)["epoch"], epoch) << room << ": the room's history was reset";
      EXPECT_EQ((*m)["recovered"], true) << m->dump();
      out.joined = true;
    }
    if (is_type(*m, "error")) out.errors.push_back(m->dump());
  }
  return out;
}

// A writer on n1 and a reader on n2 in a room whose home is n3; n3 is killed,
// paused or stopped. The room must take sends again within seconds on another
// node, every acked message must be stored once at the seq its ack named, the
// reader must see one gapless sequence, and after n3 comes back (or resumes)
// seq goes on without a fork.
void run_failover(const std::string& url, disruption how, const std::string& label) {
  cluster_fixture cl;
  cl.log_level = "info";  // the claims and fencing are logged at info: shown if the test fails
  cl.store_args = [&](size_t) {
    return std::vector<std::string>{"--store", "postgres", "--pg-url", url, "--pg-pool", "2"};
  };
  for (size_t i = 0; i < 3; ++i) cl.start(i);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cl.nodes[i]->ok() && cl.ready(i)) << cl.nodes[i]->log();
  auto room = room_homed_on(2, "failover-");
  ws_client w, rd;
  ASSERT_TRUE(is_type(w.hello_name(cl.http[0], "writer"), "welcome"));
  ASSERT_TRUE(is_type(rd.hello_name(cl.http[1], "reader"), "welcome"));
  auto jw = w.request({{"type", "join"}, {"room", room}}, 1);
  ASSERT_TRUE(jw && is_type(*jw, "joined")) << (jw ? jw->dump() : "timeout");
  std::string epoch = (*jw)["epoch"];
  auto jr = rd.request({{"type", "join"}, {"room", room}}, 1);
  ASSERT_TRUE(jr && is_type(*jr, "joined"));

  std::map<uint64_t, std::string> acked;  // seq -> text
  std::vector<json> seen;                 // what the reader got
  std::vector<std::string> reader_errors;
  auto drain_reader = [&](std::chrono::milliseconds wait) {
    while (auto m = rd.recv(wait)) {
      if (is_type(*m, "message")) seen.push_back(*m);
      if (is_type(*m, "error")) reader_errors.push_back(m->dump());
      wait = std::chrono::milliseconds(0);
    }
  };
  int next_id = 100;
  int unanswered = 0;
  std::vector<std::string> writer_errors;
  // Sends one message until it is acked (same key on every try), bounded.
  // Every try must be answered (an ack, or `unavailable` when the room's node
  // was lost with it in flight), never left to the client's timeout.
  auto send_acked = [&](const std::string& text, std::chrono::seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = w.request({{"type", "send"}, {"room", room}, {"text", text}, {"idempotency_key", text}},
                         ++next_id, 4s);
      if (!r) ++unanswered;
      if (r && is_type(*r, "error")) writer_errors.push_back(r->dump());
      drain_reader(0ms);
      if (r && is_type(*r, "ack")) {
        uint64_t seq = (*r)["seq"];
        auto [it, fresh] = acked.emplace(seq, text);
        EXPECT_TRUE(fresh || it->second == text) << "seq " << seq << " acked for two texts";
        return true;
      }
      std::this_thread::sleep_for(100ms);  // the room is moving: retry shortly
    }
    return false;
  };
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(send_acked("before-" + std::to_string(i), 10s));

  auto t0 = std::chrono::steady_clock::now();
  if (how == disruption::kill9) cl.nodes[2]->kill9();
  if (how == disruption::sigstop) ::kill(cl.nodes[2]->pid(), SIGSTOP);
  if (how == disruption::sigterm) ::kill(cl.nodes[2]->pid(), SIGTERM);
  ASSERT_TRUE(send_acked("during-0", 20s)) << "the room never came back";
  auto outage = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ measure  ] " << label << ": the room took sends again " << outage
            << " s after n3 went away\n";
  EXPECT_LT(outage, 10.0);
  EXPECT_EQ(unanswered, 0) << "a send was left without an answer";
  // Its sends carry keys: the writer's node sends them again to the new home.
  EXPECT_TRUE(writer_errors.empty()) << writer_errors.front();
  for (int i = 1; i < 10; ++i) ASSERT_TRUE(send_acked("during-" + std::to_string(i), 10s));

  // n3 comes back: resumed with its old claim (it must be fenced), or restarted.
  if (how == disruption::sigstop) {
    ::kill(cl.nodes[2]->pid(), SIGCONT);
  } else {
    if (how == disruption::sigterm) {
      EXPECT_EQ(cl.nodes[2]->terminate(10s), 0);
    }
    cl.start(2);
    ASSERT_TRUE(cl.nodes[2]->ok()) << cl.nodes[2]->log();
  }
  ASSERT_TRUE(cl.ready(2)) << cl.nodes[2]->log();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(send_acked("after-" + std::to_string(i), 20s));
  uint64_t last = acked.rbegin()->first;

  // Stored: 1..last, each once, and every ack's seq holds its text.
  ws_client check;
  ASSERT_TRUE(is_type(check.hello_name(cl.http[1], "check"), "welcome"));
  auto got = recover_room(check, room, epoch, last);
  EXPECT_TRUE(got.joined);
  EXPECT_EQ(got.out_of_order, 0u) << "gap or duplicate in the store";
  EXPECT_TRUE(got.errors.empty()) << got.errors.front();
  auto& stored = got.stored;
  uint64_t expect = got.next;
  EXPECT_EQ(expect, last + 1);
  EXPECT_EQ(stored.size(), 30u) << "each of the 30 keys stored exactly once";
  if (stored.size() != 30u) print_failover_logs(cl);
  for (auto& [seq, text] : acked) EXPECT_EQ(stored[seq], text) << "seq " << seq;

  // The reader saw one sequence: no gap, no duplicate (its gateway joined the
  // room again with `since` wherever it moved).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((seen.empty() || seen.back()["seq"] != last) && std::chrono::steady_clock::now() < deadline)
    drain_reader(200ms);
  ASSERT_FALSE(seen.empty());
  for (size_t i = 0; i < seen.size(); ++i)
    ASSERT_EQ(seen[i]["seq"], i + 1) << "reader: gap or duplicate at " << i << ": " << seen[i];
  EXPECT_EQ(seen.back()["seq"], last);
  EXPECT_TRUE(reader_errors.empty()) << reader_errors.front();
  if (how == disruption::sigstop) {
    std::string body;
    ASSERT_EQ(http_get(cl.http[2], "/metrics", body), 200);
    std::cout << "[ note     ] n3 after SIGCONT: "
              << body.substr(body.find("\nchat_rooms_fenced_total ") + 1, 27) << "\n";
  }
}

}  // namespace

TEST_F(postgres_chatd, killed_home_costs_its_room_seconds_and_loses_no_acked_message) {
  run_failover(url, disruption::kill9, "kill -9");
}

TEST_F(postgres_chatd, paused_home_is_fenced_when_it_resumes) {
  run_failover(url, disruption::sigstop, "SIGSTOP");
}

TEST_F(postgres_chatd, graceful_stop_hands_its_rooms_over) {
  run_failover(url, disruption::sigterm, "SIGTERM");
}

// --- failover under load: a dozen rooms, clients on every surviving node ---------------------

namespace {

struct room_tally {
  std::map<uint64_t, std::string> acked;  // seq -> text
  std::set<std::string> keys;             // every key sent
  double longest_wait_ms = 0;             // a send's first try to its ack (retries included)
  size_t home = 0;
};

// Writers on n1 and n2 send round-robin into 12 rooms (each send with its
// own key, retried with it until acked), readers on n1 and n2 are in every
// room; n3 is killed (then restarted), or paused for 5 s (then resumed). Per
// room: the longest any send waited, what was acked and what is stored.
void run_failover_rooms(const std::string& url, disruption how, const std::string& label) {
  cluster_fixture cl;
  cl.log_level = "info";  // claims, fencing and re-joins: printed if the test fails
  cl.store_args = [&](size_t) {
    return std::vector<std::string>{"--store", "postgres", "--pg-url", url, "--pg-pool", "3"};
  };
  for (size_t i = 0; i < 3; ++i) cl.start(i);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cl.nodes[i]->ok() && cl.ready(i)) << cl.nodes[i]->log();
  constexpr int nrooms = 12;
  std::vector<std::string> rooms;
  std::map<std::string, room_tally> tally;
  std::map<std::string, std::string> epochs;
  for (int i = 0; i < nrooms; ++i) {
    rooms.push_back("load-" + std::to_string(i));
    tally[rooms.back()].home = chat::rendezvous_home(rooms.back(), cluster_names());
  }
  ws_client writer[2], reader[2];
  std::map<std::string, std::vector<uint64_t>> seen[2];
  std::vector<std::string> errors;
  for (int k = 0; k < 2; ++k) {
    ASSERT_TRUE(is_type(writer[k].hello_name(cl.http[k], "w" + std::to_string(k)), "welcome"));
    ASSERT_TRUE(is_type(reader[k].hello_name(cl.http[k], "r" + std::to_string(k)), "welcome"));
    for (auto& room : rooms) {
      auto j = writer[k].request({{"type", "join"}, {"room", room}}, 1);
      ASSERT_TRUE(j && is_type(*j, "joined")) << (j ? j->dump() : "timeout");
      epochs[room] = (*j)["epoch"];
      ASSERT_TRUE(reader[k].request({{"type", "join"}, {"room", room}}, 1));
    }
  }
  auto drain = [&](int k, std::chrono::milliseconds wait) {
    while (auto m = reader[k].recv(wait)) {
      if (is_type(*m, "message")) seen[k][(*m)["room"]].push_back((*m)["seq"]);
      if (is_type(*m, "error")) errors.push_back("reader: " + m->dump());
      wait = std::chrono::milliseconds(0);
    }
  };
  int next_id = 100;
  auto send_acked = [&](int k, const std::string& room, const std::string& text) {
    auto& t = tally[room];
    t.keys.insert(text);
    auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < 20s) {
      auto r = writer[k].request(
          {{"type", "send"}, {"room", room}, {"text", text}, {"idempotency_key", text}}, ++next_id, 4s);
      drain(0, 0ms);
      drain(1, 0ms);
      if (!r) errors.push_back("writer: no answer in room " + room);
      if (r && is_type(*r, "error")) errors.push_back("writer: " + r->dump());
      if (r && is_type(*r, "ack")) {
        auto [it, fresh] = t.acked.emplace((*r)["seq"].get<uint64_t>(), text);
        EXPECT_TRUE(fresh || it->second == text) << room << " seq " << it->first << " acked twice";
        t.longest_wait_ms = std::max(
            t.longest_wait_ms,
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
        return true;
      }
      std::this_thread::sleep_for(100ms);  // retry shortly
    }
    return false;
  };
  auto phase = [&](const std::string& prefix, int per_room) {
    for (int i = 0; i < per_room; ++i)
      for (int r = 0; r < nrooms; ++r)
        if (!send_acked((i + r) % 2, rooms[r], prefix + rooms[r] + "-" + std::to_string(i)))
          return false;
    return true;
  };
  ASSERT_TRUE(phase("before-", 3));
  for (auto& [room, t] : tally) t.longest_wait_ms = 0;  // measure the disruption only
  auto t0 = std::chrono::steady_clock::now();
  if (how == disruption::kill9) cl.nodes[2]->kill9();
  if (how == disruption::sigstop) ::kill(cl.nodes[2]->pid(), SIGSTOP);
  if (!phase("during-", 3)) {
    print_failover_logs(cl);
    for (auto& e : errors) std::cout << "[ note     ] " << e << "\n";
    FAIL() << "a room took no sends while n3 was away";
  }
  if (how == disruption::sigstop) {
    while (std::chrono::steady_clock::now() - t0 < 5s) {  // paused for 5 s in all
      drain(0, 100ms);
      drain(1, 100ms);
    }
    ::kill(cl.nodes[2]->pid(), SIGCONT);
  } else {
    cl.start(2);
    ASSERT_TRUE(cl.nodes[2]->ok()) << cl.nodes[2]->log();
  }
  ASSERT_TRUE(cl.ready(2)) << cl.nodes[2]->log();
  std::map<std::string, double> disruption_wait;
  for (auto& [room, t] : tally) disruption_wait[room] = t.longest_wait_ms;
  if (!phase("after-", 3)) {
    print_failover_logs(cl);
    for (auto& e : errors) std::cout << "[ note     ] " << e << "\n";
    FAIL() << "a room took no sends after n3 came back";
  }

  // Per room: stored once each, at the acked seqs, gapless; the readers on
  // the surviving nodes saw every seq once, in order.
  ws_client check;
  ASSERT_TRUE(is_type(check.hello_name(cl.http[1], "check"), "welcome"));
  size_t total_acked = 0, total_stored = 0, lost = 0, dups = 0, reader_gaps = 0;
  double worst = 0;
  for (auto& room : rooms) {
    auto& t = tally[room];
    uint64_t last = t.acked.rbegin()->first;
    auto got = recover_room(check, room, epochs[room], last);
    auto& stored = got.stored;
    dups += got.out_of_order;
    for (auto& e : got.errors) errors.push_back("check: " + e);
    EXPECT_TRUE(got.joined) << room;
    EXPECT_EQ(got.next, last + 1) << room;
    std::set<std::string> texts;
    for (auto& [seq, text] : stored) texts.insert(text);
    EXPECT_EQ(texts, t.keys) << room << ": every key stored, nothing else";
    EXPECT_EQ(stored.size(), t.keys.size()) << room << ": each key exactly once";
    if (stored.size() > t.keys.size()) dups += stored.size() - t.keys.size();
    for (auto& [seq, text] : t.acked)
      if (stored[seq] != text) ++lost;
    total_acked += t.acked.size();
    total_stored += stored.size();
    for (int k = 0; k < 2; ++k) {
      auto until_seen = std::chrono::steady_clock::now() + 10s;
      while ((seen[k][room].empty() || seen[k][room].back() < last) &&
             std::chrono::steady_clock::now() < until_seen)
        drain(k, 200ms);
      auto& s = seen[k][room];
      for (size_t i = 0; i < s.size(); ++i)
        if (s[i] != i + 1) {
          ++reader_gaps;
          ADD_FAILURE() << "reader on n" << k + 1 << ", " << room << ": seq " << s[i] << " at " << i;
          break;
        }
      EXPECT_FALSE(s.empty() || s.back() != last) << "reader on n" << k + 1 << ", " << room;
    }
    worst = std::max(worst, disruption_wait[room]);
    std::cout << "[ measure  ] " << label << ": " << room << " (home n" << t.home + 1
              << "): longest send wait " << static_cast<int>(disruption_wait[room])
              << " ms; acked " << t.acked.size() << ", stored " << stored.size() << "\n";
  }
  std::cout << "[ measure  ] " << label << ": " << nrooms << " rooms, " << total_acked
            << " acked, " << total_stored << " stored, lost " << lost << ", duplicates " << dups
            << ", reader gaps " << reader_gaps << ", errors seen " << errors.size()
            << "; worst room outage " << static_cast<int>(worst) << " ms\n";
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(dups, 0u);
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_LT(worst, 5000.0) << "every room takes sends again within 5 s";
}

}  // namespace

TEST_F(postgres_chatd, failover_under_load_kill9) {
  run_failover_rooms(url, disruption::kill9, "failover kill -9");
}

TEST_F(postgres_chatd, failover_under_load_sigstop_5s) {
  run_failover_rooms(url, disruption::sigstop, "failover SIGSTOP 5 s");
}
