// chat-bench worker: one forked process holding a share of the connections.
//
// Layout: T I/O threads, each with its own io_context and its own clients
// (nothing shared between them but a few atomics), plus the process's main
// thread, which only talks to the parent over two pipes and moves the threads
// from phase to phase (connect -> go -> sent -> drain -> close -> report).
//
// A `client` is a logical user: it keeps what it received (intervals of seq)
// across reconnections. A `conn` is one WebSocket connection of a client;
// every handler holds a shared_ptr to its conn, so a cut connection's late
// completions find `dead` set and do nothing.
#include <fcntl.h>
#include <jwt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include "bench/bench.hpp"
#include "bench/histogram.hpp"
#include "bench/intervals.hpp"
#include "bench/scan.hpp"
#include "messages/codec.hpp"

namespace bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

constexpr int64_t kHelloId = 1;
constexpr int64_t kJoinId = 2;
constexpr int64_t kSendIdBase = 100;
constexpr size_t kMaxBatchBytes = 60 * 1024;  // under the server's 64 KiB frame cap

struct shared_state {
  std::atomic<int> settled{0};  // connect phase: clients joined or given up
  std::atomic<int> joined_ok{0};
  std::atomic<int> failed{0};
  std::atomic<int> senders_active{0};
  std::atomic<int> pending_drain{0};
  std::atomic<int> live_conns{0};
  std::atomic<int> storm_back{0};
  std::atomic<int64_t> storm_last_back{0};
};

struct counters {
  uint64_t received = 0, dup = 0, ooo = 0, gaps = 0, gap_msgs = 0, stale = 0, other_room = 0;
  uint64_t recovered_msgs = 0, recovery_ok = 0, recovery_failed = 0;
  uint64_t sent = 0, acked = 0, send_errors = 0, send_skipped = 0, unknown_acks = 0;
  uint64_t frames_rx = 0, objects_rx = 0, bytes_rx = 0, frames_tx = 0, objects_tx = 0,
           bytes_tx = 0;
  uint64_t other_events = 0, bad_json = 0, attempts = 0, dropped = 0, cut = 0;

  void add(const counters& o) {
#define B_ADD(f) f += o.f;
    B_ADD(received) B_ADD(dup) B_ADD(ooo) B_ADD(gaps) B_ADD(gap_msgs) B_ADD(stale)
    B_ADD(other_room) B_ADD(recovered_msgs) B_ADD(recovery_ok) B_ADD(recovery_failed)
    B_ADD(sent) B_ADD(acked) B_ADD(send_errors) B_ADD(send_skipped) B_ADD(unknown_acks)
    B_ADD(frames_rx) B_ADD(objects_rx) B_ADD(bytes_rx) B_ADD(frames_tx) B_ADD(objects_tx)
    B_ADD(bytes_tx) B_ADD(other_events) B_ADD(bad_json) B_ADD(attempts) B_ADD(dropped)
    B_ADD(cut)
#undef B_ADD
  }
  json to_json() const {
    json j;
#define B_J(f) j[#f] = f;
    B_J(received) B_J(dup) B_J(ooo) B_J(gaps) B_J(gap_msgs) B_J(stale) B_J(other_room)
    B_J(recovered_msgs) B_J(recovery_ok) B_J(recovery_failed) B_J(sent) B_J(acked)
    B_J(send_errors) B_J(send_skipped) B_J(unknown_acks) B_J(frames_rx) B_J(objects_rx)
    B_J(bytes_rx) B_J(frames_tx) B_J(objects_tx) B_J(bytes_tx) B_J(other_events)
    B_J(bad_json) B_J(attempts) B_J(dropped) B_J(cut)
#undef B_J
    return j;
  }
};

struct thread_ctx;
struct conn;

struct client {
  thread_ctx* tc = nullptr;
  int gidx = 0;
  int room_idx = 0;
  std::string room, name, token;
  asio::ip::address_v4 src;
  bool bind_src = false;
  int sender_idx = -1;  // >= 0: sends

  // connection
  std::shared_ptr<conn> cur;
  int attempts = 0;          // failed attempts in the current (re)connect series
  int64_t series_start = 0;  // start of the current (re)connect series
  bool in_initial = true;    // the connect phase has not settled this client yet
  bool ever_joined = false, is_joined = false, gave_up = false, rejoining = false;
  bool was_cut = false;
  std::unique_ptr<asio::steady_timer> retry_timer;

  // receiver
  uint64_t base = 0, last = 0, contig = 0;
  std::string epoch;
  interval_set got;
  std::vector<uint64_t> prejoin;  // seqs that came before the first `joined`
  bool pending = false;           // drain: not yet caught up
  uint64_t target = 0;

