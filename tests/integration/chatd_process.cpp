#include "tests/integration/chatd_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace chat_test {

namespace {

// Reads stdout lines "chatd listening on http[s]://HOST:PORT/[ (plain)]" until
// it has the main port (and the plain one if `want_plain`) or the deadline.
void read_ports(int fd, std::chrono::milliseconds timeout, bool want_plain, uint16_t& port,
                uint16_t& plain) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string seen;
  while (std::chrono::steady_clock::now() < deadline && (!port || (want_plain && !plain))) {
    auto nl = seen.find('\n');
    if (nl != std::string::npos) {
      auto line = seen.substr(0, nl);
      seen.erase(0, nl + 1);
      auto pos = line.find("listening on http");
      auto scheme_end = line.find("://", pos);
      if (pos == std::string::npos || scheme_end == std::string::npos) continue;
      auto end = line.find('/', scheme_end + 3);
      auto colon = line.rfind(':', end);
      auto p = static_cast<uint16_t>(std::stoi(line.substr(colon + 1, end - colon - 1)));
      (line.find("(plain)") != std::string::npos ? plain : port) = p;
      continue;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[512];
    auto n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

chatd_process::chatd_process(std::vector<std::string> args, uint16_t port, uint64_t nofile) {
  bool want_plain = std::find(args.begin(), args.end(), "--listen-plain") != args.end();
  char tmpl[] = "/tmp/chatd-test-log-XXXXXX";
  int log_fd = mkstemp(tmpl);
  log_path_ = tmpl;
  int out[2];
  if (pipe(out) != 0) return;
  args.insert(args.begin(), {CHATD_PATH, "--listen", "127.0.0.1:" + std::to_string(port)});
  pid_ = fork();
  if (pid_ == 0) {
    dup2(out[1], 1);
    dup2(log_fd, 2);
    close(out[0]);
    if (nofile > 0) {
      rlimit rl{static_cast<rlim_t>(nofile), static_cast<rlim_t>(nofile)};
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  close(log_fd);
  read_ports(out[0], std::chrono::seconds(20), want_plain, port_, plain_port_);
  if (want_plain && !plain_port_) port_ = 0;
  close(out[0]);  // chatd prints nothing else on stdout
}

chatd_process::~chatd_process() {
  if (pid_ > 0) kill9();
  if (!log_path_.empty()) unlink(log_path_.c_str());
}

std::string chatd_process::log() const {
  std::ifstream in(log_path_);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

int chatd_process::terminate(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      // A failed exit is diagnosed from chatd's own log, which the
      // destructor removes: show its tail where the test output is kept.
      if (rc != 0) dump_log_tail("exited " + std::to_string(rc));
      return rc;
    }
    usleep(10000);  // polling a child: no event to await
  }
  dump_log_tail("did not exit within the timeout");
  kill9();
  return -1;
}

void chatd_process::dump_log_tail(const std::string& why) const {
  auto text = log();
  constexpr size_t tail = 16000;
  if (text.size() > tail) text.erase(0, text.size() - tail);
  std::fprintf(stderr, "--- chatd %s; last lines of its log:\n%s\n--- end of chatd log\n",
               why.c_str(), text.c_str());
}

void chatd_process::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

temp_dir::temp_dir() {
  char tmpl[] = "/tmp/chatd-test-XXXXXX";
  path_ = mkdtemp(tmpl);
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int http_get(uint16_t port, const std::string& target, std::string& body) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  try {
    boost::asio::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(5));
    stream.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "127.0.0.1");
    http::write(stream, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    body = res.body();
    return static_cast<int>(res.result_int());
  } catch (...) {
    return 0;
  }
}

int http_request(uint16_t port, const std::string& method, const std::string& target,
                 const http_headers& headers, const std::string& body, std::string& res_body,
                 std::map<std::string, std::string>* res_headers) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  try {
    boost::asio::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(15));
    stream.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    if (!body.empty() || method == "POST") req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    res_body = res.body();
    if (res_headers) {
      res_headers->clear();
      for (auto& f : res) (*res_headers)[std::string(f.name_string())] = std::string(f.value());
    }
    return static_cast<int>(res.result_int());
  } catch (...) {
    return 0;
  }
}

child_process::child_process(std::vector<std::string> argv) {
  char tmpl[] = "/tmp/chat-child-err-XXXXXX";
  int err_fd = mkstemp(tmpl);
  err_path_ = tmpl;
  int in[2], out[2];
  // CLOEXEC: other children must not inherit these ends (stdin EOF depends on it).
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return;
  pid_ = fork();
  if (pid_ == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err_fd, 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err_fd);
  in_ = in[1];
  out_ = out[0];
}

child_process::~child_process() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (in_ >= 0) close(in_);
  if (out_ >= 0) close(out_);
  if (!err_path_.empty()) unlink(err_path_.c_str());
}

bool child_process::write_stdin(const std::string& data) {
  size_t done = 0;
  while (in_ >= 0 && done < data.size()) {
    auto n = ::write(in_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return in_ >= 0;
}

void child_process::close_stdin() {
  if (in_ >= 0) close(in_);
  in_ = -1;
}

bool child_process::fill(std::chrono::milliseconds timeout) {
  if (out_ < 0) return false;
  pollfd p{out_, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
  char buf[4096];
  auto n = read(out_, buf, sizeof buf);
  if (n <= 0) {
    close(out_);
    out_ = -1;
    return false;
  }
  out_buf_.append(buf, static_cast<size_t>(n));
  return true;
}

std::optional<std::string> child_process::read_line(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto nl = out_buf_.find('\n');
    if (nl != std::string::npos) {
      auto line = out_buf_.substr(0, nl);
      out_buf_.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !fill(left)) return std::nullopt;
  }
}

int child_process::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    // Keep its stdout flowing meanwhile (a full pipe would block it).
    if (!fill(std::chrono::milliseconds(10)) && out_ < 0) usleep(10000);
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      while (fill(std::chrono::milliseconds(100))) {
      }
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
  }
  ::kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return -1;
}

std::vector<std::string> child_process::rest_lines() {
  std::vector<std::string> out;
  while (auto line = read_line(std::chrono::milliseconds(0))) out.push_back(*line);
  if (!out_buf_.empty()) out.push_back(std::exchange(out_buf_, {}));
  return out;
}

std::string child_process::err() const {
  std::ifstream in(err_path_);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace chat_test
