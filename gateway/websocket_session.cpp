#include "gateway/websocket_session.hpp"

#include <spdlog/spdlog.h>

#include <boost/beast/ssl.hpp>
#include <random>

#include "actors/metrics.hpp"
#include "actors/store/store.hpp"
#include "actors/user_registry.hpp"
#include "messages/validate.hpp"
#include "gateway/ws_start.hpp"

namespace chat {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using clock_type = std::chrono::steady_clock;

namespace {

// A join (the client's own or a transparent re-join) is answered within this,
// whatever happens to the node it went to.
constexpr auto kJoinBound = std::chrono::seconds(5);

const char newline_char = '\n';

std::string random_hex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* digits = "0123456789abcdef";
  std::string out(n, '0');
  for (auto& c : out) c = digits[rng() & 15];
  return out;
}

}  // namespace

bool token_bucket::take(clock_type::time_point now) {
  if (last_.time_since_epoch().count() != 0) {
    double dt = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(burst_, tokens_ + dt * rate_);
  }
  last_ = now;
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

// --- transport ------------------------------------------------------------------------

// The WebSocket operations the session needs, over whichever stream it has.
// One virtual call per operation; the completion handlers are the session's
// own, so nothing is type-erased or allocated per frame.
class ws_transport {
 public:
  virtual ~ws_transport() = default;
  virtual void set_timeout(const websocket::stream_base::timeout& t) = 0;
  virtual void accept(websocket_session& s, beast::http::request<beast::http::string_body>&& req,
                      size_t max_message) = 0;
  virtual void read_some(websocket_session& s, beast::flat_buffer& buffer, size_t max) = 0;
  virtual bool got_text() const = 0;
  virtual bool is_message_done() const = 0;
  virtual uint16_t peer_close_code() const = 0;
  virtual void write(websocket_session& s, buffer_span bufs) = 0;
  // The closing handshake, then the socket is closed.
  virtual void close(websocket_session& s, const websocket::close_reason& reason) = 0;
  // Closes the socket now.
  virtual void cut() = 0;
};

template <class Stream>
class ws_transport_of final : public ws_transport {
 public:
  ws_transport_of(Stream&& stream, std::shared_ptr<net::ssl::context> tls)
      : tls_(std::move(tls)), ws_(std::move(stream)) {}

  void set_timeout(const websocket::stream_base::timeout& t) override { ws_.set_option(t); }

  void accept(websocket_session& s, beast::http::request<beast::http::string_body>&& req,
              size_t max_message) override {
    ws_.read_message_max(max_message);
    ws_.auto_fragment(false);
    ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
      res.set(beast::http::field::server, "chatd");
    }));
    ws_.async_accept(req, beast::bind_front_handler(&websocket_session::on_accept,
                                                    s.shared_from_this()));
  }

  void read_some(websocket_session& s, beast::flat_buffer& buffer, size_t max) override {
    ws_.async_read_some(buffer, max,
                        beast::bind_front_handler(&websocket_session::on_read, s.shared_from_this()));
  }

  bool got_text() const override { return ws_.got_text(); }
  bool is_message_done() const override { return ws_.is_message_done(); }
  uint16_t peer_close_code() const override { return ws_.reason().code; }

  void write(websocket_session& s, buffer_span bufs) override {
    ws_.text(true);
    ws_.async_write(bufs, beast::bind_front_handler(&websocket_session::on_write,
                                                    s.shared_from_this()));
  }

  void close(websocket_session& s, const websocket::close_reason& reason) override {
    ws_.async_close(reason, [self = s.shared_from_this(), this](beast::error_code) {
      // The pending read completes next and cleans up; make sure of it.
      cut();
    });
  }

  void cut() override {
    beast::error_code ignored;
    auto& sock = beast::get_lowest_layer(ws_);
    sock.shutdown(net::socket_base::shutdown_both, ignored);
    sock.close(ignored);
  }

 private:
  std::shared_ptr<net::ssl::context> tls_;  // outlives the SSL made from it (null: plain)
  websocket::stream<Stream> ws_;
};

void start_websocket_session(net::ip::tcp::socket&& stream, io_shard& shard, server_context& ctx,
                             conn_admission admission, ws_upgrade_request req) {
  auto t = std::make_unique<ws_transport_of<net::ip::tcp::socket>>(std::move(stream), nullptr);
  std::make_shared<websocket_session>(std::move(t), shard, ctx, std::move(admission))
      ->run(std::move(req));
}

void start_websocket_session(beast::ssl_stream<net::ip::tcp::socket>&& stream,
                             std::shared_ptr<net::ssl::context> tls, io_shard& shard,
                             server_context& ctx, conn_admission admission,
                             ws_upgrade_request req) {
  auto t = std::make_unique<ws_transport_of<beast::ssl_stream<net::ip::tcp::socket>>>(
      std::move(stream), std::move(tls));
  std::make_shared<websocket_session>(std::move(t), shard, ctx, std::move(admission))
      ->run(std::move(req));
}

// --- session ----------------------------------------------------------------------------