  // sender
  std::unique_ptr<asio::steady_timer> send_timer;
  int64_t next_n = 0, sched_n = 0, offset_ns = 0;
  bool done_sending = false, sender_settled = true;
  std::unordered_map<int64_t, int64_t> inflight;  // id -> send time
  interval_set acked;

  void start_attempt();
  void on_conn_dead(const std::string& why, int close_code);
  void schedule_retry();
  void settle_initial(bool ok);
  void give_up();
  void on_welcome(conn& c);
  void on_joined(const event& ev, int64_t now);
  void on_message(const event& ev, int64_t now);
  void on_ack(const event& ev, int64_t now);
  void on_send_error(int64_t id);
  void start_sending();
  void schedule_send();
  void send_one();
  void check_sender_settled();
  void cut(int64_t now);
  void update_contig();
  void check_pending();
};

struct thread_ctx {
  asio::io_context ioc{1};
  const options& o;
  shared_state& sh;
  int tidx;
  tcp::endpoint server_ep;
  std::string host_hdr;
  tcp::endpoint sender_ep;  // senders' target (--sender-url; else = server_ep)
  std::string sender_host_hdr, sender_path;
  const std::string& text;
  std::vector<std::unique_ptr<client>> clients;
  size_t next_connect = 0;
  int inflight_connects = 0, connect_limit = 1;
  int64_t connect_deadline = 0;
  std::mt19937_64 rng;

  int64_t t0 = 0, t_end = 0, t_cut = 0;
  bool finishing = false;
  std::unique_ptr<asio::steady_timer> cut_timer;

  counters c;
  histogram lat, ack, connect, reconnect, recov_lat;
  std::map<std::string, uint64_t> errors, close_codes, conn_errors;

  thread_ctx(const options& opt, shared_state& s, int t, const std::string& txt)
      : o(opt), sh(s), tidx(t), text(txt), rng(std::random_device{}() ^ (uint64_t(t) << 32)) {}

  void pump_connects() {
    while (inflight_connects < connect_limit && next_connect < clients.size()) {
      client* cl = clients[next_connect++].get();
      ++inflight_connects;
      cl->series_start = now_ns();
      cl->start_attempt();
    }
  }
  int64_t jitter_ms(int attempt) {
    double cap = std::min<double>(o.backoff_max_ms, o.backoff_base_ms * std::ldexp(1.0, std::min(attempt, 20)));
    std::uniform_real_distribution<double> d(0.0, cap);
    return int64_t(d(rng));
  }
};

static asio::steady_timer::time_point tp(int64_t ns) {
  return asio::steady_timer::time_point(std::chrono::nanoseconds(ns));
}

struct conn : std::enable_shared_from_this<conn> {
  thread_ctx& tc;
  client* cl;
  websocket::stream<tcp::socket> ws;
  beast::flat_buffer rbuf;
  asio::steady_timer attempt_timer;
  std::vector<std::string> wq;
  std::string wbuf;
  bool writing = false, dead = false, close_requested = false, closing = false;
  bool joined = false, ws_open = false;
  std::string refused;  // hello refused: the reason, until the server's close comes

  conn(thread_ctx& t, client* c) : tc(t), cl(c), ws(t.ioc), attempt_timer(t.ioc) {
    tc.sh.live_conns.fetch_add(1, std::memory_order_relaxed);
  }
  ~conn() { tc.sh.live_conns.fetch_sub(1, std::memory_order_relaxed); }

  void die(const std::string& why, int close_code = 0) {
    if (dead) return;
    dead = true;
    attempt_timer.cancel();
    beast::error_code ig;
    beast::get_lowest_layer(ws).close(ig);
    if (cl && cl->cur.get() == this) cl->on_conn_dead(why, close_code);
  }

  // Abrupt close: RST, no close frame, no FIN handshake.
  void cut() {
    if (dead) return;
    dead = true;
    attempt_timer.cancel();
    auto& s = beast::get_lowest_layer(ws);
    if (s.is_open()) {
      struct linger lg {1, 0};
      ::setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      beast::error_code ig;
      s.close(ig);
    }
  }

