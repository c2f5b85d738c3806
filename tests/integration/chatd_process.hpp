#pragma once
// A real chatd child process on 127.0.0.1 for integration tests.
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace chat_test {

class chatd_process {
 public:
  // Starts build/bin/chatd with `args` plus --listen 127.0.0.1:<port> (0 = any)
  // and waits (bounded) until it prints its port.
  explicit chatd_process(std::vector<std::string> args, uint16_t port = 0);
  ~chatd_process();
  chatd_process(const chatd_process&) = delete;
  chatd_process& operator=(const chatd_process&) = delete;

  bool ok() const { return port_ != 0; }
  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  std::string log() const;

  // SIGTERM, then waits up to `timeout`; returns the exit status (-1: timed out, killed).
  int terminate(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void kill9();

 private:
  pid_t pid_ = -1;
  uint16_t port_ = 0;
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

}  // namespace chat_test
