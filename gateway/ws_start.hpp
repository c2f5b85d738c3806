#pragma once
// Hands an HTTP connection that asked for an upgrade to a new websocket_session
// over the same stream, plain or TLS, and answers the upgrade.
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <memory>

#include "gateway/websocket_session.hpp"

namespace chat {

using ws_upgrade_request = boost::beast::http::request<boost::beast::http::string_body>;

void start_websocket_session(boost::asio::ip::tcp::socket&& stream, io_shard& shard,
                             server_context& ctx, conn_admission admission, ws_upgrade_request req);
// `tls` is the context the stream's SSL was made from: kept while it lives.
void start_websocket_session(boost::beast::ssl_stream<boost::asio::ip::tcp::socket>&& stream,
                             std::shared_ptr<boost::asio::ssl::context> tls, io_shard& shard,
                             server_context& ctx, conn_admission admission, ws_upgrade_request req);

}  // namespace chat