websocket_session::websocket_session(std::unique_ptr<ws_transport> transport, io_shard& shard,
                                     server_context& ctx, conn_admission admission)
    : ws_(std::move(transport)),
      shard_(shard),
      ctx_(ctx),
      id_((static_cast<uint64_t>(shard.index) << 48) | shard.next_conn++),
      remote_(std::move(admission.remote)),
      conn_lease_(std::move(admission.connection)),
      prehello_lease_(std::move(admission.prehello)),
      msg_bucket_(ctx.cfg.rate, ctx.cfg.burst),
      req_bucket_(ctx.cfg.rate * 5, ctx.cfg.burst * 5),
      typing_bucket_(ctx.cfg.rate * 5, ctx.cfg.burst * 5),
      ping_bucket_(ctx.cfg.rate, ctx.cfg.burst),
      timer_(shard.ioc),
      opened_(clock_type::now()) {
  session_id_ = ctx.cfg.node + "-" + random_hex(12);
}

websocket_session::~websocket_session() { cleanup("destroyed"); }

conn_ref websocket_session::self_ref() const { return conn_ref{shard_.gateway, id_}; }

caf::actor websocket_session::directory_for(const std::string& room, const std::string& req_id) {
  auto d = ctx_.routes->directory_for(room);
  if (!d) send_error(req_id, "unavailable", "the room's node is unreachable");
  return d;
}

void websocket_session::run(beast::http::request<beast::http::string_body> req) {
  auto& cfg = ctx_.cfg;
  // Beast pings when the peer has been silent for half the idle timeout and
  // drops it after the whole: ping every `heartbeat`, dead after two.
  websocket::stream_base::timeout opt{std::chrono::seconds(10),
                                      std::chrono::seconds(2 * cfg.heartbeat_s), true};
  ws_->set_timeout(opt);
  ws_->accept(*this, std::move(req), cfg.max_frame);
}

void websocket_session::on_accept(beast::error_code ec) {
  if (ec) {
    cleaned_ = true;  // never registered
    return;
  }
  auto& m = global_metrics();
  shard_.registry.add(id_, this);
  ctx_.sessions.add();
  m.connections.fetch_add(1, std::memory_order_relaxed);
  m.connections_total.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("event=conn_open conn={} session={} remote={}", id_, session_id_, remote_);
  if (ctx_.draining.load()) {
    close(1012, "retry_ms=" + std::to_string(500 + (id_ * 7919) % 4500));
  } else if (static_cast<size_t>(m.connections.load()) > ctx_.cfg.max_connections) {
    close(1013, "server full, retry_ms=5000");
  } else {
    timer_.expires_after(std::chrono::milliseconds(
        static_cast<int64_t>(ctx_.cfg.hello_timeout_s * 1000)));
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->authed_ || self->closing_) return;
      self->send_error("", "unauthorized", "no hello in time");
      self->close(4001, "no hello");
    });
  }
  do_read();
}

// Read a message in pieces of at most kReadPiece bytes: Beast prepares the
// buffer before the data arrives, so every idle connection holds what one
// piece asks for (a whole-message read asks for 1,536 bytes).
constexpr std::size_t kReadPiece = 256;

void websocket_session::do_read() {
  ws_->read_some(*this, buffer_, kReadPiece);
}

void websocket_session::on_read(beast::error_code ec, std::size_t) {
  if (ec) {
    std::string why = ec == websocket::error::closed ? "peer closed" : ec.message();
    if (ec == websocket::error::closed) {
      why = "peer closed code=" + std::to_string(ws_->peer_close_code());
    }
    cleanup(closing_ ? "closed code=" + std::to_string(close_code_) + " " + close_reason_ : why);
    return;
  }
  if (!ws_->got_text()) {
    buffer_.consume(buffer_.size());
    close(1003, "binary frames are not accepted");
    do_read();
    return;
  }
  if (!ws_->is_message_done()) {  // Beast enforces read_message_max over the pieces
    do_read();
    return;
  }
  auto data = buffer_.data();
  std::string_view text(static_cast<const char*>(data.data()), data.size());
  split_frame(text, [&](std::string_view piece) {
    if (!closing_) handle(piece);
  });
  buffer_.consume(buffer_.size());
  // A large message left a large buffer: give it back rather than hold it idle.
  if (buffer_.capacity() > 2 * kReadPiece) buffer_.shrink_to_fit();
  do_read();
}

// --- writing --------------------------------------------------------------------------

void websocket_session::push(frame_ptr frame) {
  if (closing_ || !frame || frame->empty()) return;
  queued_bytes_ += frame->size() + 1;
  if (queued_bytes_ > ctx_.cfg.queue_limit) {
    // Drop the slow client, never the message for everyone else.
    global_metrics().slow_closes.fetch_add(1, std::memory_order_relaxed);
    queue_.clear();
    close(4008, "too slow");
    return;
  }
  queue_.push_back(std::move(frame));
  if (!writing_) do_write();
}

void websocket_session::send_frame(std::string frame) {
  push(std::make_shared<const std::string>(std::move(frame)));
}

void websocket_session::send_error(const std::string& id, const char* code,
                                   const std::string& message) {
  global_metrics().count_error(code);
  send_frame(encode_error(id, code, message));
}

void websocket_session::do_write() {
  inflight_.swap(queue_);
  bufs_.clear();
  bufs_.reserve(inflight_.size() * 2);
  for (size_t i = 0; i < inflight_.size(); ++i) {
    if (i) bufs_.emplace_back(&newline_char, 1);
    bufs_.emplace_back(inflight_[i]->data(), inflight_[i]->size());
  }
  writing_ = true;
  ws_->write(*this, buffer_span{bufs_.data(), bufs_.data() + bufs_.size()});
}

