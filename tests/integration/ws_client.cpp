#include "tests/integration/ws_client.hpp"

#include "messages/codec.hpp"

namespace chat_test {

namespace beast = boost::beast;
namespace websocket = beast::websocket;

bool ws_client::connect(uint16_t port, const std::string& target, int rcvbuf) {
  try {
    ws_.emplace(ioc_);
    auto& tcp = beast::get_lowest_layer(*ws_);
    if (rcvbuf > 0) {
      tcp.socket().open(boost::asio::ip::tcp::v4());
      tcp.socket().set_option(boost::asio::socket_base::receive_buffer_size(rcvbuf));
    }
    tcp.expires_after(5s);
    tcp.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    tcp.expires_never();
    ws_->read_message_max(64 * 1024 * 1024);
    ws_->handshake("127.0.0.1:" + std::to_string(port), target);
    return true;
  } catch (...) {
    return false;
  }
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
  ws_->text(true);
  beast::error_code ec;
  ws_->write(boost::asio::buffer(text), ec);
}

void ws_client::send_binary(const std::string& data) {
  ws_->binary(true);
  beast::error_code ec;
  ws_->write(boost::asio::buffer(data), ec);
  ws_->text(true);
}

void ws_client::start_read() {
  reading_ = true;
  ws_->async_read(buf_, [this](beast::error_code ec, size_t) {
    reading_ = false;
    if (ec) {
      closed_ = true;
      if (ec == websocket::error::closed) {
        close_code_ = ws_->reason().code;
        close_reason_ = std::string(ws_->reason().reason.c_str());
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
  });
}

bool ws_client::pump(std::chrono::steady_clock::time_point deadline) {
  if (closed_) return false;
  if (!reading_) start_read();
  ioc_.restart();
  return ioc_.run_one_until(deadline) > 0;
}

std::optional<json> ws_client::recv(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (objects_.empty()) {
    if (closed_ || !ws_) return std::nullopt;
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
  if (!ws_ || closed_) return;
  beast::error_code ec;
  ws_->close(websocket::close_code::normal, ec);
  closed_ = true;
}

}  // namespace chat_test
