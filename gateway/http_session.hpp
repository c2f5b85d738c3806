#pragma once
// One HTTP connection, plain or TLS: serves /healthz, /readyz, /metrics, the web
// client and the server API, and hands a WebSocket upgrade on /ws to a
// websocket_session once the per-address limits and the Origin check allow it.
// The HTTP limits are Beast's parser limits, answered with a status and a close:
// header block too large 431, request line or target too long 414, body (or its
// Content-Length) too large 413, a Transfer-Encoding other than "chunked" 501,
// a malformed request 400; a header not complete in time is closed unanswered.
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <memory>

#include "gateway/edge_limits.hpp"
#include "gateway/server_context.hpp"

namespace chat {

// Serves `socket` on `shard`'s thread (call it there). `tls` null: plain HTTP;
// else TLS with that context. `lease`: the connection's count against its peer
// address, empty when the peer is a trusted proxy (its clients are counted at
// the upgrade, by X-Forwarded-For).
void start_http_session(boost::asio::ip::tcp::socket&& socket, io_shard& shard, server_context& ctx,
                        address_lease lease, std::shared_ptr<boost::asio::ssl::context> tls);

}  // namespace chat
