#pragma once
// Accepts TCP connections and deals them round-robin to the I/O shards.
#include <boost/asio/ip/tcp.hpp>
#include <memory>

#include "gateway/server_context.hpp"

namespace chat {

class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(boost::asio::io_context& ioc, server_context& ctx);
  // Binds and listens; returns false with `err` set on failure.
  bool open(const boost::asio::ip::tcp::endpoint& ep, std::string& err);
  void run() { do_accept(); }
  void stop();
  uint16_t port() const { return port_; }

 private:
  void do_accept();

  boost::asio::io_context& ioc_;
  server_context& ctx_;
  boost::asio::ip::tcp::acceptor acceptor_;
  size_t next_ = 0;
  uint16_t port_ = 0;
};

}  // namespace chat
