#include "tests/integration/chatd_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace chat_test {

namespace {

// Reads stdout until "listening on http://...:PORT/" or the deadline.
uint16_t read_port(int fd, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string seen;
  while (std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[512];
    auto n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<size_t>(n));
    auto pos = seen.find("listening on http://");
    if (pos != std::string::npos) {
      auto end = seen.find("/\n", pos);
      if (end == std::string::npos) continue;
      auto colon = seen.rfind(':', end);
      return static_cast<uint16_t>(std::stoi(seen.substr(colon + 1, end - colon - 1)));
    }
  }
  return 0;
}

}  // namespace

chatd_process::chatd_process(std::vector<std::string> args, uint16_t port) {
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
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  close(log_fd);
  port_ = read_port(out[0], std::chrono::seconds(20));
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
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    usleep(10000);  // polling a child: no event to await
  }
  kill9();
  return -1;
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

}  // namespace chat_test