  void start() {
    auto self = shared_from_this();
    auto& s = beast::get_lowest_layer(ws);
    beast::error_code ec;
    s.open(tcp::v4(), ec);
    if (ec) return die("socket: " + ec.message());
    if (cl->bind_src) {
      int one = 1;
      ::setsockopt(s.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      s.bind(tcp::endpoint(cl->src, 0), ec);
      if (ec) return die("bind: " + ec.message());
    }
    s.set_option(tcp::no_delay(true), ec);
    // One attempt (TCP + WS handshake + hello + join) gets at most 30 s.
    attempt_timer.expires_after(std::chrono::seconds(30));
    attempt_timer.async_wait([self](beast::error_code e) {
      if (!e && !self->dead && !self->joined) self->die("timeout: connect+hello+join > 30 s");
    });
    auto& ep = cl->sender_idx >= 0 ? tc.sender_ep : tc.server_ep;
    s.async_connect(ep, [self](beast::error_code e) { self->on_connect(e); });
  }

  void on_connect(beast::error_code ec) {
    if (dead) return;
    if (ec) return die("connect: " + ec.message());
    websocket::stream_base::timeout to{};
    to.handshake_timeout = std::chrono::seconds(30);
    to.idle_timeout = websocket::stream_base::none();
    to.keep_alive_pings = false;
    ws.set_option(to);
    ws.read_message_max(64 * 1024 * 1024);
    ws.auto_fragment(false);
    auto self = shared_from_this();
    bool snd = cl->sender_idx >= 0;
    ws.async_handshake(snd ? tc.sender_host_hdr : tc.host_hdr, snd ? tc.sender_path : tc.o.path,
                       [self](beast::error_code e) { self->on_handshake(e); });
  }

  void on_handshake(beast::error_code ec) {
    if (dead) return;
    if (ec) return die("handshake: " + ec.message());
    ws_open = true;
    ws.text(true);
    do_read();
    std::string h;
    if (!cl->token.empty())
      h = R"({"type":"hello","id":1,"token":")" + cl->token + "\"}";
    else
      h = R"({"type":"hello","id":1,"name":")" + cl->name + "\"}";
    send_text(std::move(h));
  }

  void do_read() {
    auto self = shared_from_this();
    ws.async_read(rbuf, [self](beast::error_code e, size_t n) { self->on_read(e, n); });
  }

  void on_read(beast::error_code ec, size_t n) {
    if (dead) return;
    if (ec) {
      if (closing) {
        dead = true;
        return;
      }
      int code = 0;
      if (ec == websocket::error::closed) code = ws.reason().code;
      if (!refused.empty()) return die(refused, code);
      return die(code ? "closed by server" : "read: " + ec.message(), code);
    }
    ++tc.c.frames_rx;
    tc.c.bytes_rx += n;
    auto d = rbuf.cdata();
    std::string_view frame(static_cast<const char*>(d.data()), d.size());
    int64_t now = now_ns();
    chat::split_frame(frame, [&](std::string_view obj) {
      on_object(obj, now);
      return !dead;
    });
    rbuf.consume(rbuf.size());
    if (!dead) do_read();
  }

  void on_object(std::string_view obj, int64_t now) {
    event ev;
    if (!scanner::scan(obj, ev)) {
      ++tc.c.bad_json;
      return;
    }
    ++tc.c.objects_rx;
    const auto& t = ev.type;
    if (t == "message") {
      cl->on_message(ev, now);
    } else if (t == "ack") {
      cl->on_ack(ev, now);
    } else if (t == "welcome") {
      if (ev.has_id && ev.id == kHelloId) cl->on_welcome(*this);
    } else if (t == "joined") {
      if (ev.has_id && ev.id == kJoinId) {
        joined = true;
        attempt_timer.cancel();
        cl->on_joined(ev, now);
      }
    } else if (t == "error") {
      ++tc.errors[std::string(ev.code)];
      if (ev.has_id) {
        if (ev.id == kHelloId) {
          // The server closes with 4001 next: wait (2 s at most) to see the code.
          refused = "hello refused: " + std::string(ev.code);
          attempt_timer.expires_after(std::chrono::seconds(2));
          auto self = shared_from_this();
          attempt_timer.async_wait([self](beast::error_code e) {
            if (!e && !self->dead) self->die(self->refused);
          });
        }
        else if (ev.id == kJoinId)
          die("join refused: " + std::string(ev.code));
        else if (ev.id >= kSendIdBase)
          cl->on_send_error(ev.id);
      }
    } else {
      ++tc.c.other_events;
    }
  }

  void send_text(std::string s) {
    if (dead || closing) return;
    wq.push_back(std::move(s));
    if (!writing) flush();
  }

  void flush() {
    if (dead) return;
    if (wq.empty()) {
      if (close_requested) do_close();
      return;
    }
    wbuf.clear();
    size_t used = 0;
    if (tc.o.batch) {
      while (used < wq.size() &&
             (used == 0 || wbuf.size() + 1 + wq[used].size() <= kMaxBatchBytes)) {
        if (used) wbuf += '\n';
        wbuf += wq[used];
        ++used;
      }
    } else {
      wbuf.swap(wq[0]);
      used = 1;
    }
    wq.erase(wq.begin(), wq.begin() + std::ptrdiff_t(used));
    ++tc.c.frames_tx;
    tc.c.objects_tx += used;
    tc.c.bytes_tx += wbuf.size();
    writing = true;
    auto self = shared_from_this();
    ws.async_write(asio::buffer(wbuf), [self](beast::error_code e, size_t) {
      self->writing = false;
      if (self->dead) return;
      if (e) return self->die("write: " + e.message());
      self->flush();
    });
  }

  void graceful_close() {
    attempt_timer.cancel();
    if (dead || close_requested) return;
    if (!ws_open) {  // mid-connect: just drop the socket
      dead = true;
      beast::error_code ig;
      beast::get_lowest_layer(ws).close(ig);
      return;
    }
    close_requested = true;
    if (!writing) do_close();
  }
  void do_close() {
    if (closing || dead) return;
    closing = true;
    auto self = shared_from_this();
    ws.async_close(websocket::close_code::normal, [self](beast::error_code) {
      // The pending read completes (closed) once the server answers.
    });
  }
};