void websocket_session::on_write(beast::error_code ec, std::size_t bytes) {
  writing_ = false;
  for (auto& f : inflight_) queued_bytes_ -= std::min(queued_bytes_, f->size() + 1);
  inflight_.clear();
  if (ec) {
    cleanup("write failed: " + ec.message());
    return;
  }
  auto& m = global_metrics();
  m.frames_out.fetch_add(1, std::memory_order_relaxed);
  m.bytes_out.fetch_add(bytes, std::memory_order_relaxed);
  if (!queue_.empty())
    do_write();
  else if (closing_ && !close_sent_)
    do_close();
}

// --- closing --------------------------------------------------------------------------

void websocket_session::close(uint16_t code, std::string reason) {
  if (closing_ || cleaned_) return;
  closing_ = true;
  close_code_ = code;
  close_reason_ = std::move(reason);
  timer_.cancel();
  // What is queued (an error explaining the close) goes out first, unless the
  // write in flight never completes: then the socket is cut.
  if (!writing_) do_close();
  timer_.expires_after(std::chrono::seconds(5));
  timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec || self->cleaned_ || !self->closing_) return;
    self->ws_->cut();
    self->cleanup("close timed out");
  });
}

void websocket_session::do_close() {
  close_sent_ = true;
  // Do not wait long for the peer's side of the closing handshake.
  websocket::stream_base::timeout opt{
      ctx_.draining.load() ? std::chrono::milliseconds(500) : std::chrono::milliseconds(2000),
      std::chrono::seconds(2 * ctx_.cfg.heartbeat_s), true};
  ws_->set_timeout(opt);
  websocket::close_reason reason{static_cast<websocket::close_code>(close_code_),
                                 close_reason_.substr(0, 120)};
  ws_->close(*this, reason);
}

void websocket_session::cleanup(const std::string& why) {
  if (cleaned_) return;
  cleaned_ = true;
  timer_.cancel();
  if (join_timer_) join_timer_->cancel();
  prehello_lease_.reset();
  shard_.registry.remove(id_);
  auto self = self_ref();
  for (auto& [room, sub] : rooms_) {
    if (sub.member) unsubscribe(room, sub);
    leave_req req{room, self, {}, false};
    if (sub.actor && !sub.pending)
      caf::anon_send(sub.actor, std::move(req));
    else if (auto d = ctx_.routes->directory_for(room))
      caf::anon_send(d, std::move(req));
  }
  rooms_.clear();
  if (authed_ && users_) caf::anon_send(users_, user_offline{ident_.user, self});
  global_metrics().connections.fetch_sub(1, std::memory_order_relaxed);
  ctx_.sessions.remove();
  auto secs = std::chrono::duration<double>(clock_type::now() - opened_).count();
  spdlog::info("event=conn_close conn={} session={} user={} remote={} seconds={:.1f} reason=\"{}\"",
               id_, session_id_, authed_ ? ident_.user : "-", remote_, secs, why);
}

// --- requests ---------------------------------------------------------------------------

void websocket_session::handle(std::string_view text) {
  client_req req;
  decode_error err;
  if (!decode_request(text, ctx_.lim, req, err)) {
    send_error(err.id, to_string(err.code).data(), err.message);
    if (!authed_) close(4001, "expected hello");
    return;
  }
  if (!authed_) {
    if (req.type != req_type::hello) {
      send_error(req.id, "unauthorized", "the first request must be hello");
      close(4001, "expected hello");
      return;
    }
    handle_hello(req);
    if (authed_) prehello_lease_.reset();  // no longer counts against its address's pre-hello limit
    return;
  }
  // Every frame type spends from a budget; typing and ping from their own.
  auto now = clock_type::now();
  if (req.type == req_type::typing) {
    if (!typing_bucket_.take(now)) {
      global_metrics().count_error("rate_limited");  // fire and forget: no reply to flood with
      return;
    }
  } else if (req.type == req_type::ping) {
    if (!ping_bucket_.take(now)) {
      send_error(req.id, "rate_limited", "too many pings");
      return;
    }
  } else if (!req_bucket_.take(now)) {
    send_error(req.id, "rate_limited", "too many requests");
    return;
  }
  switch (req.type) {
    case req_type::hello:
      send_error(req.id, "bad_request", "already authenticated");
      break;
    case req_type::refresh:
      handle_refresh(req);
      break;
    case req_type::join:
      handle_join(req);
      break;
    case req_type::leave:
      handle_leave(req);
      break;
    case req_type::send:
      handle_send(req);
      break;
    case req_type::dm:
      handle_dm(req);
      break;
    case req_type::edit:
    case req_type::del:
    case req_type::react:
      handle_change(req);
      break;
    case req_type::read:
    case req_type::part:
    case req_type::invite:
      handle_membership(req);
      break;
    case req_type::room_set:
    case req_type::role:
    case req_type::kick:
    case req_type::ban:
    case req_type::unban:
    case req_type::mute:
    case req_type::unmute:
      handle_change(req);
      break;
    case req_type::my_rooms:
      handle_my_rooms(req);
      break;
    case req_type::history:
    case req_type::presence:
    case req_type::search:
    case req_type::room:
      handle_room_query(req);
      break;
    case req_type::typing:
      handle_typing(req);
      break;
    case req_type::rooms: {
      std::vector<std::string> names;
      for (auto& [room, sub] : rooms_)
        if (!sub.pending) names.push_back(room);
      std::sort(names.begin(), names.end());
      send_frame(encode_rooms(req.id, names));
      break;
    }
    case req_type::ping:
      send_frame(encode_pong(req.id));
      break;
  }
}

