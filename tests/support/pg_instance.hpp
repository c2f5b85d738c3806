#pragma once
// A private PostgreSQL 15 server for the tests, no mock and no system service:
// `initdb` + `pg_ctl` from /usr/lib/postgresql/15/bin (CHAT_PG_BIN overrides),
// a data directory and a unix socket directory of its own under /tmp, no TCP
// port, fsync on as on a real server. Run as an unprivileged user: as root,
// the server runs as the `postgres` system user (Debian's package makes it).
//
// One per test binary: started by the first test that asks for it, stopped
// at the end of the run by a gtest Environment. Each test takes a fresh
// database of its own (fresh_database) and drops it afterwards.
#include <string>
#include <vector>

namespace chat_test {

class pg_instance {
 public:
  // The binary's instance, started on first use. If it cannot start (say,
  // PostgreSQL is not installed), error() says why and every call fails.
  static pg_instance& shared();

  // Stops the shared instance if it was started and removes its files.
  static void shutdown();

  const std::string& error() const { return error_; }
  bool running() const { return running_; }

  // A connection string (key=value form) for database `db`.
  std::string url(const std::string& db) const;

  // Creates an empty database; its connection string, or "" and `err`.
  std::string fresh_database(std::string& err);
  // Drops a database made by fresh_database (closing its sessions).
  bool drop_database(const std::string& url, std::string& err);

  // Stops and starts the server (tests of a database that goes away).
  bool stop(std::string& err);
  bool start(std::string& err);

  pg_instance(const pg_instance&) = delete;
  pg_instance& operator=(const pg_instance&) = delete;

 private:
  pg_instance() = default;
  ~pg_instance();
  bool init(std::string& err);
  bool run(const std::string& what, const std::vector<std::string>& argv, std::string& err);

  std::string bin_, dir_, data_, log_;
  bool as_postgres_ = false;  // root: run the server as the postgres user
  unsigned uid_ = 0, gid_ = 0;
  bool running_ = false;
  std::string error_;
  int next_db_ = 0;
};

// Runs `sql` on a fresh connection to `url`; `value` (if given) gets the
// first column of the first row. False + `err` on any failure.
bool pg_exec(const std::string& url, const std::string& sql, std::string& err,
             std::string* value = nullptr);

}  // namespace chat_test
