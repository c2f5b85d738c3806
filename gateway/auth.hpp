#pragma once
// Who a connection is: JWT verification (libjwt, never by hand) and anonymous
// names. Pure logic, no I/O, so it tests without sockets.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chat {

struct auth_config {
  std::string hs256_secret;         // HS256 shared secret ("" = HS256 off)
  std::string rs256_public_key;     // PEM text ("" = RS256 off)
  std::string rs256_private_key;    // PEM text, only for minting tokens
  bool require_exp = true;          // a token without `exp` is refused
  bool allow_anonymous = false;
  int64_t leeway_s = 0;             // clock skew tolerated on exp/nbf
};

struct identity {
  std::string user;                        // `sub`, or the anonymous name
  std::string name;                        // display name (`name`, else the user id)
  std::vector<std::string> roles;
  std::vector<std::string> room_patterns;  // `rooms` claim; empty + !restricted = any room
  bool restricted_rooms = false;           // true when the token carried a `rooms` claim
  int64_t exp = 0;                         // seconds since the epoch, 0 = never
  bool anonymous = false;

  bool has_role(std::string_view role) const;
  // Non-dm rooms: allowed by the `rooms` patterns (admins may join any room).
  bool may_join(std::string_view room) const;
};

struct auth_result {
  bool ok = false;
  identity id;
  std::string error;  // human text when !ok
};

// '*' matches any run of characters (also none); everything else literally.
bool wildcard_match(std::string_view pattern, std::string_view text);

// A user id: valid UTF-8, 1..64 code points, no control characters, no ':'
// (':' separates the two users in a dm room name).
bool valid_user_id(std::string_view user);

// Anonymous ids live under this prefix when tokens are accepted too, and no
// token `sub` may start with it: the two id spaces never meet.
constexpr std::string_view kAnonPrefix = "~";

// The comparison form of a name (a documented subset of NFKC + the Unicode
// confusable skeleton, no ICU): ASCII and fullwidth letters lower-cased, the
// Cyrillic and Greek letters that look like Latin ones mapped to them, '0'->'o',
// '1'->'l'. Two names with the same skeleton pass for each other.
std::string name_skeleton(std::string_view name);

// Why an anonymous name is refused ("" = acceptable): leading/trailing white
// space, bidi controls, zero-width or other invisible characters, Latin mixed
// with Cyrillic or Greek letters, a reserved name (system, admin, ...) by
// skeleton, or the anonymous prefix.
std::string anonymous_name_problem(std::string_view name);

class authenticator {
 public:
  explicit authenticator(auth_config cfg);

  // Verifies signature (HS256 with the secret, RS256 with the public key; the
  // token's `alg` must match a configured key: `none` and algorithm confusion
  // are refused), `exp` (required unless !require_exp), `nbf`, `sub`.
  auth_result verify(std::string_view token, int64_t now_s) const;

  // Anonymous hello: refused unless allow_anonymous or the name is refused
  // (anonymous_name_problem). The user id is the name, or kAnonPrefix + name
  // when a token key is configured too; the display name is the name.
  auth_result anonymous(std::string_view name) const;

  bool any_key() const;
  const auth_config& config() const { return cfg_; }

 private:
  auth_config cfg_;
};

struct token_spec {
  std::string user;
  std::string name;
  int64_t ttl_s = 3600;  // 0 = no exp
  std::vector<std::string> roles;
  std::vector<std::string> rooms;
};

// Signs a token with the configured private key (RS256) if any, else the HS256
// secret. Returns "" and sets `err` when neither is configured or signing fails.
std::string mint_token(const auth_config& cfg, const token_spec& spec, int64_t now_s,
                       std::string& err);

}  // namespace chat
