#pragma once
// A real chatd child process on 127.0.0.1 for integration tests.
#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace chat_test {

class chatd_process {
 public:
  // Starts build/bin/chatd with `args` plus --listen 127.0.0.1:<port> (0 = any)
  // and waits (bounded) until it prints its port (and its --listen-plain port
  // when `args` has one). `nofile` > 0: the child's RLIMIT_NOFILE (soft and hard).
  explicit chatd_process(std::vector<std::string> args, uint16_t port = 0, uint64_t nofile = 0);
  ~chatd_process();
  chatd_process(const chatd_process&) = delete;
  chatd_process& operator=(const chatd_process&) = delete;

  bool ok() const { return port_ != 0; }
  uint16_t port() const { return port_; }
  uint16_t plain_port() const { return plain_port_; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  std::string log() const;

  // SIGTERM, then waits up to `timeout`; returns the exit status (-1: timed out, killed).
  int terminate(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void kill9();

 private:
  void dump_log_tail(const std::string& why) const;

  pid_t pid_ = -1;
  uint16_t port_ = 0;
  uint16_t plain_port_ = 0;
  std::string log_path_;
};

// A fresh temporary directory (removed by the destructor).
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// HTTP GET on 127.0.0.1:port; returns the status code (0 on failure) and the body.
int http_get(uint16_t port, const std::string& target, std::string& body);

// Any HTTP request on 127.0.0.1:port with extra headers and a body; returns the
// status code (0 on failure), the body and (optionally) the response headers.
using http_headers = std::vector<std::pair<std::string, std::string>>;
int http_request(uint16_t port, const std::string& method, const std::string& target,
                 const http_headers& headers, const std::string& body, std::string& res_body,
                 std::map<std::string, std::string>* res_headers = nullptr);

// A child process (e.g. chat-cli) with pipes on stdin and stdout; stderr goes to a
// file. Every wait is bounded; the destructor kills it if it still runs.
class child_process {
 public:
  explicit child_process(std::vector<std::string> argv);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  bool write_stdin(const std::string& data);
  void close_stdin();
  // The next line of stdout (without the newline); nullopt on timeout or EOF.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Waits for the exit; returns its code (128 + signal if killed, -1 on timeout: then killed).
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // stdout lines not read yet (complete after wait()).
  std::vector<std::string> rest_lines();
  std::string err() const;

 private:
  bool fill(std::chrono::milliseconds timeout);  // reads what stdout has; false on timeout/EOF

  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  std::string out_buf_;
  std::string err_path_;
};

}  // namespace chat_test
