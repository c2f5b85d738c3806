#include "gateway/tls.hpp"

#include <openssl/ssl.h>

namespace chat {

namespace ssl = boost::asio::ssl;

namespace {

// Mozilla's "intermediate" TLS 1.2 suites (forward secret AEAD only); TLS 1.3
// uses OpenSSL's default suites, all of which are fine.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

}  // namespace

bool tls_contexts::load(std::string& err) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                   ssl::context::no_compression | ssl::context::single_dh_use);
  SSL_CTX* h = ctx->native_handle();
  SSL_CTX_set_min_proto_version(h, TLS1_2_VERSION);
  SSL_CTX_set_options(h, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
  // Idle connections give their read/write buffers back (about 34 KiB each).
  SSL_CTX_set_mode(h, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_cipher_list(h, kTls12Ciphers) != 1) {
    err = "no usable TLS 1.2 cipher suite";
    return false;
  }
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cert_file_, ec);
  if (ec) {
    err = "certificate " + cert_file_ + ": " + ec.message();
    return false;
  }
  ctx->use_private_key_file(key_file_, ssl::context::pem, ec);
  if (ec) {
    err = "key " + key_file_ + ": " + ec.message();
    return false;
  }
  if (SSL_CTX_check_private_key(h) != 1) {
    err = "key " + key_file_ + " does not match certificate " + cert_file_;
    return false;
  }
  std::lock_guard<std::mutex> lock(mtx_);
  ctx_ = std::move(ctx);
  return true;
}

std::shared_ptr<ssl::context> tls_contexts::current() const {
  std::lock_guard<std::mutex> lock(mtx_);
  return ctx_;
}

}  // namespace chat
