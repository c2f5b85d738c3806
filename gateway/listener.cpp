#include "gateway/listener.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "gateway/http_session.hpp"

namespace chat {

namespace net = boost::asio;
using tcp = net::ip::tcp;

listener::listener(net::io_context& ioc, server_context& ctx)
    : ioc_(ioc), ctx_(ctx), acceptor_(ioc) {}

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

void listener::stop() {
  boost::system::error_code ec;
  acceptor_.close(ec);
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
    socket.set_option(tcp::no_delay(true), ec);
    // The socket belongs to `shard`: start its session on that thread.
    net::post(shard.ioc, [&shard, &ctx = self->ctx_, s = std::move(socket)]() mutable {
      std::make_shared<http_session>(std::move(s), shard, ctx)->run();
    });
    self->do_accept();
  });
}

}  // namespace chat
