// Micro-benchmark of a store backend's group commit (SQLite or PostgreSQL):
// appends N messages in calls of B messages spread round-robin over R rooms,
// each call one transaction, and prints messages/s and per-commit latency
// percentiles. No actors: what the backend and its database cost.
//
//   store-bench [--backend sqlite|postgres] [--messages N] [--batch B] [--rooms R]
//               [--text-bytes T] [--claim] [--index] [--sync full|normal] [--path FILE]
//               [--pragma SQL]... [--pg-url URL] [--members-per-user M [--users U]]
//
// --members-per-user M: after the appends, U users (default 100) each become
// a member of M rooms with a read position half-way through each room, and
// the bench times user_rooms (what `my_rooms` costs: every room with its
// unread count) and count_unread (what a `joined` with an old read position
// costs), per call.
//
// --index (SQLite): search indexing as the store actor runs it between
// commits (a step of 512 messages once that many wait), and the rest of
// the backlog at the end; the time includes them. Texts are words of a
// 5,000-word vocabulary (as many bytes as --text-bytes), so that the index
// does real work.
//
// --claim claims every room first and fences every batch with its term, as a
// cluster node does. PostgreSQL: --pg-url (default $CHAT_PG_URL); each run
// uses rooms of its own (bench-<pid>-<r>), so runs never collide.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "actors/store/backend.hpp"

namespace chat::detail {
bool sqlite_exec(store_backend& b, const std::string& sql, std::string& err);
}  // namespace chat::detail

