#include "tests/support/pg_instance.hpp"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace chat_test {

namespace {

namespace fs = std::filesystem;

constexpr const char* default_bin = "/usr/lib/postgresql/15/bin";
constexpr int command_timeout_ms = 120 * 1000;  // initdb, pg_ctl -w (which waits 60 s itself)

std::string tail_of(const std::string& path, size_t max = 2000) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = ss.str();
  return s.size() > max ? "..." + s.substr(s.size() - max) : s;
}

// Stops the server at the end of the test binary, whatever the tests did.
class pg_environment : public ::testing::Environment {
 public:
  void TearDown() override { pg_instance::shutdown(); }
};

[[maybe_unused]] const auto* const registered =
    ::testing::AddGlobalTestEnvironment(new pg_environment);

pg_instance* instance = nullptr;

}  // namespace

pg_instance& pg_instance::shared() {
  if (!instance) {
    instance = new pg_instance;
    std::string err;
    if (!instance->init(err)) instance->error_ = err;
  }
  return *instance;
}

void pg_instance::shutdown() {
  delete instance;
  instance = nullptr;
}

pg_instance::~pg_instance() {
  std::string err;
  if (running_ && !stop(err)) std::fprintf(stderr, "pg_instance: %s\n", err.c_str());
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

bool pg_instance::init(std::string& err) {
  const char* env_bin = getenv("CHAT_PG_BIN");
  bin_ = env_bin && *env_bin ? env_bin : default_bin;
  for (auto tool : {"initdb", "pg_ctl", "postgres"})
    if (access((bin_ + "/" + tool).c_str(), X_OK) != 0) {
      err = "PostgreSQL 15 is not installed: no " + bin_ + "/" + tool +
            " (install Debian's postgresql package: deploy/install-deps.sh does)";
      return false;
    }
  if (geteuid() == 0) {
    // The server refuses to run as root: use the system user of Debian's package.
    auto* pw = getpwnam("postgres");
    if (!pw) {
      err = "running as root, but there is no 'postgres' user to run the test server as";
      return false;
    }
    as_postgres_ = true;
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
  }
  char tmpl[] = "/tmp/chat_pg_test.XXXXXX";
  if (!mkdtemp(tmpl)) {
    err = std::string{"mkdtemp: "} + strerror(errno);
    return false;
  }
  dir_ = tmpl;
  data_ = dir_ + "/data";
  log_ = dir_ + "/server.log";
  if (as_postgres_ && chown(dir_.c_str(), uid_, gid_) != 0) {
    err = "chown " + dir_ + ": " + strerror(errno);
    return false;
  }
  if (!run("initdb",
           {bin_ + "/initdb", "-D", data_, "-U", "chat", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"},
           err))
    return false;
  // Only a unix socket in our own directory: no port to collide with. fsync
  // and synchronous_commit stay on (the defaults), as on a real server.
  std::ofstream conf{data_ + "/postgresql.conf", std::ios::app};
  conf << "\n# chat tests\nlisten_addresses = ''\nunix_socket_directories = '" << dir_
       << "'\nport = 5432\nfsync = on\nsynchronous_commit = on\nmax_connections = 60\n"
          "shared_buffers = 32MB\n";
  conf.close();
  if (!conf) {
    err = "cannot write " + data_ + "/postgresql.conf";
    return false;
  }
  return start(err);
}

bool pg_instance::start(std::string& err) {
  if (!error_.empty()) {
    err = error_;
    return false;
  }
  if (running_) return true;
  if (!run("pg_ctl start", {bin_ + "/pg_ctl", "-D", data_, "-l", log_, "-w", "-t", "60", "start"},
           err)) {
    err += "\nserver log: " + tail_of(log_);
    return false;
  }
  running_ = true;
  return true;
}

bool pg_instance::stop(std::string& err) {
  if (!running_) return true;
  if (!run("pg_ctl stop", {bin_ + "/pg_ctl", "-D", data_, "-m", "fast", "-w", "-t", "60", "stop"},
           err))
    return false;
  running_ = false;
  return true;
}

std::string pg_instance::url(const std::string& db) const {
  return "host=" + dir_ + " port=5432 user=chat dbname=" + db;
}

std::string pg_instance::fresh_database(std::string& err) {
  if (!error_.empty()) {
    err = error_;
    return {};
  }
  auto name = "t" + std::to_string(getpid()) + "_" + std::to_string(++next_db_);
  if (!pg_exec(url("postgres"), "CREATE DATABASE " + name, err)) return {};
  return url(name);
}

bool pg_instance::drop_database(const std::string& db_url, std::string& err) {
  auto at = db_url.rfind("dbname=");
  if (at == std::string::npos) {
    err = "no dbname in " + db_url;
    return false;
  }
  return pg_exec(url("postgres"),
                 "DROP DATABASE IF EXISTS " + db_url.substr(at + 7) + " WITH (FORCE)", err);
}

// Runs a server tool as the server's user, output to a log, bounded in time.
bool pg_instance::run(const std::string& what, const std::vector<std::string>& argv,
                      std::string& err) {
  auto out_path = dir_ + "/" + what.substr(0, what.find(' ')) + ".out";
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  pid_t pid = fork();
  if (pid < 0) {
    err = what + ": fork: " + strerror(errno);
    return false;
  }
  if (pid == 0) {
    int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    if (as_postgres_ && (setgroups(0, nullptr) != 0 || setgid(gid_) != 0 || setuid(uid_) != 0))
      _exit(126);
    if (chdir(dir_.c_str()) != 0) _exit(126);
    execv(args[0], args.data());
    _exit(127);
  }
  int pfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));  // readable once it exits
  bool done = false;
  if (pfd >= 0) {
    pollfd p{pfd, POLLIN, 0};
    done = poll(&p, 1, command_timeout_ms) == 1;
    close(pfd);
  }
  if (!done && pfd >= 0) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    err = what + " did not finish within " + std::to_string(command_timeout_ms / 1000) +
          " s; output: " + tail_of(out_path);
    return false;
  }
  int status = 0;
  waitpid(pid, &status, 0);  // exited (or no pidfd: wait as long as it takes)
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  err = what + " failed (status " + std::to_string(status) + "): " + tail_of(out_path);
  return false;
}

bool pg_exec(const std::string& url, const std::string& sql, std::string& err, std::string* value) {
  PGconn* c = PQconnectdb(url.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    err = "connect " + url + ": " + PQerrorMessage(c);
    PQfinish(c);
    return false;
  }
  PGresult* r = PQexec(c, sql.c_str());
  auto st = PQresultStatus(r);
  bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok)
    err = sql + ": " + PQresultErrorMessage(r);
  else if (value)
    *value = st == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  PQfinish(c);
  return ok;
}

}  // namespace chat_test