// --- client ------------------------------------------------------------------

void client::start_attempt() {
  ++tc->c.attempts;
  auto c = std::make_shared<conn>(*tc, this);
  cur = c;
  c->start();
}

void client::settle_initial(bool ok) {
  if (!in_initial) return;
  in_initial = false;
  if (ok)
    tc->sh.joined_ok.fetch_add(1);
  else
    tc->sh.failed.fetch_add(1);
  tc->sh.settled.fetch_add(1);
  --tc->inflight_connects;
  tc->pump_connects();
}

void client::give_up() {
  gave_up = true;
  if (pending) {
    pending = false;
    tc->sh.pending_drain.fetch_sub(1);
  }
  settle_initial(false);
}

void client::on_conn_dead(const std::string& why, int close_code) {
  bool was_joined = is_joined;
  is_joined = false;
  rejoining = false;
  cur.reset();
  if (tc->finishing) return;
  if (close_code) ++tc->close_codes[std::to_string(close_code)];
  ++tc->conn_errors[(was_joined ? "drop: " : "") + why];
  if (was_joined) ++tc->c.dropped;
  if (!ever_joined) {
    ++attempts;
    if (attempts <= tc->o.connect_retries && now_ns() < tc->connect_deadline)
      schedule_retry();
    else
      give_up();
    return;
  }
  if (tc->o.reconnect) {
    if (was_joined) {
      series_start = now_ns();
      attempts = 0;
    } else {
      ++attempts;
    }
    schedule_retry();
  } else {
    give_up();
  }
}

void client::schedule_retry() {
  if (!retry_timer) retry_timer = std::make_unique<asio::steady_timer>(tc->ioc);
  retry_timer->expires_after(std::chrono::milliseconds(tc->jitter_ms(attempts)));
  retry_timer->async_wait([this](beast::error_code e) {
    if (e || tc->finishing || cur) return;
    start_attempt();
  });
}

void client::cut(int64_t now) {
  if (!cur) return;
  auto c = cur;
  cur.reset();
  c->cut();
  is_joined = false;
  rejoining = false;
  was_cut = true;
  series_start = now;
  attempts = 0;
  ++tc->c.cut;
  schedule_retry();
}

void client::on_welcome(conn& c) {
  std::string j = R"({"type":"join","id":2,"room":")" + room + "\"";
  if (ever_joined) {
    j += ",\"since\":" + std::to_string(contig);
    if (!epoch.empty()) j += ",\"epoch\":\"" + epoch + "\"";
    rejoining = true;
  }
  j += '}';
  c.send_text(std::move(j));
}

void client::update_contig() {
  if (!got.v.empty() && got.v.front().first <= base + 1)
    contig = std::max(base, got.v.front().second);
  else
    contig = base;
}

void client::check_pending() {
  if (pending && contig >= target) {
    pending = false;
    tc->sh.pending_drain.fetch_sub(1);
  }
}

void client::on_joined(const event& ev, int64_t now) {
  is_joined = true;
  if (!ever_joined) {
    ever_joined = true;
    base = ev.has_seq ? ev.seq : 0;
    last = base;
    epoch = std::string(ev.epoch);
    for (uint64_t s : prejoin)
      if (s > base) {
        got.insert(s);
        last = std::max(last, s);
      }
    prejoin.clear();
    prejoin.shrink_to_fit();
    update_contig();
    tc->connect.record(now - series_start);
    attempts = 0;
    settle_initial(true);
  } else {
    if (ev.recovered == 1)
      ++tc->c.recovery_ok;
    else if (rejoining)
      ++tc->c.recovery_failed;
    if (!ev.epoch.empty()) epoch = std::string(ev.epoch);
    tc->reconnect.record(now - series_start);
    attempts = 0;
    if (was_cut) {
      was_cut = false;
      tc->sh.storm_back.fetch_add(1);
      int64_t prev = tc->sh.storm_last_back.load();
      while (now > prev && !tc->sh.storm_last_back.compare_exchange_weak(prev, now)) {
      }
    }
  }
  rejoining = false;
  check_pending();
}

