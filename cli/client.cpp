#include "cli/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "messages/clock.hpp"
#include "messages/codec.hpp"
#include "messages/random.hpp"
#include "messages/url.hpp"

namespace chat {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;

namespace {

std::string clock_text(int64_t ts_ms) {
  std::time_t t = static_cast<std::time_t>(ts_ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

// Text for a terminal: no escape sequences (C0/C1 controls become '?'),
// continuation lines indented.
std::string terminal_safe(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n') {
      out += "\n    ";
    } else if (c == '\t') {
      out += c;
    } else if (c < 0x20 || c == 0x7f) {
      out += '?';
    } else if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(s[i + 1]) <= 0x9f) {
      out += '?';  // U+0080..U+009F
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

class cli_client {
 public:
  cli_client(const cli_options& opt, ws_url url)
      : opt_(opt),
        url_(std::move(url)),
        ws_(ioc_),
        hello_timer_(ioc_),
        drain_timer_(ioc_),
        signals_(ioc_, SIGINT, SIGTERM) {}

  int run() {
    if (::pipe(stop_pipe_) != 0) {
      std::cerr << "chat-cli: pipe: " << std::strerror(errno) << "\n";
      return cli_exit_error;
    }
    idem_prefix_ = "cli-" + random_hex(10) + "-";
    signals_.async_wait([this](beast::error_code ec, int) { on_signal(ec); });
    tcp::resolver resolver(ioc_);
    beast::error_code ec;
    // Blocking is fine here: nothing else runs yet.
    auto results = resolver.resolve(url_.host, std::to_string(url_.port), ec);
    if (ec) {
      fatal("cannot resolve " + url_.host + ": " + ec.message());
    } else {
      auto& tcp_layer = beast::get_lowest_layer(ws_);
      tcp_layer.expires_after(std::chrono::milliseconds(opt_.connect_timeout_ms));
      tcp_layer.async_connect(
          results, [this](beast::error_code ec, const tcp::endpoint&) { on_connect(ec); });
      ioc_.run();
    }
    stop_stdin();
    if (reader_.joinable()) reader_.join();
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
    std::cout.flush();
    if (failed_ > 0 && exit_code_ == cli_exit_ok) exit_code_ = cli_exit_error;
    return exit_code_;
  }

 private:
  enum class kind { hello, join, leave, send, dm, history, search, my_rooms };
  struct pending {
    kind k = kind::send;
    json req;
    int attempts = 0;
    bool initial = false;  // a --room join: failing it fails the run
  };

  // --- connection -------------------------------------------------------------------

  void on_connect(beast::error_code ec) {
    if (ec) return fatal("cannot connect to " + opt_.url + ": " + ec.message());
    beast::get_lowest_layer(ws_).expires_after(std::chrono::milliseconds(opt_.connect_timeout_ms));
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::request_type& req) { req.set(beast::http::field::user_agent, "chat-cli"); }));
    ws_.read_message_max(64 * 1024 * 1024);
    ws_.async_handshake(url_.authority(), url_.path,
                        [this](beast::error_code ec) { on_handshake(ec); });
  }

  void on_handshake(beast::error_code ec) {
    if (ec) return fatal("WebSocket handshake with " + opt_.url + " failed: " + ec.message());
    beast::get_lowest_layer(ws_).expires_never();
    // Beast pings an idle server and gives up on a dead one; a close handshake takes <= 5 s.
    ws_.set_option(
        websocket::stream_base::timeout{std::chrono::seconds(5), std::chrono::seconds(90), true});
    json hello{{"type", "hello"}, {"id", next_id_}};
    if (!opt_.token.empty())
      hello["token"] = opt_.token;
    else
      hello["name"] = opt_.name;
    request(kind::hello, std::move(hello));
    hello_timer_.expires_after(std::chrono::seconds(10));
    hello_timer_.async_wait([this](beast::error_code ec) {
      if (!ec && !welcomed_) fatal("no welcome from the server within 10 s");
    });
    do_read();
  }

