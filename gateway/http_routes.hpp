#pragma once
// The plain HTTP endpoints, as a function of the request: no sockets, so they
// test without a server.
#include <boost/beast/http.hpp>
#include <functional>

#include "gateway/server_context.hpp"

namespace chat {

using http_request = boost::beast::http::request<boost::beast::http::string_body>;
using http_response = boost::beast::http::response<boost::beast::http::string_body>;

// Synchronous routes: returns true and fills `res` when it handled the request.
bool route_http(const http_request& req, server_context& ctx, http_response& res);

// Builds a JSON response with the request's version and keep-alive.
http_response json_response(const http_request& req, boost::beast::http::status status,
                            std::string body);

}  // namespace chat