void client::on_message(const event& ev, int64_t now) {
  if (ev.room != room) {
    ++tc->c.other_room;
    return;
  }
  if (!ev.has_seq) return;
  uint64_t s = ev.seq;
  if (!ever_joined) {
    prejoin.push_back(s);
    ++tc->c.received;
    if (ev.has_t) tc->lat.record(now - ev.t);
    return;
  }
  if (s <= base) {
    ++tc->c.stale;
    return;
  }
  if (s <= last) {
    if (got.contains(s)) {
      ++tc->c.dup;
      return;
    }
    ++tc->c.ooo;
    got.insert(s);
  } else {
    if (s > last + 1) {
      ++tc->c.gaps;
      tc->c.gap_msgs += s - last - 1;
    }
    got.insert(s);
    last = s;
  }
  update_contig();
  ++tc->c.received;
  if (rejoining) {
    ++tc->c.recovered_msgs;
    if (ev.has_t) tc->recov_lat.record(now - ev.t);
  } else if (ev.has_t) {
    tc->lat.record(now - ev.t);
  }
  if (pending) check_pending();
}

void client::on_ack(const event& ev, int64_t now) {
  if (!ev.has_id) {
    ++tc->c.unknown_acks;
    return;
  }
  auto it = inflight.find(ev.id);
  if (it == inflight.end()) {
    ++tc->c.unknown_acks;
    return;
  }
  tc->ack.record(now - it->second);
  inflight.erase(it);
  ++tc->c.acked;
  if (ev.has_seq) acked.insert(ev.seq);
  if (tc->o.window > 0 && !done_sending) {
    if (now < tc->t_end)
      send_one();
    else
      done_sending = true;
  }
  check_sender_settled();
}

void client::on_send_error(int64_t id) {
  auto it = inflight.find(id);
  if (it == inflight.end()) return;
  inflight.erase(it);
  ++tc->c.send_errors;
  if (tc->o.window > 0 && !done_sending) {
    if (now_ns() < tc->t_end)
      send_one();
    else
      done_sending = true;
  }
  check_sender_settled();
}

void client::check_sender_settled() {
  if (!sender_settled && done_sending && inflight.empty()) {
    sender_settled = true;
    tc->sh.senders_active.fetch_sub(1);
  }
}

void client::start_sending() {
  if (tc->o.window > 0) {
    for (int i = 0; i < tc->o.window; ++i) send_one();
    if (inflight.empty()) done_sending = true;  // not connected: nothing will come back
    check_sender_settled();
    return;
  }
  send_timer = std::make_unique<asio::steady_timer>(tc->ioc);
  schedule_send();
}

void client::schedule_send() {
  int64_t due = tc->t0 + offset_ns + int64_t(double(sched_n) * 1e9 / tc->o.rate);
  if (tc->o.rate <= 0 || due >= tc->t_end) {
    done_sending = true;
    check_sender_settled();
    return;
  }
  send_timer->expires_at(tp(due));
  send_timer->async_wait([this](beast::error_code e) {
    if (e || tc->finishing) return;
    send_one();
    ++sched_n;
    schedule_send();
  });
}

void client::send_one() {
  if (!cur || !is_joined) {
    ++tc->c.send_skipped;
    return;
  }
  int64_t n = next_n++;
  int64_t id = kSendIdBase + n;
  int64_t t = now_ns();
  std::string m;
  m.reserve(tc->text.size() + room.size() + 160);
  m += R"({"type":"send","id":)";
  m += std::to_string(id);
  m += R"(,"room":")";
  m += room;
  m += R"(","text":")";
  m += tc->text;
  m += '"';
  if (tc->o.idempotency) {
    m += R"(,"idempotency_key":")";
    m += name;
    m += '-';
    m += std::to_string(n);
    m += '"';
  }
  m += R"(,"data":{"t":)";
  m += std::to_string(t);
  m += R"(,"s":)";
  m += std::to_string(gidx);
  m += R"(,"n":)";
  m += std::to_string(n);
  m += "}}";
  inflight.emplace(id, t);
  ++tc->c.sent;
  cur->send_text(std::move(m));
}

// --- pipes to the parent --------------------------------------------------------

void write_line(int fd, const json& j) {
  std::string s = j.dump();
  s += '\n';
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::_exit(3);  // parent gone
    }
    off += size_t(n);
  }
}

