#include "tests/integration/ws_client.hpp"

#include "messages/codec.hpp"
#include <boost/asio/ssl/host_name_verification.hpp>

namespace chat_test {

namespace beast = boost::beast;
namespace websocket = beast::websocket;

template <class Ws>
void ws_client::open(Ws& ws, uint16_t port, const std::string& target, int rcvbuf) {
  auto& tcp = beast::get_lowest_layer(ws);
  if (rcvbuf > 0 || !source_.empty()) {
    tcp.socket().open(boost::asio::ip::tcp::v4());
    if (rcvbuf > 0) tcp.socket().set_option(boost::asio::socket_base::receive_buffer_size(rcvbuf));
    if (!source_.empty()) tcp.socket().bind({boost::asio::ip::make_address(source_), 0});
  }
  tcp.expires_after(5s);
  tcp.connect({boost::asio::ip::make_address("127.0.0.1"), port});
  if constexpr (std::is_same_v<Ws, tls_ws>) {
    ws.next_layer().set_verify_mode(boost::asio::ssl::verify_peer);
    ws.next_layer().set_verify_callback(boost::asio::ssl::host_name_verification("127.0.0.1"));
    ws.next_layer().handshake(boost::asio::ssl::stream_base::client);
  }
  ws.read_message_max(64 * 1024 * 1024);
  ws.set_option(websocket::stream_base::decorator([h = headers_](websocket::request_type& req) {
    for (auto& [k, v] : h) req.set(k, v);
  }));
  // Asynchronous because only that form hands back a declined response (its status).
  websocket::response_type res;
  beast::error_code ec = boost::asio::error::timed_out;
  ws.async_handshake(res, "127.0.0.1:" + std::to_string(port), target,
                     [&](beast::error_code e) { ec = e; });
  ioc_.restart();
  ioc_.run();  // bounded by the stream's expiry
  tcp.expires_never();
  if (ec != websocket::error::upgrade_declined && ec) throw beast::system_error(ec);
  status_ = static_cast<int>(res.result_int());
  if (ec) throw beast::system_error(ec);
}

bool ws_client::connect(uint16_t port, const std::string& target, int rcvbuf) {
  status_ = 0;
  try {
    if (tls_ctx_) {
      wss_.emplace(ioc_, *tls_ctx_);
      open(*wss_, port, target, rcvbuf);
    } else {
      ws_.emplace(ioc_);
      open(*ws_, port, target, rcvbuf);
    }
    return true;
  } catch (...) {
    return false;
  }
}

std::string ws_client::peer_common_name() {
  if (!wss_) return {};
  X509* cert = SSL_get_peer_certificate(wss_->next_layer().native_handle());
  if (!cert) return {};
  char cn[256] = {0};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  X509_free(cert);
  return cn;
}

json ws_client::hello_name(uint16_t port, const std::string& name, int rcvbuf) {
  if (!connect(port, "/ws", rcvbuf)) return nullptr;
  send({{"type", "hello"}, {"id", 1}, {"name", name}});
  auto r = recv();
  return r ? *r : json();
}

json ws_client::hello_token(uint16_t port, const std::string& token) {
  if (!connect(port)) return nullptr;
  send({{"type", "hello"}, {"id", 1}, {"token", token}});
  auto r = recv();
  return r ? *r : json();
}

void ws_client::send_text(const std::string& text) {
  with_ws([&](auto& ws) {
    ws.text(true);
    beast::error_code ec;
    ws.write(boost::asio::buffer(text), ec);
  });
}

void ws_client::send_binary(const std::string& data) {
  with_ws([&](auto& ws) {
    ws.binary(true);
    beast::error_code ec;
    ws.write(boost::asio::buffer(data), ec);
    ws.text(true);
  });
}

void ws_client::start_read() {
  reading_ = true;
  with_ws([this](auto& ws) { ws.async_read(buf_, [this, &ws](beast::error_code ec, size_t) {
    reading_ = false;
    if (ec) {
      closed_ = true;
      if (ec == websocket::error::closed) {
        close_code_ = ws.reason().code;
        close_reason_ = std::string(ws.reason().reason.c_str());
      } else {
        close_code_ = 1006;
      }
      return;
    }
    ++frames_;
    auto text = beast::buffers_to_string(buf_.data());
    buf_.consume(buf_.size());
    chat::split_frame(text, [this](std::string_view object) {
      objects_.push_back(json::parse(object, nullptr, false));
    });
  }); });
}

bool ws_client::pump(std::chrono::steady_clock::time_point deadline) {
  if (closed_ || (!ws_ && !wss_)) return false;
  if (!reading_) start_read();
  ioc_.restart();
  return ioc_.run_one_until(deadline) > 0;
}

std::optional<json> ws_client::recv(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (objects_.empty()) {
    if (closed_ || (!ws_ && !wss_)) return std::nullopt;
    if (!pump(deadline) && std::chrono::steady_clock::now() >= deadline) return std::nullopt;
  }
  auto j = std::move(objects_.front());
  objects_.pop_front();
  return j;
}

std::optional<json> ws_client::recv_until(const std::function<bool(const json&)>& pred,
                                          std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto j = recv(left);
    if (!j) return std::nullopt;
    if (pred(*j)) return j;
  }
}

std::optional<json> ws_client::reply(int id, std::chrono::milliseconds timeout) {
  return recv_until([id](const json& j) { return j.contains("id") && j["id"] == id; }, timeout);
}

std::optional<json> ws_client::request(json j, int id, std::chrono::milliseconds timeout) {
  j["id"] = id;
  send(j);
  return reply(id, timeout);
}

int ws_client::wait_close(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!closed_) {
    objects_.clear();
    if (!pump(deadline) && std::chrono::steady_clock::now() >= deadline) return 0;
  }
  return close_code_;
}

void ws_client::close() {
  if ((!ws_ && !wss_) || closed_) return;
  with_ws([](auto& ws) {
    beast::error_code ec;
    ws.close(websocket::close_code::normal, ec);
  });
  closed_ = true;
}

}  // namespace chat_test
