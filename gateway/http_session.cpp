#include "gateway/http_session.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <cmath>
#include <optional>
#include <type_traits>

#include "gateway/api.hpp"
#include "gateway/http_routes.hpp"
#include "gateway/ws_start.hpp"
#include "messages/codec.hpp"

namespace chat {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using tls_stream = beast::ssl_stream<tcp::socket>;

namespace {

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

std::string_view sv(beast::string_view s) { return {s.data(), s.size()}; }

// How long a connection we are closing may take to read our last response
// (and how much of what it still sends we read and discard meanwhile): closing
// with unread input makes the kernel send a reset, which can destroy the
// response before the client reads it.
constexpr double kLingerSeconds = 1.0;
constexpr size_t kLingerBytes = 1 << 20;

template <class Stream>
class http_session : public std::enable_shared_from_this<http_session<Stream>> {
 public:
  static constexpr bool tls = std::is_same_v<Stream, tls_stream>;

  http_session(Stream&& stream, io_shard& shard, server_context& ctx, address_lease lease,
               tcp::endpoint peer, std::shared_ptr<net::ssl::context> tls_ctx)
      : tls_ctx_(std::move(tls_ctx)),
        stream_(std::move(stream)),
        shard_(shard),
        ctx_(ctx),
        lease_(std::move(lease)),
        peer_(peer),
        proxied_(ctx.edge->trusted_proxies.contains(peer.address())),
        deadline_(shard.ioc) {}

  void run() {
    if constexpr (tls) {
      arm(ctx_.cfg.header_timeout_s, phase::handshake);
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                self->on_handshake(ec);
                              });
    } else {
      do_read();
    }
  }

 private:
  enum class phase { handshake, header, body, write, closing };