namespace {

struct options {
  std::string backend = "sqlite";
  std::string pg_url;
  bool claim = false;
  bool index = false;
  uint64_t messages = 20000;
  uint64_t batch = 1;
  uint64_t rooms = 1;
  size_t text_bytes = 100;
  std::string sync = "full";
  std::string path = "/tmp/store_bench_data/chat.db";
  std::vector<std::string> pragmas;  // extra SQL run on the connection after open
  uint64_t members_per_user = 0;
  uint64_t users = 100;
};

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--backend sqlite|postgres] [--messages N] [--batch B] [--rooms R]"
               " [--text-bytes T] [--claim] [--index] [--sync full|normal] [--path FILE] [--pragma SQL]..."
               " [--pg-url URL] [--members-per-user M [--users U]]\n",
               argv0);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  if (const char* url = std::getenv("CHAT_PG_URL")) o.pg_url = url;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--claim") {
      o.claim = true;
      continue;
    }
    if (a == "--index") {
      o.index = true;
      continue;
    }
    if (i + 1 >= argc) usage(argv[0]);
    std::string v = argv[++i];
    if (a == "--messages")
      o.messages = std::stoull(v);
    else if (a == "--batch")
      o.batch = std::stoull(v);
    else if (a == "--rooms")
      o.rooms = std::stoull(v);
    else if (a == "--text-bytes")
      o.text_bytes = std::stoull(v);
    else if (a == "--sync")
      o.sync = v;
    else if (a == "--path")
      o.path = v;
    else if (a == "--pragma")
      o.pragmas.push_back(v);
    else if (a == "--backend")
      o.backend = v;
    else if (a == "--pg-url")
      o.pg_url = v;
    else if (a == "--members-per-user")
      o.members_per_user = std::stoull(v);
    else if (a == "--users")
      o.users = std::stoull(v);
    else
      usage(argv[0]);
  }
  if (o.batch == 0 || o.rooms == 0 || (o.sync != "full" && o.sync != "normal") ||
      (o.backend != "sqlite" && o.backend != "postgres") ||
      (o.backend == "postgres" && o.pg_url.empty()))
    usage(argv[0]);
  return o;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  auto k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  using clock = std::chrono::steady_clock;
  auto o = parse(argc, argv);
  std::string err;
  std::unique_ptr<chat::store_backend> b;
  std::string prefix = "room-";
  if (o.backend == "postgres") {
    b = chat::make_postgres_backend(o.pg_url, 1, err);
    prefix = "bench-" + std::to_string(getpid()) + "-";
  } else {
    // A fresh file each run, so runs compare.
    std::error_code ec;
    for (auto suffix : {"", "-wal", "-shm"}) std::filesystem::remove(o.path + suffix, ec);
    b = chat::make_sqlite_backend(o.path, err);
  }
  if (!b) {
    std::fprintf(stderr, "open: %s\n", err.c_str());
    return 1;
  }
  if (o.backend == "sqlite" && o.sync == "normal" &&
      !chat::detail::sqlite_exec(*b, "PRAGMA synchronous=NORMAL", err)) {
    std::fprintf(stderr, "pragma: %s\n", err.c_str());
    return 1;
  }
  for (auto& sql : o.pragmas)
    if (!chat::detail::sqlite_exec(*b, sql, err)) {
      std::fprintf(stderr, "pragma: %s\n", err.c_str());
      return 1;
    }
  std::vector<std::string> names;
  std::vector<uint64_t> last(o.rooms, 0);
  std::vector<uint64_t> terms(o.rooms, 0);
  for (uint64_t r = 0; r < o.rooms; ++r) {
    names.push_back(prefix + std::to_string(r));
    chat::room_snapshot s;
    bool ok = o.claim ? b->claim_room(names.back(), "bench", 0, 0, s, err)
                      : b->load_room(names.back(), 0, 0, s, err);
    if (!ok) {
      std::fprintf(stderr, "load_room: %s\n", err.c_str());
      return 1;
    }
    last[r] = s.last_seq;
    terms[r] = o.claim ? s.term : 0;
  }

  // Words w0..w4999 picked by a fixed LCG: every run writes the same texts.
  uint64_t lcg = 12345;
  auto make_text = [&] {
    std::string t;
    while (t.size() < o.text_bytes) {
      lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
      if (!t.empty()) t.push_back(' ');
      t += "w" + std::to_string((lcg >> 33) % 5000);
    }
    t.resize(o.text_bytes);
    return t;
  };
  double index_ms = 0;
  uint64_t index_steps = 0;
  auto index_step = [&](size_t budget) {
    bool more = false;
    auto t0 = clock::now();
    if (!b->index_search(budget, more, err)) {
      std::fprintf(stderr, "index_search: %s\n", err.c_str());
      std::exit(1);
    }
    index_ms += std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    ++index_steps;
    return more;
  };
  std::vector<double> latencies_ms;
  uint64_t done = 0;
  uint64_t next_room = 0;
  auto start = clock::now();
  while (done < o.messages) {
    auto n = std::min(o.batch, o.messages - done);
    // One append_batch per room touched in this call.
    std::vector<chat::append_batch> batches(std::min(n, o.rooms));
    for (uint64_t i = 0; i < n; ++i) {
      auto r = (next_room + i) % o.rooms;
      auto& ab = batches[i % batches.size()];
      ab.room = names[r];
      ab.owner = "bench";
      ab.term = terms[r];
      chat::stored_msg m;
      m.seq = ++last[r];
      m.ts = 1764090000000 + static_cast<int64_t>(done + i);
      m.from = "user-" + std::to_string(i % 50);
      m.name = "User";
      m.text = make_text();
      ab.msgs.push_back(std::move(m));
    }
    next_room = (next_room + n) % o.rooms;
    auto t0 = clock::now();
    if (!b->append(batches, err)) {
      std::fprintf(stderr, "append: %s\n", err.c_str());
      return 1;
    }
    latencies_ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
    done += n;
    // As the store: a step once 512 messages wait (or 20 ms later: not here).
    if (o.index && b->search_backlog() >= 512) index_step(512);
  }
  if (o.index)
    while (index_step(4096)) {
    }
  double secs = std::chrono::duration<double>(clock::now() - start).count();
  auto commits = latencies_ms.size();
  double p50 = percentile(latencies_ms, 0.50);
  double p99 = percentile(latencies_ms, 0.99);
  std::printf(
      "%s rooms=%llu batch=%llu messages=%llu text=%zuB%s%s: %.0f msgs/s, %.0f commits/s,"
      " commit p50=%.3f ms p99=%.3f ms%s\n",
      o.backend.c_str(), static_cast<unsigned long long>(o.rooms),
      static_cast<unsigned long long>(o.batch), static_cast<unsigned long long>(done), o.text_bytes,
      o.backend == "sqlite" ? (" sync=" + o.sync).c_str() : "", o.claim ? " fenced" : "",
      static_cast<double>(done) / secs, static_cast<double>(commits) / secs, p50, p99,
      o.index ? (", search indexing " + std::to_string(static_cast<int>(index_ms)) + " ms in " +
                 std::to_string(index_steps) + " steps")
                    .c_str()
              : "");
  if (o.members_per_user == 0) return 0;

  // Memberships: user u is in rooms (u * 7 + j * 13) % R, read half-way.
  uint64_t per_user = std::min(o.members_per_user, o.rooms);
  std::vector<chat::append_batch> members(o.rooms);
  for (uint64_t u = 0; u < o.users; ++u)
    for (uint64_t j = 0; j < per_user; ++j) {
      auto r = (u * 7 + j * 13) % o.rooms;
      members[r].room = names[r];
      members[r].owner = "bench";
      members[r].term = terms[r];
      members[r].member_set.push_back(
          {"reader-" + std::to_string(u), chat::member_role::member, last[r] / 2});
    }
  members.erase(std::remove_if(members.begin(), members.end(),
                               [](const chat::append_batch& x) { return x.member_set.empty(); }),
                members.end());
  if (!b->append(members, err)) {
    std::fprintf(stderr, "memberships: %s\n", err.c_str());
    return 1;
  }
  std::vector<double> list_ms, count_ms;
  uint64_t listed = 0, unread = 0;
  for (uint64_t u = 0; u < o.users; ++u) {
    std::vector<chat::user_room> rooms;
    auto t0 = clock::now();
    if (!b->user_rooms("reader-" + std::to_string(u), rooms, err)) {
      std::fprintf(stderr, "user_rooms: %s\n", err.c_str());
      return 1;
    }
    list_ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
    listed += rooms.size();
    for (auto& r : rooms) unread += r.unread;
    auto r = (u * 7) % o.rooms;
    uint64_t n = 0;
    t0 = clock::now();
    if (!b->count_unread(names[r], "reader-" + std::to_string(u), 0, last[r], n, err)) {
      std::fprintf(stderr, "count_unread: %s\n", err.c_str());
      return 1;
    }
    count_ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  std::printf(
      "%s users=%llu rooms/user=%llu: user_rooms (my_rooms) p50=%.3f ms p99=%.3f ms"
      " (%.0f rooms, %.0f unread per call); count_unread of a whole room p50=%.3f ms p99=%.3f ms\n",
      o.backend.c_str(), static_cast<unsigned long long>(o.users),
      static_cast<unsigned long long>(per_user), percentile(list_ms, 0.50),
      percentile(list_ms, 0.99), static_cast<double>(listed) / static_cast<double>(o.users),
      static_cast<double>(unread) / static_cast<double>(o.users), percentile(count_ms, 0.50),
      percentile(count_ms, 0.99));
  return 0;
}
