#pragma once
// One plain HTTP connection: serves /healthz, /readyz, /metrics, the web client
// and the server API, and hands a WebSocket upgrade on /ws to a websocket_session.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <optional>

#include "gateway/server_context.hpp"

namespace chat {

class http_session : public std::enable_shared_from_this<http_session> {
 public:
  http_session(boost::asio::ip::tcp::socket&& socket, io_shard& shard, server_context& ctx);
  void run();

 private:
  void do_read();
  void on_read(boost::beast::error_code ec, std::size_t bytes);
  void send(boost::beast::http::response<boost::beast::http::string_body>&& res);
  void on_write(bool close, boost::beast::error_code ec, std::size_t bytes);

  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  io_shard& shard_;
  server_context& ctx_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::shared_ptr<void> res_;  // the response being written
};

}  // namespace chat