void websocket_session::handle_hello(client_req& req) {
  auth_result r;
  if (!req.token.empty()) {
    r = ctx_.auth.verify(req.token, now_ms() / 1000);
  } else if (!req.name.empty()) {
    r = ctx_.auth.anonymous(req.name);
  } else {
    r.error = ctx_.auth.config().allow_anonymous ? "hello needs a token or a name"
                                                 : "hello needs a token";
  }
  if (!r.ok) {
    send_error(req.id, "unauthorized", r.error);
    close(4001, "unauthorized");
    return;
  }
  if (ctx_.bans) {
    if (auto ban = ctx_.bans->active(r.id.user, now_ms())) {
      send_error(req.id, "unauthorized",
                 std::string{banned_reason} + (ban->reason.empty() ? "" : ": " + ban->reason));
      close(4003, banned_reason);
      return;
    }
  }
  authed_ = true;
  ident_ = std::move(r.id);
  send_frame(encode_welcome(req.id, ident_.user, ident_.name, session_id_, ctx_.cfg.node,
                            ctx_.cfg.heartbeat_s));
  users_ = ctx_.routes->users_for(ident_.user);
  if (!users_) users_ = ctx_.users;  // home node down: count the connection here meanwhile
  hello_ms_ = now_ms();
  caf::anon_send(users_, user_online{ident_.user, self_ref(), hello_ms_});
  spdlog::info("event=conn_hello conn={} session={} user={} anonymous={}", id_, session_id_,
               ident_.user, ident_.anonymous);
  arm_expiry();
}

void websocket_session::arm_expiry() {
  if (closing_) return;  // the timer now guards the closing handshake
  timer_.cancel();        // ends the hello deadline, or the previous token's expiry
  if (ident_.exp <= 0) return;
  auto left_ms = ident_.exp * 1000 - now_ms();
  timer_.expires_after(std::chrono::milliseconds(std::max<int64_t>(0, left_ms)));
  timer_.async_wait([self = shared_from_this(), exp = ident_.exp](beast::error_code ec) {
    if (ec || self->closing_ || self->ident_.exp != exp) return;
    self->send_error("", "token_expired", "token expired");
    self->close(4002, "token expired");
  });
}

void websocket_session::handle_refresh(client_req& req) {
  auto r = ctx_.auth.verify(req.token, now_ms() / 1000);
  if (!r.ok) {
    send_error(req.id, "unauthorized", r.error);
    return;
  }
  if (r.id.user != ident_.user) {
    send_error(req.id, "forbidden", "a refreshed token must have the same sub");
    return;
  }
  ident_ = std::move(r.id);
  arm_expiry();
  std::string out = "{\"type\":\"refreshed\"";
  if (!req.id.empty()) out += ",\"id\":" + req.id;
  out += ",\"exp\":" + std::to_string(ident_.exp) + "}";
  send_frame(std::move(out));
}

bool websocket_session::may_access(const std::string& room) const {
  std::string a, b;
  if (parse_dm_room(room, a, b))  // a dm room of this user with another valid user
    return (ident_.user == a || ident_.user == b) && a != b && valid_user_id(a) &&
           valid_user_id(b);
  return ident_.may_join(room);
}

void websocket_session::handle_join(client_req& req) {
  if (!may_access(req.room)) {
    send_error(req.id, "forbidden", "you may not join this room");
    return;
  }
  auto it = rooms_.find(req.room);
  if (it == rooms_.end()) {
    if (rooms_.size() >= ctx_.cfg.max_rooms_per_conn) {
      send_error(req.id, "forbidden",
                 "room limit reached (" + std::to_string(ctx_.cfg.max_rooms_per_conn) + ")");
      return;
    }
  }
  auto dir = directory_for(req.room, req.id);
  if (!dir) return;
  auto& sub = rooms_.try_emplace(req.room).first->second;
  if (sub.pending) {  // bounded, and moved if the room's home moves meanwhile
    sub.join_id = req.id;
    sub.rejoin = false;
    send_join(req.room, sub, dir, req.has_since, req.since, req.epoch);
  } else {
    caf::anon_send(dir,
                   join_req{req.room, self_ref(), member_info{ident_.user, ident_.name}, req.id,
                            req.has_since, req.since, req.epoch, ident_.has_role("admin")});
  }
}

void websocket_session::send_join(const std::string& room, room_sub& sub, const caf::actor& dir,
                                  bool has_since, uint64_t since, const std::string& epoch) {
  sub.join_dir = dir;
  sub.join_sent = clock_type::now();
  sub.join_recover = has_since;
  if (has_since) {
    sub.last_seq = since;
    sub.epoch = epoch;
  }
  caf::anon_send(dir, join_req{room, self_ref(), member_info{ident_.user, ident_.name},
                               sub.rejoin ? std::string{} : sub.join_id, has_since, since, epoch,
                               ident_.has_role("admin")});
  arm_join_timer();
}