// Reads one JSON line from fd, waiting at most timeout_ms. Returns null json on
// timeout; exits if the parent closed the pipe.
json read_line(int fd, std::string& buf, int timeout_ms) {
  for (;;) {
    size_t nl = buf.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      return json::parse(line, nullptr, false);
    }
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r == 0) return nullptr;
    if (r < 0) {
      if (errno == EINTR) continue;
      ::_exit(3);
    }
    char tmp[65536];
    ssize_t n = ::read(fd, tmp, sizeof tmp);
    if (n <= 0) ::_exit(3);  // parent gone: stop at once
    buf.append(tmp, size_t(n));
    timeout_ms = 0;
  }
}

template <class F>
void run_on_all(std::vector<std::unique_ptr<thread_ctx>>& tcs, F f) {
  std::vector<std::future<void>> fs;
  for (auto& tc : tcs) {
    auto pr = std::make_shared<std::promise<void>>();
    fs.push_back(pr->get_future());
    thread_ctx* t = tc.get();
    asio::post(t->ioc, [t, f, pr]() {
      f(*t);
      pr->set_value();
    });
  }
  for (auto& f2 : fs) f2.wait();
}

double process_cpu_s() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

std::string mint(const options& o, const std::string& user) {
  jwt_t* jwt = nullptr;
  if (jwt_new(&jwt) != 0) return {};
  jwt_add_grant(jwt, "sub", user.c_str());
  jwt_add_grant(jwt, "name", user.c_str());
  jwt_add_grant_int(jwt, "exp", long(std::time(nullptr)) + 24 * 3600);
  jwt_set_alg(jwt, JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(o.jwt_secret.data()),
              int(o.jwt_secret.size()));
  char* s = jwt_encode_str(jwt);
  std::string out = s ? s : "";
  std::free(s);
  jwt_free(jwt);
  return out;
}

}  // namespace

