// ThreadSanitizer where our threads meet without CAF in between. Debian's CAF
// is not instrumented, so a hand-off through an actor mailbox looks like a race
// to TSan; these are the structures that I/O threads and actors share directly:
// the cluster routes (written by the cluster manager, read by every session and
// the HTTP routes), the metrics (bumped everywhere, rendered by /metrics), the
// server-wide ban list (written by the user registry, read by sessions at
// hello) and the SQLite store's search index (stepped by the indexer thread
// while the store's thread appends and searches).
// Built with -fsanitize=thread as its own binary; a race fails the test.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <stdlib.h>

#include <filesystem>

#include "actors/ban_list.hpp"
#include "actors/cluster/routes.hpp"
#include "actors/store/backend.hpp"
#include "actors/metrics.hpp"
#include "caf/all.hpp"
#include "caf/scheduler/test_coordinator.hpp"

namespace {

using namespace chat;

caf::behavior idle_impl() {
  return {[](int) {}};
}

TEST(SharedStateTsan, RoutesAreReadWhileTheManagerFlipsNodes) {
  // CAF's test coordinator: no scheduler threads, so nothing of CAF's own
  // (uninstrumented) runs while the test threads race; the two actors are
  // only handles here, as they are to the sessions.
  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("testing"));
  caf::actor_system sys{cfg};
  auto& sched = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  auto dir = sys.spawn(idle_impl);
  auto users = sys.spawn(idle_impl);
  cluster_routes routes({"n1", "n2", "n3"}, 0);
  routes.set_node(0, dir, users);
  constexpr int kRounds = 20000;
  std::atomic<int> up_seen{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        auto key = "room-" + std::to_string((i * 7 + t) % 97);
        auto d = routes.directory_for(key);
        auto u = routes.users_for(key);
        if (d) up_seen.fetch_add(1, std::memory_order_relaxed);
        if (i % 64 == 0) {
          auto st = routes.status();
          EXPECT_EQ(st.size(), 3u);
          (void)routes.all_up();
        }
      }
    });
  std::thread manager([&] {
    for (int i = 0; i < kRounds; ++i) {
      auto index = static_cast<size_t>(1 + i % 2);
      if (i % 4 < 2)
        routes.set_node(index, dir, users);
      else
        routes.set_node(index, nullptr, nullptr);
    }
  });
  manager.join();
  for (auto& r : readers) r.join();
  // Node 0 never went down: at least its share of lookups found a directory.
  EXPECT_GT(up_seen.load(), 0);
  routes.set_node(1, dir, users);
  routes.set_node(2, dir, users);
  EXPECT_TRUE(routes.all_up());
  caf::anon_send_exit(dir, caf::exit_reason::kill);
  caf::anon_send_exit(users, caf::exit_reason::kill);
  sched.run();
}

TEST(SharedStateTsan, MetricsAreBumpedEverywhereWhileRendered) {
  auto& m = global_metrics();
  auto errors_before = m.errors[0].load();
  auto rtt_before = m.rtt_count.load();
  constexpr int kThreads = 4, kRounds = 5000;
  std::atomic<bool> done{false};
  std::thread renderer([&] {
    while (!done.load()) {
      auto text = m.render_prometheus();
      EXPECT_NE(text.find("chat_connections"), std::string::npos);
      (void)m.store_status_text();
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        m.count_error(chat::errc::bad_request);
        m.observe_rtt_us(static_cast<uint64_t>(i));
        m.connections.fetch_add(1, std::memory_order_relaxed);
        m.connections.fetch_sub(1, std::memory_order_relaxed);
        if (i % 100 == 0) m.set_store_status(t % 2 == 0, t % 2 == 0 ? "ok" : "disk full");
      }
    });
  for (auto& w : workers) w.join();
  done.store(true);
  renderer.join();
  EXPECT_EQ(m.errors[0].load() - errors_before, uint64_t{kThreads} * kRounds);
  EXPECT_EQ(m.rtt_count.load() - rtt_before, uint64_t{kThreads} * kRounds);
}

}  // namespace

namespace {

TEST(SharedStateTsan, BanListIsReadAtHelloWhileTheRegistryWritesIt) {
  chat::ban_list bans;
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  std::atomic<uint64_t> seen{0};
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&] {
      while (!stop.load()) {
        if (bans.active("mallory", 1000)) seen.fetch_add(1);
        (void)bans.all(1000);
      }
    });
  for (int i = 0; i < 2000; ++i) {
    bans.apply(chat::user_ban{"mallory", chat::user_ban::forever, "r" + std::to_string(i), false});
    bans.apply(chat::user_ban{"u" + std::to_string(i % 50), 5000, "", false});
    if (i % 2) bans.apply(chat::user_ban{"mallory", 0, "", true});
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_LE(bans.size(), 51u);
}

// The store's thread appends and searches while the indexer's thread steps:
// the two share the backend object (its search file, behind its mutexes).
TEST(SharedStateTsan, SearchIndexerStepsWhileTheStoreAppendsAndSearches) {
  char tmpl[] = "/tmp/chat-tsan-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  std::string err;
  std::shared_ptr<chat::store_backend> b{chat::make_sqlite_backend(dir + "/chat.db", err)};
  ASSERT_NE(b, nullptr) << err;
  chat::room_snapshot snap;
  ASSERT_TRUE(b->load_room("general", 10, 0, snap, err)) << err;
  std::atomic<bool> stop{false};
  std::atomic<bool> failed{false};
  std::thread indexer([&] {
    std::string e;
    while (!stop.load()) {
      bool more = false;
      if (!b->index_search(64, more, e)) failed = true;
    }
  });
  for (uint64_t seq = 1; seq <= 400; ++seq) {
    chat::append_batch batch;
    batch.room = "general";
    chat::stored_msg m;
    m.seq = seq;
    m.ts = static_cast<int64_t>(seq);
    m.from = "alice";
    m.name = "Alice";
    m.text = "word" + std::to_string(seq % 7) + " common";
    batch.msgs.push_back(m);
    ASSERT_TRUE(b->append({batch}, err)) << err;
    if (seq % 50 == 0) {
      std::vector<chat::stored_msg> found;
      ASSERT_TRUE(b->search("general", "common", 0, 1000, found, err)) << err;
      EXPECT_EQ(found.size(), seq);  // never a message missing, whatever the indexer did
    }
  }
  stop = true;
  indexer.join();
  EXPECT_FALSE(failed.load());
  b.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