void websocket_session::arm_join_timer() {
  auto earliest = clock_type::time_point::max();
  for (auto& [room, sub] : rooms_)
    if (sub.pending && (sub.join_dir || sub.rejoin))
      earliest = std::min(earliest, sub.join_sent + kJoinBound);
  if (earliest == clock_type::time_point::max()) {
    if (join_timer_) join_timer_->cancel();
    return;
  }
  if (!join_timer_) join_timer_ = std::make_unique<net::steady_timer>(shard_.ioc);
  join_timer_->expires_at(earliest);  // cancels the wait for a later deadline
  join_timer_->async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec || self->cleaned_) return;
    self->on_join_timer();
  });
}

void websocket_session::on_join_timer() {
  auto now = clock_type::now();
  std::vector<std::string> late;
  for (auto& [room, sub] : rooms_)
    if (sub.pending && (sub.join_dir || sub.rejoin) && sub.join_sent + kJoinBound <= now)
      late.push_back(room);
  for (auto& room : late) fail_join(room, "the room's node did not answer in time");
  arm_join_timer();
}

void websocket_session::fail_join(const std::string& room, const char* why) {
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return;
  if (it->second.rejoin) {
    on_room_gone(room);
    return;
  }
  auto sub = std::move(it->second);
  rooms_.erase(it);
  unsubscribe(room, sub);
  send_error(sub.join_id, "unavailable", why);
  for (auto& s : sub.held) send_error(s.req_id, "unavailable", why);
  // If the join does arrive after all, on_joined finds no room and leaves it.
}

void websocket_session::rejoin(const std::string& room) {
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return;
  auto& sub = it->second;
  if (sub.pending) return;  // a join is on its way already
  if (sub.epoch.empty()) {  // nothing to continue from
    on_room_gone(room);
    return;
  }
  auto since = sub.member ? sub.last_seq : dm_seen_[room];
  spdlog::info("event=room_rejoin conn={} room={} since={}", id_, room, since);
  sub.pending = true;
  sub.rejoin = true;
  sub.join_recover = true;
  sub.last_seq = since;
  sub.join_sent = clock_type::now();
  sub.join_dir = nullptr;
  if (auto dir = ctx_.routes->directory_for(room)) {
    auto epoch = sub.epoch;
    send_join(room, sub, dir, true, since, epoch);
  } else {
    arm_join_timer();  // no home now: wait (bounded) for a placement change to give one
  }
}

void websocket_session::on_placement_change() {
  if (cleaned_ || closing_ || !authed_) return;
  // Soft state follows the nodes: the user's (maybe new) home registry learns
  // this connection again; it ignores a connection it already has.
  if (auto u = ctx_.routes->users_for(ident_.user)) {
    if (u != users_ && users_) caf::anon_send(users_, user_offline{ident_.user, self_ref()});
    users_ = u;
  }
  if (users_) caf::anon_send(users_, user_online{ident_.user, self_ref(), hello_ms_});
  std::vector<std::string> moved;
  std::vector<std::string> lost;
  for (auto& [room, sub] : rooms_) {
    auto dir = ctx_.routes->directory_for(room);
    if (!dir) {
      // The client's own join went to a node now down: answer it at once. (A
      // re-join waits, bounded, for the room to get a home again.)
      if (sub.pending && !sub.rejoin && sub.join_dir) lost.push_back(room);
      continue;
    }
    if (sub.pending) {
      // A join on its way to a node that is no longer the home, or a re-join
      // that waits for a home: send it (the bound still counts from the first).
      if ((sub.join_dir && sub.join_dir.node() != dir.node()) || (!sub.join_dir && sub.rejoin)) {
        auto first = sub.join_sent;
        send_join(room, sub, dir, sub.join_recover, sub.last_seq, std::string{sub.epoch});
        sub.join_sent = first;
        arm_join_timer();
      }
    } else if (sub.actor && sub.actor.node() != dir.node()) {
      moved.push_back(room);
    }
  }
  for (auto& room : moved) rejoin(room);
  for (auto& room : lost) fail_join(room, "the room's node is unreachable");
  if (!lost.empty()) arm_join_timer();
}