void worker_main(const options& o, int proc, int procs, int ctrl_fd, int out_fd) {
  ::signal(SIGPIPE, SIG_IGN);
  std::string cbuf;
  shared_state sh;

  // Resolve once (numeric or name), IPv4.
  auto resolve = [out_fd](const std::string& host, int port) {
    asio::io_context tmp;
    tcp::resolver r(tmp);
    beast::error_code ec;
    auto res = r.resolve(tcp::v4(), host, std::to_string(port), ec);
    if (ec || res.empty()) {
      write_line(out_fd, {{"ev", "fatal"}, {"error", "resolve " + host + ": " + ec.message()}});
      ::_exit(2);
    }
    return tcp::endpoint(*res.begin());
  };
  tcp::endpoint ep = resolve(o.host, o.port);
  bool split = !o.sender_host.empty();
  tcp::endpoint sender_ep = split ? resolve(o.sender_host, o.sender_port) : ep;

  std::string text;
  {
    static const char pat[] = "chat-bench message 0123456789 abcdefghijklmnopqrstuvwxyz ";
    text.reserve(size_t(o.size));
    while (text.size() < size_t(o.size)) text += pat[text.size() % (sizeof pat - 1)];
  }

  int T = std::max(1, o.threads);
  std::vector<std::unique_ptr<thread_ctx>> tcs;
  for (int t = 0; t < T; ++t) {
    auto tc = std::make_unique<thread_ctx>(o, sh, t, text);
    tc->server_ep = ep;
    tc->host_hdr = o.host + ":" + std::to_string(o.port);
    tc->sender_ep = sender_ep;
    tc->sender_host_hdr = split ? o.sender_host + ":" + std::to_string(o.sender_port) : tc->host_hdr;
    tc->sender_path = split ? o.sender_path : o.path;
    tcs.push_back(std::move(tc));
  }

  // This process's clients: global indices g with g % procs == proc.
  int mine = 0;
  int nsrc = o.src_addrs;
  for (int g = proc; g < o.conns; g += procs, ++mine) {
    thread_ctx& tc = *tcs[size_t(mine % T)];
    auto cl = std::make_unique<client>();
    cl->tc = &tc;
    cl->gidx = g;
    cl->room_idx = g % std::max(1, o.rooms);
    cl->room = o.room_prefix + std::to_string(cl->room_idx);
    cl->name = o.name_prefix + std::to_string(proc) + "-" + std::to_string(mine);
    if (!o.jwt_secret.empty()) cl->token = mint(o, cl->name);
    if (nsrc > 0) {
      cl->bind_src = true;
      cl->src = asio::ip::address_v4((127u << 24) | uint32_t(2 + g % nsrc));
    }
    if (g < o.senders) {
      cl->sender_idx = g;
      double rate = o.rate > 0 ? o.rate : 1;
      cl->offset_ns = int64_t(double(g) / (double(o.senders) * rate) * 1e9);
    }
    tc.clients.push_back(std::move(cl));
  }
  int total_threads = procs * T;
  int64_t t_start = now_ns();
  for (auto& tc : tcs) {
    tc->connect_limit = std::max(1, o.connect_concurrency / total_threads);
    tc->connect_deadline = t_start + int64_t(o.connect_timeout * 1e9);
  }

  std::vector<std::thread> threads;
  using guard_t = asio::executor_work_guard<asio::io_context::executor_type>;
  std::vector<std::unique_ptr<guard_t>> guards;
  for (auto& tc : tcs) {
    guards.push_back(std::make_unique<guard_t>(tc->ioc.get_executor()));
    thread_ctx* t = tc.get();
    threads.emplace_back([t] { t->ioc.run(); });
  }

  // Phase 1: connect, hello, join.
  for (auto& tc : tcs) {
    thread_ctx* t = tc.get();
    asio::post(t->ioc, [t] { t->pump_connects(); });
  }
  int64_t deadline = t_start + int64_t(o.connect_timeout * 1e9);
  while (sh.settled.load() < mine && now_ns() < deadline) {
    json cmd = read_line(ctrl_fd, cbuf, 20);
    if (cmd.is_object() && cmd.value("cmd", "") == "abort") ::_exit(1);
  }
  int64_t t_joined = now_ns();
  write_line(out_fd, {{"ev", "joined"},
                      {"ok", sh.joined_ok.load()},
                      {"failed", mine - sh.joined_ok.load()},
                      {"connect_phase_s", double(t_joined - t_start) / 1e9}});

  // Phase 2: wait for go.
  json go;
  while (!go.is_object()) {
    go = read_line(ctrl_fd, cbuf, 1000);
    if (go.is_object() && go.value("cmd", "") == "abort") ::_exit(1);
    if (go.is_object() && go.value("cmd", "") != "go") go = nullptr;
  }
  int64_t t0 = go.value("t0", now_ns());
  int64_t t_end = t0 + int64_t(o.duration * 1e9);
  int senders_here = 0;
  for (auto& tc : tcs)
    for (auto& cl : tc->clients)
      if (cl->sender_idx >= 0 && o.senders > 0) ++senders_here;
  sh.senders_active.store(senders_here);
  run_on_all(tcs, [&](thread_ctx& tc) {
    tc.t0 = t0;
    tc.t_end = t_end;
    tc.connect_deadline = INT64_MAX;  // from here on, retries are the storm's business
    for (auto& cl : tc.clients) {
      if (cl->sender_idx < 0) continue;
      cl->sender_settled = false;
      cl->done_sending = false;
    }
    auto start_all = [&tc] {
      for (auto& cl : tc.clients)
        if (cl->sender_idx >= 0) cl->start_sending();
    };
    auto t = std::make_shared<asio::steady_timer>(tc.ioc, tp(t0));
    t->async_wait([t, start_all](beast::error_code e) {
      if (!e) start_all();
    });
    if (tc.o.storm) {
      tc.t_cut = t0 + int64_t(tc.o.cut_after * 1e9);
      tc.cut_timer = std::make_unique<asio::steady_timer>(tc.ioc, tp(tc.t_cut));
      thread_ctx* tp2 = &tc;
      tc.cut_timer->async_wait([tp2](beast::error_code e) {
        if (e) return;
        int64_t now = now_ns();
        for (auto& cl : tp2->clients)
          if (cl->sender_idx < 0 && cl->is_joined) cl->cut(now);
      });
    }
  });
  while (now_ns() < t0) ::usleep(1000);
  double cpu0 = process_cpu_s();

  // Phase 3: send phase, then wait for the acks (bounded by --drain).
  int64_t ack_deadline = t_end + int64_t(o.drain * 1e9);
  bool cpu1_taken = false;
  double cpu1 = 0;
  for (;;) {
    int64_t now = now_ns();
    if (!cpu1_taken && now >= t_end) {
      cpu1 = process_cpu_s();
      cpu1_taken = true;
    }
    if (now >= t_end && (sh.senders_active.load() <= 0 || now >= ack_deadline)) break;
    json cmd = read_line(ctrl_fd, cbuf, 5);
    if (cmd.is_object() && cmd.value("cmd", "") == "abort") ::_exit(1);
  }
  if (!cpu1_taken) cpu1 = process_cpu_s();
  std::map<int, uint64_t> max_acked;
  std::mutex mu;
  run_on_all(tcs, [&](thread_ctx& tc) {
    std::lock_guard<std::mutex> lk(mu);
    for (auto& cl : tc.clients)
      if (!cl->acked.empty()) {
        auto& m = max_acked[cl->room_idx];
        m = std::max(m, cl->acked.max());
      }
  });
  {
    json ma = json::object();
    for (auto& [r, s] : max_acked) ma[std::to_string(r)] = s;
    write_line(out_fd, {{"ev", "sent"}, {"max_acked", ma}});
  }

  // Phase 4: drain until every live receiver holds everything up to the
  // highest acked seq of its room (from all processes), or the deadline.
  json dr;
  while (!dr.is_object()) {
    dr = read_line(ctrl_fd, cbuf, 1000);
    if (dr.is_object() && dr.value("cmd", "") == "abort") ::_exit(1);
    if (dr.is_object() && dr.value("cmd", "") != "drain") dr = nullptr;
  }
  std::map<int, uint64_t> targets;
  for (auto& [k, v] : dr["targets"].items()) targets[std::stoi(k)] = v.get<uint64_t>();
  int64_t drain_deadline = dr.value("deadline", now_ns() + int64_t(o.drain * 1e9));
  run_on_all(tcs, [&](thread_ctx& tc) {
    for (auto& cl : tc.clients) {
      if (cl->gave_up || !cl->ever_joined) continue;
      if (!cl->cur && !tc.o.reconnect) continue;  // dropped for good: its loss is counted
      auto it = targets.find(cl->room_idx);
      if (it == targets.end()) continue;
      cl->target = it->second;
      if (cl->contig < cl->target) {
        cl->pending = true;
        tc.sh.pending_drain.fetch_add(1);
      }
    }
  });
  while (sh.pending_drain.load() > 0 && now_ns() < drain_deadline) {
    json cmd = read_line(ctrl_fd, cbuf, 5);
    if (cmd.is_object() && cmd.value("cmd", "") == "abort") ::_exit(1);
  }
  int64_t t_drained = now_ns();

  // Phase 5: close politely (bounded), stop the threads, report.
  run_on_all(tcs, [&](thread_ctx& tc) {
    tc.finishing = true;
    if (tc.cut_timer) tc.cut_timer->cancel();
    for (auto& cl : tc.clients) {
      if (cl->retry_timer) cl->retry_timer->cancel();
      if (cl->send_timer) cl->send_timer->cancel();
      if (cl->cur) cl->cur->graceful_close();
    }
  });
  int64_t close_deadline = now_ns() + 3'000'000'000;
  while (now_ns() < close_deadline) {
    // live_conns counts conn objects still referenced (handlers pending).
    if (sh.live_conns.load() == 0) break;
    ::usleep(5000);
  }
  for (auto& g : guards) g.reset();
  for (auto& tc : tcs) tc->ioc.stop();
  for (auto& th : threads) th.join();

  counters c;
  histogram lat, ack, con, recon, rlat;
  std::map<std::string, uint64_t> errors, close_codes, conn_errors;
  std::map<int, interval_set> acked;
  json receivers = json::array();
  uint64_t unacked = 0, still_pending = 0;
  int connected_at_end = 0;
  for (auto& tc : tcs) {
    c.add(tc->c);
    lat.merge(tc->lat);
    ack.merge(tc->ack);
    con.merge(tc->connect);
    recon.merge(tc->reconnect);
    rlat.merge(tc->recov_lat);
    for (auto& [k, v] : tc->errors) errors[k] += v;
    for (auto& [k, v] : tc->close_codes) close_codes[k] += v;
    for (auto& [k, v] : tc->conn_errors) conn_errors[k] += v;
    for (auto& cl : tc->clients) {
      if (!cl->acked.empty()) acked[cl->room_idx].merge(cl->acked);
      unacked += cl->inflight.size();
      if (cl->pending) ++still_pending;
      if (cl->is_joined) ++connected_at_end;
      if (cl->ever_joined)
        receivers.push_back({cl->room_idx, cl->base, cl->got.to_json(), cl->is_joined ? 1 : 0});
    }
  }
  json ja = json::object();
  for (auto& [r, s] : acked) ja[std::to_string(r)] = s.to_json();
  json res = {{"ev", "done"},
              {"proc", proc},
              {"conns", mine},
              {"joined_ok", sh.joined_ok.load()},
              {"connected_at_end", connected_at_end},
              {"counters", c.to_json()},
              {"unacked", unacked},
              {"still_pending", still_pending},
              {"drain_s", double(t_drained - t_end) / 1e9},
              {"cpu_send_s", cpu1 - cpu0},
              {"cpu_total_s", process_cpu_s()},
              {"hist",
               {{"latency", lat.to_json()},
                {"ack", ack.to_json()},
                {"connect", con.to_json()},
                {"reconnect", recon.to_json()},
                {"recovered_latency", rlat.to_json()}}},
              {"errors", errors},
              {"close_codes", close_codes},
              {"conn_errors", conn_errors},
              {"acked", ja},
              {"receivers", receivers},
              {"storm",
               {{"back", sh.storm_back.load()},
                {"last_back", sh.storm_last_back.load()},
                {"t_cut", tcs.empty() ? 0 : tcs[0]->t_cut}}}};
  write_line(out_fd, res);
  ::_exit(0);
}

}  // namespace bench
