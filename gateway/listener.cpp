#include "gateway/listener.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "gateway/edge_limits.hpp"
#include "gateway/http_session.hpp"

namespace chat {

namespace net = boost::asio;
using tcp = net::ip::tcp;

listener::listener(net::io_context& ioc, server_context& ctx, std::shared_ptr<tls_contexts> tls)
    : ioc_(ioc), ctx_(ctx), tls_(std::move(tls)), acceptor_(ioc), sweep_timer_(ioc) {}

bool listener::open(const tcp::endpoint& ep, std::string& err) {
  boost::system::error_code ec;
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    err = ec.message();
    return false;
  }
  port_ = acceptor_.local_endpoint(ec).port();
  return true;
}

void listener::run() {
  do_accept();
  sweep();
}

void listener::stop() {
  boost::system::error_code ec;
  acceptor_.close(ec);
  sweep_timer_.cancel();
}

// Addresses whose handshake buckets have refilled and that hold nothing are
// forgotten every few seconds (those that hold something are dropped as they
// release it).
void listener::sweep() {
  sweep_timer_.expires_after(std::chrono::seconds(5));
  sweep_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || !self->acceptor_.is_open()) return;
    self->ctx_.edge->limiter.sweep(std::chrono::steady_clock::now());
    self->sweep();
  });
}

void listener::do_accept() {
  auto& shard = *ctx_.shards[next_++ % ctx_.shards.size()];
  acceptor_.async_accept(shard.ioc, [self = shared_from_this(), &shard](
                                        boost::system::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !self->acceptor_.is_open()) return;
    if (ec) {
      // Out of file descriptors and the like: say so, back off, keep serving.
      spdlog::warn("event=accept_failed error=\"{}\"", ec.message());
      auto t = std::make_shared<net::steady_timer>(self->ioc_, std::chrono::milliseconds(50));
      t->async_wait([self, t](boost::system::error_code) { self->do_accept(); });
      return;
    }
    auto peer = socket.remote_endpoint(ec);
    if (ec) return self->do_accept();  // reset before we looked
    auto& edge = *self->ctx_.edge;
    address_lease lease;
    // A trusted proxy carries many clients: they are counted by
    // X-Forwarded-For at the upgrade instead.
    if (!edge.trusted_proxies.contains(peer.address())) {
      auto key = address_key::of(peer.address());
      // A TLS handshake costs the server far more than the client: rate it
      // before doing one.
      if (self->tls_ && !edge.limiter.take_handshake(key, std::chrono::steady_clock::now(),
                                                     address_limiter::bucket::tls)) {
        global_edge_metrics().refuse(edge_metrics::tls_handshake_rate);
        spdlog::debug("event=conn_refused reason=tls_handshake_rate remote={}", key.to_string());
        socket.close(ec);
        return self->do_accept();
      }
      if (!edge.limiter.acquire(key, address_limiter::kind::connection)) {
        // Closed before reading anything: the cheapest answer to a flood.
        global_edge_metrics().refuse(edge_metrics::connections);
        spdlog::debug("event=conn_refused reason=per_address_connections remote={}",
                      key.to_string());
        socket.close(ec);
        return self->do_accept();
      }
      lease = address_lease(&edge.limiter, key, address_limiter::kind::connection);
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto tls = self->tls_ ? self->tls_->current() : nullptr;
    // The socket belongs to `shard`: start its session on that thread.
    net::post(shard.ioc, [&shard, &ctx = self->ctx_, s = std::move(socket), lease = std::move(lease),
                          tls = std::move(tls)]() mutable {
      start_http_session(std::move(s), shard, ctx, std::move(lease), std::move(tls));
    });
    self->do_accept();
  });
}

}  // namespace chat