void websocket_session::on_joined(joined_msg& msg) {
  auto it = rooms_.find(msg.room);
  if (closing_ || it == rooms_.end()) {
    // Left (or closing) while the join was on its way: the room must forget us.
    if (it == rooms_.end())
      caf::anon_send(msg.room_actor, leave_req{msg.room, self_ref(), {}, false});
    return;
  }
  auto& sub = it->second;
  if (sub.pending && sub.join_dir && msg.room_actor.node() != sub.join_dir.node()) {
    // From a home we moved the join away from: that room must forget us.
    caf::anon_send(msg.room_actor, leave_req{msg.room, self_ref(), {}, false});
    return;
  }
  if (sub.pending && sub.rejoin) {
    sub.rejoin = false;
    sub.join_dir = nullptr;
    // Transparent only if the new home continues the history we saw.
    if (msg.info.recovered != 1 || msg.info.epoch != sub.epoch) {
      caf::anon_send(msg.room_actor, leave_req{msg.room, self_ref(), {}, false});
      on_room_gone(msg.room);
      return;
    }
    if (sub.actor && sub.actor != msg.room_actor)
      caf::anon_send(sub.actor, leave_req{msg.room, self_ref(), {}, false});
    sub.actor = msg.room_actor;
    sub.pending = false;
    if (msg.member && !sub.member) {
      sub.index = shard_.registry.subscribe(msg.room, this);
      sub.member = true;
    }
    auto& last = msg.member ? sub.last_seq : dm_seen_[msg.room];
    for (auto& m : msg.recovered)
      if (m.seq > last) {
        send_frame(encode_message(m));
        last = m.seq;
      }
    last = std::max(last, msg.info.seq);
    auto held = std::move(sub.held);
    for (auto& s : held) hand_over(sub, std::move(s));
    arm_join_timer();
    return;
  }
  sub.actor = msg.room_actor;
  sub.pending = false;
  sub.join_dir = nullptr;
  // Deliveries at or below last_seq are dropped as already seen. Only a join
  // that recovered continues what this connection saw; any other (no since,
  // another epoch after a reset, a trimmed gap) starts from the room's seq now:
  // a history reset must not hide the new epoch's first messages.
  sub.last_seq = msg.info.recovered == 1 ? std::max(sub.last_seq, msg.info.seq) : msg.info.seq;
  sub.epoch = msg.info.epoch;
  if (msg.member && !sub.member) {
    sub.index = shard_.registry.subscribe(msg.room, this);
    sub.member = true;
  }
  for (auto& m : msg.recovered) send_frame(encode_message(m));
  send_frame(encode(msg.info));
  if (!msg.member) {  // dm room: live messages come as user deliveries
    auto& last = dm_seen_[msg.room];
    last = std::max(last, msg.info.seq);
  }
  auto held = std::move(sub.held);
  for (auto& s : held) hand_over(sub, std::move(s));
  arm_join_timer();
}

void websocket_session::set_room_index(const std::string& room, size_t index) {
  auto it = rooms_.find(room);
  if (it != rooms_.end()) it->second.index = index;
}

void websocket_session::unsubscribe(const std::string& room, room_sub& sub) {
  if (!sub.member) return;
  sub.member = false;
  shard_.registry.unsubscribe(room, sub.index, [&room](websocket_session* moved, size_t index) {
    moved->set_room_index(room, index);
  });
}

void websocket_session::handle_leave(client_req& req) {
  auto it = rooms_.find(req.room);
  if (it == rooms_.end()) {
    send_error(req.id, "not_member", "not in this room");
    return;
  }
  auto& sub = it->second;
  leave_req lr{req.room, self_ref(), req.id, true};
  if (sub.pending) {
    if (auto d = ctx_.routes->directory_for(req.room))
      caf::anon_send(d, std::move(lr));  // behind the join, in order
  } else
    caf::anon_send(sub.actor, std::move(lr));
  unsubscribe(req.room, sub);
  rooms_.erase(it);
}

void websocket_session::handle_send(client_req& req) {
  if (!msg_bucket_.take(clock_type::now())) {
    send_error(req.id, "rate_limited", "too many messages, slow down");
    return;
  }
  auto it = rooms_.find(req.room);
  if (it == rooms_.end()) {
    send_error(req.id, "not_member", "join the room first");
    return;
  }
  global_metrics().messages_in.fetch_add(1, std::memory_order_relaxed);
  send_to_room(it->second, make_send(req, event_kind::message));
}

// While the join is pending the room's handle is unknown: hold (a few).
void websocket_session::send_to_room(room_sub& sub, send_req s) {
  if (!sub.pending) return hand_over(sub, std::move(s));
  if (sub.held.size() >= 64) {
    send_error(s.req_id, "rate_limited", "wait for joined before sending more");
    return;
  }
  sub.held.push_back(std::move(s));
}

void websocket_session::handle_dm(client_req& req) {
  if (!msg_bucket_.take(clock_type::now())) {
    send_error(req.id, "rate_limited", "too many messages, slow down");
    return;
  }
  if (!valid_user_id(req.to) || req.to == ident_.user) {
    send_error(req.id, "bad_request", "'to' must be another user's id");
    return;
  }
  auto room = dm_room_name(ident_.user, req.to);
  auto dir = directory_for(room, req.id);
  if (!dir) return;
  global_metrics().messages_in.fetch_add(1, std::memory_order_relaxed);
  req.room = room;
  auto s = make_send(req, event_kind::message);
  s.dm_to = req.to;
  caf::anon_send(dir, std::move(s));
}

send_req websocket_session::make_send(client_req& req, event_kind kind) {
  send_req s;
  s.room = req.room;
  s.conn = self_ref();
  s.who = member_info{ident_.user, ident_.name};
  s.req_id = req.id;
  s.text = std::move(req.text);
  s.data = std::move(req.data);
  s.idem_key = std::move(req.idem_key);
  s.kind = kind;
  s.target = req.seq;
  s.reply_to = req.reply_to;
  s.mentions = std::move(req.mentions);
  s.emoji = std::move(req.emoji);
  s.on = req.on;
  s.admin = ident_.has_role("admin");
  return s;
}

// The room's actor once joined, else its directory (null: answered unavailable).
caf::actor websocket_session::room_or_directory(const std::string& room, const std::string& id) {
  auto it = rooms_.find(room);
  if (it != rooms_.end() && !it->second.pending) return it->second.actor;
  return directory_for(room, id);
}

