#pragma once
// Random identifiers: session ids, idempotency key prefixes, room epochs.
#include <cstddef>
#include <string>

namespace chat {

// `n` lowercase hex digits straight from the OS entropy source: no generator
// state that a fork or two processes started in the same instant could share.
std::string random_hex(size_t n);

}  // namespace chat