  // One deadline at a time, for the phase the connection is in; expiry closes
  // the socket, which fails the pending operation. The handler holds the
  // session weakly, so a finished session goes at once, not at its deadline.
  void arm(double secs, phase p) {
    phase_ = p;
    deadline_.expires_after(seconds(secs));
    deadline_.async_wait([weak = this->weak_from_this(), gen = ++gen_](beast::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || gen != self->gen_ || self->handed_off_) return;
      // An idle keep-alive connection timing out is no slow header.
      if (self->phase_ == phase::header &&
          (self->requests_ == 0 || (self->parser_ && self->parser_->got_some())))
        global_edge_metrics().header_timeouts.fetch_add(1, std::memory_order_relaxed);
      self->cut();
    });
  }

  void disarm() {
    ++gen_;
    deadline_.cancel();
  }

  void cut() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).close(ignored);
  }

  void on_handshake(beast::error_code ec) {
    if (ec) {
      global_edge_metrics().tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
      spdlog::debug("event=tls_handshake_failed remote={} error=\"{}\"", remote(), ec.message());
      return;
    }
    do_read();
  }

  void do_read() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(ctx_.cfg.max_header_bytes));
    parser_->body_limit(ctx_.cfg.max_body);
    arm(ctx_.cfg.header_timeout_s, phase::header);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_header(ec);
                            });
  }

  static bool is_http_error(const beast::error_code& ec) {
    return ec.category() == http::make_error_code(http::error::bad_method).category();
  }

  void on_header(beast::error_code ec) {
    if (ec == http::error::header_limit) {
      if (request_line_too_long()) return reject(http::status::uri_too_long, "request line too long");
      return reject(http::status::request_header_fields_too_large, "request header too large");
    }
    if (ec == http::error::body_limit)  // a Content-Length over the limit: the body stays unread
      return reject(http::status::payload_too_large, "request body too large");
    if (ec == http::error::end_of_stream || ec == http::error::partial_message) return;
    if (ec) {
      if (is_http_error(ec)) reject(http::status::bad_request, "malformed request: " + ec.message());
      return;  // timed out (closed by the deadline), reset, ...
    }
    auto& req = parser_->get();
    if (req.target().size() > ctx_.cfg.max_request_line)
      return reject(http::status::uri_too_long, "request target too long");
    // Beast takes any coding list ending in "chunked" as chunked; a body we
    // cannot decode must not be mistaken for one we can (request smuggling).
    auto te = req.count(http::field::transfer_encoding);
    if (te > 1 || (te == 1 && !beast::iequals(req[http::field::transfer_encoding], "chunked")))
      return reject(http::status::not_implemented,
                    "only Transfer-Encoding: chunked is supported");
    if (parser_->is_done()) return on_request();
    arm(ctx_.cfg.body_timeout_s, phase::body);
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_body(ec);
                     });
  }

  void on_body(beast::error_code ec) {
    if (ec == http::error::body_limit)
      return reject(http::status::payload_too_large, "request body too large");
    if (ec) {
      if (is_http_error(ec) && ec != http::error::partial_message)
        reject(http::status::bad_request, "malformed request: " + ec.message());
      return;
    }
    on_request();
  }

  // After header_limit: 414 when the request line itself does not fit the
  // line limit, else 431. Beast parses the request line as soon as it is
  // complete in the first bytes it gets (then the target is set), otherwise
  // only with the whole header: then a second Beast parser limited to the line
  // length looks at what arrived.
  bool request_line_too_long() {
    auto target = parser_->get().target();
    if (!target.empty()) return target.size() > ctx_.cfg.max_request_line;
    http::request_parser<http::empty_body> probe;
    probe.header_limit(static_cast<std::uint32_t>(ctx_.cfg.max_request_line + 2));
    beast::error_code ec;
    probe.put(buffer_.data(), ec);
    return probe.get().target().empty();
  }

  void on_request() {
    disarm();
    ++requests_;
    auto req = parser_->release();
    auto target = sv(req.target());
    auto path = target.substr(0, target.find('?'));
    if (beast::websocket::is_upgrade(req)) {
      if (path == "/ws") return upgrade(std::move(req));
      auto res = json_response(req, http::status::not_found,
                               R"({"error":"not_found","message":"WebSocket endpoint is /ws"})");
      res.keep_alive(false);
      return send(std::move(res));
    }
    if (path.substr(0, 5) == "/api/") {
      // Answered later, from the API actor via this session's io_context.
      handle_api(std::move(req), ctx_, shard_.ioc,
                 [self = this->shared_from_this()](http_response&& res) { self->send(std::move(res)); });
      return;
    }
    http_response res;
    if (!route_http(req, ctx_, res))
      res = json_response(req, http::status::not_found,
                          R"({"error":"not_found","message":"no such endpoint"})");
    send(std::move(res));
  }

  // The per-address limits and the Origin check, then the WebSocket session
  // takes the stream over.
  void upgrade(http_request&& req) {
    auto& edge = *ctx_.edge;
    auto& m = global_edge_metrics();
    std::string xff;
    if (proxied_)
      for (auto& f : req)
        if (beast::iequals(f.name_string(), "X-Forwarded-For")) {
          if (!xff.empty()) xff += ',';
          xff += sv(f.value());
        }
    auto client = client_address(peer_.address(), xff, edge.trusted_proxies);
    auto key = address_key::of(client);
    auto& lim = edge.limiter;
    if (!lim.take_handshake(key, std::chrono::steady_clock::now())) {
      m.refuse(edge_metrics::handshake_rate);
      return refuse(req, http::status::too_many_requests, "rate_limited",
                    "too many WebSocket handshakes from this address",
                    static_cast<int>(std::ceil(1.0 / lim.limits().handshake_rate)));
    }
    std::optional<std::string_view> origin;
    if (auto it = req.find(http::field::origin); it != req.end()) origin = sv(it->value());
    if (!edge.origins.allows(origin, sv(req[http::field::host]))) {
      m.refuse(edge_metrics::origin);
      spdlog::info("event=origin_refused remote={} origin=\"{}\"", client.to_string(),
                   origin ? std::string(origin->substr(0, 200)) : "");
      return refuse(req, http::status::forbidden, "forbidden", "origin not allowed", 0);
    }
    conn_admission adm;
    if (lease_) {
      adm.connection = std::move(lease_);
    } else {  // behind a trusted proxy: the client is known only now
      if (!lim.acquire(key, address_limiter::kind::connection)) {
        m.refuse(edge_metrics::connections);
        return refuse(req, http::status::too_many_requests, "rate_limited",
                      "too many connections from this address", 5);
      }
      adm.connection = address_lease(&lim, key, address_limiter::kind::connection);
    }
    if (!lim.acquire(key, address_limiter::kind::prehello)) {
      m.refuse(edge_metrics::prehello);
      if (!proxied_) lease_ = std::move(adm.connection);  // still open while we answer
      return refuse(req, http::status::too_many_requests, "rate_limited",
                    "too many connections from this address waiting for hello", 5);
    }
    adm.prehello = address_lease(&lim, key, address_limiter::kind::prehello);
    adm.remote = proxied_ ? client.to_string() + " via=" + remote() : remote();
    handed_off_ = true;
    if constexpr (tls)
      start_websocket_session(std::move(stream_), std::move(tls_ctx_), shard_, ctx_, std::move(adm),
                              std::move(req));
    else
      start_websocket_session(std::move(stream_), shard_, ctx_, std::move(adm), std::move(req));
  }

  void refuse(const http_request& req, http::status status, const char* code,
              const std::string& message, int retry_after_s) {
    auto res = json_response(req, status,
                             std::string("{\"error\":\"") + code + "\",\"message\":" +
                                 json_quote(message) + "}");
    if (retry_after_s > 0) res.set(http::field::retry_after, std::to_string(retry_after_s));
    res.keep_alive(false);
    send(std::move(res));
  }

  // An HTTP limit or a malformed request: answer, then close.
  void reject(http::status status, const std::string& message) {
    auto& m = global_edge_metrics();
    switch (status) {
      case http::status::payload_too_large: m.http_413.fetch_add(1, std::memory_order_relaxed); break;
      case http::status::uri_too_long: m.http_414.fetch_add(1, std::memory_order_relaxed); break;
      case http::status::request_header_fields_too_large:
        m.http_431.fetch_add(1, std::memory_order_relaxed);
        break;
      case http::status::not_implemented: m.http_501.fetch_add(1, std::memory_order_relaxed); break;
      default: m.http_400.fetch_add(1, std::memory_order_relaxed); break;
    }
    spdlog::debug("event=http_rejected remote={} status={} reason=\"{}\"", remote(),
                  static_cast<unsigned>(status), message);
    http_request req;
    req.version(11);
    const char* code = status == http::status::not_implemented ? "not_implemented"
                       : status == http::status::bad_request   ? "bad_request"
                                                               : "too_large";
    refuse(req, status, code, message, 0);
  }

  void send(http_response&& res) {
    bool close = res.need_eof();
    auto sp = std::make_shared<http_response>(std::move(res));
    res_ = sp;
    arm(ctx_.cfg.body_timeout_s, phase::write);
    http::async_write(stream_, *sp,
                      [self = this->shared_from_this(), close](beast::error_code ec, std::size_t) {
                        self->on_write(close, ec);
                      });
  }

  void on_write(bool close, beast::error_code ec) {
    res_.reset();
    if (ec) return;
    if (close) return finish();
    do_read();
  }

  // Closes after a last response: TLS says close_notify; plain TCP shuts its
  // sending side and reads (and drops) what the client still sends for a
  // moment, so that the response is not lost to a reset.
  void finish() {
    arm(kLingerSeconds, phase::closing);
    if constexpr (tls) {
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) { self->disarm(); });
    } else {
      beast::error_code ignored;
      stream_.shutdown(tcp::socket::shutdown_send, ignored);
      drain();
    }
  }

  void drain() {
    static thread_local char sink[4096];
    stream_.async_read_some(net::buffer(sink), [self = this->shared_from_this()](
                                                   beast::error_code ec, std::size_t n) {
      self->drained_ += n;
      if (ec || self->drained_ >= kLingerBytes) return self->disarm();
      self->drain();
    });
  }

  std::string remote() const {
    return peer_.address().to_string() + ":" + std::to_string(peer_.port());
  }

  std::shared_ptr<net::ssl::context> tls_ctx_;  // outlives the SSL made from it (null: plain)
  Stream stream_;
  io_shard& shard_;
  server_context& ctx_;
  address_lease lease_;
  tcp::endpoint peer_;
  bool proxied_;
  net::steady_timer deadline_;
  uint64_t gen_ = 0;
  phase phase_ = phase::header;
  bool handed_off_ = false;
  uint64_t requests_ = 0;
  size_t drained_ = 0;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<void> res_;  // the response being written
};

}  // namespace

void start_http_session(tcp::socket&& socket, io_shard& shard, server_context& ctx,
                        address_lease lease, std::shared_ptr<net::ssl::context> tls) {
  beast::error_code ec;
  auto peer = socket.remote_endpoint(ec);
  if (ec) return;  // gone already
  if (tls) {
    tls_stream stream(std::move(socket), *tls);
    std::make_shared<http_session<tls_stream>>(std::move(stream), shard, ctx, std::move(lease),
                                               peer, std::move(tls))
        ->run();
  } else {
    std::make_shared<http_session<tcp::socket>>(std::move(socket), shard, ctx, std::move(lease),
                                                peer, nullptr)
        ->run();
  }
}

}  // namespace chat
