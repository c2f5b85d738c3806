#pragma once
// A WebSocket test client: every wait is bounded; frames are split on '\n'.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace chat_test {

using json = nlohmann::json;
using namespace std::chrono_literals;

// True when `j` is a protocol object of this type.
inline bool is_type(const json& j, const char* t) {
  return j.is_object() && j.value("type", "") == t;
}

class ws_client {
 public:
  ws_client() = default;
  ws_client(const ws_client&) = delete;

  // Before connect: the local address to connect from (e.g. "127.0.0.2"), extra
  // handshake headers (Origin, X-Forwarded-For), TLS (wss://) with a client
  // context that verifies the server's certificate for 127.0.0.1.
  void set_source(std::string address) { source_ = std::move(address); }
  void add_header(std::string name, std::string value) {
    headers_.emplace_back(std::move(name), std::move(value));
  }
  void use_tls(boost::asio::ssl::context& ctx) { tls_ctx_ = &ctx; }
  // The HTTP status answering the upgrade (101 when accepted, 0 when none came).
  int handshake_status() const { return status_; }
  // With TLS: the subject CN of the certificate the server presented.
  std::string peer_common_name();

  // rcvbuf > 0 shrinks the socket's receive buffer before connecting (slow readers).
  bool connect(uint16_t port, const std::string& target = "/ws", int rcvbuf = 0);
  // Connects and says hello with a name (anonymous) or a token; returns the welcome or null.
  json hello_name(uint16_t port, const std::string& name, int rcvbuf = 0);
  json hello_token(uint16_t port, const std::string& token);

  void send(const json& j) { send_text(j.dump()); }
  void send_text(const std::string& text);
  void send_binary(const std::string& data);

  // The next JSON object, or nullopt on timeout / close.
  std::optional<json> recv(std::chrono::milliseconds timeout = 5s);
  // The next object for which pred is true; the others are dropped.
  std::optional<json> recv_until(const std::function<bool(const json&)>& pred,
                                 std::chrono::milliseconds timeout = 5s);
  // The reply with this id (skipping events).
  std::optional<json> reply(int id, std::chrono::milliseconds timeout = 5s);
  // Request and wait for its reply.
  std::optional<json> request(json j, int id, std::chrono::milliseconds timeout = 5s);

  // Waits until the server closes; returns its close code (1006: no close frame, 0: timeout).
  int wait_close(std::chrono::milliseconds timeout = 5s);
  bool closed() const { return closed_; }
  int close_code() const { return close_code_; }
  const std::string& close_reason() const { return close_reason_; }
  size_t frames() const { return frames_; }
  void close();
  boost::asio::ip::tcp::socket& socket() {
    return wss_ ? boost::beast::get_lowest_layer(*wss_).socket() : ws_->next_layer().socket();
  }

 private:
  using tls_ws = boost::beast::websocket::stream<boost::beast::ssl_stream<boost::beast::tcp_stream>>;
  template <class F>
  void with_ws(F&& f) {
    if (wss_)
      f(*wss_);
    else
      f(*ws_);
  }
  template <class Ws>
  void open(Ws& ws, uint16_t port, const std::string& target, int rcvbuf);
  void start_read();
  bool pump(std::chrono::steady_clock::time_point deadline);

  boost::asio::io_context ioc_;
  std::optional<boost::beast::websocket::stream<boost::beast::tcp_stream>> ws_;
  std::optional<tls_ws> wss_;
  boost::asio::ssl::context* tls_ctx_ = nullptr;
  std::string source_;
  std::vector<std::pair<std::string, std::string>> headers_;
  int status_ = 0;
  boost::beast::flat_buffer buf_;
  std::deque<json> objects_;
  bool reading_ = false;
  bool closed_ = false;
  int close_code_ = 0;
  std::string close_reason_;
  size_t frames_ = 0;
};

}  // namespace chat_test