  void do_read() {
    ws_.async_read(buf_, [this](beast::error_code ec, size_t) { on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (finished_) return;
    if (ec) {
      if (ec == websocket::error::closed) {
        auto& r = ws_.reason();
        if (!closing_) {
          std::cerr << "chat-cli: the server closed the connection: " << r.code
                    << (r.reason.empty() ? "" : " ") << r.reason.c_str() << "\n";
          if (r.code != websocket::close_code::normal) exit_code_ = cli_exit_error;
        }
        return finish();
      }
      if (closing_) return finish();
      return fatal("connection lost: " + ec.message());
    }
    auto text = beast::buffers_to_string(buf_.data());
    buf_.consume(buf_.size());
    // A frame may hold several objects, one per line.
    split_frame(text, [this](std::string_view object) {
      on_object(object);
      return !finished_;
    });
    if (!finished_) do_read();
  }

  void send_text(std::string text) {
    if (closing_) return;
    outq_.push_back(std::move(text));
    if (!writing_) do_write();
  }

  void do_write() {
    writing_ = true;
    ws_.text(true);
    ws_.async_write(net::buffer(outq_.front()), [this](beast::error_code ec, size_t) {
      writing_ = false;
      outq_.pop_front();
      if (finished_) return;
      if (ec) return closing_ ? finish() : fatal("write failed: " + ec.message());
      if (!outq_.empty())
        do_write();
      else if (close_after_write_)
        do_close();
    });
  }

  int request(kind k, json req, bool initial = false) {
    int id = next_id_++;
    req["id"] = id;
    send_text(req.dump(-1, ' ', false, json::error_handler_t::replace));
    pending_[id] = pending{k, std::move(req), 0, initial};
    return id;
  }

  // Requests from stdin go out one at a time, in order: a message refused with
  // rate_limited is retried before the next line is sent, so lines never swap.
  void enqueue(kind k, json req) {
    queue_.emplace_back(k, std::move(req));
    pump();
  }

  void pump() {
    if (inflight_ != 0 || queue_.empty() || closing_ || finished_) return;
    auto next = std::move(queue_.front());
    queue_.pop_front();
    inflight_ = request(next.first, std::move(next.second));
  }

  std::string next_idem_key() { return idem_prefix_ + std::to_string(++idem_seq_); }

  // Close 1000 once what is queued has been written.
  void begin_close() {
    if (closing_ || finished_) return;
    stop_stdin();
    drain_timer_.cancel();
    hello_timer_.cancel();
    if (writing_) {
      close_after_write_ = true;
      closing_ = true;
      return;
    }
    closing_ = true;
    do_close();
  }

  void do_close() {
    ws_.async_close(websocket::close_code::normal, [this](beast::error_code ec) {
      if (ec) finish();  // else the pending read completes with `closed`
    });
  }

  void fatal(const std::string& what) {
    if (finished_) return;
    std::cerr << "chat-cli: " << what << "\n";
    exit_code_ = cli_exit_error;
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
    finish();
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    stop_stdin();
    ioc_.stop();
  }

  void on_signal(beast::error_code ec) {
    if (ec || finished_) return;
    if (closing_ || draining_) {  // a second Ctrl-C: do not wait any more
      finish();
      return;
    }
    signals_.async_wait([this](beast::error_code ec, int) { on_signal(ec); });
    start_drain();
  }

  // --- stdin (its own thread: a blocking read works for ttys, pipes and files) --------

  void start_stdin() {
    reader_ = std::thread([this] { read_stdin(); });
  }

  void stop_stdin() {
    if (stop_sent_) return;
    stop_sent_ = true;
    char c = 0;
    [[maybe_unused]] auto n = ::write(stop_pipe_[1], &c, 1);
  }

  void read_stdin() {
    std::string pending;
    char chunk[4096];
    for (;;) {
      pollfd fds[2] = {{0, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[1].revents) return;  // the client is done: no EOF event
      if (fds[0].revents & POLLNVAL) break;
      auto n = ::read(0, chunk, sizeof chunk);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) break;
      pending.append(chunk, static_cast<size_t>(n));
      size_t nl;
      while ((nl = pending.find('\n')) != std::string::npos) {
        net::post(ioc_, [this, line = pending.substr(0, nl)] { on_line(line); });
        pending.erase(0, nl + 1);
      }
    }
    if (!pending.empty()) net::post(ioc_, [this, line = pending] { on_line(line); });
    net::post(ioc_, [this] { on_eof(); });
  }

  void on_line(std::string line) {
    if (finished_ || closing_ || draining_) return;  // after /quit
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) return;
    if (line[0] == '/' && line.compare(0, 2, "//") != 0) return command(line);
    if (line.compare(0, 2, "//") == 0) line.erase(0, 1);  // "//x" sends "/x"
    if (rooms_.empty()) {
      std::cerr << "chat-cli: not sent (no room: use --room or /join ROOM): " << line << "\n";
      ++failed_;
      return;
    }
    enqueue(kind::send, json{{"type", "send"},
                             {"room", rooms_.front()},
                             {"text", line},
                             {"idempotency_key", next_idem_key()}});
  }

  void command(const std::string& line) {
    auto sp = line.find(' ');
    auto cmd = line.substr(0, sp);
    std::string arg = sp == std::string::npos ? "" : line.substr(sp + 1);
    while (!arg.empty() && arg.front() == ' ') arg.erase(0, 1);
    if (cmd == "/quit") return start_drain();
    if (cmd == "/join" && !arg.empty()) {
      // Lines that follow go to this room at once: the server holds sends made
      // while the join is pending.
      if (std::find(rooms_.begin(), rooms_.end(), arg) == rooms_.end()) rooms_.push_back(arg);
      enqueue(kind::join, json{{"type", "join"}, {"room", arg}});
    } else if (cmd == "/leave" && !arg.empty()) {
      rooms_.erase(std::remove(rooms_.begin(), rooms_.end(), arg), rooms_.end());
      enqueue(kind::leave, json{{"type", "leave"}, {"room", arg}});
    } else if (cmd == "/dm" && arg.find(' ') != std::string::npos) {
      auto to = arg.substr(0, arg.find(' '));
      auto text = arg.substr(arg.find(' ') + 1);
      enqueue(
          kind::dm,
          json{{"type", "dm"}, {"to", to}, {"text", text}, {"idempotency_key", next_idem_key()}});
    } else if ((cmd == "/edit" || cmd == "/reply" || cmd == "/react" || cmd == "/delete") &&
               !arg.empty()) {
      change(cmd, arg);
    } else if (cmd == "/search" && !arg.empty()) {
      if (rooms_.empty()) {
        std::cerr << "chat-cli: /search needs a room (use --room or /join ROOM)\n";
        return;
      }
      enqueue(kind::search,
              json{{"type", "search"}, {"room", rooms_.front()}, {"query", arg}, {"limit", 20}});
    } else if (cmd == "/rooms") {
      enqueue(kind::my_rooms, json{{"type", "my_rooms"}});
    } else if (cmd == "/topic" || cmd == "/invite" || cmd == "/kick" || cmd == "/ban" ||
               cmd == "/unban" || cmd == "/mute" || cmd == "/unmute" || cmd == "/role") {
      moderate(cmd, arg);
    } else if (cmd == "/history") {
      auto room = !arg.empty() ? arg : rooms_.empty() ? "" : rooms_.front();
      if (room.empty()) {
        std::cerr << "chat-cli: /history needs a room\n";
        return;
      }
      enqueue(kind::history, json{{"type", "history"}, {"room", room}, {"limit", 50}});
    } else {
      std::cerr << "chat-cli: commands: /join ROOM, /leave ROOM, /dm USER TEXT, /history [ROOM], "
                   "/edit SEQ TEXT, /delete SEQ, /react SEQ EMOJI (-EMOJI removes), "
                   "/reply SEQ TEXT, /search WORDS, /rooms, /topic TEXT, /invite USER, "
                   "/kick USER [REASON], /ban USER [REASON], /unban USER, /mute USER, /unmute USER, "
                   "/role USER member|moderator|owner, /quit (start a line with // to send a '/')\n";
    }
  }

  // /topic TEXT, /invite USER, /kick USER [REASON], /ban USER [REASON],
  // /unban USER, /mute USER, /unmute USER, /role USER ROLE: in the first
  // joined room (the owner's and moderators' requests of protocol v2).
  void moderate(const std::string& cmd, const std::string& arg) {
    if (rooms_.empty()) {
      std::cerr << "chat-cli: " << cmd << " needs a room (use --room or /join ROOM)\n";
      ++failed_;
      return;
    }
    auto sp = arg.find(' ');
    auto user = arg.substr(0, sp);
    std::string rest = sp == std::string::npos ? "" : arg.substr(sp + 1);
    json req{{"type", cmd.substr(1)}, {"room", rooms_.front()}};
    if (cmd == "/topic") {
      req = json{{"type", "room_set"}, {"room", rooms_.front()}, {"topic", arg}};
    } else if (user.empty() || (cmd == "/role" && rest.empty())) {
      std::cerr << "chat-cli: usage: " << cmd << (cmd == "/role" ? " USER ROLE" : " USER") << "\n";
      ++failed_;
      return;
    } else {
      req["user"] = user;
      if (cmd == "/role") req["role"] = rest;
      if ((cmd == "/kick" || cmd == "/ban") && !rest.empty()) req["reason"] = rest;
    }
    if (cmd != "/invite") req["idempotency_key"] = next_idem_key();
    enqueue(kind::send, std::move(req));
  }

  // /edit SEQ TEXT, /delete SEQ, /react SEQ [-]EMOJI, /reply SEQ TEXT: in the
  // first joined room, with an idempotency key like a send.
  void change(const std::string& cmd, const std::string& arg) {
    auto sp = arg.find(' ');
    auto seq_text = arg.substr(0, sp);
    std::string rest = sp == std::string::npos ? "" : arg.substr(sp + 1);
    uint64_t seq = 0;
    bool number = !seq_text.empty() && seq_text.size() <= 19 &&
                  std::all_of(seq_text.begin(), seq_text.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (number) seq = std::stoull(seq_text);
    if (seq == 0 || (cmd != "/delete" && rest.empty())) {
      std::cerr << "chat-cli: usage: " << cmd << (cmd == "/delete" ? " SEQ" : cmd == "/react" ? " SEQ EMOJI" : " SEQ TEXT") << "\n";
      ++failed_;
      return;
    }
    if (rooms_.empty()) {
      std::cerr << "chat-cli: " << cmd << " needs a room (use --room or /join ROOM)\n";
      ++failed_;
      return;
    }
    json req{{"room", rooms_.front()}, {"idempotency_key", next_idem_key()}};
    if (cmd == "/reply") {
      req["type"] = "send";
      req["text"] = rest;
      req["reply_to"] = seq;
    } else {
      req["seq"] = seq;
      if (cmd == "/edit") {
        req["type"] = "edit";
        req["text"] = rest;
      } else if (cmd == "/delete") {
        req["type"] = "delete";
      } else {
        req["type"] = "react";
        bool off = rest.front() == '-' && rest.size() > 1;
        req["emoji"] = off ? rest.substr(1) : rest;
        req["on"] = !off;
      }
    }
    enqueue(kind::send, std::move(req));
  }

  void on_eof() {
    if (opt_.listen) return;  // keep printing until the server closes or Ctrl-C
    start_drain();
  }

  // Stop reading input; close once every request is sent and answered. Gives up
  // when nothing is answered for --wait-ms (re-armed on every reply).
  void start_drain() {
    if (draining_ || closing_ || finished_) return;
    draining_ = true;
    stop_stdin();
    arm_drain_timer();
    maybe_done();
  }

  void arm_drain_timer() {
    drain_timer_.expires_after(std::chrono::milliseconds(opt_.wait_ms));
    drain_timer_.async_wait([this](beast::error_code ec) {
      if (ec || finished_ || closing_) return;
      size_t unacked = 0;
      for (auto& [id, p] : pending_)
        if (p.k == kind::send || p.k == kind::dm) ++unacked;
      for (auto& q : queue_)
        if (q.first == kind::send || q.first == kind::dm) ++unacked;
      if (unacked > 0) {
        std::cerr << "chat-cli: no ack for " << unacked << " message(s) within " << opt_.wait_ms
                  << " ms\n";
        failed_ += unacked;
      }
      begin_close();
    });
  }

  void maybe_done() {
    if (draining_ && pending_.empty() && queue_.empty()) begin_close();
  }

  // --- incoming ----------------------------------------------------------------------

  void out_line(std::string_view s) {
    std::cout << s << '\n';
    std::cout.flush();              // pipelines see each line at once
    if (!std::cout) begin_close();  // the reader went away (`| head -1`): done
  }

  void status(const std::string& s) {
    if (!opt_.json && !opt_.send_only) std::cerr << s << "\n";
  }

  void on_object(std::string_view raw) {
    if (opt_.json && !opt_.send_only) out_line(raw);
    auto j = json::parse(raw.begin(), raw.end(), nullptr, false);
    if (!j.is_object()) return;
    auto type = str(j, "type");
    auto id = j.find("id");
    if (id != j.end() && id->is_number_integer()) {
      auto it = pending_.find(id->get<int>());
      if (it != pending_.end()) {
        auto p = std::move(it->second);
        pending_.erase(it);
        int rid = id->get<int>();
        on_reply(rid, p, type, j);
        if (rid == inflight_ && pending_.count(rid) == 0) inflight_ = 0;  // not being retried
        if (draining_ && !closing_) arm_drain_timer();                    // progress
        pump();
        maybe_done();
        return;
      }
    }
    if (type == "error") {
      std::cerr << "chat-cli: error " << str(j, "code") << ": " << str(j, "message") << "\n";
      return;
    }
    if (!opt_.json && !opt_.send_only) print_event(type, j);
  }

  void on_reply(int id, pending& p, const std::string& type, const json& j) {
    auto why = str(j, "code") + ": " + str(j, "message");
    switch (p.k) {
      case kind::hello:
        hello_timer_.cancel();
        if (type != "welcome") return fatal("hello refused: " + why);
        welcomed_ = true;
        status("connected to " + opt_.url + " as " + str(j, "user") + " (node " + str(j, "node") +
               ")");
        for (auto& room : opt_.rooms) {
          request(kind::join, json{{"type", "join"}, {"room", room}}, true);
          ++initial_joins_;
        }
        if (initial_joins_ == 0) start_stdin();
        return;
      case kind::join: {
        auto room = p.req.value("room", "");
        if (type == "joined") {
          if (std::find(rooms_.begin(), rooms_.end(), room) == rooms_.end()) rooms_.push_back(room);
          auto n = j.value("member_count", 0);
          status("joined " + room + " (" + std::to_string(n) + (n == 1 ? " member)" : " members)"));
        } else {
          std::cerr << "chat-cli: cannot join " << room << ": " << why << "\n";
          rooms_.erase(std::remove(rooms_.begin(), rooms_.end(), room), rooms_.end());
          if (p.initial) {
            exit_code_ = cli_exit_error;
            return begin_close();
          }
        }
        if (p.initial && --initial_joins_ == 0) start_stdin();
        return;
      }
      case kind::leave:
        if (type == "error") std::cerr << "chat-cli: leave: " << why << "\n";
        return;
      case kind::send:
      case kind::dm:
        if (type == "ack") return;
        if (errc_from_string(str(j, "code")) == errc::rate_limited && p.attempts < 20 &&
            !closing_) {
          // Same id and idempotency key: a retry can never store it twice.
          ++p.attempts;
          auto timer = std::make_shared<net::steady_timer>(ioc_, std::chrono::milliseconds(500));
          pending_[id] = p;
          timer->async_wait([this, timer, id](beast::error_code ec) {
            auto it = pending_.find(id);
            if (ec || finished_ || it == pending_.end()) return;
            send_text(it->second.req.dump(-1, ' ', false, json::error_handler_t::replace));
          });
          return;
        }
        std::cerr << "chat-cli: not sent (" << why << "): "
                  << (p.req.value("type", "") == "send" ? p.req.value("text", "")
                                                        : p.req.dump(-1, ' ', false, json::error_handler_t::replace))
                  << "\n";
        ++failed_;
        return;
      case kind::search:
      case kind::my_rooms: {
        bool search = p.k == kind::search;
        if (type != (search ? "search" : "my_rooms")) {
          std::cerr << "chat-cli: " << (search ? "search" : "rooms") << ": " << why << "\n";
          return;
        }
        if (opt_.json || opt_.send_only) return;
        if (search) {
          auto n = j.value("messages", json::array()).size();
          std::cout << "--- " << n << (n == 1 ? " match" : " matches") << " in "
                    << terminal_safe(str(j, "room"))
                    << (j.value("more", false) ? " (older matches exist)" : "") << "\n";
          // Every event as it is (history holds moderation events and changes too).
        for (auto& m : j.value("messages", json::array()))
          if (m.is_object()) print_event(m.value("type", std::string("message")), m);
        } else {
          std::cout << "--- your rooms\n";
          for (auto& r : j.value("rooms", json::array()))
            if (r.is_object())
              std::cout << terminal_safe(r.value("room", "")) << "  " << r.value("role", "")
                        << "  " << r.value("unread", 0) << " unread\n";
        }
        std::cout.flush();
        return;
      }
      case kind::history:
        if (type != "history") {
          std::cerr << "chat-cli: history: " << why << "\n";
          return;
        }
        if (opt_.json || opt_.send_only) return;
        std::cout << "--- history of " << terminal_safe(str(j, "room"))
                  << (j.value("more", false) ? " (older messages exist)" : "") << "\n";
        // Every event as it is (history holds moderation events and changes too).
        for (auto& m : j.value("messages", json::array()))
          if (m.is_object()) print_event(m.value("type", std::string("message")), m);
        std::cout.flush();
        return;
    }
  }

  void print_event(const std::string& type, const json& j) {
    auto room = terminal_safe(str(j, "room"));
    auto at = [&] { return "[" + clock_text(j.value("ts", now_ms())) + "] [" + room + "] "; };
    auto seq = [&](const char* key) { return "#" + std::to_string(j.value(key, uint64_t{0})); };
    if (type == "message") {
      auto name = str(j, "name");
      if (name.empty()) name = str(j, "from");
      std::string text = j.value("deleted", false) ? "(deleted)" : terminal_safe(str(j, "text"));
      if (j.contains("edited_ts") && !j.value("deleted", false)) text += " (edited)";
      if (j.contains("reply_to")) text = "(reply to " + seq("reply_to") + ") " + text;
      for (auto& r : j.value("reactions", json::array()))
        if (r.is_object())
          text += " [" + terminal_safe(r.value("emoji", "")) + " " +
                  std::to_string(r.value("count", 0)) + "]";
      out_line(at() + terminal_safe(name) + ": " + text + "  " + seq("seq"));
    } else if (type == "message_edited") {
      out_line(at() + seq("seq") + " * " + terminal_safe(str(j, "from")) + " edited " +
               seq("target") + ": " + terminal_safe(str(j, "text")));
    } else if (type == "message_deleted") {
      out_line(at() + seq("seq") + " * " + terminal_safe(str(j, "by")) + " deleted " + seq("target"));
    } else if (type == "reaction") {
      out_line(at() + seq("seq") + " * " + terminal_safe(str(j, "user")) +
               (j.value("on", false) ? " reacted " : " took back ") +
               terminal_safe(str(j, "emoji")) + " on " + seq("target"));
    } else if (type == "moderation") {
      auto by = terminal_safe(str(j, "by"));
      auto user = terminal_safe(str(j, "user"));
      auto action = str(j, "action");
      std::string what;
      if (action == "settings") {
        auto st = j.value("settings", json::object());
        what = "changed the settings: topic \"" + terminal_safe(st.value("topic", "")) + "\"" +
               (st.value("private", false) ? ", private" : "") +
               (st.value("read_only", false) ? ", read-only" : "") +
               (st.value("slow_mode", 0) ? ", slow mode " + std::to_string(st.value("slow_mode", 0)) + " s" : "");
      } else if (action == "role") {
        what = "made " + user + " " + terminal_safe(str(j, "role"));
      } else {
        static const std::map<std::string, std::string> verbs = {
            {"kick", "kicked"}, {"ban", "banned"}, {"unban", "unbanned"},
            {"mute", "muted"}, {"unmute", "unmuted"}};
        auto v = verbs.find(action);
        what = (v == verbs.end() ? terminal_safe(action) : v->second) + " " + user;
        if (j.contains("reason")) what += " (" + terminal_safe(str(j, "reason")) + ")";
      }
      out_line(at() + seq("seq") + " * " + by + " " + what);
    } else if (type == "kicked") {
      out_line("[" + clock_text(now_ms()) + "] [" + room + "] * you were " +
               (j.value("ban", false) ? "banned" : "kicked") + " by " + terminal_safe(str(j, "by")) +
               (j.contains("reason") ? " (" + terminal_safe(str(j, "reason")) + ")" : ""));
      rooms_.erase(std::remove(rooms_.begin(), rooms_.end(), str(j, "room")), rooms_.end());
    } else if (type == "invited") {
      out_line("[" + clock_text(now_ms()) + "] [" + room + "] * " + terminal_safe(str(j, "by")) +
               " invited you (/join " + room + ")");
    } else if (type == "mention") {
      out_line("[" + clock_text(now_ms()) + "] [" + room + "] * " + terminal_safe(str(j, "from")) +
               " mentioned you in " + seq("seq"));
    } else if (type == "member_joined" || type == "member_left") {
      out_line("[" + clock_text(now_ms()) + "] [" + room + "] * " + terminal_safe(str(j, "name")) +
               (type == "member_joined" ? " joined" : " left"));
    } else if (type == "presence_diff") {
      out_line("[" + clock_text(now_ms()) + "] [" + room + "] * " +
               std::to_string(j.value("joins", json::array()).size()) + " joined, " +
               std::to_string(j.value("leaves", json::array()).size()) + " left");
    }
  }

  const cli_options& opt_;
  ws_url url_;
  net::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buf_;
  net::steady_timer hello_timer_;
  net::steady_timer drain_timer_;
  net::signal_set signals_;
  std::deque<std::string> outq_;
  std::deque<std::pair<kind, json>> queue_;  // from stdin, not sent yet
  int inflight_ = 0;                         // the one stdin request out (0: none)
  uint64_t idem_seq_ = 0;
  bool writing_ = false;
  bool close_after_write_ = false;
  bool welcomed_ = false;
  bool draining_ = false;
  bool closing_ = false;
  bool finished_ = false;
  bool stop_sent_ = false;
  int next_id_ = 1;
  int initial_joins_ = 0;
  size_t failed_ = 0;
  int exit_code_ = cli_exit_ok;
  std::string idem_prefix_;
  std::map<int, pending> pending_;
  std::vector<std::string> rooms_;  // joined, in order: plain lines go to the first
  std::thread reader_;
  int stop_pipe_[2] = {-1, -1};
};

}  // namespace

int run_cli(const cli_options& opt) {
  ws_url url;
  std::string err;
  if (!parse_ws_url(opt.url, url, err)) {
    std::cerr << "chat-cli: " << err << "\n";
    return cli_exit_usage;
  }
  if (url.secure()) {
    std::cerr << "chat-cli: wss:// is not supported: use ws:// (behind a TLS tunnel if need be)\n";
    return cli_exit_usage;
  }
  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout or socket is an error, not a crash
  // A closed stdin/stdout/stderr would be reused by the next descriptor we open
  // (then "stdin" is our own socket): park /dev/null there.
  for (int fd = 0; fd <= 2; ++fd)
    if (::fcntl(fd, F_GETFD) == -1 && errno == EBADF) ::open("/dev/null", O_RDWR);
  cli_client client(opt, std::move(url));
  return client.run();
}

}  // namespace chat
