#pragma once
// The TLS server context: certificate chain and key from PEM files, modern
// defaults, replaced whole on reload so that connections already open keep the
// context they started with and new ones take the new one.
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <mutex>
#include <string>

namespace chat {

class tls_contexts {
 public:
  tls_contexts(std::string cert_file, std::string key_file)
      : cert_file_(std::move(cert_file)), key_file_(std::move(key_file)) {}

  // (Re)reads the files. On failure returns false with `err` set and the
  // context in use stays as it was.
  bool load(std::string& err);
  // The context for a new connection (null before the first successful load).
  std::shared_ptr<boost::asio::ssl::context> current() const;

 private:
  std::string cert_file_, key_file_;
  mutable std::mutex mtx_;
  std::shared_ptr<boost::asio::ssl::context> ctx_;
};

}  // namespace chat
