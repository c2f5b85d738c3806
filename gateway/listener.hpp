#pragma once
// Accepts TCP connections, counts each against its source address (closing it
// unread when the address is over --max-conns-per-address) and deals them
// round-robin to the I/O shards, plain or TLS.
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>

#include "gateway/server_context.hpp"
#include "gateway/tls.hpp"

namespace chat {

class listener : public std::enable_shared_from_this<listener> {
 public:
  // `tls` null: plain HTTP and WebSocket; else only TLS, with its current context.
  listener(boost::asio::io_context& ioc, server_context& ctx, std::shared_ptr<tls_contexts> tls = nullptr);
  // Binds and listens; returns false with `err` set on failure.
  bool open(const boost::asio::ip::tcp::endpoint& ep, std::string& err);
  void run();
  void stop();
  uint16_t port() const { return port_; }
  bool tls() const { return tls_ != nullptr; }

 private:
  void do_accept();
  void sweep();

  boost::asio::io_context& ioc_;
  server_context& ctx_;
  std::shared_ptr<tls_contexts> tls_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer sweep_timer_;
  size_t next_ = 0;
  uint16_t port_ = 0;
};

}  // namespace chat
