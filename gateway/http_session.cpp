#include "gateway/http_session.hpp"

#include <boost/beast/websocket.hpp>

#include "gateway/api.hpp"
#include "gateway/http_routes.hpp"
#include "gateway/websocket_session.hpp"

namespace chat {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

http_session::http_session(net::ip::tcp::socket&& socket, io_shard& shard, server_context& ctx)
    : stream_(std::move(socket)), shard_(shard), ctx_(ctx) {}

void http_session::run() { do_read(); }

void http_session::do_read() {
  parser_.emplace();
  parser_->body_limit(1024 * 1024);
  parser_->header_limit(16 * 1024);
  stream_.expires_after(std::chrono::seconds(30));
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&http_session::on_read, shared_from_this()));
}

void http_session::on_read(beast::error_code ec, std::size_t) {
  if (ec == http::error::end_of_stream) {
    stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
    return;
  }
  if (ec) return;  // timeout, reset, or a malformed request: just drop it
  auto req = parser_->release();
  auto target = std::string_view(req.target().data(), req.target().size());
  auto path = target.substr(0, target.find('?'));
  if (beast::websocket::is_upgrade(req)) {
    if (path == "/ws") {
      stream_.expires_never();
      std::make_shared<websocket_session>(stream_.release_socket(), shard_, ctx_)
          ->run(std::move(req));
      return;
    }
    auto res = json_response(req, http::status::not_found,
                             R"({"error":"not_found","message":"WebSocket endpoint is /ws"})");
    res.keep_alive(false);
    send(std::move(res));
    return;
  }
  if (path.substr(0, 5) == "/api/") {
    // Answered later, from the API actor via this session's io_context.
    handle_api(std::move(req), ctx_, shard_.ioc,
               [self = shared_from_this()](http_response&& res) { self->send(std::move(res)); });
    return;
  }
  http_response res;
  if (!route_http(req, ctx_, res))
    res = json_response(req, http::status::not_found,
                        R"({"error":"not_found","message":"no such endpoint"})");
  send(std::move(res));
}

void http_session::send(http::response<http::string_body>&& res) {
  bool close = res.need_eof();
  auto sp = std::make_shared<http::response<http::string_body>>(std::move(res));
  res_ = sp;
  http::async_write(stream_, *sp,
                    beast::bind_front_handler(&http_session::on_write, shared_from_this(), close));
}

void http_session::on_write(bool close, beast::error_code ec, std::size_t) {
  res_.reset();
  if (ec) return;
  if (close) {
    stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
    return;
  }
  do_read();
}

}  // namespace chat