void websocket_session::handle_membership(client_req& req) {
  if (is_dm_room(req.room)) {
    send_error(req.id, "bad_request", "memberships and read positions are kept for rooms");
    return;
  }
  auto target = room_or_directory(req.room, req.id);
  if (!target) return;
  if (req.type == req_type::read)
    caf::anon_send(target, read_req{req.room, self_ref(), ident_.user, req.id, req.seq});
  else if (req.type == req_type::invite)
    caf::anon_send(target, invite_req{req.room, self_ref(), ident_.user, req.id,
                                      std::move(req.user), ident_.has_role("admin")});
  else
    caf::anon_send(target, part_req{req.room, self_ref(), ident_.user, req.id});
}

void websocket_session::handle_my_rooms(client_req& req) {
  // Each node lists the rooms homed there (one node: itself).
  std::vector<caf::actor> dirs;
  if (ctx_.routes->size() > 1) dirs = ctx_.routes->directories();
  if (dirs.empty()) dirs.push_back(ctx_.directory);
  if (my_rooms_.size() >= 8 || my_rooms_.count(req.id)) {
    send_error(req.id, "rate_limited", "wait for the my_rooms already asked");
    return;
  }
  my_rooms_[req.id].due = dirs.size();
  for (auto& d : dirs) caf::anon_send(d, my_rooms_req{ident_.user, self_ref(), req.id});
}

void websocket_session::on_my_rooms(const my_rooms_msg& m) {
  auto it = my_rooms_.find(m.req_id);
  if (it == my_rooms_.end()) return;
  auto& w = it->second;
  w.rooms.insert(w.rooms.end(), m.rooms.begin(), m.rooms.end());
  if (--w.due > 0) return;
  my_rooms_msg all{m.conn, m.req_id, std::move(w.rooms)};
  my_rooms_.erase(it);
  std::sort(all.rooms.begin(), all.rooms.end(),
            [](const user_room& a, const user_room& b) { return a.room < b.room; });
  push(std::make_shared<const std::string>(encode(all)));
}

void websocket_session::on_parted(const std::string& room) {
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return;
  unsubscribe(room, it->second);
  rooms_.erase(it);
}

void websocket_session::handle_change(client_req& req) {
  if (!msg_bucket_.take(clock_type::now())) {
    send_error(req.id, "rate_limited", "too many messages, slow down");
    return;
  }
  auto kind = req.type == req_type::edit    ? event_kind::edited
              : req.type == req_type::del   ? event_kind::deleted
              : req.type == req_type::react ? event_kind::reaction
                                            : event_kind::moderation;
  if (is_dm_room(req.room)) {
    // A conversation is not joined: its room checks that this user is in it.
    std::string a, b;
    if (!may_access(req.room) || !parse_dm_room(req.room, a, b)) {
      send_error(req.id, "forbidden", "not a participant of this conversation");
      return;
    }
    auto dir = directory_for(req.room, req.id);
    if (!dir) return;
    auto s = make_send(req, kind);
    s.dm_to = a == ident_.user ? b : a;
    caf::anon_send(dir, std::move(s));
    return;
  }
  auto it = rooms_.find(req.room);
  if (it == rooms_.end()) {
    send_error(req.id, "not_member", "join the room first");
    return;
  }
  auto s = make_send(req, kind);
  if (req.type == req_type::room_set) {
    s.text = "settings";
    s.settings = std::move(req.settings);
    s.set = req.set;
  } else if (kind == event_kind::moderation) {
    s.text = to_string(req.type);  // role, kick, ban, unban, mute, unmute
    s.user = std::move(req.user);
    s.reason = std::move(req.reason);
    s.seconds = req.seconds;
    s.role = req.role;
  }
  send_to_room(it->second, std::move(s));
}

void websocket_session::handle_room_query(client_req& req) {
  if (!may_access(req.room)) {
    send_error(req.id, "forbidden", "you may not read this room");
    return;
  }
  auto target = room_or_directory(req.room, req.id);
  if (!target) return;
  // The reader, so that a private room can answer its non-members as a room that does not exist.
  bool admin = ident_.has_role("admin");
  if (req.type == req_type::history)
    caf::anon_send(target, history_req{req.room, self_ref(), req.id, req.before, req.limit,
                                       ident_.user, admin});
  else if (req.type == req_type::search)
    caf::anon_send(target, search_req{req.room, self_ref(), req.id, std::move(req.query),
                                      req.before, req.limit, ident_.user, admin});
  else if (req.type == req_type::room)
    caf::anon_send(target, room_req{req.room, self_ref(), ident_.user, req.id, admin});
  else
    caf::anon_send(target, presence_req{req.room, self_ref(), req.id, ident_.user, admin});
}

// Dm rooms a connection remembers a typing time for (the map is per connection).
constexpr size_t kMaxDmTyping = 64;

void websocket_session::handle_typing(client_req& req) {
  auto now = clock_type::now();
  auto it = rooms_.find(req.room);
  bool dm = is_dm_room(req.room);
  if (dm && !may_access(req.room)) return;
  if (!dm && (it == rooms_.end() || it->second.pending)) return;  // not a member: ignore
  // At most one typing event per room per second from a connection.
  if (dm && dm_typing_.size() >= kMaxDmTyping && !dm_typing_.count(req.room)) {
    // Byte cap on the per-connection map: forget the stale entries, else refuse.
    for (auto i = dm_typing_.begin(); i != dm_typing_.end();)
      i = now - i->second >= std::chrono::seconds(1) ? dm_typing_.erase(i) : std::next(i);
    if (dm_typing_.size() >= kMaxDmTyping) return;
  }
  auto& last = dm ? dm_typing_[req.room] : it->second.last_typing;
  if (now - last < std::chrono::seconds(1)) return;
  last = now;
  typing_req t{req.room, self_ref(), ident_.user, ident_.name};
  if (dm) {
    if (auto d = ctx_.routes->directory_for(req.room)) caf::anon_send(d, std::move(t));
  } else
    caf::anon_send(it->second.actor, std::move(t));
}

void websocket_session::on_deliver(const std::string& room, uint64_t seq, const frame_ptr& frame,
                                   const std::string& skip_user) {
  if (!skip_user.empty() && skip_user == ident_.user) return;
  if (seq > 0 && is_dm_room(room)) {
    // Direct messages reach every connection of both users, and a recovering
    // join may have replayed this one already: keep each seq once.
    auto& last = dm_seen_[room];
    if (seq <= last) return;
    last = seq;
  } else if (seq > 0) {
    // Across a re-join the old and the new home may both deliver a seq: once.
    auto it = rooms_.find(room);
    if (it != rooms_.end()) {
      if (seq <= it->second.last_seq) return;
      it->second.last_seq = seq;
    }
  }
  push(frame);
}

void websocket_session::on_room_lost(const std::string& room) {
  auto it = rooms_.find(room);
  if (it != rooms_.end()) {
    // Answers that were due before the actor's end arrived before this (CAF
    // keeps one sender's messages in order): what is left never will. Say so
    // now rather than leave the client to its timeout; a retry with the same
    // idempotency key gets the original ack if the message was stored.
    auto& sub = it->second;
    auto lost = std::move(sub.unanswered);
    sub.unanswered.clear();
    std::vector<send_req> again;
    for (auto& u : lost) {
      if (u.again)
        again.push_back(std::move(*u.again));
      else
        send_error(u.id, "unavailable",
                   "the room's node was lost before answering; the message may be stored: retry "
                   "with the same idempotency_key");
    }
    // Keyed sends go again, first and in order, once the room is joined at
    // its new home: the client sees its ack late (the first one, if the lost
    // node had stored it), no error.
    if (!again.empty()) {
      for (auto& s : sub.held) again.push_back(std::move(s));
      sub.held = std::move(again);
    }
  }
  rejoin(room);
}

void websocket_session::hand_over(room_sub& sub, send_req s) {
  if (!s.req_id.empty()) {
    room_sub::unanswered_send u{s.req_id, std::nullopt};
    if (!s.idem_key.empty()) u.again = s;  // a copy only while it is in flight
    sub.unanswered.push_back(std::move(u));
  }
  caf::anon_send(sub.actor, std::move(s));
}

bool websocket_session::keep_for_resend(const std::string& room, const std::string& req_id) {
  auto it = rooms_.find(room);
  if (it == rooms_.end() || req_id.empty()) return false;
  for (auto& u : it->second.unanswered)
    if (u.id == req_id) return u.again.has_value();  // on_room_lost sends it again
  return false;
}

void websocket_session::on_answered(const std::string& room, const std::string& req_id) {
  if (req_id.empty()) return;
  if (room.empty()) my_rooms_.erase(req_id);  // an error: a node could not list its rooms
  auto forget = [&](room_sub& sub) {
    // Answers come mostly in order: the id is usually the oldest.
    auto& q = sub.unanswered;
    for (auto i = q.begin(); i != q.end(); ++i)
      if (i->id == req_id) {
        q.erase(i);
        return true;
      }
    return false;
  };
  if (!room.empty()) {
    auto it = rooms_.find(room);
    if (it != rooms_.end()) forget(it->second);
    return;
  }
  for (auto& [name, sub] : rooms_)  // an error names no room: rare, few rooms
    if (!sub.unanswered.empty() && forget(sub)) return;
}

void websocket_session::on_join_refused(const std::string& room, const std::string& req_id) {
  auto it = rooms_.find(room);
  if (it == rooms_.end() || !it->second.pending) return;
  if (it->second.rejoin) {
    on_room_gone(room);
    return;
  }
  if (it->second.join_id != req_id) return;
  auto sub = std::move(it->second);
  rooms_.erase(it);
  unsubscribe(room, sub);
  for (auto& s : sub.held) send_error(s.req_id, "not_member", "the join was refused");
  arm_join_timer();
}

void websocket_session::on_room_gone(const std::string& room) {
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return;
  auto sub = std::move(it->second);
  rooms_.erase(it);
  unsubscribe(room, sub);
  for (auto& s : sub.held) send_error(s.req_id, "unavailable", "the room's node was lost");
  std::string out = "{\"type\":\"error\",\"code\":\"unavailable\",\"room\":" + json_quote(room) +
                    ",\"message\":\"room lost; join again with since to recover\"}";
  global_metrics().count_error("unavailable");
  send_frame(std::move(out));
}

}  // namespace chat
